"""The BigQuery tables a DICOM export writes, from the instances' DICOM JSON (PS3.18 F.2).

Sources (what is marked UNVERIFIED could not be read in Google's pages and is a reasoned choice):
- Default, nested schema: https://cloud.google.com/healthcare-api/docs/how-tos/dicom-bigquery-schema
  "Columns ... are named according to the keyword of the data element"; "The schema only contains
  columns for DICOM data elements that exist in the metadata"; its VR table: AE AS CS LO LT SH ST
  UC UI UR UT DS IS -> STRING, DA -> DATE, TM -> TIME, DT -> TIMESTAMP, PN and SQ -> RECORD, FL FD ->
  FLOAT, AT SL SS UL US -> INTEGER; VM 1 is NULLABLE, any other VM REPEATED (the page's ja/zh-cn
  copies). Google's how-to (French, "Restrictions et comportements supplémentaires"): a tag of no
  BigQuery-compatible type "est répertorié dans une colonne distincte (appelée
  DroppedTags.TagName)", so DroppedTags is a repeated record with a STRING TagName.
- Flattened schema: healthcare v1/v1beta1 discovery, schemas.SchemaFlattened: "one column for each
  DICOM tag. The column name will be the DICOM tag's textual representation."
- JSON schema: healthcare v1/v1beta1 discovery, schemas.SchemaJSON: StudyInstanceUID,
  SeriesInstanceUID, SOPInstanceUID (STRING), SourceDicomStore (STRING, only with
  include_source_store), Metadata (JSON), StructuredStorageSize (INTEGER), DroppedTags (STRING,
  repeated), StorageClass (STRING), LastUpdated (TIMESTAMP), BlobStorageSize (INTEGER), Type
  (STRING, "e.g., INSERT, DELETE").
- includeSourceStore: DicomBigQueryDestination.includeSourceStore, "the source store name will be
  included as a column"; the column's name, SourceDicomStore, is the one SchemaJSON documents
  (UNVERIFIED for the nested and flattened schemas).
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterable
from typing import Any

from pydicom.datadict import dictionary_VM, keyword_for_tag

Field = dict[str, Any]  # a bigquery v2 TableFieldSchema
Row = dict[str, Any]
Dataset = dict[str, Any]  # one instance's DICOM JSON: "0020000D" -> {"vr": ..., "Value": [...]}

_STRING_VRS = {"AE", "AS", "CS", "LO", "LT", "SH", "ST", "UC", "UI", "UR", "UT", "DS", "IS"}
_INTEGER_VRS = {"AT", "SL", "SS", "UL", "US"}
VR_TYPES = {
    **dict.fromkeys(_STRING_VRS, "STRING"),
    "DA": "DATE",
    "TM": "TIME",
    "DT": "TIMESTAMP",
    "PN": "RECORD",
    "SQ": "RECORD",
    "FL": "FLOAT",
    "FD": "FLOAT",
    **dict.fromkeys(_INTEGER_VRS, "INTEGER"),
}
# VRs absent from the page's table (OB, OD, OF, OL, OV, OW, UN, SV, UV) have no BigQuery type:
# those elements go to DroppedTags. Pixel Data is the instance's blob (the JSON schema counts it
# in BlobStorageSize, not StructuredStorageSize), not metadata: it is neither a column nor dropped
# (UNVERIFIED).
BLOB_TAGS = {"7FE00010"}
# PS3.18 F.2.2: a PN value's three component groups (the record's fields are UNVERIFIED).
PN_FIELDS = ("Alphabetic", "Ideographic", "Phonetic")
# Private elements (no keyword): the IDC dicom_metadata table, a Healthcare API export, documents
# OtherElements as "array of structs with Tag and Data" and tags as Tag_00431039 (UNVERIFIED).
OTHER_ELEMENTS: Field = {
    "name": "OtherElements",
    "type": "RECORD",
    "mode": "REPEATED",
    "fields": [
        {"name": "Tag", "type": "STRING", "mode": "NULLABLE"},
        {"name": "Data", "type": "STRING", "mode": "REPEATED"},
    ],
}
DROPPED_RECORD: Field = {
    "name": "DroppedTags",
    "type": "RECORD",
    "mode": "REPEATED",
    "fields": [{"name": "TagName", "type": "STRING", "mode": "NULLABLE"}],
}
SOURCE_STORE: Field = {"name": "SourceDicomStore", "type": "STRING", "mode": "NULLABLE"}
JSON_FIELDS: list[Field] = [
    {"name": "StudyInstanceUID", "type": "STRING", "mode": "NULLABLE"},
    {"name": "SeriesInstanceUID", "type": "STRING", "mode": "NULLABLE"},
    {"name": "SOPInstanceUID", "type": "STRING", "mode": "NULLABLE"},
    {"name": "Metadata", "type": "JSON", "mode": "NULLABLE"},
    {"name": "StructuredStorageSize", "type": "INTEGER", "mode": "NULLABLE"},
    {"name": "DroppedTags", "type": "STRING", "mode": "REPEATED"},
    {"name": "StorageClass", "type": "STRING", "mode": "NULLABLE"},
    {"name": "LastUpdated", "type": "TIMESTAMP", "mode": "NULLABLE"},
    {"name": "BlobStorageSize", "type": "INTEGER", "mode": "NULLABLE"},
    {"name": "Type", "type": "STRING", "mode": "NULLABLE"},
]


class Unconvertible(ValueError):
    """A value its VR's BigQuery type cannot hold: the element is dropped (UNVERIFIED: Google's
    "Conflicting and mismatching types" section could not be read)."""


def uid(dataset: Dataset, tag: str) -> str:
    values = (dataset.get(tag) or {}).get("Value") or [""]
    return str(values[0])


def _keyword(tag: str) -> str:
    return str(keyword_for_tag(int(tag, 16)) or "")


def _repeated(tag: str) -> bool:
    try:
        return str(dictionary_VM(int(tag, 16))) != "1"
    except KeyError:
        return False


def _date(text: str) -> str:
    match = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", text.strip())
    if not match:
        raise Unconvertible(text)
    return datetime.date(*map(int, match.groups())).isoformat()


def _time(text: str) -> str:
    """DICOM TM (HH[MM[SS[.F{1,6}]]], PS3.5 6.2) as BigQuery TIME's HH:MM:SS[.ffffff]."""
    match = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?", text.strip())
    if not match:
        raise Unconvertible(text)
    hour, minute, second, fraction = match.groups()
    value = datetime.time(
        int(hour), int(minute or 0), int(second or 0), int((fraction or "0").ljust(6, "0"))
    )
    return value.isoformat()


