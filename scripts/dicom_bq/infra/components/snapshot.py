"""The nightly snapshot: a Cloud Scheduler job that starts a WRITE_TRUNCATE export of each store to
the tool's own table, as a service account that may do nothing else.

The job calls the Healthcare API directly (an HTTP target with an OAuth token), so nothing runs
in between: https://cloud.google.com/scheduler/docs/http-target-auth. The export writes to
BigQuery as the Cloud Healthcare service agent, not as the caller (DESIGN.md, "The resources and
their order", item 4, and https://cloud.google.com/healthcare-api/docs/access-control): the
agent's BigQuery grants already cover the snapshot table, and the account needs no BigQuery role.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_gcp as gcp

from dicom_bq.infra.components.agent import AgentAccess, AgentAccessArgs, after
from dicom_bq.infra.components.iam import render_grant
from dicom_bq.infra.grants import SNAPSHOT_PERMISSIONS, GrantSpec
from dicom_bq.vocabulary import naming

# The token the job sends. Healthcare's methods accept cloud-healthcare and cloud-platform
# (healthcare v1 discovery document, `scopes` of each method); cloud-platform is also Cloud
# Scheduler's default for an OAuth token (cloudscheduler v1 discovery, OAuthToken.scope).
OAUTH_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# Cloud Scheduler has no multi-region locations; the Healthcare multi-regions map to a region
# inside them (https://cloud.google.com/scheduler/docs/locations). Set snapshotRegion otherwise.
MULTI_REGION_SCHEDULER = {"us": "us-central1", "eu": "europe-west1"}
# `export` answers with a long-running operation at once (healthcare v1 discovery,
# dicomStores.export: response Operation), so the attempt only waits for that answer.
ATTEMPT_DEADLINE = "180s"


SCHEDULER_SERVICE = "cloudscheduler.googleapis.com"


def scheduler_region(location: str) -> str:
    return MULTI_REGION_SCHEDULER.get(location, location)


def export_request(table_uri: str) -> dict[str, Any]:
    """ExportDicomDataRequest (healthcare v1 discovery document): the whole table replaced.

    WRITE_TRUNCATE because the table is the tool's own (settings refuse any other name); `force`
    is deprecated and ignored when writeDisposition is set (GoogleCloudHealthcareV1DicomBigQuery-
    Destination.force), so it is not sent.
    """
    return {"bigqueryDestination": {"tableUri": table_uri, "writeDisposition": "WRITE_TRUNCATE"}}


def encoded_body(table_uri: str) -> str:
    """HttpTarget.body is "a base64-encoded string" (cloudscheduler v1 discovery document)."""
    return base64.b64encode(json.dumps(export_request(table_uri)).encode("utf-8")).decode("ascii")


@dataclass(frozen=True)
class SnapshotTarget:
    store_id: str
    store_name: pulumi.Input[str]
    table_uri: pulumi.Input[str]


@dataclass(frozen=True)
class NightlySnapshotArgs:
    project: pulumi.Input[str]
    region: str
    schedule: str
    time_zone: str
    targets: Sequence[SnapshotTarget]
    # The "snapshot" principal's grants (grant_specs), one per store, rendered here.
    grants: Sequence[GrantSpec]
    account_id: str
    role_id: str
    member: pulumi.Input[str] | None  # None: the account's own `member` output
    # The "scheduler" principal's grants (Token Creator on the account), to the address Google
    # answers when the scheduler's ServiceIdentity makes its agent exist:
    # service-NUMBER@gcp-sa-cloudscheduler.iam.gserviceaccount.com
    # (https://cloud.google.com/scheduler/docs/http-target-auth).
    scheduler_grants: Sequence[GrantSpec] = ()
    propagation_wait_seconds: int = 120
    universe_domain: str = naming.DEFAULT_UNIVERSE
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    stores: list[pulumi.Resource] = field(default_factory=list)
    # What every grant waits for and fails with (the source project's number check).
    gate: pulumi.Output[Any] | None = None


class NightlySnapshot(pulumi.ComponentResource):
    account: gcp.serviceaccount.Account
    role: gcp.projects.IAMCustomRole
    members: list[pulumi.CustomResource]
    scheduler: AgentAccess | None
    jobs: list[gcp.cloudscheduler.Job]
    region: str
    # Store ID -> its job's ID, for the alert on the jobs' failed attempts.
    job_ids: dict[str, str]

    def __init__(
        self, name: str, args: NightlySnapshotArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dicom-bq:index:NightlySnapshot", name, None, opts)
        after_apis = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        # Its own account: the job's token carries no other workload's permissions, and the
        # grants below are all it holds.
        self.account = gcp.serviceaccount.Account(
            f"{name}-account",
            project=args.project,
            account_id=args.account_id,
            display_name="dicom-bq nightly snapshot (dicomStores.export only)",
            opts=after_apis,
        )
        # Custom roles are soft-deleted: re-creating this ID within 7 days undeletes it, between
        # 7 and 37 days after a destroy the ID cannot be used (pulumi-gcp
        # projects/iam_custom_role.py, the warning on IAMCustomRole).
        self.role = gcp.projects.IAMCustomRole(
            f"{name}-role",
            project=args.project,
            role_id=args.role_id,
            title="dicom-bq nightly snapshot: DICOM export only",
            description="Starts dicomStores.export; cannot read images, poll or change anything.",
            permissions=list(SNAPSHOT_PERMISSIONS),
            stage="GA",
            opts=after_apis,
        )
        member = after(args.member if args.member is not None else self.account.member, args.gate)
        self.members = [
            render_grant(
                name,
                spec,
                member,
                pulumi.ResourceOptions(
                    parent=self, depends_on=[self.account, self.role, *args.stores]
                ),
            )
            for spec in args.grants
        ]
        # Cloud Scheduler's agent, made to exist, with Token Creator on this account alone; IAM
        # takes minutes to propagate, hence its wait before the jobs.
        self.scheduler = None
        ready: list[pulumi.Resource] = []
        if args.scheduler_grants:
            self.scheduler = AgentAccess(
                f"{name}-agent",
                AgentAccessArgs(
                    source_project=args.project,
                    gate=args.gate,
                    grants=args.scheduler_grants,
                    propagation_wait_seconds=args.propagation_wait_seconds,
                    scope_resources={"service_account": self.account},
                    depends_on=args.depends_on,
                    service=SCHEDULER_SERVICE,
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            ready = [*self.scheduler.members, self.scheduler.propagated]
        email = pulumi.Output.from_input(member).apply(
            lambda text: str(text).removeprefix("serviceAccount:")
        )
        self.region = args.region
        self.job_ids = {
            target.store_id: naming.snapshot_job_name(args.account_id, target.store_id)
            for target in args.targets
        }
        self.jobs = [
            gcp.cloudscheduler.Job(
                f"{name}-job-{target.store_id}",
                project=args.project,
                region=args.region,
                name=self.job_ids[target.store_id],
                description="dicom-bq: nightly WRITE_TRUNCATE export of the DICOM store",
                schedule=args.schedule,
                time_zone=args.time_zone,
                attempt_deadline=ATTEMPT_DEADLINE,
                # A retried POST starts a second export (the request is not idempotent); a failed
                # night is reported by the export-error alert (the export failed) or the job's
                # failed-attempt alert (no export started), and the next night tries again.
                retry_config=gcp.cloudscheduler.JobRetryConfigArgs(retry_count=0),
                http_target=gcp.cloudscheduler.JobHttpTargetArgs(
                    uri=pulumi.Output.from_input(target.store_name).apply(
                        lambda store: naming.healthcare_export_url(store, args.universe_domain)
                    ),
                    http_method="POST",
                    headers={"Content-Type": "application/json"},
                    body=pulumi.Output.from_input(target.table_uri).apply(encoded_body),
                    oauth_token=gcp.cloudscheduler.JobHttpTargetOauthTokenArgs(
                        service_account_email=email, scope=OAUTH_SCOPE
                    ),
                ),
                # The account must hold export on the store, and Cloud Scheduler's agent must be
                # able to mint its token, before the first night.
                opts=pulumi.ResourceOptions(
                    parent=self, depends_on=[*args.depends_on, *self.members, *ready]
                ),
            )
            for target in args.targets
        ]
        self.register_outputs({"account": self.account.email})
