"""Starting an export and following it, with the IAM-propagation retry and its explanation."""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from dicom_bq.clients.healthcare import (
    ApiCallError,
    ExportAnswerLostError,
    ExportNotStartedError,
    ExportRequest,
    ExportSchema,
    HealthcareApi,
    check_export_body,
)
from dicom_bq.clients.operations import (
    LISTING_PAGES,
    PERMISSION_DENIED,
    Follower,
    OperationState,
    export_operations,
    list_exports,
    rfc3339,
)
from dicom_bq.clients.retry import FAULT_BACKOFF, PERMISSION_BACKOFF, Backoff, Clock, SystemClock
from dicom_bq.errors import EXIT_FAILED, DicomBqError
from dicom_bq.refs import GcsUri, StoreName, TableUri, WriteDisposition

DEFAULT_PERMISSION_WINDOW = 600.0
LISTING_DELAYS = (2.0, 4.0, 8.0)  # operations.list may lag the operation's creation
MAX_NOT_STARTED_RETRIES = 5
# After a lost answer (a 5xx, a connection ended without an answer, a timeout) and no export
# listed since, a WRITE_TRUNCATE or WRITE_EMPTY export is sent again this many times: a second
# one rewrites the same rows, or finds the table written and fails (Google's how-to,
# reference/dicom-export-bigquery.fr.txt: writeDisposition). WRITE_APPEND is never sent again.
RESENDS_AFTER_LOST_ANSWER = 1
# An export of the same Healthcare dataset still running, or created this recently, makes a
# WRITE_APPEND export stop unless --allow-concurrent: a re-run after a crash or a kill would
# append every row a second time. OperationMetadata names no store or table (healthcare v1
# discovery document, schemas.OperationMetadata: apiMethodName, createTime, endTime, counter,
# logsUrl, cancelRequested), so any export of the dataset counts. `export --help` and the README
# say 5 minutes (tests/test_transport_faults.py pins it).
RECENT_EXPORT_WINDOW = datetime.timedelta(minutes=5)
_AGENT = re.compile(r"service-[0-9]+@gcp-sa-healthcare\.[A-Za-z0-9.-]+")
_CALLER_PERMISSION = re.compile(r"Permission '([a-zA-Z0-9_.]+)' denied")


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class ListedBefore:
    """The names of the dataset's export operations, listed just before the export request is
    sent: after a lost answer only an operation missing here can be the one it started.
    Operations name their dataset, never their store or table (healthcare v1 discovery document,
    schemas.Operation and schemas.OperationMetadata: apiMethodName, cancelRequested, counter,
    createTime, endTime, logsUrl), so a time window would also take another store's export that
    began a little earlier, the nightly snapshot's for one. `problem` says why the list is not
    known (operations.list refused, or too long to read whole)."""

    names: frozenset[str] = frozenset()
    problem: str | None = None


@dataclass(frozen=True)
class ExportPlan:
    store: StoreName
    table: TableUri
    write_disposition: WriteDisposition | None = None
    force: bool | None = None
    filter: GcsUri | None = None
    schema: ExportSchema = ExportSchema.NESTED
    include_source_store: bool = False

    def request(self) -> ExportRequest:
        return ExportRequest(
            store=self.store.name,
            table_uri=self.table.uri,
            write_disposition=self.write_disposition,
            force=self.force,
            filter_uri=self.filter.uri if self.filter else None,
            schema=self.schema,
            include_source_store=self.include_source_store,
        )

    def check(self, api_version: str) -> None:
        """Refuse options the API version lacks before any request (filter upload included)."""
        check_export_body(api_version, self.request().body())

    @property
    def truncates(self) -> bool:
        return self.force is True or self.write_disposition is WriteDisposition.WRITE_TRUNCATE

    @property
    def appends(self) -> bool:
        """WRITE_APPEND: the one disposition for which a second export changes the result (every
        row twice). force=true/false are WRITE_TRUNCATE/WRITE_EMPTY (ExportRequest.body)."""
        return self.force is None and self.write_disposition is WriteDisposition.WRITE_APPEND


def agent_named_in(message: str) -> str | None:
    """The service agent's address when Google's error message names it."""
    found = _AGENT.search(message)
    return found.group(0) if found else None


