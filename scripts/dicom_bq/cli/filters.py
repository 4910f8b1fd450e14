"""Filter files and the analysis queries: filter validate/build/upload, query ..."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dicom_bq.cli.common import (
    BillingProjectOption,
    ImpersonateOption,
    JsonOption,
    UniverseOption,
    app,
    guarded,
    option_groups,
    print_filter_report,
    print_json,
)
from dicom_bq.errors import EXIT_BAD_INPUT

if TYPE_CHECKING:
    from dicom_bq.flows.access import GoogleAccess
    from dicom_bq.flows.filters import BuildResult, UploadResult

filter_app = typer.Typer(
    help="Export filter files: validate, build, upload.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(filter_app, name="filter")


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
    from dicom_bq.flows.filters import filter_report

    report = filter_report(path=path, strict=strict)
    print_filter_report(report, as_json)
    if not report.ok:
        raise typer.Exit(EXIT_BAD_INPUT)


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
    billing_project: BillingProjectOption = None,
    project: Annotated[
        str | None, typer.Option("--project", help="Another spelling of --billing-project.")
    ] = None,
    normalize: Annotated[
        bool, typer.Option("--normalize", help="Drop duplicates and lines a broader line covers.")
    ] = False,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="A file or gs://BUCKET/OBJECT (default stdout)."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace an existing -o file (written atomically) or gs:// object (only the "
            "generation found before the build: a concurrent write is refused, not overwritten).",
        ),
    ] = False,
    impersonate: ImpersonateOption = None,
    universe_domain: UniverseOption = None,
) -> None:
    """Build a filter file from UIDs (CSV, BigQuery, or paths on stdin)."""
    from dicom_bq import spellings
    from dicom_bq.flows.access import GoogleAccess
    from dicom_bq.flows.filters import BuildSources, build_filter

    result = build_filter(
        sources=BuildSources(
            uids_csv=uids_csv,
            query=query,
            table=table,
            where=where,
            # A terminal holds no paths: only piped input is read.
            stdin=None if sys.stdin.isatty() else sys.stdin.buffer,
        ),
        normalize=normalize,
        output=output,
        replace=force,
        stdout=sys.stdout.buffer,
        access=GoogleAccess(
            impersonate=impersonate,
            universe_domain=universe_domain,
            billing_project=spellings.billing_project(
                billing_project=billing_project, project=project
            ),
        ),
    )
    written = f" written to {result.output}" if result.output else ""
    typer.echo(f"{result.lines} lines{written}{_generations(result)}", err=True)


@filter_app.command("upload")
@guarded
def filter_upload(
    path: Annotated[Path, typer.Argument(help="The filter file.")],
    destination: Annotated[str, typer.Argument(help="gs://BUCKET/OBJECT")],
    chunk_mib: Annotated[int, typer.Option("--chunk-mib", help="Resumable upload chunk size.")] = 8,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace an existing object (only the generation found first: a concurrent "
            "write is refused, not overwritten).",
        ),
    ] = False,
    impersonate: ImpersonateOption = None,
    universe_domain: UniverseOption = None,
) -> None:
    """Validate a filter file, then upload it (resumable) to Cloud Storage; an existing object
    is kept unless --force."""
    from dicom_bq.flows.access import GoogleAccess
    from dicom_bq.flows.filters import upload_filter_file

    result = upload_filter_file(
        path=path,
        destination=destination,
        chunk_mib=chunk_mib,
        replace=force,
        access=GoogleAccess(impersonate=impersonate, universe_domain=universe_domain),
    )
    typer.echo(
        f"uploaded {result.lines} lines ({result.size} bytes) to {result.target.uri}"
        + _generations(result)
    )


def _generations(result: BuildResult | UploadResult) -> str:
    """(generation N, replaced generation M)" for an object written, or nothing."""
    if result.generation is None:
        return ""
    replaced = f", replaced generation {result.replaced}" if result.replaced else ""
    return f" (generation {result.generation}{replaced})"


query_app = typer.Typer(
    help="The how-to's analysis queries on an exported table.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(query_app, name="query")
TableOption = Annotated[str, typer.Option("--table", help="The exported table, bq://P.D.T.")]
RowsJsonOption = Annotated[
    bool, typer.Option("--json", help="Print the rows on stdout as a JSON list of objects.")
]


@dataclass(frozen=True, kw_only=True)
class QueryOptions:
    """The options every `query` command takes: the exported table, how to reach BigQuery, and
    how to print the rows."""

    table: TableOption
    billing_project: BillingProjectOption = None
    impersonate: ImpersonateOption = None
    universe_domain: UniverseOption = None
    as_json: RowsJsonOption = False

    def access(self) -> GoogleAccess:
        from dicom_bq.flows.access import GoogleAccess

        return GoogleAccess(
            impersonate=self.impersonate,
            universe_domain=self.universe_domain,
            billing_project=self.billing_project,
        )


def _print_rows(rows: list[dict[str, str | None]], as_json: bool) -> None:
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
@option_groups
def query_dicomweb_paths(
    patient_id: Annotated[str, typer.Option("--patient-id", help="PatientID to look up.")],
    query: QueryOptions,
) -> None:
    """The DICOMweb paths of one patient's instances."""
    from dicom_bq.flows.filters import dicomweb_paths_rows

    rows = dicomweb_paths_rows(table=query.table, patient_id=patient_id, access=query.access())
    _print_rows(rows, query.as_json)


@query_app.command("latest-studies")
@guarded
@option_groups
def query_latest_studies(
    query: QueryOptions,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000, help="How many studies.")] = 10,
) -> None:
    """The latest studies with their patient and instance count, for a reading worklist."""
    from dicom_bq.flows.filters import latest_studies_rows

    rows = latest_studies_rows(table=query.table, limit=limit, access=query.access())
    _print_rows(rows, query.as_json)


@query_app.command("dropped-tags")
@guarded
@option_groups
def query_dropped_tags(query: QueryOptions) -> None:
    """The tags the export could not hold (DroppedTags), with how many instances had each."""
    from dicom_bq.flows.filters import dropped_tags_rows

    _print_rows(dropped_tags_rows(table=query.table, access=query.access()), query.as_json)
