"""Filter files and the analysis queries: `dicom-bq filter validate/build/upload` and `query`."""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from dicom_bq.clients.endpoints import Connection
from dicom_bq.clients.storage import ABSENT, StorageObjects, StoredObject
from dicom_bq.errors import EXIT_BAD_INPUT, EXIT_FAILED, DicomBqError
from dicom_bq.filters.filter_files import FilterReport
from dicom_bq.filters.queries import Query, TableColumns
from dicom_bq.flows.access import GoogleAccess
from dicom_bq.refs import GcsUri, TableUri

__all__ = [
    "BuildResult",
    "BuildSources",
    "FilterReport",
    "InvalidFilterFileError",
    "UploadResult",
    "build_filter",
    "dicomweb_paths_rows",
    "dropped_tags_rows",
    "filter_report",
    "latest_studies_rows",
    "upload_filter_file",
    "validated_filter",
]

# Resumable upload chunk: a multiple of 256 KiB, as Cloud Storage requires
# (https://cloud.google.com/storage/docs/performing-resumable-uploads#chunked-upload).
UPLOAD_CHUNK = 8 * 1024 * 1024
STREAM_BLOCK = 1 << 20


class InvalidFilterFileError(DicomBqError):
    """A filter file with errors; the report says which lines."""

    def __init__(self, report: FilterReport) -> None:
        super().__init__(
            f"{report.path}: {report.error_count} errors in the filter file",
            exit_code=EXIT_BAD_INPUT,
        )
        self.report = report


def filter_report(*, path: Path, strict: bool) -> FilterReport:
    from dicom_bq.filters.filter_files import validate_file

    if not path.is_file():
        raise DicomBqError(f"filter file {path} does not exist or is not a file")
    return validate_file(path, strict)


def validated_filter(*, path: Path, strict: bool) -> FilterReport:
    """The report of a filter file without errors; one with errors raises with its report."""
    report = filter_report(path=path, strict=strict)
    if not report.ok:
        raise InvalidFilterFileError(report)
    return report


@dataclass(frozen=True)
class UploadResult:
    lines: int
    size: int
    target: GcsUri
    generation: int | None  # of the object written
    replaced: int | None = None  # the generation --force replaced; None: there was none


def upload_filter_file(
    *, path: Path, destination: str, chunk_mib: int, replace: bool, access: GoogleAccess
) -> UploadResult:
    """Validate, then upload: create-only unless `replace` (--force), which replaces only the
    generation it read (clients/storage.py says how)."""
    target = GcsUri.parse(destination, "destination")
    if not 1 <= chunk_mib <= 1024:
        raise DicomBqError(f"--chunk-mib {chunk_mib} is not valid: use 1 to 1024")
    report = validated_filter(path=path, strict=False)
    objects = StorageObjects(access.connection(), target.bucket)
    # Without --force nothing is read first: the create-only write refuses an existing object by
    # itself, and needs only storage.objects.create (roles/storage.objectCreator).
    expected = _generation_to_replace(objects, target) if replace else ABSENT
    stored = _write(objects, str(path), target, chunk_mib * 1024 * 1024, expected, replace)
    return UploadResult(
        lines=report.lines,
        size=stored.size,
        target=target,
        generation=stored.generation,
        replaced=expected or None,
    )


def _object_exists(target: GcsUri) -> DicomBqError:
    """The words of files.OutputExistsError, for an object."""
    return DicomBqError(f"{target.uri} exists: pass --force to replace it, or name another object")


def _generation_to_replace(objects: StorageObjects, target: GcsUri) -> int:
    """--force: the generation there now, which the write then replaces and nothing else."""
    return objects.generation(target) or ABSENT


def _write(
    objects: StorageObjects,
    source: str,
    target: GcsUri,
    chunk_size: int,
    expected: int,
    replace: bool,
) -> StoredObject:
    from dicom_bq.clients.storage import GenerationMismatchError

    try:
        return objects.upload_file(source, target, chunk_size, if_generation_match=expected)
    except GenerationMismatchError:
        if not replace:
            raise _object_exists(target) from None
        found = f"generation {expected}" if expected else "no object"
        raise DicomBqError(
            f"{target.uri} changed while it was being replaced: this command found {found} "
            "there, and another writer has changed it since, so nothing was overwritten. Check "
            f"it with `gcloud storage ls -l {target.uri}`, then run the command again",
            exit_code=EXIT_FAILED,
        ) from None


