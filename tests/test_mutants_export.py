"""flows/export.py's decisions held to their contract directly (issue 19, mutation testing): what
a WRITE_TRUNCATE asks before erasing rows, which bucket a filter file goes to and under what
name, which exports may still read it, and when it is deleted or kept with the command that
removes it. tests/test_export_cli.py and tests/test_export_filter_cleanup.py run the whole
command against the fakes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dicom_bq.clients.healthcare import ExportAnswerLostError, ExportNotStartedError
from dicom_bq.clients.operations import OperationState
from dicom_bq.clients.storage import GenerationMismatchError, StoredObject
from dicom_bq.errors import EXIT_FAILED, DicomBqError
from dicom_bq.flows import export as export_module
from dicom_bq.flows.export import (
    ExportRequests,
    FilterReaders,
    TruncateRisk,
    check_truncate,
    filter_bucket,
    settle_filter,
    upload_filter,
)
from dicom_bq.refs import GcsUri, StoreName, TableUri, WriteDisposition

TABLE = TableUri.parse("bq://dicom-src-test.dicom_metadata.exported")
STORE = StoreName.parse(
    "projects/dicom-src-test/locations/us-central1/datasets/imaging/dicomStores/dicom"
)
LISTING = (
    "gcloud healthcare operations list --dataset=imaging --location=us-central1 "
    "--project=dicom-src-test"
)
STORED = StoredObject(GcsUri("a-bucket", "dicom-bq/filters/f.txt"), size=10, generation=17)


class Observer:
    def __init__(self) -> None:
        self.notices: list[str] = []
        self.waits: list[tuple[str, float]] = []
        self.starts: list[str] = []
        self.updates: list[tuple[OperationState, float]] = []

    def notice(self, message: str) -> None:
        self.notices.append(message)

    def waiting(self, why: str, delay: float) -> None:
        self.waits.append((why, delay))

    def started(self, operation: str) -> None:
        self.starts.append(operation)

    def progress(self, state: OperationState, elapsed: float) -> None:
        self.updates.append((state, elapsed))


# -- the WRITE_TRUNCATE check -----------------------------------------------------------------


def test_a_truncate_risk_asks_and_refuses_naming_the_rows() -> None:
    risk = TruncateRisk(table=TABLE, rows=12)
    assert risk.question == (
        "bq://dicom-src-test.dicom_metadata.exported holds 12 rows; WRITE_TRUNCATE erases them. "
        "Continue?"
    )
    refusal = risk.refusal()
    assert refusal.message == (
        "bq://dicom-src-test.dicom_metadata.exported holds 12 rows and WRITE_TRUNCATE would "
        "erase them: pass --yes to confirm, or use WRITE_APPEND or a new table"
    )


def test_a_table_with_rows_is_truncated_only_once_confirmed() -> None:
    asked: list[TruncateRisk] = []
    counted: list[TableUri] = []

    def count(table: TableUri) -> int | None:
        counted.append(table)
        return 3

    check_truncate(count_rows=count, table=TABLE, confirmed=False, confirm=asked.append)
    assert counted == [TABLE]
    assert asked == [TruncateRisk(table=TABLE, rows=3)]


def test_yes_neither_counts_nor_asks() -> None:
    asked: list[TruncateRisk] = []

    def count(table: TableUri) -> int | None:
        raise AssertionError("counted although confirmed")

    check_truncate(count_rows=count, table=TABLE, confirmed=True, confirm=asked.append)
    assert asked == []


@pytest.mark.parametrize("rows", [0, None])
def test_an_empty_or_missing_table_is_not_asked_about(rows: int | None) -> None:
    asked: list[TruncateRisk] = []
    check_truncate(count_rows=lambda _: rows, table=TABLE, confirmed=False, confirm=asked.append)
    assert asked == []


# -- the filter bucket ------------------------------------------------------------------------


def settings(bucket: str | None) -> Any:
    return SimpleNamespace(filter_bucket=bucket)


def test_the_stacks_filter_bucket_is_used_without_a_warning() -> None:
    observer = Observer()
    chosen = filter_bucket(bucket=None, settings=settings("stack-bucket"), observer=observer)
    assert chosen == "stack-bucket"
    assert observer.notices == []
    same = filter_bucket(
        bucket="stack-bucket", settings=settings("stack-bucket"), observer=observer
    )
    assert same == "stack-bucket"
    assert observer.notices == []


def test_another_bucket_is_used_with_a_warning_about_the_agents_access() -> None:
    observer = Observer()
    chosen = filter_bucket(bucket="my-bucket", settings=settings("stack-bucket"), observer=observer)
    assert chosen == "my-bucket"
    assert observer.notices == [
        "Warning: gs://my-bucket is not the stack's filter bucket: the Cloud Healthcare service "
        "agent needs roles/storage.objectViewer on it, or the export fails"
    ]
    observer = Observer()
    assert filter_bucket(bucket="my-bucket", settings=None, observer=observer) == "my-bucket"
    assert len(observer.notices) == 1


@pytest.mark.parametrize("stack", [None, settings(None)])
def test_no_bucket_at_all_says_how_to_name_one(stack: Any) -> None:
    with pytest.raises(DicomBqError) as caught:
        filter_bucket(bucket=None, settings=stack, observer=Observer())
    assert caught.value.message == (
        "--filter-file needs a bucket: --filter-bucket BUCKET, or --stack NAME whose "
        "dicom-bq:filterBucket the agent can read"
    )
    assert caught.value.exit_code != EXIT_FAILED  # bad input, not a failed export


def test_an_invalid_bucket_is_refused_before_any_upload() -> None:
    observer = Observer()
    with pytest.raises(DicomBqError) as caught:
        filter_bucket(bucket="Bad_Bucket!", settings=None, observer=observer)
    assert caught.value.message.startswith("--filter-bucket 'Bad_Bucket!' is not valid: ")
    assert observer.notices == []


# -- the upload ---------------------------------------------------------------------------------


@dataclass
class FakeObjects:
    """StorageObjects as the flow uses it: one upload, one conditioned delete."""

    uploads: list[tuple[str, GcsUri, int, int]] = field(default_factory=list)
    refuse: bool = False
    deleted: list[StoredObject] = field(default_factory=list)
    delete_answer: Any = True

    def __call__(self, connection: Any, bucket: str) -> FakeObjects:
        self.bucket = bucket
        return self

    def upload_file(
        self, source: str, target: GcsUri, chunk: int, *, if_generation_match: int
    ) -> StoredObject:
        self.uploads.append((source, target, chunk, if_generation_match))
        if self.refuse:
            raise GenerationMismatchError(target, if_generation_match, "uploading")
        return StoredObject(target, size=1, generation=5)

    def delete_written(self, stored: StoredObject) -> bool:
        self.deleted.append(stored)
        if isinstance(self.delete_answer, BaseException):
            raise self.delete_answer
        return bool(self.delete_answer)


def test_a_filter_file_is_uploaded_create_only_under_a_new_safe_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    objects = FakeObjects()
    monkeypatch.setattr(export_module, "StorageObjects", objects)
    path = tmp_path / "My list (v2).TXT"
    observer = Observer()
    stored = upload_filter(path=path, bucket="a-bucket", connection=None, observer=observer)  # type: ignore[arg-type]
    ((source, target, chunk, precondition),) = objects.uploads
    assert objects.bucket == "a-bucket"
    assert source == str(path)
    assert chunk == export_module.UPLOAD_CHUNK
    assert precondition == 0  # ifGenerationMatch=0: only where no object is
    assert target.bucket == "a-bucket"
    assert re.fullmatch(r"dicom-bq/filters/\d{8}T\d{6}Z-[0-9a-f]{8}-My_list__v2_\.TXT", target.name)
    assert stored.uri == target
    assert observer.notices == [f"Uploaded {path} to {target.uri}"]
    again = upload_filter(path=path, bucket="a-bucket", connection=None, observer=observer)  # type: ignore[arg-type]
    assert again.uri != stored.uri  # a new name each time


def test_a_long_or_unsafe_file_name_is_cut_and_never_empty(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    objects = FakeObjects()
    monkeypatch.setattr(export_module, "StorageObjects", objects)
    upload_filter(
        path=tmp_path / ("a" * 150), bucket="b-bucket", connection=None, observer=Observer()
    )  # type: ignore[arg-type]
    name = objects.uploads[-1][1].name
    assert name.endswith("-" + "a" * 100)
    upload_filter(path=Path(""), bucket="b-bucket", connection=None, observer=Observer())  # type: ignore[arg-type]
    assert objects.uploads[-1][1].name.endswith("-filter")


def test_an_object_of_the_same_name_is_never_replaced(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    objects = FakeObjects(refuse=True)
    monkeypatch.setattr(export_module, "StorageObjects", objects)
    observer = Observer()
    with pytest.raises(DicomBqError) as caught:
        upload_filter(
            path=tmp_path / "f.txt", bucket="a-bucket", connection=None, observer=observer
        )  # type: ignore[arg-type]
    target = objects.uploads[0][1]
    assert caught.value.exit_code == EXIT_FAILED
    assert caught.value.message == (
        f"{target.uri} exists already, so the filter file was not uploaded over it: run the "
        "command again (it picks a new name)"
    )
    assert observer.notices == []


# -- which exports may still read the file -----------------------------------------------------


def readers(answered: int = 0, unknown: int = 0) -> FilterReaders:
    requests = SimpleNamespace(answered=answered, unknown=unknown)
    return FilterReaders(requests, STORE)  # type: ignore[arg-type]


def done(done_: bool) -> OperationState:
    return OperationState.from_api({"name": "op", "done": done_})


def test_nothing_reads_the_file_before_any_export_or_after_every_one_ended() -> None:
    assert readers().still_reading() is None
    ended = readers(answered=1)
    ended.started("op-1")
    ended.seen(done(True))
    assert ended.still_reading() is None


def test_a_started_export_not_seen_done_still_reads_it() -> None:
    running = readers(answered=1)
    running.started("op-1")
    assert running.still_reading() == (
        "operation op-1 may still read it; once it has ended (dicom-bq operations wait op-1)"
    )
    running.seen(done(False))
    assert running.still_reading() is not None


def test_the_last_operation_started_is_the_one_seen() -> None:
    two = readers(answered=2)
    two.started("op-1")
    two.seen(done(True))
    two.started("op-2")
    two.seen(done(False))
    assert two.operations == {"op-1": True, "op-2": False}
    assert two.still_reading() == (
        "operation op-2 may still read it; once it has ended (dicom-bq operations wait op-2)"
    )
    two.seen(done(True))
    assert two.still_reading() is None
    nothing = readers()
    nothing.seen(done(True))  # no operation yet: nothing to mark
    assert nothing.operations == {}


def test_a_request_whose_answer_never_came_may_have_started_an_unknown_export() -> None:
    lost = readers(unknown=1)
    assert lost.still_reading() == (
        "an export request was sent and its answer never came, so an export dicom-bq does not "
        f"know may read it; once no export of the dataset is running ({LISTING})"
    )


def test_an_operation_found_by_listing_accounts_for_its_lost_answer() -> None:
    # One request, answer lost, its operation found by listing, followed to the end.
    found = readers(answered=0, unknown=1)
    found.started("op-1")
    found.seen(done(True))
    assert found.still_reading() is None
    # Two lost answers, one operation found: the other request may have started one.
    two_lost = readers(answered=0, unknown=2)
    two_lost.started("op-1")
    two_lost.seen(done(True))
    assert two_lost.still_reading() is not None
    assert LISTING in str(two_lost.still_reading())


def test_the_listing_command_names_the_stores_dataset() -> None:
    assert readers().listing() == LISTING


# -- the export requests' outcomes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "answered", "unknown"),
    [
        ({"name": "op"}, 1, 0),
        (ExportNotStartedError("429"), 0, 0),
        (DicomBqError("never sent"), 0, 0),
        (ExportAnswerLostError("reset"), 0, 1),
        (KeyboardInterrupt(), 0, 1),
    ],
)
def test_each_export_request_is_counted_by_outcome(
    monkeypatch: pytest.MonkeyPatch, outcome: Any, answered: int, unknown: int
) -> None:
    from dicom_bq.clients.endpoints import Connection
    from dicom_bq.clients.healthcare import HealthcareApi

    def export_once(self: Any, request: Any) -> dict[str, Any]:
        if isinstance(outcome, BaseException):
            raise outcome
        return dict(outcome)

    monkeypatch.setattr(HealthcareApi, "export_once", export_once)
    api = ExportRequests(
        Connection(environ={"HEALTHCARE_EMULATOR_HOST": "http://127.0.0.1:9"}), "v1"
    )
    assert (api.answered, api.unknown) == (0, 0)
    if isinstance(outcome, BaseException):
        with pytest.raises(type(outcome)):
            api.export_once(None)  # type: ignore[arg-type]
    else:
        assert api.export_once(None) == outcome  # type: ignore[arg-type]
    assert (api.answered, api.unknown) == (answered, unknown)


def test_a_refused_export_request_started_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from dicom_bq.clients.discovery import ApiCallError
    from dicom_bq.clients.endpoints import Connection
    from dicom_bq.clients.healthcare import HealthcareApi

    def export_once(self: Any, request: Any) -> dict[str, Any]:
        raise ApiCallError(403, "PERMISSION_DENIED", "no")

    monkeypatch.setattr(HealthcareApi, "export_once", export_once)
    api = ExportRequests(
        Connection(environ={"HEALTHCARE_EMULATOR_HOST": "http://127.0.0.1:9"}), "v1beta1"
    )
    with pytest.raises(ApiCallError):
        api.export_once(None)  # type: ignore[arg-type]
    assert (api.answered, api.unknown) == (0, 0)


# -- settling the uploaded file --------------------------------------------------------------------


def settle(
    reading: FilterReaders,
    objects: FakeObjects,
    *,
    keep: bool = False,
    interrupted: bool = False,
    stored: StoredObject = STORED,
) -> list[str]:
    observer = Observer()
    settle_filter(
        stored=stored,
        readers=reading,
        keep=keep,
        interrupted=interrupted,
        objects=objects,  # type: ignore[arg-type]
        observer=observer,
    )
    return observer.notices


REMOVE = "gcloud storage rm gs://a-bucket/dicom-bq/filters/f.txt --if-generation-match=17"


def test_the_file_is_deleted_once_no_export_can_read_it() -> None:
    objects = FakeObjects()
    assert settle(readers(), objects) == [
        "Deleted gs://a-bucket/dicom-bq/filters/f.txt: the export has ended (--keep-filter "
        "keeps it)"
    ]
    assert objects.deleted == [STORED]


def test_keep_filter_keeps_it_and_says_how_to_remove_it() -> None:
    objects = FakeObjects()
    assert settle(readers(), objects, keep=True) == [
        f"Kept gs://a-bucket/dicom-bq/filters/f.txt (--keep-filter); remove it with: {REMOVE}"
    ]
    assert objects.deleted == []


def test_a_file_an_export_may_still_read_is_kept_with_the_reason() -> None:
    objects = FakeObjects()
    running = readers(answered=1)
    running.started("op-1")
    assert settle(running, objects) == [
        "Kept gs://a-bucket/dicom-bq/filters/f.txt: operation op-1 may still read it; once it "
        f"has ended (dicom-bq operations wait op-1), remove it with: {REMOVE}"
    ]
    assert settle(running, objects, keep=True)[0].startswith(
        "Kept gs://a-bucket/dicom-bq/filters/f.txt: operation op-1 may still read it"
    )
    assert objects.deleted == []


def test_an_interruption_keeps_the_file() -> None:
    objects = FakeObjects()
    assert settle(readers(), objects, interrupted=True) == [
        "Kept gs://a-bucket/dicom-bq/filters/f.txt: interrupted; once no export of the dataset "
        f"is running ({LISTING}), remove it with: {REMOVE}"
    ]
    assert objects.deleted == []
    running = readers(answered=1)
    running.started("op-1")
    assert "operation op-1 may still read it" in settle(running, objects, interrupted=True)[0]


def test_a_file_replaced_by_another_writer_is_left_in_place() -> None:
    replaced = GenerationMismatchError(STORED.uri, 17, "deleting")
    assert settle(readers(), FakeObjects(delete_answer=replaced)) == [
        "Warning: left gs://a-bucket/dicom-bq/filters/f.txt in place: another writer replaced "
        "it after the upload (generation 17 is not the live one any more)"
    ]


def test_a_failed_delete_is_a_warning_with_the_command() -> None:
    failed = DicomBqError("403 forbidden")
    assert settle(readers(), FakeObjects(delete_answer=failed)) == [
        "Warning: could not delete gs://a-bucket/dicom-bq/filters/f.txt (403 forbidden); "
        f"remove it with: {REMOVE}"
    ]


def test_a_file_gone_already_is_said_so() -> None:
    assert settle(readers(), FakeObjects(delete_answer=False)) == [
        "gs://a-bucket/dicom-bq/filters/f.txt generation 17 was gone already (deleted, or "
        "replaced by another writer): nothing deleted"
    ]


# -- run_export: the order of the decisions ---------------------------------------------------


@dataclass
class Recorder:
    """What run_export asked of the export flow's parts, in order."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    fail_with: BaseException | None = None
    exporters: list[Any] = field(default_factory=list)


