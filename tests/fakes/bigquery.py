"""A loopback BigQuery for the calls dicom-bq makes: tables.get and parameterized jobs.query.

Tables live in memory with their schema (bigquery v2 TableFieldSchema list); the fake Healthcare
API writes exported rows and the schema of the layout it was asked for, as the real export does.
A table a test fills without a schema gets one inferred from its Python values (str STRING, int
INTEGER, list REPEATED, dict RECORD, datetime.date DATE...). tables.get answers that schema, so
the CLI can tell the layouts apart. Query bodies are checked against the bigquery v2 discovery
document.

Queries are read as BigQuery reads them, by a maintained GoogleSQL parser: sqlglot's BigQuery
dialect, errors raised (`check_bigquery_sql`). sqlglot accepts more than BigQuery does, so the
fake also holds the query to the few BigQuery rules sqlglot lets through, each from Google's
pages (see `_dialect_problems`): clause order, table paths, LIMIT's form, operators BigQuery
lacks, functions BigQuery does not know. A query refused there is answered as BigQuery answers
a bad query: 400, reason invalidQuery, the parser's message. A query that passes is transpiled
by sqlglot to DuckDB's dialect and run on an in-process DuckDB holding the referenced tables with
their BigQuery types (STRING VARCHAR, DATE DATE, TIME TIME, TIMESTAMP TIMESTAMPTZ, RECORD STRUCT,
REPEATED a list, JSON JSON...), so CONCAT of a DATE, UNNEST of a repeated record and
`alias.Field` on its records, GROUP BY, ORDER BY and LIMIT behave as SQL does. Named query
parameters (@name) stay parameters down to DuckDB ($name), never text in the SQL. The answer
has BigQuery's result schema (INTEGER for COUNT, DATE for a DATE column...) and its row encoding
(tabledata's f/v cells; TIMESTAMP as int64 microseconds when formatOptions.useInt64Timestamp).

What this cannot see: a BigQuery rule neither sqlglot nor `_dialect_problems` knows (sqlglot
maps some other dialects' function names, LEN for instance, onto BigQuery's own), and BigQuery's
type checks beyond DuckDB's. A valid query sqlglot cannot transpile to DuckDB fails too, with
DuckDB's message, which is the safe side for a test.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, SqlglotError
from sqlglot.tokens import Token, TokenType

from tests.fakes.discovery import schema_problems
from tests.fakes.http import LoopbackFake, Request, Response

_TABLE = re.compile(r"^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables/([^/]+)$")
_DATASET = re.compile(r"^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)$")
_TABLES = re.compile(r"^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables$")
_QUERY = re.compile(r"^/bigquery/v2/projects/([^/]+)/queries$")


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
    # tables.insert and tables.delete (bigquery v2): Table.expirationTime (ms since the epoch)
    # of each table created with one, and each table a DELETE removed, in order.
    expirations: dict[str, int] = field(default_factory=dict)
    created_tables: list[str] = field(default_factory=list)
    deleted_tables: list[str] = field(default_factory=list)
    # Refuse tables.insert / tables.delete with 403 (a caller without bigquery.tables.create or
    # bigquery.tables.delete).
    denied_writes: set[str] = field(default_factory=set)
    # "Expired tables will be deleted and their storage reclaimed" (Table.expirationTime): each
    # request first drops the tables whose expirationTime has passed on this wall clock (ms since
    # the epoch, as expirationTime is), and lists them here.
    now_ms: Callable[[], int] = field(default_factory=lambda: lambda: int(time.time() * 1000))
    expired_tables: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.requests.append(request)
            self.expire()
        match = _TABLES.match(request.path)
        if match and request.method == "POST":
            return self._insert_table(*match.groups(), request.json())
        match = _TABLE.match(request.path)
        if match and request.method == "DELETE":
            return self._delete_table(".".join(match.groups()))
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
                        {"expirationTime": str(self.expirations[table_id])}
                        if table_id in self.expirations
                        else {}
                    ),
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

    def expire(self) -> None:
        """Drop the tables whose expirationTime has passed (call with the lock held)."""
        now = self.now_ms()
        for table_id, expires in list(self.expirations.items()):
            if expires <= now:
                self.tables.pop(table_id, None)
                self.schemas.pop(table_id, None)
                del self.expirations[table_id]
                self.expired_tables.append(table_id)

    def _insert_table(self, project: str, dataset: str, body: dict[str, Any]) -> Response:
        """tables.insert: "Creates a new, empty table in the dataset" (bigquery v2 discovery
        document), 404 without the dataset, 409 when the table exists."""
        problems = schema_problems("bigquery", "v2", "Table", body)
        reference = body.get("tableReference") or {}
        if problems or not reference.get("tableId"):
            return Response.error(400, "invalid", "; ".join(problems) or "tableReference.tableId")
        if (reference.get("projectId"), reference.get("datasetId")) != (project, dataset):
            return Response.error(400, "invalid", "tableReference names another dataset")
        table_id = f"{project}.{dataset}.{reference['tableId']}"
        if "create" in self.denied_writes:
            return Response.error(
                403,
                "accessDenied",
                f"Access Denied: Dataset {project}:{dataset}: Permission bigquery.tables.create "
                "denied on dataset",
            )
        if f"{project}.{dataset}" not in self.datasets:
            return Response.error(404, "notFound", f"Not found: Dataset {project}:{dataset}")
        with self.lock:
            if table_id in self.tables:
                return Response.error(409, "duplicate", f"Already Exists: Table {table_id}")
            self.tables[table_id] = []
            self.schemas[table_id] = list((body.get("schema") or {}).get("fields") or [])
            self.modified_ms[table_id] = int(time.time() * 1000)
            if body.get("expirationTime") is not None:
                self.expirations[table_id] = int(body["expirationTime"])
            self.created_tables.append(table_id)
        return Response.json(
            {
                "kind": "bigquery#table",
                "id": f"{project}:{dataset}.{reference['tableId']}",
                **body,
            }
        )

    def _delete_table(self, table_id: str) -> Response:
        """tables.delete: the table and its data; 404 when there is none."""
        if "delete" in self.denied_writes:
            return Response.error(
                403,
                "accessDenied",
                f"Access Denied: Table {table_id}: Permission bigquery.tables.delete denied",
            )
        with self.lock:
            if table_id not in self.tables:
                return Response.error(404, "notFound", f"Not found: Table {table_id}")
            del self.tables[table_id]
            self.schemas.pop(table_id, None)
            self.expirations.pop(table_id, None)
            self.deleted_tables.append(table_id)
        return Response(204, b"", {})

    def query(self, project: str, body: dict[str, Any]) -> Response:
        problems = schema_problems("bigquery", "v2", "QueryRequest", body)
        if problems:
            return Response.error(400, "invalid", "; ".join(problems))
        if body.get("useLegacySql", True):
            return Response.error(400, "invalid", "fake BigQuery speaks GoogleSQL only")
        sql = body["query"]
        try:
            tree = check_bigquery_sql(sql)
            default = body.get("defaultDataset") or {}
            tables = _resolve_tables(
                tree, default.get("projectId") or project, default.get("datasetId")
            )
            parameters = _parameters(tree, body.get("queryParameters", []))
        except BigQueryInvalid as error:
            return _invalid_query(str(error))
        missing = [t for _, t in tables if t not in self.tables]
        if missing:
            return Response.error(404, "notFound", f"Not found: Table {missing[0]}")
        with self.lock:
            loaded = {t: (self.table_schema(t), list(self.tables[t])) for _, t in tables}
        try:
            fields, rows = _run(tree, tables, loaded, parameters)
        except duckdb.Error as error:
            return _invalid_query(
                f"{error} (DuckDB, running sqlglot's transpilation of {sql!r}; a valid "
                "BigQuery query DuckDB cannot run is a gap of the fake)"
            )
        micros = bool((body.get("formatOptions") or {}).get("useInt64Timestamp"))
        return Response.json(
            {
                "kind": "bigquery#queryResponse",
                "jobComplete": True,
                "jobReference": {"projectId": project, "jobId": f"fake-{len(self.requests)}"},
                "totalRows": str(len(rows)),
                "schema": {"fields": fields},
                "rows": [{"f": _cells(fields, row, micros)} for row in rows],
            }
        )

    def queries(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.requests if r.path.endswith("/queries")]

    def table_schema(self, table_id: str) -> list[dict[str, Any]]:
        return self.schemas.get(table_id) or _schema(self.tables.get(table_id, []))

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


class BigQueryInvalid(Exception):
    """A query BigQuery would refuse (jobs.query answers 400, reason invalidQuery)."""


def _invalid_query(message: str) -> Response:
    """BigQuery's answer to a bad query: an ErrorProto list under a google.rpc-style error."""
    return Response.json(
        {
            "error": {
                "code": 400,
                "message": message,
                "errors": [
                    {
                        "message": message,
                        "domain": "global",
                        "reason": "invalidQuery",
                        "location": "q",
                        "locationType": "parameter",
                    }
                ],
                "status": "INVALID_ARGUMENT",
            }
        },
        400,
    )


