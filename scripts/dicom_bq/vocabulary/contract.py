"""The stack's outputs: their names, written once by the program, read by every command.

The program exports `OutputNames` from the component's typed outputs (`stack_exports`); `plan`,
`verify`, `audit` and `review` read them back with `StackOutputs.parse`, so an output renamed here
is renamed everywhere, and a missing one is reported the same way everywhere. No Pulumi import:
the CLI reads saved outputs without the SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dicom_bq.errors import DicomBqError
from dicom_bq.texts import excerpt

DEFAULT_UNIVERSE = "googleapis.com"
# The longest text output: a bq:// URI is at most 2000 characters, a store name about 800.
MAX_OUTPUT_TEXT = 4096


class OutputNames:
    STORE = "dicomStoreName"
    DICOMWEB = "dicomwebUrl"
    # Every store, [StoreOutputs.as_entry()], in the stack's order (snapshotTable, its own
    # snapshot's bq://P.D.T, and snapshotJob, the Cloud Scheduler job that writes it, only with a
    # snapshot schedule); STORE and DICOMWEB stay the first one's for what read them before
    # stacks had several.
    STORES = "dicomStores"
    AGENT = "agentEmail"
    SOURCE_PROJECT = "sourceProject"
    BIGQUERY_PROJECT = "bigqueryProject"
    BIGQUERY_DATASET = "bigqueryDataset"  # "PROJECT.DATASET"
    VERIFICATION_TABLE = "verificationTableUri"
    FILTER_BUCKET = "filterBucket"
    UNIVERSE = "universeDomain"
    GRANTS = "grants"  # [{role, member, scope, reason}]
    ALERT_POLICIES = "alertPolicies"  # [display name of each alert policy]; [] without alerts
    # Optional, a nightly snapshot export: the first store's table (bq://P.D.T; each store's is in
    # STORES, this one stays for what read it before each store had its own) and Cloud
    # Scheduler's {"schedule": unix-cron, "timeZone": tz name}, the Job fields of the same names.
    SNAPSHOT_TABLE = "snapshotTable"
    SNAPSHOT_SCHEDULE = "snapshotSchedule"


class StoreEntryKeys:
    """One dicomStores entry's keys: written by StoreOutputs.as_entry, read by _parse_stores."""

    ID = "id"
    NAME = "name"
    DICOMWEB = "dicomwebUrl"
    SNAPSHOT_TABLE = "snapshotTable"
    SNAPSHOT_JOB = "snapshotJob"


@dataclass(frozen=True)
class StoreOutputs:
    """One DICOM store of the stack, as the dicomStores output lists it."""

    store_id: str
    name: str  # projects/P/locations/L/datasets/D/dicomStores/S
    dicomweb_url: str | None = None
    snapshot_table: str | None = None  # bq://P.D.T of its nightly snapshot, with a schedule
    # projects/P/locations/R/jobs/ID, the Cloud Scheduler job of that snapshot
    snapshot_job: str | None = None

    def as_entry(self) -> dict[str, object]:
        """The store's dicomStores entry, as the program exports it; without a snapshot the
        keys are left out (a stack without a schedule never had one)."""
        entry: dict[str, object] = {
            StoreEntryKeys.ID: self.store_id,
            StoreEntryKeys.NAME: self.name,
            StoreEntryKeys.DICOMWEB: self.dicomweb_url,
        }
        if self.snapshot_table is not None:
            entry[StoreEntryKeys.SNAPSHOT_TABLE] = self.snapshot_table
        if self.snapshot_job is not None:
            entry[StoreEntryKeys.SNAPSHOT_JOB] = self.snapshot_job
        return entry


def _checked_text(name: str, value: str) -> str:
    """An output's text, refused when it holds a control character or is longer than any name
    the stack exports: a name ending in a newline would reach a request's URL."""
    if len(value) > MAX_OUTPUT_TEXT or not value.isprintable():
        raise DicomBqError(
            f"the stack output {name} {excerpt(value)} holds a control character or is too "
            "long: are these the outputs of a dicom-bq stack?"
        )
    return value


