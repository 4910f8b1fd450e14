"""Requests sent exactly as meant, proven with faults at the socket level.

httplib2 0.32.1 (under googleapiclient) sends a request again on its own, whatever its method,
when the server ends the connection without a status line (`Http._conn_request`: a BadStatusLine
on the first try is retried "regardless of the number of RETRIES set"); google-cloud-storage 3.x
retries uploads by default (`retry=DEFAULT_RETRY`). After the server processed the request, that
resend is a second export (WRITE_APPEND: every row twice) or a second object write. The fakes end
the exchange as a server or a middlebox would (tests/fakes/http.py, SocketFault): a FIN without a
status line, a TCP reset, a status line cut short, no answer at all.

The export's own recovery is Google's: the answer is lost, the operation is not; it is found with
`operations.list` on the dataset (healthcare v1 discovery document,
projects.locations.datasets.operations.list) and followed. WRITE_TRUNCATE and WRITE_EMPTY give
the same table when sent twice (Google's how-to, reference/dicom-export-bigquery.fr.txt), so they
alone are sent again when no operation is listed.
"""

from __future__ import annotations

import datetime
import json
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httplib2
import pytest

from dicom_bq.clients.endpoints import Connection
from dicom_bq.clients.healthcare import HealthcareApi
from dicom_bq.clients.operations import Follower
from dicom_bq.clients.transport import AnswerLostError, SendOnceHttp
from dicom_bq.errors import DicomBqError
from dicom_bq.flows import exporter as exporter_module
from dicom_bq.flows.exporter import Exporter, ExportPlan
from dicom_bq.refs import GcsUri, StoreName, TableUri, WriteDisposition
from tests.conftest import FILTER_BUCKET, STORE, Cloud
from tests.fakes.clock import VirtualClock
from tests.fakes.healthcare import FakeOperation, Fault
from tests.fakes.http import (
    FaultProxy,
    LoopbackFake,
    ProxyFault,
    Request,
    Response,
    SocketFault,
)
from tests.test_export_cli import TABLE_ID, export, seed

# The faults that end an exchange before the client has a status line; "hang" is the timeout.
NO_STATUS_LINE = ["close", "reset", "partial"]
IDEMPOTENT = ["WRITE_TRUNCATE", "WRITE_EMPTY"]


# -- the transport alone, against a raw fault server ------------------------------------------


@dataclass
class FaultServer(LoopbackFake):
    """Answers 200 with the request's path, except for the requests `faults` names (by their
    number, from 1), which end at the socket level after being read."""

    faults: dict[int, str] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.requests.append(request)
            number = len(self.requests)
        if request.path == "/held":
            self.release.wait(10)  # the answer comes once the test lets it
        kind = self.faults.get(number)
        if kind is not None:
            raise SocketFault(kind, seconds=2.0)
        return Response(200, request.path.encode(), {"Content-Type": "text/plain"})


@pytest.fixture
def server() -> Iterator[FaultServer]:
    fake = FaultServer().start()
    try:
        yield fake
    finally:
        fake.release.set()
        fake.stop()


@pytest.mark.parametrize("kind", ["close", "partial"])
def test_httplib2_alone_sends_a_post_twice_when_the_status_line_is_missing(
    server: FaultServer, kind: str
) -> None:
    """The library behaviour the transport exists for (httplib2 0.32.1, Http._conn_request):
    if this starts failing, httplib2 changed and clients/transport.py should be re-read."""
    server.faults[1] = kind
    response, _ = httplib2.Http(timeout=5).request(server.url + "/export", "POST", b"{}")
    assert response.status == 200
    assert [r.path for r in server.requests] == ["/export", "/export"]


@pytest.mark.parametrize(
    ("kind", "raised"),
    [
        ("close", AnswerLostError),
        ("partial", AnswerLostError),
        ("reset", ConnectionResetError),
        ("hang", TimeoutError),
    ],
)
def test_a_post_is_sent_once_whatever_ends_the_exchange(
    server: FaultServer, kind: str, raised: type[Exception]
) -> None:
    server.faults[1] = kind
    http = SendOnceHttp(timeout=0.5)
    with pytest.raises(raised):
        http.request(server.url + "/export", "POST", b"{}")
    assert [r.path for r in server.requests] == ["/export"]
    assert http.connections == {}  # nothing kept from the failed exchange
    # The next request is answered on a new connection, by its own answer.
    assert http.request(server.url + "/next", "GET")[1] == b"/next"
    assert server.requests[-1].port != server.requests[0].port


