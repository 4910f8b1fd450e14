"""A Google service agent (the Cloud Healthcare one; Cloud Scheduler's for the nightly snapshot):
made to exist, granted its roles, given time to propagate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_gcp as gcp
import pulumiverse_time as time

from dicom_bq.errors import DicomBqError
from dicom_bq.infra.components.iam import grants_then_wait
from dicom_bq.infra.grants import GrantSpec


class ProjectNumberMismatchError(DicomBqError, pulumi.RunError):
    """The configured number of the source project is another project's.

    A pulumi.RunError, so that the engine shows the message without a Python traceback (the
    language host's exec logs str(error) for a RunError, a traceback for anything else)."""


def checked_number(
    project: pulumi.Input[str],
    configured: pulumi.Input[str],
    what: str,
    opts: pulumi.InvokeOutputOptions,
) -> pulumi.Output[str]:
    """The configured project number, once Google's Resource Manager has said it is the
    project's own (gcp.organizations.get_project: projects.get, `number`,
    https://cloud.google.com/resource-manager/reference/rest/v1/projects/get); a mismatch fails
    the Output with both numbers named.

    Whatever takes this Output as an input waits for the answer and is never registered when it
    fails, so the grants that depend on it are not created: `pulumi preview` runs the lookup
    (data sources run during previews) and stops there, and `pulumi up` stops before any grant.
    No resource is created inside the apply."""
    found = gcp.organizations.get_project_output(project_id=project, opts=opts)

    def same(values: list[Any]) -> str:
        real, given, name = str(values[0]), str(values[1]), str(values[2])
        if real != given:
            raise ProjectNumberMismatchError(
                f"{what} {given} is not the number of project {name}: Google's Resource Manager "
                f"says its number is {real}. The grants would go to service-{given}@..., another "
                "project's service agent; nothing was granted. Set it to "
                f"{real}, or leave it out (the number is then read from Google)."
            )
        return given

    return pulumi.Output.all(found.number, configured, project).apply(same)


def after(value: pulumi.Input[Any], gate: pulumi.Output[Any] | None) -> pulumi.Output[Any]:
    """`value`, available only once `gate` has resolved (and failing with it)."""
    if gate is None:
        return pulumi.Output.from_input(value)
    return pulumi.Output.all(value, gate).apply(lambda values: values[0])


def _answered(member: str | None, service: str) -> str:
    """The agent's member as Google answered it; an answer without an address is an error of
    its own, not a grant to "serviceAccount:" that Google would refuse less clearly."""
    if not member or member == "serviceAccount:":
        raise DicomBqError(
            f"Google made the {service} service agent exist but answered no address for it "
            "(the ServiceIdentity's email is empty): nothing was granted; run `pulumi up "
            "--refresh`, and if it persists check the agent with `gcloud beta services identity "
            f"create --service={service}`"
        )
    return member


@dataclass(frozen=True)
class AgentAccessArgs:
    source_project: pulumi.Input[str]
    grants: Sequence[GrantSpec]
    propagation_wait_seconds: int
    # The agent's address; None: the ServiceIdentity's own `member` output, the address Google
    # answers when it makes the agent exist (services.generateServiceIdentity).
    member: pulumi.Input[str] | None = None
    # What every grant waits for and fails with (the source project's number check).
    gate: pulumi.Output[Any] | None = None
    # Resources a grant's scope must exist before, by scope kind (the BigQuery dataset).
    scope_resources: dict[str, pulumi.Resource] = field(default_factory=dict)
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    # The API whose service agent this is (projects.ServiceIdentity's `service`).
    service: str = "healthcare.googleapis.com"


class AgentAccess(pulumi.ComponentResource):
    """Additive grants only: IAM members never replace anyone else's bindings."""

    identity: gcp.projects.ServiceIdentity
    member: pulumi.Output[str]
    members: list[pulumi.CustomResource]
    propagated: time.Sleep

    def __init__(
        self, name: str, args: AgentAccessArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dicom-bq:index:AgentAccess", name, None, opts)
        # Service agents are created lazily by Google on first use; granting roles to an agent
        # that does not exist yet fails, so force it into existence first
        # (https://cloud.google.com/iam/docs/create-service-agents). Its `email` and `member`
        # ("serviceAccount:{email}") are what Google answered
        # (https://www.pulumi.com/registry/packages/gcp/api-docs/projects/serviceidentity/).
        self.identity = gcp.projects.ServiceIdentity(
            f"{name}-identity",
            project=args.source_project,
            service=args.service,
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )
        answered = self.identity.member.apply(lambda member: _answered(member, args.service))
        self.member = after(answered if args.member is None else args.member, args.gate)
        self.members, self.propagated = grants_then_wait(
            name,
            args.grants,
            self.member,
            args.propagation_wait_seconds,
            parent=self,
            depends_on=[self.identity],
            scope_resources=args.scope_resources,
        )
        self.register_outputs({"identity": self.identity.id, "member": self.member})
