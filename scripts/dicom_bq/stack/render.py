"""Turning a plan into text for people: a rich table or Markdown. JSON is `Plan.as_dict`."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from dicom_bq.infra.policy_rules import RULES, Finding
from dicom_bq.stack.plan import Plan, PlannedResource

_KEY_INPUTS = (
    "project",
    "service",
    "location",
    "name",
    "datasetId",
    "dataset",
    "timeZone",
    "bucket",
    "topic",
    "cryptoKeyId",
    "role",
    "member",
    "createDuration",
    "deleteContentsOnDestroy",
    "disableOnDestroy",
)


def key_inputs(resource: PlannedResource) -> str:
    parts = [f"{key}={resource.inputs[key]}" for key in _KEY_INPUTS if key in resource.inputs]
    inputs = resource.inputs
    for stream in inputs.get("streamConfigs") or []:
        parts.append(f"stream={stream['bigqueryDestination']['tableUri']}")
    if inputs.get("notificationConfig"):
        parts.append(f"notify={inputs['notificationConfig']['pubsubTopic']}")
    for block in ("encryptionSpec", "defaultEncryptionConfiguration"):
        if inputs.get(block):
            parts.append(f"cmek={inputs[block]['kmsKeyName']}")
    return " ".join(parts)


def _flag(value: bool) -> str:
    return "yes" if value else "no"


def print_table(plan: Plan, console: Console) -> None:
    resources = Table(title=f"Resources of stack {plan.stack}", show_lines=False)
    for column in ("type", "name", "key inputs", "protect", "depends on"):
        resources.add_column(column, overflow="fold")
    for r in plan.custom_resources():
        resources.add_row(
            r.type, r.name, key_inputs(r), _flag(r.protect), ", ".join(r.depends_on) or "-"
        )
    console.print(resources)
    console.print(_grants_table(plan))
    for note in plan.notes:
        console.print(f"[yellow]note:[/] {note}")


def _grants_table(plan: Plan) -> Table:
    table = Table(title="Grants to the Cloud Healthcare service agent (additive members)")
    for column in ("role", "member", "scope", "why"):
        table.add_column(column, overflow="fold")
    for grant in plan.grants:
        table.add_row(grant["role"], grant["member"], grant["scope"], grant["reason"])
    return table


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(plan: Plan) -> str:
    lines = [
        f"# dicom-bq plan: stack `{plan.stack}`",
        "",
        "## Resources",
        "",
        "| type | name | key inputs | protect | depends on |",
        "|---|---|---|---|---|",
    ]
    for r in plan.custom_resources():
        lines.append(
            f"| `{r.type}` | `{r.name}` | {_cell(key_inputs(r))} | {_flag(r.protect)} | "
            f"{_cell(', '.join(r.depends_on) or '-')} |"
        )
    lines += [
        "",
        "## Grants to the Cloud Healthcare service agent",
        "",
        "| role | member | scope | why |",
        "|---|---|---|---|",
    ]
    for g in plan.grants:
        lines.append(f"| `{g['role']}` | `{g['member']}` | `{g['scope']}` | {_cell(g['reason'])} |")
    if plan.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in plan.notes]
    return "\n".join(lines) + "\n"


def print_findings(findings: list[Finding], console: Console) -> None:
    if not findings:
        console.print(f"[green]policy checks passed[/]: {len(RULES)} rules, no findings")
        return
    table = Table(title="Policy findings")
    for column in ("rule", "level", "resource", "finding", "fix"):
        table.add_column(column, overflow="fold")
    for f in findings:
        table.add_row(f.rule, f.enforcement, f.resource, f.message, f.remediation)
    console.print(table)


def findings_markdown(findings: list[Finding]) -> str:
    lines = ["## Policy checks", ""]
    if not findings:
        return "\n".join([*lines, f"All {len(RULES)} rules pass.", ""])
    lines += ["| rule | level | resource | finding | fix |", "|---|---|---|---|---|"]
    for f in findings:
        lines.append(
            f"| {f.rule} | {f.enforcement} | `{f.resource}` | {_cell(f.message)} | "
            f"{_cell(f.remediation)} |"
        )
    return "\n".join(lines) + "\n"
