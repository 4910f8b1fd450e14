"""An export is started at most once: when the answer to the export request is lost, the CLI
finds the operation the request started (operations.list) instead of sending it again.

The export POST is not idempotent: WRITE_APPEND twice duplicates every row. Google's error guide
(https://cloud.google.com/apis/design/errors) has a 500/503 possibly arrive after the work was
done; the fake reproduces that with faults that process the request, then lose the answer.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from dicom_bq.clients.endpoints import Connection
from dicom_bq.clients.healthcare import HealthcareApi
from dicom_bq.errors import DicomBqError
from dicom_bq.flows.exporter import Exporter, ExportPlan
from dicom_bq.refs import StoreName, TableUri, WriteDisposition
from tests.conftest import STORE, Cloud
from tests.fakes.clock import VirtualClock
from tests.fakes.healthcare import FakeOperation, Fault
from tests.fakes.http import Response
from tests.test_export_cli import TABLE_ID, export, seed

LOST = [500, 502, 503, 504, "reset"]
DISPOSITIONS = ["WRITE_EMPTY", "WRITE_TRUNCATE", "WRITE_APPEND"]


def posts(cloud: Cloud) -> int:
    return sum(1 for r in cloud.healthcare.requests if r.path.endswith(":export"))


@pytest.mark.parametrize("disposition", DISPOSITIONS)
@pytest.mark.parametrize("kind", LOST)
def test_a_lost_answer_is_followed_not_resent(
    cloud: Cloud, kind: int | str, disposition: str
) -> None:
    seed(cloud, 2)
    if disposition != "WRITE_EMPTY":
        cloud.bigquery.tables[TABLE_ID] = [{"SOPInstanceUID": "earlier"}]
    cloud.healthcare.faults.append(Fault("POST", ":export", kind, after=True))
    result = export("--write-disposition", disposition, "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert cloud.healthcare.faults[0].times == 0  # the fault fired
    assert posts(cloud) == 1
    assert len(cloud.healthcare.operations) == 1
    (operation,) = cloud.healthcare.operations
    assert json.loads(result.stdout)["operation"] == operation
    assert "found by listing" in result.stderr
    rows = cloud.bigquery.tables[TABLE_ID]
    assert len(rows) == (3 if disposition == "WRITE_APPEND" else 2)


def _exporter(cloud: Cloud, clock: VirtualClock, **api: Any) -> Exporter:
    return Exporter(HealthcareApi(Connection(environ=cloud.env), **api), clock=clock)


APPEND = ExportPlan(
    StoreName.parse(STORE),
    TableUri.parse(f"bq://{TABLE_ID}"),
    write_disposition=WriteDisposition.WRITE_APPEND,
)


def test_a_timeout_after_sending_is_followed_not_resent(cloud: Cloud) -> None:
    seed(cloud)
    cloud.healthcare.faults.append(Fault("POST", ":export", "slow", seconds=1.5, after=True))
    name = _exporter(cloud, VirtualClock(), request_timeout=0.5).start(APPEND)
    assert list(cloud.healthcare.operations) == [name]
    assert posts(cloud) == 1
    # The answer was lost and the name found by listing: without the timeout, no listing.
    assert any(r.path.endswith("/operations") for r in cloud.healthcare.requests)


@pytest.mark.parametrize("kind", LOST)
def test_when_no_operation_is_listed_it_stops_without_a_second_export(
    cloud: Cloud, kind: int | str
) -> None:
    cloud.healthcare.faults.append(Fault("POST", ":export", kind))  # lost before processing
    clock = VirtualClock()
    with pytest.raises(DicomBqError) as caught:
        _exporter(cloud, clock).start(APPEND)
    assert caught.value.exit_code == 1
    assert "not sent again" in caught.value.message
    assert "gcloud healthcare operations list --dataset=imaging" in caught.value.message
    assert posts(cloud) == 1
    assert cloud.healthcare.operations == {}
    assert clock.sleeps == [2.0, 4.0, 8.0]  # the listing is re-read, on virtual time


OTHER_STORE = STORE.rsplit("/", 1)[0] + "/other"
OPERATIONS = STORE.rsplit("/dicomStores/", 1)[0] + "/operations"


def test_an_export_listed_before_the_request_is_never_taken_for_it(cloud: Cloud) -> None:
    """The nightly snapshot's export began a few seconds before this request (createTime within
    any clock-skew allowance), and this request's answer was lost before Google acted: the
    snapshot's export is not this one. Operations do not name their store (healthcare v1
    discovery document, schemas.OperationMetadata), so only what was not listed before the
    request was sent is a candidate."""
    seed(cloud)
    snapshot = f"{OPERATIONS}/77"
    cloud.healthcare.operations[snapshot] = FakeOperation(
        snapshot, "v1", "p.d.nightly", "WRITE_TRUNCATE", [], float("inf")
    )
    cloud.healthcare.faults.append(Fault("POST", ":export", 503))  # lost before Google acted
    with pytest.raises(DicomBqError) as caught:
        _exporter(cloud, VirtualClock()).start(APPEND)
    assert "no export operation is listed in" in caught.value.message
    assert "not sent again" in caught.value.message
    assert snapshot not in caught.value.message
    assert posts(cloud) == 1
    # The listing that the candidates are measured against came before the one POST.
    paths = [r.path for r in cloud.healthcare.requests]
    assert paths.index(next(p for p in paths if p.endswith("/operations"))) < paths.index(
        next(p for p in paths if p.endswith(":export"))
    )


def _another_store_exports_at_the_same_time(cloud: Cloud) -> None:
    """Each export request of STORE lands together with one of another store of the dataset."""
    cloud.healthcare.stores.add(OTHER_STORE)
    original = cloud.healthcare._export

    def both(version: str, store: str, request: Any) -> Any:
        if store == STORE:
            original(version, OTHER_STORE, request)
        return original(version, store, request)

    cloud.healthcare._export = both  # type: ignore[method-assign]


def test_two_exports_that_appeared_since_the_request_are_ambiguous(cloud: Cloud) -> None:
    seed(cloud)
    _another_store_exports_at_the_same_time(cloud)
    cloud.healthcare.faults.append(Fault("POST", ":export", 503, after=True))
    with pytest.raises(DicomBqError) as caught:
        _exporter(cloud, VirtualClock()).start(APPEND)
    message = caught.value.message
    assert caught.value.exit_code == 1
    assert "2 exports started" in message
    assert "cannot tell which is this one" in message
    assert len(cloud.healthcare.operations) == 2
    for name in cloud.healthcare.operations:
        assert name in message
    assert posts(cloud) == 1


def test_the_one_export_that_appeared_since_the_request_is_followed(cloud: Cloud) -> None:
    seed(cloud)
    earlier = f"{OPERATIONS}/77"
    cloud.healthcare.operations[earlier] = FakeOperation(
        earlier, "v1", "p.d.t", "WRITE_APPEND", [], 0
    )
    cloud.healthcare.faults.append(Fault("POST", ":export", 503, after=True))
    name = _exporter(cloud, VirtualClock()).start(APPEND)
    assert name != earlier
    assert set(cloud.healthcare.operations) == {earlier, name}
    assert posts(cloud) == 1


def test_an_unlistable_dataset_before_sending_stops_after_a_lost_answer(cloud: Cloud) -> None:
    cloud.healthcare.faults += [
        Fault("GET", "/operations$", 403),
        Fault("POST", ":export", 500, after=True),
    ]
    with pytest.raises(DicomBqError) as caught:
        _exporter(cloud, VirtualClock()).start(APPEND)
    message = caught.value.message
    assert "could not be listed before the request was sent" in message
    assert "not sent again" in message
    assert "gcloud healthcare operations list --dataset=imaging" in message
    assert posts(cloud) == 1


def test_an_unlistable_dataset_stops_without_a_second_export(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listed before sending; refused when looked at after the lost answer."""
    listings = cloud.healthcare._list_operations
    calls: list[str] = []

    def second_refused(dataset: str, request: Any) -> Any:
        calls.append(dataset)
        if len(calls) > 1:
            return Response.error(403, "PERMISSION_DENIED", "healthcare.operations.list denied")
        return listings(dataset, request)

    monkeypatch.setattr(cloud.healthcare, "_list_operations", second_refused)
    cloud.healthcare.faults.append(Fault("POST", ":export", 500, after=True))
    with pytest.raises(DicomBqError) as caught:
        _exporter(cloud, VirtualClock()).start(APPEND)
    assert "cannot be listed (403" in caught.value.message
    assert posts(cloud) == 1
    assert len(calls) == 2


