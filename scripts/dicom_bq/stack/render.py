"""Turning a plan into text for people: a rich table or Markdown. JSON is `Plan.as_dict`."""

from __future__ import annotations

import re
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


def key_input_pairs(resource: PlannedResource) -> list[tuple[str, str]]:
    inputs = resource.inputs
    pairs = [(key, str(inputs[key])) for key in _KEY_INPUTS if key in inputs]
    for stream in inputs.get("streamConfigs") or []:
        pairs.append(("stream", stream["bigqueryDestination"]["tableUri"]))
    if inputs.get("notificationConfig"):
        pairs.append(("notify", inputs["notificationConfig"]["pubsubTopic"]))
    for block in ("encryptionSpec", "defaultEncryptionConfiguration"):
        if inputs.get(block):
            pairs.append(("cmek", inputs[block]["kmsKeyName"]))
    return pairs


def key_inputs(resource: PlannedResource) -> str:
    return " ".join(f"{key}={value}" for key, value in key_input_pairs(resource))


def _flag(value: bool) -> str:
    return "yes" if value else "no"


# Where a long value may break without splitting a name: after a path, member-kind or list
# separator (never inside an e-mail address or a role).
_BREAK_AFTER = re.compile(r"(?<=[/:, ])")


def wrap_value(value: str, *, width: int, first: str, rest: str) -> list[str]:
    """`first` + value on lines of at most `width`, continued after `rest`, broken only after
    a separator (space / : ,), so resource names and roles stay whole. A piece with no
    separator that is longer than a whole line is the one thing folded."""
    lines: list[str] = []
    line, fresh = first, True
    for piece in (piece for piece in _BREAK_AFTER.split(value) if piece):
        if not fresh and len(line) + len(piece.rstrip()) > width:
            lines.append(line.rstrip())
            line, fresh = rest, True
        while len(line) + len(piece.rstrip()) > width:
            room = max(width - len(line), 1)
            lines.append(line + piece[:room])
            line, piece = rest, piece[room:]
        line, fresh = line + piece, False
    lines.append(line.rstrip())
    return lines


def _field(key: str, value: str, width: int) -> list[str]:
    return wrap_value(value, width=width, first=f"  {key}: ", rest="      ")


def plan_lines(plan: Plan, *, width: int) -> list[str]:
    """The plan as blocks, one per resource and one per grant, each line at most `width`
    (an 80-column terminal included): a table of five columns split names mid-word."""
    resources = plan.custom_resources()
    lines = [f"Resources of stack {plan.stack}: {len(resources)}"]
    for r in resources:
        protect = "  (protected)" if r.protect else ""
        lines += ["", *wrap_value(r.name + protect, width=width, first="", rest="    ")]
        lines += _field("type", r.type, width)
        for key, value in key_input_pairs(r):
            lines += _field(key, value, width)
        lines += _field("depends on", ", ".join(r.depends_on) or "-", width)
    lines += ["", f"Grants (additive IAM members): {len(plan.grants)}"]
    for grant in plan.grants:
        lines += ["", *wrap_value(grant["role"], width=width, first="", rest="    ")]
        lines += _field("member", grant["member"], width)
        lines += _field("scope", grant["scope"], width)
        lines += _field("why", grant["reason"], width)
    for note in plan.notes:
        lines += ["", *wrap_value(note, width=width, first="note: ", rest="      ")]
    return lines


def print_table(plan: Plan, console: Console) -> None:
    # The console's width is the terminal's, or COLUMNS' when piped (rich reads both), or 80.
    text = "\n".join(plan_lines(plan, width=console.width))
    console.print(text, markup=False, highlight=False, soft_wrap=True)


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