def _timestamp(text: str) -> str:
    match = re.fullmatch(
        r"(\d{4})(\d{2})(\d{2})(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?", text[:21]
    )
    if not match:
        raise Unconvertible(text)
    y, mo, d, h, mi, s, f = match.groups()
    value = datetime.datetime(
        int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0),
        int((f or "0").ljust(6, "0")), tzinfo=datetime.UTC,
    )  # fmt: skip
    return value.isoformat()


def _scalar(vr: str, value: Any) -> Any:
    kind = VR_TYPES[vr]
    if kind == "DATE":
        return _date(str(value))
    if kind == "TIME":
        return _time(str(value))
    if kind == "TIMESTAMP":
        return _timestamp(str(value))
    if kind == "FLOAT":
        return float(value)
    if kind == "INTEGER":
        return int(value, 16) if vr == "AT" else int(value)
    return str(value)


def _person_name(value: Any) -> Row:
    value = value if isinstance(value, dict) else {"Alphabetic": str(value)}
    return {name: value.get(name) for name in PN_FIELDS}


def merge_fields(known: list[Field], new: Iterable[Field]) -> list[Field]:
    """Columns of several rows: the union, records merged field by field."""
    merged = {field["name"]: dict(field) for field in known}
    for field in new:
        old = merged.get(field["name"])
        if old is None:
            merged[field["name"]] = dict(field)
        elif old.get("type") == "RECORD" and field.get("type") == "RECORD":
            old["fields"] = merge_fields(old.get("fields", []), field.get("fields", []))
    return list(merged.values())


def _nested(dataset: Dataset, dropped: list[str]) -> tuple[Row, list[Field]]:
    row: Row = {}
    fields: list[Field] = []
    others: list[Row] = []
    for tag, element in sorted(dataset.items()):
        vr, values = str(element.get("vr", "UN")), list(element.get("Value") or [])
        keyword = _keyword(tag)
        if tag in BLOB_TAGS:
            continue
        if not keyword:
            others.append({"Tag": f"Tag_{tag}", "Data": [json.dumps(v) for v in values]})
            continue
        if vr not in VR_TYPES:
            dropped.append(keyword)
            continue
        if not values:
            continue
        repeated = _repeated(tag)
        if vr == "SQ":
            items = [_nested(item, dropped) for item in values]
            sub: list[Field] = []
            for _, item_fields in items:
                sub = merge_fields(sub, item_fields)
            # A sequence holds items, so it is repeated whatever its VM (UNVERIFIED).
            row[keyword] = [item_row for item_row, _ in items]
            fields.append({"name": keyword, "type": "RECORD", "mode": "REPEATED", "fields": sub})
            continue
        try:
            if vr == "PN":
                converted = [_person_name(v) for v in values]
            else:
                converted = [_scalar(vr, v) for v in values]
        except (Unconvertible, ValueError):
            dropped.append(keyword)
            continue
        row[keyword] = converted if repeated else converted[0]
        field: Field = {"name": keyword, "type": VR_TYPES[vr]}
        field["mode"] = "REPEATED" if repeated else "NULLABLE"
        if vr == "PN":
            field["fields"] = [{"name": n, "type": "STRING", "mode": "NULLABLE"} for n in PN_FIELDS]
        fields.append(field)
    if others:
        row["OtherElements"] = others
        fields.append(OTHER_ELEMENTS)
    return row, fields


