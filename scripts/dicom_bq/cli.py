"""The `dicom-bq` command line: parses arguments and prints; the work lives in other modules.

Heavy modules (Pulumi, Google clients) are imported inside the commands that need them, so
`dicom-bq --help` starts quickly.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from dicom_bq.errors import DicomBqError

app = typer.Typer(
    name="dicom-bq",
    help="Provision and verify the Cloud Healthcare API DICOM-to-BigQuery export path.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help: rich's help renderer pulls in a Markdown parser and doubles start-up time.
    rich_markup_mode=None,
)


class PlanFormat(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"


def _print_version(value: bool) -> None:
    if value:
        from dicom_bq import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Provision and verify the Cloud Healthcare API DICOM-to-BigQuery export path."""


def fail(error: DicomBqError) -> NoReturn:
    from dicom_bq.texts import without_capabilities

    typer.echo(f"Error: {without_capabilities(error.message)}", err=True)
    raise typer.Exit(error.exit_code)


def _known_failure(error: BaseException) -> DicomBqError | None:
    """Failures from below the domain modules that a user can act on, as a message."""
    from dicom_bq.errors import EXIT_BAD_INPUT, EXIT_FAILED

    module = type(error).__module__
    name = type(error).__name__
    if module.startswith("google.auth") and name in ("RefreshError", "ReauthFailError"):
        return DicomBqError(
            "your Google credentials are expired or revoked: run `gcloud auth "
            "application-default login` (or renew the key in GOOGLE_APPLICATION_CREDENTIALS), "
            "then try again",
            exit_code=EXIT_FAILED,
        )
    if module.startswith("google.auth") and name == "DefaultCredentialsError":
        return DicomBqError(
            "no Google credentials found: run `gcloud auth application-default login` (or set "
            "GOOGLE_APPLICATION_CREDENTIALS), then try again",
            exit_code=EXIT_FAILED,
        )
    if module.startswith(
        (
            "google.auth",
            "google.api_core",
            "google.cloud",
            "google.resumable_media",
            "googleapiclient",
            "dicom_bq",
        )
    ):
        return DicomBqError(f"Google refused or could not be reached: {error}", EXIT_FAILED)
    if isinstance(error, UnicodeError):
        return DicomBqError(
            f"the input is not UTF-8 text ({name}): convert it to UTF-8", EXIT_BAD_INPUT
        )
    if isinstance(error, OSError):
        where = f" {error.filename}" if error.filename else ""
        return DicomBqError(f"cannot use{where}: {error.strerror or error}", EXIT_BAD_INPUT)
    return None


