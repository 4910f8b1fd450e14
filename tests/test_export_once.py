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


def test_two_candidate_operations_are_not_guessed_between(cloud: Cloud) -> None:
    seed(cloud)
    other = "projects/dicom-src-test/locations/us-central1/datasets/imaging/operations/77"
    cloud.healthcare.operations[other] = FakeOperation(other, "v1", "p.d.t", "WRITE_APPEND", [], 0)
    cloud.healthcare.faults.append(Fault("POST", ":export", 503, after=True))
    with pytest.raises(DicomBqError) as caught:
        _exporter(cloud, VirtualClock()).start(APPEND)
    assert "2 exports started" in caught.value.message
    assert other in caught.value.message
    assert posts(cloud) == 1


def test_an_unlistable_dataset_stops_without_a_second_export(cloud: Cloud) -> None:
    cloud.healthcare.faults += [
        Fault("POST", ":export", 500, after=True),
        Fault("GET", "/operations$", 403),
    ]
    with pytest.raises(DicomBqError) as caught:
        _exporter(cloud, VirtualClock()).start(APPEND)
    assert "cannot be listed (403" in caught.value.message
    assert posts(cloud) == 1
    assert all(f.times == 0 for f in cloud.healthcare.faults)


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
