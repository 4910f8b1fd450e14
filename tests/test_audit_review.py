"""`dicom-bq audit` on seeded drift, and `dicom-bq review`, against loopback IAM surfaces."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.clients.endpoints import Connection
from dicom_bq.clients.retry import RetryPolicy
from dicom_bq.infra.policy_rules import is_snapshot_account
from dicom_bq.security.audit import AuditResult, AuditTarget, condition_state, run_audit
from dicom_bq.security.stacks import read_project_stacks
from dicom_bq.stack.plan import Plan, plan_settings
from tests.conftest import EMULATOR_VARIABLES
from tests.fakes.bigquery import FakeBigQuery
from tests.fakes.clock import VirtualClock
from tests.fakes.iam import FakeIam
from tests.fakes.projects import FakeIamWithProjects
from tests.inventory import ROOT, plan_example
from tests.stacks import three_store_stack

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("plans_made_once")
AGENT = "serviceAccount:service-987654321098@gcp-sa-healthcare.iam.gserviceaccount.com"
BQ_ENCRYPTION = "serviceAccount:bq-555566667777@bigquery-encryption.iam.gserviceaccount.com"
SOURCE, ANALYTICS = "clinical-imaging-prod", "imaging-analytics-prod"
BUCKET = "clinical-imaging-prod-export-filters"
TOPIC = f"projects/{SOURCE}/topics/dicom-instances"
KEYS = "projects/clinical-kms-prod/locations/europe-west4/keyRings/imaging/cryptoKeys"
HEALTHCARE_KEY, BIGQUERY_KEY = f"{KEYS}/healthcare", f"{KEYS}/bigquery"
ENCRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
# Every scope of the prod stack: its two projects, the dataset, the bucket, the topic, two keys.
PROD_SCOPES = (
    f"//cloudresourcemanager.googleapis.com/projects/{SOURCE}",
    f"//cloudresourcemanager.googleapis.com/projects/{ANALYTICS}",
    f"//bigquery.googleapis.com/projects/{ANALYTICS}/datasets/dicom_metadata",
    f"//storage.googleapis.com/projects/_/buckets/{BUCKET}",
    f"//pubsub.googleapis.com/{TOPIC}",
    f"//cloudkms.googleapis.com/{HEALTHCARE_KEY}",
    f"//cloudkms.googleapis.com/{BIGQUERY_KEY}",
)
# Each project's number as Resource Manager answers it: the stack files' (Pulumi.dev.yaml,
# Pulumi.prod.yaml) and tests/conftest.py base_settings'.
NUMBERS = {
    SOURCE: "987654321098",
    ANALYTICS: "555566667777",
    "dicom-bq-dev": "123456789012",
    "dicom-src-test": "111122223333",
}
EXPIRED = {
    "title": "until the migration",
    "expression": 'request.time < timestamp("2020-01-01T00:00:00Z")',
}


@dataclass
class Live:
    iam: FakeIam
    bigquery: FakeBigQuery

    def audit(self, *extra: str) -> Any:
        return runner.invoke(
            app, ["audit", "--stack", "prod", "--project-dir", str(ROOT), "--json", *extra]
        )

    def result(self, retry: RetryPolicy | None = None) -> AuditResult:
        """The audit's result object, as the CLI gets it, on the same emulator variables."""
        target = AuditTarget.from_outputs("prod", plan_example("prod").outputs)
        return run_audit(Connection(), target, retry=retry, stacks=read_project_stacks(ROOT))


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    """The prod stack as `pulumi up` leaves it, next to other people's grants."""
    iam = FakeIamWithProjects(
        numbers=dict(NUMBERS),
        projects={
            SOURCE: [
                {"role": "roles/owner", "members": ["user:platform-lead@example.com"]},
                {"role": "roles/healthcare.serviceAgent", "members": [AGENT]},
            ],
            ANALYTICS: [
                {
                    "role": "roles/bigquery.jobUser",
                    "members": [AGENT, "group:analysts@example.com"],
                },
                {"role": "roles/owner", "members": ["user:data-lead@example.com"]},
            ],
        },
        buckets={BUCKET: [{"role": "roles/storage.objectViewer", "members": [AGENT]}]},
        topics={
            TOPIC: [
                {"role": "roles/pubsub.publisher", "members": [AGENT]},
                {"role": "roles/pubsub.subscriber", "members": ["group:imaging-ops@example.com"]},
            ]
        },
        keys={
            HEALTHCARE_KEY: [{"role": ENCRYPTER, "members": [AGENT]}],
            BIGQUERY_KEY: [{"role": ENCRYPTER, "members": [BQ_ENCRYPTION]}],
        },
    ).start()
    bigquery = FakeBigQuery(datasets={f"{ANALYTICS}.dicom_metadata"}).start()
    bigquery.dataset_access[f"{ANALYTICS}.dicom_metadata"] = [
        {"role": "OWNER", "specialGroup": "projectOwners"},
        {"role": "WRITER", "userByEmail": AGENT.split(":", 1)[1]},
        {"role": "READER", "groupByEmail": "analysts@example.com"},
    ]
    _every_api_at(monkeypatch, iam=iam, bigquery=bigquery)
    yield Live(iam, bigquery)
    iam.stop()
    bigquery.stop()
    assert iam.problems == [], "requests the real APIs would refuse"


def _every_api_at(monkeypatch: pytest.MonkeyPatch, *, iam: FakeIam, bigquery: FakeBigQuery) -> None:
    """Every API the package reaches at a loopback fake, so no scope of any kind (a DICOM store's
    policy through Healthcare, a service account's through IAM) is read from the real API: a
    policy the fakes do not hold answers 404 (unread), one they do not serve is a problem."""
    for variable in EMULATOR_VARIABLES:
        monkeypatch.setenv(variable, iam.url)
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery.url)


def findings(result: Any) -> list[dict[str, str]]:
    found: list[dict[str, str]] = json.loads(result.stdout)["findings"]
    return found


def kinds(result: Any) -> list[tuple[str, str]]:
    return [(f["kind"], f["role"]) for f in findings(result)]


