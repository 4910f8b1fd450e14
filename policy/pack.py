"""CrossGuard policies wrapping infra/policy_rules.py: one stack policy per rule.

Each policy's config is what `dicom-bq up` writes with --policy-pack-config
(dicom_bq.infra.policy_config, which reads it back here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    StackValidationArgs,
    StackValidationPolicy,
    proxy,
)

from dicom_bq.infra.policy_config import SCHEMA_PROPERTIES, context_from_config, policy_name
from dicom_bq.infra.policy_rules import RULES, UNKNOWN, Resource, Rule

PACK_NAME = "dicom-bq"
CONFIG_SCHEMA = PolicyConfigSchema(properties=SCHEMA_PROPERTIES)
_LEVELS = {"mandatory": EnforcementLevel.MANDATORY, "advisory": EnforcementLevel.ADVISORY}


# pulumi_policy's stand-ins for a value computed during the update (pulumi_policy/proxy.py).
PREVIEW_UNKNOWNS = frozenset(
    {
        proxy.UNKNOWN_BOOLEAN_VALUE,
        proxy.UNKNOWN_NUMBER_VALUE,
        proxy.UNKNOWN_STRING_VALUE,
        proxy.UNKNOWN_ARRAY_VALUE,
        proxy.UNKNOWN_ASSET_VALUE,
        proxy.UNKNOWN_ARCHIVE_VALUE,
        proxy.UNKNOWN_OBJECT_VALUE,
    }
)


def plain(value: Any) -> Any:
    """CrossGuard's props as plain dicts and lists, each unknown value as the rules' marker
    (policy_rules.UNKNOWN). Read through CrossGuard's proxy, one value not known during preview
    (a new account's email) raises UnknownValueError, and CrossGuard then skips the whole policy
    with an advisory note: every grant would go unchecked. The proxy hands its contents over
    under the key "__target" (pulumi_policy/proxy.py)."""
    if isinstance(value, str) and value in PREVIEW_UNKNOWNS:
        return UNKNOWN
    if isinstance(value, Mapping):
        inner = value.get("__target", value)
        return {str(key): plain(item) for key, item in inner.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        try:
            inner = value["__target"]  # type: ignore[call-overload]
        except (KeyError, TypeError, IndexError):
            inner = value
        return [plain(item) for item in inner]
    return value


def resources_from(args: StackValidationArgs) -> list[Resource]:
    return [
        Resource(r.resource_type, r.name, plain(r.props), bool(getattr(r.opts, "protect", False)))
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
