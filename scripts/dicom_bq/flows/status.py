"""`dicom-bq status`: one read-only view of the export path's health, and what disagrees.

Per DICOM store of the stack: its instance count (getDICOMStoreMetrics), the last exports of its
Healthcare dataset (operations.list; which store each is of is unknown: operations name their
dataset only) with the dataset's stores (dicomStores.list), each stream table's rows and last
change (tables.get), and
its own nightly snapshot table when the stack has a schedule, with the Cloud Scheduler job that
writes it (jobs.get) when the outputs name one. What disagrees becomes a finding; a part that
cannot be read (403, 404, retries exhausted) is a finding too, never a crash.
"""

from __future__ import annotations

import datetime
import re
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from dicom_bq.clients.bigquery import TableInfo
from dicom_bq.clients.discovery import ApiCallError, DiscoveryClients
from dicom_bq.clients.operations import LISTING_PAGES, export_operations, rfc3339
from dicom_bq.cron import CronSchedule, parse_schedule
from dicom_bq.errors import EXIT_FAILED, EXIT_OK, DicomBqError
from dicom_bq.flows.access import GoogleAccess
from dicom_bq.flows.targets import Target
from dicom_bq.flows.verify import stream_tables
from dicom_bq.refs import StoreName, TableUri
from dicom_bq.texts import excerpt
from dicom_bq.vocabulary.contract import OutputNames, StackOutputs, StoreEntryKeys

RECENT_EXPORTS = 3
# An export cannot be tied to its store: operations belong to the Healthcare dataset
# (https://cloud.google.com/healthcare-api/docs/how-tos/long-running-operations: "LROs are
# managed at the dataset level") and name no store or destination (healthcare v1 discovery
# document: Operation has name, done, error, metadata, response; OperationMetadata apiMethodName,
# cancelRequested, counter, createTime, endTime, logsUrl; ExportDicomDataResponse no field). So a
# dataset's exports are shown with their store unknown (verify's, from its temporary stores in
# the same dataset, and other stores' alike), and a later success never clears an earlier failure.
STORE_UNKNOWN = "operations name their Healthcare dataset, never their store"
WIDTH = 80
INDENT = " " * 13  # under the value column of a store's lines

Kind = Literal[
    "unreadable",
    "export-failed",
    "export-incomplete",
    "stream-behind",
    "snapshot-missing",
    "snapshot-stale",
    "snapshot-job-paused",
    "snapshot-job-failed",
]
T = TypeVar("T")

# Job.name (cloudscheduler v1 discovery document): projects/PROJECT_ID/locations/LOCATION_ID/
# jobs/JOB_ID, PROJECT_ID of letters, digits, "-", ":" or "."; JOB_ID of letters, digits, "-"
# or "_", at most 500. The location is not described further: a region ID's lower case,
# digits and "-" (https://cloud.google.com/scheduler/docs/locations).
# Matched whole (re.fullmatch): `$` would also match before a final newline.
JOB_NAME = re.compile(
    r"projects/(?P<project>[A-Za-z0-9\-:.]+)/locations/(?P<location>[a-z0-9\-]+)"
    r"/jobs/(?P<job>[A-Za-z0-9_\-]{1,500})"
)
# What reading a job needs: jobs.get asks cloudscheduler.jobs.get, which roles/cloudscheduler.
# viewer holds (https://docs.cloud.google.com/iam/docs/roles-permissions/cloudscheduler).
JOB_READ_FIX = "cloudscheduler.jobs.get on it (roles/cloudscheduler.viewer)"
# Job.state (cloudscheduler v1 discovery document, Job.state.enumDescriptions): only ENABLED
# runs; what each other state means, and what gets the job running again.
JOB_STATES = {
    "PAUSED": (
        "is paused: it does not run",
        "resume it (jobs.resume reenables a PAUSED job): gcloud scheduler jobs resume {job} "
        "--location {location} --project {project}",
    ),
    "DISABLED": (
        "was disabled by Cloud Scheduler after an error: it does not run",
        'read why in its logs (Logs Explorer: resource.type="cloud_scheduler_job" '
        'resource.labels.job_id="{job}"); a user cannot resume a DISABLED job (jobs.resume '
        "takes PAUSED ones only)",
    ),
    "UPDATE_FAILED": (
        "is left UPDATE_FAILED by a failed update",
        "run `pulumi up` on the stack again: retrying UpdateJob until it succeeds recovers it",
    ),
}
# google.rpc.Code, the `code` of Job.status (a google.rpc.Status): the names of
# https://github.com/googleapis/googleapis/blob/master/google/rpc/code.proto.
RPC_CODES = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}
# code.proto maps HTTP 401 to UNAUTHENTICATED and 403 to PERMISSION_DENIED: a refused request.
REFUSED_CODES = frozenset({7, 16})


