"""Issue 10's promise, as a platform team would live it: three stores described in one stack,
exported into one shared table with a source column, in the layout the team chose, and the
how-to's queries run on that table.

The store names come from the stack's own plan (the three-store stack of tests/stacks.py); the
export is the CLI's; the queries are Google's how-to's (filters/queries.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.clients.endpoints import Connection
from dicom_bq.clients.healthcare import HealthcareApi
from dicom_bq.flows.seed import synthetic_instance
from dicom_bq.stack.plan import plan_settings
from tests.conftest import Cloud
from tests.stacks import three_store_stack

runner = CliRunner()
TABLE_ID = "dicom-src-test.dicom_metadata.all_stores"
TABLE = f"bq://{TABLE_ID}"


def _planned_store_names() -> list[str]:
    plan = plan_settings("three-stores", three_store_stack())
    stores = [
        r for r in plan.custom_resources() if r.type == "gcp:healthcare/dicomStore:DicomStore"
    ]
    assert len(stores) == 3
    return [f"{r.inputs['dataset']}/dicomStores/{r.inputs['name']}" for r in stores]


def _store_with_one_instance(cloud: Cloud, name: str) -> Any:
    dataset, store_id = name.split("/dicomStores/")
    api = HealthcareApi(Connection(environ=cloud.env))
    api.create_store(dataset, store_id, {})
    instance = synthetic_instance()
    api.store_instance(name, instance.data)
    return instance


@pytest.mark.parametrize("schema", ["nested", "flattened"])
def test_three_stores_share_one_table_with_a_source_column_and_the_queries_run(
    cloud: Cloud, schema: str
) -> None:
    stores = _planned_store_names()
    instances = {name: _store_with_one_instance(cloud, name) for name in stores}
    for index, store in enumerate(stores):
        # The first export creates the table; the next ones add to it, as a shared table needs.
        # Each follows an export of the same dataset minutes earlier, which WRITE_APPEND takes
        # for a re-run of itself unless told otherwise (tests/test_transport_faults.py).
        disposition = "WRITE_EMPTY" if index == 0 else "WRITE_APPEND"
        result = runner.invoke(
            app,
            [
                "export",
                "--store", store,
                "--table", TABLE,
                "--schema", schema,
                "--include-source-store",
                "--write-disposition", disposition,
                "--allow-concurrent",
                "--json",
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    rows = cloud.bigquery.tables[TABLE_ID]
    assert sorted((row["SourceDicomStore"], row["SOPInstanceUID"]) for row in rows) == sorted(
        (store, instance.sop_uid) for store, instance in instances.items()
    )

    latest = runner.invoke(app, ["query", "latest-studies", "--table", TABLE, "--json"])
    assert latest.exit_code == 0, latest.output
    assert {row["StudyInstanceUID"] for row in json.loads(latest.stdout)} == {
        instance.study_uid for instance in instances.values()
    }
    # A DICOMweb path is relative to its store: in a shared table each one names its store.
    for store, instance in instances.items():
        arguments = ["query", "dicomweb-paths", "--patient-id", instance.patient_id]
        paths = runner.invoke(app, [*arguments, "--table", TABLE, "--json"])
        assert paths.exit_code == 0, paths.output
        assert json.loads(paths.stdout) == [
            {
                "SourceDicomStore": store,
                "DICOMwebPath": f"/dicomWeb/studies/{instance.study_uid}/series/"
                f"{instance.series_uid}/instances/{instance.sop_uid}",
            }
        ]
    dropped = runner.invoke(app, ["query", "dropped-tags", "--table", TABLE, "--json"])
    assert dropped.exit_code == 0, dropped.output