def wire(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, recorder: Recorder, rows: int = 0
) -> None:
    """run_export's collaborators replaced by recorders: no request leaves the test."""
    from dicom_bq.clients import bigquery

    class Requests:
        def __init__(self, connection: Any, api_version: str) -> None:
            recorder.calls.append(("requests", (connection.universe_domain, api_version)))
            self.answered = 1
            self.unknown = 0

    class FakeExporter:
        def __init__(self, api: Any, *, permission_window: float, agent_email: str | None):
            self.api = api
            recorder.calls.append(("exporter", (permission_window, agent_email)))
            recorder.exporters.append(self)

        def check_concurrent(self, plan: Any, on_notice: Any) -> None:
            recorder.calls.append(("check_concurrent", plan))
            on_notice("concurrent checked")

        def start(self, plan: Any, on_wait: Any) -> str:
            recorder.calls.append(("start", plan))
            on_wait("refused, waiting", 2.0)
            if recorder.fail_with is not None:
                raise recorder.fail_with
            return "op-1"

        def run(self, plan: Any, follower: Any, timeout: Any, **hooks: Any) -> OperationState:
            recorder.calls.append(("run", (plan, timeout, follower.source is self.api)))
            if recorder.fail_with is not None:
                raise recorder.fail_with
            hooks["on_start"]("op-2")
            state = OperationState.from_api({"name": "op-2", "done": True})
            hooks["on_update"](state, 1.0)
            return state

    class Tables:
        def __init__(self, connection: Any, project: str) -> None:
            recorder.calls.append(("tables", project))

        def row_count(self, table: TableUri) -> int:
            recorder.calls.append(("count", table.uri))
            return rows

    def upload(*, path: Path, bucket: str, connection: Any, observer: Any) -> StoredObject:
        recorder.calls.append(("upload", (path, bucket)))
        return StoredObject(GcsUri(bucket, "dicom-bq/filters/x.txt"), 10, 4)

    def settle(**kwargs: Any) -> None:
        recorder.calls.append(("settle", (kwargs["interrupted"], kwargs["keep"])))

    monkeypatch.setattr(export_module, "ExportRequests", Requests)
    monkeypatch.setattr(export_module, "Exporter", FakeExporter)
    monkeypatch.setattr(export_module, "upload_filter", upload)
    monkeypatch.setattr(export_module, "settle_filter", settle)
    monkeypatch.setattr(export_module, "StorageObjects", lambda connection, bucket: None)
    monkeypatch.setattr(bigquery, "BigQueryTables", Tables)


