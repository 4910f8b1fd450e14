"""gcloud's spellings of `export` and `operations` (dicom_bq/spellings.py cites the reference
pages): each reaches the fake Healthcare API with the same request as the native spelling, and
two spellings of one thing are refused with exit 2 before any request."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from tests.conftest import FILTER_BUCKET, STORE, Cloud
from tests.test_export_cli import TABLE, TABLE_ID, seed

runner = CliRunner()
GCLOUD_STORE = ["dicom", "--dataset", "imaging", "--location", "us-central1"]
PROJECT = ["--project", "dicom-src-test"]


def _no_request(cloud: Cloud) -> None:
    assert cloud.healthcare.requests == []
    assert cloud.bigquery.requests == []


def test_gcloud_store_id_and_bq_table_send_the_native_request(cloud: Cloud) -> None:
    seed(cloud)
    result = runner.invoke(app, ["export", *GCLOUD_STORE, *PROJECT, "--bq-table", TABLE, "--json"])
    assert result.exit_code == 0, result.output
    assert cloud.healthcare.export_bodies == [
        {"bigqueryDestination": {"tableUri": TABLE, "writeDisposition": "WRITE_EMPTY"}}
    ]
    exports = [r.path for r in cloud.healthcare.requests if r.path.endswith(":export")]
    assert exports == [f"/v1/{STORE}:export"]


def test_a_full_name_as_the_positional_is_taken_as_gcloud_does(cloud: Cloud) -> None:
    seed(cloud)
    result = runner.invoke(app, ["export", STORE, "--table", TABLE, "--json"])
    assert result.exit_code == 0, result.output
    assert [r.path for r in cloud.healthcare.requests if r.path.endswith(":export")] == [
        f"/v1/{STORE}:export"
    ]


def test_async_prints_the_operation_without_waiting(cloud: Cloud) -> None:
    result = runner.invoke(app, ["export", "--store", STORE, "--table", TABLE, "--async"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().startswith(
        "projects/dicom-src-test/locations/us-central1/datasets/imaging/operations/"
    )
    assert not [r for r in cloud.healthcare.requests if "/operations/" in r.path]


def test_filter_config_gcs_uri_is_the_filter(cloud: Cloud) -> None:
    from google.cloud import storage

    chosen, _other = seed(cloud, 2)
    storage.Client(project="dicom-src-test").bucket(FILTER_BUCKET).blob("g.txt").upload_from_string(
        f"/studies/{chosen.study_uid}\n"
    )
    uri = f"gs://{FILTER_BUCKET}/g.txt"
    result = runner.invoke(
        app, ["export", "--store", STORE, "--table", TABLE, "--filter-config-gcs-uri", uri]
    )
    assert result.exit_code == 0, result.output
    assert cloud.healthcare.export_bodies[-1]["filterConfig"] == {"resourcePathsGcsUri": uri}
    assert [r["SOPInstanceUID"] for r in cloud.bigquery.tables[TABLE_ID]] == [chosen.sop_uid]


def test_overwrite_table_is_write_truncate_and_keeps_the_confirmation(cloud: Cloud) -> None:
    cloud.bigquery.tables[TABLE_ID] = [{"SOPInstanceUID": "1"}]
    args = ["export", "--store", STORE, "--table", TABLE, "--overwrite-table"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2
    assert "holds 1 rows and WRITE_TRUNCATE would erase them: pass --yes" in refused.stderr
    assert cloud.healthcare.export_bodies == []
    seed(cloud)
    confirmed = runner.invoke(app, [*args, "--yes", "--json"])
    assert confirmed.exit_code == 0, confirmed.output
    assert cloud.healthcare.export_bodies == [
        {"bigqueryDestination": {"tableUri": TABLE, "writeDisposition": "WRITE_TRUNCATE"}}
    ]
    assert len(cloud.bigquery.tables[TABLE_ID]) == 1


@pytest.mark.parametrize("command", ["describe", "wait"])
def test_operations_take_gcloud_s_id_and_parent_flags(cloud: Cloud, command: str) -> None:
    seed(cloud)
    started = runner.invoke(app, ["export", "--store", STORE, "--table", TABLE, "--no-wait"])
    name = started.stdout.strip()
    operation_id = name.rsplit("/", 1)[-1]
    result = runner.invoke(
        app,
        [
            "operations",
            command,
            operation_id,
            "--dataset",
            "imaging",
            "--location",
            "us-central1",
            *PROJECT,
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"operation: {name}" in result.stdout
    assert any(r.path == f"/v1/{name}" for r in cloud.healthcare.requests)


def test_the_summary_shows_create_and_end_time(cloud: Cloud) -> None:
    seed(cloud)
    result = runner.invoke(app, ["export", "--store", STORE, "--table", TABLE])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    created = [line for line in lines if line.startswith("created:   ")]
    ended = [line for line in lines if line.startswith("ended:     ")]
    assert len(created) == 1
    assert len(ended) == 1
    assert created[0].endswith("Z")
    as_json = json.loads(
        runner.invoke(app, ["export", "--store", STORE, "--table", TABLE + "2", "--json"]).stdout
    )
    assert as_json["create_time"]
    assert as_json["end_time"]


CONFLICTS = [
    (
        "store-twice",
        ["export", "dicom", "--store", STORE, "--table", TABLE],
        "the store is given twice",
    ),
    (
        "full-name-and-dataset",
        ["export", "--store", STORE, "--dataset", "imaging", "--table", TABLE],
        "--store takes the full name projects/",
    ),
    (
        # An ID under --store: the positional is where gcloud's ID goes.
        "store-option-id-and-parent-flags",
        ["export", "--store", "s", *GCLOUD_STORE[1:], *PROJECT, "--table", TABLE],
        "--store takes the full name projects/P/locations/L/datasets/D/dicomStores/ID; with "
        "--dataset, --location and --project give the ID as the positional DICOM_STORE argument",
    ),
    (
        "bad-positional-full-name",
        ["export", "projects/p/locations/l/datasets/d/dicomStores/bad store", "--bq-table", TABLE],
        "DICOM_STORE 'projects/p/locations/l/datasets/d/dicomStores/bad store' is not valid",
    ),
    (
        "billing-project-and-project-differ",
        ["filter", "build", "--billing-project", "proj-a", "--project", "proj-b", "--query", "x"],
        "--billing-project 'proj-a' and --project 'proj-b' name the same setting",
    ),
    (
        "positional-full-name-and-project",
        ["export", STORE, *PROJECT, "--table", TABLE],
        "drop --project",
    ),
    (
        "id-without-project",
        ["export", *GCLOUD_STORE, "--table", TABLE],
        "missing --project",
    ),
    ("no-store", ["export", "--table", TABLE], "say which store"),
    (
        "bad-dataset",
        [
            "export",
            "dicom",
            "--dataset",
            "bad/x",
            "--location",
            "us-central1",
            *PROJECT,
            "--table",
            TABLE,
        ],
        "--dataset",
    ),
    (
        "table-twice",
        ["export", "--store", STORE, "--table", TABLE, "--bq-table", TABLE],
        "--table and --bq-table",
    ),
    ("no-table", ["export", "--store", STORE], "say where to export"),
    (
        "bad-bq-table",
        ["export", "--store", STORE, "--bq-table", "project.dataset.table"],
        "--bq-table",
    ),
    (
        "async-and-no-wait",
        ["export", "--store", STORE, "--table", TABLE, "--async", "--no-wait"],
        "--async and --no-wait",
    ),
    (
        "async-and-timeout",
        ["export", "--store", STORE, "--table", TABLE, "--async", "--timeout", "5m"],
        "--async does not wait",
    ),
    (
        "overwrite-and-write-disposition",
        [
            "export",
            "--store",
            STORE,
            "--table",
            TABLE,
            "--overwrite-table",
            "--write-disposition",
            "WRITE_APPEND",
        ],
        "--overwrite-table and --write-disposition",
    ),
    (
        "overwrite-and-force",
        ["export", "--store", STORE, "--table", TABLE, "--overwrite-table", "--no-force"],
        "--overwrite-table and --force/--no-force",
    ),
    (
        "filter-twice",
        [
            "export",
            "--store",
            STORE,
            "--table",
            TABLE,
            "--filter",
            f"gs://{FILTER_BUCKET}/a",
            "--filter-config-gcs-uri",
            f"gs://{FILTER_BUCKET}/b",
        ],
        "--filter and --filter-config-gcs-uri",
    ),
    (
        "operation-full-name-and-dataset",
        [
            "operations",
            "describe",
            f"{STORE.split('/dicomStores')[0]}/operations/1",
            "--dataset",
            "imaging",
        ],
        "drop --dataset",
    ),
    (
        "operation-id-without-location",
        ["operations", "wait", "123", "--dataset", "imaging", *PROJECT],
        "missing --location",
    ),
]


@pytest.mark.parametrize(
    ("args", "fragment"), [c[1:] for c in CONFLICTS], ids=[c[0] for c in CONFLICTS]
)
def test_conflicting_spellings_are_refused_before_any_request(
    cloud: Cloud, args: list[str], fragment: str
) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ")
    assert fragment in result.stderr
    _no_request(cloud)


def test_a_bad_positional_store_is_not_called_store_option(cloud: Cloud) -> None:
    result = runner.invoke(
        app, ["export", "projects/p/locations/l/datasets/d/dicomStores/bad store", "--table", TABLE]
    )
    assert result.exit_code == 2
    assert "--store" not in result.stderr
    _no_request(cloud)


def test_billing_project_and_its_alias_agree_when_equal() -> None:
    from dicom_bq.spellings import billing_project

    assert billing_project(billing_project="p", project="p") == "p"
    assert billing_project(billing_project=None, project="p") == "p"
    assert billing_project(billing_project="p", project=None) == "p"
