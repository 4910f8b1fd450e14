"""Turning a plan into text for people: a rich table or Markdown. JSON is `Plan.as_dict`."""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.table import Table

from dicom_bq.infra.policy_rules import RULES, Finding
from dicom_bq.stack.plan import Plan, PlannedResource
from dicom_bq.texts import MIN_WIDTH

_KEY_INPUTS = (
    "project",
    "service",
    "location",
    "region",
    "name",
    "accountId",
    "roleId",
    "displayName",
    "datasetId",
    "dataset",
    "schedule",
    "timeZone",
    "bucket",
    "topic",
    "cryptoKeyId",
    "role",
    "member",
    "createDuration",
    "deleteContentsOnDestroy",
    "disableOnDestroy",
    "universeDomain",
)

DICOM_STORE = "gcp:healthcare/dicomStore:DicomStore"
SCHEDULER_JOB = "gcp:cloudscheduler/job:Job"
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
NOTIFICATION_CHANNEL = "gcp:monitoring/notificationChannel:NotificationChannel"
LOG_METRIC = "gcp:logging/metric:Metric"
ALERT_POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"


def input_text(value: Any) -> str:
    """An input as people write it: numbers arrive as floats (the engine's wire form is a
    protobuf Struct, whose only number is a double), so 0.0 retries read 0."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ", ".join(input_text(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{key}={input_text(item)}" for key, item in sorted(value.items()))
    return str(value)


def _dicom_store_pairs(inputs: dict[str, Any]) -> list[tuple[str, str]]:
    pairs = [("labels", input_text(inputs["labels"]))] if inputs.get("labels") else []
    for stream in inputs.get("streamConfigs") or []:
        pairs.append(("stream", stream["bigqueryDestination"]["tableUri"]))
    notification = inputs.get("notificationConfig") or {}
    if notification:
        pairs.append(("notify", notification["pubsubTopic"]))
        # Healthcare v1 NotificationConfig.sendForBulkImport: bulk imports notify too.
        if "sendForBulkImport" in notification:
            pairs.append(("sendForBulkImport", input_text(notification["sendForBulkImport"])))
    return pairs


def _scheduler_job_pairs(inputs: dict[str, Any]) -> list[tuple[str, str]]:
    # Cloud Scheduler v1 Job: httpTarget.uri, httpTarget.oauthToken.scope,
    # retryConfig.retryCount (https://cloud.google.com/scheduler/docs/reference/rest/v1/projects.locations.jobs).
    target = inputs.get("httpTarget") or {}
    pairs = []
    if target.get("uri"):
        pairs.append(("calls", f"{target.get('httpMethod', 'POST')} {target['uri']}"))
    token = target.get("oauthToken") or {}
    if token.get("serviceAccountEmail"):
        pairs.append(("as", token["serviceAccountEmail"]))
    if token.get("scope"):
        pairs.append(("oauthScope", token["scope"]))
    retry = inputs.get("retryConfig") or {}
    if "retryCount" in retry:
        pairs.append(("retryCount", input_text(retry["retryCount"])))
    return pairs


def _custom_role_pairs(inputs: dict[str, Any]) -> list[tuple[str, str]]:
    return [("permissions", input_text(inputs.get("permissions") or []) or "(none)")]


def _notification_channel_pairs(inputs: dict[str, Any]) -> list[tuple[str, str]]:
    # An email channel's address is its email_address label (Cloud Monitoring v3
    # NotificationChannel.labels; https://cloud.google.com/monitoring/support/notification-options).
    labels = inputs.get("labels") or {}
    pairs = [("channel", str(inputs["type"]))] if inputs.get("type") else []
    if labels.get("email_address"):
        pairs.append(("email", str(labels["email_address"])))
    return pairs


def _log_metric_pairs(inputs: dict[str, Any]) -> list[tuple[str, str]]:
    return [("filter", str(inputs["filter"]))] if inputs.get("filter") else []


def _alert_policy_pairs(inputs: dict[str, Any]) -> list[tuple[str, str]]:
    pairs = [
        ("watches", str(condition["conditionThreshold"]["filter"]))
        for condition in inputs.get("conditions") or []
        if (condition.get("conditionThreshold") or {}).get("filter")
    ]
    channels = inputs.get("notificationChannels") or []
    if channels:
        pairs.append(("notifies", input_text(channels)))
    return pairs


_TYPE_PAIRS = {
    DICOM_STORE: _dicom_store_pairs,
    SCHEDULER_JOB: _scheduler_job_pairs,
    CUSTOM_ROLE: _custom_role_pairs,
    NOTIFICATION_CHANNEL: _notification_channel_pairs,
    LOG_METRIC: _log_metric_pairs,
    ALERT_POLICY: _alert_policy_pairs,
}


def key_input_pairs(resource: PlannedResource) -> list[tuple[str, str]]:
    inputs = resource.inputs
    pairs = [(key, input_text(inputs[key])) for key in _KEY_INPUTS if key in inputs]
    type_pairs = _TYPE_PAIRS.get(resource.type)
    if type_pairs is not None:
        pairs += type_pairs(inputs)
    for block in ("encryptionSpec", "defaultEncryptionConfiguration"):
        if inputs.get(block):
            pairs.append(("cmek", inputs[block]["kmsKeyName"]))
    return pairs


def key_inputs(resource: PlannedResource) -> str:
    """The key inputs in one Markdown table cell: values hold spaces (a schedule, a filter) and
    asterisks (0 2 * * *), so each is code, one a line."""
    return "<br>".join(f"{key}: `{value}`" for key, value in key_input_pairs(resource))


def _flag(value: bool) -> str:
    return "yes" if value else "no"


# Where a long value may break without splitting a name: after a path, member-kind or list
# separator (never inside an e-mail address or a role).
_BREAK_AFTER = re.compile(r"(?<=[/:, ])")


def wrap_value(value: str, *, width: int, first: str, rest: str) -> list[str]:
    """`first` + value on lines of at most `width`, continued after `rest`, broken only after
    a separator (space / : ,), so resource names and roles stay whole. A piece with no
    separator that is longer than a whole line is the one thing folded."""
    # However narrow the width asked (COLUMNS=0), a line holds its prefix and one character:
    # every turn of the loop below then takes at least one.
    width = max(width, len(first) + 1, len(rest) + 1)
    lines: list[str] = []
    line, fresh = first, True
    for piece in (piece for piece in _BREAK_AFTER.split(value) if piece):
        if not fresh and len(line) + len(piece.rstrip()) > width:
            lines.append(line.rstrip())
            line, fresh = rest, True
        while piece.rstrip() and len(line) + len(piece.rstrip()) > width:
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
    width = max(width, MIN_WIDTH)
    resources = plan.custom_resources()
    lines = [*universe_lines(plan, width), f"Resources of stack {plan.stack}: {len(resources)}"]
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


def universe_text(plan: Plan) -> str | None:
    """Where the deployment goes: the stack's universe and the gcp provider that takes it there."""
    if plan.gcp_provider is None:
        return None
    return f"Universe: {plan.gcp_provider.describe()}"


