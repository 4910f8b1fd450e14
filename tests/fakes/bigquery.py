"""A loopback BigQuery for the calls dicom-bq makes: tables.get and parameterized jobs.query.

Tables live in memory with their schema (bigquery v2 TableFieldSchema list); the fake Healthcare
API writes exported rows and the schema of the layout it was asked for, as the real export does.
A table a test fills without a schema gets one inferred from its Python values (str STRING, int
INTEGER, list REPEATED, dict RECORD, datetime.date DATE...). tables.get answers that schema, so
the CLI can tell the layouts apart. Query bodies are checked against the bigquery v2 discovery
document. Queries run on SQLite after a small translation (backquoted tables, @parameters, CONCAT,
UNNEST of a repeated column and `alias.Field` on its records), so GROUP BY, ORDER BY, LIMIT and
WHERE behave as SQL does. DATE, TIME and TIMESTAMP values are ISO text, which is what BigQuery's
CONCAT makes of them ("2021-07-11 00:38:22" in Google's how-to); records and arrays JSON text.
"""

from __future__ import annotations

import datetime
import json
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.discovery import schema_problems
from tests.fakes.http import LoopbackFake, Request, Response

_TABLE = re.compile(r"^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables/([^/]+)$")
_DATASET = re.compile(r"^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)$")
_QUERY = re.compile(r"^/bigquery/v2/projects/([^/]+)/queries$")
_FROM = re.compile(r"FROM `([^`]+)`")


@dataclass
class FakeBigQuery(LoopbackFake):
    datasets: set[str] = field(default_factory=set)  # "project.dataset"
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # "p.d.t" -> rows
    # "p.d.t" -> TableFieldSchema list; a table without one has its rows' inferred schema.
    schemas: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    dataset_access: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # "p.d" -> access
    # Rows still in a table's streaming buffer: tables.get reports them in
    # streamingBuffer.estimatedRows, not in numRows (bigquery v2 Table.streamingBuffer).
    streaming_rows: dict[str, int] = field(default_factory=dict)
    # Table.lastModifiedTime, ms since the epoch; a table nobody dated changed when the fake
    # started. Tables whose tables.get is refused, as for a caller without bigquery.tables.get.
    modified_ms: dict[str, int] = field(default_factory=dict)
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    denied_tables: set[str] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.requests.append(request)
        match = _TABLE.match(request.path)
        if match and request.method == "GET":
            table_id = ".".join(match.groups())
            if table_id in self.denied_tables:
                where = "{}:{}.{}".format(*match.groups())
                # BigQuery's answer does not tell a missing table from a hidden one.
                return Response.error(
                    403,
                    "accessDenied",
                    f"Access Denied: Table {where}: Permission bigquery.tables.get denied on "
                    f"table {where} (or it may not exist).",
                )
            if table_id not in self.tables:
                return Response.error(404, "notFound", f"Not found: Table {table_id}")
            project, dataset, table = match.groups()
            return Response.json(
                {
                    "kind": "bigquery#table",
                    "id": f"{project}:{dataset}.{table}",
                    "tableReference": {
                        "projectId": project,
                        "datasetId": dataset,
                        "tableId": table,
                    },
                    "numRows": str(len(self.tables[table_id])),
                    "lastModifiedTime": str(self.modified_ms.get(table_id, self.started_ms)),
                    "schema": {"fields": self.table_schema(table_id)},
                    **(
                        {"streamingBuffer": {"estimatedRows": str(self.streaming_rows[table_id])}}
                        if self.streaming_rows.get(table_id)
                        else {}
                    ),
                }
            )
        match = _DATASET.match(request.path)
        if match and request.method == "GET":
            project, dataset = match.groups()
            if f"{project}.{dataset}" not in self.datasets:
                return Response.error(404, "notFound", f"Not found: Dataset {project}:{dataset}")
            return Response.json(
                {
                    "kind": "bigquery#dataset",
                    "id": f"{project}:{dataset}",
                    "datasetReference": {"projectId": project, "datasetId": dataset},
                    "access": self.dataset_access.get(f"{project}.{dataset}", []),
                }
            )
        match = _QUERY.match(request.path)
        if match and request.method == "POST":
            return self.query(match.group(1), request.json())
        return Response.error(
            404, "notFound", f"fake BigQuery has no {request.method} {request.path}"
        )

    def query(self, project: str, body: dict[str, Any]) -> Response:
        problems = schema_problems("bigquery", "v2", "QueryRequest", body)
        if problems:
            return Response.error(400, "invalid", "; ".join(problems))
        if body.get("useLegacySql", True):
            return Response.error(400, "invalid", "fake BigQuery speaks GoogleSQL only")
        sql = body["query"]
        missing = [t for t in _FROM.findall(sql) if t not in self.tables]
        if missing:
            return Response.error(404, "notFound", f"Not found: Table {missing[0]}")
        parameters = {p["name"]: _parameter(p) for p in body.get("queryParameters", [])}
        try:
            columns, rows = _run_sql(self._schemas(), self.tables, sql, parameters)
        except sqlite3.Error as error:
            return Response.error(400, "invalidQuery", f"{error} in {sql!r}")
        types = [
            "INTEGER" if rows and isinstance(rows[0][i], int) else "STRING"
            for i in range(len(columns))
        ]
        return Response.json(
            {
                "kind": "bigquery#queryResponse",
                "jobComplete": True,
                "jobReference": {"projectId": project, "jobId": f"fake-{len(self.requests)}"},
                "totalRows": str(len(rows)),
                "schema": {
                    "fields": [
                        {"name": c, "type": t, "mode": "NULLABLE"}
                        for c, t in zip(columns, types, strict=True)
                    ]
                },
                "rows": [
                    {"f": [{"v": None if v is None else str(v)} for v in row]} for row in rows
                ],
            }
        )

    def queries(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.requests if r.path.endswith("/queries")]

    def table_schema(self, table_id: str) -> list[dict[str, Any]]:
        return self.schemas.get(table_id) or _schema(self.tables.get(table_id, []))

    def _schemas(self) -> dict[str, list[dict[str, Any]]]:
        return {name: self.table_schema(name) for name in self.tables}

    def write(
        self,
        table_id: str,
        *,
        schema: list[dict[str, Any]],
        rows: list[dict[str, Any]],
        append: bool,
    ) -> None:
        """A load into the table: replaced, or appended to with the new columns added (an
        append never drops a column; bigquery v2 JobConfigurationLoad.schemaUpdateOptions
        ALLOW_FIELD_ADDITION)."""
        from tests.fakes.export_shapes import merge_fields

        with self.lock:
            if append and table_id in self.tables:
                schema = merge_fields(self.table_schema(table_id), schema)
                rows = self.tables[table_id] + rows
            self.schemas[table_id] = schema
            self.tables[table_id] = rows