def agent_description(store: StoreName, agent_email: str | None) -> str:
    if agent_email:
        return agent_email
    return (
        f"the project's Healthcare agent, service-NUMBER@gcp-sa-healthcare.iam.gserviceaccount.com "
        f"where NUMBER is `gcloud projects describe {store.project} "
        "--format='value(projectNumber)'`"
    )


def explain_permission_denied(
    plan: ExportPlan, agent_email: str | None, waited: float, api_message: str
) -> str:
    agent_email = agent_named_in(api_message) or agent_email
    agent = agent_description(plan.store, agent_email)
    member = f"serviceAccount:{agent_email}" if agent_email else "gcp-sa-healthcare"
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
        "with `pulumi up` on the stack that provisions this path."
    )


# The predefined roles holding healthcare.dicomStores.export are dicomViewer and dicomEditor, not
# dicomStoreAdmin: https://cloud.google.com/iam/docs/roles-permissions/healthcare
def explain_caller_denied(plan: ExportPlan, api_message: str) -> str:
    found = _CALLER_PERMISSION.search(api_message)
    permission = found.group(1) if found else "healthcare.dicomStores.export"
    return (
        f"you (the credentials dicom-bq runs with) lack {permission} on {plan.store.name}: "
        f"{api_message}. Ask for roles/healthcare.dicomEditor on the store or its dataset "
        "(roles/healthcare.dicomStoreAdmin does not hold the export permission), "
        "or run as an account that has it (--impersonate-service-account). Nothing was exported."
    )


def is_agent_denial(error: ApiCallError) -> bool:
    """A 403 about the Healthcare agent (propagating IAM) rather than about the caller.

    Google names the principal it checked: the caller's denial reads "Permission
    'healthcare.dicomStores.export' denied on resource ..."; the agent's names the agent.
    """
    return agent_named_in(error.message) is not None and not _CALLER_PERMISSION.search(
        error.message
    )


