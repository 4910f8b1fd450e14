"""The analysis queries of Google's how-to, with values as query parameters, never in the SQL.

Only validated table IDs are written into the SQL text (a table cannot be a parameter). Which
columns a query may use depends on how the table was exported, so each query is built for the
table's own schema (tables.get), and says which layout it needs when the table lacks a column:
- default (nested) schema: one column per DICOM keyword, typed by VR (DA is DATE, TM is TIME),
  sequences and person names as records, DroppedTags a repeated record whose tag is TagName
  (https://cloud.google.com/healthcare-api/docs/how-tos/dicom-bigquery-schema; Google's how-to,
  "Restrictions et comportements supplémentaires": "une colonne distincte (appelée
  DroppedTags.TagName)");
- flattened schema (`schemaFlattened`): "one column for each DICOM tag" (discovery document,
  schemas.SchemaFlattened), so the how-to's columns are there too;
- JSON schema (`schemaJson`): the three UIDs, Metadata (JSON), DroppedTags (STRING, repeated),
  sizes, StorageClass, LastUpdated, Type (discovery document, schemas.SchemaJSON): PatientID,
  StudyDate and StudyTime are inside Metadata, whose layout Google does not document.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dicom_bq.errors import DicomBqError
from dicom_bq.refs import TableUri

Parameter = tuple[str, str, str | int]  # name, BigQuery type, value

SCHEMA_PAGE = "https://cloud.google.com/healthcare-api/docs/how-tos/dicom-bigquery-schema"
_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


@dataclass(frozen=True)
class Query:
    sql: str
    parameters: tuple[Parameter, ...] = ()


@dataclass(frozen=True)
class Column:
    """One bigquery v2 TableFieldSchema: type STRING, DATE, TIME, RECORD, JSON...; mode
    NULLABLE, REQUIRED or REPEATED (absent means NULLABLE)."""

    name: str
    type: str
    mode: str = "NULLABLE"
    fields: tuple[Column, ...] = ()

    @classmethod
    def from_api(cls, field: Mapping[str, Any]) -> Column:
        return cls(
            name=str(field["name"]),
            # Legacy names (RECORD, INTEGER, FLOAT, BOOLEAN) and standard ones (STRUCT, INT64,
            # FLOAT64, BOOL) are both valid (bigquery v2 TableFieldSchema.type).
            type={"STRUCT": "RECORD", "INT64": "INTEGER", "FLOAT64": "FLOAT"}.get(
                str(field.get("type", "STRING")).upper(), str(field.get("type", "STRING")).upper()
            ),
            mode=str(field.get("mode") or "NULLABLE").upper(),
            fields=tuple(cls.from_api(inner) for inner in field.get("fields") or ()),
        )

    @property
    def repeated(self) -> bool:
        return self.mode == "REPEATED"

    def describe(self) -> str:
        return f"{self.type}{' REPEATED' if self.repeated else ''}"


@dataclass(frozen=True)
class TableColumns:
    """An exported table's top-level columns, read from its schema rather than asked for."""

    table: TableUri
    columns: Mapping[str, Column]

    @classmethod
    def from_schema(cls, table: TableUri, fields: Iterable[Mapping[str, Any]]) -> TableColumns:
        columns = (Column.from_api(field) for field in fields)
        return cls(table, {column.name: column for column in columns})

    @property
    def json_layout(self) -> bool:
        """Written with `schemaJson`: every tag in the one JSON column Metadata."""
        metadata = self.columns.get("Metadata")
        return metadata is not None and metadata.type == "JSON"

    def require(self, query: str, wanted: Mapping[str, tuple[str, ...]]) -> None:
        """Refuse, before the query runs, a table without the single-valued columns of the
        types `wanted` names, saying which export layout has them."""
        missing = [name for name in wanted if name not in self.columns]
        wrong = [
            f"{name} is {column.describe()} (needs {' or '.join(types)})"
            for name, types in wanted.items()
            if (column := self.columns.get(name)) is not None
            and (column.type not in types or column.repeated)
        ]
        if not missing and not wrong:
            return
        needs = ", ".join(wanted)
        if missing and self.json_layout:
            raise DicomBqError(
                f"query {query} needs the columns {needs}; {self.table.uri} was exported with "
                f"the JSON schema (--schema json: a Metadata JSON column instead of one column "
                f"per tag), so it has no {', '.join(missing)}. Export to another table with "
                "--schema nested (the default) or --schema flattened and query that one"
            )
        if missing:
            raise DicomBqError(
                f"query {query} needs the columns {needs}; {self.table.uri} has no "
                f"{', '.join(missing)}. A DICOM export makes a column only for the tags its "
                f"instances carry ({SCHEMA_PAGE}): none of the exported instances had "
                f"{' or '.join(missing)}, or the table was not written by a DICOM export"
            )
        raise DicomBqError(
            f"query {query} cannot run on {self.table.uri}: {'; '.join(wrong)}. Query a table "
            "written by `dicom-bq export` (--schema nested or flattened)"
        )


