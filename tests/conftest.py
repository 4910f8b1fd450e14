from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from dicom_bq.clients import retry
from dicom_bq.stack.plan import Plan
from tests.fakes.bigquery import FakeBigQuery
from tests.fakes.clock import VirtualClock
from tests.fakes.healthcare import FakeHealthcare
from tests.fakes.http import RequestRecorder
from tests.inventory import plan_example

_PLANS: dict[str, Plan] = {}


_PLANS_BY_CONFIG: dict[str, Plan] = {}


@pytest.fixture
def plans_made_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """For modules whose commands plan the same stack files over and over (audit, preflight):
    `plan_stack` answers a merged config it already planned with a copy of that plan, so each
    test pays for the checks it makes, not for the Pulumi mock runtime again (about 0.2 s a plan).
    Keyed on the whole merged config, so a test that writes another stack file plans it anew.
    Not for modules that patch the program: a plan made before the patch would be served."""
    import copy
    import json

    from dicom_bq.stack import plan as plan_module

    plan_stack = plan_module.plan_stack

    def once(config: Any) -> Plan:
        key = json.dumps(
            [config.stack, config.values, config.environments, config.notes],
            sort_keys=True,
            default=repr,
        )
        if key not in _PLANS_BY_CONFIG:
            _PLANS_BY_CONFIG[key] = plan_stack(config)
        return copy.deepcopy(_PLANS_BY_CONFIG[key])

    monkeypatch.setattr(plan_module, "plan_stack", once)


def cached_plan(stack: str) -> Plan:
    if stack not in _PLANS:
        _PLANS[stack] = plan_example(stack)
    return _PLANS[stack]


@pytest.fixture(autouse=True)
def _cli_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every CliRunner.invoke of the suite reuses one click command (tests/fast_cli.py says why):
    typer rebuilds it from the app on each call, a few hundred milliseconds each."""
    from tests.fast_cli import build_once

    build_once(monkeypatch)


@pytest.fixture(params=["dev", "prod"])
def example_plan(request: pytest.FixtureRequest) -> Plan:
    return cached_plan(request.param)


def base_settings(**overrides: Any) -> dict[str, Any]:
    """A minimal valid stack config; tests change one key at a time."""
    raw: dict[str, Any] = {
        "sourceProject": "dicom-src-test",
        "sourceProjectNumber": "111122223333",
        "location": "us-central1",
        "healthcareDatasetId": "imaging",
        "dicomStoreId": "dicom",
        "bigqueryDatasetId": "dicom_metadata",
    }
    raw.update(overrides)
    return {key: value for key, value in raw.items() if value is not None}


@pytest.fixture(scope="session")
def orthanc_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests import peers

    with peers.orthanc(tmp_path_factory.mktemp("orthanc")) as url:
        yield url


@pytest.fixture(scope="session")
def storage_url() -> Iterator[str]:
    from tests import peers

    with peers.storage_emulator() as url:
        yield url


STORE = "projects/dicom-src-test/locations/us-central1/datasets/imaging/dicomStores/dicom"
BQ_DATASET = "dicom-src-test.dicom_metadata"
FILTER_BUCKET = "dicom-src-test-filters"


# Every emulator variable the package reads (scripts/dicom_bq/clients/endpoints.py);
# tests/test_harness.py fails when the package reads one this list lacks.
EMULATOR_VARIABLES = (
    "HEALTHCARE_EMULATOR_HOST",
    "BIGQUERY_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "IAM_EMULATOR_HOST",
    "RESOURCEMANAGER_EMULATOR_HOST",
    "SERVICEUSAGE_EMULATOR_HOST",
    "KMS_EMULATOR_HOST",
    "PUBSUB_EMULATOR_HOST",
    "CLOUDSCHEDULER_EMULATOR_HOST",
)


@pytest.fixture
def virtual_clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    """Every wait of the command under test on virtual time: a backoff, a poll interval and a
    --timeout pass at once, and the test can read what was waited.

    The package waits only through retry.SystemClock, the default clock of RetryPolicy, Follower,
    Exporter and Verifier, which the CLI never replaces (tests/test_harness.py checks that no
    other module sleeps or reads the time); so its two methods are the one seam. Socket timeouts
    stay real: they are the kernel's, not a wait of ours."""
    clock = VirtualClock()
    monkeypatch.setattr(retry.SystemClock, "sleep", lambda _self, seconds: clock.sleep(seconds))
    monkeypatch.setattr(retry.SystemClock, "monotonic", lambda _self: clock.monotonic())
    return clock


@pytest.fixture(scope="session")
def started_recorder() -> Iterator[RequestRecorder]:
    recorder = RequestRecorder().start()
    try:
        yield recorder
    finally:
        recorder.stop()


@pytest.fixture
def request_recorder(
    started_recorder: RequestRecorder,
    virtual_clock: VirtualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> RequestRecorder:
    """For tests that prove nothing is sent: one loopback server behind every emulator variable
    records each request (and answers 500). No Orthanc, no storage emulator, no fake state to
    build; on virtual time, so a request sent by mistake fails fast through its retries instead
    of waiting out real backoff."""
    started_recorder.requests.clear()
    for variable in EMULATOR_VARIABLES:
        monkeypatch.setenv(variable, started_recorder.url)
    # Google's Pub/Sub convention is HOST:PORT without a scheme
    # (https://cloud.google.com/pubsub/docs/emulator#env).
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", started_recorder.url.removeprefix("http://"))
    return started_recorder


@dataclass
class Cloud:
    healthcare: FakeHealthcare
    bigquery: FakeBigQuery
    orthanc_url: str
    storage_url: str
    clock: VirtualClock

    @property
    def env(self) -> dict[str, str]:
        return {
            "HEALTHCARE_EMULATOR_HOST": self.healthcare.url,
            "BIGQUERY_EMULATOR_HOST": self.bigquery.url,
            "STORAGE_EMULATOR_HOST": self.storage_url,
        }


@pytest.fixture
def cloud(
    orthanc_url: str,
    storage_url: str,
    virtual_clock: VirtualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Cloud]:
    """Fresh fake Healthcare and BigQuery, an empty Orthanc, and the emulator variables set; for
    tests that exchange requests with them (tests that prove nothing is sent take
    `request_recorder`). The fake's operations run on the command's virtual clock, so a
    running export finishes, or a --timeout runs out, without real waiting."""
    from tests import peers

    peers.clear_orthanc(orthanc_url)
    bigquery = FakeBigQuery(datasets={BQ_DATASET, "analytics-prj.dicom_metadata"}).start()
    healthcare = FakeHealthcare(
        bigquery=bigquery,
        orthanc_url=orthanc_url,
        storage_url=storage_url,
        stores={STORE},
        clock=virtual_clock,
    ).start()
    environment = Cloud(healthcare, bigquery, orthanc_url, storage_url, virtual_clock)
    for key, value in environment.env.items():
        monkeypatch.setenv(key, value)
    _ensure_bucket(storage_url, FILTER_BUCKET)
    try:
        yield environment
    finally:
        healthcare.stop()
        bigquery.stop()


def _ensure_bucket(storage_url: str, bucket: str) -> None:
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{storage_url}/storage/v1/b?project=dicom-src-test",
        data=json.dumps({"name": bucket}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError as error:
        if error.code != 409:
            raise
