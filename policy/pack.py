"""CrossGuard policies wrapping infra/policy_rules.py: one stack policy per rule.

Each policy's config is what `dicom-bq up` writes with --policy-pack-config
(dicom_bq.infra.policy_config, which reads it back here).
"""

from __future__ import annotations

from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    StackValidationArgs,
    StackValidationPolicy,
)

from dicom_bq.infra.policy_config import SCHEMA_PROPERTIES, context_from_config, policy_name
from dicom_bq.infra.policy_rules import RULES, Resource, Rule

PACK_NAME = "dicom-bq"
CONFIG_SCHEMA = PolicyConfigSchema(properties=SCHEMA_PROPERTIES)
_LEVELS = {"mandatory": EnforcementLevel.MANDATORY, "advisory": EnforcementLevel.ADVISORY}


def resources_from(args: StackValidationArgs) -> list[Resource]:
    return [
        Resource(r.resource_type, r.name, r.props, bool(getattr(r.opts, "protect", False)))
        for r in args.resources
    ]


def _policy(rule: Rule) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: Any) -> None:
        context = context_from_config(args.get_config() or {})
        for name, message in rule.check(resources_from(args), context):
            report_violation(f"{name}: {message}. Fix: {rule.remediation}", None)

    return StackValidationPolicy(
        name=policy_name(rule),
        description=rule.description,
        validate=validate,
        enforcement_level=_LEVELS[rule.enforcement],
        config_schema=CONFIG_SCHEMA,
        remediation_steps=rule.remediation,
    )


def policies() -> list[StackValidationPolicy]:
    return [_policy(rule) for rule in RULES]
