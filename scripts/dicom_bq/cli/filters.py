"""Filter files and the analysis queries: filter validate/build/upload, query ..."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dicom_bq.cli.common import (
    JsonOption,
    _connection,
    app,
    fail,
    guarded,
    print_json,
)
from dicom_bq.errors import DicomBqError

filter_app = typer.Typer(
    help="Export filter files: validate, build, upload.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(filter_app, name="filter")


def _print_report(report: Any, as_json: bool) -> None:
    if as_json:
        print_json(report.as_dict())
        return
    for problem in report.errors:
        typer.echo(
            f"{report.path}:{problem.line}: error: {problem.reason}: {problem.text}", err=True
        )
    if report.error_count > len(report.errors):
        typer.echo(f"... and {report.error_count - len(report.errors)} more errors", err=True)
    for problem in report.warnings:
        typer.echo(f"{report.path}:{problem.line}: warning: {problem.reason}", err=True)
    if report.warning_count > len(report.warnings):
        typer.echo(f"... and {report.warning_count - len(report.warnings)} more warnings", err=True)
    mixed = 0 < report.crlf_lines < report.lines
    typer.echo(
        f"{report.path}: {report.lines} lines, {report.error_count} errors, "
        f"{report.warning_count} warnings" + (" (mixed \\n and \\r\\n endings)" if mixed else "")
    )


def _validated(path: Path, strict: bool, as_json: bool) -> Any:
    from dicom_bq.filters.filter_files import validate_file

    if not path.is_file():
        raise DicomBqError(f"filter file {path} does not exist or is not a file")
    report = validate_file(path, strict)
    if not report.ok:
        _print_report(report, as_json)
        raise typer.Exit(2)
    return report


@filter_app.command("validate")
@guarded
def filter_validate(
    path: Annotated[Path, typer.Argument(help="The filter file.")],
    strict: Annotated[
        bool, typer.Option("--strict", help="Leading zeros and UIDs over 64 characters are errors.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Check every line is /studies/UID[/series/UID[/instances/UID]]; exit 2 on any error."""
    try:
        report = _validated(path, strict, as_json)
    except DicomBqError as error:
        fail(error)
    _print_report(report, as_json)


@filter_app.command("build")
@guarded
def filter_build(
    uids_csv: Annotated[
        Path | None,
        typer.Option(
            "--uids-csv", help="CSV: StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID."
        ),
    ] = None,
    query: Annotated[
        str | None, typer.Option("--query", help="SQL whose first column is a path.")
    ] = None,
    table: Annotated[
        str | None, typer.Option("--table", help="An exported table, bq://P.D.T.")
    ] = None,
    where: Annotated[
        str | None, typer.Option("--where", help="With --table: an SQL condition.")
    ] = None,
    project: Annotated[
        str | None, typer.Option("--project", help="Project billed for --query.")
    ] = None,
    normalize: Annotated[
        bool, typer.Option("--normalize", help="Drop duplicates and lines a broader line covers.")
    ] = False,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="A file or gs://BUCKET/OBJECT (default stdout)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing -o file (written atomically).")
    ] = False,
) -> None:
    """Build a filter file from UIDs (CSV, BigQuery, or paths on stdin)."""
    import shutil
    import tempfile

    try:
        from dicom_bq import refs
        from dicom_bq.filters import filter_files as filters

        sources = [uids_csv is not None, query is not None, table is not None]
        if sum(sources) > 1:
            raise DicomBqError("give one source: --uids-csv, --query, --table, or paths on stdin")
        if where and table is None:
            raise DicomBqError("--where goes with --table")
        target = (
            refs.GcsUri.parse(output, "--output")
            if output is not None and output.startswith("gs://")
            else None
        )
        if output is not None and target is None:
            from dicom_bq.files import check_output

            # Before any query runs: a build that cannot be written costs nothing.
            check_output(Path(output), replace=force)
        lines: Any
        source: str | None
        if uids_csv is not None:
            if not uids_csv.is_file():
                raise DicomBqError(f"--uids-csv {uids_csv} does not exist or is not a file")
            lines = filters.lines_from_csv(uids_csv.open(encoding="utf-8-sig", newline=""))
            source = None
        elif query is not None or table is not None:
            from dicom_bq.clients.bigquery import BigQueryTables
            from dicom_bq.filters.queries import Query, filter_paths
            from dicom_bq.infra import identifiers

            if table is not None:
                uri = refs.TableUri.parse(table)
                built, billing = filter_paths(uri, where), project or uri.project
            else:
                if not project or identifiers.check_project_id(project):
                    raise DicomBqError(
                        "--query needs --project PROJECT_ID, the project billed for it"
                    )
                built, billing = Query(str(query)), project
            rows = BigQueryTables(_connection(None, None), billing).run(built)
            lines = (str(next(iter(row.values()))) for row in rows)
            source = "query result"
        else:
            if sys.stdin.isatty():
                raise DicomBqError(
                    "give a source: --uids-csv FILE, --query SQL, --table URI, or paths on stdin"
                )
            lines = sys.stdin.buffer
            source = "stdin"
        with tempfile.TemporaryDirectory() as folder:
            path = Path(output) if output and target is None else Path(folder) / "filter.txt"
            replace = force or path.parent == Path(folder)
            if source is None:
                count = filters.build_file(lines, path, normalize, replace=replace)
            else:
                spill = Path(folder) / "spill.txt"
                if source == "stdin":
                    with spill.open("wb") as out:
                        shutil.copyfileobj(lines, out, 1 << 20)
                else:
                    filters.write_lines(lines, spill)
                count = filters.build_from_spill(spill, path, normalize, source, replace=replace)
            if target is not None:
                from dicom_bq.clients.storage import StorageObjects

                StorageObjects(_connection(None, None), target.bucket).upload_file(
                    str(path), target, UPLOAD_CHUNK
                )
            elif output is None:
                with path.open("rb") as finished:  # streamed: the file may be large
                    shutil.copyfileobj(finished, sys.stdout.buffer, 1 << 20)
                sys.stdout.flush()
    except filters.BuildError as error:
        fail(DicomBqError(str(error)))
    except DicomBqError as error:
        fail(error)
    typer.echo(f"{count} lines" + (f" written to {output}" if output else ""), err=True)


