"""PERMISSION_DENIED right after provisioning is retried while IAM propagates, then explained."""

from __future__ import annotations

import pytest

from dicom_bq.clients.endpoints import Connection
from dicom_bq.clients.healthcare import HealthcareApi
from dicom_bq.clients.operations import Follower
from dicom_bq.clients.retry import Backoff
from dicom_bq.errors import DicomBqError
from dicom_bq.flows.exporter import Exporter, ExportPlan
from dicom_bq.refs import StoreName, TableUri
from tests.conftest import STORE, Cloud
from tests.fakes.clock import VirtualClock

PLAN = ExportPlan(StoreName.parse(STORE), TableUri.parse("bq://dicom-src-test.dicom_metadata.t"))


def exporter(cloud: Cloud, clock: VirtualClock, window: float) -> Exporter:
    api = HealthcareApi(Connection(environ=cloud.env))
    return Exporter(
        api,
        clock=clock,
        permission_window=window,
        permission_backoff=Backoff(initial=30, factor=1.0, cap=30, jitter=0),
    )


def test_request_denied_for_the_agent_then_allowed_is_retried(cloud: Cloud) -> None:
    cloud.healthcare.agent_denied_requests = 3
    clock = VirtualClock()
    waits: list[str] = []
    name = exporter(cloud, clock, window=600).start(PLAN, on_wait=lambda why, _: waits.append(why))
    assert name.startswith(
        "projects/dicom-src-test/locations/us-central1/datasets/imaging/operations/"
    )
    assert len(waits) == 3
    assert clock.now == 90
    assert len(cloud.healthcare.operations) == 1


def test_request_denied_for_the_agent_past_the_window_names_the_agent(cloud: Cloud) -> None:
    cloud.healthcare.agent_denied_requests = 1000
    clock = VirtualClock()
    with pytest.raises(DicomBqError) as caught:
        exporter(cloud, clock, window=120).start(PLAN)
    assert caught.value.exit_code == 1
    message = caught.value.message
    assert "PERMISSION_DENIED for 120s" in message
    # The address comes from Google's error, not a placeholder.
    agent = "service-111122223333@gcp-sa-healthcare.iam.gserviceaccount.com"
    assert f"{PLAN.store.project}, {agent}, needs" in message
    assert f'bindings.members:serviceAccount:{agent}"' in message
    assert "AGENT" not in message
    assert "PROJECT_NUMBER" not in message
    assert clock.now == 120


def test_the_callers_own_denial_is_not_retried_and_names_the_permission(cloud: Cloud) -> None:
    cloud.healthcare.caller_denied_exports = 1000
    clock = VirtualClock()
    with pytest.raises(DicomBqError) as caught:
        exporter(cloud, clock, window=600).start(PLAN)
    message = caught.value.message
    assert message.startswith("you (the credentials dicom-bq runs with) lack ")
    assert "healthcare.dicomStores.export on projects/dicom-src-test/" in message
    assert "gcp-sa-healthcare" not in message  # not blamed on the agent
    assert clock.now == 0  # no waiting
    assert cloud.healthcare.caller_denied_exports == 999  # one request


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