def _unlisted(what: str) -> DicomBqError:
    return DicomBqError(
        f"the stack output {OutputNames.STORES} {what}: are these the outputs of a dicom-bq stack?"
    )


def _parse_stores(
    document: Mapping[str, Any], first: str | None, first_snapshot: str | None
) -> list[StoreOutputs]:
    """The stores, each with its snapshot table and job; a stack deployed before each store had
    its own table exported only the first store's, as snapshotTable (the others' are not known),
    and one deployed before the entries named their job names none."""
    listed = document.get(OutputNames.STORES)
    if listed is None:
        # Deployed before stacks had several stores: the one store is dicomStoreName.
        return (
            [StoreOutputs(first.rsplit("/", 1)[-1], first, None, first_snapshot)] if first else []
        )
    if not isinstance(listed, list) or not all(
        isinstance(entry, dict)
        and isinstance(entry.get(StoreEntryKeys.ID), str)
        and isinstance(entry.get(StoreEntryKeys.NAME), str)
        for entry in listed
    ):
        raise _unlisted(f"is not a list of stores ({StoreEntryKeys.ID}, {StoreEntryKeys.NAME})")
    stores = []
    for index, entry in enumerate(listed):
        for key in (StoreEntryKeys.ID, StoreEntryKeys.NAME):
            _checked_text(f"{OutputNames.STORES}[{index}].{key}", entry[key])
        table = entry.get(StoreEntryKeys.SNAPSHOT_TABLE)
        if StoreEntryKeys.SNAPSHOT_TABLE not in entry:
            snapshot = first_snapshot if index == 0 else None
        elif table is None or isinstance(table, str):
            snapshot = table or None
            if snapshot is not None:
                _checked_text(
                    f"{OutputNames.STORES}[{index}].{StoreEntryKeys.SNAPSHOT_TABLE}", snapshot
                )
        else:
            raise _unlisted(
                f"gives store {entry[StoreEntryKeys.ID]!r} a {StoreEntryKeys.SNAPSHOT_TABLE} "
                f"that is {type(table).__name__}, not text"
            )
        job = entry.get(StoreEntryKeys.SNAPSHOT_JOB)
        if job is not None and not isinstance(job, str):
            raise _unlisted(
                f"gives store {entry[StoreEntryKeys.ID]!r} a {StoreEntryKeys.SNAPSHOT_JOB} "
                f"that is {type(job).__name__}, not text"
            )
        if job:
            _checked_text(f"{OutputNames.STORES}[{index}].{StoreEntryKeys.SNAPSHOT_JOB}", job)
        url = entry.get(StoreEntryKeys.DICOMWEB)
        stores.append(
            StoreOutputs(
                store_id=entry[StoreEntryKeys.ID],
                name=entry[StoreEntryKeys.NAME],
                dicomweb_url=url if isinstance(url, str) else None,
                snapshot_table=snapshot,
                snapshot_job=job or None,
            )
        )
    return stores