class StoreReader(Protocol):
    def store_metrics(self, name: str) -> dict[str, Any]: ...

    def get_store(self, name: str) -> dict[str, Any]: ...

    def list_operations(self, dataset: str, page_token: str | None = None) -> dict[str, Any]: ...

    def list_stores(self, dataset: str, page_token: str | None = None) -> dict[str, Any]: ...


class TableReader(Protocol):
    def table_info(self, table: TableUri) -> TableInfo | None: ...


class JobReader(Protocol):
    def get_job(self, name: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class JobName:
    project: str
    location: str
    job: str

    @property
    def name(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/jobs/{self.job}"

    @classmethod
    def parse(cls, text: str, *, flag: str) -> JobName:
        found = JOB_NAME.fullmatch(text)
        if found is None:
            raise DicomBqError(
                f"{flag} {excerpt(text)} is not a Cloud Scheduler job name "
                "(projects/PROJECT/locations/REGION/jobs/JOB): are these the outputs of a "
                "dicom-bq stack?"
            )
        return cls(found["project"], found["location"], found["job"])


@dataclass(frozen=True)
class StoreTarget:
    name: StoreName
    # None when the stack has no snapshot, or when its outputs predate each store having its own
    # (then only the first store's is known).
    snapshot_table: TableUri | None = None
    # None when the outputs predate the entries naming their snapshot's job.
    snapshot_job: JobName | None = None


@dataclass(frozen=True)
class StatusTarget:
    stores: tuple[StoreTarget, ...]
    snapshot_schedule: CronSchedule | None = None
    universe_domain: str = "googleapis.com"


@dataclass(frozen=True)
class Finding:
    kind: Kind
    subject: str
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class ExportRun:
    """One dicomStores.export operation, from OperationMetadata (healthcare v1 discovery
    document): counters are int64 strings, a missing one is 0; times are RFC 3339."""

    operation: str
    state: Literal["done", "running", "failed"]
    success: int
    failure: int
    created: datetime.datetime | None
    ended: datetime.datetime | None
    logs_url: str | None
    error: str | None

    @classmethod
    def from_api(cls, operation: Mapping[str, Any]) -> ExportRun:
        metadata = operation.get("metadata") or {}
        counter = metadata.get("counter") or {}
        error = operation.get("error")
        done = bool(operation.get("done"))
        return cls(
            operation=str(operation.get("name", "")),
            state="failed" if error else ("done" if done else "running"),
            success=int(counter.get("success") or 0),
            failure=int(counter.get("failure") or 0),
            created=rfc3339(metadata.get("createTime")),
            ended=rfc3339(metadata.get("endTime")),
            logs_url=metadata.get("logsUrl"),
            error=f"{error.get('code', '')} {error.get('message', '')}".strip() if error else None,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "store": None,  # unknown: STORE_UNKNOWN
            "state": self.state,
            "success": self.success,
            "failure": self.failure,
            "create_time": _iso(self.created),
            "end_time": _iso(self.ended),
            "logs_url": self.logs_url,
            "error": self.error,
        }


@dataclass(frozen=True)
class TableStatus:
    uri: str
    readable: bool
    exists: bool = False
    committed_rows: int = 0
    buffered_rows: int = 0
    last_modified: datetime.datetime | None = None

    @property
    def rows(self) -> int:
        return self.committed_rows + self.buffered_rows

    def as_dict(self) -> dict[str, Any]:
        known = self.readable and self.exists
        return {
            "uri": self.uri,
            "readable": self.readable,
            "exists": self.exists if self.readable else None,
            "rows": self.rows if known else None,
            "committed_rows": self.committed_rows if known else None,
            "buffered_rows": self.buffered_rows if known else None,
            "last_modified": _iso(self.last_modified),
        }


@dataclass(frozen=True)
class JobStatus:
    """The snapshot's Cloud Scheduler job, from its Job (cloudscheduler v1 discovery document):
    every field is output only; the times are google-datetime (RFC 3339)."""

    name: str
    readable: bool
    state: str | None = None
    # `status`, "the response from the target for the last attempted execution": a
    # google.rpc.Status, whose code 0 (OK) proto3 JSON leaves out, as it may the whole object.
    last_code: int = 0
    last_message: str = ""
    last_attempt: datetime.datetime | None = None  # lastAttemptTime: "the last job attempt started"
    next_run: datetime.datetime | None = None  # scheduleTime: "the next time the job is scheduled"
    # userUpdateTime, described as "the creation time of the job"; by its name also moved by a
    # user's update (a `pulumi up` that changes it): either way, no fire before it is the job's.
    user_updated: datetime.datetime | None = None

    @classmethod
    def from_api(cls, name: str, job: Mapping[str, Any]) -> JobStatus:
        status = job.get("status") or {}
        return cls(
            name=name,
            readable=True,
            state=str(job.get("state") or "STATE_UNSPECIFIED"),
            last_code=int(status.get("code") or 0),
            last_message=str(status.get("message") or ""),
            last_attempt=rfc3339(job.get("lastAttemptTime")),
            next_run=rfc3339(job.get("scheduleTime")),
            user_updated=rfc3339(job.get("userUpdateTime")),
        )

    @property
    def last_failed(self) -> bool:
        return self.last_code != 0

    @property
    def last_error(self) -> str:
        code = RPC_CODES.get(self.last_code)
        named = f"{self.last_code} {code}" if code else f"code {self.last_code}"
        return f"{named}: {excerpt(self.last_message)}"

    def as_dict(self) -> dict[str, Any]:
        known = self.readable
        return {
            "name": self.name,
            "readable": self.readable,
            "state": self.state,
            "last_attempt_time": _iso(self.last_attempt),
            "last_attempt_status": (
                {"code": self.last_code, "message": self.last_message} if known else None
            ),
            "schedule_time": _iso(self.next_run),
            "user_update_time": _iso(self.user_updated),
        }


@dataclass(frozen=True)
class SnapshotStatus:
    table: TableStatus
    schedule: str | None
    time_zone: str | None
    last_due: datetime.datetime | None
    job: JobStatus | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table.as_dict(),
            "schedule": self.schedule,
            "time_zone": self.time_zone,
            "last_due": _iso(self.last_due),
            "job": self.job.as_dict() if self.job else None,
        }


@dataclass(frozen=True)
class DatasetStores:
    """The DICOM stores of a Healthcare dataset (dicomStores.list), or why they are unknown."""

    names: tuple[str, ...] | None
    problem: str = ""

    @property
    def attribution(self) -> str:
        """Why the dataset's exports are not tied to a store, in words."""
        why = STORE_UNKNOWN
        if self.names is None:
            if not self.problem:  # not read: the exports themselves are unreadable
                return why
            return f"{why}; the dataset's DICOM stores could not be listed ({self.problem})"
        if len(self.names) > 1:
            ids = ", ".join(name.rsplit("/", 1)[-1] for name in self.names)
            return (
                f"{why}, and the dataset holds {len(self.names)} DICOM stores ({ids}): each "
                "export may be any one's, or verify's (its temporary stores export from here)"
            )
        return (
            f"{why}: they may be this store's, verify's (its temporary stores export from "
            "here) or a deleted store's"
        )


@dataclass(frozen=True)
class StoreStatus:
    name: str
    instance_count: int | None
    export_dataset: str
    exports: list[ExportRun]
    exports_readable: bool
    stream_tables: list[TableStatus]
    snapshot: SnapshotStatus | None = None
    dataset_stores: DatasetStores = DatasetStores(None)

    def as_dict(self) -> dict[str, Any]:
        names = self.dataset_stores.names
        return {
            "name": self.name,
            "instance_count": self.instance_count,
            # Operations belong to the dataset and do not name their store (STORE_UNKNOWN).
            "exports": {
                "dataset": self.export_dataset,
                "readable": self.exports_readable,
                "store": None,
                "attribution": "unknown",
                "why": self.dataset_stores.attribution,
                "dataset_stores": list(names) if names is not None else None,
                "recent": [run.as_dict() for run in self.exports],
            },
            "stream_tables": [table.as_dict() for table in self.stream_tables],
            "snapshot": self.snapshot.as_dict() if self.snapshot else None,
        }


@dataclass
class StatusReport:
    checked_at: datetime.datetime
    stores: list[StoreStatus] = field(default_factory=list)
    # The stack's snapshot schedule, whether or not a store's table is known.
    snapshot_schedule: CronSchedule | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_FAILED

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked_at": _iso(self.checked_at),
            "stores": [store.as_dict() for store in self.stores],
            "findings": [
                {"kind": f.kind, "subject": f.subject, "detail": f.detail, "fix": f.fix}
                for f in self.findings
            ],
        }


