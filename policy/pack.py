"""CrossGuard policies wrapping infra/policy_rules.py: one stack policy per rule."""

from __future__ import annotations

from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    StackValidationArgs,
    StackValidationPolicy,
)

from infra.policy_rules import AGENT, RULES, ExpectedGrant, PolicyContext, Resource, Rule

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
    }
)
_LEVELS = {"mandatory": EnforcementLevel.MANDATORY, "advisory": EnforcementLevel.ADVISORY}


def context_from(config: dict[str, Any]) -> PolicyContext:
    grants = config.get("expectedGrants")
    locations = config.get("allowedBigqueryLocations")
    return PolicyContext(
        protected=bool(config.get("protected", False)),
        expected_grants=frozenset(
            ExpectedGrant(g["role"], g["scope"])
            for g in grants
            if AGENT.match(g.get("member", "serviceAccount:service-0@gcp-sa-healthcare.x"))
        )
        if grants is not None
        else None,
        allowed_bigquery_locations=frozenset(locations) if locations is not None else None,
        require_cmek=bool(config.get("requireCmek", False)),
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