def check_bigquery_sql(sql: str) -> exp.Expression:
    """The query as BigQuery's dialect reads it, or BigQueryInvalid with the parser's message."""
    try:
        statements = [
            s
            for s in sqlglot.parse(sql, read="bigquery", error_level=ErrorLevel.RAISE)
            if s is not None
        ]
        tokens = sqlglot.tokenize(sql, read="bigquery")
    except ParseError as error:
        first = error.errors[0] if error.errors else {}
        where = f" at [{first['line']}:{first['col']}]" if "line" in first else ""
        raise BigQueryInvalid(f"Syntax error: {first.get('description') or error}{where}") from None
    except SqlglotError as error:
        raise BigQueryInvalid(f"Syntax error: {error}") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        # BigQuery runs scripts and DML too; dicom-bq sends single SELECTs, all this fake runs.
        raise BigQueryInvalid("fake BigQuery runs one query (a SELECT) per job")
    tree = statements[0]
    problems = _dialect_problems(sql, tree, tokens)
    if problems:
        raise BigQueryInvalid("; ".join(problems))
    return tree


# GoogleSQL's query syntax: SELECT ... FROM ... [JOIN ...] WHERE, GROUP BY, HAVING, QUALIFY,
# WINDOW, ORDER BY, LIMIT count [OFFSET skip], each once and in this order within one SELECT
# (https://cloud.google.com/bigquery/docs/reference/standard-sql/query-syntax). sqlglot reads
# them in any order ("LIMIT 1 ORDER BY a" parses).
_CLAUSE_RANK = {
    TokenType.SELECT: 0,
    TokenType.FROM: 1,
    TokenType.JOIN: 1,
    TokenType.WHERE: 2,
    TokenType.GROUP_BY: 3,
    TokenType.HAVING: 4,
    TokenType.QUALIFY: 5,
    TokenType.WINDOW: 6,
    TokenType.ORDER_BY: 7,
    TokenType.LIMIT: 8,
    TokenType.OFFSET: 9,
}
_SET_OPERATIONS = {TokenType.UNION, TokenType.INTERSECT, TokenType.EXCEPT}
_OPENERS = {TokenType.L_PAREN, TokenType.L_BRACKET}
_CLOSERS = {TokenType.R_PAREN, TokenType.R_BRACKET}
# Operators of other dialects that sqlglot reads in BigQuery's too; GoogleSQL has `=` and `!=`
# or `<>`, and casts with CAST(x AS T) (operators page:
# https://cloud.google.com/bigquery/docs/reference/standard-sql/operators).
_FOREIGN_OPERATORS = {"==": "use =", "::": "use CAST(expr AS type)"}
# Lexical structure (https://cloud.google.com/bigquery/docs/reference/standard-sql/lexical):
# an unquoted identifier begins with a letter or an underscore and goes on with letters,
# digits and underscores; in a table path only the first part, unquoted, may hold dashes, each
# followed by a number or an identifier ("my-project.mydataset.mytable" and "mytable-287" are
# valid, "mydataset.my-table" and "mytable-287a" are not); anything else goes in backticks.
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_FIRST_PART = re.compile(rf"{_IDENTIFIER}(?:-(?:{_IDENTIFIER}|[0-9]+))*")
_OTHER_PART = re.compile(_IDENTIFIER)
_PATH_PART = re.compile(r"`(?:[^`\\]|\\.)*`|[^\s.,;()`]+")
_PATH_DOT = re.compile(r"\s*\.\s*")