class StackTarget:
    def __init__(self, **settings: Any) -> None:
        self.stack = "prod"
        self._settings = SimpleNamespace(
            **{"universe_domain": "googleapis.com", "filter_bucket": None, "agent_member": None}
            | settings
        )

    def settings(self) -> Any:
        return self._settings


PLAN_APPEND = export_module.ExportPlan(
    STORE, TABLE, write_disposition=WriteDisposition.WRITE_APPEND
)


def run(target: Any = None, plan: Any = PLAN_APPEND, **overrides: Any) -> Any:
    from dicom_bq.flows.access import GoogleAccess
    from dicom_bq.flows.targets import Target

    arguments: dict[str, Any] = {
        "plan": plan,
        "access": GoogleAccess(),
        "api_version": "v1",
        "target": target or Target(),
        "local_filter": None,
        "keep_filter": False,
        "agent_email": None,
        "permission_window": 60.0,
        "wait": True,
        "timeout": 30.0,
        "truncate_confirmed": False,
        "confirm_truncate": lambda risk: None,
        "allow_concurrent": False,
        "observer": Observer(),
    } | overrides
    return export_module.run_export(**arguments)


def test_an_export_is_checked_then_run_and_followed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    recorder = Recorder()
    wire(monkeypatch, tmp_path, recorder)
    observer = Observer()
    result = run(observer=observer)
    assert result.operation == "op-2"
    assert result.state is not None
    assert result.state.done
    assert [name for name, _ in recorder.calls] == [
        "requests", "exporter", "check_concurrent", "run",
    ]  # fmt: skip
    assert recorder.calls[0][1] == ("googleapis.com", "v1")
    assert recorder.calls[1][1] == (60.0, None)
    assert recorder.calls[3][1] == (PLAN_APPEND, 30.0, True)
    assert observer.notices == ["concurrent checked"]
    assert observer.starts == ["op-2"]
    assert observer.updates == [(result.state, 1.0)]


