"""The analysis queries of Google's how-to, with values as query parameters, never in the SQL.

Only validated table IDs are written into the SQL text (a table cannot be a parameter).
"""

from __future__ import annotations

from dataclasses import dataclass

from dicom_bq.refs import TableUri

Parameter = tuple[str, str, str | int]  # name, BigQuery type, value


@dataclass(frozen=True)
class Query:
    sql: str
    parameters: tuple[Parameter, ...] = ()


def instance_row(table: TableUri, sop_instance_uid: str) -> Query:
    """The exported row of one instance: what `verify` checks against what it sent."""
    return Query(
        "SELECT StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID, PatientID\n"
        f"FROM `{table.table_id}`\n"
        "WHERE SOPInstanceUID = @sop_instance_uid\n"
        "LIMIT 10",
        (("sop_instance_uid", "STRING", sop_instance_uid),),
    )


def dicomweb_paths(table: TableUri, patient_id: str) -> Query:
    return Query(
        "SELECT CONCAT('/dicomWeb/studies/', StudyInstanceUID, '/series/', SeriesInstanceUID, "
        "'/instances/', SOPInstanceUID) AS DICOMwebPath\n"
        f"FROM `{table.table_id}`\n"
        "WHERE PatientID = @patient_id",
        (("patient_id", "STRING", patient_id),),
    )


def latest_studies(table: TableUri, limit: int) -> Query:
    return Query(
        "SELECT\n"
        "  MIN(CONCAT(StudyDate, ' ', StudyTime)) AS StudyDateTime, MIN(PatientID) AS PatientID, "
        "StudyInstanceUID, COUNT(*) AS InstanceCount\n"
        f"FROM `{table.table_id}` AS dicom\n"
        "GROUP BY StudyInstanceUID\n"
        "ORDER BY StudyDateTime DESC\n"
        "LIMIT @limit",
        (("limit", "INT64", limit),),
    )


def dropped_tags(table: TableUri) -> Query:
    return Query(
        "SELECT tag AS DroppedTag, COUNT(*) AS InstanceCount\n"
        f"FROM `{table.table_id}`, UNNEST(DroppedTags) AS tag\n"
        "GROUP BY tag\n"
        "ORDER BY InstanceCount DESC, DroppedTag"
    )


def filter_paths(table: TableUri, where: str | None = None) -> Query:
    """The how-to's CONCAT query that builds filter lines from an exported table.

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