def _where(token: Token) -> str:
    return f"[{token.line}:{max(token.col - len(token.text) + 1, 1)}]"


def _dialect_problems(sql: str, tree: exp.Expression, tokens: list[Token]) -> list[str]:
    """What BigQuery refuses in a query sqlglot's BigQuery dialect parsed."""
    problems: list[str] = []
    ranks: list[int] = [-1]  # the last clause seen at each nesting depth
    previous: Token | None = None
    for token in tokens:
        kind = token.token_type
        if kind in _OPENERS:
            ranks.append(-1)
        elif kind in _CLOSERS and len(ranks) > 1:
            ranks.pop()
        elif kind in _SET_OPERATIONS:
            ranks[-1] = -1
        elif kind == TokenType.COMMA and ranks[-1] == _CLAUSE_RANK[TokenType.LIMIT]:
            problems.append(
                f'Syntax error: Expected end of input but got "," at {_where(token)} '
                "(LIMIT takes one count; skip rows with OFFSET)"
            )
        elif kind in _CLAUSE_RANK and not (
            kind == TokenType.OFFSET
            and previous is not None
            and previous.token_type == TokenType.WITH
        ):
            rank = _CLAUSE_RANK[kind]
            if kind != TokenType.SELECT and rank < ranks[-1]:
                problems.append(
                    f"Syntax error: Unexpected keyword {token.text.upper()} at {_where(token)} "
                    "(GoogleSQL's clauses go SELECT, FROM, WHERE, GROUP BY, HAVING, QUALIFY, "
                    "WINDOW, ORDER BY, LIMIT, OFFSET)"
                )
            ranks[-1] = rank
        if token.text in _FOREIGN_OPERATORS:
            problems.append(
                f'Syntax error: Unexpected "{token.text}" at {_where(token)} '
                f"({_FOREIGN_OPERATORS[token.text]})"
            )
        previous = token
    problems += _table_path_problems(sql, tree)
    for call in tree.find_all(exp.Anonymous):
        # A name sqlglot's BigQuery dialect does not know as a function: BigQuery answers
        # "Function not found" (user-defined functions aside, which this fake has none of).
        problems.append(f"Function not found: {call.name}")
    return problems


