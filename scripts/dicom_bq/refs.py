"""Parsing what users type: store names, bq:// and gs:// URIs, timeouts, write dispositions.

Every parser raises DicomBqError (exit 2) with the fix, before any request is sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from dicom_bq.errors import DicomBqError
from dicom_bq.texts import excerpt
from dicom_bq.vocabulary import identifiers, naming

MAX_TABLE_URI = 2000
# gs:// + a bucket (222) + / + an object name (1024 bytes).
MAX_GCS_URI = 5 + 222 + 1 + 1024
# Matched with re.fullmatch: `$` would also match before a final newline.
_STORE = re.compile(
    r"projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/datasets/(?P<dataset>[^/]+)/dicomStores/(?P<store>[^/]+)"
)
_OPERATION = re.compile(
    r"projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/datasets/(?P<dataset>[^/]+)/operations/(?P<operation>[A-Za-z0-9_-]+)"
)
_TIMEOUT = re.compile(r"(?P<amount>[0-9]{1,9}(?:\.[0-9]{1,9})?)(?P<unit>s|m|h)?")
# The longest wait any duration option asks for: 30 days. An export of a very large store takes
# hours, never weeks; a bound keeps every deadline and date computed from it finite (a
# datetime.timedelta of 10**12 hours is an OverflowError).
MAX_DURATION_SECONDS = 30 * 24 * 3600


class WriteDisposition(StrEnum):
    WRITE_EMPTY = "WRITE_EMPTY"
    WRITE_TRUNCATE = "WRITE_TRUNCATE"
    WRITE_APPEND = "WRITE_APPEND"


def _fail(what: str, value: str, problem: str) -> DicomBqError:
    return DicomBqError(f"{what} {excerpt(value)} is not valid: {problem}")


@dataclass(frozen=True)
class StoreName:
    project: str
    location: str
    dataset: str
    store: str

    @classmethod
    def parse(cls, value: str, what: str = "--store") -> StoreName:
        example = "projects/P/locations/L/datasets/D/dicomStores/S"
        match = _STORE.fullmatch(value) if value == value.strip() else None
        if not match:
            raise _fail(what, value, f"give the full store name, {example}")
        store = cls(**match.groupdict())
        for problem in (
            identifiers.check_project_id(store.project),
            identifiers.check_location(store.location),
            identifiers.check_healthcare_id(store.dataset),
            identifiers.check_healthcare_id(store.store),
        ):
            if problem:
                raise _fail(what, value, problem)
        return store

    @property
    def name(self) -> str:
        return naming.dicom_store_name(self.project, self.location, self.dataset, self.store)

    @property
    def dataset_name(self) -> str:
        return naming.healthcare_dataset_name(self.project, self.location, self.dataset)


@dataclass(frozen=True)
class TableUri:
    project: str
    dataset: str
    table: str

    @classmethod
    def parse(cls, value: str, flag: str = "--table") -> TableUri:
        if value != value.strip():
            raise _fail(flag, value, "remove the spaces or line breaks around it")
        text = value
        if len(text) > MAX_TABLE_URI:
            raise _fail(flag, text, f"a table URI is at most {MAX_TABLE_URI} characters")
        if not text.startswith("bq://"):
            raise _fail(flag, value, "a BigQuery table is written bq://PROJECT.DATASET.TABLE")
        # A domain-scoped project ("example.com:proj") holds dots itself: the table and dataset
        # are the last two parts.
        parts = text[len("bq://") :].rsplit(".", 2)
        if len(parts) != 3 or not all(parts):
            raise _fail(flag, value, "a BigQuery table is written bq://PROJECT.DATASET.TABLE")
        uri = cls(*parts)
        for problem in (
            identifiers.check_project_id(uri.project),
            identifiers.check_bigquery_dataset_id(uri.dataset),
            identifiers.check_table_id(uri.table),
        ):
            if problem:
                raise _fail(flag, value, problem)
        return uri

    @property
    def uri(self) -> str:
        return naming.table_uri(self.project, self.dataset, self.table)

    @property
    def table_id(self) -> str:
        """The id google-cloud-bigquery takes: PROJECT.DATASET.TABLE."""
        return f"{self.project}.{self.dataset}.{self.table}"


@dataclass(frozen=True)
class GcsUri:
    bucket: str
    name: str

    @classmethod
    def parse(cls, value: str, flag: str = "--filter") -> GcsUri:
        text = value
        if len(text) > MAX_GCS_URI:
            raise _fail(flag, value, f"a gs:// URI is at most {MAX_GCS_URI} characters")
        if not text.startswith("gs://"):
            raise _fail(flag, value, "a Cloud Storage object is written gs://BUCKET/OBJECT")
        bucket, _, name = text[len("gs://") :].partition("/")
        problem = identifiers.check_bucket(bucket)
        if problem:
            raise _fail(flag, value, problem)
        if not name or name.endswith("/"):
            raise _fail(flag, value, "name the filter file itself, not a bucket or a folder")
        if value != value.strip():
            raise _fail(flag, value, "remove the spaces or line breaks around it")
        if len(name.encode("utf-8")) > 1024 or not all(ch.isprintable() for ch in name):
            raise _fail(flag, value, "an object name is at most 1024 bytes of printable characters")
        # Cloud Storage's naming guidelines advise against #, [, ], *, ? (gsutil and gcloud read
        # them as wildcards or fragments: https://cloud.google.com/storage/docs/objects#naming).
        if any(ch in name for ch in "*?[]#"):
            raise _fail(flag, value, "the filter is one object: no *, ?, [, ] or # in its name")
        if name in (".", "..") or name.startswith(".well-known/acme-challenge/"):
            raise _fail(flag, value, "Cloud Storage does not allow this object name")
        return cls(bucket, name)

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"


def parse_operation_name(value: str) -> str:
    match = _OPERATION.fullmatch(value) if value == value.strip() else None
    if not match:
        raise _fail(
            "operation",
            value,
            "give the full name printed by the export, "
            "projects/P/locations/L/datasets/D/operations/ID",
        )
    for problem in (
        identifiers.check_project_id(match.group("project")),
        identifiers.check_location(match.group("location")),
        identifiers.check_healthcare_id(match.group("dataset")),
    ):
        if problem:
            raise _fail("operation", value, problem)
    return value


def parse_timeout(value: str, flag: str = "--timeout") -> float:
    """'1800', '90s', '30m' or '2h', as seconds; must be positive."""
    match = _TIMEOUT.fullmatch(value) if value == value.strip() else None
    if not match:
        raise _fail(flag, value, "give seconds or a duration such as 90s, 30m or 2h")
    seconds = (
        float(match.group("amount")) * {"s": 1, "m": 60, "h": 3600, None: 1}[match.group("unit")]
    )
    if seconds <= 0:
        raise _fail(flag, value, "the timeout must be more than zero")
    if seconds > MAX_DURATION_SECONDS:
        raise _fail(flag, value, f"at most {MAX_DURATION_SECONDS // 3600}h (30 days) is allowed")
    return seconds


def parse_optional_timeout(value: str | None) -> float | None:
    """--timeout when given (parse_timeout), else None: no limit."""
    return parse_timeout(value) if value is not None else None


def parse_write_disposition(value: str) -> WriteDisposition:
    """WRITE_EMPTY or gcloud's write-empty spelling."""
    normalized = value.upper().replace("-", "_")
    try:
        return WriteDisposition(normalized)
    except ValueError:
        choices = ", ".join(d.value for d in WriteDisposition)
        raise _fail("--write-disposition", value, f"choose one of {choices}") from None
