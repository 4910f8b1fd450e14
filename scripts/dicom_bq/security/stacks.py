"""Who is who across the project's stacks: each stack's Healthcare agent, from the project's live
number, and the grants a stack keeps when it is destroyed.

Stacks of one project often share a BigQuery project, a filter bucket, a topic or a key; two of
them whose agents are the same member hold the same bindings there. preflight, the audit and
`dicom-bq shared-grants` say who else holds a binding, and which held binding belongs to no
stack any more, from what is here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dicom_bq.clients.discovery import ApiCallError, DiscoveryClients
from dicom_bq.vocabulary import naming
from dicom_bq.vocabulary.scopes import kind_of_member

if TYPE_CHECKING:
    from dicom_bq.stack.plan import Plan

# An agent of the Cloud Healthcare API: service-NUMBER@gcp-sa-healthcare.<agent domain>
# (https://cloud.google.com/iam/docs/service-agents,
# https://cloud.google.com/healthcare-api/docs/permissions-healthcare-api-gcp-products).
_HEALTHCARE_AGENT_MARK = "@gcp-sa-healthcare."


def is_healthcare_agent(member: str) -> bool:
    kind, _, email = member.partition(":")
    return (
        kind == "serviceAccount"
        and email.startswith("service-")
        and (_HEALTHCARE_AGENT_MARK in email.lower())
    )


def agent_number(member: str) -> str | None:
    """The project number in a Healthcare agent's address, None for any other member."""
    if not is_healthcare_agent(member):
        return None
    return member.partition(":")[2].removeprefix("service-").split("@", 1)[0]


def with_number(agent_member: str, number: str) -> str:
    """The same agent address (its domain kept) for the project numbered `number`."""
    domain = agent_member.split("@", 1)[1]
    return f"serviceAccount:service-{number}@{domain}"


# -- Project numbers, from Resource Manager -----------------------------------------------------


@dataclass(frozen=True)
class ProjectNumber:
    """A project's number as Resource Manager answers it, or why it could not be read."""

    project: str
    number: str | None
    error: str | None = None


class ProjectNumbers:
    """projects.get of Resource Manager v1, once per project: its `projectNumber`
    (https://cloud.google.com/resource-manager/reference/rest/v1/projects/get; the caller needs
    resourcemanager.projects.get, which every role on the project that lets one see it holds).
    A project that does not exist or that the caller may not see answers 403."""

    def __init__(self, clients: DiscoveryClients) -> None:
        self.clients = clients
        self._found: dict[str, ProjectNumber] = {}

    def of(self, project: str) -> ProjectNumber:
        if project not in self._found:
            self._found[project] = self._read(project)
        return self._found[project]

    def _read(self, project: str) -> ProjectNumber:
        from google.auth import exceptions as auth_exceptions

        api = self.clients.api("cloudresourcemanager")
        try:
            answer = api.call(api.request("projects.get", {"projectId": project}))
        except ApiCallError as error:
            reason = f" {error.reason}" if error.reason else ""
            return ProjectNumber(project, None, f"{error.status}{reason}: {error.message[:200]}")
        except auth_exceptions.GoogleAuthError as error:
            return ProjectNumber(project, None, f"credentials: {error}")
        number = str(answer.get("projectNumber") or "")
        if not number.isdigit():
            return ProjectNumber(project, None, "Resource Manager's answer has no projectNumber")
        return ProjectNumber(project, number)


def describe_command(project: str) -> str:
    # https://cloud.google.com/sdk/gcloud/reference/projects/describe
    return f"gcloud projects describe {project} --format='value(projectNumber)'"


# -- The project's stacks -----------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectStack:
    """A stack of this project, as its stack file says."""

    stack: str
    source_project: str
    configured_number: str | None
    universe_domain: str
    agent_iam_domain: str | None

    def agent(self, number: str | None) -> str | None:
        """Its Healthcare agent for the project's number (the live one, else the configured
        one); None when neither is known."""
        found = number or self.configured_number
        if found is None:
            return None
        return naming.agent_member(found, self.universe_domain, self.agent_iam_domain)


@dataclass
class ProjectStacks:
    """The stacks whose files are in the project folder, and the ones that could not be read."""

    stacks: list[ProjectStack] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)

    def others(self, stack: str) -> list[ProjectStack]:
        return [s for s in self.stacks if s.stack != stack]

    def agents(self, numbers: ProjectNumbers | None, *, besides: str) -> AgentOwners:
        """Each other stack's agent (from its project's live number where it can be read),
        and the stacks whose agent is unknown."""
        owners: dict[str, list[str]] = {}
        unknown: list[str] = []
        for other in self.others(besides):
            live = numbers.of(other.source_project).number if numbers is not None else None
            member = other.agent(live)
            if member is None:
                unknown.append(other.stack)
            else:
                owners.setdefault(member.lower(), []).append(other.stack)
        return AgentOwners(owners, unknown + sorted(self.unreadable))


@dataclass(frozen=True)
class AgentOwners:
    # Lowercased agent member -> the stacks whose agent it is.
    owners: Mapping[str, list[str]]
    # Stacks whose agent could not be told (no number known, or an unreadable stack file).
    unknown: list[str]

    def stacks_of(self, member: str) -> list[str]:
        return list(self.owners.get(member.lower(), []))