def test_clean_state_is_reported_clean(live: Live) -> None:
    result = live.audit()
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert (payload["stack"], payload["clean"], payload["findings"]) == ("prod", True, [])
    plain = runner.invoke(app, ["audit", "--stack", "prod", "--project-dir", str(ROOT)])
    assert plain.exit_code == 0
    # Six grants: five to the agent, one to BigQuery's encryption account on the dataset key.
    assert plain.stdout.startswith("clean: the live IAM policies match the 6 grants of prod")


def test_clean_result_says_which_scopes_it_read(live: Live) -> None:
    result = live.result()
    assert result.clean
    assert result.exit_code == 0
    assert result.scopes_read == PROD_SCOPES
    assert result.scopes_unread == ()
    assert result.as_dict() == {
        "stack": "prod",
        "clean": True,
        "grants": 6,
        "scopes_read": list(PROD_SCOPES),
        "scopes_unread": [],
        "findings": [],
        "notes": [],
    }
    text = result.text().splitlines()
    assert text[0] == (
        "clean: the live IAM policies match the 6 grants of prod (read all 7 scopes)"
    )
    assert text[1:] == [f"  read {scope}" for scope in PROD_SCOPES]


def test_every_read_asks_for_policy_version_3(live: Live) -> None:
    live.result()
    asked = {r.path: r.query for r in live.iam.requests}
    assert asked[f"/v1/{TOPIC}:getIamPolicy"]["options.requestedPolicyVersion"] == ["3"]
    assert asked[f"/v1/{HEALTHCARE_KEY}:getIamPolicy"]["options.requestedPolicyVersion"] == ["3"]
    assert asked[f"/v1/{BIGQUERY_KEY}:getIamPolicy"]["options.requestedPolicyVersion"] == ["3"]
    assert asked[f"/storage/v1/b/{BUCKET}/iam"]["optionsRequestedPolicyVersion"] == ["3"]
    project = next(r for r in live.iam.requests if r.path == f"/v1/projects/{SOURCE}:getIamPolicy")
    assert project.json() == {"options": {"requestedPolicyVersion": 3}}
    (dataset,) = [r for r in live.bigquery.requests if "/datasets/" in r.path]
    assert dataset.query["accessPolicyVersion"] == ["3"]


def test_the_fake_refuses_what_the_real_api_would(live: Live) -> None:
    for query in ("options.requestedPolicyVersion=1", "options.requestedPolicyVersion=3&x=1"):
        url = f"{live.iam.url}/v1/{TOPIC}:getIamPolicy?{query}"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 400
    assert live.iam.problems == [
        "pubsub.projects.topics.getIamPolicy: asked for policy version below 3",
        "pubsub.projects.topics.getIamPolicy: unknown query parameter 'x'",
    ]
    live.iam.problems.clear()


def test_missing_role_is_found_with_the_fix(live: Live) -> None:
    live.iam.projects[ANALYTICS][0]["members"].remove(AGENT)
    result = live.audit()
    assert result.exit_code == 1
    (finding,) = findings(result)
    assert finding["kind"] == "missing"
    assert finding["role"] == "roles/bigquery.jobUser"
    assert "pulumi up --stack prod --refresh" in finding["fix"]
    assert (
        f"gcloud projects add-iam-policy-binding {ANALYTICS} --member='{AGENT}' --role='roles/bigquery.jobUser'"
        in finding["fix"]
    )


def test_missing_topic_grant_is_found(live: Live) -> None:
    live.iam.topics[TOPIC][0]["members"].remove(AGENT)
    result = live.audit()
    assert result.exit_code == 1
    (finding,) = findings(result)
    assert (finding["kind"], finding["role"]) == ("missing", "roles/pubsub.publisher")
    assert finding["scope"] == f"//pubsub.googleapis.com/{TOPIC}"
    assert (
        f"gcloud pubsub topics add-iam-policy-binding dicom-instances --project={SOURCE} "
        f"--member='{AGENT}' --role='roles/pubsub.publisher'" in finding["fix"]
    )


def test_missing_key_grant_of_the_encryption_account_is_found(live: Live) -> None:
    live.iam.keys[BIGQUERY_KEY] = [{"role": ENCRYPTER, "members": ["group:kms-admins@example.com"]}]
    result = live.audit()
    assert result.exit_code == 1
    (finding,) = findings(result)
    assert (finding["kind"], finding["role"], finding["member"]) == (
        "missing",
        ENCRYPTER,
        BQ_ENCRYPTION,
    )
    assert (
        "gcloud kms keys add-iam-policy-binding bigquery --keyring=imaging "
        "--location=europe-west4 --project=clinical-kms-prod "
        f"--member='{BQ_ENCRYPTION}' --role='{ENCRYPTER}'" in finding["fix"]
    )


def test_missing_key_grant_of_the_agent_is_found(live: Live) -> None:
    live.iam.keys[HEALTHCARE_KEY] = []
    result = live.audit()
    assert result.exit_code == 1
    (finding,) = findings(result)
    assert (finding["kind"], finding["member"]) == ("missing", AGENT)
    assert finding["scope"] == f"//cloudkms.googleapis.com/{HEALTHCARE_KEY}"


def _deny_topic(live: Live) -> None:
    live.iam.denied.add(TOPIC)


def _drop_key(live: Live) -> None:
    del live.iam.keys[HEALTHCARE_KEY]


def _deny_project(live: Live) -> None:
    del live.iam.projects[ANALYTICS]


def _drop_dataset(live: Live) -> None:
    live.bigquery.datasets.clear()


def _drop_bucket(live: Live) -> None:
    del live.iam.buckets[BUCKET]