def _iso(moment: datetime.datetime | None) -> str | None:
    return moment.astimezone(datetime.UTC).isoformat() if moment else None


# -- what to look at -----------------------------------------------------------------------------


def status_target(outputs: Mapping[str, Any], store_id: str | None = None) -> StatusTarget:
    """What the stack's outputs say to look at (every store, or the one `store_id` names), each
    store with its own snapshot table; DicomBqError (bad input) before any request."""
    parsed = StackOutputs.parse(outputs)
    listed = OutputNames.STORES if OutputNames.STORES in outputs else OutputNames.STORE
    if parsed.snapshot_table_uri:
        # The first store's: checked under its own name, whatever store is selected.
        TableUri.parse(
            parsed.snapshot_table_uri, flag=f"the stack output {OutputNames.SNAPSHOT_TABLE}"
        )
    stores = []
    for store in parsed.selected_stores(store_id):
        try:
            name = StoreName.parse(store.name)
        except DicomBqError as error:
            raise DicomBqError(
                f"the stack output {listed} {error.message.removeprefix('--store ')}"
            ) from None
        table = job = None
        if store.snapshot_table:
            table = TableUri.parse(
                store.snapshot_table,
                flag=f"the stack output {OutputNames.STORES} snapshotTable of {store.store_id!r}",
            )
        if store.snapshot_job:
            job = JobName.parse(
                store.snapshot_job,
                flag=f"the stack output {OutputNames.STORES} {StoreEntryKeys.SNAPSHOT_JOB} of "
                f"{store.store_id!r}",
            )
        stores.append(StoreTarget(name, table, job))
    schedule = None
    if parsed.snapshot_schedule is not None:
        if not any(store.snapshot_table for store in parsed.stores):
            raise DicomBqError(
                f"the stack output {OutputNames.SNAPSHOT_SCHEDULE} has no "
                f"{OutputNames.SNAPSHOT_TABLE} to go with it: is the stack's `pulumi up` complete?"
            )
        schedule = parse_schedule(
            parsed.snapshot_schedule.get("schedule", ""),
            parsed.snapshot_schedule.get("timeZone"),
            what=f"the stack output {OutputNames.SNAPSHOT_SCHEDULE}",
        )
    return StatusTarget(tuple(stores), schedule, parsed.universe_domain)