def test_no_wait_starts_and_returns_the_operation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    recorder = Recorder()
    wire(monkeypatch, tmp_path, recorder)
    observer = Observer()
    result = run(wait=False, observer=observer)
    assert result == export_module.ExportResult(operation="op-1", state=None)
    assert observer.waits == [("refused, waiting", 2.0)]
    assert ("start", PLAN_APPEND) in recorder.calls


def test_allow_concurrent_skips_the_check(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    recorder = Recorder()
    wire(monkeypatch, tmp_path, recorder)
    run(allow_concurrent=True)
    assert "check_concurrent" not in [name for name, _ in recorder.calls]


def test_the_stack_names_the_agent_and_the_universe(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    recorder = Recorder()
    wire(monkeypatch, tmp_path, recorder)
    target = StackTarget(universe_domain="example.goog", agent_member="serviceAccount:agent@x.goog")
    run(target=target)
    assert recorder.calls[0][1] == ("example.goog", "v1")
    assert recorder.calls[1][1] == (60.0, "agent@x.goog")
    recorder.calls.clear()
    run(target=target, agent_email="given@x.goog")
    assert recorder.calls[1][1] == (60.0, "given@x.goog")
    recorder.calls.clear()
    run(target=StackTarget())
    assert recorder.calls[1][1] == (60.0, None)


def test_a_truncate_counts_the_tables_rows_and_asks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    recorder = Recorder()
    wire(monkeypatch, tmp_path, recorder, rows=5)
    asked: list[TruncateRisk] = []
    truncate = export_module.ExportPlan(STORE, TABLE, force=True)
    run(plan=truncate, confirm_truncate=asked.append)
    assert asked == [TruncateRisk(TABLE, 5)]
    assert ("tables", "dicom-src-test") in recorder.calls
    names = [name for name, _ in recorder.calls]
    assert names.index("count") < names.index("run")
    asked.clear()
    run(plan=truncate, confirm_truncate=asked.append, truncate_confirmed=True)
    assert asked == []
    recorder.calls.clear()
    run(confirm_truncate=asked.append)  # an append truncates nothing
    assert "count" not in [name for name, _ in recorder.calls]


def test_keep_filter_needs_a_filter_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    recorder = Recorder()
    wire(monkeypatch, tmp_path, recorder)
    with pytest.raises(DicomBqError) as caught:
        run(keep_filter=True)
    assert caught.value.message == "--keep-filter goes with --filter-file"
    assert recorder.calls == []


FILTER_LINE = "/studies/1.2.3\n"


def filter_file(tmp_path: Path) -> Path:
    path = tmp_path / "filter.txt"
    path.write_text(FILTER_LINE, encoding="utf-8")
    return path


def test_a_filter_and_a_filter_file_are_refused_together(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    recorder = Recorder()
    wire(monkeypatch, tmp_path, recorder)
    filtered = export_module.ExportPlan(STORE, TABLE, filter=GcsUri("b-bucket", "f.txt"))
    local = export_module.LocalFilter(filter_file(tmp_path), "a-bucket")
    with pytest.raises(DicomBqError) as caught:
        run(plan=filtered, local_filter=local)
    assert caught.value.message == "give --filter gs://... or --filter-file FILE, not both"
    assert "upload" not in [name for name, _ in recorder.calls]


def test_a_filter_file_is_validated_uploaded_exported_with_and_settled(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    recorder = Recorder()
    wire(monkeypatch, tmp_path, recorder)
    path = filter_file(tmp_path)
    run(
        target=StackTarget(filter_bucket="stack-bucket"),
        local_filter=export_module.LocalFilter(path),
        keep_filter=True,
    )
    names = [name for name, _ in recorder.calls]
    assert names == ["requests", "exporter", "check_concurrent", "upload", "run", "settle"]
    assert recorder.calls[3][1] == (path, "stack-bucket")
    (plan, _, _) = recorder.calls[4][1]
    assert plan.filter == GcsUri("stack-bucket", "dicom-bq/filters/x.txt")
    assert recorder.calls[5][1] == (False, True)


def test_an_invalid_filter_file_is_refused_before_anything_is_sent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    recorder = Recorder()
    wire(monkeypatch, tmp_path, recorder)
    bad = tmp_path / "bad.txt"
    bad.write_text("not a path\n", encoding="utf-8")
    with pytest.raises(DicomBqError):
        run(local_filter=export_module.LocalFilter(bad, "a-bucket"))
    assert recorder.calls == []


@pytest.mark.parametrize(
    ("failure", "interrupted"), [(KeyboardInterrupt(), True), (DicomBqError("refused"), False)]
)
def test_a_failed_or_interrupted_export_still_settles_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, failure: BaseException, interrupted: bool
) -> None:
    recorder = Recorder(fail_with=failure)
    wire(monkeypatch, tmp_path, recorder)
    with pytest.raises(type(failure)):
        run(local_filter=export_module.LocalFilter(filter_file(tmp_path), "a-bucket"))
    assert recorder.calls[-1] == ("settle", (interrupted, False))
    assert [name for name, _ in recorder.calls].count("settle") == 1


def test_the_upload_stamp_is_utc_whatever_the_local_zone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import datetime
    import time

    objects = FakeObjects()
    monkeypatch.setattr(export_module, "StorageObjects", objects)
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14: never the same hour as UTC
    time.tzset()
    try:
        before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        upload_filter(
            path=tmp_path / "f.txt", bucket="a-bucket", connection=None, observer=Observer()
        )  # type: ignore[arg-type]
        after = datetime.datetime.now(datetime.UTC)
    finally:
        monkeypatch.undo()
        time.tzset()
    stamp = objects.uploads[0][1].name.removeprefix("dicom-bq/filters/")[:16]
    written = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    assert before <= written <= after


def test_requests_are_counted_across_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lost answer, then an answered resend, then another answered export: each counted."""
    from dicom_bq.clients.endpoints import Connection
    from dicom_bq.clients.healthcare import HealthcareApi

    outcomes: list[Any] = [ExportAnswerLostError("reset"), {"name": "op-1"}, {"name": "op-2"}]

    def export_once(self: Any, request: Any) -> dict[str, Any]:
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return dict(outcome)

    monkeypatch.setattr(HealthcareApi, "export_once", export_once)
    api = ExportRequests(
        Connection(environ={"HEALTHCARE_EMULATOR_HOST": "http://127.0.0.1:9"}), "v1"
    )
    with pytest.raises(ExportAnswerLostError):
        api.export_once(None)  # type: ignore[arg-type]
    api.export_once(None)  # type: ignore[arg-type]
    api.export_once(None)  # type: ignore[arg-type]
    assert (api.answered, api.unknown) == (2, 1)


def test_a_lost_answer_beside_an_answered_export_may_still_read_the_file() -> None:
    # The first request's answer was lost and nothing was found; the resend was answered and
    # its export ended: the first may have started an export nobody follows.
    resent = readers(answered=1, unknown=1)
    resent.started("op-2")
    resent.seen(done(True))
    assert resent.still_reading() == (
        "an export request was sent and its answer never came, so an export dicom-bq does not "
        f"know may read it; once no export of the dataset is running ({LISTING})"
    )


def test_a_filter_file_with_only_warnings_is_exported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Google reads a UID with a leading zero; export warns only (strict is `filter check`'s)."""
    recorder = Recorder()
    wire(monkeypatch, tmp_path, recorder)
    path = tmp_path / "warned.txt"
    path.write_text("/studies/1.02.3\n", encoding="utf-8")
    run(local_filter=export_module.LocalFilter(path, "a-bucket"))
    assert ("upload", (path, "a-bucket")) in recorder.calls
