from __future__ import annotations

from typing import Any

import pytest
from dicom_bq.planner import Plan

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