# -- reading, and judging ------------------------------------------------------------------------


@dataclass
class _Collector:
    healthcare: StoreReader
    tables: TableReader
    scheduler: JobReader
    now: datetime.datetime
    snapshot_grace: datetime.timedelta
    findings: list[Finding] = field(default_factory=list)
    exports_by_dataset: dict[str, list[ExportRun] | None] = field(default_factory=dict)
    stores_by_dataset: dict[str, DatasetStores] = field(default_factory=dict)

    def read(
        self, subject: str, what: str, fix: str, call: Callable[[], T]
    ) -> tuple[T | None, int | None]:
        """`call`'s answer and None; or None, the HTTP status Google refused it with (0 when
        unknown) and an `unreadable` finding."""
        try:
            return call(), None
        except ApiCallError as error:
            status = error.status
            detail = f"cannot {what}: {error.status} {error.reason} {error.message}"
        except DicomBqError as error:
            if error.exit_code != EXIT_FAILED:
                raise
            status = 0
            detail = f"cannot {what}: {error.message}"
        self.findings.append(Finding("unreadable", subject, detail, fix))
        return None, status

    def table(self, table: TableUri) -> TableStatus:
        info, refused = self.read(
            table.uri,
            "read the table (tables.get)",
            f"grant bigquery.tables.get on {table.uri} (roles/bigquery.metadataViewer)",
            lambda: self.tables.table_info(table),
        )
        if info is None:
            return TableStatus(table.uri, readable=refused is None)
        return TableStatus(
            table.uri,
            readable=True,
            exists=True,
            committed_rows=info.committed_rows,
            buffered_rows=info.buffered_rows,
            last_modified=info.last_modified,
        )

    def exports(self, store: StoreName) -> list[ExportRun] | None:
        dataset = store.dataset_name
        if dataset not in self.exports_by_dataset:
            self.exports_by_dataset[dataset], _ = self.read(
                dataset,
                "list the dataset's operations (operations.list)",
                f"grant healthcare.operations.list on {dataset}",
                lambda: self._list_exports(dataset),
            )
        return self.exports_by_dataset[dataset]

    def dataset_stores(self, store: StoreName) -> DatasetStores:
        """The dataset's DICOM stores, read once per dataset. Only what the exports line says
        depends on it: a refusal is said there, not made a finding."""
        dataset = store.dataset_name
        if dataset not in self.stores_by_dataset:
            names: list[str] = []
            token: str | None = None
            try:
                for _ in range(LISTING_PAGES):
                    page = self.healthcare.list_stores(dataset, token)
                    names += [str(s.get("name")) for s in page.get("dicomStores") or []]
                    token = page.get("nextPageToken")
                    if not token:
                        break
                found = DatasetStores(tuple(sorted(names)))
            except ApiCallError as error:
                found = DatasetStores(
                    None,
                    f"dicomStores.list: {error.status} {error.reason}; it needs "
                    "healthcare.dicomStores.list on the dataset",
                )
            except DicomBqError as error:
                if error.exit_code != EXIT_FAILED:
                    raise
                found = DatasetStores(None, f"dicomStores.list: {error.message}")
            self.stores_by_dataset[dataset] = found
        return self.stores_by_dataset[dataset]

    def _list_exports(self, dataset: str) -> list[ExportRun]:
        runs = [ExportRun.from_api(op) for op in export_operations(self.healthcare, dataset)]
        # The listing's order is not documented: newest first by createTime.
        oldest = datetime.datetime.min.replace(tzinfo=datetime.UTC)
        runs.sort(key=lambda run: run.created or oldest, reverse=True)
        return runs[:RECENT_EXPORTS]

    def store(self, target: StoreTarget, schedule: CronSchedule | None) -> StoreStatus:
        store = target.name
        name = store.name
        # Google's access-control table does not list getDICOMStoreMetrics; like
        # getFHIRStoreMetrics with healthcare.fhirStores.get, it is taken to need
        # healthcare.dicomStores.get (inferred, not documented).
        metrics, refused = self.read(
            name,
            "read the store's metrics (getDICOMStoreMetrics)",
            f"check that {name} exists; reading it needs healthcare.dicomStores.get on it",
            lambda: self.healthcare.store_metrics(name),
        )
        config = None
        if refused != 404:  # a missing store has no configuration to read either
            config, _ = self.read(
                name,
                "read the store (dicomStores.get)",
                f"grant healthcare.dicomStores.get on {name}",
                lambda: self.healthcare.get_store(name),
            )
        # DicomStoreMetrics.instanceCount is an int64 serialized as a JSON string (healthcare
        # v1 discovery document); a store with no instance may leave it out.
        instances = int(metrics.get("instanceCount") or 0) if metrics is not None else None
        exports = self.exports(store)
        tables = [
            self.table(TableUri.parse(uri, flag="streamConfigs.tableUri"))
            for uri in stream_tables(config or {})
        ]
        stores = self.dataset_stores(store) if exports is not None else DatasetStores(None)
        self._judge_exports(exports or [], store.dataset)
        if instances is not None:
            for table in tables:
                self._judge_stream(table, instances)
        return StoreStatus(
            name=name,
            instance_count=instances,
            export_dataset=store.dataset_name,
            exports=exports or [],
            exports_readable=exports is not None,
            stream_tables=tables,
            dataset_stores=stores,
            snapshot=(
                self.snapshot(target.snapshot_table, schedule, store, target.snapshot_job)
                if target.snapshot_table is not None
                else None
            ),
        )

    def _judge_exports(self, runs: list[ExportRun], dataset: str) -> None:
        """Each finished export among the dataset's latest that failed or left instances out is
        a finding: which store it was of is unknown (STORE_UNKNOWN), so a later success, maybe
        verify's or another store's, does not show that its store exports again."""
        for index, run in enumerate(runs):
            if run.state == "running" or any(f.subject == run.operation for f in self.findings):
                continue  # not finished, or judged already for another store of the dataset
            if run.state != "failed" and not run.failure:
                continue
            later = [r for r in runs[:index] if r.state == "done" and not r.failure]
            unknown = (
                f"; its store is unknown ({STORE_UNKNOWN}), so the later export that succeeded "
                "may be another store's or verify's"
                if later
                else f"; its store is unknown ({STORE_UNKNOWN})"
            )
            where = f"its errors are logged at {run.logs_url}" if run.logs_url else ""
            describe = f"see `dicom-bq operations describe {run.operation}`"
            stays = (
                f"this finding stays while it is among dataset {dataset}'s {RECENT_EXPORTS} "
                "latest exports"
            )
            if run.state == "failed":
                self.findings.append(
                    Finding(
                        "export-failed",
                        run.operation,
                        f"an export of dataset {dataset} failed ({run.error}) at "
                        f"{_when(run.ended)}{unknown}",
                        f"{where or describe}; fix the cause, then export again ({stays})",
                    )
                )
            else:
                self.findings.append(
                    Finding(
                        "export-incomplete",
                        run.operation,
                        f"an export of dataset {dataset} left out {run.failure} instance(s) "
                        f"({run.success} exported) at {_when(run.ended)}{unknown}",
                        f"{where or describe}: one entry per instance left out ({stays})",
                    )
                )

    def _judge_stream(self, table: TableStatus, instances: int) -> None:
        # Streaming inserts a row for every instance stored (and deletions are not applied to
        # the table), so a stream table holds at least one row per instance
        # (https://cloud.google.com/healthcare-api/docs/how-tos/dicom-bigquery-streaming; healthcare
        # v1 discovery document, GoogleCloudHealthcareV1DicomStreamConfig.bigqueryDestination).
        if not table.readable:
            return
        if table.rows >= instances:
            return
        buffered = (
            " (the streaming buffer's count is a lower-bound estimate: check again in a few "
            "minutes)"
            if table.buffered_rows
            else ""
        )
        self.findings.append(
            Finding(
                "stream-behind",
                table.uri,
                f"{table.rows} row(s) for {instances} instance(s) in the store{buffered}",
                "instances stored before the stream was configured are not streamed, nor is one "
                "whose row passes BigQuery's 1 MB streaming limit (its error is in Cloud "
                "Logging); an export fills the gap",
            )
        )

    def job(self, name: JobName) -> JobStatus:
        answer, _ = self.read(
            name.name,
            "read the snapshot's Cloud Scheduler job (jobs.get)",
            f"check that {name.name} exists (`pulumi up` creates it); reading it needs "
            f"{JOB_READ_FIX}",
            lambda: self.scheduler.get_job(name.name),
        )
        if answer is None:
            return JobStatus(name.name, readable=False)
        job = JobStatus.from_api(name.name, answer)
        if job.state != "ENABLED":
            said, fix = JOB_STATES.get(
                job.state or "",
                (f"is {job.state}, not ENABLED: it may not run", "see it in the console"),
            )
            self.findings.append(
                Finding(
                    "snapshot-job-paused",
                    name.name,
                    f"the snapshot job {said}",
                    fix.format(job=name.job, location=name.location, project=name.project),
                )
            )
        if job.last_failed:
            logs = (
                f'its log: Logs Explorer resource.type="cloud_scheduler_job" '
                f'resource.labels.job_id="{name.job}"'
            )
            # The job's request never reached a started export: the account lost its export
            # grant, or Cloud Scheduler's agent its Token Creator on the account (components/
            # snapshot.py); retry_count is 0, so the next fire is the next attempt.
            fix = (
                "`pulumi up` restores the snapshot account's grant on the store and Cloud "
                f"Scheduler's Token Creator on the account; {logs}"
                if job.last_code in REFUSED_CODES
                else f"the next scheduled fire tries again; {logs}"
            )
            self.findings.append(
                Finding(
                    "snapshot-job-failed",
                    name.name,
                    f"the snapshot job's last attempt, at {_when(job.last_attempt)}, failed: "
                    f"{job.last_error}; no export started",
                    fix,
                )
            )
        return job

    def snapshot(
        self,
        table: TableUri,
        schedule: CronSchedule | None,
        store: StoreName,
        job_name: JobName | None,
    ) -> SnapshotStatus:
        status = self.table(table)
        job_status = self.job(job_name) if job_name is not None else None
        if job_name is not None:
            job = (
                f"check the Cloud Scheduler job (gcloud scheduler jobs describe {job_name.job} "
                f"--location {job_name.location} --project {job_name.project}): its last "
                "attempt, then"
            )
        else:
            # The stack names each store's job after the store (naming.snapshot_job_name).
            job = (
                f"check the Cloud Scheduler job of store {store.store} (gcloud scheduler jobs "
                f"list --project {store.project}): its last attempt, then"
            )
        due = None
        if schedule is not None:
            # The export the scheduler starts takes a while: a fire counts once its grace is over.
            due = schedule.previous_fire(self.now - self.snapshot_grace)
        created = job_status.user_updated if job_status is not None else None
        if due is not None and created is not None and due < created:
            # The schedule fired before the job existed (deploy day: `pulumi up` after last
            # night's 02:00), or before a user last updated it: that fire was never the job's,
            # so there is no missed run to judge yet. An unreadable job leaves this unknown,
            # and the fire is judged as before.
            due = None
        judged = f'schedule "{schedule.expression}" ({schedule.time_zone})' if schedule else ""
        if due is not None and status.readable:
            if not status.exists:
                self.findings.append(
                    Finding(
                        "snapshot-missing",
                        table.uri,
                        f"no snapshot table, though its {judged} fired at {_when(due)}",
                        f"{job} the export's logs",
                    )
                )
            elif status.last_modified is None or status.last_modified < due:
                self.findings.append(
                    Finding(
                        "snapshot-stale",
                        table.uri,
                        f"last modified {_when(status.last_modified)}, before its {judged} "
                        f"fired at {_when(due)}",
                        f"{job} the dataset's last exports (above)",
                    )
                )
        return SnapshotStatus(
            table=status,
            schedule=schedule.expression if schedule else None,
            time_zone=schedule.time_zone if schedule else None,
            last_due=due,
            job=job_status,
        )