def read_project_stacks(project_dir: Path | None) -> ProjectStacks:
    """The stacks of the project in `project_dir` (Pulumi.<stack>.yaml files, read offline: the
    stack files say which project each deploys to)."""
    from dicom_bq.errors import DicomBqError
    from dicom_bq.stack.config import available_stacks, read_stack_config
    from dicom_bq.vocabulary.settings import SettingsError, settings_from_config

    found = ProjectStacks()
    if project_dir is None:
        return found
    try:
        names = available_stacks(project_dir)
    except DicomBqError as error:
        found.unreadable["(stack files)"] = error.message
        return found
    for name in names:
        try:
            config = read_stack_config(project_dir, name, use_cli=False)
            settings, _ = settings_from_config(config.values, name)
        except (DicomBqError, SettingsError) as error:
            found.unreadable[name] = str(getattr(error, "message", error)).splitlines()[0]
            continue
        found.stacks.append(
            ProjectStack(
                stack=name,
                source_project=settings.source_project,
                configured_number=settings.source_project_number,
                universe_domain=settings.universe_domain,
                agent_iam_domain=settings.agent_iam_domain,
            )
        )
    return found


# -- Grants a stack keeps when it is destroyed ----------------------------------------------------


@dataclass(frozen=True)
class KeptGrant:
    """A grant the stack's program keeps on delete (retain_on_delete): on a scope the stack does
    not create (infra/grants.py, kept_on_delete)."""

    resource: str  # the IAM member resource's name in the stack
    role: str
    member: str
    scope: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {
            "resource": self.resource,
            "role": self.role,
            "member": self.member,
            "scope": self.scope,
            "reason": self.reason,
        }


def kept_grants(plan: Plan) -> list[KeptGrant]:
    """The plan's IAM member resources marked retain_on_delete, as grants (role, member, full
    scope), with the reason the grants list gives."""
    reasons = {(g["role"], g["member"], g["scope"]): g.get("reason", "") for g in plan.grants}
    found = []
    for resource in plan.custom_resources():
        kind = kind_of_member(resource.type)
        if kind is None or not resource.retain_on_delete:
            continue
        role, member = str(resource.inputs.get("role")), str(resource.inputs.get("member"))
        scope = kind.uri_from_inputs(resource.inputs)
        found.append(
            KeptGrant(resource.name, role, member, scope, reasons.get((role, member, scope), ""))
        )
    return found


def remove_command(scope: str, member: str, role: str) -> str:
    """The command that removes one binding by hand (vocabulary/scopes.py, Commands.binding)."""
    from dicom_bq.security.audit import iam_command

    return iam_command(scope, "remove", member, role)


def grants_of(plans: Iterable[Plan]) -> dict[tuple[str, str, str], list[str]]:
    """(role, lowercased member, scope) -> the stacks whose plan makes that grant."""
    made: dict[tuple[str, str, str], list[str]] = {}
    for plan in plans:
        for grant in plan.grants:
            key = (grant["role"], grant["member"].lower(), grant["scope"])
            made.setdefault(key, []).append(plan.stack)
    return made


@dataclass(frozen=True)
class SharedGrant:
    """A grant the stack keeps on delete, the other stacks of the project that make it too, and
    how to check and remove the binding by hand."""

    grant: KeptGrant
    also_made_by: tuple[str, ...]
    check: str
    remove: str

    def advice(self, stack: str) -> str:
        if self.also_made_by:
            return (
                f"keep it: stack {', '.join(self.also_made_by)} makes the same grant (the binding "
                "stays until every stack and person holding it removes it)"
            )
        return (
            f"once stack {stack} is destroyed and nothing else needs it (check: {self.check}), "
            f"remove it: {self.remove}"
        )

    def as_dict(self, stack: str) -> dict[str, object]:
        return {
            **self.grant.as_dict(),
            "also_made_by": list(self.also_made_by),
            "check": self.check,
            "remove": self.remove,
            "advice": self.advice(stack),
        }


@dataclass(frozen=True)
class SharedGrants:
    stack: str
    grants: tuple[SharedGrant, ...]
    # Other stacks of the project whose grants could not be compared, and why.
    not_compared: Mapping[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "stack": self.stack,
            "grants": [g.as_dict(self.stack) for g in self.grants],
            "not_compared": dict(self.not_compared),
        }

    def text(self) -> str:
        if not self.grants:
            return f"stack {self.stack} keeps no grant when it is destroyed\n"
        lines = [
            f"stack {self.stack} keeps {len(self.grants)} grant(s) when it is destroyed: they are "
            "on scopes it does not create, where another stack or a person may hold the same "
            "binding (Pulumi's retainOnDelete; deleting an additive member removes the binding "
            "for every holder)",
        ]
        for shared in self.grants:
            g = shared.grant
            lines += ["", f"{g.role} for {g.member}", f"  on:  {g.scope}", f"  why: {g.reason}"]
            if shared.also_made_by:
                lines.append(f"  {shared.advice(self.stack)}")
            else:
                lines += [
                    "  no other stack of this project makes it; once the stack is destroyed and "
                    "nothing else needs it:",
                    f"    check:  {shared.check}",
                    f"    remove: {shared.remove}",
                ]
        for other, why in sorted(self.not_compared.items()):
            lines += ["", f"note: stack {other} was not compared ({why})"]
        return "\n".join(lines) + "\n"


def shared_grants(
    plan: Plan, others: Iterable[Plan], not_compared: Mapping[str, str] | None = None
) -> SharedGrants:
    """The grants `plan`'s stack keeps on delete, each with the other stacks (of `others`) whose
    plan makes the same grant; a grant no other stack makes is one to remove by hand once the
    stack is gone."""
    from dicom_bq.security.audit import check_command

    made = grants_of(others)
    skipped = dict(not_compared or {})
    found = []
    for grant in kept_grants(plan):
        key = (grant.role, grant.member.lower(), grant.scope)
        found.append(
            SharedGrant(
                grant,
                tuple(sorted(set(made.get(key, [])) - {plan.stack})),
                check_command(grant.scope),
                remove_command(grant.scope, grant.member, grant.role),
            )
        )
    return SharedGrants(plan.stack, tuple(found), skipped)