def universe_lines(plan: Plan, width: int) -> list[str]:
    text = universe_text(plan)
    return [*wrap_value(text, width=width, first="", rest="    "), ""] if text else []


def readable(console: Console) -> Console:
    """`console`, at least MIN_WIDTH wide: rich takes COLUMNS as it is, and prints nothing at
    all at width 0 (COLUMNS=0), and a table a letter a column at 3."""
    if console.width < MIN_WIDTH:
        console.width = MIN_WIDTH
    return console


def print_table(plan: Plan, console: Console) -> None:
    # The console's width is the terminal's, or COLUMNS' when piped (rich reads both), or 80.
    readable(console)
    text = "\n".join(plan_lines(plan, width=console.width))
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def markdown_cell(value: Any) -> str:
    """Text safe in one Markdown table cell: a pipe would end the cell, a newline the row."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(plan: Plan) -> str:
    lines = [
        f"# dicom-bq plan: stack `{plan.stack}`",
        "",
        *([universe, ""] if (universe := universe_text(plan)) else []),
        "## Resources",
        "",
        "| type | name | key inputs | protect | depends on |",
        "|---|---|---|---|---|",
    ]
    for r in plan.custom_resources():
        lines.append(
            f"| `{r.type}` | `{r.name}` | {markdown_cell(key_inputs(r))} | {_flag(r.protect)} | "
            f"{markdown_cell(', '.join(r.depends_on) or '-')} |"
        )
    lines += [
        "",
        "## Grants to the Cloud Healthcare service agent",
        "",
        "| role | member | scope | why |",
        "|---|---|---|---|",
    ]
    for g in plan.grants:
        lines.append(
            f"| `{g['role']}` | `{g['member']}` | `{g['scope']}` | {markdown_cell(g['reason'])} |"
        )
    if plan.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in plan.notes]
    return "\n".join(lines) + "\n"


def print_findings(findings: list[Finding], console: Console) -> None:
    readable(console)
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
            f"| {f.rule} | {f.enforcement} | `{f.resource}` | {markdown_cell(f.message)} | "
            f"{markdown_cell(f.remediation)} |"
        )
    return "\n".join(lines) + "\n"