def collect_status(
    *,
    target: StatusTarget,
    healthcare: StoreReader,
    tables: TableReader,
    scheduler: JobReader,
    now: datetime.datetime,
    snapshot_grace: datetime.timedelta,
) -> StatusReport:
    """Read every part of the target, then list what disagrees; only reads."""
    collector = _Collector(healthcare, tables, scheduler, now, snapshot_grace)
    report = StatusReport(checked_at=now)
    report.stores = [collector.store(store, target.snapshot_schedule) for store in target.stores]
    report.snapshot_schedule = target.snapshot_schedule
    report.findings = collector.findings
    return report


class _TablesByProject:
    """One BigQuery client per project: a table's reads are billed to its own project."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.clients: dict[str, Any] = {}

    def table_info(self, table: TableUri) -> TableInfo | None:
        from dicom_bq.clients.bigquery import BigQueryTables

        if table.project not in self.clients:
            self.clients[table.project] = BigQueryTables(self.connection, table.project)
        info: TableInfo | None = self.clients[table.project].table_info(table)
        return info


class _SchedulerJobs:
    """Cloud Scheduler's jobs.get (cloudscheduler v1: GET v1/{+name}, answers a Job)."""

    def __init__(self, clients: DiscoveryClients) -> None:
        self.clients = clients

    def get_job(self, name: str) -> dict[str, Any]:
        api = self.clients.api("cloudscheduler")
        job: dict[str, Any] = api.call(api.service.projects().locations().jobs().get(name=name))
        return job