def guarded(command: Callable[..., None]) -> Callable[..., None]:
    """The one error boundary of every command: a failure the user can act on becomes a short
    message on stderr and an exit code, never a traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        from dicom_bq.errors import EXIT_INTERRUPTED

        try:
            command(*args, **kwargs)
        except DicomBqError as error:
            fail(error)
        except KeyboardInterrupt:
            typer.echo("Interrupted.", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as error:
            known = _known_failure(error)
            if known is None:
                raise
            fail(known)

    return run


def print_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, sort_keys=False, default=str))


ProjectDirOption = Annotated[
    Path | None,
    typer.Option(
        "--project-dir",
        help="Folder with Pulumi.yaml (default: the nearest one above the current folder).",
    ),
]


@app.command()
@guarded
def plan(
    stack: Annotated[
        str, typer.Option("--stack", "-s", help="Stack name, as in Pulumi.<stack>.yaml.")
    ],
    output_format: Annotated[
        PlanFormat, typer.Option("--format", "-f", help="table, json or markdown.")
    ] = PlanFormat.table,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Run the policy rules on the plan; exit 1 on a mandatory one."
        ),
    ] = False,
    project_dir: ProjectDirOption = None,
) -> None:
    """Show, offline, every resource and grant the stack would create. No credentials needed."""
    try:
        from dicom_bq.planner import plan_stack
        from dicom_bq.stackfiles import find_project_dir, read_stack_config

        folder = project_dir or find_project_dir()
        result = plan_stack(read_stack_config(folder, stack))
    except DicomBqError as error:
        fail(error)
    for note in result.notes:
        typer.echo(f"Note: {note}", err=True)
    findings: list[Any] = []
    if check:
        from dicom_bq.checks import check_plan

        assert result.settings is not None
        findings = check_plan(result, result.settings)
    if output_format is PlanFormat.json:
        document = result.as_dict()
        if check:
            document["findings"] = [f.as_dict() for f in findings]
        print_json(document)
    elif output_format is PlanFormat.markdown:
        from dicom_bq.render import findings_markdown, markdown

        typer.echo(markdown(result), nl=False)
        if check:
            typer.echo("\n" + findings_markdown(findings), nl=False)
    else:
        from rich.console import Console

        from dicom_bq.render import print_findings, print_table

        console = Console(width=200 if not sys.stdout.isatty() else None)
        print_table(result, console)
        if check:
            print_findings(findings, console)
    if any(f.enforcement == "mandatory" for f in findings):
        raise typer.Exit(1)


class ReviewFormat(StrEnum):
    markdown = "markdown"
    json = "json"


@app.command()
@guarded
def review(
    stack: Annotated[
        str, typer.Option("--stack", "-s", help="Stack name, as in Pulumi.<stack>.yaml.")
    ],
    output_format: Annotated[
        ReviewFormat, typer.Option("--format", "-f", help="markdown or json.")
    ] = ReviewFormat.markdown,
    online: Annotated[
        bool, typer.Option("--online", help="Read role permissions from the IAM API.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing -o file.")] = False,
    project_dir: ProjectDirOption = None,
) -> None:
    """A review document: every grant, why, its permissions, and the policy results."""
    try:
        from dicom_bq.files import check_output

        if output is not None:
            check_output(output, replace=force)
        from dicom_bq import roles
        from dicom_bq.checks import check_plan
        from dicom_bq.planner import plan_stack
        from dicom_bq.review import review_document, review_markdown
        from dicom_bq.stackfiles import find_project_dir, read_stack_config

        result = plan_stack(read_stack_config(project_dir or find_project_dir(), stack))
        settings = result.settings
        assert settings is not None
        findings = check_plan(result, settings)
        lookup = (
            roles.IamRoles(_connection(None, None, settings.universe_domain)).get
            if online
            else roles.from_snapshot
        )
        document = review_document(result, findings, lookup)
    except DicomBqError as error:
        fail(error)
    text = (
        review_markdown(document, findings)
        if output_format is ReviewFormat.markdown
        else json.dumps(document, indent=2) + "\n"
    )
    if output:
        from dicom_bq.files import write_text_atomically

        write_text_atomically(output, text, replace=force)
        typer.echo(f"wrote {output}", err=True)
    else:
        typer.echo(text, nl=False)
    if not document["policy"]["passed"]:
        raise typer.Exit(1)


@app.command()
@guarded
def audit(
    stack: Annotated[
        str | None,
        typer.Option("--stack", "-s", help="Expected grants from this stack's settings."),
    ] = None,
    outputs: Annotated[
        Path | None, typer.Option("--outputs", help="Expected grants from saved stack outputs.")
    ] = None,
    impersonate: ImpersonateOption = None,
    project_dir: ProjectDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Compare the live IAM policies with the stack's grants: missing, extra, public, basic."""
    try:
        from dicom_bq.audit import AuditTarget, run_audit

        if (stack is None) == (outputs is None):
            raise DicomBqError(
                "say what to audit with exactly one of --stack NAME or --outputs FILE"
            )
        if outputs is not None:
            from dicom_bq.stack_outputs import read_outputs_file

            target = AuditTarget.from_outputs(outputs.stem, read_outputs_file(outputs))
        else:
            from dicom_bq.planner import plan_stack
            from dicom_bq.stackfiles import find_project_dir, read_stack_config

            assert stack is not None
            planned = plan_stack(read_stack_config(project_dir or find_project_dir(), stack))
            target = AuditTarget.from_outputs(stack, planned.outputs)
        result = run_audit(_connection(None, impersonate), target)
    except DicomBqError as error:
        fail(error)
    if as_json:
        print_json(result.as_dict())
    else:
        typer.echo(result.text())
    raise typer.Exit(result.exit_code)


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
    from dicom_bq.filters import validate_file

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
        from dicom_bq import filters, refs

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
            from dicom_bq.bigquery_tables import BigQueryTables
            from dicom_bq.infra import identifiers
            from dicom_bq.queries import Query, filter_paths

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
                from dicom_bq.storage_objects import StorageObjects

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
        from dicom_bq.storage_objects import StorageObjects

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
        from dicom_bq.bigquery_tables import BigQueryTables
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
    from dicom_bq.queries import dicomweb_paths

    _run_query(table, lambda uri: dicomweb_paths(uri, patient_id), as_json)