def test_the_lost_answer_is_named(server: FaultServer) -> None:
    server.faults[1] = "close"
    with pytest.raises(AnswerLostError) as caught:
        SendOnceHttp(timeout=5).request(server.url + "/v1/x:export?alt=json", "POST", b"{}")
    assert "POST /v1/x:export was sent and the connection ended before its answer" in str(
        caught.value
    )
    assert "RemoteDisconnected" in str(caught.value)
    assert "not sent again" in str(caught.value)


def test_an_idempotent_get_keeps_httplib2s_one_resend(server: FaultServer) -> None:
    # A GET may be repeated (RFC 9110 9.2.2): the stale-connection resend stays for it.
    server.faults[1] = "close"
    assert SendOnceHttp(timeout=5).request(server.url + "/store", "GET")[1] == b"/store"
    assert [r.path for r in server.requests] == ["/store", "/store"]


def test_a_post_goes_out_on_a_new_connection(server: FaultServer) -> None:
    """So a connection closed while idle (a stale keep-alive) is never taken for a lost answer:
    only the server can end a POST's own connection."""
    http = SendOnceHttp(timeout=5)
    http.request(server.url + "/a", "GET")
    http.request(server.url + "/b", "GET")
    http.request(server.url + "/c", "POST", b"{}")
    http.request(server.url + "/d", "GET")
    ports = [r.port for r in server.requests]
    assert ports[0] == ports[1]  # GETs share the kept-alive connection
    assert ports[2] != ports[1]  # the POST has its own
    assert ports[3] == ports[2]  # which is kept alive once answered


@pytest.mark.parametrize("transport", [httplib2.Http, SendOnceHttp])
def test_a_connection_interrupted_while_waiting_is_not_reused(
    server: FaultServer, transport: type[Any]
) -> None:
    """Ctrl-C while an answer is on its way: the next request must not read that answer as its
    own (plain httplib2 does: http.client sends nothing and reads the pending answer)."""
    http = transport(timeout=5)
    http.request(server.url + "/warm", "GET")

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    try:
        with pytest.raises(KeyboardInterrupt):
            http.request(server.url + "/held", "GET")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    server.release.set()  # the interrupted request's answer is now sent
    content = http.request(server.url + "/next", "GET")[1]
    if transport is httplib2.Http:
        # The defect, pinned: the stale answer is taken, /next never reaches the server.
        assert content == b"/held"
        assert [r.path for r in server.requests] == ["/warm", "/held"]
    else:
        assert content == b"/next"
        assert [r.path for r in server.requests] == ["/warm", "/held", "/next"]


# -- the export, end to end, against the fake Healthcare API ------------------------------------


def sop_uids(cloud: Cloud) -> list[str]:
    cloud.healthcare.settle()  # every started export writes its rows, followed or not
    return sorted(str(row["SOPInstanceUID"]) for row in cloud.bigquery.tables[TABLE_ID])


@pytest.mark.parametrize("kind", NO_STATUS_LINE)
def test_an_answer_lost_at_the_socket_after_the_export_started_is_one_export(
    cloud: Cloud, kind: str
) -> None:
    instances = seed(cloud, 2)
    cloud.bigquery.tables[TABLE_ID] = [{"SOPInstanceUID": "earlier"}]
    cloud.healthcare.faults.append(Fault("POST", ":export", kind, after=True))
    result = export("--write-disposition", "WRITE_APPEND", "--json")
    assert result.exit_code == 0, result.output
    assert cloud.healthcare.faults[0].times == 0  # the fault fired
    assert cloud.healthcare.export_posts == 1
    (operation,) = cloud.healthcare.operations
    assert json.loads(result.stdout)["operation"] == operation
    assert "found by listing" in result.stderr
    assert sop_uids(cloud) == sorted(["earlier", *(i.sop_uid for i in instances)])


