"""`dicom-bq preflight` against a loopback fake of the APIs it reads (requests checked against
Google's discovery documents): all clear, then each missing prerequisite and each missing
permission found, with its fix."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.flows.preflight import needed_permissions, preflight_plan
from dicom_bq.security.stacks import kept_grants
from dicom_bq.stack.plan import Plan, plan_settings
from dicom_bq.vocabulary.scopes import parse_scope
from tests.conftest import cached_plan
from tests.fakes.cloud_resources import FakeCloudResources
from tests.fakes.projects import FakePreflightCloud
from tests.inventory import ROOT
from tests.permission_oracle import expected_permissions, short_name
from tests.stacks import generated_stacks, operations_stack, three_store_stack

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("plans_made_once")
VARIABLES = [
    "SERVICEUSAGE_EMULATOR_HOST",
    "RESOURCEMANAGER_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "KMS_EMULATOR_HOST",
    "HEALTHCARE_EMULATOR_HOST",
    "BIGQUERY_EMULATOR_HOST",
]
HC_KEY = "projects/clinical-kms-prod/locations/europe-west4/keyRings/imaging/cryptoKeys/healthcare"
BQ_KEY = "projects/clinical-kms-prod/locations/europe-west4/keyRings/imaging/cryptoKeys/bigquery"
TOPIC = "projects/clinical-imaging-prod/topics/dicom-instances"
BUCKET = "clinical-imaging-prod-export-filters"


# Each project's number as Resource Manager answers it: the stack files' (Pulumi.dev.yaml,
# Pulumi.prod.yaml).
NUMBERS = {
    "dicom-bq-dev": "123456789012",
    "clinical-imaging-prod": "987654321098",
    "imaging-analytics-prod": "555566667777",
}


def ready_for(stack: str) -> FakePreflightCloud:
    """A cloud where everything the stack's first `pulumi up` needs is in place, and nobody
    holds a role yet on the scopes the stack grants on but does not create."""
    plan = cached_plan(stack)
    fake = FakePreflightCloud(numbers=dict(NUMBERS))
    for grant in kept_grants(plan):
        parsed = parse_scope(grant.scope)
        assert parsed is not None
        table = {
            "project": (fake.iam.projects, parsed.parts.get("project")),
            "bucket": (fake.iam.buckets, parsed.parts.get("bucket")),
            "topic": (fake.iam.topics, parsed.parts["name"]),
            "crypto_key": (fake.iam.keys, parsed.parts["name"]),
        }[parsed.kind.name]
        table[0].setdefault(str(table[1]), [])
    for r in plan.custom_resources():
        if r.type == "gcp:projects/service:Service":
            fake.services[f"{r.inputs['project']}/{r.inputs['service']}"] = "ENABLED"
    # What the caller holds comes from Google's pages (tests/permission_oracle.py), not from the
    # function under test: a permission preflight forgot to ask for is then never missing here.
    for scope, permission in expected_permissions(plan):
        fake.permissions.setdefault(short_name(scope), set()).add(permission)
    fake.buckets = {"dicom-bq-dev-filters": {"location": "US"}, BUCKET: {"location": "EU"}}
    fake.topics = {TOPIC}
    for key in (HC_KEY, BQ_KEY):
        fake.keys[key] = {"purpose": "ENCRYPT_DECRYPT", "primary": {"state": "ENABLED"}}
    return fake


@pytest.fixture
def cloud_for(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    started: list[FakeCloudResources] = []
    monkeypatch.setenv("PATH", "/nonexistent")  # no Pulumi CLI: what the stack owns is unknown

    def start(fake: FakeCloudResources) -> FakeCloudResources:
        fake.start()
        started.append(fake)
        for variable in VARIABLES:
            monkeypatch.setenv(variable, fake.url)
        # Google's own convention for Pub/Sub is host:port, without a scheme.
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", fake.url.removeprefix("http://"))
        return fake

    yield start
    for fake in started:
        fake.stop()


def stand_in_cli(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """A `pulumi` executable of `script`, alone on PATH with the system's tools."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pulumi").write_text(script, encoding="utf-8")
    (bin_dir / "pulumi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


def preflight(stack: str) -> Any:
    return runner.invoke(app, ["preflight", "--stack", stack, "--project-dir", str(ROOT), "--json"])


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_all_clear(cloud_for: Any, stack: str) -> None:
    fake = cloud_for(ready_for(stack))
    result = preflight(stack)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert {c["status"] for c in report["checks"]} == {"ok"}
    assert fake.problems == []
    methods = {method for method, _ in fake.requests}
    assert "cloudresourcemanager.projects.testIamPermissions" in methods
    assert "serviceusage.services.get" in methods
    if stack == "prod":
        assert {
            "storage.buckets.testIamPermissions",
            "pubsub.projects.topics.get",
            "cloudkms.projects.locations.keyRings.cryptoKeys.get",
            "healthcare.projects.locations.datasets.get",
            "bigquery.datasets.get",
        } <= methods


def test_human_output_names_each_check(cloud_for: Any) -> None:
    cloud_for(ready_for("prod"))
    result = runner.invoke(app, ["preflight", "--stack", "prod", "--project-dir", str(ROOT)])
    assert result.exit_code == 0
    assert "all clear for prod" in result.stdout
    assert f"gs://{BUCKET}" in result.stdout


PROD_PERMISSIONS = sorted(
    (short_name(scope), permission)
    for scope, permission in expected_permissions(cached_plan("prod"))
)


@pytest.mark.parametrize(("resource", "permission"), PROD_PERMISSIONS)
def test_each_missing_permission_is_found_with_its_fix(
    cloud_for: Any, resource: str, permission: str
) -> None:
    fake = ready_for("prod")
    fake.permissions[resource].discard(permission)
    cloud_for(fake)
    # The flow `preflight --stack prod` runs, on the plan made once for the module: the command
    # itself (planning, exit code 1, --json) is exercised by the tests around this one.
    report = preflight_plan(plan=cached_plan("prod"), project_dir=ROOT, impersonate=None)
    assert report.ok is False
    (failed,) = [c for c in report.as_dict()["checks"] if c["status"] == "fail"]
    assert failed["subject"] == resource
    assert permission in failed["detail"]
    assert failed["fix"].startswith("ask for roles/")
    assert fake.problems == []


def _missing_bucket(fake: FakeCloudResources) -> None:
    del fake.buckets[BUCKET]


def _missing_topic(fake: FakeCloudResources) -> None:
    fake.topics.clear()


def _missing_key(fake: FakeCloudResources) -> None:
    del fake.keys[HC_KEY]


def _disabled_key(fake: FakeCloudResources) -> None:
    fake.keys[BQ_KEY]["primary"]["state"] = "DISABLED"


def _signing_key(fake: FakeCloudResources) -> None:
    fake.keys[BQ_KEY]["purpose"] = "ASYMMETRIC_SIGN"


def _api_off_no_right(fake: FakeCloudResources) -> None:
    fake.services["clinical-imaging-prod/healthcare.googleapis.com"] = "DISABLED"


def _existing_dataset(fake: FakeCloudResources) -> None:
    fake.healthcare_datasets.add(
        "projects/clinical-imaging-prod/locations/europe-west4/datasets/imaging-prod"
    )


def _existing_bigquery(fake: FakeCloudResources) -> None:
    fake.bigquery_datasets.add("imaging-analytics-prod.dicom_metadata")


PREREQUISITES = [
    (_missing_bucket, f"gs://{BUCKET}", "does not exist", "gcloud storage buckets create"),
    (_missing_topic, TOPIC, "does not exist", "gcloud pubsub topics create dicom-instances"),
    (_missing_key, HC_KEY, "does not exist", "gcloud kms keys create healthcare --keyring imaging"),
    (_disabled_key, BQ_KEY, "DISABLED", "gcloud kms keys versions enable"),
    (_signing_key, BQ_KEY, "ASYMMETRIC_SIGN", "--purpose encryption"),
    (
        _api_off_no_right,
        "healthcare.googleapis.com in clinical-imaging-prod",
        "lack serviceusage.services.enable",
        "gcloud services enable healthcare.googleapis.com --project clinical-imaging-prod",
    ),
]


@pytest.mark.parametrize(
    ("break_it", "subject", "detail", "fix"),
    [pytest.param(*p, id=p[0].__name__.strip("_")) for p in PREREQUISITES],
)
def test_each_missing_prerequisite_is_found_with_its_fix(
    cloud_for: Any, break_it: Any, subject: str, detail: str, fix: str
) -> None:
    fake = ready_for("prod")
    break_it(fake)
    cloud_for(fake)
    result = preflight("prod")
    assert result.exit_code == 1, result.output
    failed = [c for c in json.loads(result.stdout)["checks"] if c["status"] == "fail"]
    assert [c["subject"] for c in failed] == [subject]
    assert detail in failed[0]["detail"]
    assert fix in failed[0]["fix"]
    assert fake.problems == []


def test_a_disabled_api_the_caller_may_enable_is_fine(cloud_for: Any) -> None:
    fake = ready_for("prod")
    fake.services["clinical-imaging-prod/healthcare.googleapis.com"] = "DISABLED"
    fake.permissions["projects/clinical-imaging-prod"].add("serviceusage.services.enable")
    cloud_for(fake)
    result = preflight("prod")
    assert result.exit_code == 0, result.output
    assert "will enable it" in result.stdout


@pytest.mark.parametrize(
    ("break_it", "name", "import_type"),
    [
        (
            _existing_dataset,
            "imaging-prod",
            "gcp:healthcare/dataset:Dataset dicom-bq-dicom-dataset",
        ),
        (
            _existing_bigquery,
            "dicom_metadata",
            "gcp:bigquery/dataset:Dataset dicom-bq-bigquery-dataset",
        ),
    ],
)
def test_existing_resources_are_reported_with_the_import_command(
    cloud_for: Any, break_it: Any, name: str, import_type: str
) -> None:
    fake = ready_for("prod")
    break_it(fake)
    cloud_for(fake)
    result = preflight("prod")
    # Without a Pulumi CLI, whether the stack already manages it is unknown: a warning.
    assert result.exit_code == 0, result.output
    (warned,) = [c for c in json.loads(result.stdout)["checks"] if c["status"] == "warn"]
    assert name in warned["subject"]
    assert warned["fix"].startswith(f"pulumi import {import_type} ")
    assert "--parent 'dicom-bq-" in warned["fix"]
    assert "--stack prod" in warned["fix"]


def test_existing_resource_outside_a_known_stack_fails(
    cloud_for: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = ready_for("prod")
    _existing_bigquery(fake)
    cloud_for(fake)
    # Stands in for `pulumi stack export`: a deployed stack that does not hold the dataset.
    stand_in_cli(
        tmp_path,
        monkeypatch,
        '#!/usr/bin/env bash\necho \'{"deployment": {"resources": [{"id": "other"}]}}\'\n',
    )
    result = preflight("prod")
    assert result.exit_code == 1, result.output
    (failed,) = [c for c in json.loads(result.stdout)["checks"] if c["status"] == "fail"]
    assert failed["subject"] == "imaging-analytics-prod.dicom_metadata"
    assert "'projects/imaging-analytics-prod/datasets/dicom_metadata'" in failed["fix"]


def test_up_runs_preflight_first_and_stops_before_pulumi(
    cloud_for: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_up import STAND_IN

    fake = ready_for("prod")
    _missing_topic(fake)
    cloud_for(fake)
    stand_in_cli(tmp_path, monkeypatch, STAND_IN)
    log = tmp_path / "pulumi.log"
    monkeypatch.setenv("PULUMI_STAND_IN_LOG", str(log))
    result = runner.invoke(app, ["up", "--stack", "prod", "--yes", "--project-dir", str(ROOT)])
    assert result.exit_code == 1, result.output
    assert f"FAIL resource   {TOPIC}: does not exist" in result.stderr
    assert "nothing was deployed" in result.stderr
    # The stand-in was asked for the stack's state (preflight), never to deploy.
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["stack"]


# -- Fixes name roles that together hold what is missing; unknowns in words -------------------


def _named_roles(fix: str) -> list[str]:
    import re

    return re.findall(r"roles/[A-Za-z0-9_.]+", fix.split(" on ", 1)[0])


def test_a_fix_for_several_missing_permissions_names_roles_that_together_hold_them(
    cloud_for: Any,
) -> None:
    from itertools import combinations

    from dicom_bq.security.roles import deployer_roles

    fake = ready_for("prod")
    project = "projects/imaging-analytics-prod"
    missing = {
        "resourcemanager.projects.getIamPolicy",
        "resourcemanager.projects.setIamPolicy",
        "bigquery.datasets.create",
        "bigquery.jobs.create",
    }
    assert missing == fake.permissions[project]
    fake.permissions[project] -= missing
    cloud_for(fake)
    report = preflight_plan(plan=cached_plan("prod"), project_dir=ROOT, impersonate=None)
    (failed,) = [c for c in report.checks if c.status == "fail"]
    assert " or " not in failed.fix
    roles = _named_roles(failed.fix)
    assert failed.fix.startswith(f"ask for {', '.join(roles[:-1])} and {roles[-1]} on {project}")
    known = deployer_roles()
    assert missing <= set().union(*(known[r] for r in roles))
    # The smallest such set: no fewer of the known roles hold them all.
    assert not [
        names
        for names in combinations(known, len(roles) - 1)
        if missing <= set().union(*(known[n] for n in names))
    ]
    assert roles == ["roles/bigquery.user", "roles/resourcemanager.projectIamAdmin"]


def test_one_role_holding_every_missing_permission_is_named_alone(cloud_for: Any) -> None:
    fake = ready_for("prod")
    project = "projects/imaging-analytics-prod"
    missing = {"bigquery.datasets.create", "bigquery.jobs.create"} & fake.permissions[project]
    assert missing == {"bigquery.datasets.create", "bigquery.jobs.create"}
    fake.permissions[project] -= missing
    cloud_for(fake)
    report = preflight_plan(plan=cached_plan("prod"), project_dir=ROOT, impersonate=None)
    (failed,) = [c for c in report.checks if c.status == "fail"]
    assert failed.fix == (
        f"ask for roles/bigquery.user on {project} (it holds bigquery.datasets.create, "
        "bigquery.jobs.create)"
    )


def test_a_permission_no_known_role_holds_is_said_in_words() -> None:
    from dicom_bq.flows.preflight import _grant_fix

    fix = _grant_fix("projects/p", ["bigquery.jobs.create", "example.things.frobnicate"])
    assert fix.startswith("ask for roles/bigquery.user on projects/p")
    assert "no predefined role in dicom-bq's role data of 2026-08-22 holds " in fix
    assert "example.things.frobnicate: ask for a custom role with it on projects/p" in fix


def test_every_role_preflight_names_for_a_permission_holds_it() -> None:
    from dicom_bq.flows.preflight import ROLE_FOR
    from dicom_bq.security.roles import deployer_roles

    known = deployer_roles()
    for permission, role in ROLE_FOR.items():
        if role == "roles/bigquery.jobUser":  # an agent role: the agent snapshot has it
            continue
        assert permission in known[role], (permission, role)


def test_a_bucket_whose_location_is_not_in_the_answer_is_said_in_words(cloud_for: Any) -> None:
    fake = ready_for("prod")
    fake.buckets[BUCKET] = {}
    cloud_for(fake)
    result = runner.invoke(app, ["preflight", "--stack", "prod", "--project-dir", str(ROOT)])
    assert result.exit_code == 0, result.output
    assert "?" not in result.stdout
    assert f"gs://{BUCKET}: exists (its location was not in Google's answer)" in result.stdout


# -- The source project's number, and the grants other stacks or people already hold ----------

PROD_AGENT = "serviceAccount:service-987654321098@gcp-sa-healthcare.iam.gserviceaccount.com"
DEV_AGENT = "serviceAccount:service-123456789012@gcp-sa-healthcare.iam.gserviceaccount.com"


def test_a_wrong_source_project_number_fails_with_both_numbers(cloud_for: Any) -> None:
    """Pulumi.prod.yaml names 987654321098; Google says the project is another number."""
    fake = ready_for("prod")
    fake.numbers["clinical-imaging-prod"] = "123123123123"
    cloud_for(fake)
    result = preflight("prod")
    assert result.exit_code == 1, result.output
    (failed,) = [c for c in json.loads(result.stdout)["checks"] if c["status"] == "fail"]
    assert (failed["area"], failed["subject"]) == ("identity", "number of clinical-imaging-prod")
    assert failed["detail"].startswith(
        "dicom-bq:sourceProjectNumber 987654321098 is not the number of project "
        "clinical-imaging-prod: Resource Manager says 123123123123"
    )
    assert "another project's Cloud Healthcare service agent" in failed["detail"]
    assert failed["fix"].startswith(
        "pulumi config set dicom-bq:sourceProjectNumber 123123123123 --stack prod"
    )
    assert ("cloudresourcemanager.projects.get", "/v1/projects/clinical-imaging-prod") in {
        (method, r.path) for method, r in fake.requests
    }
    assert fake.problems == []


def test_a_number_resource_manager_will_not_give_is_a_warning(cloud_for: Any) -> None:
    fake = ready_for("prod")
    fake.hidden.add("clinical-imaging-prod")
    cloud_for(fake)
    result = preflight("prod")
    assert result.exit_code == 0, result.output
    (warned,) = [c for c in json.loads(result.stdout)["checks"] if c["status"] == "warn"]
    assert warned["subject"] == "number of clinical-imaging-prod"
    assert "403 PERMISSION_DENIED" in warned["detail"]
    assert "dicom-bq:sourceProjectNumber 987654321098 is unverified" in warned["detail"]
    assert warned["fix"] == (
        "gcloud projects describe clinical-imaging-prod --format='value(projectNumber)'"
    )


def test_preflight_tells_which_grants_exist_and_who_else_holds_them(cloud_for: Any) -> None:
    """The BigQuery project already grants jobUser to prod's agent (a person did), to dev's
    agent (stack dev) and to a group: `pulumi up` adds a member of its own, kept on destroy."""
    fake = ready_for("prod")
    fake.iam.projects["imaging-analytics-prod"] = [
        {
            "role": "roles/bigquery.jobUser",
            "members": [PROD_AGENT, DEV_AGENT, "group:analysts@example.com"],
        }
    ]
    cloud_for(fake)
    result = preflight("prod")
    assert result.exit_code == 0, result.output
    shared = {c["subject"]: c for c in json.loads(result.stdout)["checks"] if c["area"] == "shared"}
    job_user = shared["roles/bigquery.jobUser on projects/imaging-analytics-prod"]
    assert job_user["status"] == "ok"
    assert job_user["detail"] == (
        f"{PROD_AGENT} holds it already (a person or another stack granted it): `pulumi up` "
        f"adds this stack's own member resource; also held there by {DEV_AGENT} (the agent of "
        "stack dev), group:analysts@example.com; kept on destroy"
    )
    topic = shared[
        "roles/pubsub.publisher on projects/clinical-imaging-prod/topics/dicom-instances"
    ]
    assert (
        topic["detail"] == f"will be granted to {PROD_AGENT}; nobody else holds it; kept on destroy"
    )
    # Every grant on a scope the stack does not create, and only those.
    assert sorted(shared) == sorted(
        f"{g.role} on {g.scope.split('/', 3)[3].replace('projects/_/', '')}"
        for g in kept_grants(cached_plan("prod"))
    )
    assert "dicom-bq shared-grants --stack prod" in result.stderr
    assert fake.problems == []


# Planned in the test, not at collection: every xdist worker collects the whole suite.
ORACLE_STACKS: dict[str, Callable[[], Plan]] = {
    "dev": lambda: cached_plan("dev"),
    "prod": lambda: cached_plan("prod"),
    "three-stores": lambda: plan_settings("three-stores", three_store_stack()),
    "operations": lambda: plan_settings("operations", operations_stack()),
    **{name: functools.partial(plan_settings, name, raw) for name, raw in generated_stacks(8)},
}


@pytest.mark.parametrize("stack", ORACLE_STACKS)
def test_preflight_asks_exactly_what_googles_pages_say_each_change_needs(stack: str) -> None:
    plan = ORACLE_STACKS[stack]()
    asked = {(need.resource, need.permission) for need in needed_permissions(plan)}
    documented = {(short_name(scope), p) for scope, p in expected_permissions(plan)}
    assert asked - documented == set(), f"{stack}: asked for more than Google documents"
    assert documented - asked == set(), f"{stack}: preflight forgets what Google documents"
