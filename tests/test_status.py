"""`dicom-bq status` against the loopback fakes (Healthcare, BigQuery, Cloud Scheduler) and a
real Orthanc."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from tests.conftest import STORE, Cloud
from tests.fakes.healthcare import FakeOperation, Fault
from tests.fakes.scheduler import FakeCloudScheduler, job_document
from tests.test_export_cli import seed

runner = CliRunner()
DATASET = STORE.rsplit("/dicomStores/", 1)[0]
STREAM = "dicom-src-test.dicom_metadata.instances"
SNAPSHOT = "dicom-src-test.dicom_metadata.nightly"
STREAMING = {"streamConfigs": [{"bigqueryDestination": {"tableUri": f"bq://{STREAM}"}}]}
DAILY = {"schedule": "0 2 * * *", "timeZone": "Europe/Paris"}
HOUR_MS = 3600 * 1000
INDENT = " " * 13  # under the value column of a store's lines


def outputs_file(tmp_path: Path, **extra: Any) -> Path:
    outputs = {
        "dicomStoreName": STORE,
        "verificationTableUri": "bq://dicom-src-test.dicom_metadata.dicom_bq_verification",
        **extra,
    }
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs), encoding="utf-8")
    return path


def now_ms() -> int:
    return int(time.time() * 1000)


def export_operation(number: int, created: str, **state: Any) -> FakeOperation:
    """An export the dataset holds; done at once unless `done_at` says otherwise."""
    fields: dict[str, Any] = {"done_at": 0.0, "ended": created, **state}
    return FakeOperation(
        name=f"{DATASET}/operations/{number}",
        version="v1",
        table=SNAPSHOT,
        disposition="WRITE_TRUNCATE",
        rows=[{}] * fields.pop("rows", 0),
        created=created,
        **fields,
    )


def add(cloud: Cloud, *operations: FakeOperation) -> None:
    for operation in operations:
        cloud.healthcare.operations[operation.name] = operation


def healthy_path(cloud: Cloud, instances: int = 2) -> None:
    """A store with `instances`, a stream table that has them all, a good export, a fresh
    snapshot."""
    seed(cloud, instances)
    cloud.healthcare.store_configs[STORE] = STREAMING
    cloud.bigquery.tables[STREAM] = [{}] * (instances - 1)
    cloud.bigquery.streaming_rows[STREAM] = 1
    cloud.bigquery.tables[SNAPSHOT] = [{}] * instances
    cloud.bigquery.modified_ms[SNAPSHOT] = now_ms()
    add(cloud, export_operation(1001, "2026-11-30T01:00:00Z", rows=instances))


def status(tmp_path: Path, *args: str, **outputs: Any) -> Any:
    extra = {"snapshotTable": f"bq://{SNAPSHOT}", "snapshotSchedule": DAILY, **outputs}
    extra = {k: v for k, v in extra.items() if v is not None}
    return runner.invoke(app, ["status", "--outputs", str(outputs_file(tmp_path, **extra)), *args])


def fits_80_columns(lines: list[str]) -> None:
    # A longer line is one name or URL, which must stay copyable.
    assert all(len(line) <= 80 or len(line.split()) == 1 for line in lines), lines


def findings(result: Any) -> list[dict[str, str]]:
    found: list[dict[str, str]] = json.loads(result.stdout)["findings"]
    return found


def test_a_healthy_path_exits_0_and_fits_80_columns(cloud: Cloud, tmp_path: Path) -> None:
    healthy_path(cloud)
    result = status(tmp_path)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "healthy: nothing disagrees" in lines
    assert "  instances  2" in lines
    assert f"  stream     bq://{STREAM}" in lines
    assert any(line.startswith("             2 rows (1 buffered), modified ") for line in lines)
    assert any('schedule "0 2 * * *" (Europe/Paris), last due' in line for line in lines)
    fits_80_columns(lines)


def test_json_shape(cloud: Cloud, tmp_path: Path) -> None:
    healthy_path(cloud)
    result = status(tmp_path, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {"ok", "checked_at", "stores", "findings"}
    assert report["ok"] is True
    assert report["findings"] == []
    (store,) = report["stores"]
    assert store["name"] == STORE
    assert store["instance_count"] == 2
    (run,) = store["exports"]["recent"]
    assert store["exports"]["dataset"] == DATASET
    # Operations name their dataset, never their store: no export is claimed as this store's.
    assert store["exports"]["store"] is None
    assert store["exports"]["attribution"] == "unknown"
    assert store["exports"]["dataset_stores"] == [STORE]
    assert "never their store" in store["exports"]["why"]
    assert run == {
        "operation": f"{DATASET}/operations/1001",
        "store": None,
        "state": "done",
        "success": 2,
        "failure": 0,
        "create_time": "2026-11-30T01:00:00+00:00",
        "end_time": "2026-11-30T01:00:00+00:00",
        "logs_url": "https://console.cloud.google.com/logs/query?operation=1001",
        "error": None,
    }
    (stream,) = store["stream_tables"]
    assert stream["uri"] == f"bq://{STREAM}"
    assert (stream["rows"], stream["committed_rows"], stream["buffered_rows"]) == (2, 1, 1)
    assert stream["last_modified"] is not None
    snapshot = store["snapshot"]
    assert snapshot["table"]["uri"] == f"bq://{SNAPSHOT}"
    assert snapshot["table"]["rows"] == 2
    assert (snapshot["schedule"], snapshot["time_zone"]) == ("0 2 * * *", "Europe/Paris")
    assert snapshot["last_due"].endswith(("T00:00:00+00:00", "T01:00:00+00:00"))  # CEST / CET


def test_a_failed_last_export_needs_attention(cloud: Cloud, tmp_path: Path) -> None:
    healthy_path(cloud)
    add(
        cloud,
        export_operation(
            1002,
            "2026-11-30T02:00:00Z",
            error={"code": 5, "message": "BigQuery dataset dicom_metadata not found"},
        ),
        # Still running, newer: the last *finished* export is the one judged.
        export_operation(1003, "2026-11-30T03:00:00Z", done_at=float("inf")),
    )
    result = status(tmp_path, "--json")
    assert result.exit_code == 1, result.output
    (finding,) = findings(result)
    assert finding["kind"] == "export-failed"
    assert finding["subject"] == f"{DATASET}/operations/1002"
    assert "5 BigQuery dataset dicom_metadata not found" in finding["detail"]
    assert "https://console.cloud.google.com/logs/query?operation=1002" in finding["fix"]
    recent = json.loads(result.stdout)["stores"][0]["exports"]["recent"]
    assert [r["state"] for r in recent] == ["running", "failed", "done"]


def test_an_export_that_left_instances_out_needs_attention(cloud: Cloud, tmp_path: Path) -> None:
    healthy_path(cloud)
    add(cloud, export_operation(1002, "2026-11-30T02:00:00Z", rows=2, failures=1))
    result = status(tmp_path, "--json")
    assert result.exit_code == 1, result.output
    (finding,) = findings(result)
    assert finding["kind"] == "export-incomplete"
    assert "left out 1 instance(s) (1 exported)" in finding["detail"]


def test_a_later_success_does_not_clear_a_failure_whose_store_is_unknown(
    cloud: Cloud, tmp_path: Path
) -> None:
    """Operations do not name their store (healthcare v1 discovery document, schemas.Operation
    and OperationMetadata), so an export that succeeded after a failed one may be another
    store's, or verify's: the failure stays a finding."""
    healthy_path(cloud)
    add(cloud, export_operation(900, "2026-11-29T01:00:00Z", error={"code": 13, "message": "x"}))
    result = status(tmp_path, "--json")
    assert result.exit_code == 1, result.output
    (finding,) = findings(result)
    assert (finding["kind"], finding["subject"]) == ("export-failed", f"{DATASET}/operations/900")
    assert "its store is unknown" in finding["detail"]
    assert "may be another store's or verify's" in finding["detail"]
    recent = json.loads(result.stdout)["stores"][0]["exports"]["recent"]
    assert [r["state"] for r in recent] == ["done", "failed"]


def test_a_verify_after_a_failed_export_does_not_make_the_store_healthy(
    cloud: Cloud, tmp_path: Path
) -> None:
    """The issue's case: the last real export failed, then `verify` ran (its temporary store
    exports from the same dataset, and succeeds); status must still say the failure."""
    healthy_path(cloud)
    failed = f"{DATASET}/operations/1002"
    add(cloud, export_operation(1002, "2026-11-30T02:00:00Z", error={"code": 7, "message": "x"}))
    verified = runner.invoke(
        app,
        ["verify", "--store", STORE, "--table", "bq://dicom-src-test.dicom_metadata.v", "--json"],
    )
    assert verified.exit_code == 0, verified.output
    verify_export = json.loads(verified.stdout)["operation"]["operation"]
    assert verify_export.startswith(f"{DATASET}/operations/")
    result = status(tmp_path, "--json")
    assert result.exit_code == 1, result.output
    assert [(f["kind"], f["subject"]) for f in findings(result)] == [("export-failed", failed)]
    exports = json.loads(result.stdout)["stores"][0]["exports"]
    newest = exports["recent"][0]
    assert (newest["operation"], newest["state"], newest["store"]) == (verify_export, "done", None)
    text = status(tmp_path)
    assert "healthy" not in text.stdout
    assert "  exports    of dataset imaging, store unknown" in text.stdout.splitlines()


def test_two_stores_of_one_dataset_leave_each_export_unattributed(
    cloud: Cloud, tmp_path: Path
) -> None:
    healthy_path(cloud)
    cloud.healthcare.stores.add(OTHER)
    result = status(tmp_path, dicomStores=TWO_STORES)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    fits_80_columns(lines)
    said = " ".join(result.stdout.split())
    assert "holds 2 DICOM stores (dicom, research): each export may be any one's" in said
    assert lines.count("  exports    of dataset imaging, store unknown") == 2
    assert "this store's" not in said
    report = json.loads(status(tmp_path, "--json", dicomStores=TWO_STORES).stdout)
    for store in report["stores"]:
        assert store["exports"]["dataset_stores"] == [STORE, OTHER]
        assert store["exports"]["store"] is None
        assert all(run["store"] is None for run in store["exports"]["recent"])


def test_stores_that_cannot_be_listed_are_said_unknown_not_a_finding(
    cloud: Cloud, tmp_path: Path
) -> None:
    healthy_path(cloud)
    cloud.healthcare.faults.append(Fault("GET", "/dicomStores$", 403))
    result = status(tmp_path, "--json")
    assert result.exit_code == 0, result.output
    exports = json.loads(result.stdout)["stores"][0]["exports"]
    assert exports["dataset_stores"] is None
    assert "could not be listed (dicomStores.list: 403" in exports["why"]
    assert "healthcare.dicomStores.list" in exports["why"]


def test_a_stale_snapshot_needs_attention(cloud: Cloud, tmp_path: Path) -> None:
    healthy_path(cloud)
    cloud.bigquery.modified_ms[SNAPSHOT] = now_ms() - 3 * 24 * HOUR_MS
    result = status(tmp_path)
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[lines.index("  snapshot-stale") + 1] == f"    bq://{SNAPSHOT}"
    fits_80_columns(lines)
    assert 'before its schedule "0 2 * * *" (Europe/Paris) fired at' in " ".join(
        result.stdout.split()
    )


def test_the_snapshot_export_has_its_grace_to_finish(cloud: Cloud, tmp_path: Path) -> None:
    healthy_path(cloud)
    every_minute = {"schedule": "* * * * *", "timeZone": "UTC"}
    # Modified an hour ago: within a 2-hour grace the latest due run is older than that.
    cloud.bigquery.modified_ms[SNAPSHOT] = now_ms() - HOUR_MS
    in_grace = status(tmp_path, "--json", snapshotSchedule=every_minute)
    assert in_grace.exit_code == 0, in_grace.output
    assert findings(in_grace) == []
    late = status(tmp_path, "--snapshot-grace", "30m", "--json", snapshotSchedule=every_minute)
    assert late.exit_code == 1
    assert [f["kind"] for f in findings(late)] == ["snapshot-stale"]


def test_a_missing_snapshot_table_after_its_run_needs_attention(
    cloud: Cloud, tmp_path: Path
) -> None:
    healthy_path(cloud)
    del cloud.bigquery.tables[SNAPSHOT]
    result = status(tmp_path, "--json")
    assert result.exit_code == 1
    assert [f["kind"] for f in findings(result)] == ["snapshot-missing"]
    assert json.loads(result.stdout)["stores"][0]["snapshot"]["table"]["exists"] is False


def test_without_snapshot_outputs_there_is_no_snapshot(cloud: Cloud, tmp_path: Path) -> None:
    healthy_path(cloud)
    result = status(tmp_path, "--json", snapshotTable=None, snapshotSchedule=None)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stores"][0]["snapshot"] is None


def test_a_stream_table_behind_the_store_needs_attention(cloud: Cloud, tmp_path: Path) -> None:
    healthy_path(cloud, instances=3)
    cloud.bigquery.tables[STREAM] = [{}]  # 1 committed + 1 buffered, for 3 instances
    result = status(tmp_path, "--json")
    assert result.exit_code == 1, result.output
    (finding,) = findings(result)
    assert finding["kind"] == "stream-behind"
    assert finding["subject"] == f"bq://{STREAM}"
    assert finding["detail"].startswith("2 row(s) for 3 instance(s) in the store")
    assert "lower-bound estimate" in finding["detail"]


def test_a_stream_table_with_more_rows_than_instances_is_healthy(
    cloud: Cloud, tmp_path: Path
) -> None:
    # Deletions are not applied to a stream table: more rows than instances is normal.
    healthy_path(cloud)
    cloud.bigquery.tables[STREAM] = [{}] * 5
    result = status(tmp_path, "--json")
    assert result.exit_code == 0, result.output
    assert findings(result) == []


def test_a_table_you_cannot_read_is_a_finding_not_a_crash(cloud: Cloud, tmp_path: Path) -> None:
    healthy_path(cloud)
    cloud.bigquery.denied_tables.add(STREAM)
    result = status(tmp_path, "--json")
    assert result.exit_code == 1, result.output
    (finding,) = findings(result)
    assert finding["kind"] == "unreadable"
    assert finding["subject"] == f"bq://{STREAM}"
    assert "Permission bigquery.tables.get denied" in finding["detail"]
    assert "bigquery.tables.get" in finding["fix"]
    (stream,) = json.loads(result.stdout)["stores"][0]["stream_tables"]
    assert stream["readable"] is False
    assert stream["rows"] is None


def test_operations_you_cannot_list_are_a_finding(cloud: Cloud, tmp_path: Path) -> None:
    healthy_path(cloud)
    cloud.healthcare.faults.append(Fault("GET", "/operations", 403))
    result = status(tmp_path, "--json")
    assert result.exit_code == 1, result.output
    (finding,) = findings(result)
    assert (finding["kind"], finding["subject"]) == ("unreadable", DATASET)
    assert "healthcare.operations.list" in finding["fix"]
    assert json.loads(result.stdout)["stores"][0]["exports"]["readable"] is False


def test_a_missing_store_is_one_finding(cloud: Cloud, tmp_path: Path) -> None:
    cloud.healthcare.stores.clear()
    result = status(tmp_path, snapshotTable=None, snapshotSchedule=None)
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[lines.index("  unreadable") + 1] == f"    {STORE}"
    assert "  instances  unknown" in lines
    assert "404" in result.stdout
    assert lines.count("  unreadable") == 1
    fits_80_columns(lines)
    # A store that is not there has no configuration to read either.
    assert not [r for r in cloud.healthcare.requests if r.path.endswith("/dicomStores/dicom")]


OTHER = f"{DATASET}/dicomStores/research"
TWO_STORES = [{"id": "dicom", "name": STORE}, {"id": "research", "name": OTHER}]


def test_stores_of_one_dataset_share_its_exports_and_their_findings(
    cloud: Cloud, tmp_path: Path
) -> None:
    healthy_path(cloud)
    cloud.healthcare.stores.add(OTHER)
    add(cloud, export_operation(1002, "2026-11-30T02:00:00Z", error={"code": 13, "message": "x"}))
    result = status(tmp_path, "--json", dicomStores=TWO_STORES)
    assert result.exit_code == 1, result.output
    first, second = json.loads(result.stdout)["stores"]
    assert (first["name"], second["name"]) == (STORE, OTHER)
    assert first["exports"] == second["exports"]
    assert [f["kind"] for f in findings(result)] == ["export-failed"]
    lists = [r for r in cloud.healthcare.requests if r.path.endswith("/operations")]
    assert len(lists) == 1


def test_store_id_picks_one_store_of_the_stack(cloud: Cloud, tmp_path: Path) -> None:
    healthy_path(cloud)
    cloud.healthcare.stores.add(OTHER)
    result = status(tmp_path, "--json", "--store-id", "research", dicomStores=TWO_STORES)
    assert result.exit_code == 0, result.output
    assert [s["name"] for s in json.loads(result.stdout)["stores"]] == [OTHER]


NIGHTLY_OF = {"dicom": f"{SNAPSHOT}_dicom", "research": f"{SNAPSHOT}_research"}
TWO_SNAPSHOTS = [
    {**store, "snapshotTable": f"bq://{NIGHTLY_OF[store['id']]}"} for store in TWO_STORES
]


def two_stores_with_snapshots(cloud: Cloud, *, stale: str | None) -> None:
    """Both stores healthy, each with its own snapshot table; `stale`'s last ran days ago."""
    healthy_path(cloud)
    cloud.healthcare.stores.add(OTHER)
    for store_id, table in NIGHTLY_OF.items():
        cloud.bigquery.tables[table] = [{}] * 2
        cloud.bigquery.modified_ms[table] = now_ms() - (
            3 * 24 * HOUR_MS if store_id == stale else 0
        )


