"""`dicom-bq verify` end to end: fake Healthcare and BigQuery, real Orthanc and storage emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from tests.conftest import FILTER_BUCKET, STORE, Cloud

runner = CliRunner()
TABLE = "bq://dicom-src-test.dicom_metadata.dicom_bq_verification"


def outputs_file(tmp_path: Path, **extra: str) -> Path:
    outputs = {
        "dicomStoreName": STORE,
        "verificationTableUri": TABLE,
        "filterBucket": FILTER_BUCKET,
        "agentEmail": "service-111122223333@gcp-sa-healthcare.iam.gserviceaccount.com",
        **extra,
    }
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs), encoding="utf-8")
    return path


def test_verify_seeds_exports_finds_row_and_cleans_up(cloud: Cloud, tmp_path: Path) -> None:
    result = runner.invoke(app, ["verify", "--outputs", str(outputs_file(tmp_path)), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [s["step"] for s in report["steps"]] == [
        "store",
        "seed",
        "filter",
        "export",
        "query",
        "cleanup",
    ]
    assert all(s["ok"] for s in report["steps"])
    assert report["operation"]["success"] == 1
    body = cloud.healthcare.export_bodies[-1]
    assert body["bigqueryDestination"] == {"tableUri": TABLE, "writeDisposition": "WRITE_TRUNCATE"}
    assert body["filterConfig"]["resourcePathsGcsUri"].startswith(
        f"gs://{FILTER_BUCKET}/dicom-bq/verify/"
    )
    (query,) = cloud.bigquery.queries()
    assert "@sop_instance_uid" in query["query"]
    rows = cloud.bigquery.tables["dicom-src-test.dicom_metadata.dicom_bq_verification"]
    assert len(rows) == 1
    assert rows[0]["PatientName"] == "SYNTHETIC^DICOMBQ^VERIFICATION"
    # The synthetic instance is gone from the store again.
    metrics = json.loads(
        runner.invoke(
            app, ["verify", "--outputs", str(outputs_file(tmp_path)), "--no-seed", "--json"]
        ).stdout
    )
    assert metrics["steps"][0]["detail"].endswith("0 instances, 0 series, 0 studies")


def test_verify_without_seed_compares_counts(cloud: Cloud, tmp_path: Path) -> None:
    from tests.test_export_cli import seed

    seed(cloud, 3)
    result = runner.invoke(
        app, ["verify", "--outputs", str(outputs_file(tmp_path)), "--no-seed", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["steps"][-1] == {**report["steps"][-1], "step": "count", "ok": True}
    assert "3 rows = 3 exported = 3 instances" in report["steps"][-1]["detail"]
    assert cloud.healthcare.export_bodies[-1].get("filterConfig") is None


def test_verify_with_explicit_store_and_no_filter_bucket(cloud: Cloud) -> None:
    result = runner.invoke(app, ["verify", "--store", STORE, "--table", TABLE])
    assert result.exit_code == 0, result.output
    assert "whole store: no filter bucket" in result.stderr


def test_verify_of_missing_store_fails_with_exit_1(cloud: Cloud, tmp_path: Path) -> None:
    cloud.healthcare.stores.clear()
    result = runner.invoke(app, ["verify", "--outputs", str(outputs_file(tmp_path))])
    assert result.exit_code == 1
    assert "cannot read DICOM store" in result.stderr
    assert "verification FAILED" in result.stdout


def test_verify_export_error_still_cleans_up(cloud: Cloud, tmp_path: Path) -> None:
    outputs = outputs_file(tmp_path, verificationTableUri="bq://dicom-src-test.no_such_dataset.v")
    result = runner.invoke(app, ["verify", "--outputs", str(outputs), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    steps = {s["step"]: s for s in report["steps"]}
    assert not steps["export"]["ok"]
    assert "no_such_dataset not found" in steps["export"]["detail"]
    assert steps["cleanup"]["ok"]
    assert "query" not in steps


def test_verify_keep_leaves_the_instance(cloud: Cloud, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["verify", "--outputs", str(outputs_file(tmp_path)), "--keep", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert "cleanup" not in [s["step"] for s in json.loads(result.stdout)["steps"]]


def test_verify_detects_a_mismatched_row(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = cloud.healthcare._instances

    def tampered() -> list[dict[str, object]]:
        rows = original()
        for row in rows:
            row["PatientID"] = "SOMEONE-ELSE"
        return rows

    monkeypatch.setattr(cloud.healthcare, "_instances", tampered)
    result = runner.invoke(app, ["verify", "--outputs", str(outputs_file(tmp_path)), "--json"])
    assert result.exit_code == 1
    steps = {s["step"]: s for s in json.loads(result.stdout)["steps"]}
    assert "PatientID='SOMEONE-ELSE'" in steps["query"]["detail"]
