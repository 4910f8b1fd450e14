"""gcloud's spellings of what `dicom-bq export` and `operations` take, beside the native ones.

`gcloud healthcare dicom-stores export bq DICOM_STORE --dataset --location [--project]
--bq-table [--async] [--overwrite-table] [--write-disposition] [--filter-config-gcs-uri]`
(https://cloud.google.com/sdk/gcloud/reference/healthcare/dicom-stores/export/bq, and the beta
page for --filter-config-gcs-uri: https://cloud.google.com/sdk/gcloud/reference/beta/healthcare/
dicom-stores/export/bq) and `gcloud healthcare operations describe OPERATION --dataset
--location` (https://cloud.google.com/sdk/gcloud/reference/healthcare/operations/describe):
the positional is an ID, or a fully qualified name. gcloud falls back on its core/project and
healthcare/location properties; dicom-bq reads no gcloud configuration, so an ID needs all three
flags. Two spellings of one thing are refused (exit 2) before any request: the API takes one.
"""

from __future__ import annotations

from dicom_bq.clients.healthcare import parse_export_schema
from dicom_bq.errors import DicomBqError
from dicom_bq.refs import (
    GcsUri,
    StoreName,
    TableUri,
    WriteDisposition,
    parse_operation_name,
    parse_write_disposition,
)
from dicom_bq.texts import excerpt
from dicom_bq.vocabulary import identifiers

__all__ = [
    "billing_project",
    "export_disposition",
    "export_filter",
    "export_store",
    "export_table",
    "export_waits",
    "operation_name",
    "parse_export_schema",  # --schema, parsed where the request is built
]

GCLOUD_PARENT_FLAGS = "--dataset, --location and --project"


def _parent(
    *, what: str, given: str, dataset: str | None, location: str | None, project: str | None
) -> str:
    """projects/P/locations/L/datasets/D for an ID, each part checked under its flag's name."""
    if dataset is None or location is None or project is None:
        missing = [
            flag
            for flag, value in (
                ("--dataset", dataset),
                ("--location", location),
                ("--project", project),
            )
            if value is None
        ]
        raise DicomBqError(
            f"{what} {excerpt(given)} is an ID: give {GCLOUD_PARENT_FLAGS} with it (missing "
            f"{', '.join(missing)}; dicom-bq reads no gcloud configuration), or the full name"
        )
    for flag, value, problem in (
        ("--project", project, identifiers.check_project_id(project)),
        ("--location", location, identifiers.check_location(location)),
        ("--dataset", dataset, identifiers.check_healthcare_id(dataset)),
    ):
        if problem:
            raise DicomBqError(f"{flag} {excerpt(value)} is not valid: {problem}")
    return f"projects/{project}/locations/{location}/datasets/{dataset}"


def _refuse_parent_flags(
    *, what: str, dataset: str | None, location: str | None, project: str | None
) -> None:
    given = [
        flag
        for flag, value in (
            ("--dataset", dataset),
            ("--location", location),
            ("--project", project),
        )
        if value is not None
    ]
    if given:
        raise DicomBqError(
            f"{what} is a full name, which already says {GCLOUD_PARENT_FLAGS}: drop "
            f"{', '.join(given)}, or give the ID alone"
        )


def export_store(
    *,
    store_option: str | None,
    store_argument: str | None,
    dataset: str | None,
    location: str | None,
    project: str | None,
) -> StoreName:
    """--store NAME, or gcloud's DICOM_STORE (an ID with its parent flags, or a full name)."""
    if store_option is not None and store_argument is not None:
        raise DicomBqError(
            "the store is given twice: --store and the DICOM_STORE argument; keep one"
        )
    if store_option is None and store_argument is None:
        raise DicomBqError(
            "say which store: --store projects/P/locations/L/datasets/D/dicomStores/S, or "
            f"gcloud's DICOM_STORE argument (an ID, with {GCLOUD_PARENT_FLAGS})"
        )
    if store_option is not None:
        if (dataset, location, project) != (None, None, None):
            raise DicomBqError(
                "--store takes the full name projects/P/locations/L/datasets/D/dicomStores/ID; "
                f"with {GCLOUD_PARENT_FLAGS} give the ID as the positional DICOM_STORE argument "
                "(gcloud's form)"
            )
        return StoreName.parse(store_option)
    assert store_argument is not None
    if "/" in store_argument:
        _refuse_parent_flags(
            what="DICOM_STORE", dataset=dataset, location=location, project=project
        )
        return StoreName.parse(store_argument, "DICOM_STORE")
    problem = identifiers.check_healthcare_id(store_argument)
    if problem:
        raise DicomBqError(f"DICOM_STORE {excerpt(store_argument)} is not valid: {problem}")
    parent = _parent(
        what="DICOM_STORE",
        given=store_argument,
        dataset=dataset,
        location=location,
        project=project,
    )
    return StoreName.parse(f"{parent}/dicomStores/{store_argument}")