APPEND = ExportPlan(
    StoreName.parse(STORE),
    TableUri.parse(f"bq://{TABLE_ID}"),
    write_disposition=WriteDisposition.WRITE_APPEND,
)


def test_a_timeout_after_the_export_started_is_one_export(cloud: Cloud) -> None:
    """No answer at all: the client's socket timeout (request_timeout, 60 s in production:
    clients/discovery.py REQUEST_TIMEOUT) ends the wait; 0.5 s here, a real wait."""
    instances = seed(cloud, 2)
    cloud.bigquery.tables[TABLE_ID] = [{"SOPInstanceUID": "earlier"}]
    cloud.healthcare.faults.append(Fault("POST", ":export", "hang", seconds=1.5, after=True))
    api = HealthcareApi(Connection(environ=cloud.env), request_timeout=0.5)
    clock = VirtualClock()
    state = Exporter(api, clock=clock).run(APPEND, Follower(api, clock=clock), timeout=None)
    assert state.state == "SUCCEEDED"
    assert cloud.healthcare.export_posts == 1
    assert list(cloud.healthcare.operations) == [state.name]
    assert sop_uids(cloud) == sorted(["earlier", *(i.sop_uid for i in instances)])


@pytest.mark.parametrize("kind", [*NO_STATUS_LINE, 503])
@pytest.mark.parametrize("disposition", IDEMPOTENT)
def test_an_idempotent_export_whose_answer_was_lost_before_it_started_is_sent_again_once(
    cloud: Cloud, kind: int | str, disposition: str
) -> None:
    instances = seed(cloud, 2)
    cloud.healthcare.faults.append(Fault("POST", ":export", kind))  # before processing
    result = export("--write-disposition", disposition, "--json")
    assert result.exit_code == 0, result.output
    assert cloud.healthcare.export_posts == 2
    assert len(cloud.healthcare.operations) == 1
    assert f"sending the {disposition} export again" in result.stderr
    assert sop_uids(cloud) == sorted(i.sop_uid for i in instances)


@pytest.mark.parametrize("kind", [*NO_STATUS_LINE, 503])
def test_a_write_append_export_whose_answer_was_lost_is_not_sent_again(
    cloud: Cloud, kind: int | str
) -> None:
    seed(cloud)
    cloud.bigquery.tables[TABLE_ID] = [{"SOPInstanceUID": "earlier"}]
    cloud.healthcare.faults.append(Fault("POST", ":export", kind))
    result = export("--write-disposition", "WRITE_APPEND")
    assert result.exit_code == 1
    assert cloud.healthcare.export_posts == 1
    assert cloud.healthcare.operations == {}
    message = " ".join(result.stderr.split())
    assert "not sent again, since a second WRITE_APPEND export would add every row twice" in (
        message
    )
    assert "gcloud healthcare operations list --dataset=imaging" in message
    assert "Traceback" not in result.output
    assert sop_uids(cloud) == ["earlier"]


def test_an_idempotent_export_is_sent_again_only_once(cloud: Cloud) -> None:
    cloud.healthcare.faults.append(Fault("POST", ":export", "close", times=5))
    clock = VirtualClock()
    plan = ExportPlan(StoreName.parse(STORE), TableUri.parse(f"bq://{TABLE_ID}"))
    with pytest.raises(DicomBqError) as caught:
        Exporter(HealthcareApi(Connection(environ=cloud.env)), clock=clock).start(plan)
    assert cloud.healthcare.export_posts == 1 + exporter_module.RESENDS_AFTER_LOST_ANSWER
    assert "WRITE_EMPTY export request was sent 2 times and every answer was lost" in (
        caught.value.message
    )
    # Each lost answer was looked for in the listing first.
    assert clock.sleeps == [*exporter_module.LISTING_DELAYS] * 2


# -- object writes: google-cloud-storage through a socket-fault proxy ---------------------------


