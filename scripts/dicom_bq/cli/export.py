"""Exports and their operations: export, operations describe/wait."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dicom_bq.cli.common import (
    ApiEndpointOption,
    ApiVersionOption,
    ImpersonateOption,
    JsonOption,
    PermissionWindowOption,
    TimeoutOption,
    _api_version,
    _connection,
    _err_console,
    _finish,
    _follow,
    _progress,
    _say_wait,
    app,
    fail,
    guarded,
    print_json,
)
from dicom_bq.cli.filters import UPLOAD_CHUNK, _validated
from dicom_bq.errors import DicomBqError


def _confirm_truncate(table: Any, connection: Any, yes: bool) -> None:
    """WRITE_TRUNCATE on a table with rows needs a yes: from --yes, or typed at a terminal."""
    if yes:
        return
    from dicom_bq.clients.bigquery import BigQueryTables

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
    from dicom_bq.stack.config import find_project_dir, read_stack_config
    from dicom_bq.stack.plan import stack_settings

    return stack_settings(read_stack_config(find_project_dir(), stack))[0]


def _filter_bucket(bucket: str | None, settings: Any) -> str:
    """The bucket for an uploaded filter file; warns when the agent may not be able to read it."""
    from dicom_bq.infra import identifiers

    stack_bucket = settings.filter_bucket if settings is not None else None
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

    from dicom_bq.clients.storage import StorageObjects
    from dicom_bq.refs import GcsUri

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
        from dicom_bq.flows.export import Exporter, ExportPlan

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
        # Read once: the stack gives the filter bucket and names the agent.
        settings = _stack_settings(stack) if stack is not None else None
        if filter_file is not None:
            if filter_uri is not None:
                raise DicomBqError("give --filter gs://... or --filter-file FILE, not both")
            bucket = _filter_bucket(filter_bucket, settings)
            _validated(filter_file, False, False)
            if plan.truncates:
                _confirm_truncate(plan.table, connection, yes)
            plan = dataclasses.replace(plan, filter=_upload_filter(filter_file, bucket, connection))
        elif plan.truncates:
            _confirm_truncate(plan.table, connection, yes)
        from dicom_bq.clients.healthcare import HealthcareApi

        api = HealthcareApi(connection, version)
        if agent_email is None and settings is not None:
            # The stack names the agent when it knows the source project's number.
            member = settings.agent_member
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
    from dicom_bq.clients.operations import Follower

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
        from dicom_bq.clients.healthcare import HealthcareApi
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
