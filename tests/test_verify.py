"""`dicom-bq verify` end to end: fake Healthcare and BigQuery, real Orthanc and storage emulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.clients.bigquery import BigQueryTables
from dicom_bq.clients.endpoints import Connection
from dicom_bq.refs import TableUri
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


def stows(cloud: Cloud) -> list[str]:
    return [
        r.path for r in cloud.healthcare.requests if r.method == "POST" and "/dicomWeb/" in r.path
    ]


def test_verify_uses_a_temporary_store_and_leaves_the_real_one_untouched(
    cloud: Cloud, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["verify", "--outputs", str(outputs_file(tmp_path)), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [s["step"] for s in report["steps"]] == [
        "store",
        "temp-store",
        "seed",
        "filter",
        "export",
        "query",
        "cleanup",
    ]
    (temporary,) = cloud.healthcare.deleted_stores
    assert temporary.startswith(STORE.rsplit("/", 1)[0] + "/dicom-bq-verify-")
    assert cloud.healthcare.created_stores == set()
    # Only the temporary store received the synthetic instance, and it was the one exported.
    assert [p.split("/dicomWeb")[0].removeprefix("/v1/") for p in stows(cloud)] == [temporary]
    exports = [r.path for r in cloud.healthcare.requests if r.path.endswith(":export")]
    assert exports == [f"/v1/{temporary}:export"]
    assert cloud.healthcare.store_configs[temporary] == {"labels": {"dicom-bq": "verification"}}

    assert all(s["ok"] for s in report["steps"])
    assert report["operation"]["success"] == 1
    # The export step names the filter it used.
    export_step = next(s for s in report["steps"] if s["step"] == "export")
    assert f"(filter gs://{FILTER_BUCKET}/dicom-bq/verify/" in export_step["detail"]
    body = cloud.healthcare.export_bodies[-1]
    assert body["bigqueryDestination"] == {"tableUri": TABLE, "writeDisposition": "WRITE_TRUNCATE"}
    assert body["filterConfig"]["resourcePathsGcsUri"].startswith(
        f"gs://{FILTER_BUCKET}/dicom-bq/verify/"
    )
    (query,) = cloud.bigquery.queries()
    assert "@sop_instance_uid" in query["query"]
    rows = cloud.bigquery.tables["dicom-src-test.dicom_metadata.dicom_bq_verification"]
    assert len(rows) == 1
    # PN is a record in the default schema (dicom-bigquery-schema page: "Person Name (PN) | Struct").
    assert rows[0]["PatientName"]["Alphabetic"] == "SYNTHETIC^DICOMBQ^VERIFICATION"
    # The real store never held the synthetic instance.
    metrics = json.loads(
        runner.invoke(
            app, ["verify", "--outputs", str(outputs_file(tmp_path)), "--no-seed", "--json"]
        ).stdout
    )
    assert metrics["steps"][0]["detail"].endswith("0 instances, 0 series, 0 studies")


SCRATCH_PREFIX = "dicom-src-test.dicom_metadata.dicom_bq_verify_"


def inserted_tables(cloud: Cloud) -> list[dict[str, Any]]:
    """The bodies of the tables.insert requests BigQuery received."""
    return [
        r.json()
        for r in cloud.bigquery.requests
        if r.method == "POST" and r.path.endswith("/tables")
    ]


def test_verify_without_seed_leaves_no_copy_of_the_store_behind(
    cloud: Cloud, tmp_path: Path
) -> None:
    """--no-seed exports the real store's metadata (patient data) into a scratch table made with
    an expiration (bigquery v2 Table.expirationTime, set in tables.insert), compares the counts
    there and deletes it: the fake saw the DELETE; nothing remains in BigQuery."""
    import time

    from tests.test_export_cli import seed

    seed(cloud, 3)
    before_ms = int(time.time() * 1000)
    result = runner.invoke(
        app, ["verify", "--outputs", str(outputs_file(tmp_path)), "--no-seed", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    steps = {s["step"]: s for s in report["steps"]}
    assert list(steps) == ["store", "scratch-table", "export", "count", "cleanup"]
    assert all(s["ok"] for s in report["steps"])
    assert "3 rows = 3 exported = 3 instances" in steps["count"]["detail"]

    (scratch,) = cloud.bigquery.created_tables
    assert scratch.startswith(SCRATCH_PREFIX)
    # Exported there, whole (no filter), into the empty table made for it.
    (body,) = cloud.healthcare.export_bodies
    assert body == {
        "bigqueryDestination": {"tableUri": f"bq://{scratch}", "writeDisposition": "WRITE_EMPTY"}
    }
    # The expiration was set when the table was made, so a killed run's copy expires too:
    # the longer of --timeout (30m by default) and 24 hours, and an hour's margin.
    (inserted,) = inserted_tables(cloud)
    expires_ms = int(inserted["expirationTime"])
    hour_ms = 3600 * 1000
    assert before_ms + 25 * hour_ms <= expires_ms <= before_ms + 25 * hour_ms + 5 * 60 * 1000
    # Deleted at the end, as the fake saw it; no copy anywhere.
    assert cloud.bigquery.deleted_tables == [scratch]
    assert scratch not in cloud.bigquery.tables
    assert TABLE.removeprefix("bq://") not in cloud.bigquery.tables
    assert steps["cleanup"]["detail"] == f"deleted scratch table bq://{scratch}"
    # The stack has a filter bucket; the export step says truthfully why no filter was used.
    assert "no filter bucket" not in result.stdout
    assert steps["export"]["detail"].endswith(
        "(no filter: --no-seed exports the whole store, to compare its instance count with "
        "the rows)"
    )


def test_the_store_step_counts_one_of_each_in_the_singular(cloud: Cloud, tmp_path: Path) -> None:
    from tests.test_export_cli import seed

    seed(cloud, 1)
    result = runner.invoke(
        app, ["verify", "--outputs", str(outputs_file(tmp_path)), "--no-seed", "--json"]
    )
    assert result.exit_code == 0, result.output
    store_step = json.loads(result.stdout)["steps"][0]
    assert store_step["detail"] == f"{STORE}: 1 instance, 1 series, 1 study"


def test_verify_without_seed_that_cannot_delete_its_scratch_table_says_so(
    cloud: Cloud, tmp_path: Path
) -> None:
    from tests.test_export_cli import seed

    seed(cloud, 2)
    cloud.bigquery.denied_writes.add("delete")
    result = runner.invoke(
        app, ["verify", "--outputs", str(outputs_file(tmp_path)), "--no-seed", "--json"]
    )
    assert result.exit_code == 1, result.output
    cleanup = json.loads(result.stdout)["steps"][-1]
    assert cleanup == {**cleanup, "step": "cleanup", "ok": False}
    (scratch,) = cloud.bigquery.created_tables
    assert scratch in cloud.bigquery.tables  # still there: the report does not claim otherwise
    assert f"could not delete scratch table bq://{scratch}" in cleanup["detail"]
    assert "it expires at " in cleanup["detail"]
    table = scratch.replace("dicom-src-test.", "dicom-src-test:", 1)
    assert f"`bq rm -f -t {table}`" in cleanup["detail"]
    assert "Traceback" not in result.output


def test_verify_without_seed_refused_a_scratch_table_exports_nothing(
    cloud: Cloud, tmp_path: Path
) -> None:
    cloud.bigquery.denied_writes.add("create")
    result = runner.invoke(app, ["verify", "--outputs", str(outputs_file(tmp_path)), "--no-seed"])
    assert result.exit_code == 1, result.output
    message = " ".join(result.stderr.split())
    assert "cannot create the scratch table" in message
    assert "bigquery.tables.create and bigquery.tables.delete" in message
    assert "roles/bigquery.dataEditor" in message
    assert cloud.healthcare.export_bodies == []
    assert "Traceback" not in result.output


def test_verify_without_seed_keeps_the_scratch_table_while_its_export_runs(
    cloud: Cloud, tmp_path: Path
) -> None:
    """An export still running when verify stops would create a deleted table again at its end
    ("missing table created": Google's how-to), without the expiration: the table is kept, with
    its expiration, and the report says how to delete it once the export is over."""
    from tests.test_export_cli import seed

    seed(cloud, 2)
    cloud.healthcare.export_seconds = 3600
    result = runner.invoke(
        app,
        ["verify", "--outputs", str(outputs_file(tmp_path)), "--no-seed", "--timeout", "1m"],
        catch_exceptions=False,
    )
    assert result.exit_code == 3, result.output
    (scratch,) = cloud.bigquery.created_tables
    (operation,) = cloud.healthcare.operations
    assert cloud.bigquery.deleted_tables == []
    message = " ".join(result.stderr.split())
    assert f"kept scratch table bq://{scratch}: export {operation} may still be running" in message
    assert f"`dicom-bq operations wait {operation}`, then `bq rm -f -t " in message
    # The export ends later and fills the table, whose expiration still stands.
    cloud.clock.sleep(3600)
    cloud.healthcare.settle()
    assert len(cloud.bigquery.tables[scratch]) == 2
    assert scratch in cloud.bigquery.expirations


def test_a_killed_verify_without_seed_leaves_a_copy_that_bigquery_expires(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed before its cleanup (kill -9 runs no cleanup: here the cleanup is skipped), the run
    leaves the scratch table; its expirationTime, set by tables.insert, makes BigQuery delete it
    (the fake drops a table once its expirationTime has passed, as Table.expirationTime says)."""
    from dicom_bq.flows import verify as verify_flow
    from tests.test_export_cli import seed

    seed(cloud, 2)
    monkeypatch.setattr(verify_flow.Verifier, "_clean_up", lambda self, made: False)
    result = runner.invoke(
        app, ["verify", "--outputs", str(outputs_file(tmp_path)), "--no-seed", "--json"]
    )
    assert result.exit_code == 0, result.output
    (scratch,) = cloud.bigquery.created_tables
    assert len(cloud.bigquery.tables[scratch]) == 2  # the store's metadata, left by the "kill"
    expires = cloud.bigquery.expirations[scratch]
    cloud.bigquery.now_ms = lambda: expires
    table = TableUri.parse(f"bq://{scratch}")
    assert BigQueryTables(Connection(environ=cloud.env), "dicom-src-test").row_count(table) is None
    assert cloud.bigquery.expired_tables == [scratch]
    assert scratch not in cloud.bigquery.tables


def test_verify_without_seed_keep_keeps_the_scratch_table_until_it_expires(
    cloud: Cloud, tmp_path: Path
) -> None:
    result = runner.invoke(
        app, ["verify", "--outputs", str(outputs_file(tmp_path)), "--no-seed", "--keep", "--json"]
    )
    assert result.exit_code == 0, result.output
    keep = json.loads(result.stdout)["steps"][-1]
    (scratch,) = cloud.bigquery.created_tables
    assert keep["step"] == "keep"
    assert f"kept scratch table bq://{scratch}" in keep["detail"]
    assert "until it expires at " in keep["detail"]
    assert cloud.bigquery.deleted_tables == []
    assert scratch in cloud.bigquery.expirations


def _counts_disagree(cloud: Cloud, monkeypatch: pytest.MonkeyPatch, which: str) -> None:
    """Make one of the three counts --no-seed compares differ from the other two."""
    from tests.fakes.http import Response

    fake = cloud.healthcare
    if which == "instances":  # getDICOMStoreMetrics counts one instance more than was exported
        metrics = fake._metrics

        def more(store: str) -> Response:
            document = json.loads(metrics(store).body)
            document["instanceCount"] = str(int(document["instanceCount"]) + 1)
            return Response.json(document)

        monkeypatch.setattr(fake, "_metrics", more)
    elif which == "success":  # the operation's counter.success says one more than it wrote
        operation_json = fake._operation_json

        def inflated(operation: Any, done: bool) -> dict[str, Any]:
            document = operation_json(operation, done)
            counter = document["metadata"]["counter"]
            if "success" in counter:
                counter["success"] = str(int(counter["success"]) + 1)
            return document

        monkeypatch.setattr(fake, "_operation_json", inflated)
    else:  # the table holds one row fewer than the export and the store count
        write = cloud.bigquery.write

        def short(table_id: str, *, rows: list[dict[str, Any]], **kwargs: Any) -> None:
            write(table_id, rows=rows[:-1], **kwargs)

        monkeypatch.setattr(cloud.bigquery, "write", short)


@pytest.mark.parametrize(
    ("which", "counts"),
    [
        ("instances", "has 3 rows, the export reported 3 successes, the store held 4 instances"),
        ("success", "has 3 rows, the export reported 4 successes, the store held 3 instances"),
        ("rows", "has 2 rows, the export reported 3 successes, the store held 3 instances"),
    ],
)
def test_verify_without_seed_fails_when_any_count_disagrees(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, which: str, counts: str
) -> None:
    """table rows = counter.success = the store's instance count: each one differing fails."""
    from tests.test_export_cli import seed

    seed(cloud, 3)
    _counts_disagree(cloud, monkeypatch, which)
    result = runner.invoke(
        app, ["verify", "--outputs", str(outputs_file(tmp_path)), "--no-seed", "--json"]
    )
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["steps"][-2] == {**report["steps"][-2], "step": "count", "ok": False}
    assert counts in report["steps"][-2]["detail"]
    # The failed count does not keep the copy: the fake saw the scratch table deleted.
    (scratch,) = cloud.bigquery.created_tables
    assert cloud.bigquery.deleted_tables == [scratch]
    assert report["steps"][-1] == {**report["steps"][-1], "step": "cleanup", "ok": True}


def test_verify_with_explicit_store_and_no_filter_bucket(cloud: Cloud) -> None:
    result = runner.invoke(app, ["verify", "--store", STORE, "--table", TABLE, "--json"])
    assert result.exit_code == 0, result.output
    steps = {s["step"]: s for s in json.loads(result.stdout)["steps"]}
    assert steps["export"]["detail"].endswith(
        "(no filter (no filter bucket): the whole temporary store, which holds only the "
        "synthetic instance)"
    )
    assert "filterConfig" not in cloud.healthcare.export_bodies[-1]


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
    assert "query" not in steps
    # The fake, not the step's flag: the temporary store was made, then deleted by a DELETE.
    (temporary,) = cloud.healthcare.deleted_stores
    assert "/dicomStores/dicom-bq-verify-" in temporary
    assert cloud.healthcare.stores == {STORE}
    assert cloud.healthcare.created_stores == set()
    assert steps["cleanup"] == {**steps["cleanup"], "ok": True}
    assert f"deleted temporary store {temporary}" in steps["cleanup"]["detail"]


def test_verify_keep_leaves_the_temporary_store(cloud: Cloud, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["verify", "--outputs", str(outputs_file(tmp_path)), "--keep", "--json"]
    )
    assert result.exit_code == 0, result.output
    steps = [s["step"] for s in json.loads(result.stdout)["steps"]]
    assert "cleanup" not in steps
    assert steps[-1] == "keep"
    assert len(cloud.healthcare.created_stores) == 1


def test_in_place_seeds_the_real_store_and_deletes_the_instance(
    cloud: Cloud, tmp_path: Path
) -> None:
    result = runner.invoke(
        app, ["verify", "--outputs", str(outputs_file(tmp_path)), "--in-place", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert [s["step"] for s in json.loads(result.stdout)["steps"]] == [
        "store",
        "seed",
        "filter",
        "export",
        "query",
        "cleanup",
    ]
    assert stows(cloud) == [f"/v1/{STORE}/dicomWeb/studies"]
    assert cloud.healthcare.deleted_stores == []
    deletes = [r for r in cloud.healthcare.requests if r.method == "DELETE"]
    assert len(deletes) == 1
    assert "/instances/" in deletes[0].path


STREAMING = {
    "streamConfigs": [
        {"bigqueryDestination": {"tableUri": "bq://dicom-src-test.dicom_metadata.instances"}},
        {"bigqueryDestination": {"tableUri": "bq://dicom-src-test.dicom_metadata.research"}},
    ],
    "notificationConfig": {"pubsubTopic": "projects/dicom-src-test/topics/new-instances"},
}
AGENT = "service-111122223333@gcp-sa-healthcare.iam.gserviceaccount.com"


def _agent_may_write(cloud: Cloud) -> None:
    cloud.bigquery.dataset_access["dicom-src-test.dicom_metadata"] = [
        {"role": "WRITER", "userByEmail": AGENT}
    ]


def test_in_place_on_a_streaming_store_is_refused_naming_what_keeps_it(
    cloud: Cloud, tmp_path: Path
) -> None:
    cloud.healthcare.store_configs[STORE] = STREAMING
    _agent_may_write(cloud)
    result = runner.invoke(app, ["verify", "--outputs", str(outputs_file(tmp_path)), "--in-place"])
    assert result.exit_code == 2, result.output
    for kept in (
        "bq://dicom-src-test.dicom_metadata.instances",
        "bq://dicom-src-test.dicom_metadata.research",
        "projects/dicom-src-test/topics/new-instances",
        "--accept-synthetic-in-streams",
    ):
        assert kept in result.stderr
    assert stows(cloud) == []
    assert cloud.healthcare.export_bodies == []


def test_in_place_on_a_streaming_store_with_the_acknowledgement(
    cloud: Cloud, tmp_path: Path
) -> None:
    cloud.healthcare.store_configs[STORE] = STREAMING
    _agent_may_write(cloud)
    outputs = str(outputs_file(tmp_path))
    args = ["verify", "--outputs", outputs, "--in-place", "--accept-synthetic-in-streams"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert stows(cloud) == [f"/v1/{STORE}/dicomWeb/studies"]


def test_a_streaming_store_is_checked_without_writing_to_it(cloud: Cloud, tmp_path: Path) -> None:
    cloud.healthcare.store_configs[STORE] = STREAMING
    _agent_may_write(cloud)
    cloud.bigquery.tables["dicom-src-test.dicom_metadata.instances"] = [{"x": 1}]
    result = runner.invoke(app, ["verify", "--outputs", str(outputs_file(tmp_path)), "--json"])
    assert result.exit_code == 0, result.output
    store_step = json.loads(result.stdout)["steps"][0]["detail"]
    # The store's counts, then each stream and topic, one "; " between each (no space before).
    assert store_step.startswith(f"{STORE}: 0 instances, 0 series, 0 studies; stream ")
    assert " ;" not in store_step
    assert "stream bq://dicom-src-test.dicom_metadata.instances: 1 row, " in store_step
    assert "research: not created yet" in store_step
    assert f"{AGENT} may write (WRITER)" in store_step
    assert "notifies projects/dicom-src-test/topics/new-instances" in store_step
    assert all(f"/v1/{STORE}/" not in p for p in stows(cloud))


def test_a_stream_the_agent_cannot_write_fails_the_store_step(cloud: Cloud, tmp_path: Path) -> None:
    cloud.healthcare.store_configs[STORE] = STREAMING
    result = runner.invoke(app, ["verify", "--outputs", str(outputs_file(tmp_path)), "--json"])
    assert result.exit_code == 1
    (step,) = json.loads(result.stdout)["steps"]
    assert f"{AGENT} has no writer role" in step["detail"]
    assert cloud.healthcare.created_stores == set()


def test_a_user_table_with_rows_is_not_truncated_without_yes(cloud: Cloud) -> None:
    user_table = "dicom-src-test.dicom_metadata.production_dicom"
    cloud.bigquery.tables[user_table] = [{"SOPInstanceUID": str(i)} for i in range(5)]
    result = runner.invoke(app, ["verify", "--store", STORE, "--table", f"bq://{user_table}"])
    assert result.exit_code == 2
    assert "holds 5 rows and WRITE_TRUNCATE would erase them" in result.stderr
    assert len(cloud.bigquery.tables[user_table]) == 5
    assert cloud.healthcare.export_bodies == []
    assert cloud.healthcare.deleted_stores == []  # asked before anything was created
    assert stows(cloud) == []
    confirmed = runner.invoke(
        app, ["verify", "--store", STORE, "--table", f"bq://{user_table}", "--yes"]
    )
    assert confirmed.exit_code == 0, confirmed.output


def test_the_tools_own_table_is_truncated_without_a_question(cloud: Cloud, tmp_path: Path) -> None:
    cloud.bigquery.tables["dicom-src-test.dicom_metadata.dicom_bq_verification"] = [{"a": 1}]
    result = runner.invoke(app, ["verify", "--outputs", str(outputs_file(tmp_path))])
    assert result.exit_code == 0, result.output
    (body,) = cloud.healthcare.export_bodies
    assert body["bigqueryDestination"] == {
        "tableUri": "bq://dicom-src-test.dicom_metadata.dicom_bq_verification",
        "writeDisposition": "WRITE_TRUNCATE",
    }


def test_ctrl_c_during_the_export_deletes_the_temporary_store_and_says_how_to_resume(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicom_bq.clients import retry

    cloud.healthcare.export_seconds = 60

    def interrupted(self: object, seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(retry.SystemClock, "sleep", interrupted)
    result = runner.invoke(app, ["verify", "--outputs", str(outputs_file(tmp_path))])
    assert result.exit_code == 130
    (operation,) = cloud.healthcare.operations
    assert f"dicom-bq operations wait {operation}" in result.stderr
    (deleted,) = cloud.healthcare.deleted_stores
    assert cloud.healthcare.stores == {STORE}
    assert cloud.healthcare.created_stores == set()
    # The last words say what the cleanup saw, naming the store the fake deleted.
    last = result.stderr.strip().splitlines()[-1]
    assert f"; cleanup: deleted temporary store {deleted};" in last


def test_verify_detects_a_mismatched_row(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = cloud.healthcare._instances

    def tampered() -> list[dict[str, object]]:
        rows = original()
        for row in rows:  # each instance's DICOM JSON; (0010,0020) is PatientID
            row["00100020"] = {"vr": "LO", "Value": ["SOMEONE-ELSE"]}
        return rows

    monkeypatch.setattr(cloud.healthcare, "_instances", tampered)
    result = runner.invoke(app, ["verify", "--outputs", str(outputs_file(tmp_path)), "--json"])
    assert result.exit_code == 1
    steps = {s["step"]: s for s in json.loads(result.stdout)["steps"]}
    assert "PatientID='SOMEONE-ELSE'" in steps["query"]["detail"]


def test_a_store_streaming_into_the_verification_table_is_refused(
    cloud: Cloud, tmp_path: Path
) -> None:
    """verify would replace its streamed rows (WRITE_TRUNCATE, and no question for its own
    table): refused before anything is created or exported."""
    table_id = TABLE.removeprefix("bq://")
    cloud.healthcare.store_configs[STORE] = {
        "streamConfigs": [{"bigqueryDestination": {"tableUri": TABLE}}]
    }
    _agent_may_write(cloud)
    cloud.bigquery.tables[table_id] = [{"SOPInstanceUID": str(i)} for i in range(5)]
    result = runner.invoke(app, ["verify", "--outputs", str(outputs_file(tmp_path))])
    assert result.exit_code == 2, result.output
    assert f"streams into {TABLE}, the table verify exports into" in result.stderr
    assert len(cloud.bigquery.tables[table_id]) == 5
    assert cloud.healthcare.export_bodies == []
    assert [r for r in cloud.healthcare.requests if r.method != "GET"] == []


def test_a_store_streaming_into_another_table_named_like_verifications_is_refused(
    cloud: Cloud, tmp_path: Path
) -> None:
    other = "bq://dicom-src-test.streams.dicom_bq_verification"
    cloud.bigquery.datasets.add("dicom-src-test.streams")
    cloud.bigquery.dataset_access["dicom-src-test.streams"] = [
        {"role": "WRITER", "userByEmail": AGENT}
    ]
    cloud.healthcare.store_configs[STORE] = {
        "streamConfigs": [{"bigqueryDestination": {"tableUri": other}}]
    }
    result = runner.invoke(app, ["verify", "--outputs", str(outputs_file(tmp_path))])
    assert result.exit_code == 2, result.output
    assert f"streams into {other}, named dicom_bq_verification" in result.stderr
    assert cloud.healthcare.export_bodies == []
    assert [r for r in cloud.healthcare.requests if r.method != "GET"] == []
