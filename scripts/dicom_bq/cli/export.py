"""Exports and their operations: export, operations describe/wait."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from dicom_bq.cli.common import (
    ApiEndpointOption,
    ApiVersionOption,
    DatasetOption,
    Display,
    ImpersonateOption,
    JsonOption,
    LocationOption,
    OperationArgument,
    PermissionWindowOption,
    ProjectOption,
    StackUniverseOption,
    TimeoutOption,
    UniverseOption,
    app,
    confirm_truncate,
    export_interrupted,
    finish_operation,
    guarded,
    option_groups,
    print_json,
)


@app.command()
@guarded
def export(
    store_argument: Annotated[
        str | None,
        typer.Argument(
            metavar="[DICOM_STORE]",
            help="gcloud's spelling: a store ID (with --dataset, --location, --project) or its "
            "full name.",
            show_default=False,
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option("--store", help="projects/P/locations/L/datasets/D/dicomStores/S"),
    ] = None,
    table: Annotated[
        str | None, typer.Option("--table", help="Destination, bq://PROJECT.DATASET.TABLE.")
    ] = None,
    dataset: DatasetOption = None,
    location: LocationOption = None,
    project: ProjectOption = None,
    bq_table: Annotated[
        str | None, typer.Option("--bq-table", help="gcloud's --table: bq://PROJECT.DATASET.TABLE.")
    ] = None,
    run_async: Annotated[
        bool, typer.Option("--async", help="gcloud's --no-wait: print the operation and exit.")
    ] = False,
    overwrite_table: Annotated[
        bool,
        typer.Option(
            "--overwrite-table",
            help="gcloud's WRITE_TRUNCATE: a table with rows still needs --yes or a terminal.",
        ),
    ] = False,
    filter_config_gcs_uri: Annotated[
        str | None,
        typer.Option("--filter-config-gcs-uri", help="gcloud's --filter: gs://BUCKET/OBJECT."),
    ] = None,
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
    keep_filter: Annotated[
        bool,
        typer.Option(
            "--keep-filter",
            help="Keep the object --filter-file uploads (by default it is deleted once the "
            "export has ended).",
        ),
    ] = False,
    stack: Annotated[
        str | None, typer.Option("--stack", help="Take --filter-bucket from this stack's settings.")
    ] = None,
    schema: Annotated[
        str,
        typer.Option(
            "--schema",
            help="Table layout: nested (default: one column per DICOM keyword), flattened, or "
            "json (all tags in one Metadata JSON column).",
        ),
    ] = "nested",
    include_source_store: Annotated[
        bool,
        typer.Option(
            "--include-source-store",
            help="Add a SourceDicomStore column, so several stores can share one table.",
        ),
    ] = False,
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
    allow_concurrent: Annotated[
        bool,
        typer.Option(
            "--allow-concurrent",
            help="Start a WRITE_APPEND export even when an export of the same dataset is "
            "running or started in the last 5 minutes (by default refused: a re-run after a "
            "crash would add every row twice).",
        ),
    ] = False,
    permission_window: PermissionWindowOption = "10m",
    api_endpoint: ApiEndpointOption = None,
    impersonate: ImpersonateOption = None,
    universe_domain: StackUniverseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Export the store's DICOM metadata to a BigQuery table and follow the operation."""
    from dicom_bq import refs, spellings
    from dicom_bq.flows.access import GoogleAccess
    from dicom_bq.flows.export import LocalFilter, run_export
    from dicom_bq.flows.exporter import ExportPlan
    from dicom_bq.flows.targets import Target

    write, legacy_force = spellings.export_disposition(
        write_disposition=write_disposition, force=force, overwrite_table=overwrite_table
    )
    plan = ExportPlan(
        store=spellings.export_store(
            store_option=store,
            store_argument=store_argument,
            dataset=dataset,
            location=location,
            project=project,
        ),
        table=spellings.export_table(table=table, bq_table=bq_table),
        write_disposition=write,
        force=legacy_force,
        filter=spellings.export_filter(
            filter_uri=filter_uri,
            filter_config_gcs_uri=filter_config_gcs_uri,
            local_file=filter_file is not None,
        ),
        schema=spellings.parse_export_schema(schema),
        include_source_store=include_source_store,
    )
    wait = spellings.export_waits(
        no_wait=no_wait, run_async=run_async, timeout_given=timeout is not None
    )
    seconds = refs.parse_optional_timeout(timeout)
    display = Display(
        live=not as_json,
        activity=f"exporting to {plan.table.uri}",
        on_interrupt=export_interrupted,
    )
    with display:
        result = run_export(
            plan=plan,
            access=GoogleAccess(
                api_endpoint=api_endpoint,
                impersonate=impersonate,
                universe_domain=universe_domain,
            ),
            api_version=api_version,
            target=Target(stack=stack),
            local_filter=LocalFilter(path=filter_file, bucket=filter_bucket)
            if filter_file is not None
            else None,
            keep_filter=keep_filter,
            agent_email=agent_email,
            permission_window=refs.parse_timeout(permission_window, "--permission-window"),
            wait=wait,
            timeout=seconds,
            truncate_confirmed=yes,
            confirm_truncate=confirm_truncate,
            allow_concurrent=allow_concurrent,
            observer=display,
        )
    if result.state is not None:
        finish_operation(result.state, as_json)
    if as_json:
        print_json({"operation": result.operation, "done": False})
    else:
        typer.echo(result.operation)


operations_app = typer.Typer(
    help="Re-attach to a long-running operation.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(operations_app, name="operations")


@dataclass(frozen=True, kw_only=True)
class OperationOptions:
    """The options every `operations` command takes: the operation (its full name, or gcloud's
    spelling) and how to reach the Healthcare API."""

    name: OperationArgument
    dataset: DatasetOption = None
    location: LocationOption = None
    project: ProjectOption = None
    api_version: ApiVersionOption = "v1"
    api_endpoint: ApiEndpointOption = None
    impersonate: ImpersonateOption = None
    universe_domain: UniverseOption = None
    as_json: JsonOption = False


@operations_app.command("describe")
@guarded
@option_groups
def operations_describe(operation: OperationOptions) -> None:
    """Show an operation's state once."""
    _show_operation(operation, timeout=0.0)


@operations_app.command("wait")
@guarded
@option_groups
def operations_wait(operation: OperationOptions, timeout: TimeoutOption = None) -> None:
    """Wait for an operation to finish, then summarize it."""
    from dicom_bq.refs import parse_optional_timeout

    _show_operation(operation, timeout=parse_optional_timeout(timeout))


def _show_operation(operation: OperationOptions, *, timeout: float | None) -> None:
    from dicom_bq.flows.access import GoogleAccess
    from dicom_bq.flows.operations import follow_operation
    from dicom_bq.spellings import operation_name

    name = operation_name(
        operation=operation.name,
        dataset=operation.dataset,
        location=operation.location,
        project=operation.project,
    )
    display = Display(
        live=not operation.as_json and timeout != 0,
        activity=f"waiting for {name}",
        on_interrupt=export_interrupted,
        spinner_from_start=True,
        operations=[name],
    )
    with display:
        state = follow_operation(
            name=name,
            access=GoogleAccess(
                api_endpoint=operation.api_endpoint,
                impersonate=operation.impersonate,
                universe_domain=operation.universe_domain,
            ),
            api_version=operation.api_version,
            timeout=timeout,
            on_update=display.progress,
        )
    finish_operation(state, operation.as_json)