def check_status(
    *,
    target: Target,
    access: GoogleAccess,
    snapshot_grace: float,
    now: datetime.datetime,
) -> StatusReport:
    """`dicom-bq status` on a stack's outputs (through the Pulumi CLI) or a saved copy: check
    them (bad input sends nothing), then read."""
    from dicom_bq.clients.healthcare import HealthcareApi

    looked_at = status_target(target.outputs_document(), target.store_id)
    connection = access.connection(default_universe=looked_at.universe_domain)
    return collect_status(
        target=looked_at,
        healthcare=HealthcareApi(connection, "v1"),
        tables=_TablesByProject(connection),
        scheduler=_SchedulerJobs(DiscoveryClients(connection)),
        now=now,
        snapshot_grace=datetime.timedelta(seconds=snapshot_grace),
    )


# -- for people ----------------------------------------------------------------------------------


def _when(moment: datetime.datetime | None) -> str:
    if moment is None:
        return "unknown"
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _until(start: datetime.datetime | None, end: datetime.datetime | None) -> str:
    if end is None:
        return "now"
    same_day = start is not None and _when(start)[:10] == _when(end)[:10]
    return _when(end)[11:] if same_day else _when(end)


def _wrap(text: str, indent: str) -> list[str]:
    # Names and URLs are never broken: a line holding one may pass 80 columns, to stay copyable.
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [indent]


