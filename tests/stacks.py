"""Generated stacks: 20 valid settings spanning what the program can be asked to build."""

from __future__ import annotations

import itertools
from typing import Any

from tests.conftest import base_settings

KMS = "projects/kms-proj-{n}/locations/{location}/keyRings/ring/cryptoKeys/{name}"
# (Healthcare location, BigQuery location or None, its KMS location for each side)
LOCATIONS = [
    ("us-central1", None, "us-central1", "us-central1"),
    ("europe-west4", "EU", "europe-west4", "europe"),
    ("us", "US", "us", "us"),
    ("eu", "EU", "europe", "europe"),
    ("asia-southeast1", "asia-southeast1", "asia-southeast1", "asia-southeast1"),
]


def generated_stacks(count: int = 20) -> list[tuple[str, dict[str, Any]]]:
    combos = itertools.product(
        [False, True],  # cross-project
        [False, True],  # healthcare CMEK
        [False, True],  # BigQuery CMEK
        [0, 1, 5],  # streams
    )
    stacks = []
    for index, (cross, hc_cmek, bq_cmek, streams) in enumerate(combos):
        if index == count:
            break
        topic = index % 3 != 2
        location, bq_location, hc_kms, bq_kms = LOCATIONS[index % len(LOCATIONS)]
        raw: dict[str, Any] = base_settings(
            location=location,
            bigqueryLocation=bq_location,
            dicomStoreId=f"store-{index}",
            iamPropagationWait=f"{120 + 30 * (index % 4)}s",
            dataEditorScope="project" if index % 4 == 1 else "dataset",
            filterBucket=f"filters-{index}" if index % 2 else None,
            protected=index % 2 == 0,
            # Some stacks leave the numbers to deploy time.
            sourceProjectNumber=None if index % 5 == 4 else "111122223333",
        )
        if cross:
            raw["destinationProject"] = f"analytics-{index}"
            if index % 4 != 3:
                raw["destinationProjectNumber"] = "444455556666"
        if hc_cmek:
            raw["healthcareKmsKey"] = KMS.format(n=index, location=hc_kms, name="hc")
        if bq_cmek:
            raw["bigqueryKmsKey"] = KMS.format(n=index, location=bq_kms, name="bq")
        if streams:
            raw["streamTables"] = [f"stream_{i}" for i in range(streams)]
        if topic:
            raw["notificationTopic"] = f"projects/dicom-src-test/topics/instances-{index}"
        stacks.append((f"gen{index}", raw))
    return stacks


def three_store_stack(**overrides: Any) -> dict[str, Any]:
    """The dicomStores form: one store streaming, one notifying (bulk imports too), one plain."""
    return base_settings(
        dicomStoreId=None,
        labels={"env": "test"},
        **overrides,
        dicomStores=[
            {"id": "clinical", "streamTables": ["clinical_stream", "clinical_research"]},
            {
                "id": "research",
                "labels": {"team": "research"},
                "notification": {
                    "pubsubTopic": "projects/dicom-src-test/topics/research-instances",
                    "sendForBulkImport": True,
                },
            },
            {"id": "archive"},
        ],
    )


def operations_stack(**overrides: Any) -> dict[str, Any]:
    """Alerts (an email and an existing channel) and a nightly snapshot, on two stores, one
    streaming: every store gets its metrics, alert policies, snapshot table and job."""
    return base_settings(
        dicomStoreId=None,
        timeZone="Europe/Paris",
        dicomStores=[{"id": "clinical", "streamTables": ["clinical_stream"]}, {"id": "archive"}],
        alertEmails=["oncall@example.org"],
        alertChannels=["projects/dicom-src-test/notificationChannels/4242"],
        snapshotSchedule="0 2 * * *",
        **overrides,
    )


# Generated stacks with a golden inventory in tests/inventories/ (the example stacks have theirs).
INVENTORIED = {"three-stores": three_store_stack, "operations": operations_stack}