@dataclass
class Exporter:
    api: HealthcareApi
    clock: Clock = field(default_factory=SystemClock)
    permission_window: float = DEFAULT_PERMISSION_WINDOW
    permission_backoff: Backoff = PERMISSION_BACKOFF
    agent_email: str | None = None
    now: Callable[[], datetime.datetime] = utc_now

    def start(self, plan: ExportPlan, on_wait: Callable[[str, float], None] | None = None) -> str:
        """Start the export at most once; returns the operation name.

        The export POST is not idempotent (WRITE_APPEND twice duplicates every row), so it is
        never resent when its answer may have been lost: the operation it started is looked up
        with operations.list instead, among the exports missing from the listing made just
        before the first send (ListedBefore; the transport never resends it either:
        clients/transport.py). A refusal before Google acted (429, connection refused) or a
        denial while the agent's grants propagate is sent again; after a lost answer with no
        export listed, only a WRITE_TRUNCATE or WRITE_EMPTY export is, once
        (RESENDS_AFTER_LOST_ANSWER).
        """
        started = self.clock.monotonic()
        delays = self.permission_backoff.delays()
        refusals = FAULT_BACKOFF.delays()
        not_started = 0
        lost_answers: list[str] = []
        before = self.list_before(plan)
        sent_at = self.now()
        while True:
            try:
                operation = self.api.export_once(plan.request())
                return str(operation["name"])
            except ExportNotStartedError as refused:
                not_started += 1
                if not_started > MAX_NOT_STARTED_RETRIES:
                    raise DicomBqError(
                        f"the export request was refused {not_started} times ({refused}): "
                        "nothing was exported; try again later",
                        exit_code=EXIT_FAILED,
                    ) from None
                delay = next(refusals)
                if on_wait:
                    on_wait(f"export refused before it started ({refused})", delay)
                self.clock.sleep(delay)
            except ExportAnswerLostError as lost:
                found = self.find_started(plan, before, lost.description, on_wait)
                if found is not None:
                    return found
                lost_answers.append(lost.description)
                if plan.appends or len(lost_answers) > RESENDS_AFTER_LOST_ANSWER:
                    raise DicomBqError(
                        self._nothing_listed(plan, sent_at, lost_answers), exit_code=EXIT_FAILED
                    ) from None
                # Anything listed now that was not listed then is a candidate for either send.
                if on_wait:
                    on_wait(
                        f"the answer was lost ({lost.description}) and no export started: "
                        f"sending the {self._disposition(plan)} export again (harmless for it)",
                        0,
                    )
            except ApiCallError as error:
                waited = self.clock.monotonic() - started
                if error.status == 403 and not is_agent_denial(error):
                    raise DicomBqError(
                        explain_caller_denied(plan, error.message), exit_code=EXIT_FAILED
                    ) from None
                if error.status != 403:
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
                    on_wait(f"PERMISSION_DENIED for the agent ({error.message})", delay)
                self.clock.sleep(delay)

    @staticmethod
    def _disposition(plan: ExportPlan) -> str:
        if plan.force is not None:
            return f"force={str(plan.force).lower()}"
        return (plan.write_disposition or WriteDisposition.WRITE_EMPTY).value

    @staticmethod
    def _how_to_check(plan: ExportPlan) -> str:
        return (
            f"check with `gcloud healthcare operations list --dataset={plan.store.dataset} "
            f"--location={plan.store.location} --project={plan.store.project}` and "
            "`dicom-bq operations describe NAME`; export again only if no export started then"
        )

    def _nothing_listed(
        self, plan: ExportPlan, sent_at: datetime.datetime, lost_answers: list[str]
    ) -> str:
        dataset = plan.store.dataset_name
        since = f"{sent_at:%Y-%m-%dT%H:%M:%SZ}"
        if plan.appends:
            return (
                f"the answer to the WRITE_APPEND export request was lost ({lost_answers[-1]}) and "
                f"no export operation is listed in {dataset} that was not there before it was "
                f"sent ({since}): it "
                "probably did not start, but it is not sent again, since a second WRITE_APPEND "
                f"export would add every row twice if the first did start; "
                f"{self._how_to_check(plan)}"
            )
        return (
            f"the {self._disposition(plan)} export request was sent {len(lost_answers)} times "
            f"and every answer was lost ({'; '.join(lost_answers)}); no export operation is "
            f"listed in {dataset} that was not there before the first was sent ({since}), and "
            "it is not sent again; "
            f"{self._how_to_check(plan)}"
        )

    def list_before(self, plan: ExportPlan) -> ListedBefore:
        """The dataset's export operations before the request is sent (ListedBefore)."""
        dataset = plan.store.dataset_name
        try:
            listed, complete = list_exports(self.api, dataset)
        except ApiCallError as error:
            return ListedBefore(
                problem=f"{error.status} {error.reason}: the dataset's operations could not be "
                "listed before the request was sent (it needs healthcare.operations.list)"
            )
        if not complete:
            return ListedBefore(
                problem=f"the dataset holds more than {LISTING_PAGES * 100} operations, more "
                "than dicom-bq reads, so the export operations listed before the request was "
                "sent are not all known"
            )
        return ListedBefore(frozenset(str(operation.get("name")) for operation in listed))

    def find_started(
        self,
        plan: ExportPlan,
        before: ListedBefore,
        why: str,
        on_wait: Callable[[str, float], None] | None = None,
    ) -> str | None:
        """The operation a request whose answer was lost started, found by operations.list:
        an export (method ExportDicomData) missing from `before`, the listing made just before
        the request was sent. One is followed; none after LISTING_DELAYS gives None; several
        (another store of the dataset exporting at the same time), or a listing that fails now
        or failed before, stop without a guess."""
        dataset = plan.store.dataset_name
        how_to_check = self._how_to_check(plan)
        if before.problem is not None:
            raise DicomBqError(
                f"the answer to the export request was lost ({why}) and {dataset}'s exports "
                f"cannot be told apart from the one it may have started ({before.problem}): "
                f"the export may or may not have started, so it is not sent again; "
                f"{how_to_check}",
                exit_code=EXIT_FAILED,
            )
        for delay in (0.0, *LISTING_DELAYS):
            if delay:
                if on_wait:
                    on_wait(f"looking for the export the lost answer started ({why})", delay)
                self.clock.sleep(delay)
            try:
                candidates = [
                    operation
                    for operation in export_operations(self.api, dataset)
                    if str(operation.get("name")) not in before.names
                ]
            except ApiCallError as error:
                raise DicomBqError(
                    f"the answer to the export request was lost ({why}) and the operations of "
                    f"{dataset} cannot be listed ({error.status} {error.reason}): the export may "
                    f"or may not have started, so it is not sent again; {how_to_check}",
                    exit_code=EXIT_FAILED,
                ) from None
            if len(candidates) == 1:
                name = str(candidates[0]["name"])
                if on_wait:
                    on_wait(
                        f"the answer was lost ({why}); following {name}, found by listing (the "
                        f"one export that appeared in {dataset} since the request was sent)",
                        0,
                    )
                return name
            if len(candidates) > 1:
                names = ", ".join(str(c["name"]) for c in candidates)
                raise DicomBqError(
                    f"the answer to the export request was lost ({why}) and {len(candidates)} "
                    f"exports started in {dataset} since it was sent ({names}): another store "
                    "of the dataset may be exporting at the same time, and operations do not "
                    "name their store, so dicom-bq cannot tell which is this one and nothing "
                    f"is sent again; {how_to_check}",
                    exit_code=EXIT_FAILED,
                )
        return None

    def check_concurrent(
        self, plan: ExportPlan, on_notice: Callable[[str], None] | None = None
    ) -> None:
        """Before a first export: an export of the same Healthcare dataset still running, or
        created in the last RECENT_EXPORT_WINDOW, stops a WRITE_APPEND export (a re-run after a
        crash or a kill would add every row a second time); for the other dispositions, a
        running one is only said. The caller skips this when told exports may overlap
        (--allow-concurrent)."""
        dataset = plan.store.dataset_name
        try:
            listed = export_operations(self.api, dataset)
        except ApiCallError as error:
            problem = (
                f"cannot check for an export already running in {dataset} (operations.list: "
                f"{error.status} {error.reason} {error.message}; it needs "
                "healthcare.operations.list on the dataset)"
            )
            if plan.appends:
                raise DicomBqError(
                    f"{problem}: a second WRITE_APPEND export would add every row twice, so "
                    f"none is started; {self._how_to_check(plan)}, or pass --allow-concurrent "
                    "to export without this check",
                    exit_code=EXIT_FAILED,
                ) from None
            if on_notice:
                on_notice(f"Warning: {problem}")
            return
        now = self.now()
        states = [OperationState.from_api(operation) for operation in listed]
        running = [state for state in states if not state.done]
        recent = [
            state
            for state in states
            if state.done and _age(state.create_time, now) <= RECENT_EXPORT_WINDOW
        ]
        if not plan.appends:
            if running and on_notice:
                on_notice(
                    f"Warning: {_described(running[0], now)} in {dataset}; this "
                    f"{self._disposition(plan)} export runs alongside it"
                )
            return
        others = running + recent
        if not others:
            return
        first = others[0]
        more = f" (and {len(others) - 1} more)" if len(others) > 1 else ""
        window = int(RECENT_EXPORT_WINDOW.total_seconds() // 60)
        raise DicomBqError(
            f"{_described(first, now)} in {dataset}{more}: a second WRITE_APPEND export now "
            "would add every row again if it is a run of this same export (one killed or "
            "interrupted before it printed its result). Nothing was started. Follow it with "
            f"`dicom-bq operations wait {first.name}`; if it is another export you mean to run "
            "alongside this one, pass --allow-concurrent (this check looks at the dataset's "
            f"exports running or started in the last {window} minutes)",
            exit_code=EXIT_FAILED,
        )

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
            try:
                state = follower.follow(name, remaining, on_update)
            except ApiCallError as error:
                raise DicomBqError(
                    f"cannot read operation {name} ({error.status} {error.reason}: "
                    f"{error.message}); it may still be running: resume with "
                    f"`dicom-bq operations wait {name}`",
                    exit_code=EXIT_FAILED,
                ) from None
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


def _age(create_time: str | None, now: datetime.datetime) -> datetime.timedelta:
    """How long ago an operation was created (OperationMetadata.createTime); an unreadable
    time counts as recent: the check errs towards asking."""
    created = rfc3339(create_time)
    return now - created if created is not None else datetime.timedelta(0)


def _described(state: OperationState, now: datetime.datetime) -> str:
    # A createTime that does not parse says nothing of the start: not "0 min ago" (which _age,
    # erring towards asking, would make of it).
    created = rfc3339(state.create_time)
    minutes = int((now - created).total_seconds() // 60) if created is not None else None
    when = f"started {max(0, minutes)} min ago" if minutes is not None else "start unknown"
    if not state.done:
        return f"export {state.name} is still running ({when})"
    return f"export {state.name} {when} and ended {state.state}"
