"""`dicom-bq audit` on seeded drift, and `dicom-bq review`, against loopback IAM surfaces."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from tests.fakes.bigquery import FakeBigQuery
from tests.fakes.iam import FakeIam
from tests.inventory import ROOT

runner = CliRunner()
AGENT = "serviceAccount:service-987654321098@gcp-sa-healthcare.iam.gserviceaccount.com"
SOURCE, ANALYTICS = "clinical-imaging-prod", "imaging-analytics-prod"
BUCKET = "clinical-imaging-prod-export-filters"


@dataclass
class Live:
    iam: FakeIam
    bigquery: FakeBigQuery

    def audit(self, *extra: str) -> Any:
        return runner.invoke(
            app, ["audit", "--stack", "prod", "--project-dir", str(ROOT), "--json", *extra]
        )


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    """The prod stack as `pulumi up` leaves it, next to other people's grants."""
    iam = FakeIam(
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
    ).start()
    bigquery = FakeBigQuery(datasets={f"{ANALYTICS}.dicom_metadata"}).start()
    bigquery.dataset_access[f"{ANALYTICS}.dicom_metadata"] = [
        {"role": "OWNER", "specialGroup": "projectOwners"},
        {"role": "WRITER", "userByEmail": AGENT.split(":", 1)[1]},
        {"role": "READER", "groupByEmail": "analysts@example.com"},
    ]
    for variable in ("RESOURCEMANAGER_EMULATOR_HOST", "STORAGE_EMULATOR_HOST", "IAM_EMULATOR_HOST"):
        monkeypatch.setenv(variable, iam.url)
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery.url)
    yield Live(iam, bigquery)
    iam.stop()
    bigquery.stop()


def kinds(result: Any) -> list[tuple[str, str]]:
    return [(f["kind"], f["role"]) for f in json.loads(result.stdout)["findings"]]


def test_clean_state_is_reported_clean(live: Live) -> None:
    result = live.audit()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"stack": "prod", "clean": True, "findings": []}
    plain = runner.invoke(app, ["audit", "--stack", "prod", "--project-dir", str(ROOT)])
    assert plain.exit_code == 0
    assert plain.stdout.startswith("clean: the live IAM policies match the 5 grants of prod")


def test_missing_role_is_found_with_the_fix(live: Live) -> None:
    live.iam.projects[ANALYTICS][0]["members"].remove(AGENT)
    result = live.audit()
    assert result.exit_code == 1
    (finding,) = json.loads(result.stdout)["findings"]
    assert finding["kind"] == "missing"
    assert finding["role"] == "roles/bigquery.jobUser"
    assert "pulumi up --stack prod" in finding["fix"]
    assert (
        f"gcloud projects add-iam-policy-binding {ANALYTICS} --member='{AGENT}' --role='roles/bigquery.jobUser'"
        in finding["fix"]
    )


def test_extra_admin_role_for_the_agent_is_found(live: Live) -> None:
    live.iam.projects[ANALYTICS].append({"role": "roles/bigquery.admin", "members": [AGENT]})
    result = live.audit()
    assert result.exit_code == 1
    assert kinds(result) == [("extra", "roles/bigquery.admin")]
    assert "remove-iam-policy-binding" in json.loads(result.stdout)["findings"][0]["fix"]


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
    (finding,) = json.loads(result.stdout)["findings"]
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


def test_audit_needs_the_agent_number(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.yaml").write_text("name: dicom-bq\nruntime: python\n")
    (tmp_path / "Pulumi.x.yaml").write_text(
        "config:\n  dicom-bq:sourceProject: src-project\n  dicom-bq:location: us-central1\n"
        "  dicom-bq:healthcareDatasetId: d\n  dicom-bq:dicomStoreId: s\n  dicom-bq:bigqueryDatasetId: b\n"
    )
    result = runner.invoke(app, ["audit", "--stack", "x", "--project-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "sourceProjectNumber" in result.stderr


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
    assert "All 13 rules pass." in text


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