@pytest.mark.parametrize(
    ("break_it", "scope", "status", "check"),
    [
        (
            _deny_topic,
            f"//pubsub.googleapis.com/{TOPIC}",
            "403 PERMISSION_DENIED",
            f"gcloud pubsub topics get-iam-policy dicom-instances --project={SOURCE} --format=json",
        ),
        (
            _drop_key,
            f"//cloudkms.googleapis.com/{HEALTHCARE_KEY}",
            "404 NOT_FOUND",
            "gcloud kms keys get-iam-policy healthcare --keyring=imaging --location=europe-west4 "
            "--project=clinical-kms-prod --format=json",
        ),
        (
            _deny_project,
            f"//cloudresourcemanager.googleapis.com/projects/{ANALYTICS}",
            "403 PERMISSION_DENIED",
            f"gcloud projects get-iam-policy {ANALYTICS} --format=json",
        ),
        (
            _drop_dataset,
            f"//bigquery.googleapis.com/projects/{ANALYTICS}/datasets/dicom_metadata",
            "404 notFound",
            f"bq show --format=prettyjson {ANALYTICS}:dicom_metadata",
        ),
        (
            _drop_bucket,
            f"//storage.googleapis.com/projects/_/buckets/{BUCKET}",
            "404 notFound",
            f"gcloud storage buckets get-iam-policy gs://{BUCKET} --format=json",
        ),
    ],
    ids=["topic-403", "key-404", "project-403", "dataset-404", "bucket-404"],
)
def test_an_unreadable_scope_is_a_finding_and_not_clean(
    live: Live, break_it: Any, scope: str, status: str, check: str
) -> None:
    break_it(live)
    result = live.audit()
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["clean"] is False
    (finding,) = findings(result)
    assert (finding["kind"], finding["scope"], finding["fix"]) == ("unread", scope, check)
    assert status in finding["message"]
    audited = live.result()
    assert not audited.clean
    assert audited.scopes_unread == (scope,)
    assert audited.scopes_read == tuple(s for s in PROD_SCOPES if s != scope)
    assert audited.text().splitlines()[-1].startswith("not clean: 1 findings")
    assert audited.text().endswith(f"read 6 of 7 scopes, could not read {scope}")


def test_a_network_fault_leaves_the_scope_unread(live: Live) -> None:
    live.iam.resets.add(BIGQUERY_KEY)
    audited = live.result(retry=RetryPolicy(attempts=2, clock=VirtualClock()))
    assert audited.scopes_unread == (f"//cloudkms.googleapis.com/{BIGQUERY_KEY}",)
    (finding,) = audited.findings
    assert (finding.kind, finding.role) == ("unread", ENCRYPTER)
    assert "gave up after retries" in finding.message
    assert finding.fix.startswith("gcloud kms keys get-iam-policy bigquery --keyring=imaging")


def test_an_expired_conditional_grant_is_not_a_grant(live: Live) -> None:
    live.iam.topics[TOPIC][0]["condition"] = dict(EXPIRED)
    result = live.audit()
    assert result.exit_code == 1
    (finding,) = findings(result)
    assert (finding["kind"], finding["role"]) == ("conditional-grant", "roles/pubsub.publisher")
    assert "expired at 2020-01-01T00:00:00Z" in finding["message"]
    assert "'until the migration'" in finding["message"]
    assert finding["fix"].startswith(
        f"gcloud pubsub topics get-iam-policy dicom-instances --project={SOURCE} --format=json"
    )
    assert "pulumi up --stack prod --refresh" in finding["fix"]


def test_a_condition_the_audit_cannot_prove_is_not_a_grant(live: Live) -> None:
    live.iam.keys[HEALTHCARE_KEY][0]["condition"] = {
        "expression": 'resource.name.startsWith("projects/clinical-kms-prod")'
    }
    live.iam.projects[ANALYTICS].append(
        {
            "role": "roles/bigquery.jobUser",
            "members": [AGENT],
            "condition": {"expression": 'request.time < timestamp("2999-01-01T00:00:00Z")'},
        }
    )
    live.iam.projects[ANALYTICS][0]["members"].remove(AGENT)
    result = live.audit()
    assert result.exit_code == 1
    messages = {f["role"]: f["message"] for f in findings(result)}
    assert sorted(kinds(result)) == [
        ("conditional-grant", "roles/bigquery.jobUser"),
        ("conditional-grant", ENCRYPTER),
    ]
    assert "cannot prove always true" in messages[ENCRYPTER]
    assert "expires at 2999-01-01T00:00:00Z" in messages["roles/bigquery.jobUser"]


def test_a_conditional_dataset_entry_is_not_a_grant(live: Live) -> None:
    live.bigquery.dataset_access[f"{ANALYTICS}.dicom_metadata"][1] = {
        "role": "roles/bigquery.dataEditor",
        "userByEmail": AGENT.split(":", 1)[1],
        "condition": dict(EXPIRED),
    }
    result = live.audit()
    assert kinds(result) == [("conditional-grant", "roles/bigquery.dataEditor")]


def test_a_conditional_binding_next_to_the_plain_one_changes_nothing(live: Live) -> None:
    live.iam.topics[TOPIC].append(
        {"role": "roles/pubsub.publisher", "members": [AGENT], "condition": dict(EXPIRED)}
    )
    assert live.audit().exit_code == 0
    assert live.result().clean


@pytest.mark.parametrize(
    ("expression", "state"),
    [
        ("true", "always"),
        ('request.time > timestamp("2020-01-01T00:00:00Z")', "always"),
        ('request.time < timestamp("2020-01-01T00:00:00Z")', "expired"),
        ("request.time < timestamp('2030-01-01T00:00:00.000Z')", "until"),
        ('request.time >= timestamp("2030-01-01T00:00:00Z")', "not-yet"),
        (
            '(request.time > timestamp("2020-01-01T00:00:00Z")) && '
            'request.time < timestamp("2021-01-01T00:00:00Z")',
            "expired",
        ),
        (
            'request.time < timestamp("2020-01-01T00:00:00Z") || '
            'request.time > timestamp("2020-06-01T00:00:00Z")',
            "unknown",
        ),
        ('request.time < timestamp("2030-01-01T00:00:00")', "unknown"),
        ("request.time.getHours('Europe/Amsterdam') < 18", "unknown"),
        ('!(request.time < timestamp("2020-01-01T00:00:00Z"))', "unknown"),
    ],
)
def test_condition_states(expression: str, state: str) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert condition_state(expression, now)[0] == state