@dataclass(frozen=True)
class BuildSources:
    """Where the paths come from: one of a CSV, a query, an exported table, or `stdin` (None
    when it is a terminal, which holds no paths)."""

    uids_csv: Path | None = None
    query: str | None = None
    table: str | None = None
    where: str | None = None
    stdin: BinaryIO | None = None


@dataclass(frozen=True)
class BuildResult:
    lines: int
    output: str | None
    generation: int | None = None  # of a gs:// output written
    replaced: int | None = None  # the generation of the gs:// output --force replaced


def _billing_project(connection: Connection, *, explicit: str | None, fallback: str) -> str:
    """Where a BigQuery job runs and is billed (Connection.billing_project), checked as a project
    ID whatever named it: a GOOGLE_CLOUD_PROJECT of "../../evil" or "dicom-bq-dev\n" would
    otherwise become part of the request's path (POST /projects/PROJECT/queries)."""
    import os

    from dicom_bq.clients.endpoints import PROJECT_VARIABLES
    from dicom_bq.texts import excerpt
    from dicom_bq.vocabulary import identifiers

    billing = connection.billing_project(explicit=explicit, fallback=fallback)
    if not billing or billing in (explicit, fallback):
        # --billing-project is checked by Connection, a table's project by TableUri.
        return billing
    named = [variable for variable in PROJECT_VARIABLES if os.environ.get(variable)]
    source = named[0] if named else "the project of your Google credentials"
    problem = identifiers.check_project_id(billing)
    if problem:
        raise DicomBqError(
            f"{source} {excerpt(billing)} is not a project ID, and BigQuery jobs would run in "
            f"it: {problem}; fix it, or pass --billing-project PROJECT_ID"
        )
    return billing


def _query_lines(
    sources: BuildSources, connection: Connection, billing_project: str | None
) -> Iterable[str]:
    from dicom_bq.clients.bigquery import BigQueryTables
    from dicom_bq.filters.queries import filter_paths

    if sources.table is not None:
        uri = TableUri.parse(sources.table)
        built = filter_paths(uri, sources.where)
        billing = _billing_project(connection, explicit=billing_project, fallback=uri.project)
    else:
        built = Query(str(sources.query))
        billing = _billing_project(connection, explicit=billing_project, fallback="")
        if not billing:
            raise DicomBqError(
                "--query needs --billing-project PROJECT_ID, the project billed for it "
                "(or credentials whose project is known: GOOGLE_CLOUD_PROJECT)"
            )
    rows = BigQueryTables(connection, billing).run(built)
    return (str(next(iter(row.values()))) for row in rows)


def build_filter(
    *,
    sources: BuildSources,
    normalize: bool,
    output: str | None,
    replace: bool,
    stdout: BinaryIO,
    access: GoogleAccess,
) -> BuildResult:
    """Build a filter file from UIDs; write it to `output` (a file or gs://) or to `stdout`."""
    from dicom_bq.filters import filter_files as filters

    chosen = [sources.uids_csv is not None, sources.query is not None, sources.table is not None]
    if sum(chosen) > 1:
        raise DicomBqError("give one source: --uids-csv, --query, --table, or paths on stdin")
    if sources.where and sources.table is None:
        raise DicomBqError("--where goes with --table")
    target = (
        GcsUri.parse(output, "--output")
        if output is not None and output.startswith("gs://")
        else None
    )
    if output is not None and target is None:
        from dicom_bq.files import check_output

        # Before any query runs: a build that cannot be written costs nothing.
        check_output(Path(output), replace=replace)
    connection = access.connection()
    if not any(chosen) and sources.stdin is None:
        raise DicomBqError(
            "give a source: --uids-csv FILE, --query SQL, --table URI, or paths on stdin"
        )
    if sources.uids_csv is not None and not sources.uids_csv.is_file():
        raise DicomBqError(f"--uids-csv {sources.uids_csv} does not exist or is not a file")
    # The same for a gs:// output, which only a request can tell.
    expected = (
        _writable_object(connection, target, replace=replace) if target is not None else ABSENT
    )
    try:
        count, stored = _build(
            sources=sources,
            normalize=normalize,
            output=output,
            target=target,
            replace=replace,
            expected=expected,
            stdout=stdout,
            connection=connection,
            billing_project=access.billing_project,
        )
    except filters.BuildError as error:
        raise DicomBqError(str(error)) from None
    return BuildResult(
        lines=count,
        output=output,
        generation=stored.generation if stored is not None else None,
        replaced=expected or None,
    )


