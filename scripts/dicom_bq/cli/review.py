"""Planning and security review: plan, review, audit, preflight."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from dicom_bq.cli.common import (
    ImpersonateOption,
    JsonOption,
    ProjectDirOption,
    _connection,
    app,
    fail,
    guarded,
    print_json,
)
from dicom_bq.errors import DicomBqError


class PlanFormat(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"


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
        from dicom_bq.stack.config import find_project_dir, read_stack_config
        from dicom_bq.stack.plan import plan_stack

        folder = project_dir or find_project_dir()
        result = plan_stack(read_stack_config(folder, stack))
    except DicomBqError as error:
        fail(error)
    for note in result.notes:
        typer.echo(f"Note: {note}", err=True)
    findings: list[Any] = []
    if check:
        from dicom_bq.security.checks import check_plan

        assert result.settings is not None
        findings = check_plan(result, result.settings)
    if output_format is PlanFormat.json:
        document = result.as_dict()
        if check:
            document["findings"] = [f.as_dict() for f in findings]
        print_json(document)
    elif output_format is PlanFormat.markdown:
        from dicom_bq.stack.render import findings_markdown, markdown

        typer.echo(markdown(result), nl=False)
        if check:
            typer.echo("\n" + findings_markdown(findings), nl=False)
    else:
        from rich.console import Console

        from dicom_bq.stack.render import print_findings, print_table

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
        from dicom_bq.security import roles
        from dicom_bq.security.checks import check_plan
        from dicom_bq.security.review import review_document, review_markdown
        from dicom_bq.stack.config import find_project_dir, read_stack_config
        from dicom_bq.stack.plan import plan_stack

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
        from dicom_bq.security.audit import AuditTarget, run_audit

        if (stack is None) == (outputs is None):
            raise DicomBqError(
                "say what to audit with exactly one of --stack NAME or --outputs FILE"
            )
        if outputs is not None:
            from dicom_bq.stack.outputs import read_outputs_file

            target = AuditTarget.from_outputs(outputs.stem, read_outputs_file(outputs))
        else:
            from dicom_bq.stack.config import find_project_dir, read_stack_config
            from dicom_bq.stack.plan import plan_stack

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
        from dicom_bq.flows.preflight import preflight_stack
        from dicom_bq.stack.config import find_project_dir

        report = preflight_stack(
            stack=stack, project_dir=project_dir or find_project_dir(), impersonate=impersonate
        )
    except DicomBqError as error:
        fail(error)
    _print_preflight(report, as_json)
    if not report.ok:
        raise typer.Exit(1)


def _print_preflight(report: Any, as_json: bool) -> None:
    from dicom_bq.flows.preflight import report_lines

    for note in report.notes:
        typer.echo(f"Note: {note}", err=True)
    if as_json:
        print_json(report.as_dict())
    else:
        typer.echo("\n".join(report_lines(report)))
