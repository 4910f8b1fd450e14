"""Planning and security review: plan, review, audit, preflight."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dicom_bq.cli.common import (
    ImpersonateOption,
    JsonOption,
    ProjectDirOption,
    StackUniverseOption,
    app,
    guarded,
    print_json,
)
from dicom_bq.errors import EXIT_FAILED

if TYPE_CHECKING:
    from dicom_bq.flows.review import CheckedPlan, PreflightReport


class PlanFormat(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"
    mermaid = "mermaid"
    dot = "dot"


@app.command()
@guarded
def plan(
    stack: Annotated[
        str, typer.Option("--stack", "-s", help="Stack name, as in Pulumi.<stack>.yaml.")
    ],
    output_format: Annotated[
        PlanFormat,
        typer.Option(
            "--format",
            "-f",
            help="table, json or markdown; mermaid or dot: a graph of the resources and their "
            "dependencies.",
        ),
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
    from dicom_bq.flows.review import plan_stack_offline
    from dicom_bq.flows.targets import Target

    checked = plan_stack_offline(target=Target(stack=stack, project_dir=project_dir), check=check)
    _print_plan(checked, output_format)
    if checked.mandatory_failed:
        raise typer.Exit(EXIT_FAILED)


def _print_plan(checked: CheckedPlan, output_format: PlanFormat) -> None:
    result, findings = checked.plan, checked.findings
    for note in result.notes:
        typer.echo(f"Note: {note}", err=True)
    if output_format is PlanFormat.json:
        document = result.as_dict()
        if checked.checked:
            document["findings"] = [f.as_dict() for f in findings]
        print_json(document)
    elif output_format is PlanFormat.markdown:
        from dicom_bq.stack.render import findings_markdown, markdown

        typer.echo(markdown(result), nl=False)
        if checked.checked:
            typer.echo("\n" + findings_markdown(findings), nl=False)
    elif output_format in (PlanFormat.mermaid, PlanFormat.dot):
        from rich.console import Console

        from dicom_bq.stack.graph import dot, mermaid
        from dicom_bq.stack.render import print_findings

        draw = mermaid if output_format is PlanFormat.mermaid else dot
        typer.echo(draw(result), nl=False)
        if checked.checked:  # the graph alone on stdout
            print_findings(findings, Console(stderr=True))
    else:
        from rich.console import Console

        from dicom_bq.stack.render import print_findings, print_table

        console = Console()
        print_table(result, console)
        if checked.checked:
            print_findings(findings, console)


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
    impersonate: ImpersonateOption = None,
    project_dir: ProjectDirOption = None,
) -> None:
    """A review document: every grant, why, its permissions, and the policy results."""
    from dicom_bq.files import write_text_atomically
    from dicom_bq.flows.access import GoogleAccess
    from dicom_bq.flows.review import review_stack
    from dicom_bq.flows.targets import Target

    result = review_stack(
        target=Target(stack=stack, project_dir=project_dir),
        online=online,
        as_markdown=output_format is ReviewFormat.markdown,
        output=output,
        replace=force,
        access=GoogleAccess(impersonate=impersonate),
    )
    if output:
        write_text_atomically(output, result.text, replace=force)
        typer.echo(f"wrote {output}", err=True)
    else:
        typer.echo(result.text, nl=False)
    if not result.passed:
        raise typer.Exit(EXIT_FAILED)


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
    universe_domain: StackUniverseOption = None,
    project_dir: ProjectDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Compare the live IAM policies with the stack's grants: missing, extra, public, basic."""
    from dicom_bq.flows.access import GoogleAccess
    from dicom_bq.flows.review import audit_stack
    from dicom_bq.flows.targets import Target

    result = audit_stack(
        target=Target(stack=stack, outputs=outputs, project_dir=project_dir),
        access=GoogleAccess(impersonate=impersonate, universe_domain=universe_domain),
    )
    if as_json:
        print_json(result.as_dict())
    else:
        typer.echo(result.text())
    raise typer.Exit(result.exit_code)


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
    from dicom_bq.flows.access import GoogleAccess
    from dicom_bq.flows.review import preflight_check
    from dicom_bq.flows.targets import Target

    report = preflight_check(
        target=Target(stack=stack, project_dir=project_dir),
        access=GoogleAccess(impersonate=impersonate),
    )
    _print_preflight(report, as_json)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def _print_preflight(report: PreflightReport, as_json: bool) -> None:
    from dicom_bq.flows.preflight import report_lines

    for note in report.notes:
        typer.echo(f"Note: {note}", err=True)
    if as_json:
        print_json(report.as_dict())
    else:
        typer.echo("\n".join(report_lines(report)))


@app.command("shared-grants")
@guarded
def shared_grants(
    stack: Annotated[
        str, typer.Option("--stack", "-s", help="Stack name, as in Pulumi.<stack>.yaml.")
    ],
    project_dir: ProjectDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """The grants the stack keeps when destroyed (on scopes it does not create), the other
    stacks that make the same ones, and the commands that check and remove each. Offline."""
    from dicom_bq.flows.review import shared_grants_of_stack
    from dicom_bq.flows.targets import Target

    found = shared_grants_of_stack(target=Target(stack=stack, project_dir=project_dir))
    if as_json:
        print_json(found.as_dict())
    else:
        typer.echo(found.text(), nl=False)
