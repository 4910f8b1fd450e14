"""What a role lets its holder do: from the IAM API when online, from a dated snapshot otherwise."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from itertools import combinations
from typing import Any

from dicom_bq.clients.discovery import ApiCallError, GoogleApi
from dicom_bq.clients.endpoints import Connection


@dataclass(frozen=True)
class RolePermissions:
    role: str
    title: str
    permissions: tuple[str, ...]
    source: str  # "IAM API", "snapshot YYYY-MM-DD" or CUSTOM_ROLE_SOURCE


# Where a role the stack itself defines gets its permissions: the plan, which is what `pulumi up`
# will create. Neither the snapshot (predefined roles only) nor the IAM API (the role may not
# exist yet, or may differ from what the stack will set) can say.
CUSTOM_ROLE_SOURCE = "the stack's custom role"

# pulumi-gcp's custom role resources and the IAM name of the role each defines
# (https://cloud.google.com/iam/docs/reference/rest/v1/projects.roles, organizations.roles: name).
_CUSTOM_ROLE_NAMES = {
    "gcp:projects/iAMCustomRole:IAMCustomRole": ("projects/{project}/roles/{roleId}", "project"),
    "gcp:organizations/iAMCustomRole:IAMCustomRole": (
        "organizations/{orgId}/roles/{roleId}",
        "orgId",
    ),
}


def custom_role(resource_type: str, inputs: dict[str, Any]) -> RolePermissions | None:
    """The role a custom role resource defines, with the permissions it sets; None for any
    other resource, or one whose name cannot be told from its inputs."""
    spelling = _CUSTOM_ROLE_NAMES.get(resource_type)
    if spelling is None or not inputs.get("roleId") or not inputs.get(spelling[1]):
        return None
    name = spelling[0].format(**{key: inputs.get(key) for key in ("project", "orgId", "roleId")})
    return RolePermissions(
        name,
        str(inputs.get("title") or ""),
        tuple(sorted(str(p) for p in inputs.get("permissions") or [])),
        CUSTOM_ROLE_SOURCE,
    )


@cache
def _snapshot() -> dict[str, Any]:
    text = resources.files("dicom_bq").joinpath("data/role_permissions.json").read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def snapshot_date() -> str:
    return str(_snapshot()["snapshot_date"])


def from_snapshot(role: str) -> RolePermissions:
    entry = _snapshot()["roles"].get(role)
    if entry is None:
        return RolePermissions(role, "", (), f"not in the snapshot of {snapshot_date()}")
    return RolePermissions(
        role, entry["title"], tuple(sorted(entry["permissions"])), f"snapshot {snapshot_date()}"
    )


def deployer_roles() -> dict[str, frozenset[str]]:
    """Google's predefined roles a deployer may be asked for, each with its permissions, from
    the package's role data (its `deployer_roles` section and date)."""
    roles = _snapshot()["deployer_roles"]["roles"]
    return {name: frozenset(entry["permissions"]) for name, entry in roles.items()}


def deployer_roles_date() -> str:
    return str(_snapshot()["deployer_roles"]["snapshot_date"])


@dataclass(frozen=True)
class RoleSet:
    """Roles that together hold some permissions, and those no known role holds."""

    roles: tuple[str, ...]
    uncovered: tuple[str, ...] = ()


# Past this many roles the search stops being exhaustive and adds, greedily, the role holding
# most of what is still missing (preflight's scopes need at most a handful).
_EXHAUSTIVE_UP_TO = 5


def smallest_role_set(
    permissions: Iterable[str], roles: Mapping[str, frozenset[str]] | None = None
) -> RoleSet:
    """The fewest roles of `roles` (the deployer roles by default) that together hold every
    permission some role holds; among sets of that size, the one granting the fewest
    permissions in all (then by name, so the answer is stable). Permissions no role holds
    are `uncovered`.
    """
    known = deployer_roles() if roles is None else dict(roles)
    wanted = frozenset(permissions)
    uncovered = tuple(sorted(p for p in wanted if not any(p in held for held in known.values())))
    needed = wanted - set(uncovered)
    if not needed:
        return RoleSet((), uncovered)
    candidates = sorted(name for name, held in known.items() if held & needed)

    def cost(names: tuple[str, ...]) -> tuple[int, int, tuple[str, ...]]:
        return len(names), sum(len(known[n]) for n in names), tuple(sorted(names))

    for size in range(1, min(len(candidates), _EXHAUSTIVE_UP_TO) + 1):
        covering: list[tuple[str, ...]] = [
            names
            for names in combinations(candidates, size)
            if needed <= frozenset().union(*(known[n] for n in names))
        ]
        if covering:
            best = min(covering, key=cost)
            return RoleSet(tuple(sorted(best)), uncovered)
    chosen: list[str] = []
    left = set(needed)
    while left:
        pick = max(candidates, key=lambda n: (len(known[n] & left), -len(known[n]), n))
        chosen.append(pick)
        left -= known[pick]
    return RoleSet(tuple(sorted(chosen)), uncovered)


class IamRoles(GoogleApi):
    def __init__(self, connection: Connection) -> None:
        endpoint = connection.discovery_endpoint("iam", "")
        super().__init__("iam", "v1", endpoint, connection.credentials(endpoint.emulated))

    def get(self, role: str) -> RolePermissions:
        """The live role; the snapshot when the API cannot be read (say why in the source)."""
        try:
            answer = self.call(self.service.roles().get(name=role))
        except ApiCallError as error:
            fallback = from_snapshot(role)
            return RolePermissions(
                role,
                fallback.title,
                fallback.permissions,
                f"{fallback.source} (IAM API: {error.status} {error.reason})",
            )
        return RolePermissions(
            role,
            str(answer.get("title", "")),
            tuple(sorted(answer.get("includedPermissions", []))),
            "IAM API",
        )
