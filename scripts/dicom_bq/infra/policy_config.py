"""The CrossGuard pack's config: written by `dicom-bq up` from the stack's plan, read back by
policy/pack.py and by the offline checks, so the three agree on what each key means.

Pulumi hands the pack a JSON file per `--policy-pack` (`pulumi up --policy-pack-config FILE`,
https://www.pulumi.com/docs/iac/cli/commands/pulumi_up/), keyed by policy name, each policy's
value holding its config properties ("Configuring policy packs",
https://www.pulumi.com/docs/iac/using-pulumi/crossguard/configuration/); the keys "all" and
"enforcementLevel" are the engine's. Standard library only: the pack's environment holds dicom_bq
without its dependencies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dicom_bq.infra.policy_rules import (
    RULES,
    ExpectedGrant,
    ListedGrant,
    PolicyContext,
    Rule,
    agent_project_number,
    canonical_member,
    is_agent,
    is_snapshot_account,
    resolved,
)

PROTECTED = "protected"
ALLOWED_LOCATIONS = "allowedBigqueryLocations"
REQUIRE_CMEK = "requireCmek"
EXPECTED_GRANTS = "expectedGrants"
SOURCE_PROJECT = "sourceProject"
SOURCE_PROJECT_NUMBER = "sourceProjectNumber"

# The JSON Schema of each policy's config (PolicyConfigSchema's `properties`).
SCHEMA_PROPERTIES: dict[str, dict[str, Any]] = {
    PROTECTED: {"type": "boolean", "description": "The stack holds production PHI."},
    ALLOWED_LOCATIONS: {"type": "array", "items": {"type": "string"}},
    REQUIRE_CMEK: {"type": "boolean"},
    EXPECTED_GRANTS: {
        "type": "array",
        "items": {"type": "object"},
        "description": "The stack output `grants`: [{role, member, scope, reason}]; else the "
        "role allow-list.",
    },
    SOURCE_PROJECT: {
        "type": "string",
        "description": "The stack's dicom-bq:sourceProject: the agent's project (DBQ012).",
    },
    SOURCE_PROJECT_NUMBER: {
        "type": "string",
        "description": "Its number; else read from the agent in expectedGrants.",
    },
}


class PolicyConfigError(ValueError):
    """The pack's config is not what `dicom-bq up` writes."""


def policy_name(rule: Rule) -> str:
    """The CrossGuard policy's name for a rule, the key of its config."""
    return f"{rule.id.lower()}-{rule.name}"


def grants_list(value: object) -> list[dict[str, str]]:
    """The `grants` output's shape, [{role, member, scope, reason}] (OutputNames.GRANTS, built by
    infra/grants.py Grant.as_dict): role, member and scope are required, as everywhere."""
    if not isinstance(value, list) or not all(
        isinstance(g, dict) and {"role", "member", "scope"} <= g.keys() for g in value
    ):
        raise PolicyConfigError(
            f"{EXPECTED_GRANTS} is not a list of grants (role, member, scope): pass the stack "
            "output `grants`"
        )
    return [{str(k): str(v) for k, v in g.items()} for g in value]


def agent_grants(grants: Iterable[Mapping[str, str]]) -> frozenset[ExpectedGrant]:
    """The agent's (role, scope) pairs; an agent whose number the plan could not know is still
    the agent (service-PROJECT_NUMBER_OF_p@gcp-sa-healthcare...)."""
    return frozenset(
        ExpectedGrant(g["role"], g["scope"]) for g in grants if is_agent(resolved(g["member"]))
    )


def snapshot_grants(grants: Iterable[Mapping[str, str]]) -> frozenset[ExpectedGrant]:
    return frozenset(
        ExpectedGrant(g["role"], g["scope"]) for g in grants if is_snapshot_account(g["member"])
    )


def listed_grants(grants: Iterable[Mapping[str, str]]) -> frozenset[ListedGrant]:
    """Every grant of the list, each principal's, member as IAM compares it (DBQ019)."""
    return frozenset(
        ListedGrant(g["role"], canonical_member(g["member"]), g["scope"]) for g in grants
    )


def pack_config(
    *,
    protected: bool,
    allowed_bigquery_locations: Iterable[str] | None,
    require_cmek: bool,
    source_project: str,
    source_project_number: str | None,
    grants: list[dict[str, str]] | None,
) -> dict[str, dict[str, Any]]:
    """The config file of the pack: the same properties for every policy (each declares the
    same schema). `grants` None: the agent's address is not known before the deployment looks
    its project number up, and the pack falls back to the role allow-list."""
    properties: dict[str, Any] = {
        PROTECTED: protected,
        REQUIRE_CMEK: require_cmek,
        SOURCE_PROJECT: source_project,
    }
    # JSON Schema types: an absent key, never null, for what is not known.
    if allowed_bigquery_locations is not None:
        properties[ALLOWED_LOCATIONS] = list(allowed_bigquery_locations)
    if source_project_number is not None:
        properties[SOURCE_PROJECT_NUMBER] = source_project_number
    if grants is not None:
        properties[EXPECTED_GRANTS] = grants
    return {policy_name(rule): dict(properties) for rule in RULES}


def _source_number(config: Mapping[str, Any], grants: list[dict[str, str]] | None) -> str | None:
    """sourceProjectNumber, else the number in the agent's address in the grants (every agent
    grant the program outputs names the source project's agent)."""
    if config.get(SOURCE_PROJECT_NUMBER):
        return str(config[SOURCE_PROJECT_NUMBER])
    numbers = {agent_project_number(g["member"]) for g in grants or []} - {None}
    return numbers.pop() if len(numbers) == 1 else None


def context_from_config(config: Mapping[str, Any]) -> PolicyContext:
    """A policy's config (as CrossGuard's get_config() gives it) as the rules' context."""
    listed = config.get(EXPECTED_GRANTS)
    grants = grants_list(listed) if listed is not None else None
    locations = config.get(ALLOWED_LOCATIONS)
    return PolicyContext(
        protected=bool(config.get(PROTECTED, False)),
        expected_grants=agent_grants(grants) if grants is not None else None,
        allowed_bigquery_locations=frozenset(locations) if locations is not None else None,
        require_cmek=bool(config.get(REQUIRE_CMEK, False)),
        source_project=str(config[SOURCE_PROJECT]) if config.get(SOURCE_PROJECT) else None,
        source_project_number=_source_number(config, grants),
        snapshot_grants=snapshot_grants(grants) if grants is not None else None,
        listed_grants=listed_grants(grants) if grants is not None else None,
    )
