"""Export schema options (nested, flattened, JSON, source-store column) and the queries on each
table layout the export writes.

Request fields: healthcare v1 and v1beta1 discovery documents shipped in google-api-python-client,
schemas.*DicomBigQueryDestination (schemaFlattened, schemaJson, includeSourceStore). Table layouts:
tests/fakes/export_shapes.py cites Google's page for each column.
"""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.clients import healthcare
from dicom_bq.clients.discovery import discovery_document
from dicom_bq.clients.healthcare import (
    API_VERSIONS,
    ExportRequest,
    ExportSchema,
    check_export_body,
    parse_export_schema,
)
from dicom_bq.errors import DicomBqError
from dicom_bq.flows.seed import synthetic_instance
from tests.conftest import STORE, Cloud
from tests.fakes.discovery import schema_problems

runner = CliRunner()
TABLE_ID = "dicom-src-test.dicom_metadata.exported"
TABLE = f"bq://{TABLE_ID}"
DESTINATION = {
    "v1": "GoogleCloudHealthcareV1DicomBigQueryDestination",
    "v1beta1": "GoogleCloudHealthcareV1beta1DicomBigQueryDestination",
}
SHAPES = [s.value for s in ExportSchema]

# -- the request body -----------------------------------------------------------------------


@pytest.mark.parametrize("version", API_VERSIONS)
@pytest.mark.parametrize(
    ("schema", "source", "fields"),
    [
        (ExportSchema.NESTED, False, {}),
        (ExportSchema.FLATTENED, False, {"schemaFlattened": {}}),
        (ExportSchema.JSON, False, {"schemaJson": {}}),
        (ExportSchema.NESTED, True, {"includeSourceStore": True}),
        (ExportSchema.JSON, True, {"schemaJson": {}, "includeSourceStore": True}),
    ],
)
def test_each_schema_option_is_a_destination_field_of_the_discovery_document(
    version: str, schema: ExportSchema, source: bool, fields: dict[str, Any]
) -> None:
    body = ExportRequest(
        store=STORE, table_uri=TABLE, schema=schema, include_source_store=source
    ).body()
    assert body["bigqueryDestination"] == {
        "tableUri": TABLE,
        "writeDisposition": "WRITE_EMPTY",
        **fields,
    }
    # The fake's independent checker and the document itself agree the fields exist...
    assert schema_problems("healthcare", version, "ExportDicomDataRequest", body) == []
    properties = discovery_document("healthcare", version)["schemas"][DESTINATION[version]]
    assert set(fields) <= set(properties["properties"])
    check_export_body(version, body)  # ...and the client's own check lets it through


def test_schema_parsing_names_the_choices() -> None:
    assert parse_export_schema(" JSON ") is ExportSchema.JSON
    with pytest.raises(DicomBqError) as caught:
        parse_export_schema("flat")
    assert "choose one of nested, flattened, json" in caught.value.message


def _without(version: str, field: str) -> dict[str, Any]:
    document = copy.deepcopy(discovery_document("healthcare", version))
    del document["schemas"][DESTINATION[version]]["properties"][field]
    return document


def _documents(monkeypatch: pytest.MonkeyPatch, lacking: dict[str, str]) -> None:
    """The check reads these documents: as an older client library's would lack a field."""

    def document(api: str, version: str) -> dict[str, Any]:
        if version in lacking:
            return _without(version, lacking[version])
        return discovery_document(api, version)

    monkeypatch.setattr(healthcare, "discovery_document", document)


def test_a_field_the_version_lacks_is_refused_and_the_version_that_has_it_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _documents(monkeypatch, {"v1": "includeSourceStore"})
    body = ExportRequest(store=STORE, table_uri=TABLE, include_source_store=True).body()
    with pytest.raises(DicomBqError) as caught:
        check_export_body("v1", body)
    message = caught.value.message
    assert "--include-source-store needs bigqueryDestination.includeSourceStore" in message
    assert "Cloud Healthcare API v1 does not define" in message
    assert "use --api-version v1beta1" in message
    check_export_body("v1beta1", body)


def test_a_field_no_version_has_is_refused_with_drop_advice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _documents(monkeypatch, {"v1": "schemaJson", "v1beta1": "schemaJson"})
    body = ExportRequest(store=STORE, table_uri=TABLE, schema=ExportSchema.JSON).body()
    with pytest.raises(DicomBqError) as caught:
        check_export_body("v1beta1", body)
    assert "drop --schema json: no API version dicom-bq uses (v1, v1beta1) has it" in (
        caught.value.message
    )