def instance_row(table: TableUri, sop_instance_uid: str) -> Query:
    """The exported row of one instance: what `verify` checks against what it sent (verify's
    own table always has the default nested schema, where all four are columns)."""
    return Query(
        "SELECT StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID, PatientID\n"
        f"FROM `{table.table_id}`\n"
        "WHERE SOPInstanceUID = @sop_instance_uid\n"
        "LIMIT 10",
        (("sop_instance_uid", "STRING", sop_instance_uid),),
    )


def dicomweb_paths(columns: TableColumns, patient_id: str) -> Query:
    columns.require("dicomweb-paths", {name: ("STRING",) for name in (*_UIDS, "PatientID")})
    # A path is relative to its store: in a table several stores share (exported with
    # includeSourceStore, the SourceDicomStore column), each path names its store too.
    source = "SourceDicomStore, " if "SourceDicomStore" in columns.columns else ""
    return Query(
        f"SELECT {source}CONCAT('/dicomWeb/studies/', StudyInstanceUID, '/series/', "
        "SeriesInstanceUID, '/instances/', SOPInstanceUID) AS DICOMwebPath\n"
        f"FROM `{columns.table.table_id}`\n"
        "WHERE PatientID = @patient_id",
        (("patient_id", "STRING", patient_id),),
    )


def latest_studies(columns: TableColumns, limit: int) -> Query:
    """The how-to's worklist query. In a DICOM export StudyDate is DATE and StudyTime TIME, and
    BigQuery's CONCAT casts both to text ("2021-07-11 00:38:22" in the how-to's answer); a table
    holding them as DICOM strings ("20210711", "003822") still sorts correctly."""
    columns.require(
        "latest-studies",
        {
            "StudyDate": ("DATE", "STRING"),
            "StudyTime": ("TIME", "STRING"),
            "PatientID": ("STRING",),
            "StudyInstanceUID": ("STRING",),
        },
    )
    return Query(
        "SELECT\n"
        "  MIN(CONCAT(StudyDate, ' ', StudyTime)) AS StudyDateTime, MIN(PatientID) AS PatientID, "
        "StudyInstanceUID, COUNT(*) AS InstanceCount\n"
        f"FROM `{columns.table.table_id}` AS dicom\n"
        "GROUP BY StudyInstanceUID\n"
        "ORDER BY StudyDateTime DESC\n"
        "LIMIT @limit",
        (("limit", "INT64", limit),),
    )


def dropped_tags(columns: TableColumns) -> Query:
    """Each dropped tag and how many instances dropped it. The default schema keeps them in
    DroppedTags.TagName (a repeated record, Google's how-to); the JSON schema in DroppedTags, a
    repeated STRING (schemas.SchemaJSON); the column's own type decides which."""
    column = columns.columns.get("DroppedTags")
    if column is None:
        raise DicomBqError(
            f"query dropped-tags needs the DroppedTags column; {columns.table.uri} has none, so "
            "it was not written by a DICOM export (or not by one that records dropped tags)"
        )
    names = {inner.name for inner in column.fields}
    if column.repeated and column.type == "RECORD" and "TagName" in names:
        tag = "tag.TagName"
    elif column.repeated and column.type == "STRING":
        tag = "tag"
    else:
        raise DicomBqError(
            f"query dropped-tags cannot read DroppedTags in {columns.table.uri}: it is "
            f"{column.describe()}{' with ' + ', '.join(sorted(names)) if names else ''}, where a "
            "DICOM export writes a repeated record with TagName (default schema) or a repeated "
            "STRING (--schema json)"
        )
    return Query(
        f"SELECT {tag} AS DroppedTag, COUNT(*) AS InstanceCount\n"
        f"FROM `{columns.table.table_id}`, UNNEST(DroppedTags) AS tag\n"
        "GROUP BY DroppedTag\n"
        "ORDER BY InstanceCount DESC, DroppedTag"
    )


def filter_paths(table: TableUri, where: str | None = None) -> Query:
    """The how-to's CONCAT query that builds filter lines from an exported table. The three
    UIDs are columns in every layout (nested, flattened, and JSON: schemas.SchemaJSON).

    `where` is the user's own SQL condition on their table, like --query: it is not a value.
    """
    sql = (
        "SELECT CONCAT('/studies/', StudyInstanceUID, '/series/', SeriesInstanceUID, "
        "'/instances/', SOPInstanceUID) AS path\n"
        f"FROM `{table.table_id}`"
    )
    if where:
        sql += f"\nWHERE {where}"
    return Query(sql)
