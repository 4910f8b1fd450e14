"""One `dicom-bq export`, start to end: the stack's settings, a local filter file validated and
uploaded, the WRITE_TRUNCATE check, then the export flow that verify shares (Exporter.run), and
the uploaded filter file deleted once no export can read it any more.

The command line only parses, asks and prints: it hands in an observer for what happens and a
confirmation for what a truncate would erase; every decision is taken here."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dicom_bq.clients.endpoints import Connection
from dicom_bq.clients.healthcare import ExportRequest, HealthcareApi
from dicom_bq.clients.operations import OperationState
from dicom_bq.clients.storage import ABSENT, StorageObjects, StoredObject
from dicom_bq.errors import EXIT_FAILED, DicomBqError
from dicom_bq.flows.access import GoogleAccess
from dicom_bq.flows.exporter import Exporter, ExportPlan
from dicom_bq.flows.filters import UPLOAD_CHUNK, validated_filter
from dicom_bq.flows.operations import checked_api_version
from dicom_bq.flows.targets import Target
from dicom_bq.refs import GcsUri, StoreName, TableUri
from dicom_bq.vocabulary.settings import StackSettings


class ExportObserver(Protocol):
    """What the person running an export is told while it runs."""

    def notice(self, message: str) -> None: ...

    def waiting(self, why: str, delay: float) -> None: ...

    def started(self, operation: str) -> None: ...

    def progress(self, state: OperationState, elapsed: float) -> None: ...


@dataclass(frozen=True)
class TruncateRisk:
    """Rows a WRITE_TRUNCATE would erase: the caller asks, or refuses without a terminal."""

    table: TableUri
    rows: int

    @property
    def question(self) -> str:
        return f"{self.table.uri} holds {self.rows} rows; WRITE_TRUNCATE erases them. Continue?"

    def refusal(self) -> DicomBqError:
        return DicomBqError(
            f"{self.table.uri} holds {self.rows} rows and WRITE_TRUNCATE would erase them: pass "
            "--yes to confirm, or use WRITE_APPEND or a new table"
        )


# Returns when the user agrees; raises DicomBqError to refuse.
ConfirmTruncate = Callable[[TruncateRisk], None]


def check_truncate(
    *,
    count_rows: Callable[[TableUri], int | None],
    table: TableUri,
    confirmed: bool,
    confirm: ConfirmTruncate,
) -> None:
    """A table with rows (counting the streaming buffer: BigQueryTables.row_count) is truncated
    only once confirmed: by --yes (then not even counted), or by `confirm`."""
    if confirmed:
        return
    rows = count_rows(table)
    if rows:
        confirm(TruncateRisk(table=table, rows=rows))


@dataclass(frozen=True)
class ExportResult:
    operation: str
    state: OperationState | None  # None when not waited for (--no-wait)


@dataclass(frozen=True)
class LocalFilter:
    """A filter file on this machine, uploaded to `bucket` (or the stack's) before the export."""

    path: Path
    bucket: str | None = None


def filter_bucket(
    *, bucket: str | None, settings: StackSettings | None, observer: ExportObserver
) -> str:
    """The bucket for an uploaded filter file; warns when the agent may not be able to read it."""
    from dicom_bq.vocabulary import identifiers

    stack_bucket = settings.filter_bucket if settings is not None else None
    chosen = bucket or stack_bucket
    if not chosen:
        raise DicomBqError(
            "--filter-file needs a bucket: --filter-bucket BUCKET, or --stack NAME whose "
            "dicom-bq:filterBucket the agent can read"
        )
    problem = identifiers.check_bucket(str(chosen))
    if problem:
        raise DicomBqError(f"--filter-bucket {chosen!r} is not valid: {problem}")
    if chosen != stack_bucket:
        observer.notice(
            f"Warning: gs://{chosen} is not the stack's filter bucket: the Cloud Healthcare "
            "service agent needs roles/storage.objectViewer on it, or the export fails"
        )
    return str(chosen)


def upload_filter(
    *, path: Path, bucket: str, connection: Connection, observer: ExportObserver
) -> StoredObject:
    """Upload the file under a new name, create-only (ifGenerationMatch=0): it never replaces
    an object, even one that took the same name."""
    from dicom_bq.clients.storage import GenerationMismatchError

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    # The local name becomes part of the object name, so only characters that need no escaping
    # in a gs:// URI or a URL path are kept (https://cloud.google.com/storage/docs/objects#naming).
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", path.name)[:100] or "filter"
    target = GcsUri(bucket, f"dicom-bq/filters/{stamp}-{uuid.uuid4().hex[:8]}-{safe}")
    try:
        stored = StorageObjects(connection, bucket).upload_file(
            str(path), target, UPLOAD_CHUNK, if_generation_match=ABSENT
        )
    except GenerationMismatchError:
        raise DicomBqError(
            f"{target.uri} exists already, so the filter file was not uploaded over it: run the "
            "command again (it picks a new name)",
            exit_code=EXIT_FAILED,
        ) from None
    observer.notice(f"Uploaded {path} to {target.uri}")
    return stored


class ExportRequests(HealthcareApi):
    """The Healthcare API as the export uses it, counting its export requests by outcome: an
    operation answered, or an outcome unknown (sent, and neither answered nor refused: the
    answer was lost, or the run stopped while waiting for it). An export Google may have
    started without dicom-bq knowing its name may read the filter file."""

    def __init__(self, connection: Connection, api_version: str) -> None:
        super().__init__(connection, checked_api_version(api_version))
        self.answered = 0
        self.unknown = 0

    def export_once(self, request: ExportRequest) -> dict[str, Any]:
        from dicom_bq.clients.discovery import ApiCallError
        from dicom_bq.clients.healthcare import ExportNotStartedError

        self.unknown += 1
        try:
            operation = super().export_once(request)
        except (ExportNotStartedError, ApiCallError, DicomBqError):
            self.unknown -= 1  # refused, or never sent: nothing started
            raise
        self.unknown -= 1
        self.answered += 1
        return operation


@dataclass
class FilterReaders:
    """The exports that may read an uploaded filter file: the operations started (and whether
    each was last seen done) and the requests whose outcome is unknown."""

    requests: ExportRequests
    store: StoreName
    operations: dict[str, bool] = field(default_factory=dict)  # name: seen done

    def started(self, name: str) -> None:
        self.operations[name] = False

    def seen(self, state: OperationState) -> None:
        if self.operations:
            self.operations[next(reversed(self.operations))] = state.done

    def still_reading(self) -> str | None:
        """Why an export may still read the file, or None when none can."""
        running = [name for name, done in self.operations.items() if not done]
        if running:
            return (
                f"operation {running[-1]} may still read it; once it has ended "
                f"(dicom-bq operations wait {running[-1]})"
            )
        # Exporter.start follows an operation found by listing only after a lost answer.
        found_by_listing = len(self.operations) - self.requests.answered
        if self.requests.unknown > found_by_listing:
            return (
                "an export request was sent and its answer never came, so an export dicom-bq "
                f"does not know may read it; once no export of the dataset is running "
                f"({self.listing()})"
            )
        return None

    def listing(self) -> str:
        store = self.store
        return (
            f"gcloud healthcare operations list --dataset={store.dataset} "
            f"--location={store.location} --project={store.project}"
        )


def settle_filter(
    *,
    stored: StoredObject,
    readers: FilterReaders,
    keep: bool,
    interrupted: bool,
    objects: StorageObjects,
    observer: ExportObserver,
) -> None:
    """Delete the uploaded filter file once no export can read it, unless `keep`
    (--keep-filter); otherwise say which object is kept and the command that removes it. The
    delete is conditioned on the generation uploaded, so an object another writer put there
    since is left alone. A failed delete is a warning: the export's outcome stands."""
    from dicom_bq.clients.storage import GenerationMismatchError, remove_command

    uri = stored.uri.uri
    reading = readers.still_reading()
    if reading is None and interrupted:
        reading = f"interrupted; once no export of the dataset is running ({readers.listing()})"
    if reading is not None or keep:
        why = f": {reading}, " if reading else " (--keep-filter); "
        observer.notice(f"Kept {uri}{why}remove it with: {remove_command(stored)}")
        return
    try:
        deleted = objects.delete_written(stored)
    except GenerationMismatchError:
        observer.notice(
            f"Warning: left {uri} in place: another writer replaced it after the upload "
            f"(generation {stored.generation} is not the live one any more)"
        )
        return
    except DicomBqError as error:
        observer.notice(
            f"Warning: could not delete {uri} ({error.message}); remove it with: "
            f"{remove_command(stored)}"
        )
        return
    if deleted:
        observer.notice(f"Deleted {uri}: the export has ended (--keep-filter keeps it)")
    else:
        observer.notice(
            f"{uri} generation {stored.generation} was gone already (deleted, or replaced by "
            "another writer): nothing deleted"
        )


def run_export(
    *,
    plan: ExportPlan,
    access: GoogleAccess,
    api_version: str,
    target: Target,
    local_filter: LocalFilter | None,
    keep_filter: bool,
    agent_email: str | None,
    permission_window: float,
    wait: bool,
    timeout: float | None,
    truncate_confirmed: bool,
    confirm_truncate: ConfirmTruncate,
    allow_concurrent: bool,
    observer: ExportObserver,
) -> ExportResult:
    """Start the export at most once and, with `wait`, follow it; an operation refused while
    IAM propagates is tried again within `permission_window` (Exporter.run). Unless
    `allow_concurrent`, a WRITE_APPEND export stops, before anything is uploaded or sent, when
    an export of the same dataset is running or was started in the last minutes
    (Exporter.check_concurrent). A local filter file is uploaded create-only, and deleted once
    the export has ended, failed or never started (settle_filter); it is kept, and said so,
    while an export may still read it (--no-wait, --timeout, an interruption, a lost answer)."""
    plan.check(checked_api_version(api_version))
    if keep_filter and local_filter is None:
        raise DicomBqError("--keep-filter goes with --filter-file")
    # Read once: the stack gives the filter bucket, names the agent and its universe.
    settings = target.settings() if target.stack is not None else None
    connection = access.connection(
        default_universe=settings.universe_domain if settings is not None else None
    )
    if local_filter is not None:
        if plan.filter is not None:
            raise DicomBqError("give --filter gs://... or --filter-file FILE, not both")
        bucket = filter_bucket(bucket=local_filter.bucket, settings=settings, observer=observer)
        validated_filter(path=local_filter.path, strict=False)
    if agent_email is None and settings is not None:
        # The stack names the agent when it knows the source project's number.
        member = settings.agent_member
        agent_email = member.removeprefix("serviceAccount:") if member else None
    api = ExportRequests(connection, api_version)
    exporter = Exporter(api, permission_window=permission_window, agent_email=agent_email)
    if not allow_concurrent:
        exporter.check_concurrent(plan, on_notice=observer.notice)
    if plan.truncates:
        from dicom_bq.clients.bigquery import BigQueryTables

        check_truncate(
            count_rows=lambda table: BigQueryTables(connection, table.project).row_count(table),
            table=plan.table,
            confirmed=truncate_confirmed,
            confirm=confirm_truncate,
        )
    if local_filter is None:
        return _export(plan, exporter, wait, timeout, observer, FilterReaders(api, plan.store))
    stored = upload_filter(
        path=local_filter.path, bucket=bucket, connection=connection, observer=observer
    )
    readers = FilterReaders(api, plan.store)
    settle = functools.partial(
        settle_filter,
        stored=stored,
        readers=readers,
        keep=keep_filter,
        objects=StorageObjects(connection, bucket),
        observer=observer,
    )
    try:
        result = _export(
            dataclasses.replace(plan, filter=stored.uri), exporter, wait, timeout, observer, readers
        )
    except KeyboardInterrupt:
        # No request after Ctrl-C: the file is kept, and how to remove it said.
        settle(interrupted=True)
        raise
    except BaseException:
        settle(interrupted=False)
        raise
    settle(interrupted=False)
    return result


def _export(
    plan: ExportPlan,
    exporter: Exporter,
    wait: bool,
    timeout: float | None,
    observer: ExportObserver,
    readers: FilterReaders,
) -> ExportResult:
    from dicom_bq.clients.operations import Follower

    if not wait:
        name = exporter.start(plan, on_wait=observer.waiting)
        readers.started(name)
        return ExportResult(operation=name, state=None)

    def started(name: str) -> None:
        readers.started(name)
        observer.started(name)

    def progress(state: OperationState, elapsed: float) -> None:
        readers.seen(state)
        observer.progress(state, elapsed)

    state = exporter.run(
        plan,
        Follower(exporter.api),
        timeout,
        on_start=started,
        on_update=progress,
        on_wait=observer.waiting,
    )
    return ExportResult(operation=state.name, state=state)
