"""flows/verify.py's Verifier held to its contract directly, against in-memory Healthcare,
BigQuery and Cloud Storage stand-ins (issue 19, mutation testing): what each step makes, records
and says, what the cleanup deletes or leaves with the command that finishes it, and the exit code
a run ends with. tests/test_verify.py and tests/test_verify_interrupts.py run the command against
the loopback fakes and Orthanc."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from dicom_bq.clients.discovery import ApiCallError
from dicom_bq.clients.operations import OperationState
from dicom_bq.clients.storage import StoredObject
from dicom_bq.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    DicomBqError,
)
from dicom_bq.flows import verify as verify_module
from dicom_bq.flows.exporter import ExportPlan
from dicom_bq.flows.seed import SyntheticInstance
from dicom_bq.flows.verify import (
    CLEANUP_INTERRUPTED,
    StepResult,
    Verifier,
    VerifyOptions,
    VerifyReport,
    check_verify_options,
    delete_store_command,
    merged_report,
    notification_topics,
    stream_tables,
)
from dicom_bq.refs import GcsUri, StoreName, TableUri, WriteDisposition
from dicom_bq.stack.outputs import VerifyTarget
from tests.fakes.clock import VirtualClock

DATASET = "projects/dicom-src-test/locations/us-central1/datasets/imaging"
STORE = StoreName.parse(f"{DATASET}/dicomStores/dicom")
OWN_TABLE = TableUri.parse("bq://dicom-src-test.dicom_metadata.dicom_bq_verification")
USER_TABLE = TableUri.parse("bq://dicom-src-test.dicom_metadata.mine")
AGENT = "service-1@gcp-sa-healthcare.iam.gserviceaccount.com"
INSTANCE = SyntheticInstance("1.2.3", "1.2.3.4", "1.2.3.4.5", "DICOM-BQ-VERIFY", b"DICM" * 4)
ROW = {
    "StudyInstanceUID": "1.2.3",
    "SeriesInstanceUID": "1.2.3.4",
    "SOPInstanceUID": "1.2.3.4.5",
    "PatientID": "DICOM-BQ-VERIFY",
}
NOW = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)
FILTER = GcsUri("filter-bucket", "dicom-bq/verify/1.2.3.4.5.txt")
DELETE_STORE = (
    "gcloud healthcare dicom-stores delete {store} --dataset=imaging --location=us-central1 "
    "--project=dicom-src-test"
)


def not_found(what: str = "not found") -> ApiCallError:
    return ApiCallError(404, "NOT_FOUND", what)


@dataclass
class FakeHealthcare:
    stores: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {STORE.name: {"name": STORE.name}}
    )
    metrics: dict[str, Any] = field(
        default_factory=lambda: {"instanceCount": "3", "seriesCount": "2", "studyCount": "1"}
    )
    create_errors: list[BaseException] = field(default_factory=list)
    create_makes: bool = True  # a create that fails after Google made the store
    stow_error: BaseException | None = None
    delete_errors: list[BaseException] = field(default_factory=list)
    delete_instance_error: BaseException | None = None
    get_errors: list[BaseException] = field(default_factory=list)
    created: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    stowed: list[tuple[str, bytes]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    deleted_instances: list[tuple[str, str, str, str]] = field(default_factory=list)

    def get_store(self, name: str) -> dict[str, Any]:
        if self.get_errors:
            raise self.get_errors.pop(0)
        if name not in self.stores:
            raise not_found(f"{name} not found")
        return self.stores[name]

    def store_metrics(self, name: str) -> dict[str, Any]:
        return self.metrics

    def create_store(self, dataset: str, store_id: str, labels: dict[str, str]) -> None:
        self.created.append((dataset, store_id, labels))
        if self.create_errors:
            if self.create_makes:
                self.stores[f"{dataset}/dicomStores/{store_id}"] = {}
            raise self.create_errors.pop(0)
        self.stores[f"{dataset}/dicomStores/{store_id}"] = {}

    def store_instance(self, store: str, data: bytes) -> None:
        self.stowed.append((store, data))
        if self.stow_error is not None:
            raise self.stow_error

    def delete_store(self, name: str) -> None:
        if self.delete_errors:
            raise self.delete_errors.pop(0)
        if name not in self.stores:
            raise not_found()
        del self.stores[name]
        self.deleted.append(name)

    def delete_instance(self, store: str, study: str, series: str, sop: str) -> None:
        if self.delete_instance_error is not None:
            raise self.delete_instance_error
        self.deleted_instances.append((store, study, series, sop))

    def dicomweb_url(self, store: str) -> str:
        return f"https://healthcare.example/v1/{store}/dicomWeb"


@dataclass
class FakeRows:
    rows: list[dict[str, Any]] = field(default_factory=lambda: [dict(ROW)])
    counts: dict[str, int | None] = field(default_factory=dict)
    access: dict[str, list[dict[str, Any]] | None] = field(default_factory=dict)
    create_error: DicomBqError | None = None
    delete_answer: Any = True
    created: list[tuple[TableUri, datetime.datetime]] = field(default_factory=list)
    deleted: list[TableUri] = field(default_factory=list)

    def row_count(self, table: Any) -> int | None:
        return self.counts.get(table.table_id)

    def create_table(self, table: TableUri, expires: datetime.datetime) -> None:
        self.created.append((table, expires))
        if self.create_error is not None:
            raise self.create_error

    def delete_table(self, table: TableUri) -> bool:
        self.deleted.append(table)
        if isinstance(self.delete_answer, BaseException):
            raise self.delete_answer
        return bool(self.delete_answer)

    def instance_rows(self, table: Any, sop_instance_uid: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("SOPInstanceUID") == sop_instance_uid]

    def dataset_access(self, project: str, dataset: str) -> list[dict[str, Any]] | None:
        return self.access.get(f"{project}:{dataset}")


@dataclass
class FakeFilters:
    uploads: list[tuple[GcsUri, str]] = field(default_factory=list)
    deleted: list[Any] = field(default_factory=list)
    delete_error: DicomBqError | None = None

    def upload_text(self, target: GcsUri, text: str) -> StoredObject:
        self.uploads.append((target, text))
        return StoredObject(target, len(text), generation=7)

    def delete(self, target: GcsUri) -> None:
        if self.delete_error is not None:
            raise self.delete_error
        self.deleted.append(target)

    def delete_written(self, stored: StoredObject) -> bool:
        if self.delete_error is not None:
            raise self.delete_error
        self.deleted.append(stored)
        return True


def op(name: str = "op-1", **fields: Any) -> OperationState:
    return OperationState.from_api({"name": name, "done": True, **fields})


DONE = op(metadata={"counter": {"success": "1"}})


@dataclass
class FakeExporter:
    states: list[Any] = field(default_factory=lambda: [DONE])
    plans: list[ExportPlan] = field(default_factory=list)
    timeouts: list[float | None] = field(default_factory=list)
    clock: VirtualClock | None = None
    takes: float = 0.0

    def run(self, plan: ExportPlan, follower: Any, timeout: float | None, **hooks: Any) -> Any:
        self.plans.append(plan)
        self.timeouts.append(timeout)
        if self.clock is not None:
            self.clock.sleep(self.takes)
        if hooks["on_wait"] is not None:
            hooks["on_wait"]("PERMISSION_DENIED for the agent", 10.0)
        state = self.states.pop(0)
        hooks["on_start"](state.name if isinstance(state, OperationState) else "op-x")
        if isinstance(state, BaseException):
            raise state
        if hooks["on_update"] is not None:
            hooks["on_update"](state, 3.0)
        return state


@dataclass
class World:
    api: FakeHealthcare = field(default_factory=FakeHealthcare)
    rows: FakeRows = field(default_factory=FakeRows)
    filters: FakeFilters | None = field(default_factory=FakeFilters)
    exporter: FakeExporter = field(default_factory=FakeExporter)
    notices: list[str] = field(default_factory=list)
    steps: list[StepResult] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    waits: list[tuple[str, float]] = field(default_factory=list)
    updates: list[tuple[OperationState, float]] = field(default_factory=list)
    confirm: Any = None
    clock: VirtualClock = field(default_factory=VirtualClock)

    def verifier(self) -> Verifier:
        return Verifier(
            api=self.api,  # type: ignore[arg-type]
            rows=self.rows,
            filters=self.filters,
            exporter=self.exporter,  # type: ignore[arg-type]
            follower=None,  # type: ignore[arg-type]
            clock=self.clock,
            on_step=self.steps.append,
            on_start=self.started.append,
            on_notice=self.notices.append,
            on_wait=lambda why, delay: self.waits.append((why, delay)),
            on_update=lambda state, elapsed: self.updates.append((state, elapsed)),
            confirm_truncate=self.confirm,
            now=lambda: NOW,
        )

    def run(
        self, target: VerifyTarget | None = None, options: VerifyOptions | None = None
    ) -> VerifyReport:
        return self.verifier().run(target or TARGET, options)


TARGET = VerifyTarget(STORE, OWN_TABLE, "filter-bucket", AGENT)


@pytest.fixture(autouse=True)
def _fixed_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify_module, "synthetic_instance", lambda: INSTANCE)


def step(report: VerifyReport, name: str) -> StepResult:
    (found,) = [s for s in report.steps if s.name == name]
    return found


def temporary_of(world: World) -> str:
    ((dataset, store_id, _),) = world.api.created
    return f"{dataset}/dicomStores/{store_id}"


# -- the proof with a temporary store -----------------------------------------------------------


def test_a_temporary_store_is_seeded_filtered_exported_found_and_deleted() -> None:
    world = World()
    report = world.run()
    assert report.ok
    assert report.exit_code == EXIT_OK
    assert [s.name for s in report.steps] == [
        "store", "temp-store", "seed", "filter", "export", "query", "cleanup",
    ]  # fmt: skip
    assert world.steps == report.steps
    ((dataset, store_id, labels),) = world.api.created
    assert dataset == DATASET
    assert re.fullmatch(r"dicom-bq-verify-[0-9a-f]{12}", store_id)
    assert labels == {"dicom-bq": "verification"}
    temporary = temporary_of(world)
    assert world.api.stowed == [(temporary, INSTANCE.data)]
    assert world.filters is not None
    assert world.filters.uploads == [(FILTER, INSTANCE.filter_line + "\n")]
    (plan,) = world.exporter.plans
    assert plan == ExportPlan(
        StoreName.parse(temporary),
        OWN_TABLE,
        write_disposition=WriteDisposition.WRITE_TRUNCATE,
        filter=FILTER,
    )
    assert world.started == ["op-1"]
    assert world.waits == [("PERMISSION_DENIED for the agent", 10.0)]
    assert world.updates == [(DONE, 3.0)]
    assert report.operation == DONE
    assert world.api.deleted == [temporary]
    assert world.filters.deleted == [StoredObject(FILTER, len(INSTANCE.filter_line) + 1, 7)]
    assert step(report, "store").detail == f"{STORE.name}: 3 instances, 2 series, 1 study"
    assert step(report, "temp-store").detail == (
        f"created {temporary} (same dataset, agent, location and CMEK)"
    )
    assert step(report, "seed").detail == (
        f"stored synthetic instance 1.2.3.4.5 (16 bytes) in {temporary.rsplit('/', 1)[1]}"
    )
    assert step(report, "filter").detail == f"wrote {FILTER.uri}"
    assert step(report, "export").detail == (
        f"op-1: 1 exported, 0 failed into {OWN_TABLE.uri} (filter {FILTER.uri})"
    )
    assert step(report, "query").detail == (
        "found the row of 1.2.3.4.5: study, series, instance, patient IDs match"
    )
    assert step(report, "cleanup").detail == (
        f"deleted temporary store {temporary}; deleted {FILTER.uri}"
    )
    assert all(s.ok for s in report.steps)


def test_without_a_filter_bucket_the_whole_temporary_store_is_exported() -> None:
    world = World(filters=None)
    report = world.run(VerifyTarget(STORE, OWN_TABLE, "filter-bucket", AGENT))
    assert "filter" not in [s.name for s in report.steps]
    assert world.exporter.plans[0].filter is None
    assert step(report, "export").detail.endswith(
        "(no filter (no filter bucket): the whole temporary store, which holds only the "
        "synthetic instance)"
    )
    world = World()
    report = world.run(VerifyTarget(STORE, OWN_TABLE, None, AGENT))
    assert world.filters is not None
    assert world.filters.uploads == []
    assert "filter" not in [s.name for s in report.steps]


def test_the_export_gets_the_timeout() -> None:
    world = World()
    world.run(options=VerifyOptions(timeout=42.0))
    assert world.exporter.timeouts == [42.0]


def test_keep_keeps_what_was_made_and_says_so() -> None:
    world = World()
    report = world.run(options=VerifyOptions(keep=True))
    temporary = temporary_of(world)
    assert world.api.deleted == []
    assert world.filters is not None
    assert world.filters.deleted == []
    keep = step(report, "keep")
    assert keep.ok
    assert keep.detail == f"kept temporary store {temporary}; kept {FILTER.uri}"
    assert "cleanup" not in [s.name for s in report.steps]


# -- the real store --------------------------------------------------------------------------------


def test_an_unreadable_store_fails_the_first_step_and_makes_nothing() -> None:
    world = World()
    world.api.get_errors = [ApiCallError(403, "PERMISSION_DENIED", "no get")]
    report = world.run()
    assert report.exit_code == EXIT_FAILED
    assert [s.name for s in report.steps] == ["store"]
    assert step(report, "store").ok is False
    assert step(report, "store").detail == (
        f"cannot read DICOM store {STORE.name}: 403 PERMISSION_DENIED no get"
    )
    assert world.api.created == []


def streaming(world: World, *tables: str, topics: tuple[str, ...] = ()) -> None:
    store = world.api.stores[STORE.name]
    store["streamConfigs"] = [{"bigqueryDestination": {"tableUri": t}} for t in tables]
    if topics:
        store["notificationConfigs"] = [{"pubsubTopic": t} for t in topics]


def test_streams_and_topics_are_read_from_the_store() -> None:
    store = {
        "streamConfigs": [
            {"bigqueryDestination": {"tableUri": "bq://p-one.d.t"}},
            {"bigqueryDestination": {}},
            {},
        ],
        "notificationConfig": {"pubsubTopic": "projects/p/topics/a"},
        "notificationConfigs": [{"pubsubTopic": "projects/p/topics/b"}, {}],
    }
    assert stream_tables(store) == ["bq://p-one.d.t"]
    assert notification_topics(store) == ["projects/p/topics/a", "projects/p/topics/b"]
    assert stream_tables({}) == []
    assert notification_topics({}) == []


def test_a_stream_the_agent_may_write_is_described() -> None:
    world = World()
    streaming(world, "bq://dicom-src-test.streams.live", topics=("projects/p/topics/t",))
    world.rows.access["dicom-src-test:streams"] = [
        {"role": "WRITER", "userByEmail": AGENT.upper()},
        {"role": "roles/bigquery.dataOwner", "iamMember": f"serviceAccount:{AGENT}"},
        {"role": "READER", "userByEmail": AGENT},
        {"role": "OWNER", "userByEmail": "someone@example.com"},
    ]
    world.rows.counts["dicom-src-test.streams.live"] = 5
    report = world.run()
    assert step(report, "store").detail == (
        f"{STORE.name}: 3 instances, 2 series, 1 study; stream "
        f"bq://dicom-src-test.streams.live: 5 rows, {AGENT} may write (WRITER, "
        "roles/bigquery.dataOwner); notifies projects/p/topics/t"
    )
    assert report.ok


def test_a_stream_table_not_created_yet_and_an_unknown_agent_are_said() -> None:
    world = World()
    streaming(world, "bq://dicom-src-test.streams.live")
    world.rows.access["dicom-src-test:streams"] = []
    report = world.run(VerifyTarget(STORE, OWN_TABLE, None, None))
    assert step(report, "store").detail.endswith(
        "; stream bq://dicom-src-test.streams.live: not created yet (Google creates it); the "
        "agent is unknown here (give --stack or --outputs)"
    )


def test_a_stream_into_a_missing_dataset_fails() -> None:
    world = World()
    streaming(world, "bq://dicom-src-test.streams.live")
    report = world.run()
    assert report.exit_code == EXIT_FAILED
    assert step(report, "store").detail == (
        "the store streams to bq://dicom-src-test.streams.live, whose dataset "
        "dicom-src-test:streams does not exist: streaming fails until it does (run `pulumi up` "
        "on the stack)"
    )
    assert world.api.created == []


def test_a_stream_the_agent_cannot_write_fails() -> None:
    world = World()
    streaming(world, "bq://dicom-src-test.streams.live")
    world.rows.access["dicom-src-test:streams"] = [
        {"role": "READER", "userByEmail": AGENT},
        {"role": "WRITER", "userByEmail": "other@example.com"},
    ]
    report = world.run()
    assert report.exit_code == EXIT_FAILED
    assert step(report, "store").detail == (
        f"the store streams to bq://dicom-src-test.streams.live, but {AGENT} has no writer role "
        "in the dataset's access list (a project-level grant would not show here: `dicom-bq "
        "audit` checks both): the stream's rows are not written"
    )


@pytest.mark.parametrize(
    ("stream", "why"),
    [
        (
            "bq://dicom-src-test.dicom_metadata.DICOM_BQ_VERIFICATION",
            "the table verify exports into (WRITE_TRUNCATE) and so would empty",
        ),
        (
            "bq://dicom-src-test.elsewhere.Dicom_Bq_Verification",
            "named dicom_bq_verification, the name of verify's own table, which verify "
            "truncates without asking",
        ),
    ],
)
def test_a_store_streaming_into_what_verify_truncates_is_refused(stream: str, why: str) -> None:
    world = World()
    streaming(world, stream)
    report = world.run()
    assert report.exit_code == EXIT_BAD_INPUT
    assert step(report, "store").detail == (
        f"{STORE.name} streams into {TableUri.parse(stream).uri}, {why}: its streamed rows "
        "would be replaced by verify's. Stream into another table (the stack settings' stream "
        "table), or give verify another --table; nothing was created or exported"
    )
    assert world.api.created == []


def test_a_stream_into_the_users_table_is_refused_when_verify_writes_there() -> None:
    world = World(confirm=lambda table: None)
    streaming(world, "bq://dicom-src-test.dicom_metadata.MINE")
    report = world.run(VerifyTarget(STORE, USER_TABLE, None, AGENT))
    assert report.exit_code == EXIT_BAD_INPUT


# -- the verification table --------------------------------------------------------------------


def test_a_table_of_the_users_is_confirmed_before_anything_is_made() -> None:
    asked: list[TableUri] = []
    world = World(confirm=asked.append)
    report = world.run(VerifyTarget(STORE, USER_TABLE, None, AGENT))
    assert asked == [USER_TABLE]
    assert [s.name for s in report.steps][:3] == ["store", "table", "temp-store"]
    assert step(report, "table").detail == f"{USER_TABLE.uri} may be truncated"
    asked.clear()
    World(confirm=asked.append).run()
    assert asked == []  # the tool's own table: no question


def test_a_refused_truncate_makes_nothing() -> None:
    def refuse(table: TableUri) -> None:
        raise DicomBqError("pass --yes", exit_code=EXIT_BAD_INPUT)

    world = World(confirm=refuse)
    report = world.run(VerifyTarget(STORE, USER_TABLE, None, AGENT))
    assert report.exit_code == EXIT_BAD_INPUT
    assert step(report, "table").detail == "pass --yes"
    assert world.api.created == []
    assert "cleanup" not in [s.name for s in report.steps]


# -- the temporary store's create ----------------------------------------------------------------


def test_a_create_answered_409_is_the_runs_own_store() -> None:
    world = World()
    world.api.create_errors = [ApiCallError(409, "ALREADY_EXISTS", "exists")]
    report = world.run()
    assert report.ok
    assert world.api.deleted == [temporary_of(world)]


def test_a_refused_create_fails_and_leaves_nothing_to_delete() -> None:
    world = World()
    world.api.create_makes = False
    world.api.create_errors = [ApiCallError(403, "PERMISSION_DENIED", "no create")]
    report = world.run()
    temporary = temporary_of(world)
    assert report.exit_code == EXIT_FAILED
    assert step(report, "temp-store").detail == (
        f"cannot create temporary store {temporary}: 403 PERMISSION_DENIED no create (it needs "
        "healthcare.dicomStores.create; or verify the real store with --in-place)"
    )
    assert step(report, "cleanup").detail == (
        f"no temporary store to delete: Google refused to create {temporary}"
    )
    assert step(report, "cleanup").ok
    assert world.api.stowed == []


@pytest.mark.parametrize("status", [400, 499])
def test_every_4xx_create_is_a_refusal(status: int) -> None:
    world = World()
    world.api.create_makes = False
    world.api.create_errors = [ApiCallError(status, "R", "m")]
    report = world.run()
    assert step(report, "cleanup").detail.startswith("no temporary store to delete")


@pytest.mark.parametrize("makes", [True, False])
def test_a_create_without_an_answer_is_looked_for(makes: bool) -> None:
    world = World()
    world.api.create_makes = makes
    world.api.create_errors = [ApiCallError(500, "INTERNAL", "boom from upstream x")]
    report = world.run()
    temporary = temporary_of(world)
    assert report.exit_code == EXIT_FAILED
    assert step(report, "temp-store").detail == (
        f"the create of temporary store {temporary} got no answer that says what Google did "
        "(500 INTERNAL boom from upstream x): it may exist; the cleanup looks for it"
    )
    unknown = (
        f"the outcome of creating temporary store {temporary} was unknown (500 INTERNAL: boom)"
    )
    if makes:
        assert step(report, "cleanup").detail == (
            f"{unknown}; dicomStores.get found it; deleted temporary store {temporary}"
        )
        assert world.api.deleted == [temporary]
    else:
        assert step(report, "cleanup").detail == (
            f"{unknown}; dicomStores.get answered 404: it does not exist, nothing to delete"
        )
        assert world.api.deleted == []


def test_a_create_whose_outcome_cannot_be_read_is_deleted_anyway() -> None:
    world = World()
    world.api.create_errors = [ApiCallError(503, "UNAVAILABLE", "later")]
    api = world.api
    original = api.get_store
    calls: list[str] = []

    def get_store(name: str) -> dict[str, Any]:
        calls.append(name)
        if len(calls) == 2:  # the cleanup's look
            raise ApiCallError(500, "INTERNAL", "cannot tell")
        return original(name)

    api.get_store = get_store  # type: ignore[method-assign]
    report = world.run()
    temporary = temporary_of(world)
    assert step(report, "cleanup").detail == (
        f"the outcome of creating temporary store {temporary} was unknown (503 UNAVAILABLE: "
        f"later); dicomStores.get could not tell; deleted temporary store {temporary}"
    )


def test_an_unexpected_error_in_the_create_is_named_in_the_cleanup() -> None:
    world = World()
    world.api.create_makes = False
    world.api.create_errors = [RuntimeError("socket gone")]
    with pytest.raises(RuntimeError):
        world.run()
    # The cleanup ran and looked for the store.
    assert world.steps[-1].name == "cleanup"
    assert "was unknown (RuntimeError: socket gone)" in world.steps[-1].detail


def test_ctrl_c_during_the_create_is_said_in_the_cleanup() -> None:
    world = World()
    world.api.create_makes = False
    world.api.create_errors = [KeyboardInterrupt()]
    with pytest.raises(KeyboardInterrupt):
        world.run()
    names = [s.name for s in world.steps]
    assert names == ["store", "temp-store", "cleanup"]
    assert world.steps[1].detail == "interrupted (Ctrl-C)"
    assert world.steps[1].ok is False
    assert "was unknown (Ctrl-C came before its answer)" in world.steps[-1].detail


# -- seeding -------------------------------------------------------------------------------------


def test_a_refused_stow_fails_the_seed_step() -> None:
    world = World()
    world.api.stow_error = ApiCallError(400, "INVALID", "bad DICOM")
    report = world.run()
    assert report.exit_code == EXIT_FAILED
    assert step(report, "seed").detail == (
        "STOW-RS of the synthetic instance was refused: 400 INVALID bad DICOM"
    )
    assert world.api.deleted == [temporary_of(world)]


def test_in_place_seeds_the_real_store_and_deletes_the_instance() -> None:
    world = World(filters=None)
    report = world.run(options=VerifyOptions(in_place=True))
    assert report.ok
    assert world.api.created == []
    assert world.api.stowed == [(STORE.name, INSTANCE.data)]
    assert world.exporter.plans[0].store == STORE
    assert step(report, "export").detail.endswith(
        "(no filter (no filter bucket): the whole real store)"
    )
    assert world.api.deleted_instances == [(STORE.name, "1.2.3", "1.2.3.4", "1.2.3.4.5")]
    assert step(report, "cleanup").detail == "deleted synthetic instance 1.2.3.4.5"


def test_in_place_keep_keeps_the_instance() -> None:
    world = World(filters=None)
    report = world.run(options=VerifyOptions(in_place=True, keep=True))
    assert step(report, "keep").detail == f"kept synthetic instance 1.2.3.4.5 in {STORE.name}"
    assert world.api.deleted_instances == []


@pytest.mark.parametrize(
    ("status", "deleted"), [(400, False), (403, False), (409, True), (500, True)]
)
def test_in_place_a_refused_stow_leaves_no_instance_to_delete(status: int, deleted: bool) -> None:
    world = World(filters=None)
    world.api.stow_error = ApiCallError(status, "R", "m")
    report = world.run(options=VerifyOptions(in_place=True))
    if deleted:
        assert step(report, "cleanup").detail == "deleted synthetic instance 1.2.3.4.5"
    else:
        assert step(report, "cleanup").detail == (
            "no synthetic instance to delete: dicom refused its STOW-RS"
        )
        assert world.api.deleted_instances == []


def test_in_place_an_instance_gone_already_is_said() -> None:
    world = World(filters=None)
    world.api.delete_instance_error = not_found()
    report = world.run(options=VerifyOptions(in_place=True))
    assert report.ok
    assert step(report, "cleanup").detail == (
        "synthetic instance 1.2.3.4.5 is not in dicom (its DELETE answered 404)"
    )


def test_in_place_an_instance_that_cannot_be_deleted_gives_the_command() -> None:
    world = World(filters=None)
    world.api.delete_instance_error = ApiCallError(403, "PERMISSION_DENIED", "no delete")
    report = world.run(options=VerifyOptions(in_place=True))
    assert report.exit_code == EXIT_FAILED
    assert step(report, "cleanup").detail == (
        f"could not delete synthetic instance 1.2.3.4.5 from {STORE.name} (403 no delete): "
        'delete it with `curl -X DELETE -H "Authorization: Bearer $(gcloud auth '
        f'print-access-token)" https://healthcare.example/v1/{STORE.name}/dicomWeb/studies/'
        "1.2.3/series/1.2.3.4/instances/1.2.3.4.5`"
    )


def test_in_place_on_a_store_with_lasting_copies_is_refused() -> None:
    world = World(filters=None)
    streaming(world, "bq://dicom-src-test.streams.live", topics=("projects/p/topics/t",))
    world.rows.access["dicom-src-test:streams"] = [{"role": "WRITER", "userByEmail": AGENT}]
    report = world.run(options=VerifyOptions(in_place=True))
    assert report.exit_code == EXIT_BAD_INPUT
    assert step(report, "in-place").detail == (
        f"--in-place would store a synthetic instance in {STORE.name}, which streams or notifies "
        "to bq://dicom-src-test.streams.live, projects/p/topics/t: its row stays in those tables "
        "for good (Google does not apply deletions to stream tables) and subscribers receive it. "
        "Verify with a temporary store (drop --in-place), or add --accept-synthetic-in-streams "
        "to accept that"
    )
    assert world.api.stowed == []
    world = World(filters=None)
    streaming(world, topics=("projects/p/topics/t",))
    accepted = world.run(options=VerifyOptions(in_place=True, accept_stream_rows=True))
    assert accepted.ok
    assert world.api.stowed == [(STORE.name, INSTANCE.data)]


# -- the export's outcome ------------------------------------------------------------------------


def test_an_export_still_running_after_the_timeout_says_how_to_resume() -> None:
    world = World(exporter=FakeExporter([OperationState.from_api({"name": "op-9"})]))
    report = world.run()
    assert report.exit_code == EXIT_TIMEOUT
    assert step(report, "export").detail == (
        "operation op-9 still running after the timeout; resume with `dicom-bq operations wait "
        "op-9`"
    )
    assert report.operation is not None
    assert report.operation.name == "op-9"


def test_a_failed_export_names_its_error_and_logs() -> None:
    failed = op("op-2", error={"code": 3, "message": "bad"}, metadata={"logsUrl": "https://l"})
    report = World(exporter=FakeExporter([failed])).run()
    assert report.exit_code == EXIT_FAILED
    assert step(report, "export").detail == "operation op-2 FAILED: bad (logs: https://l)"
    partial = op("op-3", metadata={"counter": {"success": "1", "failure": "2"}})
    report = World(exporter=FakeExporter([partial])).run()
    assert step(report, "export").detail == (
        "operation op-3 DONE_WITH_FAILURES: 2 instances failed"
    )


def test_a_refused_export_still_cleans_up() -> None:
    world = World(exporter=FakeExporter([DicomBqError("refused", exit_code=EXIT_FAILED)]))
    report = world.run()
    assert report.exit_code == EXIT_FAILED
    assert step(report, "export").detail == "refused"
    assert world.api.deleted == [temporary_of(world)]


# -- the row -------------------------------------------------------------------------------------


def test_no_row_for_the_instance_fails() -> None:
    world = World()
    world.rows.rows = []
    report = world.run()
    assert report.exit_code == EXIT_FAILED
    assert step(report, "query").detail == (
        f"no row for SOPInstanceUID 1.2.3.4.5 in {OWN_TABLE.uri}"
    )


def test_a_row_that_does_not_match_names_each_difference() -> None:
    world = World()
    world.rows.rows = [{**ROW, "PatientID": "someone", "StudyInstanceUID": "9"}]
    report = world.run()
    assert report.exit_code == EXIT_FAILED
    assert step(report, "query").detail == (
        "the exported row does not match what was sent: StudyInstanceUID='9', sent '1.2.3'; "
        "PatientID='someone', sent 'DICOM-BQ-VERIFY'"
    )


# -- --no-seed -------------------------------------------------------------------------------------


def no_seed(world: World, **options: Any) -> VerifyReport:
    world.exporter.states = [op("op-5", metadata={"counter": {"success": "3"}})]
    return world.run(options=VerifyOptions(seed=False, **options))


def scratch_of(world: World) -> TableUri:
    ((table, _),) = world.rows.created
    return table


def test_no_seed_exports_the_store_into_an_expiring_scratch_table_and_deletes_it() -> None:
    world = World()
    world.rows.counts = {}
    world.rows.rows = []

    def count(table: Any) -> int | None:
        return 3

    world.rows.row_count = count  # type: ignore[method-assign]
    report = no_seed(world)
    scratch = scratch_of(world)
    assert report.ok, report.steps
    assert [s.name for s in report.steps] == [
        "store", "scratch-table", "export", "count", "cleanup",
    ]  # fmt: skip
    assert (scratch.project, scratch.dataset) == ("dicom-src-test", "dicom_metadata")
    assert re.fullmatch(r"dicom_bq_verify_[0-9a-f]{12}", scratch.table)
    (_, expires) = world.rows.created[0]
    assert expires == NOW + datetime.timedelta(hours=25)
    (plan,) = world.exporter.plans
    assert plan == ExportPlan(STORE, scratch, write_disposition=WriteDisposition.WRITE_EMPTY)
    assert step(report, "scratch-table").detail == (
        f"created {scratch.uri}, empty, expiring 2026-03-02 13:00 UTC (deleted at the end)"
    )
    assert step(report, "export").detail == (
        f"op-5: 3 exported, 0 failed into {scratch.uri} (no filter: --no-seed exports the whole "
        "store, to compare its instance count with the rows)"
    )
    assert step(report, "count").detail == "3 rows = 3 exported = 3 instances"
    assert world.rows.deleted == [scratch]
    assert step(report, "cleanup").detail == f"deleted scratch table {scratch.uri}"
    assert world.api.stowed == []
    assert world.api.created == []


def test_no_seed_expiration_covers_a_longer_timeout() -> None:
    world = World()
    no_seed(world, timeout=48 * 3600.0)
    (_, expires) = world.rows.created[0]
    assert expires == NOW + datetime.timedelta(hours=49)


@pytest.mark.parametrize(("rows", "success", "instances"), [(2, 3, 3), (3, 2, 3), (3, 3, 2)])
def test_no_seed_fails_when_any_count_disagrees(rows: int, success: int, instances: int) -> None:
    world = World()
    world.api.metrics = {"instanceCount": str(instances)}
    world.rows.row_count = lambda table: rows  # type: ignore[method-assign]
    world.exporter.states = [op("op-5", metadata={"counter": {"success": str(success)}})]
    report = world.run(options=VerifyOptions(seed=False))
    assert report.exit_code == EXIT_FAILED
    scratch = scratch_of(world)
    assert step(report, "count").detail == (
        f"{scratch.uri} has {rows} rows, the export reported {success} successes, the store "
        f"held {instances} instances before the export"
    )


def test_no_seed_refused_a_scratch_table_exports_nothing() -> None:
    world = World()
    world.rows.create_error = DicomBqError("403 denied")
    world.rows.delete_answer = False
    report = no_seed(world)
    scratch = scratch_of(world)
    assert report.exit_code == EXIT_FAILED
    assert step(report, "scratch-table").detail == (
        "cannot create the scratch table that --no-seed exports into: 403 denied. The account "
        "you run as needs bigquery.tables.create and bigquery.tables.delete on dataset "
        "dicom-src-test:dicom_metadata (roles/bigquery.dataEditor); nothing was exported"
    )
    assert world.exporter.plans == []
    assert step(report, "cleanup").detail == (
        f"no scratch table to delete: {scratch.uri} was not created (tables.delete 404)"
    )


def test_no_seed_scratch_gone_already_is_said() -> None:
    world = World()
    world.rows.delete_answer = False
    world.rows.row_count = lambda table: 3  # type: ignore[method-assign]
    report = no_seed(world)
    assert step(report, "cleanup").detail == (
        f"scratch table {scratch_of(world).uri} no longer exists (its DELETE answered 404)"
    )


def test_no_seed_scratch_that_cannot_be_deleted_gives_the_command_and_expiry() -> None:
    world = World()
    world.rows.delete_answer = DicomBqError("403 no delete")
    world.rows.row_count = lambda table: 3  # type: ignore[method-assign]
    report = no_seed(world)
    scratch = scratch_of(world)
    assert report.exit_code == EXIT_FAILED
    assert step(report, "cleanup").detail == (
        f"could not delete scratch table {scratch.uri} (403 no delete); it expires at "
        "2026-03-02 13:00 UTC: delete it with "
        f"`bq rm -f -t dicom-src-test:dicom_metadata.{scratch.table}`"
    )


def test_no_seed_keeps_the_scratch_table_while_its_export_runs() -> None:
    world = World()
    world.exporter.states = [OperationState.from_api({"name": "op-7"})]
    report = world.run(options=VerifyOptions(seed=False))
    scratch = scratch_of(world)
    assert report.exit_code == EXIT_TIMEOUT
    assert world.rows.deleted == []
    assert step(report, "cleanup").detail == (
        f"kept scratch table {scratch.uri}: export op-7 may still be running and would create it "
        "again, without an expiration, if it were deleted now; BigQuery deletes it at "
        "2026-03-02 13:00 UTC. To delete it sooner: `dicom-bq operations wait op-7`, then "
        f"`bq rm -f -t dicom-src-test:dicom_metadata.{scratch.table}`"
    )


def test_no_seed_keep_keeps_the_scratch_table_until_it_expires() -> None:
    world = World()
    report = no_seed(world, keep=True)
    assert world.rows.deleted == []
    assert step(report, "keep").detail == (
        f"kept scratch table {scratch_of(world).uri} (the store's metadata) until it expires at "
        "2026-03-02 13:00 UTC"
    )


def test_ctrl_c_twice_in_a_no_seed_cleanup_names_the_scratch_command() -> None:
    world = World()
    world.rows.row_count = lambda table: 3  # type: ignore[method-assign]
    world.rows.delete_answer = KeyboardInterrupt()
    verifier = world.verifier()
    world.exporter.states = [op("op-5", metadata={"counter": {"success": "3"}})]
    with pytest.raises(KeyboardInterrupt):
        verifier.run(TARGET, VerifyOptions(seed=False))
    report = verifier.report
    scratch = scratch_of(world)
    assert world.notices == [CLEANUP_INTERRUPTED]
    assert step(report, "cleanup").detail == (
        f"stopped by a second Ctrl-C; finish by hand: scratch table {scratch.uri} may remain "
        "until it expires at 2026-03-02 13:00 UTC: delete it with "
        f"`bq rm -f -t dicom-src-test:dicom_metadata.{scratch.table}`"
    )


# -- the cleanup -----------------------------------------------------------------------------------


def test_a_temporary_store_gone_already_is_said() -> None:
    world = World()
    world.api.delete_errors = [not_found()]
    report = world.run()
    assert report.ok
    assert step(report, "cleanup").detail.startswith(
        f"temporary store {temporary_of(world)} no longer exists (its DELETE answered 404)"
    )


def test_a_delete_that_failed_but_took_effect_is_checked_with_a_get() -> None:
    world = World()
    api = world.api

    def delete_store(name: str) -> None:
        del api.stores[name]  # Google deleted it; the answer was lost
        raise ApiCallError(500, "INTERNAL", "lost")

    api.delete_store = delete_store  # type: ignore[method-assign]
    report = world.run()
    assert step(report, "cleanup").detail.startswith(
        f"temporary store {temporary_of(world)} no longer exists (its DELETE answered 500, then "
        "dicomStores.get 404)"
    )
    assert report.ok


@pytest.mark.parametrize(
    ("get_error", "seen"),
    [(None, "dicomStores.get still finds it"), (500, "dicomStores.get cannot tell")],
)
def test_a_temporary_store_that_cannot_be_deleted_gives_the_command(
    get_error: int | None, seen: str
) -> None:
    world = World()
    world.api.delete_errors = [ApiCallError(403, "PERMISSION_DENIED", "no delete")]
    api = world.api
    original = api.get_store

    def get_store(name: str) -> dict[str, Any]:
        if get_error is not None and name != STORE.name:
            raise ApiCallError(get_error, "E", "x")
        return original(name)

    api.get_store = get_store  # type: ignore[method-assign]
    report = world.run()
    temporary = temporary_of(world)
    assert report.exit_code == EXIT_FAILED
    cleanup = step(report, "cleanup")
    assert cleanup.ok is False
    assert cleanup.detail == (
        f"deleted {FILTER.uri}; could not delete temporary store {temporary} (403 no delete; "
        f"{seen}): delete it with "
        f"`{DELETE_STORE.format(store=temporary.rsplit('/', 1)[1])}`"
    )


def test_a_cleanup_failure_after_a_failed_proof_keeps_the_proofs_exit_code() -> None:
    world = World(exporter=FakeExporter([OperationState.from_api({"name": "op-9"})]))
    world.api.delete_errors = [ApiCallError(403, "PERMISSION_DENIED", "no")] * 2
    report = world.run()
    assert report.exit_code == EXIT_TIMEOUT
    assert step(report, "cleanup").ok is False


def test_an_unexpected_error_in_one_cleanup_task_does_not_stop_the_others() -> None:
    world = World()
    world.api.delete_errors = [RuntimeError("socket gone")]
    report = world.run()
    temporary = temporary_of(world)
    assert report.exit_code == EXIT_FAILED
    assert step(report, "cleanup").detail == (
        f"deleted {FILTER.uri}; could not delete temporary store {temporary} (RuntimeError: "
        f"socket gone): temporary store {temporary} may remain: delete it with "
        f"`{DELETE_STORE.format(store=temporary.rsplit('/', 1)[1])}`"
    )


def test_a_filter_that_cannot_be_deleted_gives_the_command() -> None:
    world = World()
    assert world.filters is not None
    world.filters.delete_error = DicomBqError("403 no delete")
    report = world.run()
    assert report.exit_code == EXIT_FAILED
    assert step(report, "cleanup").detail == (
        f"deleted temporary store {temporary_of(world)}; could not delete {FILTER.uri} (403 no "
        f"delete): delete it with `gcloud storage rm {FILTER.uri}`"
    )


def test_one_ctrl_c_during_the_cleanup_finishes_it_then_goes_on_up() -> None:
    world = World()
    presses = [KeyboardInterrupt()]
    api = world.api
    original = api.delete_store

    def delete_store(name: str) -> None:
        if presses:
            raise presses.pop()
        original(name)

    api.delete_store = delete_store  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        world.run()
    assert world.notices == [CLEANUP_INTERRUPTED]
    assert world.api.deleted == [temporary_of(world)]
    assert world.steps[-1].name == "cleanup"
    assert world.steps[-1].ok


def test_two_ctrl_c_during_the_cleanup_stop_it_with_what_is_left() -> None:
    world = World()
    api = world.api

    def delete_store(name: str) -> None:
        raise KeyboardInterrupt

    api.delete_store = delete_store  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        world.run()
    temporary = temporary_of(world)
    cleanup = world.steps[-1]
    assert cleanup.ok is False
    command = DELETE_STORE.format(store=temporary.rsplit("/", 1)[1])
    # The tasks not done are named with their commands, the filter's included.
    assert cleanup.detail == (
        f"stopped by a second Ctrl-C; finish by hand: temporary store {temporary} may remain: "
        f"delete it with `{command}`; {FILTER.uri} may remain: delete it with `gcloud storage "
        f"rm {FILTER.uri}`"
    )
    assert world.filters is not None
    assert world.filters.deleted == []


# -- pieces -----------------------------------------------------------------------------------------


def test_options_that_contradict_each_other_are_refused() -> None:
    with pytest.raises(DicomBqError) as caught:
        check_verify_options(VerifyOptions(accept_stream_rows=True))
    assert caught.value.message.startswith("--accept-synthetic-in-streams goes with --in-place")
    with pytest.raises(DicomBqError) as caught:
        check_verify_options(VerifyOptions(seed=False, in_place=True))
    assert caught.value.message == "--no-seed stores nothing: drop --in-place"
    check_verify_options(VerifyOptions(in_place=True, accept_stream_rows=True))
    check_verify_options(VerifyOptions(seed=False))


def test_the_delete_store_command() -> None:
    assert delete_store_command(STORE) == DELETE_STORE.format(store="dicom")


def test_step_and_report_as_json() -> None:
    result = StepResult("export", True, 1.23456, "done")
    assert result.as_dict() == {"step": "export", "ok": True, "seconds": 1.235, "detail": "done"}
    report = VerifyReport(steps=[result], operation=DONE, exit_code=EXIT_TIMEOUT)
    assert report.ok is False
    assert report.as_dict() == {
        "ok": False,
        "exit_code": EXIT_TIMEOUT,
        "steps": [result.as_dict()],
        "operation": DONE.as_dict(),
    }
    assert VerifyReport().as_dict()["operation"] is None
    assert VerifyReport().ok is True


def test_a_merged_report_names_each_step_after_its_store() -> None:
    other = StoreName.parse(f"{DATASET}/dicomStores/other")
    targets = [VerifyTarget(STORE, OWN_TABLE), VerifyTarget(other, OWN_TABLE)]
    first = VerifyReport(steps=[StepResult("export", True, 1.0, "a")], operation=DONE)
    second = VerifyReport(
        steps=[StepResult("export", False, 2.0, "b")], operation=op("op-2"), exit_code=3
    )
    merged = merged_report(targets, [first, second])
    assert [(s.name, s.ok, s.seconds, s.detail) for s in merged.steps] == [
        ("dicom:export", True, 1.0, "a"),
        ("other:export", False, 2.0, "b"),
    ]
    assert merged.operation == op("op-2")
    assert merged.exit_code == 3
    assert merged_report(targets, [first, first]).exit_code == EXIT_OK


def test_stamps_are_utc_minutes() -> None:
    moment = datetime.datetime(
        2026, 3, 1, 14, 30, 59, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
    )
    assert verify_module._stamp(moment) == "2026-03-01 12:30 UTC"
    assert verify_module._stamp(None) == "unknown"


def test_a_filter_written_without_a_known_generation_is_deleted_by_name() -> None:
    filters = FakeFilters()
    said = verify_module._delete_filter(filters, FILTER, None)
    assert said == f"deleted {FILTER.uri}, if its write had got there"
    assert filters.deleted == [FILTER]
    unknown = StoredObject(FILTER, 1, None)
    assert verify_module._delete_filter(filters, FILTER, unknown).endswith("had got there")

    class Gone(FakeFilters):
        def delete_written(self, stored: StoredObject) -> bool:
            return False

    assert verify_module._delete_filter(Gone(), FILTER, StoredObject(FILTER, 1, 3)) == (
        f"{FILTER.uri} was already gone"
    )


def timed(world: World, takes: float = 5.0) -> World:
    world.clock.now = 100.0
    world.exporter.clock = world.clock
    world.exporter.takes = takes
    return world


def test_each_step_is_timed_on_the_clock() -> None:
    report = timed(World()).run()
    assert [(s.name, s.seconds) for s in report.steps] == [
        ("store", 0.0),
        ("temp-store", 0.0),
        ("seed", 0.0),
        ("filter", 0.0),
        ("export", 5.0),
        ("query", 0.0),
        ("cleanup", 0.0),
    ]


def test_a_failed_step_is_timed_too() -> None:
    failed = op("op-2", error={"code": 3, "message": "bad"})
    report = timed(World(exporter=FakeExporter([failed]))).run()
    assert step(report, "export").seconds == 5.0
    assert step(report, "export").ok is False


def test_ctrl_c_during_the_export_is_its_steps_end_then_the_cleanup_runs() -> None:
    world = timed(World(exporter=FakeExporter([KeyboardInterrupt()])))
    verifier = world.verifier()
    with pytest.raises(KeyboardInterrupt):
        verifier.run(TARGET)
    export = step(verifier.report, "export")
    assert (export.ok, export.seconds, export.detail) == (False, 5.0, "interrupted (Ctrl-C)")
    assert verifier.report.exit_code == EXIT_INTERRUPTED
    assert world.api.deleted == [temporary_of(world)]
    assert step(verifier.report, "cleanup").ok


def test_keep_after_a_create_without_an_answer_keeps_it_if_it_exists() -> None:
    world = World(filters=None)
    world.api.create_errors = [ApiCallError(500, "INTERNAL", "boom")]
    report = world.run(options=VerifyOptions(keep=True))
    assert step(report, "keep").detail == (
        f"kept temporary store {temporary_of(world)} if it exists (the outcome of its create "
        "was unknown: 500 INTERNAL: boom)"
    )
    assert report.exit_code == EXIT_FAILED


def test_keep_after_a_refused_create_keeps_nothing() -> None:
    world = World()
    world.api.create_makes = False
    world.api.create_errors = [ApiCallError(403, "PERMISSION_DENIED", "no")]
    report = world.run(options=VerifyOptions(keep=True))
    assert "keep" not in [s.name for s in report.steps]
    assert "cleanup" not in [s.name for s in report.steps]


def test_keep_after_a_refused_in_place_stow_keeps_nothing() -> None:
    world = World(filters=None)
    world.api.stow_error = ApiCallError(400, "INVALID", "bad")
    report = world.run(options=VerifyOptions(in_place=True, keep=True))
    assert "keep" not in [s.name for s in report.steps]


def test_keep_without_a_scratch_expiry_keeps_no_scratch_table() -> None:
    world = World()
    world.rows.create_error = DicomBqError("403 denied")
    report = world.run(options=VerifyOptions(seed=False, keep=True))
    assert "keep" not in [s.name for s in report.steps]


def test_an_export_into_the_scratch_table_seen_done_lets_the_cleanup_delete_it() -> None:
    world = World()
    world.rows.row_count = lambda table: 0  # type: ignore[method-assign]
    world.api.metrics = {"instanceCount": "0"}
    world.exporter.states = [op("op-5")]
    report = world.run(options=VerifyOptions(seed=False))
    assert report.ok
    assert world.rows.deleted == [scratch_of(world)]


def test_a_store_without_counts_holds_none() -> None:
    world = World()
    world.api.metrics = {}
    report = world.run()
    assert step(report, "store").detail == f"{STORE.name}: 0 instances, 0 series, 0 studies"


def test_no_seed_of_an_empty_store_into_a_table_never_written_agrees() -> None:
    world = World()
    world.rows.row_count = lambda table: None  # type: ignore[method-assign]
    world.api.metrics = {}
    world.exporter.states = [op("op-5")]
    report = world.run(options=VerifyOptions(seed=False))
    assert report.ok
    assert step(report, "count").detail == "0 rows = 0 exported = 0 instances"


def test_the_merged_reports_operation_is_the_last_stores() -> None:
    stores = [StoreName.parse(f"{DATASET}/dicomStores/s{n}") for n in range(3)]
    targets = [VerifyTarget(store, OWN_TABLE) for store in stores]
    reports = [VerifyReport(operation=op(f"op-{n}")) for n in range(3)]
    assert merged_report(targets, reports).operation == op("op-2")


def test_a_filter_never_written_is_not_said_to_be_kept() -> None:
    world = World()
    assert world.filters is not None

    def refuse(target: GcsUri, text: str) -> StoredObject:
        raise DicomBqError("403 no create")

    world.filters.upload_text = refuse  # type: ignore[method-assign]
    report = world.run(options=VerifyOptions(keep=True))
    keep = step(report, "keep")
    assert keep.detail == f"kept temporary store {temporary_of(world)}"
    assert keep.seconds == 0.0


def test_what_is_left_behind_says_so_when_uncaught() -> None:
    assert str(verify_module.LeftBehindError("store X may remain")) == "store X may remain"


def test_an_invalid_stream_table_is_refused_naming_the_field() -> None:
    world = World()
    streaming(world, "bq://not a table")
    report = world.run()
    assert report.exit_code == EXIT_BAD_INPUT
    assert step(report, "store").detail == (
        "streamConfigs.tableUri 'bq://not a table' is not valid: a BigQuery table is written "
        "bq://PROJECT.DATASET.TABLE"
    )
    assert world.api.created == []


def test_a_failed_step_says_its_detail_when_uncaught() -> None:
    assert str(verify_module.StepFailedError("export failed")) == "export failed"


def test_a_scratch_table_never_created_that_cannot_be_deleted_names_no_expiry() -> None:
    world = World()
    world.rows.create_error = DicomBqError("403 no create")
    world.rows.delete_answer = DicomBqError("403 no delete")
    report = world.run(options=VerifyOptions(seed=False))
    scratch = scratch_of(world)
    assert step(report, "cleanup").detail == (
        f"could not delete scratch table {scratch.uri} (403 no delete): delete it with "
        f"`bq rm -f -t dicom-src-test:dicom_metadata.{scratch.table}`"
    )


def test_stamps_are_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14
    time.tzset()
    try:
        stamp = verify_module._stamp(NOW)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert stamp == "2026-03-01 12:00 UTC"


def test_the_cleanup_names_a_lost_creates_error_up_to_its_first_from() -> None:
    world = World()
    world.api.create_makes = False
    world.api.create_errors = [
        ApiCallError(500, "INTERNAL", "the backend failed from upstream a from b")
    ]
    report = world.run()
    assert step(report, "cleanup").detail.startswith(
        f"the outcome of creating temporary store {temporary_of(world)} was unknown (500 "
        "INTERNAL: the backend failed); dicomStores.get answered 404"
    )


def test_ctrl_c_while_the_cleanup_prints_stops_it_naming_what_is_left() -> None:
    """The first Ctrl-C interrupts the store's delete; the second comes while its notice is
    printed, between two requests: the cleanup stops and says how to finish it."""
    world = World()
    api = world.api

    def delete_store(name: str) -> None:
        raise KeyboardInterrupt

    def notice(message: str) -> None:
        raise KeyboardInterrupt

    api.delete_store = delete_store  # type: ignore[method-assign]
    verifier = world.verifier()
    verifier.on_notice = notice
    with pytest.raises(KeyboardInterrupt):
        verifier.run(TARGET)
    temporary = temporary_of(world)
    command = DELETE_STORE.format(store=temporary.rsplit("/", 1)[1])
    *_, interrupted, stopped = verifier.report.steps
    assert (interrupted.name, interrupted.ok, interrupted.detail) == (
        "cleanup",
        False,
        "interrupted (Ctrl-C)",
    )
    assert stopped == StepResult(
        "cleanup",
        False,
        0.0,
        f"stopped by Ctrl-C; finish by hand: temporary store {temporary} may remain: delete it "
        f"with `{command}`; {FILTER.uri} may remain: delete it with `gcloud storage rm "
        f"{FILTER.uri}`",
    )
    assert world.steps[-1] == stopped


@pytest.mark.parametrize("failure", ["left behind", "unexpected"])
def test_a_second_ctrl_c_does_not_name_a_task_already_named_as_failed(failure: str) -> None:
    world = World()
    api = world.api
    assert world.filters is not None
    filters = world.filters
    if failure == "left behind":
        api.delete_errors = [ApiCallError(403, "PERMISSION_DENIED", "no delete")]
    else:
        api.delete_errors = [RuntimeError("socket gone")]

    def delete_written(stored: StoredObject) -> bool:
        raise KeyboardInterrupt

    filters.delete_written = delete_written  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        world.run()
    temporary = temporary_of(world)
    detail = world.steps[-1].detail
    command = DELETE_STORE.format(store=temporary.rsplit("/", 1)[1])
    assert detail.count(command) == 1  # named once, with its failure
    assert detail.endswith(
        f"stopped by a second Ctrl-C; finish by hand: {FILTER.uri} may remain: delete it with "
        f"`gcloud storage rm {FILTER.uri}`"
    )


# -- cleanup tasks that fail unexpectedly name what they were deleting ---------------------------


def test_an_unexpected_error_deleting_the_instance_names_it_and_the_command() -> None:
    world = World(filters=None)
    world.api.delete_instance_error = RuntimeError("socket gone")
    report = world.run(options=VerifyOptions(in_place=True))
    assert step(report, "cleanup").detail == (
        "could not delete synthetic instance 1.2.3.4.5 (RuntimeError: socket gone): synthetic "
        f"instance 1.2.3.4.5 may remain in {STORE.name}: delete it with `curl -X DELETE -H "
        '"Authorization: Bearer $(gcloud auth print-access-token)" '
        f"https://healthcare.example/v1/{STORE.name}/dicomWeb/studies/1.2.3/series/1.2.3.4/"
        "instances/1.2.3.4.5`"
    )


def test_an_unexpected_error_deleting_the_filter_names_it() -> None:
    world = World()
    assert world.filters is not None

    def delete_written(stored: StoredObject) -> bool:
        raise RuntimeError("socket gone")

    world.filters.delete_written = delete_written  # type: ignore[method-assign]
    report = world.run()
    assert step(report, "cleanup").detail.endswith(
        f"could not delete {FILTER.uri} (RuntimeError: socket gone): {FILTER.uri} may remain: "
        f"delete it with `gcloud storage rm {FILTER.uri}`"
    )


@pytest.mark.parametrize("created", [True, False])
def test_an_unexpected_error_deleting_the_scratch_table_names_it(created: bool) -> None:
    world = World()
    world.rows.row_count = lambda table: 3  # type: ignore[method-assign]
    if not created:
        world.rows.create_error = DicomBqError("403 no create")
    world.rows.delete_answer = RuntimeError("socket gone")
    report = no_seed(world)
    scratch = scratch_of(world)
    expiry = " until it expires at 2026-03-02 13:00 UTC" if created else ""
    assert step(report, "cleanup").detail == (
        f"could not delete scratch table {scratch.uri} (RuntimeError: socket gone): scratch "
        f"table {scratch.uri} may remain{expiry}: delete it with "
        f"`bq rm -f -t dicom-src-test:dicom_metadata.{scratch.table}`"
    )


def test_ctrl_c_after_a_scratch_table_was_kept_names_its_export() -> None:
    """Ctrl-C while the cleanup's failure is printed: the scratch table its export may still
    write is named with that export."""
    world = World()
    world.exporter.states = [OperationState.from_api({"name": "op-7"})]
    verifier = world.verifier()
    printed: list[StepResult] = []

    def on_step(result: StepResult) -> None:
        printed.append(result)
        if result.name == "cleanup" and [r.name for r in printed].count("cleanup") == 1:
            raise KeyboardInterrupt  # the first cleanup line: the failure keeping the table

    verifier.on_step = on_step
    with pytest.raises(KeyboardInterrupt):
        verifier.run(TARGET, VerifyOptions(seed=False))
    scratch = scratch_of(world)
    assert verifier.report.steps[-1].detail == (
        f"stopped by Ctrl-C; finish by hand: scratch table {scratch.uri} may remain until it "
        "expires at 2026-03-02 13:00 UTC: delete it with "
        f"`bq rm -f -t dicom-src-test:dicom_metadata.{scratch.table}` once export op-7 has ended"
    )


# -- what verify is pointed at ------------------------------------------------------------------


def test_a_directly_named_store_is_verified_with_its_table_and_bucket() -> None:
    from dicom_bq.flows.targets import Target

    target = Target(store=STORE.name, table=USER_TABLE.uri, filter_bucket="f-bucket")
    assert verify_module.verify_targets(target) == [VerifyTarget(STORE, USER_TABLE, "f-bucket")]


def test_no_target_says_how_to_name_one_for_verify() -> None:
    from dicom_bq.flows.targets import Target

    with pytest.raises(DicomBqError) as caught:
        verify_module.verify_targets(Target())
    assert caught.value.message == (
        "say where to verify with exactly one of --stack NAME, --outputs FILE or --store NAME "
        "(with --table)"
    )


def outputs(tmp_path: Any) -> Any:
    import json

    path = tmp_path / "outputs.json"
    path.write_text(
        json.dumps(
            {
                "dicomStoreName": STORE.name,
                "verificationTableUri": OWN_TABLE.uri,
                "filterBucket": "f-bucket",
                "agentEmail": AGENT,
            }
        ),
        encoding="utf-8",
    )
    return path


def test_a_stacks_outputs_give_its_stores_with_the_table_asked_for(tmp_path: Any) -> None:
    from dicom_bq.flows.targets import Target

    (found,) = verify_module.verify_targets(Target(outputs=outputs(tmp_path), table=USER_TABLE.uri))
    assert (found.store, found.table, found.filter_bucket, found.agent_email) == (
        STORE,
        USER_TABLE,
        "f-bucket",
        AGENT,
    )
    with pytest.raises(DicomBqError):
        verify_module.verify_targets(Target(outputs=outputs(tmp_path), store_id="no-such-store"))


def test_verify_path_hands_its_options_to_each_proof(monkeypatch: pytest.MonkeyPatch) -> None:
    from dicom_bq.flows.access import GoogleAccess
    from dicom_bq.flows.targets import Target

    handed: dict[str, Any] = {}

    def verify_each(**kwargs: Any) -> VerifyReport:
        handed.update(kwargs)
        return VerifyReport()

    monkeypatch.setattr(verify_module, "verify_each", verify_each)
    access = GoogleAccess()
    options = VerifyOptions(timeout=5.0)
    confirm = lambda risk: None  # noqa: E731
    observer = object()
    verify_module.verify_path(
        target=Target(store=STORE.name, table=USER_TABLE.uri),
        options=options,
        access=access,
        api_version="v1beta1",
        permission_window=77.0,
        truncate_confirmed=True,
        confirm_truncate=confirm,
        observer=observer,  # type: ignore[arg-type]
    )
    assert handed == {
        "targets": [VerifyTarget(STORE, USER_TABLE)],
        "options": options,
        "access": access,
        "api_version": "v1beta1",
        "permission_window": 77.0,
        "truncate_confirmed": True,
        "confirm_truncate": confirm,
        "observer": observer,
    }


def test_each_proof_goes_to_its_targets_universe_with_its_own_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dicom_bq.clients import bigquery, storage
    from dicom_bq.flows import operations
    from dicom_bq.flows.access import GoogleAccess

    made: list[dict[str, Any]] = []
    universes: list[str] = []

    class Proof:
        def __init__(self, **kwargs: Any) -> None:
            made.append(kwargs)

        def run(self, target: VerifyTarget, options: VerifyOptions) -> VerifyReport:
            return VerifyReport(steps=[StepResult("store", True, 0.0, target.store.store)])

    def healthcare_api(*, connection: Any, api_version: str) -> Any:
        universes.append(connection.universe_domain)
        return object()

    monkeypatch.setattr(verify_module, "Verifier", Proof)
    monkeypatch.setattr(operations, "healthcare_api", healthcare_api)
    monkeypatch.setattr(bigquery, "BigQueryTables", lambda connection, project: object())
    monkeypatch.setattr(storage, "StorageObjects", lambda connection, project: ("filters", project))
    other = StoreName.parse(f"{DATASET}/dicomStores/other")
    observer = SimpleObserver()
    report = verify_module.verify_each(
        targets=[
            VerifyTarget(STORE, OWN_TABLE, "f-bucket", AGENT, universe_domain="example.goog"),
            VerifyTarget(other, OWN_TABLE, None),
        ],
        options=VerifyOptions(),
        access=GoogleAccess(),
        api_version="v1",
        permission_window=60.0,
        truncate_confirmed=False,
        confirm_truncate=lambda risk: None,
        observer=observer,  # type: ignore[arg-type]
    )
    assert universes == ["example.goog", "googleapis.com"]
    assert [m["filters"] for m in made] == [("filters", "f-bucket"), None]
    assert [s.name for s in report.steps] == ["dicom:store", "other:store"]
    first = made[0]
    assert first["on_step"] == observer.step
    assert first["on_start"] == observer.started
    assert first["on_update"] == observer.progress
    assert first["on_wait"] == observer.waiting
    assert first["on_notice"] == observer.notice
    assert (first["exporter"].permission_window, first["exporter"].agent_email) == (60.0, AGENT)
    assert made[1]["exporter"].agent_email is None


class SimpleObserver:
    def step(self, result: StepResult) -> None: ...

    def started(self, operation: str) -> None: ...

    def progress(self, state: OperationState, elapsed: float) -> None: ...

    def waiting(self, why: str, delay: float) -> None: ...

    def notice(self, message: str) -> None: ...


def test_every_stream_is_checked_not_only_the_first() -> None:
    world = World()
    streaming(
        world,
        "bq://dicom-src-test.streams.live",
        "bq://dicom-src-test.dicom_metadata.dicom_bq_verification",
    )
    world.rows.access["dicom-src-test:streams"] = [{"role": "WRITER", "userByEmail": AGENT}]
    report = world.run()
    assert report.exit_code == EXIT_BAD_INPUT
    assert world.api.created == []


def test_accepting_stream_rows_without_in_place_is_refused_in_full() -> None:
    with pytest.raises(DicomBqError) as caught:
        check_verify_options(VerifyOptions(accept_stream_rows=True))
    assert caught.value.message == (
        "--accept-synthetic-in-streams goes with --in-place: without it, verify seeds a "
        "temporary store and nothing is left in the real store's streams"
    )
