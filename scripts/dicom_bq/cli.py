"""The `dicom-bq` command line: parses arguments and prints; the work lives in other modules.

Heavy modules (Pulumi, Google clients) are imported inside the commands that need them, so
`dicom-bq --help` starts quickly.
"""

from __future__ import annotations

import json
import sys
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
    typer.echo(f"Error: {error.message}", err=True)
    raise typer.Exit(error.exit_code)


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
def plan(
    stack: Annotated[
        str, typer.Option("--stack", "-s", help="Stack name, as in Pulumi.<stack>.yaml.")
    ],
    output_format: Annotated[
        PlanFormat, typer.Option("--format", "-f", help="table, json or markdown.")
    ] = PlanFormat.table,
    project_dir: ProjectDirOption = None,
) -> None:
    """Show, offline, every resource and grant the stack would create. No credentials needed."""
    try:
        from dicom_bq.planner import plan_stack
        from dicom_bq.stackfiles import find_project_dir, read_stack_config

        folder = project_dir or find_project_dir()
        result = plan_stack(stack, read_stack_config(folder, stack))
    except DicomBqError as error:
        fail(error)
    if output_format is PlanFormat.json:
        print_json(result.as_dict())
    elif output_format is PlanFormat.markdown:
        from dicom_bq.render import markdown

        typer.echo(markdown(result), nl=False)
    else:
        from rich.console import Console

        from dicom_bq.render import print_table

        print_table(result, Console(width=200 if not sys.stdout.isatty() else None))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
