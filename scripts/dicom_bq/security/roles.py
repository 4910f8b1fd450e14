"""What a role lets its holder do: from the IAM API when online, from a dated snapshot otherwise."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
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