@dataclass(frozen=True)
class StackOutputs:
    """A stack's outputs, typed; `missing` says which were absent or empty."""

    store_name: str | None = None
    dicomweb_url: str | None = None
    agent_email: str | None = None
    source_project: str | None = None
    bigquery_project: str | None = None
    bigquery_dataset_id: str | None = None
    verification_table_uri: str | None = None
    filter_bucket: str | None = None
    universe_domain: str = DEFAULT_UNIVERSE
    grants: list[dict[str, str]] = field(default_factory=list)
    snapshot_table_uri: str | None = None
    snapshot_schedule: dict[str, str] | None = None
    stores: list[StoreOutputs] = field(default_factory=list)

    @classmethod
    def parse(cls, document: Mapping[str, Any]) -> StackOutputs:
        def text(name: str) -> str | None:
            value = document.get(name)
            if value is None or value == "":
                return None
            if not isinstance(value, str):
                raise DicomBqError(
                    f"the stack output {name} is {type(value).__name__}, not text: are these "
                    "the outputs of a dicom-bq stack?"
                )
            return _checked_text(name, value)

        grants = document.get(OutputNames.GRANTS) or []
        if not isinstance(grants, list) or not all(
            isinstance(g, dict) and {"role", "member", "scope"} <= g.keys() for g in grants
        ):
            raise DicomBqError(
                f"the stack output {OutputNames.GRANTS} is not a list of grants (role, member, "
                "scope): are these the outputs of a dicom-bq stack?"
            )
        dataset = text(OutputNames.BIGQUERY_DATASET)
        schedule = document.get(OutputNames.SNAPSHOT_SCHEDULE) or None
        if schedule is not None and not (
            isinstance(schedule, dict) and all(isinstance(v, str) for v in schedule.values())
        ):
            raise DicomBqError(
                f"the stack output {OutputNames.SNAPSHOT_SCHEDULE} is not an object of "
                '{"schedule": "CRON", "timeZone": "TZ"}: are these the outputs of a dicom-bq stack?'
            )
        store_name = text(OutputNames.STORE)
        snapshot_table = text(OutputNames.SNAPSHOT_TABLE)
        return cls(
            stores=_parse_stores(document, store_name, snapshot_table),
            store_name=store_name,
            dicomweb_url=text(OutputNames.DICOMWEB),
            agent_email=text(OutputNames.AGENT),
            source_project=text(OutputNames.SOURCE_PROJECT),
            bigquery_project=text(OutputNames.BIGQUERY_PROJECT),
            bigquery_dataset_id=dataset.rsplit(".", 1)[-1] if dataset else None,
            verification_table_uri=text(OutputNames.VERIFICATION_TABLE),
            filter_bucket=text(OutputNames.FILTER_BUCKET),
            universe_domain=text(OutputNames.UNIVERSE) or DEFAULT_UNIVERSE,
            grants=[{str(k): str(v) for k, v in g.items()} for g in grants],
            snapshot_table_uri=snapshot_table,
            snapshot_schedule=dict(schedule) if schedule is not None else None,
        )

    def selected_stores(self, store_id: str | None = None) -> list[StoreOutputs]:
        """The store named `store_id`, or every store when it is None."""
        if not self.stores:
            raise DicomBqError(
                f"the stack outputs lack {OutputNames.STORES} and {OutputNames.STORE}: is this a "
                "dicom-bq stack, and has `pulumi up` completed on it?"
            )
        if store_id is None:
            return list(self.stores)
        chosen = [store for store in self.stores if store.store_id == store_id]
        if not chosen:
            known = ", ".join(store.store_id for store in self.stores)
            raise DicomBqError(
                f"the stack has no DICOM store {store_id!r}: its stores are {known}; pass one of "
                "them with --store-id, or leave it out to check them all"
            )
        return chosen

    def require(self, *names: str) -> None:
        """Raise, naming every missing output, when one of `names` is absent."""
        values = {
            OutputNames.STORE: self.store_name,
            OutputNames.AGENT: self.agent_email,
            OutputNames.SOURCE_PROJECT: self.source_project,
            OutputNames.BIGQUERY_PROJECT: self.bigquery_project,
            OutputNames.BIGQUERY_DATASET: self.bigquery_dataset_id,
            OutputNames.VERIFICATION_TABLE: self.verification_table_uri,
            OutputNames.GRANTS: self.grants,
        }
        missing = [name for name in names if not values.get(name)]
        if missing:
            raise DicomBqError(
                f"the stack outputs lack {', '.join(missing)}: is this a dicom-bq stack, and has "
                "`pulumi up` completed on it?"
            )
