"""The policy rules run on an offline plan: `dicom-bq plan --check` and `dicom-bq review`."""

from __future__ import annotations

from typing import Any

from dicom_bq.infra.policy_config import agent_grants, listed_grants, snapshot_grants
from dicom_bq.infra.policy_rules import Finding, PolicyContext, Resource, evaluate
from dicom_bq.stack.plan import Plan
from dicom_bq.vocabulary.settings import StackSettings


def plan_resources(plan: Plan) -> list[Resource]:
    return [Resource(r.type, r.name, r.inputs, r.protect) for r in plan.custom_resources()]


def plan_context(settings: StackSettings, grants: list[dict[str, Any]]) -> PolicyContext:
    return PolicyContext(
        protected=settings.protected,
        expected_grants=agent_grants(grants),
        allowed_bigquery_locations=(
            frozenset(settings.allowed_bigquery_locations)
            if settings.allowed_bigquery_locations is not None
            else None
        ),
        require_cmek=settings.require_cmek,
        # The agent is the source project's (service-NUMBER@...): DBQ012 ties its identity there.
        source_project=settings.source_project,
        source_project_number=settings.source_project_number,
        snapshot_grants=snapshot_grants(grants),
        listed_grants=listed_grants(grants),
    )


def check_plan(plan: Plan, settings: StackSettings) -> list[Finding]:
    return evaluate(plan_resources(plan), plan_context(settings, plan.grants))


def has_mandatory(findings: list[Finding]) -> bool:
    return any(f.enforcement == "mandatory" for f in findings)