def test_each_store_is_judged_by_its_own_snapshot_table(cloud: Cloud, tmp_path: Path) -> None:
    two_stores_with_snapshots(cloud, stale="research")
    # The top-level snapshotTable is the first store's, as the program exports it.
    first = TWO_SNAPSHOTS[0]["snapshotTable"]
    result = status(tmp_path, "--json", dicomStores=TWO_SNAPSHOTS, snapshotTable=first)
    assert result.exit_code == 1, result.output
    (finding,) = findings(result)
    assert (finding["kind"], finding["subject"]) == (
        "snapshot-stale",
        f"bq://{NIGHTLY_OF['research']}",
    )
    dicom, research = json.loads(result.stdout)["stores"]
    assert dicom["snapshot"]["table"]["uri"] == f"bq://{NIGHTLY_OF['dicom']}"
    assert research["snapshot"]["table"]["uri"] == f"bq://{NIGHTLY_OF['research']}"
    assert dicom["snapshot"]["last_due"] == research["snapshot"]["last_due"] is not None


def test_a_stale_first_store_is_not_hidden_by_a_fresh_second(cloud: Cloud, tmp_path: Path) -> None:
    two_stores_with_snapshots(cloud, stale="dicom")
    result = status(tmp_path, "--json", dicomStores=TWO_SNAPSHOTS, snapshotTable=None)
    assert [(f["kind"], f["subject"]) for f in findings(result)] == [
        ("snapshot-stale", f"bq://{NIGHTLY_OF['dicom']}")
    ]


