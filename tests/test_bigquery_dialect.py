"""BigQuery's dialect, not SQLite's: every query dicom-bq sends is read by sqlglot's BigQuery
dialect and run by the fake through sqlglot's transpilation to DuckDB, and queries BigQuery
would refuse are refused by the fake with the parser's message in BigQuery's 400 answer.

Sources for what BigQuery refuses or accepts:
- clause order and LIMIT's form: https://cloud.google.com/bigquery/docs/reference/standard-sql/query-syntax
  ("LIMIT count [ OFFSET skip_rows ]", after ORDER BY);
- table paths: https://cloud.google.com/bigquery/docs/reference/standard-sql/lexical (unquoted
  identifiers start with a letter or an underscore; only the first part of an unquoted table
  path may hold dashes: `my-project.mydataset.mytable` is valid unquoted, `mydataset.my-table`
  and `mytable-287a` are not);
- operators: https://cloud.google.com/bigquery/docs/reference/standard-sql/operators (no `==`,
  no `::`);
- the legacy `[project:dataset.table]` reference is legacy SQL's, which GoogleSQL does not read
  (https://cloud.google.com/bigquery/docs/reference/standard-sql/migrating-from-legacy-sql).
"""

from __future__ import annotations

import datetime
import inspect
import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlglot import exp

from dicom_bq.clients.bigquery import BigQueryTables
from dicom_bq.clients.endpoints import Connection
from dicom_bq.errors import DicomBqError
from dicom_bq.filters import queries
from dicom_bq.filters.queries import Query, TableColumns
from dicom_bq.refs import TableUri
from tests.fakes.bigquery import BigQueryInvalid, FakeBigQuery, check_bigquery_sql
from tests.fakes.export_shapes import DROPPED_RECORD, JSON_FIELDS, SOURCE_STORE

TABLE = TableUri.parse("bq://dicom-src-test.dicom_metadata.exported")
# A domain-scoped project holds a dot and a colon: the path only reads right in backticks.
DOMAIN_TABLE = TableUri.parse("bq://example.com:imaging-1.dicom_metadata.exported")


def _string(name: str, mode: str = "NULLABLE") -> dict[str, Any]:
    return {"name": name, "type": "STRING", "mode": mode}


