"""`dicom-bq review`: one document a security reviewer can attach, per stack.

It says who gets access (every identity the stack creates or grants to, with each grant's
permissions), what the stack builds that touches PHI (the DICOM stores and where they send
metadata), what watches it (alert policies) and what runs on its own (scheduler jobs).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Any

from dicom_bq.infra.policy_rules import RULES, Finding
from dicom_bq.security.audit import check_command
from dicom_bq.security.checks import has_mandatory
from dicom_bq.security.roles import CUSTOM_ROLE_SOURCE, RolePermissions, custom_role
from dicom_bq.security.stacks import kept_grants, remove_command
from dicom_bq.stack.plan import UNKNOWN_UNTIL_CREATED, Plan, PlannedResource
from dicom_bq.stack.render import (
    ALERT_POLICY,
    DICOM_STORE,
    LOG_METRIC,
    NOTIFICATION_CHANNEL,
    SCHEDULER_JOB,
    findings_markdown,
    markdown_cell,
)
from dicom_bq.vocabulary import naming
from dicom_bq.vocabulary.contract import StackOutputs

SERVICE_ACCOUNT = "gcp:serviceaccount/account:Account"

# Google-managed accounts by the domain of their address: service agents are
# service-NUMBER@gcp-sa-SERVICE.iam.gserviceaccount.com
# (https://cloud.google.com/iam/docs/service-agents); BigQuery's encryption account is
# bq-NUMBER@bigquery-encryption.iam.gserviceaccount.com
# (https://cloud.google.com/bigquery/docs/customer-managed-encryption).
_SERVICE_AGENT = re.compile(r"^service-\d+@gcp-sa-(?P<service>[a-z0-9-]+)\.")
_AGENT_TITLES = {
    "healthcare": ("agent", "Cloud Healthcare service agent"),
    "cloudscheduler": ("scheduler", "Cloud Scheduler service agent"),
}
_BIGQUERY_ENCRYPTION = re.compile(r"^bq-\d+@bigquery-encryption\.")
# An alert condition on a log-based metric names it as logging.googleapis.com/user/NAME
# (https://cloud.google.com/logging/docs/logs-based-metrics/charts-and-alerts).
_LOG_METRIC_TYPE = re.compile(r'metric\.type="logging\.googleapis\.com/user/(?P<name>[^"]+)"')


def _number(value: Any) -> Any:
    # Numbers cross the engine's wire as doubles (a protobuf Struct): 0.0 retries are 0.
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _identity(
    member: str, principal: str | None, accounts: dict[str, PlannedResource]
) -> dict[str, Any]:
    """Who a member is, as a reviewer asks: Google-managed or created by the stack."""
    kind, _, email = member.partition(":")
    created = accounts.get(email.partition("@")[0]) if kind == "serviceAccount" else None
    if created is not None:
        return {
            "principal": principal or "service_account",
            "title": f"Service account {created.inputs['accountId']}",
            "description": str(created.inputs.get("displayName") or ""),
            "origin": f"created by the stack ({created.type} {created.name})",
        }
    agent = _SERVICE_AGENT.match(email)
    if agent is not None:
        service = agent["service"]
        default_principal, title = _AGENT_TITLES.get(
            service, (service, f"service agent of {service}")
        )
        return {
            "principal": principal or default_principal,
            "title": title,
            "description": "",
            "origin": "Google-managed service agent of its project",
        }
    if _BIGQUERY_ENCRYPTION.match(email):
        return {
            "principal": principal or "bigquery_encryption",
            "title": "BigQuery encryption account",
            "description": "",
            "origin": "Google-managed; uses the BigQuery dataset's key for BigQuery",
        }
    return {
        "principal": principal or member,
        "title": member,
        "description": "",
        "origin": "named in the settings",
    }


def _identities(plan: Plan, grants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per member the grants name, in the grants' order, each with its grants; then
    the service accounts the stack creates and grants nothing to (they still exist)."""
    accounts = {
        str(r.inputs["accountId"]): r
        for r in plan.custom_resources()
        if r.type == SERVICE_ACCOUNT and r.inputs.get("accountId")
    }
    identities: dict[str, dict[str, Any]] = {}
    for grant in grants:
        member = grant["member"]
        if member not in identities:
            identities[member] = {
                "member": member,
                **_identity(member, grant.get("principal"), accounts),
                "grants": [],
            }
        identities[member]["grants"].append(grant)
    for account_id, resource in accounts.items():
        if not any(m.split("@")[0] == f"serviceAccount:{account_id}" for m in identities):
            email = naming.service_account_email(account_id, str(resource.inputs.get("project")))
            member = f"serviceAccount:{email}"
            identities[member] = {
                "member": member,
                **_identity(member, None, accounts),
                "grants": [],
            }
    return list(identities.values())