def test_each_store_shows_its_snapshot_under_it(cloud: Cloud, tmp_path: Path) -> None:
    two_stores_with_snapshots(cloud, stale=None)
    result = status(tmp_path, dicomStores=TWO_SNAPSHOTS)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    second_store = lines.index(f"  {OTHER}")
    assert lines.index(f"  snapshot   bq://{NIGHTLY_OF['dicom']}") < second_store
    assert lines.index(f"  snapshot   bq://{NIGHTLY_OF['research']}") > second_store
    assert sum('schedule "0 2 * * *" (Europe/Paris), last due' in line for line in lines) == 2
    assert "snapshot" not in lines  # no report-level section
    fits_80_columns(lines)


def test_outputs_from_before_per_store_tables_judge_the_first_store_only(
    cloud: Cloud, tmp_path: Path
) -> None:
    # A stack deployed before each dicomStores entry had its snapshotTable: the top-level one is
    # the first store's; the others' are not known, which is said, not judged.
    two_stores_with_snapshots(cloud, stale="research")
    first = TWO_SNAPSHOTS[0]["snapshotTable"]
    result = status(tmp_path, dicomStores=TWO_STORES, snapshotTable=first)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines.index(f"  snapshot   {first}") < lines.index(f"  {OTHER}")
    assert lines[lines.index(f"  {OTHER}") :].count("  snapshot   unknown") == 1
    as_json = status(tmp_path, "--json", dicomStores=TWO_STORES, snapshotTable=first)
    dicom, research = json.loads(as_json.stdout)["stores"]
    assert dicom["snapshot"]["table"]["uri"] == first
    assert research["snapshot"] is None


