"""PERMISSION_DENIED right after provisioning is retried while IAM propagates, then explained."""

from __future__ import annotations

import pytest

from dicom_bq.endpoints import Connection
from dicom_bq.errors import DicomBqError
from dicom_bq.export import Exporter, ExportPlan
from dicom_bq.healthcare_api import HealthcareApi
from dicom_bq.operations import Follower
from dicom_bq.refs import StoreName, TableUri
from dicom_bq.retry import Backoff
from tests.conftest import STORE, Cloud
from tests.fakes.clock import VirtualClock

PLAN = ExportPlan(StoreName.parse(STORE), TableUri.parse("bq://dicom-src-test.dicom_metadata.t"))
QUICK = Backoff(initial=0.01, factor=1.0, cap=0.01, jitter=0.0)


def exporter(cloud: Cloud, clock: VirtualClock, window: float) -> Exporter:
    api = HealthcareApi(Connection(environ=cloud.env))
    return Exporter(
        api,
        clock=clock,
        permission_window=window,
        permission_backoff=Backoff(initial=30, factor=1.0, cap=30, jitter=0),
    )


def test_request_denied_then_allowed_is_retried(cloud: Cloud) -> None:
    cloud.healthcare.caller_denied_exports = 3
    clock = VirtualClock()
    waits: list[str] = []
    name = exporter(cloud, clock, window=600).start(PLAN, on_wait=lambda why, _: waits.append(why))
    assert name.startswith(
        "projects/dicom-src-test/locations/us-central1/datasets/imaging/operations/"
    )
    assert len(waits) == 3
    assert clock.now == 90


def test_request_denied_past_the_window_is_explained(cloud: Cloud) -> None:
    cloud.healthcare.caller_denied_exports = 1000
    clock = VirtualClock()
    with pytest.raises(DicomBqError) as caught:
        exporter(cloud, clock, window=120).start(PLAN)
    assert caught.value.exit_code == 1
    assert "PERMISSION_DENIED for 120s" in caught.value.message
    assert "PROJECT_NUMBER of dicom-src-test" in caught.value.message
    assert clock.now == 120


def test_operation_denied_while_propagating_is_exported_again(cloud: Cloud) -> None:
    # The agent's grant reaches BigQuery 100 s after provisioning (virtual time).
    clock = VirtualClock()
    cloud.healthcare.clock = clock
    cloud.healthcare.agent_denied_until = 100
    cloud.healthcare.export_seconds = 5
    api = HealthcareApi(Connection(environ=cloud.env))
    follower = Follower(api, clock=clock)
    state = exporter(cloud, clock, window=600).run(PLAN, follower, timeout=None)
    assert state.done
    assert state.error_code is None
    denied = [op for op in cloud.healthcare.operations.values() if op.error]
    assert len(denied) >= 3
    assert all(op.error and op.error["code"] == 7 for op in denied)


def test_operation_denied_for_good_names_agent_and_roles(cloud: Cloud) -> None:
    clock = VirtualClock()
    cloud.healthcare.clock = clock
    cloud.healthcare.agent_denied_until = 10_000
    api = HealthcareApi(Connection(environ=cloud.env))
    run = exporter(cloud, clock, window=300)
    run.agent_email = "service-111122223333@gcp-sa-healthcare.iam.gserviceaccount.com"
    with pytest.raises(DicomBqError) as caught:
        run.run(PLAN, Follower(api, clock=clock), timeout=None)
    message = caught.value.message
    assert "service-111122223333@gcp-sa-healthcare.iam.gserviceaccount.com" in message
    assert "does not have bigquery.tables.create" in message
    assert "logs: https://console.cloud.google.com/logs/" in message