def _dicom_stores(plan: Plan, outputs: StackOutputs) -> list[dict[str, Any]]:
    snapshot_tables = {s.name: s.snapshot_table for s in outputs.stores}
    stores = []
    for r in plan.custom_resources():
        if r.type != DICOM_STORE:
            continue
        name = f"{r.inputs.get('dataset')}/dicomStores/{r.inputs.get('name')}"
        notification = r.inputs.get("notificationConfig") or None
        stores.append(
            {
                "name": name,
                "labels": dict(r.inputs.get("labels") or {}),
                "notification": notification
                and {
                    "pubsub_topic": notification.get("pubsubTopic"),
                    "send_for_bulk_import": bool(notification.get("sendForBulkImport")),
                },
                "streams": [
                    stream["bigqueryDestination"]["tableUri"]
                    for stream in r.inputs.get("streamConfigs") or []
                ],
                "snapshot_table": snapshot_tables.get(name),
                "protected": r.protect,
            }
        )
    return stores


def _alert_policies(plan: Plan) -> list[dict[str, Any]]:
    resources = plan.custom_resources()
    metric_filters = {
        str(r.inputs.get("name")): str(r.inputs.get("filter", ""))
        for r in resources
        if r.type == LOG_METRIC
    }
    created_channels = {r.name: r for r in resources if r.type == NOTIFICATION_CHANNEL}
    policies = []
    for r in resources:
        if r.type != ALERT_POLICY:
            continue
        watches = []
        for condition in r.inputs.get("conditions") or []:
            threshold = condition.get("conditionThreshold") or {}
            metric = _LOG_METRIC_TYPE.search(str(threshold.get("filter", "")))
            watches.append(
                {
                    "condition": condition.get("displayName"),
                    "metric_filter": threshold.get("filter"),
                    "log_metric": metric and metric["name"],
                    "log_filter": metric and metric_filters.get(metric["name"]),
                    "comparison": threshold.get("comparison"),
                    "threshold": _number(threshold.get("thresholdValue")),
                }
            )
        # A channel the stack creates has no name until then; the policy depends on it.
        notifies = [
            _channel_text(created_channels[name])
            for name in r.depends_on
            if name in created_channels
        ] + [c for c in r.inputs.get("notificationChannels") or [] if c != UNKNOWN_UNTIL_CREATED]
        policies.append(
            {
                "display_name": r.inputs.get("displayName"),
                "severity": r.inputs.get("severity"),
                "watches": watches,
                "notifies": notifies,
            }
        )
    return policies


def _channel_text(channel: PlannedResource) -> str:
    # Cloud Monitoring's email channel keeps its address in labels.email_address
    # (https://cloud.google.com/monitoring/support/notification-options).
    labels = channel.inputs.get("labels") or {}
    address = labels.get("email_address")
    kind = channel.inputs.get("type", "channel")
    return (
        f"{kind} {address} (created by the stack)" if address else f"{kind} (created by the stack)"
    )


def _scheduler_jobs(plan: Plan) -> list[dict[str, Any]]:
    jobs = []
    for r in plan.custom_resources():
        if r.type != SCHEDULER_JOB:
            continue
        # Cloud Scheduler v1 Job (https://cloud.google.com/scheduler/docs/reference/rest/v1/
        # projects.locations.jobs): an HttpTarget with a base64 body, and retryConfig.
        target = r.inputs.get("httpTarget") or {}
        uri = str(target.get("uri", ""))
        store = re.sub(r"^https://[^/]+/v1[^/]*/", "", uri)
        body = _json_body(target.get("body"))
        destination = body.get("bigqueryDestination") or {}
        jobs.append(
            {
                "name": r.inputs.get("name"),
                "region": r.inputs.get("region"),
                "schedule": r.inputs.get("schedule"),
                "time_zone": r.inputs.get("timeZone"),
                "http": f"{target.get('httpMethod', 'POST')} {uri}",
                "target_store": store.removesuffix(":export")
                if store.endswith(":export")
                else None,
                "table": destination.get("tableUri"),
                "write_disposition": destination.get("writeDisposition"),
                "runs_as": (target.get("oauthToken") or {}).get("serviceAccountEmail"),
                "oauth_scope": (target.get("oauthToken") or {}).get("scope"),
                "retry_count": _number((r.inputs.get("retryConfig") or {}).get("retryCount", 0)),
                "attempt_deadline": r.inputs.get("attemptDeadline"),
            }
        )
    return jobs