def sent(cloud: Cloud) -> int:
    return len(cloud.healthcare.requests) + len(cloud.bigquery.requests)


JOB = "projects/dicom-src-test/locations/us-central1/jobs/dicom-bq-snapshot-0906db8b-dicom"


@pytest.fixture
def scheduler(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCloudScheduler]:
    fake = FakeCloudScheduler().start()
    monkeypatch.setenv("CLOUDSCHEDULER_EMULATOR_HOST", fake.url)
    try:
        yield fake
    finally:
        fake.stop()
    assert fake.problems == []


def rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def ago(**delta: float) -> str:
    return rfc3339(datetime.datetime.now(datetime.UTC) - datetime.timedelta(**delta))


def with_job(tmp_path: Path, *args: str, **outputs: Any) -> Any:
    """status on outputs whose one store names its snapshot job, as the program exports them."""
    entry = {"id": "dicom", "name": STORE, "snapshotTable": f"bq://{SNAPSHOT}", "snapshotJob": JOB}
    return status(tmp_path, *args, dicomStores=[entry], **outputs)


def scheduled(scheduler: FakeCloudScheduler, **fields: Any) -> None:
    """The store's job, created a month ago, its last attempt last night unless `fields` say."""
    job = {"user_update_time": ago(days=30), "last_attempt_time": ago(hours=1), **fields}
    scheduler.jobs[JOB] = job_document(JOB, schedule_time=ago(hours=-23), **job)