def test_the_cli_refuses_before_any_request(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    _documents(monkeypatch, {"v1": "schemaFlattened"})
    result = _export("flattened", "--api-version", "v1")
    assert result.exit_code == 2
    assert "--schema flattened needs bigqueryDestination.schemaFlattened" in result.stderr
    assert cloud.healthcare.requests == []
    assert cloud.bigquery.requests == []


# -- the tables each export writes ------------------------------------------------------------

# An element of VR OW, which has no BigQuery type (the schema page's VR table has no OW row):
# the export lists it in DroppedTags.
DROPPED = "RedPaletteColorLookupTableData"


def _seed(cloud: Cloud, *, with_time: bool = True, dropped: bool = False) -> Any:
    import urllib.request

    import pydicom

    instance = synthetic_instance()
    dataset = pydicom.dcmread(io.BytesIO(instance.data))
    dataset.StudyDate, dataset.StudyTime = "20210711", "003822"
    if not with_time:
        del dataset.StudyTime
    if dropped:
        dataset.RedPaletteColorLookupTableData = bytes(8)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    request = urllib.request.Request(
        f"{cloud.orthanc_url}/instances", data=buffer.getvalue(), method="POST"
    )
    urllib.request.urlopen(request, timeout=10).close()
    return instance


def _export(schema: str, *args: str) -> Any:
    return runner.invoke(
        app, ["export", "--store", STORE, "--table", TABLE, "--schema", schema, "--json", *args]
    )


def _columns(cloud: Cloud) -> dict[str, tuple[str, str]]:
    return {
        f["name"]: (f["type"], f.get("mode", "NULLABLE"))
        for f in cloud.bigquery.table_schema(TABLE_ID)
    }


def _query(*args: str) -> Any:
    return runner.invoke(app, ["query", *args, "--table", TABLE, "--json"])


def test_nested_export_types_columns_by_vr(cloud: Cloud) -> None:
    _seed(cloud, dropped=True)
    result = _export("nested", "--include-source-store")
    assert result.exit_code == 0, result.output
    assert cloud.healthcare.export_bodies[-1]["bigqueryDestination"]["includeSourceStore"] is True
    columns = _columns(cloud)
    assert columns["StudyDate"] == ("DATE", "NULLABLE")  # DA
    assert columns["StudyTime"] == ("TIME", "NULLABLE")  # TM
    assert columns["PatientID"] == ("STRING", "NULLABLE")  # LO
    assert columns["SOPInstanceUID"] == ("STRING", "NULLABLE")  # UI
    assert columns["PatientName"] == ("RECORD", "NULLABLE")  # PN
    assert columns["Rows"] == ("INTEGER", "NULLABLE")  # US
    assert columns["DroppedTags"] == ("RECORD", "REPEATED")
    assert columns["SourceDicomStore"] == ("STRING", "NULLABLE")
    assert DROPPED not in columns
    assert "PixelData" not in columns
    (row,) = cloud.bigquery.tables[TABLE_ID]
    assert row["StudyDate"] == "2021-07-11"
    assert row["StudyTime"] == "00:38:22"
    assert row["DroppedTags"] == [{"TagName": DROPPED}]
    assert row["SourceDicomStore"] == STORE


def test_flattened_export_has_one_top_level_column_per_tag(cloud: Cloud) -> None:
    _seed(cloud, dropped=True)
    result = _export("flattened")
    assert result.exit_code == 0, result.output
    assert "schemaFlattened" in cloud.healthcare.export_bodies[-1]["bigqueryDestination"]
    columns = _columns(cloud)
    assert columns["StudyDate"] == ("DATE", "NULLABLE")
    assert columns["StudyTime"] == ("TIME", "NULLABLE")
    assert all(kind != "RECORD" for kind, _ in columns.values())
    assert "SourceDicomStore" not in columns


def test_json_export_has_exactly_the_documented_columns(cloud: Cloud) -> None:
    instance = _seed(cloud, dropped=True)
    result = _export("json", "--include-source-store")
    assert result.exit_code == 0, result.output
    assert _columns(cloud) == {
        "StudyInstanceUID": ("STRING", "NULLABLE"),
        "SeriesInstanceUID": ("STRING", "NULLABLE"),
        "SOPInstanceUID": ("STRING", "NULLABLE"),
        "SourceDicomStore": ("STRING", "NULLABLE"),
        "Metadata": ("JSON", "NULLABLE"),
        "StructuredStorageSize": ("INTEGER", "NULLABLE"),
        "DroppedTags": ("STRING", "REPEATED"),
        "StorageClass": ("STRING", "NULLABLE"),
        "LastUpdated": ("TIMESTAMP", "NULLABLE"),
        "BlobStorageSize": ("INTEGER", "NULLABLE"),
        "Type": ("STRING", "NULLABLE"),
    }
    (row,) = cloud.bigquery.tables[TABLE_ID]
    assert row["SOPInstanceUID"] == instance.sop_uid
    assert row["Metadata"]["00100020"]["Value"] == [instance.patient_id]
    assert row["DroppedTags"] == [DROPPED]


# -- the queries on each layout ---------------------------------------------------------------


@pytest.mark.parametrize("shape", ["nested", "flattened"])
def test_latest_studies_on_a_keyword_column_table(cloud: Cloud, shape: str) -> None:
    instance = _seed(cloud)
    assert _export(shape).exit_code == 0
    result = _query("latest-studies")
    assert result.exit_code == 0, result.output
    # The how-to's answer shape: "StudyDateTime": "2021-07-11 00:38:22".
    assert json.loads(result.stdout) == [
        {
            "StudyDateTime": "2021-07-11 00:38:22",
            "PatientID": instance.patient_id,
            "StudyInstanceUID": instance.study_uid,
            "InstanceCount": "1",
        }
    ]


@pytest.mark.parametrize("shape", ["nested", "flattened"])
def test_dicomweb_paths_on_a_keyword_column_table(cloud: Cloud, shape: str) -> None:
    instance = _seed(cloud)
    assert _export(shape).exit_code == 0
    result = _query("dicomweb-paths", "--patient-id", instance.patient_id)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"DICOMwebPath": f"/dicomWeb{instance.filter_line}"}]