def _json_body(body: Any) -> dict[str, Any]:
    """The request body a job sends: pulumi-gcp takes HttpTarget.body base64-encoded."""
    if not isinstance(body, str) or not body:
        return {}
    try:
        decoded = json.loads(base64.b64decode(body, validate=True))
    except (binascii.Error, ValueError):
        return {}
    return decoded if isinstance(decoded, dict) else {}


def review_document(
    plan: Plan, findings: list[Finding], lookup: Callable[[str], RolePermissions]
) -> dict[str, Any]:
    stack_roles = {
        role.role: role
        for role in (custom_role(r.type, r.inputs) for r in plan.custom_resources())
        if role is not None
    }
    roles = {g["role"]: stack_roles.get(g["role"]) or lookup(g["role"]) for g in plan.grants}
    outputs = StackOutputs.parse(plan.outputs)
    grants = [
        {
            **grant,
            "role_title": roles[grant["role"]].title,
            "permissions": list(roles[grant["role"]].permissions),
            "permissions_source": roles[grant["role"]].source,
        }
        for grant in plan.grants
    ]
    return {
        "stack": plan.stack,
        "agent": outputs.agent_email,
        "source_project": outputs.source_project,
        "bigquery_project": outputs.bigquery_project,
        "identities": _identities(plan, grants),
        "grants": grants,
        "dicom_stores": _dicom_stores(plan, outputs),
        "alert_policies": _alert_policies(plan),
        "scheduler_jobs": _scheduler_jobs(plan),
        "kept_on_delete": [
            {
                **kept.as_dict(),
                "check": check_command(kept.scope),
                "remove": remove_command(kept.scope, kept.member, kept.role),
            }
            for kept in kept_grants(plan)
        ],
        "policy": {
            "rules": len(RULES),
            "findings": [f.as_dict() for f in findings],
            "passed": not has_mandatory(findings),
        },
        "notes": plan.notes,
    }


def _code(value: Any) -> str:
    return f"`{markdown_cell(value)}`" if value not in (None, "") else "-"


def _store_line(store: dict[str, Any]) -> str:
    parts = []
    if store["labels"]:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(store["labels"].items()))
        parts.append(f"labels {_code(labels)}")
    notification = store["notification"]
    if notification:
        parts.append(
            f"notifies {_code(notification['pubsub_topic'])}"
            + (" (bulk imports too)" if notification["send_for_bulk_import"] else "")
        )
    else:
        parts.append("no notification")
    if store["streams"]:
        parts.append("streams to " + ", ".join(_code(t) for t in store["streams"]))
    else:
        parts.append("no streams")
    if store["snapshot_table"]:
        parts.append(f"nightly snapshot to {_code(store['snapshot_table'])}")
    if store["protected"]:
        parts.append("protected")
    return f"- {_code(store['name'])}: " + "; ".join(parts)


def _permission_lines(grant: dict[str, Any]) -> list[str]:
    permissions, source = grant["permissions"], grant["permissions_source"]
    if permissions:
        return [
            f"- Permissions ({len(permissions)}, from {source}):",
            "",
            *[f"  - `{permission}`" for permission in permissions],
        ]
    if source == CUSTOM_ROLE_SOURCE:
        return [f"- Permissions: none (from {source})."]
    return [
        f"- Permissions: unknown ({source}); `dicom-bq review --online` reads them from the "
        "IAM API."
    ]


def _identity_line(identity: dict[str, Any]) -> str:
    count = len(identity["grants"])
    described = f" ({identity['description']})" if identity["description"] else ""
    return (
        f"- {identity['title']}{described}: `{identity['member']}`, {identity['origin']}; "
        f"{count} grant{'s' if count != 1 else ''}"
    )


def _kept_lines(kept: list[dict[str, Any]], stack: str) -> list[str]:
    """The grants `pulumi destroy` leaves in place, and how to remove each by hand."""
    lines = ["## Grants kept when the stack is destroyed", ""]
    if not kept:
        return [*lines, "None: every grant is on a scope the stack creates.", ""]
    lines += [
        "These grants are on scopes the stack does not create, where another stack of this "
        "project or a person may hold the same binding: deleting an additive IAM member removes "
        "the binding for every holder, so the stack keeps them on delete (Pulumi's "
        f"`retainOnDelete`). Once the stack is gone, `dicom-bq shared-grants --stack {stack}` "
        "says which other stacks still make each; remove the others by hand:",
        "",
        "| role | member | on | remove with |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| `{g['role']}` | `{g['member']}` | `{g['scope']}` | {_code(g['remove'])} |" for g in kept
    ]
    return [*lines, ""]