def test_extra_admin_role_for_the_agent_is_found(live: Live) -> None:
    live.iam.projects[ANALYTICS].append({"role": "roles/bigquery.admin", "members": [AGENT]})
    result = live.audit()
    assert result.exit_code == 1
    assert kinds(result) == [("extra", "roles/bigquery.admin")]
    assert "remove-iam-policy-binding" in findings(result)[0]["fix"]


def test_extra_role_on_the_topic_is_found(live: Live) -> None:
    live.iam.topics[TOPIC].append({"role": "roles/pubsub.admin", "members": [AGENT]})
    result = live.audit()
    assert kinds(result) == [("extra", "roles/pubsub.admin")]
    assert findings(result)[0]["fix"].startswith(
        "gcloud pubsub topics remove-iam-policy-binding dicom-instances"
    )


def test_public_member_is_found(live: Live) -> None:
    live.iam.buckets[BUCKET].append({"role": "roles/storage.objectViewer", "members": ["allUsers"]})
    result = live.audit()
    assert result.exit_code == 1
    assert kinds(result) == [("public", "roles/storage.objectViewer")]


def test_authoritative_binding_that_removed_the_agent_is_found(live: Live) -> None:
    # Someone applied a dataset-level policy of their own: the agent's WRITER entry is gone.
    live.bigquery.dataset_access[f"{ANALYTICS}.dicom_metadata"] = [
        {"role": "roles/bigquery.dataEditor", "iamMember": "group:etl@example.com"}
    ]
    result = live.audit()
    assert result.exit_code == 1
    (finding,) = findings(result)
    assert (finding["kind"], finding["role"]) == ("missing", "roles/bigquery.dataEditor")
    assert (
        f"bq add-iam-policy-binding --member='{AGENT}' --role='roles/bigquery.dataEditor' {ANALYTICS}:dicom_metadata"
        in finding["fix"]
    )


def test_deleted_principal_and_basic_role_on_the_dataset_are_found(live: Live) -> None:
    live.iam.projects[ANALYTICS].append(
        {
            "role": "roles/bigquery.jobUser",
            "members": [
                "deleted:serviceAccount:service-987654321098@gcp-sa-healthcare.iam.gserviceaccount.com?uid=42"
            ],
        }
    )
    live.bigquery.dataset_access[f"{ANALYTICS}.dicom_metadata"].append(
        {"role": "roles/editor", "iamMember": "user:x@example.com"}
    )
    result = live.audit()
    assert result.exit_code == 1
    assert sorted(kinds(result)) == [
        ("basic-role", "roles/editor"),
        ("deleted-principal", "roles/bigquery.jobUser"),
    ]


def _prod_without_source_number(tmp_path: Path) -> Path:
    """The project folder with prod's stack file, sourceProjectNumber left out."""
    (tmp_path / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text(encoding="utf-8"))
    lines = (ROOT / "Pulumi.prod.yaml").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "Pulumi.prod.yaml").write_text(
        "".join(line for line in lines if "sourceProjectNumber" not in line)
    )
    return tmp_path


