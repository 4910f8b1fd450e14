"""flows/exporter.py held to its contract directly, against an in-memory Healthcare API (issue 19,
mutation testing): how many times an export is sent, what is waited and on what clock, which
exports block a WRITE_APPEND, and what each refusal tells the user to do. Written to kill the
mutants scripts/mutation found surviving; each test states behaviour a user or the export flow
relies on."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

import pytest

from dicom_bq.clients.discovery import ApiCallError
from dicom_bq.clients.healthcare import (
    ExportAnswerLostError,
    ExportNotStartedError,
    ExportRequest,
    ExportSchema,
)
from dicom_bq.clients.operations import OperationState
from dicom_bq.clients.retry import Backoff
from dicom_bq.errors import EXIT_FAILED, DicomBqError
from dicom_bq.flows import exporter as exporter_module
from dicom_bq.flows.exporter import (
    Exporter,
    ExportPlan,
    ListedBefore,
    agent_description,
    agent_named_in,
    explain_caller_denied,
    explain_permission_denied,
    is_agent_denial,
)
from dicom_bq.refs import GcsUri, StoreName, TableUri, WriteDisposition
from tests.fakes.clock import VirtualClock

STORE = StoreName.parse(
    "projects/dicom-src-test/locations/us-central1/datasets/imaging/dicomStores/dicom"
)
DATASET = STORE.dataset_name
TABLE = TableUri.parse("bq://bq-project-1.dicom_metadata.exported")
AGENT = "service-123456789012@gcp-sa-healthcare.iam.gserviceaccount.com"
NOW = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
EXPORT_METHOD = "google.cloud.healthcare.v1.dicom.DicomService.ExportDicomData"
# Backoffs without jitter, so the waits are exact.
STEADY = Backoff(initial=10.0, factor=1.0, cap=10.0, jitter=0.0)

APPEND = ExportPlan(STORE, TABLE, write_disposition=WriteDisposition.WRITE_APPEND)
TRUNCATE = ExportPlan(STORE, TABLE, write_disposition=WriteDisposition.WRITE_TRUNCATE)
EMPTY = ExportPlan(STORE, TABLE)


def operation(
    name: str,
    *,
    done: bool = False,
    created: datetime.datetime | None = None,
    method: str = EXPORT_METHOD,
    error: dict[str, Any] | None = None,
    logs: str | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"apiMethodName": method}
    if created is not None:
        metadata["createTime"] = created.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if logs is not None:
        metadata["logsUrl"] = logs
    found: dict[str, Any] = {"name": f"{DATASET}/operations/{name}", "metadata": metadata}
    if done:
        found["done"] = True
    if error is not None:
        found["error"] = error
    return found


def op_name(name: str) -> str:
    return f"{DATASET}/operations/{name}"


@dataclass
class FakeApi:
    """The three calls Exporter makes: export_once (each answer in turn: an operation, or an
    exception raised), and operations.list (each listing in turn, the last one repeated; a
    listing is a list of operations or an exception)."""

    answers: list[Any] = field(default_factory=list)
    listings: list[Any] = field(default_factory=lambda: [[]])
    sent: list[ExportRequest] = field(default_factory=list)
    listed: int = 0
    pages: int = 0
    endless: bool = False  # every page says another follows

    def export_once(self, request: ExportRequest) -> dict[str, Any]:
        self.sent.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        assert isinstance(answer, dict)
        return answer

    def list_operations(self, dataset: str, page_token: str | None = None) -> dict[str, Any]:
        assert dataset == DATASET
        self.pages += 1
        if self.endless:
            return {"operations": [], "nextPageToken": "more"}
        listing = self.listings[min(self.listed, len(self.listings) - 1)]
        self.listed += 1
        if isinstance(listing, BaseException):
            raise listing
        return {"operations": list(listing)}


def exporter(api: FakeApi, clock: VirtualClock | None = None, **kwargs: Any) -> Exporter:
    return Exporter(
        api,  # type: ignore[arg-type]
        clock=clock or VirtualClock(),
        now=lambda: NOW,
        **kwargs,
    )


def lost(description: str = "503 after sending") -> ExportAnswerLostError:
    return ExportAnswerLostError(description)


def agent_denied() -> ApiCallError:
    return ApiCallError(
        403, "PERMISSION_DENIED", f"{AGENT} does not have bigquery.tables.create access"
    )


class Waits:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def __call__(self, why: str, delay: float) -> None:
        self.calls.append((why, delay))


# -- the plan -------------------------------------------------------------------------------


def test_the_plan_becomes_the_request_field_for_field() -> None:
    plan = ExportPlan(
        STORE,
        TABLE,
        write_disposition=WriteDisposition.WRITE_APPEND,
        force=None,
        filter=GcsUri.parse("gs://a-filter-bucket/list.txt"),
        schema=ExportSchema.FLATTENED,
        include_source_store=True,
    )
    assert plan.request() == ExportRequest(
        store=STORE.name,
        table_uri=TABLE.uri,
        write_disposition=WriteDisposition.WRITE_APPEND,
        force=None,
        filter_uri="gs://a-filter-bucket/list.txt",
        schema=ExportSchema.FLATTENED,
        include_source_store=True,
    )
    forced = ExportPlan(STORE, TABLE, force=True).request()
    assert forced.force is True
    assert forced.filter_uri is None
    assert forced.schema is ExportSchema.NESTED
    assert forced.include_source_store is False


def test_check_reads_the_api_versions_own_document() -> None:
    EMPTY.check("v1")
    EMPTY.check("v1beta1")
    with pytest.raises(RuntimeError, match="ships no healthcare v0 document"):
        EMPTY.check("v0")


@pytest.mark.parametrize(
    ("plan", "truncates", "appends"),
    [
        (EMPTY, False, False),
        (TRUNCATE, True, False),
        (APPEND, False, True),
        (ExportPlan(STORE, TABLE, force=True), True, False),
        (ExportPlan(STORE, TABLE, force=False), False, False),
        # force wins over writeDisposition in the body (ExportRequest.body): not an append.
        (
            ExportPlan(STORE, TABLE, write_disposition=WriteDisposition.WRITE_APPEND, force=True),
            True,
            False,
        ),
        (
            ExportPlan(STORE, TABLE, write_disposition=WriteDisposition.WRITE_APPEND, force=False),
            False,
            False,
        ),
    ],
)
def test_what_a_plan_truncates_and_appends(
    plan: ExportPlan, truncates: bool, appends: bool
) -> None:
    assert plan.truncates is truncates
    assert plan.appends is appends


# -- what refusals say ------------------------------------------------------------------------


def test_the_agent_is_found_in_googles_message() -> None:
    assert agent_named_in(f"Permission denied for {AGENT} on the table") == AGENT
    assert agent_named_in("by service-42@gcp-sa-healthcare.example-universe.goog.") == (
        "service-42@gcp-sa-healthcare.example-universe.goog."
    )
    assert agent_named_in("Permission 'healthcare.dicomStores.export' denied") is None
    assert agent_named_in("service-@gcp-sa-healthcare.iam.gserviceaccount.com") is None


def test_an_unknown_agent_is_described_with_the_command_giving_its_number() -> None:
    assert agent_description(STORE, AGENT) == AGENT
    described = agent_description(STORE, None)
    assert "service-NUMBER@gcp-sa-healthcare.iam.gserviceaccount.com" in described
    assert "`gcloud projects describe dicom-src-test --format='value(projectNumber)'`" in described


def test_the_callers_denial_names_the_permission_google_named() -> None:
    message = explain_caller_denied(
        APPEND, "Permission 'healthcare.dicomStores.export' denied on resource X"
    )
    assert message.startswith("you (the credentials dicom-bq runs with) lack ")
    assert f"lack healthcare.dicomStores.export on {STORE.name}: Permission" in message
    other = explain_caller_denied(APPEND, "Permission 'healthcare.datasets.get' denied on X")
    assert "lack healthcare.datasets.get on" in other
    assert "healthcare.dicomStores.export" not in other.split(":")[0]


def test_the_callers_denial_without_a_permission_named_assumes_the_export_one() -> None:
    message = explain_caller_denied(APPEND, "The caller does not have permission")
    assert f"lack healthcare.dicomStores.export on {STORE.name}:" in message
    # The fix: the role that holds the permission, the one that does not, another identity.
    assert "roles/healthcare.dicomEditor" in message
    assert "(roles/healthcare.dicomStoreAdmin does not hold the export permission)" in message
    assert "(--impersonate-service-account)" in message
    assert message.endswith("Nothing was exported.")


def test_an_agent_denial_is_one_naming_the_agent_and_no_caller_permission() -> None:
    assert is_agent_denial(agent_denied())
    caller = ApiCallError(
        403, "PERMISSION_DENIED", f"Permission 'healthcare.dicomStores.export' denied ({AGENT})"
    )
    assert not is_agent_denial(caller)
    assert not is_agent_denial(ApiCallError(403, "PERMISSION_DENIED", "no principal named"))
    assert not is_agent_denial(
        ApiCallError(403, "PERMISSION_DENIED", "Permission 'x.y.z' denied on resource")
    )


def test_the_agents_denial_says_what_it_needs_and_how_to_check() -> None:
    plan = ExportPlan(STORE, TABLE, filter=GcsUri.parse("gs://a-filter-bucket/list.txt"))
    message = explain_permission_denied(plan, None, 125.4, "Google said no")
    assert message.startswith(
        "The export was refused with PERMISSION_DENIED for 125s: Google said no. "
    )
    assert "service agent of project dicom-src-test, the project's Healthcare agent" in message
    assert "roles/bigquery.dataEditor on BigQuery dataset bq-project-1:dicom_metadata" in message
    assert "roles/bigquery.jobUser on project bq-project-1" in message
    assert "roles/storage.objectViewer on bucket gs://a-filter-bucket" in message
    assert "--permission-window" in message
    assert (
        "`gcloud projects get-iam-policy bq-project-1 --flatten=bindings "
        "--filter=\"bindings.members:gcp-sa-healthcare\" --format='value(bindings.role)'`"
    ) in message
    assert "`bq show --format=prettyjson bq-project-1:dicom_metadata`" in message
    assert "`pulumi up`" in message


def test_the_agents_denial_in_full() -> None:
    """The message is the fix: what the agent needs, why waiting may be enough, how to check."""
    plan = ExportPlan(STORE, TABLE, filter=GcsUri.parse("gs://a-filter-bucket/list.txt"))
    assert explain_permission_denied(plan, AGENT, 30, "denied") == (
        "The export was refused with PERMISSION_DENIED for 30s: denied. The Cloud Healthcare "
        f"service agent of project dicom-src-test, {AGENT}, needs roles/bigquery.dataEditor on "
        "BigQuery dataset bq-project-1:dicom_metadata; roles/bigquery.jobUser on project "
        "bq-project-1; roles/storage.objectViewer on bucket gs://a-filter-bucket. Grants made a "
        "few minutes ago may still be propagating (usually 2 minutes, sometimes 7 or more): "
        "retry with a longer --permission-window. Check what the agent holds with `gcloud "
        'projects get-iam-policy bq-project-1 --flatten=bindings --filter="bindings.members:'
        f"serviceAccount:{AGENT}\" --format='value(bindings.role)'` and `bq show "
        "--format=prettyjson bq-project-1:dicom_metadata`; add what is missing with `pulumi up` "
        "on the stack that provisions this path."
    )


def test_the_callers_denial_in_full() -> None:
    assert explain_caller_denied(APPEND, "no") == (
        "you (the credentials dicom-bq runs with) lack healthcare.dicomStores.export on "
        f"{STORE.name}: no. Ask for roles/healthcare.dicomEditor on the store or its dataset "
        "(roles/healthcare.dicomStoreAdmin does not hold the export permission), or run as an "
        "account that has it (--impersonate-service-account). Nothing was exported."
    )


def test_the_agents_denial_names_the_agent_google_named_over_the_configured_one() -> None:
    other = "service-999@gcp-sa-healthcare.iam.gserviceaccount.com"
    message = explain_permission_denied(EMPTY, other, 3, f"denied to {AGENT}")
    assert f'--filter="bindings.members:serviceAccount:{AGENT}"' in message
    assert f"dicom-src-test, {AGENT}, needs" in message
    assert other not in message
    assert "storage.objectViewer" not in message  # no filter, no bucket to read
    configured = explain_permission_denied(EMPTY, other, 3, "denied")
    assert f"bindings.members:serviceAccount:{other}" in configured


# -- start: sent at most once -----------------------------------------------------------------


def test_an_answered_export_is_sent_once_with_the_plans_request() -> None:
    api = FakeApi(answers=[{"name": op_name("1")}])
    assert exporter(api).start(TRUNCATE) == op_name("1")
    assert api.sent == [TRUNCATE.request()]


def test_refusals_before_the_export_started_are_sent_again_five_times_with_backoff() -> None:
    refused = ExportNotStartedError("429 RESOURCE_EXHAUSTED")
    api = FakeApi(answers=[refused] * 5 + [{"name": op_name("1")}])
    clock = VirtualClock()
    waits = Waits()
    assert exporter(api, clock).start(APPEND, waits) == op_name("1")
    assert len(api.sent) == 6
    # FAULT_BACKOFF: 0.5 s doubling to 8 s, each shortened by at most half.
    bounds = [(0.25, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 8.0)]
    assert len(clock.sleeps) == 5
    for slept, (low, high) in zip(clock.sleeps, bounds, strict=True):
        assert low <= slept <= high
    assert waits.calls == [
        ("export refused before it started (429 RESOURCE_EXHAUSTED)", slept)
        for slept in clock.sleeps
    ]


def test_a_sixth_refusal_stops_saying_nothing_was_exported() -> None:
    refused = ExportNotStartedError("429 RESOURCE_EXHAUSTED")
    api = FakeApi(answers=[refused] * 7)
    clock = VirtualClock()
    with pytest.raises(DicomBqError) as caught:
        exporter(api, clock).start(APPEND)
    assert len(api.sent) == 6
    assert len(clock.sleeps) == 5
    assert caught.value.exit_code == EXIT_FAILED
    assert caught.value.message == (
        "the export request was refused 6 times (429 RESOURCE_EXHAUSTED): nothing was "
        "exported; try again later"
    )


def test_a_lost_answer_follows_the_one_export_listed_since() -> None:
    earlier = operation("0", done=True)
    api = FakeApi(
        answers=[lost("reset")],
        listings=[[earlier], [earlier, operation("1")]],
    )
    waits = Waits()
    clock = VirtualClock()
    assert exporter(api, clock).start(APPEND, waits) == op_name("1")
    assert len(api.sent) == 1
    assert clock.sleeps == []
    assert waits.calls == [
        (
            f"the answer was lost (reset); following {op_name('1')}, found by listing (the one "
            f"export that appeared in {DATASET} since the request was sent)",
            0,
        )
    ]


def test_a_lost_answer_ignores_operations_that_are_not_exports() -> None:
    imported = operation("9", method="DicomService.ImportDicomData")
    api = FakeApi(answers=[lost(), {"name": op_name("2")}], listings=[[], [imported]])
    assert exporter(api).start(TRUNCATE) == op_name("2")
    assert len(api.sent) == 2


def test_the_listing_is_read_again_after_2_4_and_8_seconds() -> None:
    api = FakeApi(answers=[lost("timeout")], listings=[[], [], [], [operation("1")]])
    clock = VirtualClock()
    waits = Waits()
    assert exporter(api, clock).start(APPEND, waits) == op_name("1")
    assert clock.sleeps == [2.0, 4.0]
    assert waits.calls[:2] == [
        ("looking for the export the lost answer started (timeout)", 2.0),
        ("looking for the export the lost answer started (timeout)", 4.0),
    ]


def test_a_lost_write_append_is_never_sent_again() -> None:
    api = FakeApi(answers=[lost("503 after sending"), {"name": op_name("2")}])
    clock = VirtualClock()
    with pytest.raises(DicomBqError) as caught:
        exporter(api, clock).start(APPEND)
    assert len(api.sent) == 1
    assert clock.sleeps == [2.0, 4.0, 8.0]
    assert caught.value.exit_code == EXIT_FAILED
    message = caught.value.message
    assert message.startswith(
        "the answer to the WRITE_APPEND export request was lost (503 after sending) and no "
        f"export operation is listed in {DATASET} that was not there before it was sent "
        "(2026-03-01T12:00:00Z)"
    )
    assert "a second WRITE_APPEND export would add every row twice" in message
    assert (
        "check with `gcloud healthcare operations list --dataset=imaging "
        "--location=us-central1 --project=dicom-src-test` and `dicom-bq operations describe "
        "NAME`; export again only if no export started then"
    ) in message


@pytest.mark.parametrize(
    ("plan", "said"),
    [
        (TRUNCATE, "WRITE_TRUNCATE"),
        (EMPTY, "WRITE_EMPTY"),
        (ExportPlan(STORE, TABLE, force=True), "force=true"),
        (ExportPlan(STORE, TABLE, force=False), "force=false"),
    ],
)
def test_a_lost_idempotent_export_is_sent_once_more(plan: ExportPlan, said: str) -> None:
    api = FakeApi(answers=[lost("first lost"), {"name": op_name("2")}])
    waits = Waits()
    assert exporter(api).start(plan, waits) == op_name("2")
    assert api.sent == [plan.request(), plan.request()]
    assert (
        f"the answer was lost (first lost) and no export started: sending the {said} export "
        "again (harmless for it)",
        0,
    ) in waits.calls


def test_two_lost_answers_stop_naming_both() -> None:
    api = FakeApi(answers=[lost("first lost"), lost("second lost"), {"name": op_name("3")}])
    with pytest.raises(DicomBqError) as caught:
        exporter(api).start(TRUNCATE)
    assert len(api.sent) == 2
    assert caught.value.exit_code == EXIT_FAILED
    assert caught.value.message.startswith(
        "the WRITE_TRUNCATE export request was sent 2 times and every answer was lost (first "
        f"lost; second lost); no export operation is listed in {DATASET} that was not there "
        "before the first was sent (2026-03-01T12:00:00Z), and it is not sent again; check with "
        "`gcloud healthcare operations list --dataset=imaging"
    )


def test_an_export_listed_before_the_request_is_not_taken_for_it() -> None:
    snapshot = operation("77")
    api = FakeApi(answers=[lost()], listings=[[snapshot], [snapshot]])
    with pytest.raises(DicomBqError) as caught:
        exporter(api).start(APPEND)
    assert op_name("77") not in caught.value.message


def test_two_exports_listed_since_stop_without_a_guess() -> None:
    api = FakeApi(answers=[lost("reset")], listings=[[], [operation("1"), operation("2")]])
    with pytest.raises(DicomBqError) as caught:
        exporter(api).start(TRUNCATE)
    assert len(api.sent) == 1
    assert caught.value.exit_code == EXIT_FAILED
    assert caught.value.message.startswith(
        f"the answer to the export request was lost (reset) and 2 exports started in {DATASET} "
        f"since it was sent ({op_name('1')}, {op_name('2')}): "
    )
    assert caught.value.message.endswith(
        f"({op_name('1')}, {op_name('2')}): another store of the dataset may be exporting at the "
        "same time, and operations do not name their store, so dicom-bq cannot tell which is "
        "this one and nothing is sent again; check with `gcloud healthcare operations list "
        "--dataset=imaging --location=us-central1 --project=dicom-src-test` and `dicom-bq "
        "operations describe NAME`; export again only if no export started then"
    )


def test_a_listing_that_fails_after_a_lost_answer_stops_without_resending() -> None:
    refused = ApiCallError(503, "UNAVAILABLE", "try later")
    api = FakeApi(answers=[lost("reset"), {"name": op_name("2")}], listings=[[], refused])
    with pytest.raises(DicomBqError) as caught:
        exporter(api).start(TRUNCATE)
    assert len(api.sent) == 1
    assert caught.value.exit_code == EXIT_FAILED
    assert caught.value.message.startswith(
        f"the answer to the export request was lost (reset) and the operations of {DATASET} "
        "cannot be listed (503 UNAVAILABLE): the export may or may not have started, so it is "
        "not sent again; check with `gcloud healthcare operations list"
    )


def test_a_listing_refused_before_sending_makes_a_lost_answer_final() -> None:
    refused = ApiCallError(403, "PERMISSION_DENIED", "no operations.list")
    api = FakeApi(answers=[lost("reset"), {"name": op_name("2")}], listings=[refused, []])
    with pytest.raises(DicomBqError) as caught:
        exporter(api).start(TRUNCATE)
    assert len(api.sent) == 1
    assert caught.value.exit_code == EXIT_FAILED
    assert caught.value.message.startswith(
        f"the answer to the export request was lost (reset) and {DATASET}'s exports cannot be "
        "told apart from the one it may have started (403 PERMISSION_DENIED: the dataset's "
        "operations could not be listed before the request was sent (it needs "
        "healthcare.operations.list)): the export may or may not have started, so it is not "
        "sent again; check with `gcloud healthcare operations list"
    )


def test_the_listing_before_sending_is_what_later_listings_are_held_against() -> None:
    api = FakeApi(listings=[[operation("0"), operation("1", method="Other")]])
    assert exporter(api).list_before(APPEND) == ListedBefore(frozenset({op_name("0")}))
    assert api.listed == 1


def test_a_listing_too_long_to_read_makes_a_lost_answer_final() -> None:
    api = FakeApi(answers=[lost("reset")], endless=True)
    before = exporter(api).list_before(APPEND)
    assert before.names == frozenset()
    assert before.problem == (
        "the dataset holds more than 2000 operations, more than dicom-bq reads, so the export "
        "operations listed before the request was sent are not all known"
    )
    with pytest.raises(DicomBqError) as caught:
        exporter(api).start(TRUNCATE)
    assert len(api.sent) == 1
    assert before.problem in caught.value.message


def test_the_callers_own_denial_is_not_waited_on() -> None:
    denied = ApiCallError(
        403, "PERMISSION_DENIED", "Permission 'healthcare.dicomStores.export' denied on X"
    )
    api = FakeApi(answers=[denied, {"name": op_name("1")}])
    clock = VirtualClock()
    with pytest.raises(DicomBqError) as caught:
        exporter(api, clock).start(APPEND)
    assert len(api.sent) == 1
    assert clock.sleeps == []
    assert caught.value.exit_code == EXIT_FAILED
    assert caught.value.message == explain_caller_denied(APPEND, denied.message)


@pytest.mark.parametrize("status", [400, 404, 409, 500])
def test_any_other_refusal_stops_at_once(status: int) -> None:
    refused = ApiCallError(status, "REASON", f"{AGENT} said no")
    api = FakeApi(answers=[refused, {"name": op_name("1")}])
    clock = VirtualClock()
    with pytest.raises(DicomBqError) as caught:
        exporter(api, clock).start(APPEND)
    assert len(api.sent) == 1
    assert clock.sleeps == []
    assert caught.value.exit_code == EXIT_FAILED
    assert caught.value.message == (
        f"the export request was refused ({status} REASON): {AGENT} said no"
    )


def test_the_agents_denial_is_waited_out_within_the_permission_window() -> None:
    api = FakeApi(answers=[agent_denied(), agent_denied(), {"name": op_name("1")}])
    clock = VirtualClock()
    waits = Waits()
    found = exporter(api, clock, permission_window=20.0, permission_backoff=STEADY).start(
        APPEND, waits
    )
    assert found == op_name("1")
    assert clock.sleeps == [10.0, 10.0]
    assert (
        waits.calls == [(f"PERMISSION_DENIED for the agent ({agent_denied().message})", 10.0)] * 2
    )


def test_the_agents_denial_past_the_window_explains_what_it_needs() -> None:
    api = FakeApi(answers=[agent_denied()] * 5)
    clock = VirtualClock()
    with pytest.raises(DicomBqError) as caught:
        exporter(
            api, clock, permission_window=20.0, permission_backoff=STEADY, agent_email=AGENT
        ).start(APPEND)
    # Waited 0 then 10 s; at 20 s another 10 s would pass the window.
    assert clock.sleeps == [10.0, 10.0]
    assert len(api.sent) == 3
    assert caught.value.exit_code == EXIT_FAILED
    assert caught.value.message == explain_permission_denied(
        APPEND, AGENT, 20.0, agent_denied().message
    )


def test_the_permission_window_counts_from_the_first_send() -> None:
    api = FakeApi(answers=[agent_denied()] * 3)
    clock = VirtualClock()
    clock.now = 1000.0
    with pytest.raises(DicomBqError):
        exporter(api, clock, permission_window=15.0, permission_backoff=STEADY).start(APPEND)
    assert clock.sleeps == [10.0]


def test_the_default_permission_backoff_and_window() -> None:
    api = FakeApi(answers=[agent_denied()] * 40)
    clock = VirtualClock()
    with pytest.raises(DicomBqError) as caught:
        exporter(api, clock).start(APPEND)
    assert exporter_module.DEFAULT_PERMISSION_WINDOW == 600.0
    assert sum(clock.sleeps) <= 600.0
    assert sum(clock.sleeps) > 600.0 - 60.0  # stopped when the next wait would pass it
    assert 8.0 <= clock.sleeps[0] <= 10.0
    assert f"for {sum(clock.sleeps):.0f}s" in caught.value.message


# -- run: follow, and wait out an operation failing on the agent's permission ---------------------


@dataclass
class FakeFollower:
    states: list[Any]
    followed: list[tuple[str, float | None]] = field(default_factory=list)
    clock: VirtualClock | None = None
    takes: float = 0.0

    def follow(self, name: str, timeout: float | None, on_update: Any = None) -> OperationState:
        self.followed.append((name, timeout))
        if self.clock is not None:
            self.clock.now += self.takes
        state = self.states.pop(0)
        if isinstance(state, BaseException):
            raise state
        assert isinstance(state, OperationState)
        if on_update is not None:
            on_update(state, self.takes)
        return state


def state(name: str, **fields: Any) -> OperationState:
    return OperationState.from_api({"name": name, "done": True, **fields})


DENIED_OP = {"error": {"code": 7, "message": f"{AGENT} lacks bigquery.tables.create"}}


def test_run_follows_the_started_export_with_the_time_left() -> None:
    api = FakeApi(answers=[{"name": op_name("1")}])
    clock = VirtualClock()
    follower = FakeFollower([state(op_name("1"))], clock=clock, takes=5.0)
    starts: list[str] = []
    updates: list[OperationState] = []
    clock.now = 50.0
    done = exporter(api, clock).run(
        APPEND,
        follower,  # type: ignore[arg-type]
        timeout=100.0,
        on_start=starts.append,
        on_update=lambda s, _: updates.append(s),
    )
    assert done.name == op_name("1")
    assert starts == [op_name("1")]
    assert follower.followed == [(op_name("1"), 100.0)]
    assert updates == [done]
    untimed = FakeFollower([state(op_name("2"))])
    exporter(FakeApi(answers=[{"name": op_name("2")}])).run(APPEND, untimed, None)  # type: ignore[arg-type]
    assert untimed.followed == [(op_name("2"), None)]


def test_run_passes_on_a_failure_that_is_not_a_permission_denial() -> None:
    failed = state(op_name("1"), error={"code": 3, "message": "bad"})
    api = FakeApi(answers=[{"name": op_name("1")}, {"name": op_name("2")}])
    follower = FakeFollower([failed, state(op_name("2"))])
    assert exporter(api).run(APPEND, follower, None) is failed  # type: ignore[arg-type]
    assert len(api.sent) == 1


def test_run_exports_again_when_the_operation_failed_on_the_agents_permission() -> None:
    api = FakeApi(answers=[{"name": op_name("1")}, {"name": op_name("2")}])
    clock = VirtualClock()
    follower = FakeFollower(
        [state(op_name("1"), **DENIED_OP), state(op_name("2"))], clock=clock, takes=1.0
    )
    waits = Waits()
    starts: list[str] = []
    done = exporter(api, clock, permission_backoff=STEADY, permission_window=30.0).run(
        APPEND,
        follower,
        60.0,
        on_start=starts.append,
        on_wait=waits,  # type: ignore[arg-type]
    )
    assert done.name == op_name("2")
    assert starts == [op_name("1"), op_name("2")]
    assert clock.sleeps == [10.0]
    assert waits.calls == [(f"operation {op_name('1')} failed with PERMISSION_DENIED", 10.0)]
    # The second follow has what is left of the timeout: 60 - 1 (first follow) - 10 (wait).
    assert follower.followed == [(op_name("1"), 60.0), (op_name("2"), 49.0)]


def test_run_past_the_window_names_the_last_operation_and_its_logs() -> None:
    answers = [{"name": op_name(str(n))} for n in range(5)]
    api = FakeApi(answers=answers)
    clock = VirtualClock()
    denied = [
        state(op_name(str(n)), metadata={"logsUrl": f"https://logs/{n}"}, **DENIED_OP)
        for n in range(5)
    ]
    follower = FakeFollower(denied, clock=clock)
    with pytest.raises(DicomBqError) as caught:
        exporter(api, clock, permission_backoff=STEADY, permission_window=20.0).run(
            APPEND,
            follower,
            None,  # type: ignore[arg-type]
        )
    assert clock.sleeps == [10.0, 10.0]
    assert caught.value.exit_code == EXIT_FAILED
    assert caught.value.message == (
        explain_permission_denied(APPEND, None, 20.0, DENIED_OP["error"]["message"])
        + f" Last operation: {op_name('2')}, logs: https://logs/2"
    )
    no_logs = FakeFollower([state(op_name("0"), **DENIED_OP)], clock=clock)
    with pytest.raises(DicomBqError) as caught:
        exporter(
            FakeApi(answers=[{"name": op_name("0")}]),
            clock,
            permission_backoff=STEADY,
            permission_window=5.0,
        ).run(APPEND, no_logs, None)  # type: ignore[arg-type]
    assert caught.value.message.endswith(f" Last operation: {op_name('0')}")


def test_run_that_cannot_read_the_operation_says_how_to_resume() -> None:
    api = FakeApi(answers=[{"name": op_name("1")}])
    follower = FakeFollower([ApiCallError(500, "INTERNAL", "oops")])
    with pytest.raises(DicomBqError) as caught:
        exporter(api).run(APPEND, follower, None)  # type: ignore[arg-type]
    assert caught.value.exit_code == EXIT_FAILED
    assert caught.value.message == (
        f"cannot read operation {op_name('1')} (500 INTERNAL: oops); it may still be running: "
        f"resume with `dicom-bq operations wait {op_name('1')}`"
    )


# -- check_concurrent: what blocks a WRITE_APPEND ----------------------------------------------


def minutes_ago(minutes: float) -> datetime.datetime:
    return NOW - datetime.timedelta(minutes=minutes)


def concurrent(plan: ExportPlan, *listed: dict[str, Any]) -> list[str]:
    notices: list[str] = []
    exporter(FakeApi(listings=[list(listed)])).check_concurrent(plan, notices.append)
    return notices


def blocked(plan: ExportPlan, *listed: dict[str, Any]) -> DicomBqError:
    with pytest.raises(DicomBqError) as caught:
        concurrent(plan, *listed)
    assert caught.value.exit_code == EXIT_FAILED
    return caught.value


def test_a_running_export_blocks_an_append_and_says_how_to_follow_it() -> None:
    error = blocked(APPEND, operation("1", created=minutes_ago(10.5)))
    assert error.message.startswith(
        f"export {op_name('1')} is still running (started 10 min ago) in {DATASET}: a second "
        "WRITE_APPEND export now would add every row again"
    )
    assert "Nothing was started." in error.message
    assert f"`dicom-bq operations wait {op_name('1')}`" in error.message
    assert "--allow-concurrent" in error.message
    assert "running or started in the last 5 minutes)" in error.message


def test_several_blocking_exports_are_counted() -> None:
    error = blocked(
        APPEND,
        operation("1", created=minutes_ago(1)),
        operation("2", created=minutes_ago(2)),
        operation("3", done=True, created=minutes_ago(3)),
    )
    assert error.message.startswith(
        f"export {op_name('1')} is still running (started 1 min ago) in {DATASET} (and 2 more):"
    )
    single = blocked(APPEND, operation("1", created=minutes_ago(1)))
    assert "more)" not in single.message


def test_an_export_ended_in_the_last_five_minutes_blocks_an_append() -> None:
    error = blocked(APPEND, operation("1", done=True, created=minutes_ago(5)))
    assert error.message.startswith(
        f"export {op_name('1')} started 5 min ago and ended SUCCEEDED in {DATASET}:"
    )
    assert concurrent(APPEND, operation("1", done=True, created=minutes_ago(5.02))) == []


def test_an_unreadable_start_time_counts_as_recent() -> None:
    unknown = operation("1", done=True)
    unknown["metadata"]["createTime"] = "yesterday"
    # Ended long ago or not: with no readable time, it blocks (the check errs towards asking).
    assert blocked(APPEND, unknown).message.startswith(
        f"export {op_name('1')} start unknown and ended SUCCEEDED"
    )
    error = blocked(APPEND, operation("2"))
    assert error.message.startswith(f"export {op_name('2')} is still running (start unknown)")


def test_a_start_time_ahead_of_this_clock_reads_zero_minutes() -> None:
    error = blocked(APPEND, operation("1", created=NOW + datetime.timedelta(minutes=3)))
    assert error.message.startswith(f"export {op_name('1')} is still running (started 0 min ago)")
    error = blocked(APPEND, operation("1", created=NOW - datetime.timedelta(seconds=30)))
    assert "(started 0 min ago)" in error.message


def test_other_dispositions_only_hear_of_a_running_export() -> None:
    running = operation("1", created=minutes_ago(2))
    assert concurrent(TRUNCATE, running) == [
        f"Warning: export {op_name('1')} is still running (started 2 min ago) in {DATASET}; "
        "this WRITE_TRUNCATE export runs alongside it"
    ]
    assert concurrent(TRUNCATE, operation("2", done=True, created=minutes_ago(1))) == []
    assert concurrent(ExportPlan(STORE, TABLE, force=True), running)[0].endswith(
        "this force=true export runs alongside it"
    )
    exporter(FakeApi(listings=[[running]])).check_concurrent(TRUNCATE)  # no one to tell


def test_nothing_running_and_nothing_recent_lets_an_append_start() -> None:
    assert concurrent(APPEND) == []
    assert concurrent(APPEND, operation("1", done=True, created=minutes_ago(60))) == []
    assert concurrent(APPEND, operation("2", method="ImportDicomData", created=NOW)) == []


def test_a_listing_that_fails_blocks_an_append_and_warns_the_others() -> None:
    refused = ApiCallError(403, "PERMISSION_DENIED", "nope")
    api = FakeApi(listings=[refused])
    with pytest.raises(DicomBqError) as caught:
        exporter(api).check_concurrent(APPEND)
    assert caught.value.exit_code == EXIT_FAILED
    problem = (
        f"cannot check for an export already running in {DATASET} (operations.list: 403 "
        "PERMISSION_DENIED nope; it needs healthcare.operations.list on the dataset)"
    )
    assert caught.value.message.startswith(
        f"{problem}: a second WRITE_APPEND export would add every row twice, so none is "
        "started; check with `gcloud healthcare operations list"
    )
    assert caught.value.message.endswith(
        ", or pass --allow-concurrent to export without this check"
    )
    notices: list[str] = []
    exporter(FakeApi(listings=[refused])).check_concurrent(TRUNCATE, notices.append)
    assert notices == [f"Warning: {problem}"]
    exporter(FakeApi(listings=[refused])).check_concurrent(TRUNCATE)  # no one to tell


def test_the_recent_window_is_five_minutes() -> None:
    assert datetime.timedelta(minutes=5) == exporter_module.RECENT_EXPORT_WINDOW
    assert exporter_module.MAX_NOT_STARTED_RETRIES == 5
    assert exporter_module.RESENDS_AFTER_LOST_ANSWER == 1
    assert exporter_module.LISTING_DELAYS == (2.0, 4.0, 8.0)


def test_utc_now_is_aware_and_current() -> None:
    before = datetime.datetime.now(datetime.UTC)
    now = exporter_module.utc_now()
    assert now.tzinfo is not None
    assert now.utcoffset() == datetime.timedelta(0)
    assert before <= now <= datetime.datetime.now(datetime.UTC)


def test_two_blocking_exports_say_one_more() -> None:
    error = blocked(
        APPEND,
        operation("1", created=minutes_ago(1)),
        operation("2", done=True, created=minutes_ago(2)),
    )
    assert error.message == (
        f"export {op_name('1')} is still running (started 1 min ago) in {DATASET} (and 1 more): "
        "a second WRITE_APPEND export now would add every row again if it is a run of this same "
        "export (one killed or interrupted before it printed its result). Nothing was started. "
        f"Follow it with `dicom-bq operations wait {op_name('1')}`; if it is another export you "
        "mean to run alongside this one, pass --allow-concurrent (this check looks at the "
        "dataset's exports running or started in the last 5 minutes)"
    )


def test_run_window_counts_from_its_first_start_and_a_denial_without_message() -> None:
    answers = [{"name": op_name(str(n))} for n in range(5)]
    clock = VirtualClock()
    clock.now = 1000.0
    silent = {"error": {"code": 7}}
    follower = FakeFollower([state(op_name(str(n)), **silent) for n in range(5)], clock=clock)
    with pytest.raises(DicomBqError) as caught:
        exporter(
            FakeApi(answers=answers), clock, permission_backoff=STEADY, permission_window=15.0
        ).run(
            APPEND,
            follower,  # type: ignore[arg-type]
            None,
        )
    assert clock.sleeps == [10.0]
    assert caught.value.message == (
        explain_permission_denied(APPEND, None, 10.0, "") + f" Last operation: {op_name('1')}"
    )


def test_check_holds_the_plans_own_request_body_against_the_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both versions define every field dicom-bq sends today, so the refusal itself cannot
    show here: what is checked is the body the export would send."""
    checked: list[tuple[str, Any]] = []
    monkeypatch.setattr(
        exporter_module, "check_export_body", lambda version, body: checked.append((version, body))
    )
    plan = ExportPlan(STORE, TABLE, schema=ExportSchema.JSON, include_source_store=True)
    plan.check("v1beta1")
    assert checked == [("v1beta1", plan.request().body())]
