"""One `dicom-bq export`, start to end: the stack's settings, a local filter file validated and
uploaded, the WRITE_TRUNCATE check, then the export flow that verify shares (Exporter.run).

The command line only parses, asks and prints: it hands in an observer for what happens and a
confirmation for what a truncate would erase; every decision is taken here."""

from __future__ import annotations

import dataclasses
import datetime
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dicom_bq.clients.endpoints import Connection
from dicom_bq.clients.operations import OperationState
from dicom_bq.errors import DicomBqError
from dicom_bq.flows.access import GoogleAccess
from dicom_bq.flows.exporter import Exporter, ExportPlan
from dicom_bq.flows.filters import UPLOAD_CHUNK, validated_filter
from dicom_bq.flows.operations import checked_api_version, healthcare_api
from dicom_bq.infra.settings import StackSettings
from dicom_bq.refs import GcsUri, TableUri


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


def stack_settings(stack: str) -> StackSettings:
    """A stack's validated settings, read as Pulumi merges its config."""
    from dicom_bq.stack.config import find_project_dir, read_stack_config
    from dicom_bq.stack.plan import stack_settings as settings_of

    return settings_of(read_stack_config(find_project_dir(), stack))[0]


def filter_bucket(
    *, bucket: str | None, settings: StackSettings | None, observer: ExportObserver
) -> str:
    """The bucket for an uploaded filter file; warns when the agent may not be able to read it."""
    from dicom_bq.infra import identifiers

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
) -> GcsUri:
    from dicom_bq.clients.storage import StorageObjects

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    # The local name becomes part of the object name, so only characters that need no escaping
    # in a gs:// URI or a URL path are kept (https://cloud.google.com/storage/docs/objects#naming).
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", path.name)[:100] or "filter"
    target = GcsUri(bucket, f"dicom-bq/filters/{stamp}-{uuid.uuid4().hex[:8]}-{safe}")
    StorageObjects(connection, bucket).upload_file(str(path), target, UPLOAD_CHUNK)
    observer.notice(f"Uploaded {path} to {target.uri}")
    return target


def run_export(
    *,
    plan: ExportPlan,
    access: GoogleAccess,
    api_version: str,
    stack: str | None,
    local_filter: LocalFilter | None,
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
    (Exporter.check_concurrent)."""
    from dicom_bq.clients.operations import Follower

    plan.check(checked_api_version(api_version))
    # Read once: the stack gives the filter bucket, names the agent and its universe.
    settings = stack_settings(stack) if stack is not None else None
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
    api = healthcare_api(connection=connection, api_version=api_version)
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
    if local_filter is not None:
        uploaded = upload_filter(
            path=local_filter.path, bucket=bucket, connection=connection, observer=observer
        )
        plan = dataclasses.replace(plan, filter=uploaded)
    if not wait:
        return ExportResult(operation=exporter.start(plan, on_wait=observer.waiting), state=None)
    state = exporter.run(
        plan,
        Follower(api),
        timeout,
        on_start=observer.started,
        on_update=observer.progress,
        on_wait=observer.waiting,
    )
    return ExportResult(operation=state.name, state=state)