def test_a_healthy_job_is_shown_under_its_snapshot(
    cloud: Cloud, scheduler: FakeCloudScheduler, tmp_path: Path
) -> None:
    healthy_path(cloud)
    scheduled(scheduler)
    result = with_job(tmp_path)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    start = lines.index(f"{INDENT}job dicom-bq-snapshot-0906db8b-dicom ENABLED, last attempt")
    assert lines[start + 1].startswith(INDENT)
    assert " ok, next " in lines[start + 1]
    fits_80_columns(lines)
    assert [method for method, _ in scheduler.requests] == [
        "cloudscheduler.projects.locations.jobs.get"
    ]


def test_json_carries_the_job_under_the_snapshot(
    cloud: Cloud, scheduler: FakeCloudScheduler, tmp_path: Path
) -> None:
    healthy_path(cloud)
    created = "2026-10-01T08:00:00Z"
    scheduled(scheduler, user_update_time=created, last_attempt_time="2026-11-30T01:00:00Z")
    result = with_job(tmp_path, "--json")
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)["stores"][0]["snapshot"]["job"]
    assert job == {
        "name": JOB,
        "readable": True,
        "state": "ENABLED",
        "last_attempt_time": "2026-11-30T01:00:00+00:00",
        "last_attempt_status": {"code": 0, "message": ""},
        "schedule_time": job["schedule_time"],
        "user_update_time": "2026-10-01T08:00:00+00:00",
    }
    assert job["schedule_time"] is not None


