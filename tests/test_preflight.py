"""`dicom-bq preflight` against a loopback fake of the APIs it reads (requests checked against
Google's discovery documents): all clear, then each missing prerequisite and each missing
permission found, with its fix."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.flows.preflight import needed_permissions, preflight_plan
from tests.conftest import cached_plan
from tests.fakes.cloud_resources import FakeCloudResources
from tests.inventory import ROOT

runner = CliRunner()
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


def ready_for(stack: str) -> FakeCloudResources:
    """A cloud where everything the stack's first `pulumi up` needs is in place."""
    plan = cached_plan(stack)
    fake = FakeCloudResources()
    for r in plan.custom_resources():
        if r.type == "gcp:projects/service:Service":
            fake.services[f"{r.inputs['project']}/{r.inputs['service']}"] = "ENABLED"
    for need in needed_permissions(plan):
        fake.permissions.setdefault(need.resource, set()).add(need.permission)
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
    {(n.resource, n.permission) for n in needed_permissions(cached_plan("prod"))}
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
