"""The policy rules run on an offline plan: `dicom-bq plan --check` and `dicom-bq review`."""

from __future__ import annotations

from typing import Any

from dicom_bq.planner import Plan
from infra.policy_rules import AGENT, ExpectedGrant, Finding, PolicyContext, Resource, evaluate
from infra.settings import StackSettings


def plan_resources(plan: Plan) -> list[Resource]:
    return [Resource(r.type, r.name, r.inputs, r.protect) for r in plan.custom_resources()]


def plan_context(settings: StackSettings, grants: list[dict[str, Any]]) -> PolicyContext:
    return PolicyContext(
        protected=settings.protected,
        expected_grants=frozenset(
            ExpectedGrant(g["role"], g["scope"]) for g in grants if AGENT.match(g["member"])
        ),
        allowed_bigquery_locations=(
            frozenset(settings.allowed_bigquery_locations)
            if settings.allowed_bigquery_locations is not None
            else None
        ),
        require_cmek=settings.require_cmek,
    )


def check_plan(plan: Plan, settings: StackSettings) -> list[Finding]:
    return evaluate(plan_resources(plan), plan_context(settings, plan.grants))


def has_mandatory(findings: list[Finding]) -> bool:
    return any(f.enforcement == "mandatory" for f in findings)
