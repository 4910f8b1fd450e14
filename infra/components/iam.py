"""One grant from the grants list as an additive IAM member resource."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from infra.grants import GrantSpec


def render_grant(
    resource_name: str,
    spec: GrantSpec,
    member: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> pulumi.CustomResource:
    """The *IAMMember resource for the grant's scope: never a policy or binding."""
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
