"""Starting an export and following it, with the IAM-propagation retry and its explanation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dicom_bq.errors import EXIT_FAILED, DicomBqError
from dicom_bq.healthcare_api import ApiCallError, ExportRequest, HealthcareApi
from dicom_bq.operations import PERMISSION_DENIED, Follower, OperationState
from dicom_bq.refs import GcsUri, StoreName, TableUri, WriteDisposition
from dicom_bq.retry import PERMISSION_BACKOFF, Backoff, Clock, SystemClock

DEFAULT_PERMISSION_WINDOW = 600.0


@dataclass(frozen=True)
class ExportPlan:
    store: StoreName
    table: TableUri
    write_disposition: WriteDisposition | None = None
    force: bool | None = None
    filter: GcsUri | None = None

    def request(self) -> ExportRequest:
        return ExportRequest(
            store=self.store.name,
            table_uri=self.table.uri,
            write_disposition=self.write_disposition,
            force=self.force,
            filter_uri=self.filter.uri if self.filter else None,
        )

    @property
    def truncates(self) -> bool:
        return self.force is True or self.write_disposition is WriteDisposition.WRITE_TRUNCATE


def agent_description(store: StoreName, agent_email: str | None) -> str:
    if agent_email:
        return agent_email
    return (
        f"service-PROJECT_NUMBER@gcp-sa-healthcare.iam.gserviceaccount.com (PROJECT_NUMBER of "
        f"{store.project}: `gcloud projects describe {store.project} "
        "--format='value(projectNumber)'`)"
    )


def explain_permission_denied(
    plan: ExportPlan, agent_email: str | None, waited: float, api_message: str
) -> str:
    agent = agent_description(plan.store, agent_email)
    member = f"serviceAccount:{agent_email}" if agent_email else "serviceAccount:AGENT"
    table = plan.table
    needs = [
        f"roles/bigquery.dataEditor on BigQuery dataset {table.project}:{table.dataset}",
        f"roles/bigquery.jobUser on project {table.project}",
    ]
    if plan.filter:
        needs.append(f"roles/storage.objectViewer on bucket gs://{plan.filter.bucket}")
    return (
        f"The export was refused with PERMISSION_DENIED for {waited:.0f}s: {api_message}. "
        f"The Cloud Healthcare service agent of project {plan.store.project}, {agent}, needs "
        + "; ".join(needs)
        + ". Grants made a few minutes ago may still be propagating (usually 2 minutes, "
        "sometimes 7 or more): retry with a longer --permission-window. Check what the agent "
        f"holds with `gcloud projects get-iam-policy {table.project} --flatten=bindings "
        f"--filter=\"bindings.members:{member}\" --format='value(bindings.role)'` and "
        f"`bq show --format=prettyjson {table.project}:{table.dataset}`; add what is missing "
        "with `pulumi up` on the stack that provisions this path. Your own account also needs "
        "healthcare.dicomStores.export on the store (roles/healthcare.dicomStoreAdmin)."
    )


@dataclass
class Exporter:
    api: HealthcareApi
    clock: Clock = field(default_factory=SystemClock)
    permission_window: float = DEFAULT_PERMISSION_WINDOW
    permission_backoff: Backoff = PERMISSION_BACKOFF
    agent_email: str | None = None

    def start(self, plan: ExportPlan, on_wait: Callable[[str, float], None] | None = None) -> str:
        """Send the export; returns the operation name. Retries PERMISSION_DENIED in the window."""
        started = self.clock.monotonic()
        delays = self.permission_backoff.delays()
        while True:
            try:
                operation = self.api.export(plan.request())
                return str(operation["name"])
            except ApiCallError as error:
                waited = self.clock.monotonic() - started
                if error.status != 403 and error.reason != "PERMISSION_DENIED":
                    raise DicomBqError(
                        f"the export request was refused ({error.status} {error.reason}): "
                        f"{error.message}",
                        exit_code=EXIT_FAILED,
                    ) from None
                delay = next(delays)
                if waited + delay > self.permission_window:
                    raise DicomBqError(
                        explain_permission_denied(plan, self.agent_email, waited, error.message),
                        exit_code=EXIT_FAILED,
                    ) from None
                if on_wait:
                    on_wait(f"PERMISSION_DENIED ({error.message})", delay)
                self.clock.sleep(delay)

    def run(
        self,
        plan: ExportPlan,
        follower: Follower,
        timeout: float | None,
        on_start: Callable[[str], None] | None = None,
        on_update: Callable[[OperationState, float], None] | None = None,
        on_wait: Callable[[str, float], None] | None = None,
    ) -> OperationState:
        """Export and follow; an operation that fails on the agent's permission is tried again
        while the permission window lasts, since that is what IAM propagation looks like."""
        started = self.clock.monotonic()
        delays = self.permission_backoff.delays()
        while True:
            name = self.start(plan, on_wait)
            if on_start:
                on_start(name)
            remaining = None if timeout is None else timeout - (self.clock.monotonic() - started)
            state = follower.follow(name, remaining, on_update)
            if state.error_code != PERMISSION_DENIED:
                return state
            waited = self.clock.monotonic() - started
            delay = next(delays)
            if waited + delay > self.permission_window:
                raise DicomBqError(
                    explain_permission_denied(
                        plan, self.agent_email, waited, state.error_message or ""
                    )
                    + f" Last operation: {state.name}"
                    + (f", logs: {state.logs_url}" if state.logs_url else ""),
                    exit_code=EXIT_FAILED,
                )
            if on_wait:
                on_wait(f"operation {name} failed with PERMISSION_DENIED", delay)
            self.clock.sleep(delay)
