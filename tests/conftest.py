from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from dicom_bq.stack.plan import Plan
from tests.fakes.bigquery import FakeBigQuery
from tests.fakes.healthcare import FakeHealthcare
from tests.inventory import plan_example

_PLANS: dict[str, Plan] = {}


def cached_plan(stack: str) -> Plan:
    if stack not in _PLANS:
        _PLANS[stack] = plan_example(stack)
    return _PLANS[stack]


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


@dataclass
class Cloud:
    healthcare: FakeHealthcare
    bigquery: FakeBigQuery
    orthanc_url: str
    storage_url: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "HEALTHCARE_EMULATOR_HOST": self.healthcare.url,
            "BIGQUERY_EMULATOR_HOST": self.bigquery.url,
            "STORAGE_EMULATOR_HOST": self.storage_url,
        }


@pytest.fixture
def cloud(orthanc_url: str, storage_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cloud]:
    """Fresh fake Healthcare and BigQuery, an empty Orthanc, and the emulator variables set."""
    from tests import peers

    peers.clear_orthanc(orthanc_url)
    bigquery = FakeBigQuery(datasets={BQ_DATASET, "analytics-prj.dicom_metadata"}).start()
    healthcare = FakeHealthcare(
        bigquery=bigquery, orthanc_url=orthanc_url, storage_url=storage_url, stores={STORE}
    ).start()
    environment = Cloud(healthcare, bigquery, orthanc_url, storage_url)
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