def _table_path_problems(sql: str, tree: exp.Expression) -> list[str]:
    problems = []
    for table in tree.find_all(exp.Table):
        starts = [part.meta.get("start") for part in table.parts]
        if not starts or None in starts:
            continue
        at = min(s for s in starts if s is not None)
        parts = []
        while True:
            match = _PATH_PART.match(sql, at)
            if match is None:
                break
            parts.append(match.group())
            dot = _PATH_DOT.match(sql, match.end())
            if dot is None:
                break
            at = dot.end()
        path = ".".join(parts)
        for index, part in enumerate(parts):
            if part.startswith("`"):
                continue
            rule = _FIRST_PART if index == 0 else _OTHER_PART
            if not rule.fullmatch(part):
                problems.append(
                    f"Syntax error: {part!r} in table path {path} is not a valid unquoted "
                    "identifier"
                    + (
                        " (only the first part of a path may hold dashes)"
                        if "-" in part and index
                        else ""
                    )
                    + f"; quote it with backticks: `{path.replace('`', '')}`"
                )
    return problems


def _resolve_tables(
    tree: exp.Expression, project: str, dataset: str | None
) -> list[tuple[exp.Table, str]]:
    """Each table the query reads, as PROJECT.DATASET.TABLE: a path without its project is in
    the job's project (or defaultDataset's), one without its dataset needs defaultDataset
    (BigQuery: 'Table "t" must be qualified with a dataset (e.g. dataset.table).')."""
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    resolved: list[tuple[exp.Table, str]] = []
    for table in tree.find_all(exp.Table):
        names = [part.name for part in table.parts]
        if not names or (len(names) == 1 and names[0] in ctes):
            continue
        # A backquoted path ("`p.d.t`") is one identifier that sqlglot splits at its dots; a
        # domain-scoped project ("example.com:p") keeps its own dots: the last two are the
        # dataset and the table.
        if len(names) > 3:
            names = [".".join(names[:-2]), *names[-2:]]
        if len(names) == 1:
            if dataset is None:
                raise BigQueryInvalid(
                    f'Table "{names[0]}" must be qualified with a dataset (e.g. dataset.table).'
                )
            names = [project, dataset, names[0]]
        elif len(names) == 2:
            names = [project, *names]
        resolved.append((table, ".".join(names)))
    return resolved


def _parameters(tree: exp.Expression, given: list[dict[str, Any]]) -> dict[str, Any]:
    """The named parameters the query uses, as Python values for DuckDB's $name."""
    values = {p["name"].lower(): _parameter_value(p) for p in given if "name" in p}
    used: dict[str, Any] = {}
    for node in tree.find_all(exp.Parameter):
        if isinstance(node.this, exp.Parameter) or isinstance(node.parent, exp.Parameter):
            raise BigQueryInvalid("fake BigQuery has no system variables (@@name)")
        name = node.name
        if name.lower() not in values:
            raise BigQueryInvalid(f"Query parameter '{name}' not found")
        used[name] = values[name.lower()]
    if any(True for _ in tree.find_all(exp.Placeholder)):
        raise BigQueryInvalid("fake BigQuery takes named parameters (@name) only")
    return used


