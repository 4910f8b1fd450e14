"""`dicom-bq verify`: prove the export path works, step by step, and clean up after itself."""

from __future__ import annotations

import datetime
import enum
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from dicom_bq.clients.healthcare import ApiCallError, HealthcareApi
from dicom_bq.clients.operations import Follower, OperationState
from dicom_bq.clients.retry import Clock, SystemClock
from dicom_bq.clients.storage import StoredObject
from dicom_bq.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    DicomBqError,
)
from dicom_bq.flows.access import GoogleAccess
from dicom_bq.flows.export import ConfirmTruncate, ExportObserver
from dicom_bq.flows.exporter import Exporter, ExportPlan, utc_now
from dicom_bq.flows.seed import SyntheticInstance, synthetic_instance
from dicom_bq.flows.targets import Target
from dicom_bq.refs import GcsUri, StoreName, TableUri, WriteDisposition
from dicom_bq.stack.outputs import VerifyTarget
from dicom_bq.vocabulary import naming

FILTER_PREFIX = "dicom-bq/verify"
TEMPORARY_STORE_PREFIX = "dicom-bq-verify-"
# `verify --no-seed` exports the real store's metadata into a scratch table of its own, made
# empty with an expiration (bigquery v2 discovery document, Table.expirationTime: "Expired tables
# will be deleted and their storage reclaimed") and deleted at the end: the copy of patient
# metadata it makes lasts no longer than the run, or than the expiration if the run is killed.
SCRATCH_TABLE_PREFIX = "dicom_bq_verify_"
# The expiration leaves time for the export (--timeout, and at least this: a killed run's export
# goes on) and the count after it: a table that expired, or was deleted, before the export wrote
# it would be created again by the export ("missing -> created": Google's how-to), without an
# expiration. So the cleanup keeps the table while its export may still be running.
SCRATCH_EXPORT_ALLOWANCE = datetime.timedelta(hours=24)
SCRATCH_MARGIN = datetime.timedelta(hours=1)
# Dataset roles that let the agent create and write tables: legacy names as the dataset's access
# list shows them, and the predefined roles (https://cloud.google.com/bigquery/docs/access-control).
WRITER_ROLES = frozenset(
    {
        "WRITER",
        "OWNER",
        "roles/bigquery.dataEditor",
        "roles/bigquery.dataOwner",
        "roles/bigquery.admin",
    }
)


class RowSource(Protocol):
    def row_count(self, table: Any) -> int | None: ...

    def create_table(self, table: TableUri, expires: datetime.datetime) -> None: ...

    def delete_table(self, table: TableUri) -> bool: ...

    def instance_rows(self, table: Any, sop_instance_uid: str) -> list[dict[str, Any]]: ...

    def dataset_access(self, project: str, dataset: str) -> list[dict[str, Any]] | None: ...


@dataclass(frozen=True)
class VerifyOptions:
    """How to prove the path. By default a temporary store in the stack's Healthcare dataset is
    seeded, exported and deleted: same project, agent, location and CMEK as the real store,
    whose patient data is only read."""

    seed: bool = True
    in_place: bool = False  # seed the real store instead
    accept_stream_rows: bool = False  # ...even though its streams and topic keep the instance
    keep: bool = False
    timeout: float | None = None


def stream_tables(store: dict[str, Any]) -> list[str]:
    return [
        str((c.get("bigqueryDestination") or {}).get("tableUri"))
        for c in store.get("streamConfigs") or []
        if (c.get("bigqueryDestination") or {}).get("tableUri")
    ]


def notification_topics(store: dict[str, Any]) -> list[str]:
    # The API has notificationConfig and the newer notificationConfigs list (healthcare v1
    # discovery document, DicomStore).
    configs = [store.get("notificationConfig") or {}, *(store.get("notificationConfigs") or [])]
    return [str(c["pubsubTopic"]) for c in configs if c.get("pubsubTopic")]


class FilterStore(Protocol):
    def upload_text(self, target: GcsUri, text: str) -> StoredObject: ...

    def delete(self, target: GcsUri) -> None: ...

    def delete_written(self, stored: StoredObject) -> bool: ...


@dataclass
class StepResult:
    name: str
    ok: bool
    seconds: float
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.name,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "detail": self.detail,
        }


@dataclass
class VerifyReport:
    steps: list[StepResult] = field(default_factory=list)
    operation: OperationState | None = None
    exit_code: int = EXIT_OK

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "steps": [step.as_dict() for step in self.steps],
            "operation": self.operation.as_dict() if self.operation else None,
        }