def test_audit_reads_the_agent_number_it_is_not_given(live: Live, tmp_path: Path) -> None:
    """The expected agent is the source project's, from its live number (Resource Manager),
    whether or not the stack names the number."""
    folder = _prod_without_source_number(tmp_path)
    result = runner.invoke(
        app, ["audit", "--stack", "prod", "--project-dir", str(folder), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["findings"] == []
    assert [r.path for r in live.iam.requests if r.method == "GET"][:1] == [
        f"/v1/projects/{SOURCE}"
    ]


def test_audit_needs_the_agent_number_when_google_will_not_say_it(
    live: Live, tmp_path: Path
) -> None:
    live.iam.hidden.add(SOURCE)
    folder = _prod_without_source_number(tmp_path)
    result = runner.invoke(app, ["audit", "--stack", "prod", "--project-dir", str(folder)])
    assert result.exit_code == 2
    assert "sourceProjectNumber" in result.stderr
    assert f"project {SOURCE}'s number could not be read (403 PERMISSION_DENIED" in result.stderr


def test_review_markdown_has_every_grant_permissions_and_policy(tmp_path: Path) -> None:
    out = tmp_path / "prod-review.md"
    result = runner.invoke(
        app, ["review", "--stack", "prod", "--project-dir", str(ROOT), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    text = out.read_text()
    for role in (
        "bigquery.dataEditor",
        "bigquery.jobUser",
        "storage.objectViewer",
        "pubsub.publisher",
        "cloudkms.cryptoKeyEncrypterDecrypter",
    ):
        assert f"### `roles/{role}`" in text
    assert "`bigquery.tables.updateData`" in text
    assert "from snapshot 2026-11-24" in text
    from dicom_bq.infra.policy_rules import RULES

    assert f"All {len(RULES)} rules pass." in text


def test_review_online_reads_the_iam_api(live: Live) -> None:
    live.iam.roles["roles/bigquery.jobUser"] = {
        "title": "BigQuery Job User",
        "includedPermissions": ["bigquery.jobs.create", "bigquery.newThing.use"],
    }
    result = runner.invoke(
        app, ["review", "--stack", "dev", "--project-dir", str(ROOT), "--online", "-f", "json"]
    )
    assert result.exit_code == 0, result.output
    grants = {g["role"]: g for g in json.loads(result.stdout)["grants"]}
    assert grants["roles/bigquery.jobUser"]["permissions"] == [
        "bigquery.jobs.create",
        "bigquery.newThing.use",
    ]
    assert grants["roles/bigquery.jobUser"]["permissions_source"] == "IAM API"
    assert grants["roles/bigquery.dataEditor"]["permissions_source"].startswith(
        "snapshot 2026-11-24 (IAM API: 404"
    )


def _review_generated(folder: Path, stack: str, *options: str) -> str:
    from tests.test_cli_plan import write_generated_project

    if not (folder / "Pulumi.yaml").exists():
        write_generated_project(folder)
    result = runner.invoke(
        app, ["review", "--stack", stack, "--project-dir", str(folder), *options]
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def test_review_lists_every_identity_with_its_grants(tmp_path: Path) -> None:
    document = json.loads(_review_generated(tmp_path, "operations", "-f", "json"))
    identities = {
        identity["title"].split(" dicom-bq-")[0]: identity for identity in document["identities"]
    }
    assert set(identities) == {
        "Cloud Healthcare service agent",
        "Service account",
        "Cloud Scheduler service agent",
    }
    # Each grant sits under its member's identity, whole: role, member, scope, why, permissions.
    assert sorted(
        (g["member"], g["role"], g["scope"]) for i in identities.values() for g in i["grants"]
    ) == sorted((g["member"], g["role"], g["scope"]) for g in document["grants"])
    for identity in identities.values():
        for grant in identity["grants"]:
            assert grant["member"] == identity["member"]
            assert {"role", "scope", "reason", "permissions", "permissions_source"} <= grant.keys()
    snapshot = identities["Service account"]
    assert snapshot["member"].startswith("serviceAccount:dicom-bq-snapshot-")
    assert snapshot["origin"].startswith("created by the stack (gcp:serviceaccount/account:Account")
    assert len(snapshot["grants"]) == 2  # one per store
    markdown = _review_generated(tmp_path, "operations")
    header = markdown.split("\n## ", 1)[0]
    for identity in identities.values():
        assert f"`{identity['member']}`" in header
        assert f"## {identity['title']}: `{identity['member']}`" in markdown
    assert "| identity | role | member | on | why |" in markdown


def test_review_reads_the_custom_roles_permissions_from_the_plan(tmp_path: Path) -> None:
    document = json.loads(_review_generated(tmp_path, "operations", "-f", "json"))
    custom = [g for g in document["grants"] if "/roles/dicomBqSnapshotExport_" in g["role"]]
    assert len(custom) == 2
    for grant in custom:
        assert grant["permissions"] == ["healthcare.dicomStores.export"]
        assert grant["permissions_source"] == "the stack's custom role"
        assert grant["role_title"] == "dicom-bq nightly snapshot: DICOM export only"
    markdown = _review_generated(tmp_path, "operations")
    assert "- Permissions (1, from the stack's custom role):" in markdown
    assert "not in the snapshot" not in markdown.split("## Service account", 1)[1].split("\n## ")[0]


def test_review_lists_the_dicom_stores_one_a_line(tmp_path: Path) -> None:
    markdown = _review_generated(tmp_path, "three-stores")
    section = markdown.split("## DICOM stores\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    store = "`projects/dicom-src-test/locations/us-central1/datasets/imaging/dicomStores/{}`"
    assert section == [
        f"- {store.format('archive')}: labels `env=test`; no notification; no streams",
        f"- {store.format('clinical')}: labels `env=test`; no notification; streams to "
        "`bq://dicom-src-test.dicom_metadata.clinical_stream`, "
        "`bq://dicom-src-test.dicom_metadata.clinical_research`",
        f"- {store.format('research')}: labels `env=test, team=research`; notifies "
        "`projects/dicom-src-test/topics/research-instances` (bulk imports too); no streams",
    ]


def test_review_lists_the_alert_policies_and_what_they_watch(tmp_path: Path) -> None:
    document = json.loads(_review_generated(tmp_path, "operations", "-f", "json"))
    policies = {p["display_name"]: p for p in document["alert_policies"]}
    plan = plan_example("operations")
    assert set(policies) == set(plan.outputs["alertPolicies"])
    metric_filters = {
        r.inputs["name"]: r.inputs["filter"]
        for r in plan.custom_resources()
        if r.type == "gcp:logging/metric:Metric"
    }
    for policy in policies.values():
        assert policy["severity"] == "ERROR"
        assert policy["notifies"] == [
            "email oncall@example.org (created by the stack)",
            "projects/dicom-src-test/notificationChannels/4242",
        ]
        for watch in policy["watches"]:
            # The condition names its log metric; the review shows the logs that metric counts.
            assert watch["log_filter"] == metric_filters[watch["log_metric"]]
    clinical = policies["dicom-bq: export errors on DICOM store clinical"]["watches"][0]
    assert 'resource.labels.dicom_store_id="clinical"' in clinical["log_filter"]
    markdown = _review_generated(tmp_path, "operations")
    section = markdown.split("## Alert policies\n\n", 1)[1].split("\n\n", 1)[0]
    assert len(section.splitlines()) == 2 + len(policies)
    assert "log entries matching `resource.type=" in section


def test_review_lists_the_scheduler_jobs(tmp_path: Path) -> None:
    document = json.loads(_review_generated(tmp_path, "operations", "-f", "json"))
    store = "projects/dicom-src-test/locations/us-central1/datasets/imaging/dicomStores/{}"
    jobs = {job["target_store"]: job for job in document["scheduler_jobs"]}
    assert set(jobs) == {store.format("clinical"), store.format("archive")}
    for store_id in ("clinical", "archive"):
        job = jobs[store.format(store_id)]
        assert (job["schedule"], job["time_zone"], job["retry_count"]) == (
            "0 2 * * *",
            "Europe/Paris",
            0,
        )
        # The table comes from the request body the job sends, as Cloud Scheduler will send it.
        assert job["table"] == f"bq://dicom-src-test.dicom_metadata.dicom_snapshot_{store_id}"
        assert job["write_disposition"] == "WRITE_TRUNCATE"
        assert job["runs_as"].startswith("dicom-bq-snapshot-")
    markdown = _review_generated(tmp_path, "operations")
    rows = markdown.split("## Scheduler jobs\n\n", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    assert len(rows) == 2
    assert all("| `0 2 * * *` | Europe/Paris |" in row and "| 0 |" in row for row in rows)


def test_review_of_a_stack_without_operations_says_none(tmp_path: Path) -> None:
    markdown = _review_generated(tmp_path, "three-stores")
    assert "## Alert policies\n\nNone." in markdown
    assert "## Scheduler jobs\n\nNone." in markdown


# -- Stacks of several DICOM stores, and the nightly snapshot's grants ------------------------

GENERATED = "dicom-src-test"  # tests/conftest.py base_settings: one project for both sides
GENERATED_AGENT = "serviceAccount:service-111122223333@gcp-sa-healthcare.iam.gserviceaccount.com"
SCHEDULER_AGENT = (
    "serviceAccount:service-111122223333@gcp-sa-cloudscheduler.iam.gserviceaccount.com"
)
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
STORES = f"projects/{GENERATED}/locations/us-central1/datasets/imaging/dicomStores"
RESEARCH_TOPIC = f"projects/{GENERATED}/topics/research-instances"
CLINICAL_TOPIC = f"projects/{GENERATED}/topics/clinical-instances"
GENERATED_SCOPES = (
    f"//cloudresourcemanager.googleapis.com/projects/{GENERATED}",
    f"//bigquery.googleapis.com/projects/{GENERATED}/datasets/dicom_metadata",
)


def _two_topic_stack() -> dict[str, Any]:
    """tests/stacks.py three_store_stack with its streaming store notifying too, on a topic of
    its own: two stores, two topics, one publisher grant each."""
    settings = three_store_stack()
    settings["dicomStores"][0]["notification"] = {"pubsubTopic": CLINICAL_TOPIC}
    return settings


@dataclass
class Deployed:
    """A generated stack as `pulumi up` leaves it; the audit reads the plan's grants as its
    outputs' grants, as `dicom-bq audit --stack` does."""

    plan: Plan
    iam: FakeIam
    bigquery: FakeBigQuery

    def result(self) -> AuditResult:
        target = AuditTarget.from_outputs(self.plan.stack, self.plan.outputs)
        return run_audit(Connection(), target, stacks=read_project_stacks(ROOT))

    @property
    def snapshot_account(self) -> str:
        (member,) = {g["member"] for g in self.plan.grants if is_snapshot_account(g["member"])}
        return member

    @property
    def snapshot_role(self) -> str:
        (role,) = {g["role"] for g in self.plan.grants if is_snapshot_account(g["member"])}
        return role

    @property
    def snapshot_account_name(self) -> str:
        email = self.snapshot_account.removeprefix("serviceAccount:")
        return f"projects/{GENERATED}/serviceAccounts/{email}"


def _deploy(monkeypatch: pytest.MonkeyPatch, plan: Plan, iam: FakeIam) -> Iterator[Deployed]:
    iam.projects[GENERATED] = [
        {"role": "roles/owner", "members": ["user:platform-lead@example.com"]},
        {"role": "roles/healthcare.serviceAgent", "members": [GENERATED_AGENT]},
        {"role": "roles/bigquery.jobUser", "members": [GENERATED_AGENT]},
    ]
    iam.start()
    bigquery = FakeBigQuery(datasets={f"{GENERATED}.dicom_metadata"}).start()
    bigquery.dataset_access[f"{GENERATED}.dicom_metadata"] = [
        {"role": "OWNER", "specialGroup": "projectOwners"},
        {"role": "WRITER", "userByEmail": GENERATED_AGENT.split(":", 1)[1]},
    ]
    _every_api_at(monkeypatch, iam=iam, bigquery=bigquery)
    yield Deployed(plan, iam, bigquery)
    iam.stop()
    bigquery.stop()
    assert iam.problems == [], "requests the real APIs would refuse"


@pytest.fixture
def three_stores(monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployed]:
    iam = FakeIamWithProjects(
        numbers=dict(NUMBERS),
        topics={
            RESEARCH_TOPIC: [
                {"role": "roles/pubsub.publisher", "members": [GENERATED_AGENT]},
                {"role": "roles/pubsub.subscriber", "members": ["group:research@example.com"]},
            ]
        },
    )
    yield from _deploy(monkeypatch, plan_example("three-stores"), iam)


@pytest.fixture
def two_topics(monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployed]:
    iam = FakeIamWithProjects(
        numbers=dict(NUMBERS),
        topics={
            topic: [{"role": "roles/pubsub.publisher", "members": [GENERATED_AGENT]}]
            for topic in (CLINICAL_TOPIC, RESEARCH_TOPIC)
        },
    )
    yield from _deploy(monkeypatch, plan_settings("two-topics", _two_topic_stack()), iam)


@pytest.fixture
def operations(monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployed]:
    plan = plan_example("operations")
    deployed = Deployed(plan, FakeIamWithProjects(numbers=dict(NUMBERS)), FakeBigQuery())
    deployed.iam.stores = {
        f"{STORES}/clinical": [
            {"role": deployed.snapshot_role, "members": [deployed.snapshot_account]},
            {"role": "roles/healthcare.dicomViewer", "members": ["group:radiology@example.com"]},
        ],
        f"{STORES}/archive": [
            {"role": deployed.snapshot_role, "members": [deployed.snapshot_account]}
        ],
    }
    deployed.iam.service_accounts = {
        deployed.snapshot_account_name: [{"role": TOKEN_CREATOR, "members": [SCHEDULER_AGENT]}]
    }
    yield from _deploy(monkeypatch, plan, deployed.iam)


def test_three_store_stack_audit_reads_its_one_topic_and_is_clean(three_stores: Deployed) -> None:
    result = three_stores.result()
    assert result.findings == ()
    assert result.scopes_read == (*GENERATED_SCOPES, f"//pubsub.googleapis.com/{RESEARCH_TOPIC}")
    assert result.clean


def test_every_stores_topic_grant_is_found(two_topics: Deployed) -> None:
    result = two_topics.result()
    assert result.findings == ()
    assert result.scopes_read == (
        *GENERATED_SCOPES,
        f"//pubsub.googleapis.com/{CLINICAL_TOPIC}",
        f"//pubsub.googleapis.com/{RESEARCH_TOPIC}",
    )
    assert result.clean


def test_a_missing_publisher_grant_on_one_stores_topic_names_that_topic(
    two_topics: Deployed,
) -> None:
    two_topics.iam.topics[RESEARCH_TOPIC] = []
    result = two_topics.result()
    (finding,) = result.findings
    assert (finding.kind, finding.role, finding.member) == (
        "missing",
        "roles/pubsub.publisher",
        GENERATED_AGENT,
    )
    assert finding.scope == f"//pubsub.googleapis.com/{RESEARCH_TOPIC}"
    assert (
        f"gcloud pubsub topics add-iam-policy-binding research-instances --project={GENERATED} "
        f"--member='{GENERATED_AGENT}' --role='roles/pubsub.publisher'" in finding.fix
    )
    assert not result.clean


def test_operations_stack_audit_reads_each_store_and_the_snapshot_account(
    operations: Deployed,
) -> None:
    result = operations.result()
    assert result.findings == ()
    assert result.scopes_read == (
        *GENERATED_SCOPES,
        f"//healthcare.googleapis.com/{STORES}/clinical",
        f"//healthcare.googleapis.com/{STORES}/archive",
        f"//iam.googleapis.com/{operations.snapshot_account_name}",
    )
    assert result.clean
    asked = {(r.method, r.path): r for r in operations.iam.requests}
    for store in ("clinical", "archive"):
        read = asked["GET", f"/v1/{STORES}/{store}:getIamPolicy"]
        assert read.query["options.requestedPolicyVersion"] == ["3"]
    # iam v1 projects.serviceAccounts.getIamPolicy is a POST, its version a query parameter.
    read = asked["POST", f"/v1/{operations.snapshot_account_name}:getIamPolicy"]
    assert read.query["options.requestedPolicyVersion"] == ["3"]


def test_operations_stack_clean_state_is_reported_clean_by_the_cli(
    operations: Deployed, tmp_path: Path
) -> None:
    from tests.test_cli_plan import write_generated_project

    folder = write_generated_project(tmp_path)
    result = runner.invoke(app, ["audit", "--stack", "operations", "--project-dir", str(folder)])
    assert result.exit_code == 0, result.output
    # Five grants: two to the agent, one per store to the snapshot account, one to Scheduler.
    assert result.stdout.startswith(
        "clean: the live IAM policies match the 5 grants of operations (read all 5 scopes)"
    )


def test_an_extra_role_for_the_snapshot_account_on_one_store_is_found(
    operations: Deployed,
) -> None:
    operations.iam.stores[f"{STORES}/archive"].append(
        {"role": "roles/healthcare.dicomEditor", "members": [operations.snapshot_account]}
    )
    (finding,) = operations.result().findings
    assert (finding.kind, finding.role, finding.member) == (
        "extra",
        "roles/healthcare.dicomEditor",
        operations.snapshot_account,
    )
    assert finding.scope == f"//healthcare.googleapis.com/{STORES}/archive"
    assert finding.fix == (
        "gcloud healthcare dicom-stores remove-iam-policy-binding archive --dataset=imaging "
        f"--location=us-central1 --project={GENERATED} "
        f"--member='{operations.snapshot_account}' --role='roles/healthcare.dicomEditor'"
    )


def test_a_missing_store_grant_of_the_snapshot_account_is_found(operations: Deployed) -> None:
    del operations.iam.stores[f"{STORES}/clinical"][0]
    (finding,) = operations.result().findings
    assert (finding.kind, finding.role, finding.member) == (
        "missing",
        operations.snapshot_role,
        operations.snapshot_account,
    )
    assert finding.scope == f"//healthcare.googleapis.com/{STORES}/clinical"
    assert "nightly snapshot export of this store will fail" in finding.message
    assert (
        "gcloud healthcare dicom-stores add-iam-policy-binding clinical --dataset=imaging "
        f"--location=us-central1 --project={GENERATED} "
        f"--member='{operations.snapshot_account}' --role='{operations.snapshot_role}'"
        in finding.fix
    )


def test_a_missing_token_creator_grant_of_the_scheduler_agent_is_found(
    operations: Deployed,
) -> None:
    operations.iam.service_accounts[operations.snapshot_account_name] = []
    (finding,) = operations.result().findings
    assert (finding.kind, finding.role, finding.member) == (
        "missing",
        TOKEN_CREATOR,
        SCHEDULER_AGENT,
    )
    assert finding.scope == f"//iam.googleapis.com/{operations.snapshot_account_name}"
    assert "Cloud Scheduler cannot mint the account's token" in finding.message


def test_an_extra_token_creator_on_the_snapshot_account_is_found(operations: Deployed) -> None:
    # Whoever holds Token Creator on the snapshot account can act as it, so export any store.
    operations.iam.service_accounts[operations.snapshot_account_name][0]["members"].append(
        "user:someone@example.com"
    )
    (finding,) = operations.result().findings
    assert (finding.kind, finding.role, finding.member) == (
        "extra",
        TOKEN_CREATOR,
        "user:someone@example.com",
    )
    assert finding.scope == f"//iam.googleapis.com/{operations.snapshot_account_name}"
    email = operations.snapshot_account.removeprefix("serviceAccount:")
    assert finding.fix == (
        f"gcloud iam service-accounts remove-iam-policy-binding {email} --project={GENERATED} "
        f"--member='user:someone@example.com' --role='{TOKEN_CREATOR}'"
    )


def _deny_store(deployed: Deployed) -> str:
    deployed.iam.denied.add(f"{STORES}/archive")
    return f"//healthcare.googleapis.com/{STORES}/archive"


def _drop_snapshot_account(deployed: Deployed) -> str:
    del deployed.iam.service_accounts[deployed.snapshot_account_name]
    return f"//iam.googleapis.com/{deployed.snapshot_account_name}"


@pytest.mark.parametrize(
    ("break_it", "status", "check"),
    [
        (
            _deny_store,
            "403 PERMISSION_DENIED",
            "gcloud healthcare dicom-stores get-iam-policy archive --dataset=imaging "
            f"--location=us-central1 --project={GENERATED} --format=json",
        ),
        (
            _drop_snapshot_account,
            "404 NOT_FOUND",
            "gcloud iam service-accounts get-iam-policy dicom-bq-snapshot-",
        ),
    ],
    ids=["store-403", "service-account-404"],
)
def test_an_unreadable_store_or_account_policy_is_unread(
    operations: Deployed, break_it: Any, status: str, check: str
) -> None:
    scope = break_it(operations)
    result = operations.result()
    (finding,) = result.findings
    assert (finding.kind, finding.scope) == ("unread", scope)
    assert status in finding.message
    assert finding.fix.startswith(check)
    assert result.scopes_unread == (scope,)
    assert not result.clean


# -- The expected agent is the live project's; other agents on the stack's scopes --------------

DEV_AGENT = "serviceAccount:service-123456789012@gcp-sa-healthcare.iam.gserviceaccount.com"
GONE_AGENT = "serviceAccount:service-222233334444@gcp-sa-healthcare.iam.gserviceaccount.com"
WRONG = "111111111111"
WRONG_AGENT = f"serviceAccount:service-{WRONG}@gcp-sa-healthcare.iam.gserviceaccount.com"


def _prod_with_source_number(tmp_path: Path, number: str) -> Path:
    """The project folder with prod's and dev's stack files, prod's sourceProjectNumber set to
    `number`."""
    (tmp_path / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text(encoding="utf-8"))
    (tmp_path / "Pulumi.dev.yaml").write_text((ROOT / "Pulumi.dev.yaml").read_text("utf-8"))
    text = (ROOT / "Pulumi.prod.yaml").read_text(encoding="utf-8")
    (tmp_path / "Pulumi.prod.yaml").write_text(text.replace('"987654321098"', f'"{number}"'))
    return tmp_path


def test_a_wrong_source_project_number_is_flagged_and_the_real_agent_audited(
    live: Live, tmp_path: Path
) -> None:
    """A stack file copied with another project's number: the audit derives the agent from the
    live project, says the configured one is foreign, and reports the grant a deployment of
    that file gave the foreign agent."""
    live.iam.projects[ANALYTICS][0]["members"].append(WRONG_AGENT)
    folder = _prod_with_source_number(tmp_path, WRONG)
    result = runner.invoke(
        app, ["audit", "--stack", "prod", "--project-dir", str(folder), "--json"]
    )
    assert result.exit_code == 1, result.output
    found = findings(result)
    assert [(f["kind"], f["scope"], f["role"], f["member"]) for f in found] == [
        (
            "foreign-agent",
            f"//cloudresourcemanager.googleapis.com/projects/{SOURCE}",
            "",
            WRONG_AGENT,
        ),
        (
            "foreign-agent",
            f"//cloudresourcemanager.googleapis.com/projects/{ANALYTICS}",
            "roles/bigquery.jobUser",
            WRONG_AGENT,
        ),
    ]
    assert "987654321098" in found[0]["message"]
    assert "dicom-bq:sourceProjectNumber to 987654321098" in found[0]["fix"]
    assert found[1]["fix"] == (
        f"gcloud projects remove-iam-policy-binding {ANALYTICS} --member='{WRONG_AGENT}' "
        "--role='roles/bigquery.jobUser'"
    )


def test_a_grant_held_for_an_agent_whose_stack_is_gone_is_reported(live: Live) -> None:
    """jobUser on the shared BigQuery project is kept when a stack is destroyed: the agent of a
    stack that no longer exists is reported with the command that removes it; the agent of
    another stack of the project (dev) is not."""
    live.iam.projects[ANALYTICS][0]["members"] += [DEV_AGENT, GONE_AGENT]
    result = live.audit()
    assert result.exit_code == 1, result.output
    (orphan,) = findings(result)
    assert (orphan["kind"], orphan["role"], orphan["member"]) == (
        "orphaned",
        "roles/bigquery.jobUser",
        GONE_AGENT,
    )
    assert "no stack of this project deploys that Healthcare agent" in orphan["message"]
    assert orphan["fix"] == (
        f"gcloud projects remove-iam-policy-binding {ANALYTICS} --member='{GONE_AGENT}' "
        "--role='roles/bigquery.jobUser'"
    )


def test_without_the_project_folder_other_agents_are_not_judged(live: Live) -> None:
    live.iam.projects[ANALYTICS][0]["members"].append(GONE_AGENT)
    target = AuditTarget.from_outputs("prod", plan_example("prod").outputs)
    result = run_audit(Connection(), target)
    assert result.findings == ()
    assert result.notes == (
        "the project's other stacks are unknown (no project folder): bindings of other "
        "Healthcare agents are not judged",
    )


def test_review_lists_the_grants_kept_on_delete_with_their_commands(tmp_path: Path) -> None:
    out = tmp_path / "review.json"
    result = runner.invoke(
        app,
        ["review", "--stack", "prod", "--project-dir", str(ROOT), "-f", "json", "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    kept = json.loads(out.read_text())["kept_on_delete"]
    assert {(k["role"], k["scope"]) for k in kept} == {
        ("roles/bigquery.jobUser", PROD_SCOPES[1]),
        ("roles/storage.objectViewer", PROD_SCOPES[3]),
        ("roles/pubsub.publisher", PROD_SCOPES[4]),
        (ENCRYPTER, PROD_SCOPES[5]),
        (ENCRYPTER, PROD_SCOPES[6]),
    }
    (bucket,) = [k for k in kept if k["role"] == "roles/storage.objectViewer"]
    assert bucket["remove"] == (
        f"gcloud storage buckets remove-iam-policy-binding gs://{BUCKET} --member='{AGENT}' "
        "--role='roles/storage.objectViewer'"
    )
    markdown = runner.invoke(app, ["review", "--stack", "prod", "--project-dir", str(ROOT)])
    assert "## Grants kept when the stack is destroyed" in markdown.stdout
    assert f"`{bucket['remove']}`" in markdown.stdout