UPLOAD_CHUNK = 8 * 1024 * 1024


@filter_app.command("upload")
@guarded
def filter_upload(
    path: Annotated[Path, typer.Argument(help="The filter file.")],
    destination: Annotated[str, typer.Argument(help="gs://BUCKET/OBJECT")],
    chunk_mib: Annotated[int, typer.Option("--chunk-mib", help="Resumable upload chunk size.")] = 8,
) -> None:
    """Validate a filter file, then upload it (resumable) to Cloud Storage."""
    try:
        from dicom_bq import refs
        from dicom_bq.clients.storage import StorageObjects

        target = refs.GcsUri.parse(destination, "destination")
        if not 1 <= chunk_mib <= 1024:
            raise DicomBqError(f"--chunk-mib {chunk_mib} is not valid: use 1 to 1024")
        report = _validated(path, False, False)
        size = StorageObjects(_connection(None, None), target.bucket).upload_file(
            str(path), target, chunk_mib * 1024 * 1024
        )
    except DicomBqError as error:
        fail(error)
    typer.echo(f"uploaded {report.lines} lines ({size} bytes) to {target.uri}")


query_app = typer.Typer(
    help="The how-to's analysis queries on an exported table.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(query_app, name="query")
TableOption = Annotated[str, typer.Option("--table", help="The exported table, bq://P.D.T.")]


def _run_query(table: str, build: Any, as_json: bool) -> None:
    try:
        from dicom_bq.clients.bigquery import BigQueryTables
        from dicom_bq.refs import TableUri

        uri = TableUri.parse(table)
        rows = list(BigQueryTables(_connection(None, None), uri.project).run(build(uri)))
    except DicomBqError as error:
        fail(error)
    # BigQuery's JSON export prints every value as a string; so does --json, like the how-to.
    rows = [{k: None if v is None else str(v) for k, v in row.items()} for row in rows]
    if as_json:
        print_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    view = Table(show_lines=False)
    for column in rows[0].keys() if rows else ["(no rows)"]:
        view.add_column(column, overflow="fold")
    for row in rows:
        view.add_row(*(value or "" for value in row.values()))
    Console().print(view)


@query_app.command("dicomweb-paths")
@guarded
def query_dicomweb_paths(
    patient_id: Annotated[str, typer.Option("--patient-id", help="PatientID to look up.")],
    table: TableOption,
    as_json: JsonOption = False,
) -> None:
    """The DICOMweb paths of one patient's instances."""
    from dicom_bq.filters.queries import dicomweb_paths

    _run_query(table, lambda uri: dicomweb_paths(uri, patient_id), as_json)


@query_app.command("latest-studies")
@guarded
def query_latest_studies(
    table: TableOption,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000, help="How many studies.")] = 10,
    as_json: JsonOption = False,
) -> None:
    """The latest studies with their patient and instance count, for a reading worklist."""
    from dicom_bq.filters.queries import latest_studies

    _run_query(table, lambda uri: latest_studies(uri, limit), as_json)


@query_app.command("dropped-tags")
@guarded
def query_dropped_tags(table: TableOption, as_json: JsonOption = False) -> None:
    """The tags the export could not hold (DroppedTags), with how many instances had each."""
    from dicom_bq.filters.queries import dropped_tags

    _run_query(table, dropped_tags, as_json)