def _scalar_parameter(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "INT64":
        return int(value)
    if kind in ("FLOAT64", "NUMERIC", "BIGNUMERIC"):
        return float(value)
    if kind == "BOOL":
        return str(value).lower() == "true"
    return str(value)


def _parameter_value(parameter: dict[str, Any]) -> Any:
    kind = parameter["parameterType"]
    value = parameter.get("parameterValue") or {}
    if kind["type"] == "ARRAY":
        inner = kind["arrayType"]["type"]
        return [_scalar_parameter(inner, v.get("value")) for v in value.get("arrayValues", [])]
    return _scalar_parameter(kind["type"], value.get("value"))


# The embedded engine: one DuckDB per test process, its tables made for one query and dropped.
_ENGINE: duckdb.DuckDBPyConnection | None = None
_ENGINE_LOCK = threading.Lock()
_QUERY_NUMBERS = itertools.count()

_DUCK_TYPES = {
    "STRING": "VARCHAR",
    "INTEGER": "BIGINT",
    "INT64": "BIGINT",
    "FLOAT": "DOUBLE",
    "FLOAT64": "DOUBLE",
    "BOOLEAN": "BOOLEAN",
    "BOOL": "BOOLEAN",
    "DATE": "DATE",
    "TIME": "TIME",
    "DATETIME": "TIMESTAMP",
    "TIMESTAMP": "TIMESTAMPTZ",
    "JSON": "JSON",
    "BYTES": "BLOB",
    "NUMERIC": "DECIMAL(38, 9)",
    "BIGNUMERIC": "DOUBLE",
    "GEOGRAPHY": "VARCHAR",
}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _duck_type(column: dict[str, Any]) -> str:
    kind = str(column.get("type", "STRING")).upper()
    inner = column.get("fields") or []
    if kind in ("RECORD", "STRUCT") and inner:
        base = "STRUCT(" + ", ".join(f"{_quote(f['name'])} {_duck_type(f)}" for f in inner) + ")"
    else:
        base = _DUCK_TYPES.get(kind, "VARCHAR")
    return base + ("[]" if str(column.get("mode", "")).upper() == "REPEATED" else "")


def _duck_value(column: dict[str, Any], value: Any) -> Any:
    """A stored cell as DuckDB takes it for the column's type (a REPEATED NULL is [])."""
    if str(column.get("mode", "")).upper() == "REPEATED":
        items = value if isinstance(value, list) else [] if value is None else [value]
        return [_duck_scalar(column, item) for item in items]
    return _duck_scalar(column, value)


def _duck_scalar(column: dict[str, Any], value: Any) -> Any:
    if value is None:
        return None
    kind = str(column.get("type", "STRING")).upper()
    inner = column.get("fields") or []
    if kind in ("RECORD", "STRUCT") and inner and isinstance(value, dict):
        return {f["name"]: _duck_value(f, value.get(f["name"])) for f in inner}
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    if kind in ("STRING", "GEOGRAPHY", "RECORD", "STRUCT") and not isinstance(value, str):
        return (
            value.isoformat() if isinstance(value, (datetime.date, datetime.time)) else str(value)
        )
    return value


def _engine() -> duckdb.DuckDBPyConnection:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = duckdb.connect(":memory:")
        _ENGINE.execute("SET TimeZone = 'UTC'")
    return _ENGINE


def _run(
    tree: exp.Expression,
    tables: list[tuple[exp.Table, str]],
    loaded: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]],
    parameters: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    """The query on DuckDB: each table it reads loaded under a name of its own, the query
    transpiled by sqlglot with those names (BigQuery's implicit alias, the path's last part,
    kept), its unnamed columns named as BigQuery names them (f0_, f1_...)."""
    number = next(_QUERY_NUMBERS)
    names = {table_id: f"bq_{number}_{i}" for i, table_id in enumerate(loaded)}
    for table, table_id in tables:
        if not table.alias:
            table.set("alias", exp.TableAlias(this=exp.to_identifier(table.name, quoted=True)))
        table.set("catalog", None)
        table.set("db", None)
        table.set("this", exp.to_identifier(names[table_id], quoted=True))
    _name_anonymous_columns(tree)
    duck_sql = tree.sql(dialect="duckdb")
    with _ENGINE_LOCK:
        engine = _engine()
        try:
            for table_id, (schema, rows) in loaded.items():
                _load(engine, names[table_id], schema, rows)
            cursor = engine.execute(duck_sql, parameters)
            description = cursor.description or []
            result = cursor.fetchall()
        finally:
            for name in names.values():
                engine.execute(f"DROP TABLE IF EXISTS {_quote(name)}")
    fields = [_bigquery_field(d[0], d[1]) for d in description]
    return fields, result