@pytest.mark.parametrize(
    ("shape", "select"),
    [("nested", "tag.TagName AS DroppedTag"), ("flattened", "tag AS DroppedTag"),
     ("json", "tag AS DroppedTag")],
)  # fmt: skip
def test_dropped_tags_reads_the_record_or_the_string_array(
    cloud: Cloud, shape: str, select: str
) -> None:
    _seed(cloud, dropped=True)
    _seed(cloud, dropped=True)
    _seed(cloud)
    assert _export(shape).exit_code == 0
    result = _query("dropped-tags")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"DroppedTag": DROPPED, "InstanceCount": "2"}]
    assert select in cloud.bigquery.queries()[-1]["query"]


@pytest.mark.parametrize(
    ("query", "missing"),
    [
        (["latest-studies"], "StudyDate, StudyTime, PatientID"),
        (["dicomweb-paths", "--patient-id", "1"], "PatientID"),
    ],
)
def test_a_json_table_is_refused_naming_the_layout_needed(
    cloud: Cloud, query: list[str], missing: str
) -> None:
    _seed(cloud)
    assert _export("json").exit_code == 0
    result = _query(*query)
    assert result.exit_code == 2
    assert "was exported with the JSON schema (--schema json" in result.stderr
    assert f"it has no {missing}" in result.stderr
    assert "--schema nested (the default) or --schema flattened" in result.stderr
    assert cloud.bigquery.queries() == []


def test_latest_studies_says_no_instance_had_study_time(cloud: Cloud) -> None:
    _seed(cloud, with_time=False)
    assert _export("nested").exit_code == 0
    assert "StudyTime" not in _columns(cloud)  # only the elements present become columns
    result = _query("latest-studies")
    assert result.exit_code == 2
    assert "has no StudyTime" in result.stderr
    assert "none of the exported instances had StudyTime" in result.stderr
    assert cloud.bigquery.queries() == []


@pytest.mark.parametrize("shape", SHAPES)
def test_filter_build_from_each_layout(cloud: Cloud, shape: str) -> None:
    instance = _seed(cloud)
    assert _export(shape).exit_code == 0
    result = runner.invoke(app, ["filter", "build", "--table", TABLE])
    assert result.exit_code == 0, result.output
    assert result.stdout == instance.filter_line + "\n"


def test_query_on_a_missing_table_says_export_first(cloud: Cloud) -> None:
    result = _query("latest-studies")
    assert result.exit_code == 2
    assert f"{TABLE} does not exist: export to it first" in result.stderr
