"""Grants from the grants list as additive IAM member resources, and the wait that follows them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi
import pulumi_gcp as gcp
import pulumiverse_time as time

from dicom_bq.infra.grants import GrantSpec


def render_grant(
    prefix: str,
    spec: GrantSpec,
    member: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> pulumi.CustomResource:
    """The *IAMMember resource for the grant's scope: never a policy or binding.

    Replaced delete-before-replace: IAM members of one role share one binding, and creating the
    new member before deleting the old removes the shared binding with it (pulumi-gcp #442,
    #2463). A renamed grant key keeps its resource through an alias of the former name.
    """
    opts = pulumi.ResourceOptions.merge(
        opts,
        pulumi.ResourceOptions(
            delete_before_replace=True,
            aliases=[pulumi.Alias(name=f"{prefix}-{former}") for former in spec.former_keys],
        ),
    )
    resource_name = f"{prefix}-{spec.key}"
    scope = spec.scope
    if scope.kind == "bigquery_dataset":
        return gcp.bigquery.DatasetIamMember(
            resource_name,
            project=scope.project,
            dataset_id=scope.resource,
            role=spec.role,
            member=member,
            opts=opts,
        )
    if scope.kind == "bucket":
        return gcp.storage.BucketIAMMember(
            resource_name, bucket=scope.resource, role=spec.role, member=member, opts=opts
        )
    if scope.kind == "topic":
        return gcp.pubsub.TopicIAMMember(
            resource_name,
            project=scope.project,
            topic=scope.resource,
            role=spec.role,
            member=member,
            opts=opts,
        )
    if scope.kind == "crypto_key":
        return gcp.kms.CryptoKeyIAMMember(
            resource_name, crypto_key_id=scope.resource, role=spec.role, member=member, opts=opts
        )
    return gcp.projects.IAMMember(
        resource_name, project=scope.project, role=spec.role, member=member, opts=opts
    )


def grant_triggers(
    specs: Sequence[GrantSpec], member: pulumi.Input[str]
) -> pulumi.Output[Mapping[str, str]]:
    """What the wait covers: a grant added, removed or changed makes the Sleep wait again.

    pulumiverse-time's Sleep waits once, at creation; changing `create_duration` alone does not
    wait again, changing `triggers` replaces it (pulumiverse/pulumi-time sleep.py, `triggers`).
    """
    return pulumi.Output.all(member, *[spec.scope.uri for spec in specs]).apply(
        lambda values: {
            spec.key: f"{spec.role} {values[0]} {scope}"
            for spec, scope in zip(specs, values[1:], strict=True)
        }
    )


def grants_then_wait(
    prefix: str,
    specs: Sequence[GrantSpec],
    member: pulumi.Input[str],
    wait_seconds: int,
    parent: pulumi.Resource,
    depends_on: Sequence[pulumi.Resource] = (),
    scope_resources: Mapping[str, pulumi.Resource] | None = None,
) -> tuple[list[pulumi.CustomResource], time.Sleep]:
    """The grants, then a Sleep after all of them for IAM to propagate.

    Google checks some grants when it creates a resource (a CMEK dataset, a streaming or
    notifying store), and IAM changes typically take 2 minutes to propagate
    (https://cloud.google.com/iam/docs/access-change-propagation): those resources depend on
    the Sleep, not on the grants.
    """
    scopes = scope_resources or {}
    members = [
        render_grant(
            prefix,
            spec,
            member,
            pulumi.ResourceOptions(
                parent=parent,
                depends_on=[
                    *depends_on,
                    *([scopes[spec.scope.kind]] if spec.scope.kind in scopes else []),
                ],
            ),
        )
        for spec in specs
    ]
    propagated = time.Sleep(
        f"{prefix}-iam-propagation",
        create_duration=f"{wait_seconds}s",
        triggers=grant_triggers(specs, member),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=list(members)),
    )
    return members, propagated