def review_markdown(document: dict[str, Any], findings: list[Finding]) -> str:
    grants = document["grants"]
    identities = document["identities"]
    lines = [
        f"# Security review: dicom-bq stack `{document['stack']}`",
        "",
        f"- Source project (holds the DICOM stores): `{document['source_project']}`",
        f"- BigQuery project: `{document['bigquery_project']}`",
        f"- Identities: {len(identities)}",
        *[f"  {_identity_line(identity)}" for identity in identities],
        f"- Grants: {len(grants)}, all additive (`*IAMMember`); no grant replaces existing "
        "bindings.",
        f"- Kept when the stack is destroyed: {len(document['kept_on_delete'])} grant(s), on "
        "scopes the stack does not create (below).",
        f"- DICOM stores: {len(document['dicom_stores'])}; alert policies: "
        f"{len(document['alert_policies'])}; scheduler jobs: {len(document['scheduler_jobs'])}",
        f"- Policy: {document['policy']['rules']} rules, "
        + ("passed." if document["policy"]["passed"] else "**FAILED** (see below)."),
        "",
        "## Grants",
        "",
        "| identity | role | member | on | why |",
        "|---|---|---|---|---|",
    ]
    titles = {identity["member"]: identity["title"] for identity in identities}
    for g in grants:
        lines.append(
            f"| {markdown_cell(titles[g['member']])} | `{g['role']}` | `{g['member']}` "
            f"| `{g['scope']}` | {markdown_cell(g['reason'])} |"
        )
    lines.append("")
    for identity in identities:
        lines += [f"## {identity['title']}: `{identity['member']}`", ""]
        origin = identity["origin"]
        described = f" Display name: {identity['description']}." if identity["description"] else ""
        lines += [f"{origin[:1].upper()}{origin[1:]}.{described}", ""]
        if not identity["grants"]:
            lines += ["No grants.", ""]
        for g in identity["grants"]:
            lines += [
                f"### `{g['role']}`" + (f" ({g['role_title']})" if g["role_title"] else ""),
                "",
                f"- Member: `{g['member']}`",
                f"- On: `{g['scope']}`",
                f"- Why: {g['reason']}",
                *_permission_lines(g),
                "",
            ]
    lines += _kept_lines(document["kept_on_delete"], document["stack"])
    lines += ["## DICOM stores", ""]
    lines += [_store_line(store) for store in document["dicom_stores"]] or ["None."]
    lines += ["", "## Alert policies", ""]
    if document["alert_policies"]:
        lines += ["| policy | severity | watches | notifies |", "|---|---|---|---|"]
        for policy in document["alert_policies"]:
            watches = "<br>".join(
                f"{markdown_cell(w['condition'])}: "
                + (
                    f"log entries matching {_code(w['log_filter'])}"
                    if w["log_filter"]
                    else _code(w["metric_filter"])
                )
                for w in policy["watches"]
            )
            lines.append(
                f"| {markdown_cell(policy['display_name'])} "
                f"| {markdown_cell(policy['severity'] or '-')} | {watches or '-'} "
                f"| {markdown_cell(', '.join(policy['notifies']) or '-')} |"
            )
    else:
        lines.append("None.")
    lines += ["", "## Scheduler jobs", ""]
    if document["scheduler_jobs"]:
        lines += [
            "| job | schedule | time zone | exports store | to table | retries | runs as |",
            "|---|---|---|---|---|---|---|",
        ]
        for job in document["scheduler_jobs"]:
            table = _code(job["table"]) + (
                f" ({job['write_disposition']})" if job["write_disposition"] else ""
            )
            lines.append(
                f"| {_code(job['name'])} | {_code(job['schedule'])} "
                f"| {markdown_cell(job['time_zone'])} "
                f"| {_code(job['target_store'] or job['http'])} | {table} | "
                f"{job['retry_count']} | {_code(job['runs_as'])} |"
            )
    else:
        lines.append("None.")
    lines.append("")
    lines.append(findings_markdown(findings))
    if document["notes"]:
        lines += ["## Notes", "", *[f"- {note}" for note in document["notes"]], ""]
    return "\n".join(lines)