def _table_line(table: TableStatus) -> str:
    if not table.readable:
        return "unreadable (see findings)"
    if not table.exists:
        return "not created yet"
    buffered = f" ({table.buffered_rows} buffered)" if table.buffered_rows else ""
    return f"{table.rows} rows{buffered}, modified {_when(table.last_modified)}"


def _snapshot_lines(snapshot: SnapshotStatus | None, schedule: CronSchedule | None) -> list[str]:
    if snapshot is None:
        if schedule is None:
            return []
        why = "the stack's outputs predate each store having its own snapshot table: `pulumi up` "
        return ["  snapshot   unknown", *_wrap(why + "adds them", INDENT)]
    lines = [f"  snapshot   {snapshot.table.uri}", f"{INDENT}{_table_line(snapshot.table)}"]
    if snapshot.schedule:
        lines += _wrap(
            f'schedule "{snapshot.schedule}" ({snapshot.time_zone}), last due '
            f"{_when(snapshot.last_due) if snapshot.last_due else 'never yet'}",
            INDENT,
        )
    if snapshot.job is not None:
        lines += _wrap(_job_line(snapshot.job), INDENT)
    return lines


def _job_line(job: JobStatus) -> str:
    # The job's ID only: its full name is in the finding or --json, and would not fit.
    name = f"job {job.name.rsplit('/', 1)[-1]}"
    if not job.readable:
        return f"{name} unreadable (see findings)"
    if job.last_attempt is None:
        last = "no attempt yet"
    else:
        result = f"failed ({job.last_error})" if job.last_failed else "ok"
        last = f"last attempt {_when(job.last_attempt)} {result}"
    following = f", next {_when(job.next_run)}" if job.next_run else ""
    return f"{name} {job.state}, {last}{following}"


