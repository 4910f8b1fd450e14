"""`dicom-bq export` and `dicom-bq operations` against the fake Healthcare API and Orthanc."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.clients import retry
from dicom_bq.flows.seed import synthetic_instance
from tests.conftest import FILTER_BUCKET, STORE, Cloud
from tests.fakes.healthcare import Fault

runner = CliRunner()
TABLE = "bq://dicom-src-test.dicom_metadata.exported"
TABLE_ID = "dicom-src-test.dicom_metadata.exported"


def seed(cloud: Cloud, count: int = 1) -> list[Any]:
    import urllib.request

    instances = [synthetic_instance() for _ in range(count)]
    for instance in instances:
        request = urllib.request.Request(
            f"{cloud.orthanc_url}/instances", data=instance.data, method="POST"
        )
        urllib.request.urlopen(request, timeout=10).close()
    return instances


def export(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, ["export", "--store", STORE, "--table", TABLE, *args], input=input)


def test_export_creates_missing_table_and_exits_0(cloud: Cloud) -> None:
    seed(cloud, 2)
    result = export("--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {"operation", "done", "success", "failure", "logs_url", "error"} <= summary.keys()
    assert summary["done"] is True
    assert summary["success"] == 2
    assert summary["error"] is None
    assert len(cloud.bigquery.tables[TABLE_ID]) == 2
    assert cloud.healthcare.export_bodies[-1]["bigqueryDestination"] == {
        "tableUri": TABLE,
        "writeDisposition": "WRITE_EMPTY",
    }


def test_human_summary_names_operation_counters_and_logs(cloud: Cloud) -> None:
    seed(cloud)
    result = export()
    assert result.exit_code == 0, result.output
    assert "state:     SUCCEEDED" in result.stdout
    assert "success=1 failure=0 pending=0" in result.stdout
    assert "logs:      https://console.cloud.google.com/logs/" in result.stdout


@pytest.mark.parametrize(
    ("existing_rows", "args", "exit_code", "rows_after"),
    [
        (
            [],
            ["--write-disposition", "WRITE_EMPTY"],
            0,
            1,
        ),  # WRITE_EMPTY on an empty table succeeds
        ([{"SOPInstanceUID": "1"}], ["--write-disposition", "write-empty"], 1, 1),
        ([], ["--no-force"], 1, 0),  # legacy force=false errors on any existing table
        ([{"SOPInstanceUID": "1"}], ["--write-disposition", "WRITE_APPEND"], 0, 2),
        ([{"SOPInstanceUID": "1"}], ["--write-disposition", "WRITE_TRUNCATE", "--yes"], 0, 1),
        ([{"SOPInstanceUID": "1"}], ["--force", "--yes"], 0, 1),
    ],
)
def test_write_dispositions_follow_the_documented_semantics(
    cloud: Cloud,
    existing_rows: list[dict[str, str]],
    args: list[str],
    exit_code: int,
    rows_after: int,
) -> None:
    seed(cloud)
    cloud.bigquery.tables[TABLE_ID] = list(existing_rows)
    result = export(*args, "--json")
    assert result.exit_code == exit_code, result.output
    assert len(cloud.bigquery.tables[TABLE_ID]) == rows_after
    destination = cloud.healthcare.export_bodies[-1]["bigqueryDestination"]
    assert not ("force" in destination and "writeDisposition" in destination)
    if exit_code:
        assert json.loads(result.stdout)["error"]["code"] == 9


def test_truncate_of_table_with_rows_without_terminal_is_refused(cloud: Cloud) -> None:
    cloud.bigquery.tables[TABLE_ID] = [{"SOPInstanceUID": "1"}]
    result = export("--write-disposition", "WRITE_TRUNCATE")
    assert result.exit_code == 2
    assert "holds 1 rows" in result.stderr
    assert "--yes" in result.stderr
    assert cloud.healthcare.export_bodies == []
    assert cloud.bigquery.tables[TABLE_ID] == [{"SOPInstanceUID": "1"}]


def test_truncate_of_empty_or_missing_table_needs_no_confirmation(cloud: Cloud) -> None:
    seed(cloud)
    result = export("--write-disposition", "WRITE_TRUNCATE")
    assert result.exit_code == 0, result.output
    destination = cloud.healthcare.export_bodies[-1]["bigqueryDestination"]
    assert destination["writeDisposition"] == "WRITE_TRUNCATE"


def test_filtered_export_only_exports_listed_instances(cloud: Cloud) -> None:
    from google.cloud import storage

    chosen, _other = seed(cloud, 2)
    client = storage.Client(project="dicom-src-test")
    client.bucket(FILTER_BUCKET).blob("f.txt").upload_from_string(
        f"/studies/{chosen.study_uid}/series/{chosen.series_uid}\r\n"
    )
    result = export("--filter", f"gs://{FILTER_BUCKET}/f.txt", "--json")
    assert result.exit_code == 0, result.output
    assert [r["SOPInstanceUID"] for r in cloud.bigquery.tables[TABLE_ID]] == [chosen.sop_uid]


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_both_api_versions(cloud: Cloud, version: str) -> None:
    seed(cloud)
    result = export("--api-version", version, "--json")
    assert result.exit_code == 0, result.output
    paths = [r.path for r in cloud.healthcare.requests]
    assert any(p.startswith(f"/{version}/") and p.endswith(":export") for p in paths)
    assert all(p.startswith(f"/{version}/") for p in paths)


def test_cross_project_table_uri(cloud: Cloud) -> None:
    seed(cloud)
    result = runner.invoke(
        app,
        ["export", "--store", STORE, "--table", "bq://analytics-prj.dicom_metadata.t", "--json"],
    )
    assert result.exit_code == 0, result.output
    assert "analytics-prj.dicom_metadata.t" in cloud.bigquery.tables


def test_operation_error_exits_1_with_message(cloud: Cloud) -> None:
    result = runner.invoke(
        app, ["export", "--store", STORE, "--table", "bq://dicom-src-test.missing_ds.t"]
    )
    assert result.exit_code == 1
    assert "error:     5 BigQuery dataset dicom-src-test.missing_ds not found" in result.stdout


def test_failures_in_counter_exit_1(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(cloud, 2)
    original = cloud.healthcare._export

    def export_with_failure(*args: Any) -> Any:
        response = original(*args)
        operation = list(cloud.healthcare.operations.values())[-1]
        operation.failures = 1
        return response

    monkeypatch.setattr(cloud.healthcare, "_export", export_with_failure)
    result = export("--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["failure"] == 1
    assert summary["success"] == 1


def test_no_wait_prints_the_operation_and_exits_0(cloud: Cloud) -> None:
    cloud.healthcare.export_seconds = 60  # on the virtual clock
    result = export("--no-wait")
    assert result.exit_code == 0
    assert cloud.clock.sleeps == []  # it did not wait
    name = result.stdout.strip()
    assert name.startswith(
        "projects/dicom-src-test/locations/us-central1/datasets/imaging/operations/"
    )
    described = runner.invoke(app, ["operations", "describe", name, "--json"])
    assert described.exit_code == 3  # still running: exit 3, as after a --timeout
    assert json.loads(described.stdout)["state"] == "RUNNING"
    waited = runner.invoke(app, ["operations", "wait", name, "--json"])
    assert waited.exit_code == 0, waited.output
    assert json.loads(waited.stdout)["done"] is True
    assert cloud.clock.now >= 60


def test_timeout_exits_3_and_prints_the_resume_command(cloud: Cloud) -> None:
    cloud.healthcare.export_seconds = 60
    result = export("--timeout", "1.5")
    assert result.exit_code == 3
    assert "state:     RUNNING" in result.stdout
    assert "resume:    dicom-bq operations wait projects/dicom-src-test/" in result.stdout
    assert cloud.clock.now == pytest.approx(1.5)  # it waited out its timeout, on virtual time


def test_ctrl_c_leaves_the_operation_running(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    cloud.healthcare.export_seconds = 60

    def interrupted(self: Any, seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(retry.SystemClock, "sleep", interrupted)
    result = export()
    assert result.exit_code == 130
    assert "keeps running. Resume with: dicom-bq operations wait projects/" in result.stderr
    assert len(cloud.healthcare.operations) == 1


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_transient_statuses_on_reads_are_retried(cloud: Cloud, status: int) -> None:
    # Reads are safe to repeat; the export POST is not (tests/test_export_once.py).
    seed(cloud)
    cloud.healthcare.faults.append(Fault("GET", "/operations/", status, times=2))
    result = export("--json")
    assert result.exit_code == 0, result.output
    assert cloud.healthcare.faults[0].times == 0  # both faults fired
    assert json.loads(result.stdout)["success"] == 1


def test_connection_reset_is_retried(cloud: Cloud) -> None:
    seed(cloud)
    cloud.healthcare.faults.append(Fault("GET", "/operations/", "reset", times=2))
    result = export("--json")
    assert result.exit_code == 0, result.output
    assert cloud.healthcare.faults[0].times == 0  # both resets happened
    polls = [r for r in cloud.healthcare.requests if "/operations/" in r.path]
    assert len(polls) >= 3


def test_read_timeout_is_retried(cloud: Cloud) -> None:
    from dicom_bq.clients.endpoints import Connection
    from dicom_bq.clients.healthcare import HealthcareApi

    # The one real wait left: a socket read timeout is the kernel's, no clock of ours can skip it.
    # 0.5 s stays short yet leaves the retried, prompt answer room on a loaded 2-core machine; the
    # fault's 1.5 s sleep runs in the fake's own thread and does not hold the test.
    cloud.healthcare.faults.append(Fault("GET", "dicomStores/dicom", "slow", seconds=1.5))
    api = HealthcareApi(Connection(environ=cloud.env), request_timeout=0.5)
    assert api.get_store(STORE)["name"] == STORE
    assert sum(1 for r in cloud.healthcare.requests if r.path.endswith("/dicomStores/dicom")) == 2
    assert len(cloud.clock.sleeps) == 1  # our retry's backoff, not a retry inside httplib2


@pytest.mark.parametrize(("status", "fragment"), [(400, "400"), (404, "404")])
def test_client_errors_are_not_retried(cloud: Cloud, status: int, fragment: str) -> None:
    cloud.healthcare.faults.append(Fault("POST", ":export", status, times=5))
    result = export()
    assert result.exit_code == 1
    assert fragment in result.stderr
    assert cloud.healthcare.faults[0].times == 4


def test_retries_are_bounded(cloud: Cloud) -> None:
    cloud.healthcare.faults.append(Fault("GET", "/operations/", 503, times=50))
    result = export()
    assert result.exit_code == 1
    assert "gave up after retries" in result.stderr
    assert "resume with `dicom-bq operations wait projects/" in result.stderr
    assert cloud.healthcare.faults[0].times == 50 - retry.RetryPolicy().attempts
    assert len(cloud.healthcare.operations) == 1
    assert len(cloud.clock.sleeps) == retry.RetryPolicy().attempts - 1


def test_permission_denied_for_the_agent_is_explained_after_the_window(cloud: Cloud) -> None:
    cloud.healthcare.agent_denied_requests = 100
    result = export("--permission-window", "1s")
    assert result.exit_code == 1
    message = result.stderr
    assert "PERMISSION_DENIED" in message
    assert "service-111122223333@gcp-sa-healthcare.iam.gserviceaccount.com" in message
    assert "roles/bigquery.dataEditor on BigQuery dataset dicom-src-test:dicom_metadata" in message
    assert "roles/bigquery.jobUser on project dicom-src-test" in message
    assert "gcloud projects get-iam-policy dicom-src-test" in message
    assert "Traceback" not in result.output


def test_operation_denied_for_the_agent_is_retried_by_export_too(cloud: Cloud) -> None:
    # The realistic IAM-propagation failure: the request passes, the operation fails with 7.
    seed(cloud)
    cloud.healthcare.agent_denied_until = 5.0
    result = export("--json")
    assert result.exit_code == 0, result.output
    assert "failed with PERMISSION_DENIED; retrying in" in result.stderr
    ops = list(cloud.healthcare.operations.values())
    assert [op.error["code"] for op in ops if op.error] == [7]
    assert json.loads(result.stdout)["success"] == 1


def test_the_callers_own_denial_is_explained_at_once(cloud: Cloud) -> None:
    cloud.healthcare.caller_denied_exports = 100
    result = export()
    assert result.exit_code == 1
    assert "lack healthcare.dicomStores.export on projects/dicom-src-test/" in result.stderr
    assert cloud.healthcare.caller_denied_exports == 99


def test_unknown_operation_is_explained(cloud: Cloud) -> None:
    name = "projects/dicom-src-test/locations/us-central1/datasets/imaging/operations/999"
    for command in ("describe", "wait"):
        result = runner.invoke(app, ["operations", command, name])
        assert result.exit_code == 1
        assert f"cannot read operation {name}: 404 NOT_FOUND" in result.stderr
        assert "Traceback" not in result.output


def test_truncate_confirmation_counts_rows_still_in_the_streaming_buffer(cloud: Cloud) -> None:
    # A stream table's fresh rows are in streamingBuffer.estimatedRows, not numRows.
    cloud.bigquery.tables[TABLE_ID] = []
    cloud.bigquery.streaming_rows[TABLE_ID] = 3
    result = export("--write-disposition", "WRITE_TRUNCATE")
    assert result.exit_code == 2
    assert "holds 3 rows and WRITE_TRUNCATE would erase them" in result.stderr
    assert cloud.healthcare.export_bodies == []


def test_the_stack_names_the_agent_in_the_advice(cloud: Cloud) -> None:
    # The operation's error does not name the agent here; the stack's settings do.
    cloud.healthcare.agent_denied_until = 10**9
    cloud.healthcare.agent_email = "someone"
    seed(cloud)
    result = export("--stack", "dev", "--permission-window", "1s")
    assert result.exit_code == 1
    assert "service-123456789012@gcp-sa-healthcare.iam.gserviceaccount.com" in result.stderr
    assert "NUMBER" not in result.stderr