@query_app.command("latest-studies")
@guarded
def query_latest_studies(
    table: TableOption,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000, help="How many studies.")] = 10,
    as_json: JsonOption = False,
) -> None:
    """The latest studies with their patient and instance count, for a reading worklist."""
    from dicom_bq.queries import latest_studies

    _run_query(table, lambda uri: latest_studies(uri, limit), as_json)


@query_app.command("dropped-tags")
@guarded
def query_dropped_tags(table: TableOption, as_json: JsonOption = False) -> None:
    """The tags the export could not hold (DroppedTags), with how many instances had each."""
    from dicom_bq.queries import dropped_tags

    _run_query(table, dropped_tags, as_json)


ApiVersionOption = Annotated[
    str, typer.Option("--api-version", help="Healthcare API version: v1 or v1beta1.")
]
ApiEndpointOption = Annotated[
    str | None,
    typer.Option("--api-endpoint", help="Healthcare API root URL, for private endpoints."),
]
ImpersonateOption = Annotated[
    str | None,
    typer.Option("--impersonate-service-account", help="Call Google as this service account."),
]
TimeoutOption = Annotated[
    str | None,
    typer.Option("--timeout", help="Stop waiting after this long: seconds, or 90s, 30m, 2h."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
PermissionWindowOption = Annotated[
    str,
    typer.Option(
        "--permission-window",
        help="How long to retry PERMISSION_DENIED while new grants propagate.",
    ),
]


def _api_version(value: str) -> str:
    from dicom_bq.healthcare_api import API_VERSIONS

    if value not in API_VERSIONS:
        raise DicomBqError(f"--api-version {value!r} is not valid: choose v1 or v1beta1")
    return value


def _connection(
    api_endpoint: str | None, impersonate: str | None, universe: str | None = None
) -> Any:
    from dicom_bq.endpoints import Connection

    return Connection(
        universe_domain=universe or "googleapis.com",
        healthcare_endpoint=api_endpoint,
        impersonate=impersonate,
    )


def _err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _progress(console: Any, status: Any) -> Any:
    def update(state: Any, elapsed: float) -> None:
        status.update(
            f"{state.name.rsplit('/', 1)[-1]}: {state.state.lower()} {elapsed:.0f}s, "
            f"{state.success} done, {state.failure} failed, {state.pending} pending"
        )

    return update


def _summary(state: Any) -> None:
    # Plain lines, never wrapped: the names and commands in them are meant to be copied.
    lines = [
        f"operation: {state.name}",
        f"state:     {state.state}",
        f"counters:  success={state.success} failure={state.failure} pending={state.pending}",
    ]
    if state.logs_url:
        lines.append(f"logs:      {state.logs_url}")
    if state.error_code is not None:
        lines.append(f"error:     {state.error_code} {state.error_message}")
    if not state.done:
        lines.append(f"resume:    dicom-bq operations wait {state.name}")
    typer.echo("\n".join(lines))


def _finish(state: Any, as_json: bool) -> NoReturn:
    if as_json:
        print_json(state.as_dict())
    else:
        _summary(state)
    raise typer.Exit(state.exit_code)


def _follow(api: Any, name: str, timeout: float | None, as_json: bool) -> Any:
    from dicom_bq.errors import EXIT_INTERRUPTED
    from dicom_bq.google_api import ApiCallError
    from dicom_bq.operations import Follower

    console = _err_console()
    try:
        if as_json or not console.is_terminal or timeout == 0:
            return Follower(api).follow(name, timeout)
        with console.status(f"waiting for {name}") as status:
            return Follower(api).follow(name, timeout, _progress(console, status))
    except ApiCallError as error:
        fail(
            DicomBqError(
                f"cannot read operation {name}: {error.status} {error.reason} {error.message}",
                exit_code=1,
            )
        )
    except KeyboardInterrupt:
        typer.echo(
            f"Interrupted: operation {name} keeps running. Resume with: "
            f"dicom-bq operations wait {name}",
            err=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _confirm_truncate(table: Any, connection: Any, yes: bool) -> None:
    """WRITE_TRUNCATE on a table with rows needs a yes: from --yes, or typed at a terminal."""
    if yes:
        return
    from dicom_bq.bigquery_tables import BigQueryTables

    rows = BigQueryTables(connection, table.project).row_count(table)
    if not rows:
        return
    question = f"{table.uri} holds {rows} rows; WRITE_TRUNCATE erases them. Continue?"
    if not sys.stdin.isatty():
        raise DicomBqError(
            f"{table.uri} holds {rows} rows and WRITE_TRUNCATE would erase them: pass --yes to "
            "confirm, or use WRITE_APPEND or a new table"
        )
    if not typer.confirm(question, default=False, err=True):
        raise DicomBqError("not confirmed: nothing was exported")


def _stack_settings(stack: str) -> Any:
    """A stack's validated settings, read as Pulumi merges its config."""
    from dicom_bq.infra.settings import SettingsError, settings_from_config
    from dicom_bq.stackfiles import find_project_dir, read_stack_config

    config = read_stack_config(find_project_dir(), stack)
    try:
        return settings_from_config(config.values, config.stack)[0]
    except SettingsError as error:
        raise DicomBqError(f"stack {stack!r} has settings that cannot be used:\n{error}") from None


def _filter_bucket(bucket: str | None, stack: str | None) -> str:
    """The bucket for an uploaded filter file; warns when the agent may not be able to read it."""
    from dicom_bq.infra import identifiers

    stack_bucket = _stack_settings(stack).filter_bucket if stack is not None else None
    chosen = bucket or stack_bucket
    if not chosen:
        raise DicomBqError(
            "--filter-file needs a bucket: --filter-bucket BUCKET, or --stack NAME whose "
            "dicom-bq:filterBucket the agent can read"
        )
    problem = identifiers.check_bucket(str(chosen))
    if problem:
        raise DicomBqError(f"--filter-bucket {chosen!r} is not valid: {problem}")
    if chosen != stack_bucket:
        typer.echo(
            f"Warning: gs://{chosen} is not the stack's filter bucket: the Cloud Healthcare "
            "service agent needs roles/storage.objectViewer on it, or the export fails",
            err=True,
        )
    return str(chosen)


def _upload_filter(path: Path, bucket: str, connection: Any) -> Any:
    import datetime
    import uuid

    from dicom_bq.refs import GcsUri
    from dicom_bq.storage_objects import StorageObjects

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    # The local name becomes part of the object name, so only characters that need no escaping
    # in a gs:// URI or a URL path are kept (https://cloud.google.com/storage/docs/objects#naming).
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", path.name)[:100] or "filter"
    target = GcsUri(bucket, f"dicom-bq/filters/{stamp}-{uuid.uuid4().hex[:8]}-{safe}")
    StorageObjects(connection, bucket).upload_file(str(path), target, UPLOAD_CHUNK)
    typer.echo(f"Uploaded {path} to {target.uri}", err=True)
    return target


@app.command()
@guarded
def export(
    store: Annotated[
        str, typer.Option("--store", help="projects/P/locations/L/datasets/D/dicomStores/S")
    ],
    table: Annotated[str, typer.Option("--table", help="Destination, bq://PROJECT.DATASET.TABLE.")],
    write_disposition: Annotated[
        str | None,
        typer.Option(
            "--write-disposition",
            help="WRITE_EMPTY (default), WRITE_TRUNCATE or WRITE_APPEND; write-empty also works.",
        ),
    ] = None,
    force: Annotated[
        bool | None,
        typer.Option(
            "--force/--no-force", help="Legacy: --force is WRITE_TRUNCATE, --no-force WRITE_EMPTY."
        ),
    ] = None,
    filter_uri: Annotated[
        str | None,
        typer.Option("--filter", help="Filter file gs://BUCKET/OBJECT of paths to export."),
    ] = None,
    filter_file: Annotated[
        Path | None,
        typer.Option("--filter-file", help="A local filter file: validated, uploaded, then used."),
    ] = None,
    filter_bucket: Annotated[
        str | None, typer.Option("--filter-bucket", help="Bucket for --filter-file.")
    ] = None,
    stack: Annotated[
        str | None, typer.Option("--stack", help="Take --filter-bucket from this stack's settings.")
    ] = None,
    api_version: ApiVersionOption = "v1",
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Print the operation name and exit.")
    ] = False,
    timeout: TimeoutOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Confirm WRITE_TRUNCATE of a table with rows.")
    ] = False,
    agent_email: Annotated[
        str | None,
        typer.Option("--agent-email", help="The store's service agent, for error advice."),
    ] = None,
    permission_window: PermissionWindowOption = "10m",
    api_endpoint: ApiEndpointOption = None,
    impersonate: ImpersonateOption = None,
    as_json: JsonOption = False,
) -> None:
    """Export the store's DICOM metadata to a BigQuery table and follow the operation."""
    try:
        from dicom_bq import refs
        from dicom_bq.export import Exporter, ExportPlan

        if force is not None and write_disposition is not None:
            raise DicomBqError(
                "--force/--no-force and --write-disposition say the same thing twice and the API "
                "takes only one: keep --write-disposition (--force is WRITE_TRUNCATE, --no-force "
                "WRITE_EMPTY)"
            )
        plan = ExportPlan(
            store=refs.StoreName.parse(store),
            table=refs.TableUri.parse(table),
            write_disposition=refs.parse_write_disposition(write_disposition)
            if write_disposition is not None
            else None,
            force=force,
            filter=refs.GcsUri.parse(filter_uri) if filter_uri is not None else None,
        )
        seconds = refs.parse_timeout(timeout) if timeout is not None else None
        window = refs.parse_timeout(permission_window, "--permission-window")
        version = _api_version(api_version)
        connection = _connection(api_endpoint, impersonate)
        if filter_file is not None:
            if filter_uri is not None:
                raise DicomBqError("give --filter gs://... or --filter-file FILE, not both")
            bucket = _filter_bucket(filter_bucket, stack)
            _validated(filter_file, False, False)
            if plan.truncates:
                _confirm_truncate(plan.table, connection, yes)
            plan = dataclasses.replace(plan, filter=_upload_filter(filter_file, bucket, connection))
        elif plan.truncates:
            _confirm_truncate(plan.table, connection, yes)
        from dicom_bq.healthcare_api import HealthcareApi

        api = HealthcareApi(connection, version)
        if agent_email is None and stack is not None:
            # The stack names the agent when it knows the source project's number.
            member = _stack_settings(stack).agent_member
            agent_email = member.removeprefix("serviceAccount:") if member else None
        exporter = Exporter(api, permission_window=window, agent_email=agent_email)
        if no_wait:
            name = exporter.start(plan, on_wait=_say_wait)
            if as_json:
                print_json({"operation": name, "done": False})
            else:
                typer.echo(name)
            raise typer.Exit(0)
        state = _run_export(exporter, plan, seconds, as_json)
    except DicomBqError as error:
        fail(error)
    _finish(state, as_json)


def _say_wait(why: str, delay: float) -> None:
    typer.echo(f"{why}; retrying in {delay:.0f}s" if delay else why, err=True)


def _run_export(exporter: Any, plan: Any, timeout: float | None, as_json: bool) -> Any:
    """The one export flow (export and verify): start at most once, follow with live progress,
    retry an operation refused while IAM propagates; Ctrl-C says how to resume."""
    from dicom_bq.errors import EXIT_INTERRUPTED

    started: list[str] = []

    def on_start(name: str) -> None:
        started.append(name)
        typer.echo(f"Started {name}", err=True)

    console = _err_console()
    try:
        if as_json or not console.is_terminal or timeout == 0:
            return exporter.run(
                plan, exporter_follower(exporter), timeout, on_start=on_start, on_wait=_say_wait
            )
        with console.status(f"exporting to {plan.table.uri}") as status:
            return exporter.run(
                plan,
                exporter_follower(exporter),
                timeout,
                on_start=on_start,
                on_update=_progress(console, status),
                on_wait=_say_wait,
            )
    except KeyboardInterrupt:
        if started:
            typer.echo(
                f"Interrupted: operation {started[-1]} keeps running. Resume with: "
                f"dicom-bq operations wait {started[-1]}",
                err=True,
            )
        else:
            typer.echo("Interrupted before an export operation was known.", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def exporter_follower(exporter: Any) -> Any:
    from dicom_bq.operations import Follower

    return Follower(exporter.api)


operations_app = typer.Typer(
    help="Re-attach to a long-running operation.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(operations_app, name="operations")


@operations_app.command("describe")
@guarded
def operations_describe(
    name: Annotated[str, typer.Argument(help="projects/P/locations/L/datasets/D/operations/ID")],
    api_version: ApiVersionOption = "v1",
    api_endpoint: ApiEndpointOption = None,
    impersonate: ImpersonateOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show an operation's state once."""
    operations_wait(name, "0", api_version, api_endpoint, impersonate, as_json)


@operations_app.command("wait")
@guarded
def operations_wait(
    name: Annotated[str, typer.Argument(help="projects/P/locations/L/datasets/D/operations/ID")],
    timeout: TimeoutOption = None,
    api_version: ApiVersionOption = "v1",
    api_endpoint: ApiEndpointOption = None,
    impersonate: ImpersonateOption = None,
    as_json: JsonOption = False,
) -> None:
    """Wait for an operation to finish, then summarize it."""
    try:
        from dicom_bq.healthcare_api import HealthcareApi
        from dicom_bq.refs import parse_operation_name, parse_timeout

        operation = parse_operation_name(name)
        # "0" is describe's: one look, no waiting.
        seconds = (
            (0.0 if timeout == "0" else parse_timeout(timeout)) if timeout is not None else None
        )
        api = HealthcareApi(_connection(api_endpoint, impersonate), _api_version(api_version))
    except DicomBqError as error:
        fail(error)
    _finish(_follow(api, operation, seconds, as_json), as_json)


def _verify_target(
    stack: str | None,
    outputs: Path | None,
    store: str | None,
    table: str | None,
    filter_bucket: str | None,
    project_dir: Path | None,
) -> Any:
    from dicom_bq import stack_outputs
    from dicom_bq.refs import StoreName, TableUri

    sources = [stack is not None, outputs is not None, store is not None]
    if sum(sources) != 1:
        raise DicomBqError(
            "say where to verify with exactly one of --stack NAME, --outputs FILE or "
            "--store NAME (with --table)"
        )
    if store is not None:
        if table is None:
            raise DicomBqError(
                "--store needs --table bq://PROJECT.DATASET.TABLE for the verification export"
            )
        from dicom_bq.infra import identifiers

        problem = identifiers.check_bucket(filter_bucket) if filter_bucket else None
        if problem:
            raise DicomBqError(f"--filter-bucket {filter_bucket!r} is not valid: {problem}")
        return stack_outputs.VerifyTarget(
            StoreName.parse(store), TableUri.parse(table), filter_bucket
        )
    if outputs is not None:
        document = stack_outputs.read_outputs_file(outputs)
    else:
        from dicom_bq.stackfiles import find_project_dir

        assert stack is not None
        document = stack_outputs.read_stack_outputs(stack, project_dir or find_project_dir())
    return stack_outputs.target_from_outputs(document, table)


def run_verify(
    target: Any,
    options: Any,
    window: float,
    api_version: str,
    connection: Any,
    as_json: bool,
    yes: bool = False,
) -> NoReturn:
    from dicom_bq.bigquery_tables import BigQueryTables
    from dicom_bq.errors import EXIT_INTERRUPTED
    from dicom_bq.export import Exporter
    from dicom_bq.healthcare_api import HealthcareApi
    from dicom_bq.operations import Follower
    from dicom_bq.storage_objects import StorageObjects
    from dicom_bq.verify import Verifier

    api = HealthcareApi(connection, api_version)
    filters = StorageObjects(connection, target.store.project) if target.filter_bucket else None
    console = _err_console()
    started: list[str] = []
    status: Any = None

    def show(step: Any) -> None:
        mark = "[green]ok[/]" if step.ok else "[red]FAILED[/]"
        console.print(
            f"{mark} {step.name:<10} {step.seconds:7.2f}s  {step.detail}",
            highlight=False,
            soft_wrap=True,
        )

    def on_start(name: str) -> None:
        started.append(name)
        typer.echo(f"Started {name}", err=True)

    def on_update(state: Any, elapsed: float) -> None:
        if status is not None:
            _progress(console, status)(state, elapsed)

    verifier = Verifier(
        api=api,
        rows=BigQueryTables(connection, target.table.project),
        filters=filters,
        exporter=Exporter(api, permission_window=window, agent_email=target.agent_email),
        follower=Follower(api),
        on_step=show,
        on_start=on_start,
        on_update=on_update,
        on_wait=_say_wait,
        confirm_truncate=lambda table: _confirm_truncate(table, connection, yes),
    )
    try:
        if as_json or not console.is_terminal:
            report = verifier.run(target, options)
        else:
            with console.status("verifying") as status:
                report = verifier.run(target, options)
    except KeyboardInterrupt:
        where = (
            f"operation {started[-1]} keeps running; follow it with: dicom-bq operations wait "
            f"{started[-1]}"
            if started
            else "no export had started"
        )
        typer.echo(f"Interrupted ({where}); the temporary store was deleted.", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if as_json:
        print_json(report.as_dict())
    else:
        typer.echo("verification passed" if report.ok else "verification FAILED")
    raise typer.Exit(report.exit_code)


@app.command()
@guarded
def verify(
    stack: Annotated[
        str | None, typer.Option("--stack", "-s", help="Read the outputs of this stack.")
    ] = None,
    outputs: Annotated[
        Path | None, typer.Option("--outputs", help="Saved `pulumi stack output --json`.")
    ] = None,
    store: Annotated[
        str | None, typer.Option("--store", help="Or name the store directly.")
    ] = None,
    table: Annotated[
        str | None, typer.Option("--table", help="Verification table (default: the stack's).")
    ] = None,
    filter_bucket: Annotated[
        str | None,
        typer.Option("--filter-bucket", help="Bucket for the filter file, with --store."),
    ] = None,
    no_seed: Annotated[
        bool, typer.Option("--no-seed", help="Export what is there; compare counts.")
    ] = False,
    in_place: Annotated[
        bool,
        typer.Option(
            "--in-place", help="Seed the real store instead of a temporary one in its dataset."
        ),
    ] = False,
    accept_stream_rows: Annotated[
        bool,
        typer.Option(
            "--accept-synthetic-in-streams",
            help="With --in-place on a store that streams or notifies: accept that its stream "
            "tables and topic keep the synthetic instance for good.",
        ),
    ] = False,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the synthetic instance (and temporary store).")
    ] = False,
    yes: Annotated[
        bool,
        typer.Option("--yes", "-y", help="Confirm WRITE_TRUNCATE of a --table that has rows."),
    ] = False,
    timeout: TimeoutOption = "30m",
    permission_window: PermissionWindowOption = "10m",
    api_version: ApiVersionOption = "v1",
    api_endpoint: ApiEndpointOption = None,
    impersonate: ImpersonateOption = None,
    project_dir: ProjectDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Prove the export path: seed a synthetic instance into a temporary store in the stack's
    Healthcare dataset, export it to the tool's own table, find its row, delete the store."""
    try:
        from dicom_bq.refs import parse_timeout

        seconds = parse_timeout(timeout) if timeout is not None else None
        window = parse_timeout(permission_window, "--permission-window")
        version = _api_version(api_version)
        from dicom_bq.verify import VerifyOptions

        if accept_stream_rows and not in_place:
            raise DicomBqError(
                "--accept-synthetic-in-streams goes with --in-place: without it, verify seeds a "
                "temporary store and nothing is left in the real store's streams"
            )
        if no_seed and in_place:
            raise DicomBqError("--no-seed stores nothing: drop --in-place")
        target = _verify_target(stack, outputs, store, table, filter_bucket, project_dir)
        connection = _connection(api_endpoint, impersonate, target.universe_domain)
        options = VerifyOptions(
            seed=not no_seed,
            in_place=in_place,
            accept_stream_rows=accept_stream_rows,
            keep=keep,
            timeout=seconds,
        )
        run_verify(target, options, window, version, connection, as_json, yes)
    except DicomBqError as error:
        fail(error)


@app.command()
@guarded
def preflight(
    stack: Annotated[str, typer.Option("--stack", "-s", help="The stack to check.")],
    impersonate: ImpersonateOption = None,
    project_dir: ProjectDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check, with your credentials, what the stack's first `pulumi up` needs: APIs, the bucket,
    topic and keys it grants on, your permissions, and names already taken. Writes nothing.
    Exit 0 all clear, 1 something will fail, 2 bad input."""
    try:
        from dicom_bq.preflight import preflight_stack
        from dicom_bq.stackfiles import find_project_dir

        report = preflight_stack(
            stack=stack, project_dir=project_dir or find_project_dir(), impersonate=impersonate
        )
    except DicomBqError as error:
        fail(error)
    _print_preflight(report, as_json)
    if not report.ok:
        raise typer.Exit(1)


def _print_preflight(report: Any, as_json: bool) -> None:
    from dicom_bq.preflight import report_lines

    for note in report.notes:
        typer.echo(f"Note: {note}", err=True)
    if as_json:
        print_json(report.as_dict())
    else:
        typer.echo("\n".join(report_lines(report)))


@app.command()
@guarded
def up(
    stack: Annotated[str, typer.Option("--stack", "-s", help="The stack to deploy, then verify.")],
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Pass --yes to pulumi up (no preview prompt).")
    ] = False,
    no_seed: Annotated[
        bool, typer.Option("--no-seed", help="Verify without a synthetic instance.")
    ] = False,
    timeout: TimeoutOption = "30m",
    permission_window: PermissionWindowOption = "10m",
    skip_preflight: Annotated[
        bool, typer.Option("--skip-preflight", help="Do not run `dicom-bq preflight` first.")
    ] = False,
    policy_pack: Annotated[
        list[Path] | None,
        typer.Option(
            "--policy-pack",
            help="A CrossGuard pack for pulumi up (repeatable); default: the project's policy/.",
        ),
    ] = None,
    no_policy_pack: Annotated[
        bool, typer.Option("--no-policy-pack", help="Run pulumi up without any policy pack.")
    ] = False,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Pass --refresh to pulumi up.")
    ] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Pass --diff to pulumi up.")] = False,
    targets: Annotated[
        list[str] | None,
        typer.Option("--target", help="Pass --target URN to pulumi up (repeatable)."),
    ] = None,
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="Pass -m MESSAGE to pulumi up.")
    ] = None,
    project_dir: ProjectDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """`dicom-bq preflight`, `pulumi up` on the stack (with the project's policy pack), then
    `verify` on its fresh outputs."""
    try:
        from dicom_bq import stack_outputs
        from dicom_bq.refs import parse_timeout
        from dicom_bq.stackfiles import find_project_dir, read_stack_config

        folder = project_dir or find_project_dir()
        seconds = parse_timeout(timeout) if timeout is not None else None
        window = parse_timeout(permission_window, "--permission-window")
        # A bad stack fails here, offline, before pulumi touches anything.
        from dicom_bq.planner import plan_stack

        plan_stack(read_stack_config(folder, stack))
        if not skip_preflight:
            from dicom_bq.preflight import preflight_stack, report_lines

            report = preflight_stack(stack=stack, project_dir=folder, impersonate=None)
            for line in report_lines(report):
                typer.echo(line, err=True)
            if not report.ok:
                raise DicomBqError(
                    "preflight found what would make `pulumi up` fail (above): nothing was "
                    "deployed; fix it, or pass --skip-preflight",
                    exit_code=1,
                )
        packs = [] if no_policy_pack else [str(p) for p in policy_pack or [folder / "policy"]]
        if no_policy_pack and policy_pack:
            raise DicomBqError("--no-policy-pack and --policy-pack contradict each other")
        options = stack_outputs.UpOptions(
            yes=yes,
            policy_packs=packs,
            refresh=refresh,
            diff=diff,
            targets=list(targets or []),
            message=message,
        )
        code = stack_outputs.pulumi_up(stack, folder, options, output_to_stderr=as_json)
        if code != 0:
            raise DicomBqError(
                f"`pulumi up` failed with exit code {code}: nothing was verified", exit_code=1
            )
        target = stack_outputs.target_from_outputs(stack_outputs.read_stack_outputs(stack, folder))
        connection = _connection(None, None, target.universe_domain)
        from dicom_bq.verify import VerifyOptions

        run_verify(
            target,
            VerifyOptions(seed=not no_seed, timeout=seconds),
            window,
            "v1",
            connection,
            as_json,
        )
    except DicomBqError as error:
        fail(error)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
