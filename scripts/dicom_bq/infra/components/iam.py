"""Grants from the grants list as additive IAM member resources, and the wait that follows them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pulumi
import pulumi_gcp as gcp
import pulumiverse_time as time

from dicom_bq.infra.grants import GrantSpec, Scope
from dicom_bq.vocabulary.scopes import SCOPE_KINDS, ArgumentSource, ScopeKindName

# The pulumi-gcp class of each scope kind's IAM member resource (vocabulary/scopes.py names its type
# token and arguments; that module cannot import pulumi). tests/test_scopes.py checks that both
# tables name the same kinds and tokens.
IAM_MEMBER_CLASSES: dict[ScopeKindName, Callable[..., pulumi.CustomResource]] = {
    "project": gcp.projects.IAMMember,
    "bigquery_dataset": gcp.bigquery.DatasetIamMember,
    "bucket": gcp.storage.BucketIAMMember,
    "topic": gcp.pubsub.TopicIAMMember,
    "crypto_key": gcp.kms.CryptoKeyIAMMember,
    "dicom_store": gcp.healthcare.DicomStoreIamMember,
    "service_account": gcp.serviceaccount.IAMMember,
}


def render_grant(
    prefix: str,
    spec: GrantSpec,
    member: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> pulumi.CustomResource:
    """The *IAMMember resource for the grant's scope: never a policy or binding.

    Replaced delete-before-replace: IAM members of one role share one binding, and creating the
    new member before deleting the old removes the shared binding with it (pulumi-gcp #442,
    #2463). A renamed grant key keeps its resource through an alias of the former name. A grant
    on a scope the stack does not create is kept on delete (grants.kept_on_delete says why).
    """
    opts = pulumi.ResourceOptions.merge(
        opts,
        pulumi.ResourceOptions(
            delete_before_replace=True,
            retain_on_delete=spec.kept or None,
            aliases=[pulumi.Alias(name=f"{prefix}-{former}") for former in spec.former_keys],
        ),
    )
    kind = SCOPE_KINDS[spec.scope.kind]
    arguments = {
        keyword: _argument(spec.scope, source) for keyword, source in kind.pulumi_member.arguments
    }
    return IAM_MEMBER_CLASSES[spec.scope.kind](
        f"{prefix}-{spec.key}", role=spec.role, member=member, opts=opts, **arguments
    )


def _argument(scope: Scope, source: ArgumentSource) -> pulumi.Input[str]:
    if source == "project":
        return scope.project
    if source == "resource":
        return scope.resource
    return scope.uri.apply(SCOPE_KINDS[scope.kind].provider_id_of)


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