class StepFailedError(Exception):
    def __init__(self, detail: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(detail)
        self.detail = detail
        self.exit_code = exit_code


class CreateOutcome(enum.Enum):
    """What the temporary store's create is known to have done."""

    SENT = "sent"  # asked, and no answer came that says what Google did: the store may exist
    CREATED = "created"
    REFUSED = "refused"  # a 4xx answer: Google made nothing


@dataclass
class Made:
    """What one run made, or may have made. Each thing is recorded before the request that makes
    it, so the cleanup knows of it whatever becomes of the answer (an error, a 500, Ctrl-C)."""

    temporary: StoreName | None = None
    create: CreateOutcome = CreateOutcome.SENT
    create_problem: str = "no answer arrived"
    instance: SyntheticInstance | None = None
    instance_store: StoreName | None = None  # where its STOW-RS went
    instance_refused: bool = False
    filter_uri: GcsUri | None = None
    filter_written: bool = False
    filter_stored: StoredObject | None = None  # the generation written, once its answer came
    # --no-seed's scratch table, recorded before its tables.insert; its expiration once sent.
    scratch: TableUri | None = None
    scratch_expires: datetime.datetime | None = None
    # The export into it, from its start until it is seen done.
    scratch_export: str | None = None
    scratch_export_done: bool = False

    @property
    def anything(self) -> bool:
        return any(
            x is not None for x in (self.temporary, self.instance, self.filter_uri, self.scratch)
        )


class LeftBehindError(Exception):
    """A cleanup task that may have left its thing behind: `detail` says what and how to delete
    it."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class CleanupTask:
    what: str
    run: Callable[[], str]  # deletes, and says what it saw; LeftBehindError if it may remain
    by_hand: str  # the command that finishes it, when the cleanup cannot


CLEANUP_INTERRUPTED = (
    "Ctrl-C during the cleanup: finishing it first (Ctrl-C again stops it and prints the "
    "commands that finish it)"
)


@dataclass
class Verifier:
    api: HealthcareApi
    rows: RowSource
    filters: FilterStore | None
    exporter: Exporter
    follower: Follower
    clock: Clock = field(default_factory=SystemClock)
    on_step: Callable[[StepResult], None] | None = None
    on_update: Callable[[OperationState, float], None] | None = None
    on_start: Callable[[str], None] | None = None
    on_wait: Callable[[str, float], None] | None = None
    on_notice: Callable[[str], None] | None = None
    # Asked before WRITE_TRUNCATE into a table that is not the tool's own; raises to refuse.
    confirm_truncate: Callable[[TableUri], None] | None = None
    now: Callable[[], datetime.datetime] = utc_now  # the wall clock, for the scratch expiration

    def __post_init__(self) -> None:
        self.report = VerifyReport()

    @contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        """Times one step; the body appends its detail; StepFailed or DicomBqError fail it, and
        Ctrl-C is recorded as the step's end before it goes on up."""
        started = self.clock.monotonic()
        detail: list[str] = []
        try:
            yield detail
        except (StepFailedError, DicomBqError) as error:
            message = error.detail if isinstance(error, StepFailedError) else error.message
            self._record(StepResult(name, False, self.clock.monotonic() - started, message))
            if self.report.exit_code == EXIT_OK:  # a cleanup's failure keeps the proof's code
                self.report.exit_code = error.exit_code
            raise
        except KeyboardInterrupt:
            seconds = self.clock.monotonic() - started
            self._record(StepResult(name, False, seconds, "interrupted (Ctrl-C)"))
            self.report.exit_code = EXIT_INTERRUPTED
            raise
        self._record(StepResult(name, True, self.clock.monotonic() - started, " ".join(detail)))

    def _record(self, result: StepResult) -> None:
        self.report.steps.append(result)
        if self.on_step:
            self.on_step(result)

    def _notice(self, message: str) -> None:
        if self.on_notice:
            self.on_notice(message)

    def run(self, target: VerifyTarget, options: VerifyOptions | None = None) -> VerifyReport:
        """The proof, then the cleanup of whatever it made, also after a failure, an unexpected
        error or Ctrl-C (which goes on up once the cleanup is done)."""
        options = options or VerifyOptions()
        made = Made()
        interrupted = False
        try:
            self._prove(target, options, made)
        except (StepFailedError, DicomBqError):
            pass
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if made.anything and options.keep:
                self._keep(made)
            elif made.anything:
                interrupted = self._clean_up(made) or interrupted
        if interrupted:
            raise KeyboardInterrupt
        return self.report

    def _prove(self, target: VerifyTarget, options: VerifyOptions, made: Made) -> None:
        store, metrics = self._check_store(target)
        if not options.seed:
            # The real store's metadata goes to a scratch table, never into target.table.
            scratch = self._create_scratch_table(target, options, made)
            state = self._export(
                target.store,
                scratch,
                None,
                options.timeout,
                why_unfiltered=NO_SEED_UNFILTERED,
                made=made,
            )
            self._compare_counts(scratch, state, metrics)
            return
        if target.table.table != naming.VERIFICATION_TABLE and self.confirm_truncate:
            # Only the tool's own table is truncated without a question; asked before anything
            # is created.
            with self.step("table") as detail:
                self.confirm_truncate(target.table)
                detail.append(f"{target.table.uri} may be truncated")
        if options.in_place:
            self._refuse_lasting_copies(target, store, options)
            seeded = target.store
            unfiltered = "no filter (no filter bucket): the whole real store"
        else:
            seeded = self._create_temporary_store(target, made)
            unfiltered = (
                "no filter (no filter bucket): the whole temporary store, which holds only the "
                "synthetic instance"
            )
        instance = self._seed(seeded, made)
        filter_uri = self._write_filter(target, instance, made)
        self._export(seeded, target.table, filter_uri, options.timeout, why_unfiltered=unfiltered)
        self._find_row(target, instance)

    def _check_store(self, target: VerifyTarget) -> tuple[dict[str, Any], dict[str, Any]]:
        """The real store, read only: its counts, and each stream table's dataset and grant."""
        with self.step("store") as detail:
            try:
                store = self.api.get_store(target.store.name)
                metrics = self.api.store_metrics(target.store.name)
            except ApiCallError as error:
                raise StepFailedError(
                    f"cannot read DICOM store {target.store.name}: {error.status} {error.reason} "
                    f"{error.message}"
                ) from None
            self._refuse_stream_into_verification(target, stream_tables(store))
            counts = (
                _counted(int(metrics.get("instanceCount") or 0), "instance", "instances"),
                _counted(int(metrics.get("seriesCount") or 0), "series", "series"),
                _counted(int(metrics.get("studyCount") or 0), "study", "studies"),
            )
            parts = [f"{target.store.name}: {', '.join(counts)}"]
            parts += [
                f"stream {self._check_stream(uri, target.agent_email)}"
                for uri in stream_tables(store)
            ]
            parts += [f"notifies {topic}" for topic in notification_topics(store)]
            # One detail: the step joins its details with spaces, which would stand before ";".
            detail.append("; ".join(parts))
            return store, metrics

    def _refuse_stream_into_verification(self, target: VerifyTarget, streams: list[str]) -> None:
        """verify replaces its table's rows (WRITE_TRUNCATE), and treats any table named
        dicom_bq_verification as its own (no question asked): a store streaming into such a
        table would lose its streamed rows to each verify. Refused before anything is made."""
        aimed = target.table.table_id.casefold()
        for uri in streams:
            table = TableUri.parse(uri, flag="streamConfigs.tableUri")
            if table.table_id.casefold() == aimed:
                why = "the table verify exports into (WRITE_TRUNCATE) and so would empty"
            elif table.table.casefold() == naming.VERIFICATION_TABLE:
                why = (
                    f"named {naming.VERIFICATION_TABLE}, the name of verify's own table, which "
                    "verify truncates without asking"
                )
            else:
                continue
            raise StepFailedError(
                f"{target.store.name} streams into {table.uri}, {why}: its streamed rows would "
                "be replaced by verify's. Stream into another table (the stack settings' stream "
                f"table), or give verify another --table; nothing was created or exported",
                exit_code=EXIT_BAD_INPUT,
            )

    def _check_stream(self, uri: str, agent_email: str | None) -> str:
        table = TableUri.parse(uri, flag="streamConfigs.tableUri")
        access = self.rows.dataset_access(table.project, table.dataset)
        if access is None:
            raise StepFailedError(
                f"the store streams to {uri}, whose dataset {table.project}:{table.dataset} does "
                "not exist: streaming fails until it does (run `pulumi up` on the stack)"
            )
        rows = self.rows.row_count(table)
        exists = (
            "not created yet (Google creates it)" if rows is None else _counted(rows, "row", "rows")
        )
        if not agent_email:
            return f"{uri}: {exists}; the agent is unknown here (give --stack or --outputs)"
        granted = sorted(
            str(entry.get("role"))
            for entry in access
            if str(entry.get("role")) in WRITER_ROLES
            and agent_email.lower()
            in {
                str(entry.get("userByEmail", "")).lower(),
                str(entry.get("iamMember", "")).lower().removeprefix("serviceaccount:"),
            }
        )
        if not granted:
            raise StepFailedError(
                f"the store streams to {uri}, but {agent_email} has no writer role in the "
                f"dataset's access list (a project-level grant would not show here: "
                f"`dicom-bq audit` checks both): the stream's rows are not written"
            )
        return f"{uri}: {exists}, {agent_email} may write ({', '.join(granted)})"

    def _refuse_lasting_copies(
        self, target: VerifyTarget, store: dict[str, Any], options: VerifyOptions
    ) -> None:
        """Google: "Instance deletions are not applied to the destination table" of a stream
        (https://cloud.google.com/healthcare-api/docs/how-tos/dicom-bigquery-streaming), and each
        topic's subscribers get the instance: in-place seeding leaves copies behind for good."""
        lasting = [*stream_tables(store), *notification_topics(store)]
        if not lasting or options.accept_stream_rows:
            return
        with self.step("in-place"):
            raise StepFailedError(
                f"--in-place would store a synthetic instance in {target.store.name}, which "
                f"streams or notifies to {', '.join(lasting)}: its row stays in those tables for "
                "good (Google does not apply deletions to stream tables) and subscribers receive "
                "it. Verify with a temporary store (drop --in-place), or add "
                "--accept-synthetic-in-streams to accept that",
                exit_code=EXIT_BAD_INPUT,
            )

    def _create_temporary_store(self, target: VerifyTarget, made: Made) -> StoreName:
        store_id = f"{TEMPORARY_STORE_PREFIX}{uuid.uuid4().hex[:12]}"
        temporary = StoreName(
            target.store.project, target.store.location, target.store.dataset, store_id
        )
        # Recorded before the request: whatever becomes of the answer, the cleanup looks for it.
        made.temporary = temporary
        with self.step("temp-store") as detail:
            try:
                self.api.create_store(
                    target.store.dataset_name, store_id, {"dicom-bq": "verification"}
                )
            except ApiCallError as error:
                answer = f"{error.status} {error.reason} {error.message}".strip()
                if error.status == 409:
                    # A retried create whose first answer was lost finds its own store: the ID
                    # is new.
                    pass
                elif 400 <= error.status < 500:
                    made.create = CreateOutcome.REFUSED
                    raise StepFailedError(
                        f"cannot create temporary store {temporary.name}: {answer} (it needs "
                        "healthcare.dicomStores.create; or verify the real store with "
                        "--in-place)"
                    ) from None
                else:
                    # Short for the cleanup's words: the step itself says it all.
                    made.create_problem = (
                        f"{error.status} {error.reason}: {error.message.split(' from ', 1)[0]}"
                    )
                    raise StepFailedError(
                        f"the create of temporary store {temporary.name} got no answer that says "
                        f"what Google did ({answer}): it may exist; the cleanup looks for it"
                    ) from None
            except KeyboardInterrupt:
                made.create_problem = "Ctrl-C came before its answer"
                raise
            except Exception as error:
                made.create_problem = f"{type(error).__name__}: {error}"
                raise
            made.create = CreateOutcome.CREATED
            detail.append(f"created {temporary.name} (same dataset, agent, location and CMEK)")
            return temporary

    def _seed(self, store: StoreName, made: Made) -> SyntheticInstance:
        instance = synthetic_instance()
        with self.step("seed") as detail:
            # Recorded before the STOW-RS, for the cleanup of an --in-place run.
            made.instance, made.instance_store = instance, store
            try:
                self.api.store_instance(store.name, instance.data)
            except ApiCallError as error:
                made.instance_refused = 400 <= error.status < 500 and error.status != 409
                raise StepFailedError(
                    f"STOW-RS of the synthetic instance was refused: {error.status} "
                    f"{error.reason} {error.message}"
                ) from None
            detail.append(
                f"stored synthetic instance {instance.sop_uid} ({len(instance.data)} bytes) in "
                f"{store.store}"
            )
            return instance

    def _write_filter(
        self, target: VerifyTarget, instance: SyntheticInstance, made: Made
    ) -> GcsUri | None:
        if not target.filter_bucket or self.filters is None:
            return None
        with self.step("filter") as detail:
            uri = GcsUri(target.filter_bucket, f"{FILTER_PREFIX}/{instance.sop_uid}.txt")
            made.filter_uri = uri
            made.filter_stored = self.filters.upload_text(uri, instance.filter_line + "\n")
            made.filter_written = True
            detail.append(f"wrote {uri.uri}")
            return uri

    def _create_scratch_table(
        self, target: VerifyTarget, options: VerifyOptions, made: Made
    ) -> TableUri:
        """--no-seed's destination: a new, empty table beside the verification table, with an
        expiration set at creation (tables.insert, Table.expirationTime), deleted by the
        cleanup."""
        scratch = TableUri(
            target.table.project,
            target.table.dataset,
            f"{SCRATCH_TABLE_PREFIX}{uuid.uuid4().hex[:12]}",
        )
        allowance = max(datetime.timedelta(seconds=options.timeout or 0), SCRATCH_EXPORT_ALLOWANCE)
        expires = self.now() + allowance + SCRATCH_MARGIN
        made.scratch = scratch  # recorded before the request, for the cleanup
        with self.step("scratch-table") as detail:
            try:
                self.rows.create_table(scratch, expires)
            except DicomBqError as error:
                raise StepFailedError(
                    f"cannot create the scratch table that --no-seed exports into: "
                    f"{error.message}. The account you run as needs bigquery.tables.create and "
                    f"bigquery.tables.delete on dataset {scratch.project}:{scratch.dataset} "
                    "(roles/bigquery.dataEditor); nothing was exported"
                ) from None
            made.scratch_expires = expires
            detail.append(
                f"created {scratch.uri}, empty, expiring {_stamp(expires)} (deleted at the end)"
            )
            return scratch

    def _export(
        self,
        store: StoreName,
        table: TableUri,
        filter_uri: GcsUri | None,
        timeout: float | None,
        *,
        why_unfiltered: str,
        made: Made | None = None,  # given for an export into --no-seed's scratch table
    ) -> OperationState:
        # The scratch table exists and is empty: WRITE_EMPTY fills it ("if the destination table
        # already exists and is empty, the export completes instead of returning an error":
        # Google's how-to, reference/dicom-export-bigquery.fr.txt, writeDisposition) and keeps
        # the table, its expiration included; the tool's own table is replaced.
        into_scratch = made is not None
        plan = ExportPlan(
            store=store,
            table=table,
            write_disposition=(
                WriteDisposition.WRITE_EMPTY if into_scratch else WriteDisposition.WRITE_TRUNCATE
            ),
            filter=filter_uri,
        )

        def started(name: str) -> None:
            if made is not None:  # an export into the scratch table: the cleanup waits for it
                made.scratch_export, made.scratch_export_done = name, False
            if self.on_start:
                self.on_start(name)

        with self.step("export") as detail:
            state = self.exporter.run(
                plan,
                self.follower,
                timeout,
                on_start=started,
                on_update=self.on_update,
                on_wait=self.on_wait,
            )
            if made is not None and state.done:
                made.scratch_export_done = True
            self.report.operation = state
            if not state.done:
                raise StepFailedError(
                    f"operation {state.name} still running after the timeout; resume with "
                    f"`dicom-bq operations wait {state.name}`",
                    exit_code=state.exit_code,
                )
            if state.exit_code != EXIT_OK:
                raise StepFailedError(
                    f"operation {state.name} {state.state}: "
                    + (state.error_message or f"{state.failure} instances failed")
                    + (f" (logs: {state.logs_url})" if state.logs_url else "")
                )
            used = f"filter {filter_uri.uri}" if filter_uri else why_unfiltered
            detail.append(
                f"{state.name}: {state.success} exported, {state.failure} failed into "
                f"{table.uri} ({used})"
            )
            return state

    def _find_row(self, target: VerifyTarget, instance: SyntheticInstance) -> None:
        with self.step("query") as detail:
            rows = self.rows.instance_rows(target.table, instance.sop_uid)
            if not rows:
                raise StepFailedError(
                    f"no row for SOPInstanceUID {instance.sop_uid} in {target.table.uri}"
                )
            expected = {
                "StudyInstanceUID": instance.study_uid,
                "SeriesInstanceUID": instance.series_uid,
                "SOPInstanceUID": instance.sop_uid,
                "PatientID": instance.patient_id,
            }
            row = rows[0]
            wrong = [
                f"{k}={row.get(k)!r}, sent {v!r}" for k, v in expected.items() if row.get(k) != v
            ]
            if wrong:
                raise StepFailedError(
                    "the exported row does not match what was sent: " + "; ".join(wrong)
                )
            detail.append(
                f"found the row of {instance.sop_uid}: study, series, instance, patient IDs match"
            )

    def _compare_counts(
        self, table: TableUri, state: OperationState, metrics: dict[str, Any]
    ) -> None:
        with self.step("count") as detail:
            rows = self.rows.row_count(table) or 0
            instances = int(metrics.get("instanceCount") or 0)
            if rows != state.success or rows != instances:
                raise StepFailedError(
                    f"{table.uri} has {rows} rows, the export reported {state.success} "
                    f"successes, the store held {instances} instances before the export"
                )
            detail.append(f"{rows} rows = {state.success} exported = {instances} instances")

    def _clean_up(self, made: Made) -> bool:
        """Deletes what `made` holds and says only what it saw happen. Returns whether Ctrl-C
        came during it: the first Ctrl-C finishes the cleanup (the interrupted request is sent
        again, on a new connection: each of these deletes may be repeated), a second stops it and
        names the commands that finish it."""
        tasks = self._cleanup_tasks(made)
        unfinished = list(tasks)  # what is not known to be gone
        presses = 0
        try:
            with self.step("cleanup") as detail:
                seen: list[str] = []
                problems: list[str] = []
                failed: list[CleanupTask] = []  # each named in `problems` with its command
                for task in tasks:
                    while presses < 2:
                        try:
                            seen.append(task.run())
                            unfinished.remove(task)
                        except LeftBehindError as error:
                            problems.append(error.detail)
                            failed.append(task)
                        except KeyboardInterrupt:
                            presses += 1
                            if presses == 1:
                                self._notice(CLEANUP_INTERRUPTED)
                                continue
                            rest = [t for t in unfinished if t not in failed]
                            problems.append(_stopped("a second Ctrl-C", rest))
                        except Exception as error:  # whatever it was, the rest is still cleaned up
                            problems.append(
                                f"could not delete {task.what} ({type(error).__name__}: {error}): "
                                f"{task.by_hand}"
                            )
                            failed.append(task)
                        break
                detail.append("; ".join(seen))
                if problems:
                    raise StepFailedError("; ".join([*seen, *problems]))
        except (StepFailedError, DicomBqError):
            pass
        except KeyboardInterrupt:
            # Ctrl-C between two requests (while a line was printed): the step ended as
            # "interrupted"; this says what is left.
            self._record(StepResult("cleanup", False, 0.0, _stopped("Ctrl-C", unfinished)))
            return True
        return presses > 0

    def _cleanup_tasks(self, made: Made) -> list[CleanupTask]:
        tasks: list[CleanupTask] = []
        if made.temporary is not None:
            temporary = made.temporary
            tasks.append(
                CleanupTask(
                    f"temporary store {temporary.name}",
                    lambda: self._delete_temporary(temporary, made),
                    f"temporary store {temporary.name} may remain: delete it with "
                    f"`{delete_store_command(temporary)}`",
                )
            )
        elif made.instance is not None and made.instance_store is not None:
            instance, store = made.instance, made.instance_store
            tasks.append(
                CleanupTask(
                    f"synthetic instance {instance.sop_uid}",
                    lambda: self._delete_instance(store, instance, made),
                    f"synthetic instance {instance.sop_uid} may remain in {store.name}: delete "
                    f"it with `{self._delete_instance_command(store, instance)}`",
                )
            )
        if made.scratch is not None:
            scratch = made.scratch
            tasks.append(
                CleanupTask(
                    f"scratch table {scratch.uri}",
                    lambda: self._delete_scratch(scratch, made),
                    f"scratch table {scratch.uri} may remain"
                    + (
                        f" until it expires at {_stamp(made.scratch_expires)}"
                        if made.scratch_expires
                        else ""
                    )
                    + f": delete it with `{_delete_table_command(scratch)}`"
                    + (
                        f" once export {made.scratch_export} has ended"
                        if made.scratch_export and not made.scratch_export_done
                        else ""
                    ),
                )
            )
        if made.filter_uri is not None and self.filters is not None:
            uri, filters = made.filter_uri, self.filters
            tasks.append(
                CleanupTask(
                    uri.uri,
                    lambda: _delete_filter(filters, uri, made.filter_stored),
                    f"{uri.uri} may remain: delete it with `gcloud storage rm {uri.uri}`",
                )
            )
        return tasks

    def _store_exists(self, store: StoreName) -> bool | None:
        """dicomStores.get: True, False on 404, None when it cannot tell."""
        try:
            self.api.get_store(store.name)
        except ApiCallError as error:
            return False if error.status == 404 else None
        return True

    def _delete_temporary(self, store: StoreName, made: Made) -> str:
        name = store.name
        if made.create is CreateOutcome.REFUSED:
            return f"no temporary store to delete: Google refused to create {name}"
        found = ""
        if made.create is CreateOutcome.SENT:
            unknown = (
                f"the outcome of creating temporary store {name} was unknown "
                f"({made.create_problem})"
            )
            exists = self._store_exists(store)
            if exists is False:
                return (
                    f"{unknown}; dicomStores.get answered 404: it does not exist, nothing to delete"
                )
            found = f"{unknown}; " + (
                "dicomStores.get found it; " if exists else "dicomStores.get could not tell; "
            )
        try:
            self.api.delete_store(name)
        except ApiCallError as error:
            if error.status == 404:
                return f"{found}temporary store {name} no longer exists (its DELETE answered 404)"
            exists = self._store_exists(store)
            if exists is False:
                return (
                    f"{found}temporary store {name} no longer exists (its DELETE answered "
                    f"{error.status}, then dicomStores.get 404)"
                )
            seen = "dicomStores.get still finds it" if exists else "dicomStores.get cannot tell"
            raise LeftBehindError(
                f"{found}could not delete temporary store {name} ({error.status} "
                f"{error.message}; {seen}): delete it with `{delete_store_command(store)}`"
            ) from None
        return f"{found}deleted temporary store {name}"

    def _delete_scratch(self, table: TableUri, made: Made) -> str:
        command = _delete_table_command(table)
        running = made.scratch_export
        if running is not None and not made.scratch_export_done:
            # Deleted now, the table would be made again by the export at its end, without an
            # expiration; kept, the export fills it and BigQuery deletes it when it expires.
            raise LeftBehindError(
                f"kept scratch table {table.uri}: export {running} may still be running and "
                "would create it again, without an expiration, if it were deleted now; "
                f"BigQuery deletes it at {_stamp(made.scratch_expires)}. To delete it sooner: "
                f"`dicom-bq operations wait {running}`, then `{command}`"
            )
        try:
            deleted = self.rows.delete_table(table)
        except DicomBqError as error:
            expiry = (
                f"; it expires at {_stamp(made.scratch_expires)}" if made.scratch_expires else ""
            )
            raise LeftBehindError(
                f"could not delete scratch table {table.uri} ({error.message}){expiry}: delete "
                f"it with `{command}`"
            ) from None
        if deleted:
            return f"deleted scratch table {table.uri}"
        if made.scratch_expires is None:
            return f"no scratch table to delete: {table.uri} was not created (tables.delete 404)"
        return f"scratch table {table.uri} no longer exists (its DELETE answered 404)"

    def _delete_instance(self, store: StoreName, instance: SyntheticInstance, made: Made) -> str:
        if made.instance_refused:
            return f"no synthetic instance to delete: {store.store} refused its STOW-RS"
        try:
            self.api.delete_instance(
                store.name, instance.study_uid, instance.series_uid, instance.sop_uid
            )
        except ApiCallError as error:
            if error.status == 404:
                return (
                    f"synthetic instance {instance.sop_uid} is not in {store.store} (its DELETE "
                    "answered 404)"
                )
            raise LeftBehindError(
                f"could not delete synthetic instance {instance.sop_uid} from {store.name} "
                f"({error.status} {error.message}): delete it with "
                f"`{self._delete_instance_command(store, instance)}`"
            ) from None
        return f"deleted synthetic instance {instance.sop_uid}"

    def _delete_instance_command(self, store: StoreName, instance: SyntheticInstance) -> str:
        # DICOMweb DeleteInstance; gcloud has no command for one instance.
        return (
            'curl -X DELETE -H "Authorization: Bearer $(gcloud auth print-access-token)" '
            f"{self.api.dicomweb_url(store.name)}/studies/{instance.study_uid}/series/"
            f"{instance.series_uid}/instances/{instance.sop_uid}"
        )

    def _keep(self, made: Made) -> None:
        """--keep: what is kept, as far as it is known to exist."""
        kept = []
        if made.temporary is not None:
            if made.create is CreateOutcome.CREATED:
                kept.append(f"kept temporary store {made.temporary.name}")
            elif made.create is CreateOutcome.SENT:
                kept.append(
                    f"kept temporary store {made.temporary.name} if it exists (the outcome of "
                    f"its create was unknown: {made.create_problem})"
                )
        elif made.instance is not None and made.instance_store and not made.instance_refused:
            kept.append(
                f"kept synthetic instance {made.instance.sop_uid} in {made.instance_store.name}"
            )
        if made.filter_uri is not None and made.filter_written:
            kept.append(f"kept {made.filter_uri.uri}")
        if made.scratch is not None and made.scratch_expires is not None:
            kept.append(
                f"kept scratch table {made.scratch.uri} (the store's metadata) until it expires "
                f"at {_stamp(made.scratch_expires)}"
            )
        if kept:
            self._record(StepResult("keep", True, 0.0, "; ".join(kept)))


NO_SEED_UNFILTERED = (
    "no filter: --no-seed exports the whole store, to compare its instance count with the rows"
)


def _counted(count: int, one: str, many: str) -> str:
    """A count and its noun: 1 study, 2 studies, 0 studies."""
    return f"{count} {one if count == 1 else many}"


def _stamp(moment: datetime.datetime | None) -> str:
    if moment is None:
        return "unknown"
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _delete_table_command(table: TableUri) -> str:
    return f"bq rm -f -t {table.project}:{table.dataset}.{table.table}"


def _stopped(by: str, unfinished: list[CleanupTask]) -> str:
    return f"stopped by {by}; finish by hand: " + "; ".join(task.by_hand for task in unfinished)


def delete_store_command(store: StoreName) -> str:
    return (
        f"gcloud healthcare dicom-stores delete {store.store} --dataset={store.dataset} "
        f"--location={store.location} --project={store.project}"
    )


def _delete_filter(filters: FilterStore, uri: GcsUri, stored: StoredObject | None) -> str:
    """Delete the filter object verify wrote: exactly the generation written when its answer
    came (an object another writer put there since stays), else the per-run name, which only
    this run wrote to, if its write got there at all."""
    try:
        if stored is not None and stored.generation is not None:
            deleted = filters.delete_written(stored)
            return f"deleted {uri.uri}" if deleted else f"{uri.uri} was already gone"
        filters.delete(uri)  # a missing object is no error (clients/storage.py)
    except DicomBqError as error:
        raise LeftBehindError(
            f"could not delete {uri.uri} ({error.message}): delete it with "
            f"`gcloud storage rm {uri.uri}`"
        ) from None
    return f"deleted {uri.uri}, if its write had got there"


class VerifyObserver(ExportObserver, Protocol):
    """What the person running verify is told: each step as it ends, and the export's progress."""

    def step(self, result: StepResult) -> None: ...


def verify_targets(target: Target) -> list[VerifyTarget]:
    """What to verify: a stack's stores (its outputs through the Pulumi CLI, or a saved copy),
    every one or the one `store_id` names; or a store named directly."""
    from dicom_bq.stack import outputs as stack_outputs

    target.check("where to verify", direct_store=True)
    if target.store is not None:
        assert target.table is not None  # checked
        return [
            VerifyTarget(
                StoreName.parse(target.store), TableUri.parse(target.table), target.filter_bucket
            )
        ]
    return stack_outputs.targets_from_outputs(
        target.outputs_document(), target.table, target.store_id
    )


def check_verify_options(options: VerifyOptions) -> None:
    if options.accept_stream_rows and not options.in_place:
        raise DicomBqError(
            "--accept-synthetic-in-streams goes with --in-place: without it, verify seeds a "
            "temporary store and nothing is left in the real store's streams"
        )
    if not options.seed and options.in_place:
        raise DicomBqError("--no-seed stores nothing: drop --in-place")


def verify_path(
    *,
    target: Target,
    options: VerifyOptions,
    access: GoogleAccess,
    api_version: str,
    permission_window: float,
    truncate_confirmed: bool,
    confirm_truncate: ConfirmTruncate,
    observer: VerifyObserver,
) -> VerifyReport:
    """`dicom-bq verify`: the targets from the stack, its saved outputs or a named store, then
    the proof, store after store."""
    check_verify_options(options)
    return verify_each(
        targets=verify_targets(target),
        options=options,
        access=access,
        api_version=api_version,
        permission_window=permission_window,
        truncate_confirmed=truncate_confirmed,
        confirm_truncate=confirm_truncate,
        observer=observer,
    )


def verify_each(
    *,
    targets: list[VerifyTarget],
    options: VerifyOptions,
    access: GoogleAccess,
    api_version: str,
    permission_window: float,
    truncate_confirmed: bool,
    confirm_truncate: ConfirmTruncate,
    observer: VerifyObserver,
) -> VerifyReport:
    """The proof for each store in turn (`verify` and `up` alike), as one report: seed, export
    (the export flow `dicom-bq export` runs: Exporter.run), find the row, clean up. Each
    target's universe is the one its Google calls go to."""
    from dicom_bq.clients.bigquery import BigQueryTables
    from dicom_bq.clients.storage import StorageObjects
    from dicom_bq.flows.export import check_truncate
    from dicom_bq.flows.operations import healthcare_api

    def proof(target: VerifyTarget) -> VerifyReport:
        connection = access.connection(default_universe=target.universe_domain)
        api = healthcare_api(connection=connection, api_version=api_version)
        filters = StorageObjects(connection, target.filter_bucket) if target.filter_bucket else None
        rows = BigQueryTables(connection, target.table.project)
        verifier = Verifier(
            api=api,
            rows=rows,
            filters=filters,
            exporter=Exporter(
                api, permission_window=permission_window, agent_email=target.agent_email
            ),
            follower=Follower(api),
            on_step=observer.step,
            on_start=observer.started,
            on_update=observer.progress,
            on_wait=observer.waiting,
            on_notice=observer.notice,
            confirm_truncate=lambda table: check_truncate(
                count_rows=rows.row_count,
                table=table,
                confirmed=truncate_confirmed,
                confirm=confirm_truncate,
            ),
        )
        return verifier.run(target, options)

    reports = [proof(target) for target in targets]
    if len(reports) == 1:
        return reports[0]
    return merged_report(targets, reports)


def merged_report(targets: list[VerifyTarget], reports: list[VerifyReport]) -> VerifyReport:
    """One report for several stores: each step named after its store (clinical:export), the
    first failure's exit code."""
    return VerifyReport(
        steps=[
            StepResult(f"{target.store.store}:{step.name}", step.ok, step.seconds, step.detail)
            for target, report in zip(targets, reports, strict=True)
            for step in report.steps
        ],
        operation=reports[-1].operation,
        exit_code=next((report.exit_code for report in reports if not report.ok), EXIT_OK),
    )
