"""The export path's health at a glance: status."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from dicom_bq.cli.common import (
    ApiEndpointOption,
    ImpersonateOption,
    JsonOption,
    OutputsOption,
    ProjectDirOption,
    StackOption,
    StoreIdOption,
    app,
    guarded,
    print_json,
)

if TYPE_CHECKING:
    from dicom_bq.flows.status import StatusReport


def _print_status(report: StatusReport, as_json: bool) -> None:
    from dicom_bq.flows.status import report_lines

    if as_json:
        print_json(report.as_dict())
    else:
        typer.echo("\n".join(report_lines(report)))


@app.command()
@guarded
def status(
    stack: StackOption = None,
    outputs: OutputsOption = None,
    store_id: StoreIdOption = None,
    snapshot_grace: Annotated[
        str,
        typer.Option(
            "--snapshot-grace",
            help="How long the scheduled snapshot export may take before it counts as late.",
        ),
    ] = "2h",
    api_endpoint: ApiEndpointOption = None,
    impersonate: ImpersonateOption = None,
    project_dir: ProjectDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """One read-only view of the export path: each store's instances, the last exports of its
    Healthcare dataset (store unknown: operations name their dataset only), its stream tables'
    and its own snapshot table's rows and age, and what disagrees.
    Exit 0 healthy, 1 something needs attention, 2 bad input."""
    import datetime

    from dicom_bq.flows.access import GoogleAccess
    from dicom_bq.flows.status import check_status
    from dicom_bq.flows.targets import Target
    from dicom_bq.refs import parse_timeout

    grace = parse_timeout(snapshot_grace, "--snapshot-grace")
    report = check_status(
        target=Target(stack=stack, outputs=outputs, project_dir=project_dir, store_id=store_id),
        access=GoogleAccess(api_endpoint=api_endpoint, impersonate=impersonate),
        snapshot_grace=grace,
        now=datetime.datetime.now(datetime.UTC),
    )
    _print_status(report, as_json)
    raise typer.Exit(report.exit_code)
