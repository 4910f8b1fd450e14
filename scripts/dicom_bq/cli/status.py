"""The export path's health at a glance: status."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dicom_bq.cli.common import (
    ApiEndpointOption,
    ImpersonateOption,
    JsonOption,
    ProjectDirOption,
    app,
    guarded,
    print_json,
)

if TYPE_CHECKING:
    from dicom_bq.flows.status import StatusReport


def _outputs(stack: str | None, outputs: Path | None, project_dir: Path | None) -> dict[str, Any]:
    from dicom_bq.flows.targets import stack_outputs_document

    return stack_outputs_document(stack=stack, outputs=outputs, project_dir=project_dir)


def _print_status(report: StatusReport, as_json: bool) -> None:
    from dicom_bq.flows.status import report_lines

    if as_json:
        print_json(report.as_dict())
    else:
        typer.echo("\n".join(report_lines(report)))


@app.command()
@guarded
def status(
    stack: Annotated[
        str | None, typer.Option("--stack", "-s", help="Read the outputs of this stack.")
    ] = None,
    outputs: Annotated[
        Path | None, typer.Option("--outputs", help="Saved `pulumi stack output --json`.")
    ] = None,
    store_id: Annotated[
        str | None,
        typer.Option("--store-id", help="Only this store of the stack (default: all of them)."),
    ] = None,
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
    """One read-only view of the export path: each store's instances, the last exports, its
    stream tables' and its own snapshot table's rows and age, and what disagrees.
    Exit 0 healthy, 1 something needs attention, 2 bad input."""
    import datetime

    from dicom_bq.flows.access import GoogleAccess
    from dicom_bq.flows.status import check_status
    from dicom_bq.refs import parse_timeout

    grace = parse_timeout(snapshot_grace, "--snapshot-grace")
    report = check_status(
        outputs=_outputs(stack, outputs, project_dir),
        store_id=store_id,
        access=GoogleAccess(api_endpoint=api_endpoint, impersonate=impersonate),
        snapshot_grace=grace,
        now=datetime.datetime.now(datetime.UTC),
    )
    _print_status(report, as_json)
    raise typer.Exit(report.exit_code)