def test_a_paused_job_needs_attention(
    cloud: Cloud, scheduler: FakeCloudScheduler, tmp_path: Path
) -> None:
    healthy_path(cloud)
    scheduled(scheduler, state="PAUSED")
    result = with_job(tmp_path, "--json")
    assert result.exit_code == 1, result.output
    (finding,) = findings(result)
    assert (finding["kind"], finding["subject"]) == ("snapshot-job-paused", JOB)
    assert "is paused" in finding["detail"]
    assert finding["fix"].endswith(
        "gcloud scheduler jobs resume dicom-bq-snapshot-0906db8b-dicom --location us-central1 "
        "--project dicom-src-test"
    )


def test_a_last_attempt_refused_with_403_needs_attention(
    cloud: Cloud, scheduler: FakeCloudScheduler, tmp_path: Path
) -> None:
    # Job.status is "the response from the target for the last attempted execution", a
    # google.rpc.Status (cloudscheduler v1 discovery); a 403 is PERMISSION_DENIED (code.proto's
    # HTTP mapping). The message's wording is Healthcare's, an example only.
    healthy_path(cloud)
    denied = "Permission 'healthcare.dicomStores.export' denied on resource " + "x" * 300
    scheduled(scheduler, status={"code": 7, "message": denied})
    result = with_job(tmp_path, "--json")
    assert result.exit_code == 1, result.output
    (finding,) = findings(result)
    assert (finding["kind"], finding["subject"]) == ("snapshot-job-failed", JOB)
    assert (
        "failed: 7 PERMISSION_DENIED: \"Permission 'healthcare.dicomStores.export'"
        in (finding["detail"])
    )
    assert f"... ({len(denied)} characters)" in finding["detail"]  # an excerpt, not all of it
    assert "`pulumi up` restores the snapshot account's grant" in finding["fix"]
    job = json.loads(result.stdout)["stores"][0]["snapshot"]["job"]
    assert job["last_attempt_status"] == {"code": 7, "message": denied}