@pytest.fixture
def storage_proxy(cloud: Cloud) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream=cloud.storage_url).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def _upload(proxy: FaultProxy, how: str, target: GcsUri, tmp_path: Path) -> None:
    from dicom_bq.clients.storage import StorageObjects

    objects = StorageObjects(
        Connection(environ={"STORAGE_EMULATOR_HOST": proxy.url}), target.bucket
    )
    if how == "text":
        objects.upload_text(target, "/studies/1.2\n")
        return
    path = tmp_path / "filter.txt"
    if how == "resumable":  # past 8 MiB (_MAX_MULTIPART_SIZE): a resumable upload
        path.write_text("/studies/1.2\n" * 700_000)
    else:
        path.write_text("/studies/1.2\n")
    objects.upload_file(str(path), target, 1024 * 1024)


def _writes(proxy: FaultProxy) -> list[str]:
    return [f"{r.method} {r.path}" for r in proxy.forwarded if r.path.startswith("/upload/")]


@pytest.mark.parametrize("kind", NO_STATUS_LINE)
@pytest.mark.parametrize(("how", "method"), [("text", "POST"), ("file", "POST")])
def test_an_object_write_whose_answer_was_lost_is_sent_once(
    storage_proxy: FaultProxy, tmp_path: Path, kind: str, how: str, method: str
) -> None:
    storage_proxy.faults.append(ProxyFault(method, "/upload/", kind))
    target = GcsUri(FILTER_BUCKET, f"dicom-bq/filters/{how}-{kind}.txt")
    with pytest.raises(DicomBqError) as caught:
        _upload(storage_proxy, how, target, tmp_path)
    assert _writes(storage_proxy) == [
        "POST /upload/storage/v1/b/dicom-src-test-filters/o"
    ]  # google-cloud-storage's DEFAULT_RETRY sent it twice
    assert "the answer was lost" in caught.value.message
    assert f"gcloud storage ls -l {target.uri}" in caught.value.message


def test_a_resumable_upload_sends_each_piece_once(
    storage_proxy: FaultProxy, tmp_path: Path
) -> None:
    storage_proxy.faults.append(ProxyFault("PUT", "/upload/", "close"))
    target = GcsUri(FILTER_BUCKET, "dicom-bq/filters/resumable.txt")
    with pytest.raises(DicomBqError, match="the answer was lost"):
        _upload(storage_proxy, "resumable", target, tmp_path)
    writes = _writes(storage_proxy)
    assert writes[0].startswith("POST /upload/")  # the session
    assert len(writes) == 2  # and the first piece, once


# -- BigQuery: its resends carry a requestId and read only ------------------------------------


def test_a_resent_bigquery_query_carries_the_same_request_id(cloud: Cloud) -> None:
    """google-cloud-bigquery retries jobs.query (query_and_wait, DEFAULT_RETRY) with one
    requestId for all tries (google/cloud/bigquery/_job_helpers.py, do_query), which BigQuery
    uses "to ensure idempotent behavior for queries" (bigquery v2 discovery document,
    QueryRequest.requestId); the tool's queries are SELECTs ("nullipotent"), so nothing it
    queries changes when one is resent."""
    from dicom_bq.clients.bigquery import BigQueryTables

    proxy = FaultProxy(upstream=cloud.bigquery.url).start()
    try:
        proxy.faults.append(ProxyFault("POST", "/queries", "close"))
        tables = BigQueryTables(
            Connection(environ={"BIGQUERY_EMULATOR_HOST": proxy.url}), "dicom-src-test"
        )
        row = {"StudyInstanceUID": "1", "SeriesInstanceUID": "1.1", "PatientID": "p"}
        cloud.bigquery.tables[TABLE_ID] = [{**row, "SOPInstanceUID": "1.2.3"}]
        rows = list(tables.instance_rows(TableUri.parse(f"bq://{TABLE_ID}"), "1.2.3"))
    finally:
        proxy.stop()
    assert [r["SOPInstanceUID"] for r in rows] == ["1.2.3"]
    queries = [r.json() for r in proxy.requests if r.path.endswith("/queries")]
    assert len(queries) == 2
    assert queries[0]["requestId"] == queries[1]["requestId"]
    assert all(q["query"].lstrip().upper().startswith("SELECT") for q in queries)


# -- re-running after a crash: an export of the dataset already running -------------------------