_KEYWORDS = [
    *(_string(n) for n in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")),
    _string("PatientID"),
    {"name": "StudyDate", "type": "DATE", "mode": "NULLABLE"},
    {"name": "StudyTime", "type": "TIME", "mode": "NULLABLE"},
]
# The three layouts an export writes (tests/fakes/export_shapes.py gives the sources).
SCHEMAS: dict[str, list[dict[str, Any]]] = {
    "nested": [*_KEYWORDS, DROPPED_RECORD],
    "nested+source": [*_KEYWORDS, DROPPED_RECORD, SOURCE_STORE],
    "flattened": [*_KEYWORDS, _string("DroppedTags", "REPEATED")],
    "json": list(JSON_FIELDS),
}


def _rows(layout: str) -> list[dict[str, Any]]:
    rows = []
    for study, instance in ((1, 1), (1, 2), (2, 1)):
        row: dict[str, Any] = {
            "StudyInstanceUID": f"1.{study}",
            "SeriesInstanceUID": f"2.{study}",
            "SOPInstanceUID": f"3.{study}.{instance}",
        }
        dropped = ["PixelPaddingValue"] if instance == 1 else []
        if layout == "json":
            row |= {"Metadata": {"00100020": {"vr": "LO", "Value": ["P1"]}}, "Type": "INSERT"}
            row["DroppedTags"] = dropped
        else:
            row |= {
                "PatientID": f"P{study}",
                "StudyDate": datetime.date(2021, 7, 10 + study),
                "StudyTime": datetime.time(0, 38, 22),
            }
            row["DroppedTags"] = (
                [{"TagName": t} for t in dropped] if layout.startswith("nested") else dropped
            )
        if layout == "nested+source":
            row["SourceDicomStore"] = "store-a"
        rows.append(row)
    return rows


def _columns(layout: str, table: TableUri = TABLE) -> TableColumns:
    return TableColumns.from_schema(table, SCHEMAS[layout])


PATH = "/studies/1.1/series/2.1/instances/3.1.1"
# Each query the tool builds (dicom_bq.filters.queries), on the layouts it is built for, with
# the rows the how-to's semantics give on _rows(layout).
CASES: dict[str, tuple[str, Callable[[], Query], list[dict[str, Any]]]] = {
    "instance_row": (
        "nested",
        lambda: queries.instance_row(TABLE, "3.1.2"),
        [
            {
                "StudyInstanceUID": "1.1",
                "SeriesInstanceUID": "2.1",
                "SOPInstanceUID": "3.1.2",
                "PatientID": "P1",
            }
        ],
    ),
    "dicomweb_paths[nested]": (
        "nested",
        lambda: queries.dicomweb_paths(_columns("nested"), "P2"),
        [{"DICOMwebPath": "/dicomWeb/studies/1.2/series/2.2/instances/3.2.1"}],
    ),
    "dicomweb_paths[flattened]": (
        "flattened",
        lambda: queries.dicomweb_paths(_columns("flattened"), "P2"),
        [{"DICOMwebPath": "/dicomWeb/studies/1.2/series/2.2/instances/3.2.1"}],
    ),
    "dicomweb_paths[source store]": (
        "nested+source",
        lambda: queries.dicomweb_paths(_columns("nested+source"), "P2"),
        [
            {
                "SourceDicomStore": "store-a",
                "DICOMwebPath": "/dicomWeb/studies/1.2/series/2.2/instances/3.2.1",
            }
        ],
    ),
    "latest_studies[nested]": (
        "nested",
        lambda: queries.latest_studies(_columns("nested"), 1),
        # BigQuery's CONCAT casts DATE and TIME to text (the how-to's "2021-07-11 00:38:22").
        [
            {
                "StudyDateTime": "2021-07-12 00:38:22",
                "PatientID": "P2",
                "StudyInstanceUID": "1.2",
                "InstanceCount": 1,
            }
        ],
    ),
    "latest_studies[flattened]": (
        "flattened",
        lambda: queries.latest_studies(_columns("flattened"), 5),
        [
            {
                "StudyDateTime": "2021-07-12 00:38:22",
                "PatientID": "P2",
                "StudyInstanceUID": "1.2",
                "InstanceCount": 1,
            },
            {
                "StudyDateTime": "2021-07-11 00:38:22",
                "PatientID": "P1",
                "StudyInstanceUID": "1.1",
                "InstanceCount": 2,
            },
        ],
    ),
    "dropped_tags[nested]": (
        "nested",
        lambda: queries.dropped_tags(_columns("nested")),
        [{"DroppedTag": "PixelPaddingValue", "InstanceCount": 2}],
    ),
    "dropped_tags[flattened]": (
        "flattened",
        lambda: queries.dropped_tags(_columns("flattened")),
        [{"DroppedTag": "PixelPaddingValue", "InstanceCount": 2}],
    ),
    "dropped_tags[json]": (
        "json",
        lambda: queries.dropped_tags(_columns("json")),
        [{"DroppedTag": "PixelPaddingValue", "InstanceCount": 2}],
    ),
    "filter_paths": (
        "json",
        lambda: queries.filter_paths(TABLE),
        [
            {"path": PATH},
            {"path": "/studies/1.1/series/2.1/instances/3.1.2"},
            {"path": "/studies/1.2/series/2.2/instances/3.2.1"},
        ],
    ),
    "filter_paths[where]": (
        "nested",
        lambda: queries.filter_paths(TABLE, "PatientID = 'P1' AND SOPInstanceUID LIKE '%.1'"),
        [{"path": PATH}],
    ),
    "filter_paths[domain-scoped project]": (
        "nested",
        lambda: queries.filter_paths(DOMAIN_TABLE, "SOPInstanceUID = '3.1.1'"),
        [{"path": PATH}],
    ),
}


@pytest.fixture
def bigquery() -> Iterator[FakeBigQuery]:
    fake = FakeBigQuery().start()
    try:
        yield fake
    finally:
        fake.stop()


def _tables(bigquery: FakeBigQuery) -> BigQueryTables:
    connection = Connection(environ={"BIGQUERY_EMULATOR_HOST": bigquery.url})
    return BigQueryTables(connection, "bill-prj")


def test_the_cases_cover_every_query_the_tool_builds() -> None:
    """A query function added to dicom_bq.filters.queries without a case here fails."""
    builders = {
        name
        for name, function in inspect.getmembers(queries, inspect.isfunction)
        if function.__module__ == queries.__name__
        and inspect.signature(function).return_annotation in ("Query", Query)
    }
    assert builders == {case.split("[")[0] for case in CASES}


@pytest.mark.parametrize("case", list(CASES))
def test_each_query_of_the_tool_is_bigquery_sql(case: str) -> None:
    _, build, _ = CASES[case]
    query = build()
    tree = check_bigquery_sql(query.sql)
    # Values travel as named parameters: each @name the SQL uses is sent, and only those.
    used = {p.name for p in tree.find_all(exp.Parameter)}
    assert used == {name for name, _, _ in query.parameters}


@pytest.mark.parametrize("case", list(CASES))
def test_each_query_of_the_tool_runs_on_the_fake_with_the_how_tos_answers(
    bigquery: FakeBigQuery, case: str
) -> None:
    layout, build, expected = CASES[case]
    query = build()
    for table in (TABLE, DOMAIN_TABLE):
        bigquery.tables[table.table_id] = _rows(layout)
        bigquery.schemas[table.table_id] = SCHEMAS[layout]
    assert list(_tables(bigquery).run(query)) == expected
    (sent,) = bigquery.queries()
    assert sent["query"] == query.sql


HOW_TO = Path(__file__).resolve().parents[2] / "shared/reference/dicom-export-bigquery.fr.txt"
# Google's how-to, as printed (the French copy in shared/reference): its two #standardSQL
# queries, and its filter query in legacy SQL's bracket form, which GoogleSQL refuses.
HOW_TO_PATIENT = """#standardSQL
SELECT CONCAT('/dicomWeb/studies/', StudyInstanceUID, '/series/', SeriesInstanceUID, '/instances/', SOPInstanceUID) as DICOMwebPath
FROM `chc-nih-chest-xray.nih_chest_xray.nih_chest_xray`
WHERE PatientID = '19045';"""
HOW_TO_LATEST = """#standardSQL
SELECT
  MIN(CONCAT(StudyDate, ' ', StudyTime)) as StudyDateTime, MIN(PatientID) as PatientID, StudyInstanceUID, COUNT(*) as InstanceCount
FROM
 `bigquery-public-data.idc_v5.dicom_metadata` AS dicom
GROUP BY StudyInstanceUID
ORDER BY StudyDateTime DESC
LIMIT 10;"""
HOW_TO_LEGACY = """SELECT CONCAT
    ('/studies/', StudyInstanceUID, '/series/', SeriesInstanceUID, '/instances/', SOPInstanceUID)
FROM
    [PROJECT_ID:BIGQUERY_DATASET.BIGQUERY_TABLE]"""


def test_the_how_tos_standard_sql_queries_are_read_and_its_legacy_one_refused() -> None:
    if HOW_TO.is_file():  # the copies above are the how-to's own text (shared/ is beside main)
        text = HOW_TO.read_text(encoding="utf-8")
        for sql in (HOW_TO_PATIENT, HOW_TO_LATEST, HOW_TO_LEGACY):
            for line in sql.splitlines():
                assert line.strip() in text
    check_bigquery_sql(HOW_TO_PATIENT)
    check_bigquery_sql(HOW_TO_LATEST)
    with pytest.raises(BigQueryInvalid, match=r"Syntax error: .* at \[4:5\]"):
        check_bigquery_sql(HOW_TO_LEGACY)


SOURCE = "`dicom-src-test.dicom_metadata.exported`"
# Queries BigQuery refuses, and the part of the fake's message that says why.
INVALID = {
    "LIMIT before ORDER BY": (
        f"SELECT PatientID FROM {SOURCE} LIMIT 10 ORDER BY PatientID",
        r"Unexpected keyword ORDER BY at \[1:",
    ),
    "WHERE after GROUP BY": (
        f"SELECT PatientID FROM {SOURCE} GROUP BY PatientID WHERE PatientID = 'x'",
        r"Unexpected keyword WHERE",
    ),
    "OFFSET before LIMIT": (
        f"SELECT PatientID FROM {SOURCE} ORDER BY PatientID OFFSET 1 LIMIT 2",
        r"Unexpected keyword LIMIT",
    ),
    "MySQL's LIMIT offset, count": (
        f"SELECT PatientID FROM {SOURCE} LIMIT 1, 2",
        r'Expected end of input but got ","',
    ),
    "misspelt function": (
        "SELECT CONCTA('/studies/', StudyInstanceUID) AS path FROM " + SOURCE,
        r"Function not found: CONCTA",
    ),
    "dash outside a table path's first part": (
        "SELECT PatientID FROM dicom_src_test.dicom_metadata.exported-table",
        r"'exported-table' in table path .*only the first part of a path may hold dashes",
    ),
    "unquoted project starting with a digit": (
        "SELECT PatientID FROM 287project.dicom_metadata.exported",
        r"'287project' in table path .* not a valid unquoted identifier",
    ),
    "domain-scoped project without backticks": (
        "SELECT PatientID FROM example.com:imaging-1.dicom_metadata.exported",
        r"Syntax error",
    ),
    "legacy SQL table reference": (HOW_TO_LEGACY, r"Syntax error: .* at \[4:5\]"),
    "== for =": (f"SELECT PatientID FROM {SOURCE} WHERE PatientID == 'x'", r'Unexpected "=="'),
    ":: cast": (f"SELECT PatientID::STRING FROM {SOURCE}", r'Unexpected "::"'),
    "unfinished WHERE": (f"SELECT PatientID FROM {SOURCE} WHERE", r"Syntax error"),
    "parameter not sent": (
        f"SELECT PatientID FROM {SOURCE} WHERE PatientID = @patient_id",
        r"Query parameter 'patient_id' not found",
    ),
    "unknown column": (f"SELECT PatientName FROM {SOURCE}", r"PatientName"),
}


def _post_query(bigquery: FakeBigQuery, sql: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{bigquery.url}/bigquery/v2/projects/bill-prj/queries",
        data=json.dumps({"query": sql, "useLegacySql": False}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("case", list(INVALID))
def test_a_query_bigquery_refuses_is_refused_with_the_parsers_message(
    bigquery: FakeBigQuery, case: str
) -> None:
    sql, why = INVALID[case]
    bigquery.tables[TABLE.table_id] = _rows("nested")
    bigquery.schemas[TABLE.table_id] = SCHEMAS["nested"]
    status, answer = _post_query(bigquery, sql)
    assert status == 400, answer
    error = answer["error"]
    assert error["code"] == 400
    assert error["status"] == "INVALID_ARGUMENT"
    (item,) = error["errors"]
    assert item["reason"] == "invalidQuery"
    assert item["message"] == error["message"]
    assert re.search(why, error["message"]), error["message"]


def test_the_client_surfaces_the_parsers_message(bigquery: FakeBigQuery) -> None:
    """Through google-cloud-bigquery and the tool's own client, as a user would see it."""
    bigquery.tables[TABLE.table_id] = _rows("nested")
    bigquery.schemas[TABLE.table_id] = SCHEMAS["nested"]
    sql, _ = INVALID["LIMIT before ORDER BY"]
    with pytest.raises(DicomBqError, match=r"400 .*Syntax error: Unexpected keyword ORDER BY"):
        list(_tables(bigquery).run(Query(sql)))


# Valid BigQuery that sqlglot's stricter neighbours might refuse: the fake must not.
VALID = {
    # The lexical page's own example: dashes in an unquoted path's first part.
    "dashed project unquoted": "SELECT PatientID FROM dicom-src-test.dicom_metadata.exported",
    "backquoted parts": "SELECT PatientID FROM `dicom-src-test`.dicom_metadata.exported",
    "implicit alias": (
        "SELECT exported.PatientID FROM `dicom-src-test.dicom_metadata.exported` "
        "ORDER BY 1 LIMIT 1 OFFSET 1"
    ),
    "# comment and ;": f"#standardSQL\nSELECT PatientID FROM {SOURCE};",
}


@pytest.mark.parametrize("case", list(VALID))
def test_valid_bigquery_is_run(bigquery: FakeBigQuery, case: str) -> None:
    bigquery.tables[TABLE.table_id] = _rows("nested")
    bigquery.schemas[TABLE.table_id] = SCHEMAS["nested"]
    status, answer = _post_query(bigquery, VALID[case])
    assert status == 200, answer
    assert answer["schema"]["fields"][0]["name"] == "PatientID"


def test_parameters_stay_values_down_to_the_engine(bigquery: FakeBigQuery) -> None:
    """A parameter holding SQL is compared as text: it matches nothing, and the row whose
    value it is matches it."""
    bigquery.tables[TABLE.table_id] = [*_rows("nested"), {"PatientID": "x' OR '1'='1"}]
    bigquery.schemas[TABLE.table_id] = SCHEMAS["nested"]
    tables = _tables(bigquery)
    rows = list(tables.run(queries.dicomweb_paths(_columns("nested"), "x' OR '1'='1")))
    assert rows == [{"DICOMwebPath": None}]  # BigQuery's CONCAT is NULL when a part is
    assert "x' OR" not in bigquery.queries()[0]["query"]
