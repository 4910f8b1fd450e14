"""A loopback BigQuery for the calls dicom-bq makes: tables.get and parameterized jobs.query.

Tables live in memory; the fake Healthcare API writes exported rows into them, as the real
export writes into BigQuery. Query bodies are checked against the bigquery v2 discovery document.
Only the query shapes dicom-bq sends are understood; anything else is answered 400 so a change of
SQL shows up in the tests.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.discovery import schema_problems
from tests.fakes.http import Request, Response, serve

_TABLE = re.compile(r"^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables/([^/]+)$")
_DATASET = re.compile(r"^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)$")
_QUERY = re.compile(r"^/bigquery/v2/projects/([^/]+)/queries$")
_FROM = re.compile(r"FROM `([^`]+)`")
_WHERE = re.compile(r"WHERE (\w+) = @(\w+)")
_SELECT = re.compile(r"^SELECT (.+?)\s+FROM", re.S)


@dataclass
class FakeBigQuery:
    datasets: set[str] = field(default_factory=set)  # "project.dataset"
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # "p.d.t" -> rows
    dataset_access: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # "p.d" -> access
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def start(self) -> FakeBigQuery:
        self.server, self.url = serve(self.handle)
        return self

    def stop(self) -> None:
        self.server.shutdown()

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
        sql = body["query"]
        table_match = _FROM.search(sql)
        if body.get("useLegacySql", True) or not table_match:
            return Response.error(400, "invalid", f"fake BigQuery does not understand {sql!r}")
        table_id = table_match.group(1)
        if table_id not in self.tables:
            return Response.error(404, "notFound", f"Not found: Table {table_id}")
        rows = list(self.tables[table_id])
        where = _WHERE.search(sql)
        if where:
            column, parameter = where.groups()
            values = {
                p["name"]: p["parameterValue"]["value"] for p in body.get("queryParameters", [])
            }
            if parameter not in values:
                return Response.error(400, "invalid", f"Query parameter '{parameter}' not found")
            rows = [row for row in rows if row.get(column) == values[parameter]]
        select = _SELECT.match(sql)
        assert select
        if "COUNT(*)" in select.group(1):
            alias = select.group(1).split(" AS ")[-1].strip()
            columns, rows = [alias], [{alias: len(rows)}]
        else:
            columns = [c.strip() for c in select.group(1).split(",")]
        return Response.json(
            {
                "kind": "bigquery#queryResponse",
                "jobComplete": True,
                "jobReference": {"projectId": project, "jobId": f"fake-{len(self.requests)}"},
                "totalRows": str(len(rows)),
                "schema": {
                    "fields": [{"name": c, "type": "STRING", "mode": "NULLABLE"} for c in columns]
                },
                "rows": [
                    {"f": [{"v": None if r.get(c) is None else str(r.get(c))} for c in columns]}
                    for r in rows
                ],
            }
        )

    def queries(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.requests if r.path.endswith("/queries")]


def _schema(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return [{"name": name, "type": "STRING", "mode": "NULLABLE"} for name in names]
