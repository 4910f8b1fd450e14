"""CrossGuard policies wrapping infra/policy_rules.py: one stack policy per rule."""

from __future__ import annotations

from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    StackValidationArgs,
    StackValidationPolicy,
)

from dicom_bq.infra.policy_rules import (
    RULES,
    ExpectedGrant,
    PolicyContext,
    Resource,
    Rule,
    agent_project_number,
    is_agent,
    is_snapshot_account,
)

PACK_NAME = "dicom-bq"
CONFIG_SCHEMA = PolicyConfigSchema(
    properties={
        "protected": {"type": "boolean", "description": "The stack holds production PHI."},
        "allowedBigqueryLocations": {"type": "array", "items": {"type": "string"}},
        "requireCmek": {"type": "boolean"},
        "expectedGrants": {
            "type": "array",
            "items": {"type": "object"},
            "description": "The stack output `grants`: [{role, scope}]; else the role allow-list.",
        },
        "sourceProject": {
            "type": "string",
            "description": "The stack's dicom-bq:sourceProject: the agent's project (DBQ012).",
        },
        "sourceProjectNumber": {
            "type": "string",
            "description": "Its number; else read from the agent in expectedGrants.",
        },
    }
)
_LEVELS = {"mandatory": EnforcementLevel.MANDATORY, "advisory": EnforcementLevel.ADVISORY}


def _source_number(config: dict[str, Any], grants: list[dict[str, Any]] | None) -> str | None:
    """dicom-bq:sourceProjectNumber, else the number in the agent's address in `grants` (every
    grant the program outputs names the source project's agent)."""
    if config.get("sourceProjectNumber"):
        return str(config["sourceProjectNumber"])
    numbers = {agent_project_number(str(g.get("member", ""))) for g in grants or []} - {None}
    return numbers.pop() if len(numbers) == 1 else None


def context_from(config: dict[str, Any]) -> PolicyContext:
    grants = config.get("expectedGrants")
    locations = config.get("allowedBigqueryLocations")
    return PolicyContext(
        protected=bool(config.get("protected", False)),
        expected_grants=frozenset(
            ExpectedGrant(g["role"], g["scope"])
            for g in grants
            if is_agent(g.get("member", "serviceAccount:service-0@gcp-sa-healthcare.x"))
        )
        if grants is not None
        else None,
        allowed_bigquery_locations=frozenset(locations) if locations is not None else None,
        require_cmek=bool(config.get("requireCmek", False)),
        source_project=str(config["sourceProject"]) if config.get("sourceProject") else None,
        source_project_number=_source_number(config, grants),
        snapshot_grants=frozenset(
            ExpectedGrant(g["role"], g["scope"])
            for g in grants
            if is_snapshot_account(str(g.get("member", "")))
        )
        if grants is not None
        else None,
    )


def resources_from(args: StackValidationArgs) -> list[Resource]:
    return [
        Resource(r.resource_type, r.name, r.props, bool(getattr(r.opts, "protect", False)))
        for r in args.resources
    ]


def _policy(rule: Rule) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: Any) -> None:
        context = context_from(args.get_config() or {})
        for name, message in rule.check(resources_from(args), context):
            report_violation(f"{name}: {message}. Fix: {rule.remediation}", None)

    return StackValidationPolicy(
        name=f"{rule.id.lower()}-{rule.name}",
        description=rule.description,
        validate=validate,
        enforcement_level=_LEVELS[rule.enforcement],
        config_schema=CONFIG_SCHEMA,
        remediation_steps=rule.remediation,
    )


def policies() -> list[StackValidationPolicy]:
    return [_policy(rule) for rule in RULES]