def _writable_object(connection: Connection, target: GcsUri, *, replace: bool) -> int:
    """The generation a gs:// output may replace, read before the build: with --force the one
    there now; without, ABSENT, and an object already there is refused now rather than
    by the write's precondition after the work. Without storage.objects.get (a creator-only
    role) the early look is skipped: the create-only write still refuses."""
    from dicom_bq.clients.storage import ObjectUnreadableError

    objects = StorageObjects(connection, target.bucket)
    if replace:
        return _generation_to_replace(objects, target)
    try:
        if objects.generation(target) is not None:
            raise _object_exists(target)
    except ObjectUnreadableError:
        pass
    return ABSENT


def _build(
    *,
    sources: BuildSources,
    normalize: bool,
    output: str | None,
    target: GcsUri | None,
    replace: bool,
    expected: int,
    stdout: BinaryIO,
    connection: Connection,
    billing_project: str | None,
) -> tuple[int, StoredObject | None]:
    """The number of lines built, and the gs:// object written (None for a file or stdout)."""
    from dicom_bq.filters import filter_files as filters

    csv_lines: Iterable[str] | None = None
    source = ""
    stored: StoredObject | None = None
    spill_to: Callable[[Path], object]
    if sources.uids_csv is not None:
        csv_lines = filters.lines_from_csv(sources.uids_csv.open(encoding="utf-8-sig", newline=""))
    elif sources.query is not None or sources.table is not None:
        query_lines = _query_lines(sources, connection, billing_project)
        source = "query result"
        spill_to = functools.partial(filters.write_lines, query_lines)
    elif sources.stdin is not None:  # build_filter made sure there is a source
        source = "stdin"
        spill_to = functools.partial(_copy_stream, sources.stdin)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(output) if output and target is None else Path(folder) / "filter.txt"
        # The temporary file of a gs:// output is this run's own.
        local_replace = replace or path.parent == Path(folder)
        if csv_lines is not None:
            count = filters.build_file(csv_lines, path, normalize, replace=local_replace)
        else:
            spill = Path(folder) / "spill.txt"
            spill_to(spill)
            count = filters.build_from_spill(spill, path, normalize, source, replace=local_replace)
        if target is not None:
            objects = StorageObjects(connection, target.bucket)
            stored = _write(objects, str(path), target, UPLOAD_CHUNK, expected, replace)
        elif output is None:
            with path.open("rb") as finished:  # streamed: the file may be large
                shutil.copyfileobj(finished, stdout, STREAM_BLOCK)
            stdout.flush()
    return count, stored


def _copy_stream(stream: BinaryIO, path: Path) -> None:
    from dicom_bq.files import disk_full_names

    with disk_full_names(path), path.open("wb") as out:
        shutil.copyfileobj(stream, out, STREAM_BLOCK)


QueryRows = list[dict[str, str | None]]


def _query_table(
    *, table: str, access: GoogleAccess, build: Callable[[TableColumns], Query]
) -> QueryRows:
    from dicom_bq.clients.bigquery import BigQueryTables

    uri = TableUri.parse(table)
    connection = access.connection()
    billing = _billing_project(connection, explicit=access.billing_project, fallback=uri.project)
    tables = BigQueryTables(connection, billing)
    # The table's own schema says how it was exported (nested, flattened, JSON).
    columns = TableColumns.from_schema(uri, tables.table_fields(uri))
    # BigQuery's JSON export prints every value as a string; so do these rows, like the how-to.
    return [
        {key: None if value is None else str(value) for key, value in row.items()}
        for row in tables.run(build(columns))
    ]


def dicomweb_paths_rows(*, table: str, patient_id: str, access: GoogleAccess) -> QueryRows:
    from dicom_bq.filters.queries import dicomweb_paths

    return _query_table(table=table, access=access, build=lambda c: dicomweb_paths(c, patient_id))


def latest_studies_rows(*, table: str, limit: int, access: GoogleAccess) -> QueryRows:
    from dicom_bq.filters.queries import latest_studies

    return _query_table(table=table, access=access, build=lambda c: latest_studies(c, limit))


def dropped_tags_rows(*, table: str, access: GoogleAccess) -> QueryRows:
    from dicom_bq.filters.queries import dropped_tags

    return _query_table(table=table, access=access, build=dropped_tags)
