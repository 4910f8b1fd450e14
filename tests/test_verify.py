"""`dicom-bq verify` end to end: fake Healthcare and BigQuery, real Orthanc and storage emulator."""

from __future__ import annotations

import json
from pathlib import Path

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