def test_a_refusal_before_starting_is_sent_again(cloud: Cloud) -> None:
    cloud.healthcare.faults.append(Fault("POST", ":export", 429, times=2))
    clock = VirtualClock()
    name = _exporter(cloud, clock).start(APPEND)
    assert list(cloud.healthcare.operations) == [name]
    assert posts(cloud) == 3
    assert len(clock.sleeps) == 2


def test_refusals_are_bounded(cloud: Cloud) -> None:
    cloud.healthcare.faults.append(Fault("POST", ":export", 429, times=50))
    with pytest.raises(DicomBqError, match="refused 6 times"):
        _exporter(cloud, VirtualClock()).start(APPEND)
    assert posts(cloud) == 6
    assert cloud.healthcare.operations == {}


def test_a_listed_operation_of_another_method_is_not_taken(cloud: Cloud) -> None:
    cloud.healthcare.faults.append(Fault("POST", ":export", 500))
    other = "projects/dicom-src-test/locations/us-central1/datasets/imaging/operations/5"
    cloud.healthcare.operations[other] = FakeOperation(other, "v1", "p.d.t", "WRITE_APPEND", [], 0)
    original = cloud.healthcare._operation_json

    def as_import(operation: FakeOperation, done: bool) -> dict[str, Any]:
        document = original(operation, done)
        if operation.name == other:
            document["metadata"]["apiMethodName"] = (
                "google.cloud.healthcare.v1.dicom.DicomService.ImportDicomData"
            )
        return document

    cloud.healthcare._operation_json = as_import  # type: ignore[method-assign]
    with pytest.raises(DicomBqError, match="no export operation"):
        _exporter(cloud, VirtualClock()).start(APPEND)
