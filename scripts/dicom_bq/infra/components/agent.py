"""A Google service agent (the Cloud Healthcare one; Cloud Scheduler's for the nightly snapshot):
made to exist, granted its roles, given time to propagate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp
import pulumiverse_time as time

from dicom_bq.infra.components.iam import grants_then_wait
from dicom_bq.infra.grants import GrantSpec


@dataclass(frozen=True)
class AgentAccessArgs:
    source_project: pulumi.Input[str]
    member: pulumi.Input[str]
    grants: Sequence[GrantSpec]
    propagation_wait_seconds: int
    # Resources a grant's scope must exist before, by scope kind (the BigQuery dataset).
    scope_resources: dict[str, pulumi.Resource] = field(default_factory=dict)
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    # The API whose service agent this is (projects.ServiceIdentity's `service`).
    service: str = "healthcare.googleapis.com"


class AgentAccess(pulumi.ComponentResource):
    """Additive grants only: IAM members never replace anyone else's bindings."""

    identity: gcp.projects.ServiceIdentity
    members: list[pulumi.CustomResource]
    propagated: time.Sleep

    def __init__(
        self, name: str, args: AgentAccessArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dicom-bq:index:AgentAccess", name, None, opts)
        # Service agents are created lazily by Google on first use; granting roles to an agent
        # that does not exist yet fails, so force it into existence first.
        self.identity = gcp.projects.ServiceIdentity(
            f"{name}-identity",
            project=args.source_project,
            service=args.service,
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )
        self.members, self.propagated = grants_then_wait(
            name,
            args.grants,
            args.member,
            args.propagation_wait_seconds,
            parent=self,
            depends_on=[self.identity],
            scope_resources=args.scope_resources,
        )
        self.register_outputs({"identity": self.identity.id})