def _started_earlier(cloud: Cloud, minutes_ago: float, *, done: bool) -> str:
    name = "projects/dicom-src-test/locations/us-central1/datasets/imaging/operations/77"
    created = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=minutes_ago)
    cloud.healthcare.operations[name] = FakeOperation(
        name,
        "v1",
        TABLE_ID,
        "WRITE_APPEND",
        [],
        done_at=0.0 if done else 10**9,
        created=created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        written=True,
    )
    return name


def test_a_rerun_after_a_killed_export_is_refused_for_write_append(cloud: Cloud) -> None:
    # The first run printed "Started ..." and died (kill -9): its export runs on.
    seed(cloud)
    cloud.healthcare.export_seconds = 600
    first = export("--write-disposition", "WRITE_APPEND", "--no-wait")
    assert first.exit_code == 0, first.output
    running = first.stdout.strip()
    again = export("--write-disposition", "WRITE_APPEND")
    assert again.exit_code == 1
    message = " ".join(again.stderr.split())
    assert f"export {running} is still running" in message
    assert f"dicom-bq operations wait {running}" in message
    assert "--allow-concurrent" in message
    assert "Nothing was started" in message
    assert "Traceback" not in again.output
    assert cloud.healthcare.export_posts == 1


def test_allow_concurrent_starts_a_second_write_append_export(cloud: Cloud) -> None:
    seed(cloud)
    running = _started_earlier(cloud, 1, done=False)
    result = export("--write-disposition", "WRITE_APPEND", "--allow-concurrent", "--json")
    assert result.exit_code == 0, result.output
    assert cloud.healthcare.export_posts == 1
    assert json.loads(result.stdout)["operation"] != running
    # The check was skipped: one listing came before the export, the one a lost answer would be
    # measured against (flows/exporter.py, ListedBefore), where the check would make two.
    paths = [r.path for r in cloud.healthcare.requests]
    before = paths[: next(i for i, p in enumerate(paths) if p.endswith(":export"))]
    assert [p for p in before if p.endswith("/operations")] == [before[0]]


@pytest.mark.parametrize(
    ("minutes_ago", "refused"),
    [(1, True), (4.5, True), (6, False), (60, False)],
)
def test_a_finished_export_counts_within_the_window(
    cloud: Cloud, minutes_ago: float, refused: bool
) -> None:
    assert datetime.timedelta(minutes=5) == exporter_module.RECENT_EXPORT_WINDOW
    seed(cloud)
    name = _started_earlier(cloud, minutes_ago, done=True)
    result = export("--write-disposition", "WRITE_APPEND")
    assert (result.exit_code == 1) is refused, result.output
    assert (f"dicom-bq operations wait {name}" in result.stderr) is refused
    assert cloud.healthcare.export_posts == (0 if refused else 1)


@pytest.mark.parametrize("disposition", IDEMPOTENT)
def test_other_dispositions_start_alongside_a_running_export_and_say_so(
    cloud: Cloud, disposition: str
) -> None:
    seed(cloud)
    running = _started_earlier(cloud, 1, done=False)
    result = export("--write-disposition", disposition, "--yes")
    assert result.exit_code == 0, result.output
    assert f"Warning: export {running} is still running" in " ".join(result.stderr.split())
    assert cloud.healthcare.export_posts == 1


def test_an_unlistable_dataset_stops_write_append_before_anything_is_sent(cloud: Cloud) -> None:
    cloud.healthcare.faults.append(Fault("GET", "/operations$", 403))
    result = export("--write-disposition", "WRITE_APPEND")
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert "cannot check for an export already running" in message
    assert "healthcare.operations.list" in message
    assert "--allow-concurrent" in message
    assert cloud.healthcare.export_posts == 0


def test_an_unlistable_dataset_is_only_a_warning_for_write_empty(cloud: Cloud) -> None:
    seed(cloud)
    cloud.healthcare.faults.append(Fault("GET", "/operations$", 403))
    result = export("--json")
    assert result.exit_code == 0, result.output
    assert "Warning: cannot check for an export already running" in result.stderr
    assert cloud.healthcare.export_posts == 1