def export_table(*, table: str | None, bq_table: str | None) -> TableUri:
    """--table, or gcloud's --bq-table (the same bq://PROJECT.DATASET.TABLE URI)."""
    if table is not None and bq_table is not None:
        raise DicomBqError("the table is given twice: --table and --bq-table; keep one")
    if table is not None:
        return TableUri.parse(table)
    if bq_table is not None:
        return TableUri.parse(bq_table, "--bq-table")
    raise DicomBqError("say where to export: --table bq://PROJECT.DATASET.TABLE (or --bq-table)")


def export_disposition(
    *, write_disposition: str | None, force: bool | None, overwrite_table: bool
) -> tuple[WriteDisposition | None, bool | None]:
    """The one of writeDisposition or force the request carries. gcloud's --overwrite-table is
    WRITE_TRUNCATE, so it goes through the same truncate confirmation (--yes)."""
    if force is not None and write_disposition is not None:
        raise DicomBqError(
            "--force/--no-force and --write-disposition say the same thing twice and the API "
            "takes only one: keep --write-disposition (--force is WRITE_TRUNCATE, --no-force "
            "WRITE_EMPTY)"
        )
    if overwrite_table and (write_disposition is not None or force is not None):
        other = "--write-disposition" if write_disposition is not None else "--force/--no-force"
        raise DicomBqError(
            f"--overwrite-table and {other} both say how to write the table: keep one "
            "(--overwrite-table is WRITE_TRUNCATE)"
        )
    if overwrite_table:
        return WriteDisposition.WRITE_TRUNCATE, None
    disposition = (
        parse_write_disposition(write_disposition) if write_disposition is not None else None
    )
    return disposition, force


def export_filter(
    *, filter_uri: str | None, filter_config_gcs_uri: str | None, local_file: bool
) -> GcsUri | None:
    """--filter, or gcloud's --filter-config-gcs-uri (a gs:// filter file)."""
    if filter_uri is not None and filter_config_gcs_uri is not None:
        raise DicomBqError(
            "the filter is given twice: --filter and --filter-config-gcs-uri; keep one"
        )
    if filter_config_gcs_uri is not None and local_file:
        raise DicomBqError("give --filter-config-gcs-uri gs://... or --filter-file FILE, not both")
    if filter_config_gcs_uri is not None:
        return GcsUri.parse(filter_config_gcs_uri, "--filter-config-gcs-uri")
    return GcsUri.parse(filter_uri) if filter_uri is not None else None


def export_waits(*, no_wait: bool, run_async: bool, timeout_given: bool) -> bool:
    """Whether to follow the operation: gcloud's --async is --no-wait; a timeout needs a wait."""
    if run_async and no_wait:
        raise DicomBqError("--async and --no-wait say the same thing twice: keep one")
    if (run_async or no_wait) and timeout_given:
        flag = "--async" if run_async else "--no-wait"
        raise DicomBqError(
            f"{flag} does not wait, so --timeout has nothing to limit: drop one of them"
        )
    return not (run_async or no_wait)


def operation_name(
    *, operation: str, dataset: str | None, location: str | None, project: str | None
) -> str:
    """The full operation name, or gcloud's OPERATION ID with its parent flags."""
    if operation == operation.strip() and "/" not in operation and operation:
        if not all(ch.isalnum() or ch in "_-" for ch in operation):
            raise DicomBqError(
                f"operation {excerpt(operation)} is not valid: an operation ID is letters, "
                "digits, - and _"
            )
        parent = _parent(
            what="operation",
            given=operation,
            dataset=dataset,
            location=location,
            project=project,
        )
        return parse_operation_name(f"{parent}/operations/{operation}")
    if (dataset, location, project) != (None, None, None):
        _refuse_parent_flags(
            what="the operation", dataset=dataset, location=location, project=project
        )
    return parse_operation_name(operation)


def billing_project(*, billing_project: str | None, project: str | None) -> str | None:
    """`filter build`'s --billing-project, or its gcloud-like alias --project: one project."""
    if billing_project is not None and project is not None and billing_project != project:
        raise DicomBqError(
            f"--billing-project {excerpt(billing_project)} and --project {excerpt(project)} "
            "name the same setting (the project the BigQuery job runs in and is billed to): "
            "keep one"
        )
    return billing_project if billing_project is not None else project