def test_a_last_attempt_that_failed_otherwise_waits_for_the_next_fire(
    cloud: Cloud, scheduler: FakeCloudScheduler, tmp_path: Path
) -> None:
    healthy_path(cloud)
    scheduled(scheduler, status={"code": 14, "message": "Service Unavailable"})
    result = with_job(tmp_path)
    assert result.exit_code == 1, result.output
    text = " ".join(result.stdout.split())
    assert "snapshot-job-failed" in text
    assert "failed: 14 UNAVAILABLE: 'Service Unavailable'; no export started" in text
    assert "fix: the next scheduled fire tries again" in text
    fits_80_columns(result.stdout.splitlines())


def test_a_job_created_after_the_last_fire_has_no_missed_run(
    cloud: Cloud, scheduler: FakeCloudScheduler, tmp_path: Path
) -> None:
    # Deploy day: `pulumi up` after the schedule's last fire; the job has not run yet.
    healthy_path(cloud)
    del cloud.bigquery.tables[SNAPSHOT]
    scheduler.jobs[JOB] = job_document(JOB, user_update_time=ago(minutes=1))
    result = with_job(tmp_path, "--json")
    assert result.exit_code == 0, result.output
    assert findings(result) == []
    snapshot = json.loads(result.stdout)["stores"][0]["snapshot"]
    assert snapshot["last_due"] is None
    assert snapshot["job"]["last_attempt_time"] is None
    text = with_job(tmp_path)
    assert "no attempt yet" in text.stdout
    assert "last due never yet" in " ".join(text.stdout.split())
    # The same job created days ago did miss its run.
    scheduler.jobs[JOB] = job_document(JOB, user_update_time=ago(days=3))
    missed = with_job(tmp_path, "--json")
    assert [f["kind"] for f in findings(missed)] == ["snapshot-missing"]


@pytest.mark.parametrize(("denied", "said"), [(True, "403 PERMISSION_DENIED"), (False, "404")])
def test_a_job_you_cannot_read_is_a_finding(
    cloud: Cloud, scheduler: FakeCloudScheduler, tmp_path: Path, denied: bool, said: str
) -> None:
    healthy_path(cloud)
    if denied:
        scheduled(scheduler)
        scheduler.denied.add(JOB)
    result = with_job(tmp_path, "--json")
    assert result.exit_code == 1, result.output
    (finding,) = findings(result)
    assert (finding["kind"], finding["subject"]) == ("unreadable", JOB)
    assert said in finding["detail"]
    assert "cloudscheduler.jobs.get on it (roles/cloudscheduler.viewer)" in finding["fix"]
    job = json.loads(result.stdout)["stores"][0]["snapshot"]["job"]
    assert (job["readable"], job["state"], job["last_attempt_status"]) == (False, None, None)
    text = with_job(tmp_path)
    assert f"{INDENT}job dicom-bq-snapshot-0906db8b-dicom unreadable (see findings)" in (
        text.stdout.splitlines()
    )


def test_an_unreadable_job_leaves_the_snapshot_judged_by_its_schedule(
    cloud: Cloud, scheduler: FakeCloudScheduler, tmp_path: Path
) -> None:
    healthy_path(cloud)
    cloud.bigquery.modified_ms[SNAPSHOT] = now_ms() - 3 * 24 * HOUR_MS
    result = with_job(tmp_path, "--json")
    assert [f["kind"] for f in findings(result)] == ["unreadable", "snapshot-stale"]
    assert (
        "gcloud scheduler jobs describe dicom-bq-snapshot-0906db8b-dicom"
        in (findings(result)[1]["fix"])
    )


def test_the_program_names_each_stores_own_job_and_status_reads_it() -> None:
    """The dicomStores entries' snapshotJob, written by the program from the component's jobs,
    is each store's job (in the stores' order), in the form jobs.get takes."""
    from dicom_bq.flows.status import status_target
    from tests.inventory import plan_example

    plan = plan_example("operations")
    jobs = {
        r.inputs["name"]: r.inputs
        for r in plan.custom_resources()
        if r.type == "gcp:cloudscheduler/job:Job"
    }
    entries = plan.outputs["dicomStores"]
    assert len(entries) == len(jobs) == 2
    for entry in entries:
        project, region, job = entry["snapshotJob"].split("/")[1::2]
        assert job.endswith(f"-{entry['id']}")
        assert (jobs[job]["project"], jobs[job]["region"]) == (project, region)
        assert f"/dicomStores/{entry['id']}" in jobs[job]["httpTarget"]["uri"]
    target = status_target(plan.outputs)
    assert [store.snapshot_job.name for store in target.stores if store.snapshot_job] == [
        entry["snapshotJob"] for entry in entries
    ]