def report_lines(report: StatusReport) -> list[str]:
    """The report in at most 80 columns, but for names and URLs that cannot be broken."""
    lines = [f"dicom-bq status at {_when(report.checked_at)}"]
    for store in report.stores:
        lines += ["", "store", f"  {store.name}"]
        count = "unknown" if store.instance_count is None else str(store.instance_count)
        lines.append(f"  instances  {count}")
        lines.append(
            f"  exports    of dataset {store.export_dataset.rsplit('/', 1)[-1]}, store unknown"
        )
        if store.exports_readable:
            lines += _wrap(store.dataset_stores.attribution, INDENT)
        if not store.exports_readable:
            lines.append("             unreadable (see findings)")
        elif not store.exports:
            lines.append("             none in the last 30 days")
        for run in store.exports:
            span = f"{_when(run.created)} -> {_until(run.created, run.ended)}"
            lines.append(f"    {run.state:<8} {run.operation.rsplit('/', 1)[-1]:<8} {span}"[:WIDTH])
            lines.append(f"             {run.success} exported, {run.failure} failed")
        for table in store.stream_tables:
            lines.append(f"  stream     {table.uri}")
            lines.append(f"             {_table_line(table)}")
        lines += _snapshot_lines(store.snapshot, report.snapshot_schedule)
    lines.append("")
    if report.ok:
        lines.append("healthy: nothing disagrees")
        return lines
    lines.append(f"{len(report.findings)} finding(s) need attention:")
    for finding in report.findings:
        lines += [f"  {finding.kind}", f"    {finding.subject}"]
        lines += _wrap(finding.detail, "    ")
        if finding.fix:
            lines += _wrap(f"fix: {finding.fix}", "    ")
    return lines