def _name_anonymous_columns(tree: exp.Expression) -> None:
    if not isinstance(tree, exp.Select):
        return
    count = 0
    for column in list(tree.expressions):
        if isinstance(column, (exp.Alias, exp.Column, exp.Dot, exp.Star)):
            continue
        column.replace(exp.alias_(column.copy(), f"f{count}_"))
        count += 1


def _load(
    engine: duckdb.DuckDBPyConnection,
    name: str,
    schema: list[dict[str, Any]],
    rows: list[dict[str, Any]],
) -> None:
    # The schema's columns, even those no row fills: a column BigQuery has is queryable.
    columns = schema or [{"name": "_empty", "type": "STRING"}]
    types = [_duck_type(c) for c in columns]
    engine.execute(
        f"CREATE TABLE {_quote(name)} ("
        + ", ".join(f"{_quote(c['name'])} {t}" for c, t in zip(columns, types, strict=True))
        + ")"
    )
    placeholders = "(" + ", ".join(f"CAST(? AS {t})" for t in types) + ")"
    for start in range(0, len(rows), 500):
        chunk = rows[start : start + 500]
        engine.execute(
            f"INSERT INTO {_quote(name)} VALUES " + ", ".join(placeholders for _ in chunk),
            [_duck_value(c, row.get(c["name"])) for row in chunk for c in columns],
        )


_BIGQUERY_TYPES = {
    "varchar": "STRING",
    "uuid": "STRING",
    "tinyint": "INTEGER",
    "smallint": "INTEGER",
    "integer": "INTEGER",
    "bigint": "INTEGER",
    "hugeint": "INTEGER",
    "utinyint": "INTEGER",
    "usmallint": "INTEGER",
    "uinteger": "INTEGER",
    "ubigint": "INTEGER",
    "null": "INTEGER",  # GoogleSQL's NULL literal is an INT64
    "float": "FLOAT",
    "double": "FLOAT",
    "decimal": "NUMERIC",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "time": "TIME",
    "timestamp": "DATETIME",
    "timestamp with time zone": "TIMESTAMP",
    "blob": "BYTES",
}


def _bigquery_field(name: str, duck: Any, mode: str = "NULLABLE") -> dict[str, Any]:
    """A result column's TableFieldSchema, from DuckDB's type."""
    kind = str(duck.id)
    if kind == "list":
        return _bigquery_field(name, duck.children[0][1], "REPEATED")
    if kind == "struct":
        return {
            "name": name,
            "type": "RECORD",
            "mode": mode,
            "fields": [_bigquery_field(n, t) for n, t in duck.children],
        }
    bigquery = "JSON" if str(duck) == "JSON" else _BIGQUERY_TYPES.get(kind, "STRING")
    return {"name": name, "type": bigquery, "mode": mode}


def _cells(fields: list[dict[str, Any]], row: tuple[Any, ...], micros: bool) -> list[Any]:
    return [_cell(f, v, micros) for f, v in zip(fields, row, strict=True)]


def _cell(column: dict[str, Any], value: Any, micros: bool) -> dict[str, Any]:
    """One cell as jobs.query sends it: {"v": text}, a list of cells, or a record's "f"."""
    if value is None:
        return {"v": [] if column["mode"] == "REPEATED" else None}
    if column["mode"] == "REPEATED":
        scalar = {**column, "mode": "NULLABLE"}
        return {"v": [_cell(scalar, item, micros) for item in value]}
    return {"v": _text(column, value, micros)}


def _text(column: dict[str, Any], value: Any, micros: bool) -> Any:
    kind = column["type"]
    if kind == "RECORD":
        return {"f": [_cell(f, value.get(f["name"]), micros) for f in column["fields"]]}
    if kind == "BOOLEAN":
        return "true" if value else "false"
    if kind == "TIMESTAMP":
        stamp = value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
        seconds = stamp.timestamp()
        return str(round(seconds * 1_000_000)) if micros else repr(seconds)
    if kind in ("DATE", "TIME", "DATETIME"):
        return value.isoformat()
    if kind == "BYTES":
        return base64.b64encode(value).decode()
    if kind == "NUMERIC" and isinstance(value, decimal.Decimal):
        return format(value.normalize(), "f")
    return str(value)


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
