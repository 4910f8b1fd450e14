"""`dicom-bq review`: one document a security reviewer can attach, per stack."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dicom_bq.infra.policy_rules import RULES, Finding
from dicom_bq.security.roles import RolePermissions
from dicom_bq.stack.contract import StackOutputs
from dicom_bq.stack.plan import Plan
from dicom_bq.stack.render import findings_markdown


def review_document(
    plan: Plan, findings: list[Finding], lookup: Callable[[str], RolePermissions]
) -> dict[str, Any]:
    roles = {g["role"]: lookup(g["role"]) for g in plan.grants}
    outputs = StackOutputs.parse(plan.outputs)
    return {
        "stack": plan.stack,
        "agent": outputs.agent_email,
        "source_project": outputs.source_project,
        "bigquery_project": outputs.bigquery_project,
        "grants": [
            {
                **grant,
                "role_title": roles[grant["role"]].title,
                "permissions": list(roles[grant["role"]].permissions),
                "permissions_source": roles[grant["role"]].source,
            }
            for grant in plan.grants
        ],
        "policy": {
            "rules": len(RULES),
            "findings": [f.as_dict() for f in findings],
            "passed": not any(f.enforcement == "mandatory" for f in findings),
        },
        "notes": plan.notes,
    }


def review_markdown(document: dict[str, Any], findings: list[Finding]) -> str:
    grants = document["grants"]
    lines = [
        f"# Security review: dicom-bq stack `{document['stack']}`",
        "",
        f"- Cloud Healthcare service agent: `{document['agent']}` (of project "
        f"`{document['source_project']}`, the project that holds the DICOM store)",
        f"- BigQuery project: `{document['bigquery_project']}`",
        f"- Grants: {len(grants)}, all additive (`*IAMMember`); no grant replaces existing "
        "bindings.",
        f"- Policy: {document['policy']['rules']} rules, "
        + ("passed." if document["policy"]["passed"] else "**FAILED** (see below)."),
        "",
        "## Grants",
        "",
        "| role | on | why |",
        "|---|---|---|",
    ]
    for g in grants:
        lines.append(f"| `{g['role']}` | `{g['scope']}` | {g['reason']} |")
    lines.append("")
    for g in grants:
        lines += [
            f"### `{g['role']}`" + (f" ({g['role_title']})" if g["role_title"] else ""),
            "",
            f"- Member: `{g['member']}`",
            f"- On: `{g['scope']}`",
            f"- Why: {g['reason']}",
            f"- Permissions ({len(g['permissions'])}, from {g['permissions_source']}):",
            "",
        ]
        lines += [f"  - `{permission}`" for permission in g["permissions"]] or ["  - (unknown)"]
        lines.append("")
    lines.append(findings_markdown(findings))
    if document["notes"]:
        lines += ["## Notes", "", *[f"- {note}" for note in document["notes"]], ""]
    return "\n".join(lines)
