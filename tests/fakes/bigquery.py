"""A loopback BigQuery for the calls dicom-bq makes: tables.get and parameterized jobs.query.

Tables live in memory; the fake Healthcare API writes exported rows into them, as the real
export writes into BigQuery. Query bodies are checked against the bigquery v2 discovery document.
Queries run on SQLite after a small translation (backquoted tables, @parameters, CONCAT, UNNEST of
the repeated DroppedTags column), so GROUP BY, ORDER BY, LIMIT and WHERE behave as SQL does.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
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
    dataset_access: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # "p.d" -> access
    # Rows still in a table's streaming buffer: tables.get reports them in
    # streamingBuffer.estimatedRows, not in numRows (bigquery v2 Table.streamingBuffer).
    streaming_rows: dict[str, int] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.requests.append(request)
        match = _TABLE.match(request.path)
        if match and request.method == "GET":
            table_id = ".".join(match.groups())
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
                    "schema": {"fields": _schema(self.tables[table_id])},
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
            columns, rows = _run_sql(self.tables, sql, parameters)
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


def _parameter(parameter: dict[str, Any]) -> Any:
    value = parameter["parameterValue"]["value"]
    return int(value) if parameter["parameterType"]["type"] == "INT64" else value


def _concat(*parts: Any) -> str | None:
    # BigQuery's CONCAT is NULL when any argument is.
    return None if any(p is None for p in parts) else "".join(str(p) for p in parts)


def _to_sqlite(sql: str) -> str:
    """GoogleSQL as dicom-bq writes it, in SQLite: tables, parameters, UNNEST of a JSON array."""
    sql = re.sub(r"`([^`]+)`", r'"\1"', sql)
    sql = re.sub(r"@(\w+)", r":\1", sql)
    for column, alias in re.findall(r"UNNEST\((\w+)\) AS (\w+)", sql):
        sql = sql.replace(f"UNNEST({column}) AS {alias}", f"json_each({column}) AS {alias}__each")
        sql = re.sub(rf"(?<![.\w]){alias}\b(?!__)", f"{alias}__each.value", sql)
    return sql


def _run_sql(
    tables: dict[str, list[dict[str, Any]]], sql: str, parameters: dict[str, Any]
) -> tuple[list[str], list[tuple[Any, ...]]]:
    db = sqlite3.connect(":memory:")
    db.create_function("CONCAT", -1, _concat)
    for name, rows in tables.items():
        columns = list(dict.fromkeys(key for row in rows for key in row)) or ["_empty"]
        db.execute(f'CREATE TABLE "{name}" ({", ".join(f"{c!r}" for c in columns)})')
        db.executemany(
            f'INSERT INTO "{name}" VALUES ({", ".join("?" for _ in columns)})',
            [
                tuple(
                    json.dumps(r.get(c)) if isinstance(r.get(c), list) else r.get(c)
                    for c in columns
                )
                for r in rows
            ],
        )
    cursor = db.execute(_to_sqlite(sql), parameters)
    columns = [d[0] for d in cursor.description]
    return columns, cursor.fetchall()


def _schema(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return [{"name": name, "type": "STRING", "mode": "NULLABLE"} for name in names]