def _parameter(parameter: dict[str, Any]) -> Any:
    value = parameter["parameterValue"]["value"]
    return int(value) if parameter["parameterType"]["type"] == "INT64" else value


def _concat(*parts: Any) -> str | None:
    # BigQuery's CONCAT is NULL when any argument is.
    return None if any(p is None for p in parts) else "".join(str(p) for p in parts)


def _to_sqlite(sql: str) -> str:
    """GoogleSQL as dicom-bq writes it, in SQLite: tables, parameters, UNNEST of a JSON array
    and the fields of its records (`tag.TagName`)."""
    sql = re.sub(r"`([^`]+)`", r'"\1"', sql)
    sql = re.sub(r"@(\w+)", r":\1", sql)
    for column, alias in re.findall(r"UNNEST\((\w+)\) AS (\w+)", sql):
        sql = sql.replace(f"UNNEST({column}) AS {alias}", f"json_each({column}) AS {alias}__each")
        sql = re.sub(
            rf"(?<![.\w]){alias}\.(\w+)", rf"json_extract({alias}__each.value, '$.\1')", sql
        )
        sql = re.sub(rf"(?<![.\w]){alias}\b(?!__)", f"{alias}__each.value", sql)
    return sql


def _cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return value


def _run_sql(
    schemas: dict[str, list[dict[str, Any]]],
    tables: dict[str, list[dict[str, Any]]],
    sql: str,
    parameters: dict[str, Any],
) -> tuple[list[str], list[tuple[Any, ...]]]:
    db = sqlite3.connect(":memory:")
    db.create_function("CONCAT", -1, _concat)
    for name, rows in tables.items():
        # The schema's columns, even those no row fills: a column BigQuery has is queryable.
        columns = [f["name"] for f in schemas[name]] or ["_empty"]
        db.execute(f'CREATE TABLE "{name}" ({", ".join(f"{c!r}" for c in columns)})')
        db.executemany(
            f'INSERT INTO "{name}" VALUES ({", ".join("?" for _ in columns)})',
            [tuple(_cell(r.get(c)) for c in columns) for r in rows],
        )
    cursor = db.execute(_to_sqlite(sql), parameters)
    columns = [d[0] for d in cursor.description]
    return columns, cursor.fetchall()


_PYTHON_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "BOOLEAN"),
    (int, "INTEGER"),
    (float, "FLOAT"),
    (datetime.datetime, "TIMESTAMP"),
    (datetime.date, "DATE"),
    (datetime.time, "TIME"),
    (dict, "RECORD"),
)


def _field(name: str, values: list[Any]) -> dict[str, Any]:
    repeated = any(isinstance(v, list) for v in values)
    items = [i for v in values for i in (v if isinstance(v, list) else [v]) if i is not None]
    kind = next(
        (bq for py, bq in _PYTHON_TYPES if items and all(isinstance(i, py) for i in items)),
        "STRING",
    )
    field: dict[str, Any] = {
        "name": name,
        "type": kind,
        "mode": "REPEATED" if repeated else "NULLABLE",
    }
    if kind == "RECORD":
        field["fields"] = _schema(items)
    return field


def _schema(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A schema for rows a test wrote without one: each column typed by its values."""
    names = list(dict.fromkeys(key for row in rows for key in row))
    return [_field(name, [row.get(name) for row in rows]) for name in names]