@pytest.mark.parametrize(
    ("outputs", "said"),
    [
        ({"snapshotSchedule": {"schedule": "0 25 * * *"}}, "hour field '25'"),
        ({"snapshotSchedule": {"schedule": "every 24 hours"}}, "has 3 fields"),
        ({"snapshotSchedule": {"schedule": "0 2 * * *", "timeZone": "Nowhere"}}, "tz database"),
        ({"snapshotSchedule": "0 2 * * *"}, "is not an object of"),
        ({"snapshotTable": "nightly"}, "the stack output snapshotTable 'nightly' is not valid"),
        ({"snapshotTable": None}, "snapshotSchedule has no snapshotTable"),
        ({"dicomStoreName": "dicom"}, "the stack output dicomStoreName 'dicom' is not valid"),
        ({"dicomStores": [{"id": "x", "name": "x"}]}, "the stack output dicomStores 'x' is not"),
        ({"dicomStores": "x"}, "dicomStores is not a list of stores"),
        (
            {"dicomStores": [{**TWO_STORES[0], "snapshotTable": 5}]},
            "dicomStores gives store 'dicom' a snapshotTable that is int, not text",
        ),
        (
            {"dicomStores": [{**TWO_STORES[0], "snapshotTable": "nightly"}]},
            "the stack output dicomStores snapshotTable of 'dicom' 'nightly' is not valid",
        ),
        (
            {"dicomStores": [{**TWO_STORES[0], "snapshotTable": None}], "snapshotTable": None},
            "snapshotSchedule has no snapshotTable",
        ),
        (
            {"dicomStores": [{**TWO_STORES[0], "snapshotJob": 5}]},
            "dicomStores gives store 'dicom' a snapshotJob that is int, not text",
        ),
        (
            {"dicomStores": [{**TWO_STORES[0], "snapshotJob": "dicom-bq-snapshot-dicom"}]},
            "the stack output dicomStores snapshotJob of 'dicom' 'dicom-bq-snapshot-dicom' is "
            "not a Cloud Scheduler job name",
        ),
        (
            {"dicomStores": [{**TWO_STORES[0], "snapshotJob": JOB + "?alt=media"}]},
            "is not a Cloud Scheduler job name",
        ),
    ],
)
def test_bad_outputs_exit_2_before_any_request(
    cloud: Cloud,
    scheduler: FakeCloudScheduler,
    tmp_path: Path,
    outputs: dict[str, Any],
    said: str,
) -> None:
    result = status(tmp_path, **outputs)
    assert result.exit_code == 2, result.output
    assert said in result.stderr
    assert sent(cloud) == 0
    assert scheduler.requests == []


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ([], "exactly one of --stack NAME or --outputs FILE"),
        (["--stack", "dev", "--outputs", "o.json"], "exactly one of"),
        (["--outputs", "no-such-file.json"], "cannot read it"),
    ],
)
def test_bad_arguments_exit_2_before_any_request(cloud: Cloud, args: list[str], said: str) -> None:
    result = runner.invoke(app, ["status", *args])
    assert result.exit_code == 2, result.output
    assert said in result.stderr
    assert sent(cloud) == 0


def test_a_bad_grace_exits_2_before_any_request(cloud: Cloud, tmp_path: Path) -> None:
    result = status(tmp_path, "--snapshot-grace", "soon")
    assert result.exit_code == 2
    assert "--snapshot-grace 'soon' is not valid" in result.stderr
    assert sent(cloud) == 0


def test_an_unknown_store_id_exits_2_before_any_request(cloud: Cloud, tmp_path: Path) -> None:
    result = status(tmp_path, "--store-id", "nope", dicomStores=TWO_STORES)
    assert result.exit_code == 2
    assert "the stack has no DICOM store 'nope': its stores are dicom, research" in result.stderr
    assert sent(cloud) == 0