def nested_table(
    datasets: list[Dataset], *, source_store: str | None
) -> tuple[list[Field], list[Row]]:
    """The default export: one keyword column per element present in any instance."""
    schema: list[Field] = []
    rows: list[Row] = []
    for dataset in datasets:
        dropped: list[str] = []
        row, fields = _nested(dataset, dropped)
        # Always a column, empty when nothing was dropped, as the JSON schema documents it
        # (UNVERIFIED for the nested schema).
        row["DroppedTags"] = [{"TagName": name} for name in dropped]
        fields.append(DROPPED_RECORD)
        if source_store is not None:
            row["SourceDicomStore"] = source_store
            fields.append(SOURCE_STORE)
        schema = merge_fields(schema, fields)
        rows.append(row)
    return schema, rows


def _flat_value(vr: str, values: list[Any]) -> list[Any]:
    if vr == "SQ":
        return [json.dumps(item, sort_keys=True) for item in values]
    if vr == "PN":
        return [_person_name(v)["Alphabetic"] for v in values]
    return [_scalar(vr, v) for v in values]


def flattened_table(
    datasets: list[Dataset], *, source_store: str | None
) -> tuple[list[Field], list[Row]]:
    """`schemaFlattened`: one top-level column per tag, no records. How sequences, person names
    and dropped tags look is UNVERIFIED: sequences as their items' DICOM JSON text, person names
    as their Alphabetic group, DroppedTags a repeated STRING."""
    schema: list[Field] = []
    rows: list[Row] = []
    for dataset in datasets:
        row: Row = {}
        fields: list[Field] = []
        dropped: list[str] = []
        for tag, element in sorted(dataset.items()):
            vr, values = str(element.get("vr", "UN")), list(element.get("Value") or [])
            keyword = _keyword(tag)
            if tag in BLOB_TAGS:
                continue
            if not keyword or vr not in VR_TYPES:
                # Binary values come as BulkDataURI or InlineBinary, not Value (PS3.18 F.2.7).
                dropped.append(keyword or f"Tag_{tag}")
                continue
            if not values:
                continue
            try:
                converted = _flat_value(vr, values)
            except (Unconvertible, ValueError):
                dropped.append(keyword)
                continue
            repeated = _repeated(tag) or vr == "SQ"
            kind = "STRING" if vr in ("SQ", "PN") else VR_TYPES[vr]
            row[keyword] = converted if repeated else converted[0]
            fields.append(
                {"name": keyword, "type": kind, "mode": "REPEATED" if repeated else "NULLABLE"}
            )
        row["DroppedTags"] = dropped
        fields.append({"name": "DroppedTags", "type": "STRING", "mode": "REPEATED"})
        if source_store is not None:
            row["SourceDicomStore"] = source_store
            fields.append(SOURCE_STORE)
        schema = merge_fields(schema, fields)
        rows.append(row)
    return schema, rows


def json_table(
    datasets: list[Dataset],
    *,
    source_store: str | None,
    blob_sizes: dict[str, int],
    now: datetime.datetime,
) -> tuple[list[Field], list[Row]]:
    """`schemaJson`: exactly SchemaJSON's columns. Metadata holds the instance's DICOM JSON
    without its blob and without the elements listed in DroppedTags (layout UNVERIFIED)."""
    schema = list(JSON_FIELDS)
    if source_store is not None:
        schema.insert(3, SOURCE_STORE)
    rows: list[Row] = []
    for dataset in datasets:
        metadata: Dataset = {}
        dropped: list[str] = []
        for tag, element in sorted(dataset.items()):
            if tag in BLOB_TAGS:
                continue
            if str(element.get("vr", "UN")) not in VR_TYPES:
                dropped.append(_keyword(tag) or f"Tag_{tag}")
                continue
            metadata[tag] = element
        sop = uid(dataset, "00080018")
        row: Row = {
            "StudyInstanceUID": uid(dataset, "0020000D"),
            "SeriesInstanceUID": uid(dataset, "0020000E"),
            "SOPInstanceUID": sop,
            "Metadata": metadata,
            "StructuredStorageSize": len(json.dumps(metadata).encode()),
            "DroppedTags": dropped,
            # BlobStorageInfo.storageClass (healthcare v1): a store's default class is STANDARD.
            "StorageClass": "STANDARD",
            "LastUpdated": now.isoformat(),
            "BlobStorageSize": blob_sizes.get(sop),
            "Type": "INSERT",
        }
        if source_store is not None:
            row["SourceDicomStore"] = source_store
        rows.append(row)
    return schema, rows
