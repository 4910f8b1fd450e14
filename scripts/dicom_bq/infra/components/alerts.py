"""Alerts on the Healthcare API's export and streaming errors for the stack's stores, and on the
nightly snapshot jobs' failed attempts.

The API writes these errors to Cloud Logging by itself, always on
(https://cloud.google.com/healthcare-api/docs/how-tos/logging): a log-based metric counts them
per store, and an alert policy fires when the count rises above zero. A snapshot job whose
request is refused (403, 429, 5xx) starts no export, so no export error is ever logged: Cloud
Scheduler's own log of the attempt is counted instead.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp
import pulumiverse_time as time

# jsonPayload.@type of each error entry: the messages ExportDicomLogEntry (the export operation)
# and DicomStreamLogEntry (streaming to BigQuery) of googleapis/googleapis
# google/cloud/healthcare/logging/dicom.proto; the type.googleapis.com/... prefix is the one
# Google's logging page shows for ImportDicomLogEntry.
EXPORT_ENTRY = "type.googleapis.com/google.cloud.healthcare.logging.ExportDicomLogEntry"
STREAM_ENTRY = "type.googleapis.com/google.cloud.healthcare.logging.DicomStreamLogEntry"
# Google's logging page says entries carry the store as their monitored resource, can be
# filtered on resource.type="healthcare_dicom_store", and "by data store type, region and
# dataset" (https://cloud.google.com/healthcare-api/docs/how-tos/logging, "Filtering logs"). The
# exact log names (logName) are not documented, so the filters never use them. The label names
# location, dataset_id and dicom_store_id follow the documented entries of the consent store
# (healthcare v1 discovery document, consentStores.queryAccessibleData: resource labels
# consent_store_id, dataset_id, location, project_id); check them in Logs Explorer after the
# first error. The location keeps apart two stacks whose datasets share an ID in different
# locations of one project.
RESOURCE_TYPE = "healthcare_dicom_store"
# Cloud Scheduler logs each attempt against the job: resource.type "cloud_scheduler_job" with
# labels project_id, location and job_id, and at its end an entry whose jsonPayload.@type is
# AttemptFinished, at severity ERROR when the attempt failed (with the target's status), so a
# refused or timed-out request is counted (https://cloud.google.com/scheduler/docs/view-logs;
# the same filter in public alerting code, e.g. resource.labels.job_id + this @type +
# severity>=ERROR on condition_matched_log policies).
JOB_RESOURCE_TYPE = "cloud_scheduler_job"
ATTEMPT_FINISHED = "type.googleapis.com/google.cloud.scheduler.logging.AttemptFinished"
# Creating an alert policy on a log-based metric just created fails with 404 "Cannot find
# metric(s) ... could take up to 10 minutes" (hashicorp/terraform-provider-google#11102, open);
# a wait between the two is the known workaround. Should it still be too short, a second
# `pulumi up` creates the policies.
METRIC_PROPAGATION_SECONDS = 120
# Metric IDs: up to 100 of A-Z a-z 0-9 _-.,+!*',()%/ (logging v2 discovery, LogMetric.name).
_METRIC_CHARS = re.compile(r"^[A-Za-z0-9_\-.,+!*'()%/]{1,100}$")


def error_log_filter(*, location: str, dataset_id: str, store_id: str, entry_type: str) -> str:
    """The Logging query of one store's error entries of one kind (Logging query language)."""
    return (
        f'resource.type="{RESOURCE_TYPE}" '
        f'AND resource.labels.location="{location}" '
        f'AND resource.labels.dataset_id="{dataset_id}" '
        f'AND resource.labels.dicom_store_id="{store_id}" '
        f'AND jsonPayload.@type="{entry_type}" '
        "AND severity>=ERROR"
    )


def metric_name(*, kind: str, location: str, dataset_id: str, store_id: str) -> str:
    """dicom_bq/KIND/LOCATION/DATASET/STORE, or a hash of it where IDs do not fit a metric ID."""
    name = f"dicom_bq/{kind}/{location}/{dataset_id}/{store_id}"
    if _METRIC_CHARS.match(name):
        return name
    digest = hashlib.sha256(f"{location}/{dataset_id}/{store_id}".encode()).hexdigest()[:16]
    return f"dicom_bq/{kind}/{digest}"


def failed_attempt_filter(*, region: str, job_id: str) -> str:
    """The Logging query of one snapshot job's failed attempts."""
    return (
        f'resource.type="{JOB_RESOURCE_TYPE}" '
        f'AND resource.labels.location="{region}" '
        f'AND resource.labels.job_id="{job_id}" '
        f'AND jsonPayload.@type="{ATTEMPT_FINISHED}" '
        "AND severity>=ERROR"
    )


def policy_display_name(title: str, store_id: str) -> str:
    return f"dicom-bq: {title} errors on DICOM store {store_id}"


def metric_condition_filter(name: str, resource_type: str = RESOURCE_TYPE) -> str:
    """A threshold filter must name the metric type and the resource type (monitoring v3
    discovery, MetricThreshold.filter); a log-based metric's series carry the entry's resource."""
    return f'metric.type="logging.googleapis.com/user/{name}" AND resource.type="{resource_type}"'


@dataclass(frozen=True)
class AlertedStore:
    store_id: str
    dataset_id: str
    location: str
    store_name: pulumi.Input[str]
    streams: bool


@dataclass(frozen=True)
class AlertedJob:
    """A nightly snapshot job (components/snapshot.py) and the store it exports."""

    store_id: str
    job_id: str
    region: str  # the job's Cloud Scheduler location


@dataclass(frozen=True)
class OperationsAlertsArgs:
    project: pulumi.Input[str]
    stores: Sequence[AlertedStore]
    emails: Sequence[str] = ()
    channels: Sequence[str] = ()  # existing projects/P/notificationChannels/ID
    snapshot_jobs: Sequence[AlertedJob] = ()
    depends_on: list[pulumi.Resource] = field(default_factory=list)


@dataclass(frozen=True)
class _Watched:
    """One log-based metric and the policy on it."""

    key: str  # names the metric's and the policy's resources
    metric: str  # the metric ID
    log_filter: str
    resource_type: str
    description: str
    display_name: str
    condition: str
    subject: str
    what: str  # the documentation's first sentence


def _store_watch(kind: str, entry_type: str, title: str, store: AlertedStore) -> _Watched:
    log_filter = error_log_filter(
        location=store.location,
        dataset_id=store.dataset_id,
        store_id=store.store_id,
        entry_type=entry_type,
    )
    return _Watched(
        key=f"{kind}-{store.store_id}",
        metric=metric_name(
            kind=kind,
            location=store.location,
            dataset_id=store.dataset_id,
            store_id=store.store_id,
        ),
        log_filter=log_filter,
        resource_type=RESOURCE_TYPE,
        description=f"Healthcare API {title} errors logged for the DICOM store "
        f"{store.store_id} (dicom-bq).",
        display_name=policy_display_name(title, store.store_id),
        condition=f"{title} error logged",
        subject=f"DICOM {title} failed on {store.store_id}",
        what=f"The Healthcare API logged {title} errors for the DICOM store `{store.store_id}`.",
    )


def _job_watch(job: AlertedJob, location: str, dataset_id: str) -> _Watched:
    return _Watched(
        key=f"snapshot_job_failures-{job.store_id}",
        metric=metric_name(
            kind="snapshot_job_failures",
            location=location,
            dataset_id=dataset_id,
            store_id=job.store_id,
        ),
        log_filter=failed_attempt_filter(region=job.region, job_id=job.job_id),
        resource_type=JOB_RESOURCE_TYPE,
        description=f"Failed attempts of the Cloud Scheduler job {job.job_id}, the nightly "
        f"snapshot of the DICOM store {job.store_id} (dicom-bq).",
        display_name=f"dicom-bq: nightly snapshot job failed for DICOM store {job.store_id}",
        condition="snapshot job attempt failed",
        subject=f"DICOM nightly snapshot not started on {job.store_id}",
        what=f"The Cloud Scheduler job `{job.job_id}` failed its request, so no snapshot "
        f"export of `{job.store_id}` started (a 403 is often Cloud Scheduler's service agent "
        "unable to mint the snapshot account's token).",
    )


class OperationsAlerts(pulumi.ComponentResource):
    channels: list[gcp.monitoring.NotificationChannel]
    metrics: list[gcp.logging.Metric]
    policies: list[gcp.monitoring.AlertPolicy]
    policy_names: pulumi.Output[list[str]]

    def __init__(
        self, name: str, args: OperationsAlertsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dicom-bq:index:OperationsAlerts", name, None, opts)
        after_apis = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        self.channels = [
            gcp.monitoring.NotificationChannel(
                f"{name}-email-{index}",
                project=args.project,
                type="email",
                display_name=f"dicom-bq alerts: {email}",
                labels={"email_address": email},
                opts=after_apis,
            )
            for index, email in enumerate(args.emails)
        ]
        stores = {store.store_id: store for store in args.stores}
        watched = (
            [_store_watch("export_errors", EXPORT_ENTRY, "export", store) for store in args.stores]
            + [
                _store_watch("stream_errors", STREAM_ENTRY, "BigQuery streaming", store)
                for store in args.stores
                if store.streams
            ]
            + [
                _job_watch(job, stores[job.store_id].location, stores[job.store_id].dataset_id)
                for job in args.snapshot_jobs
            ]
        )
        self.metrics = [
            gcp.logging.Metric(
                f"{name}-{w.key}",
                project=args.project,
                name=w.metric,
                description=w.description,
                filter=w.log_filter,
                # DELTA/INT64/"1": one point per matching entry (logging v2 discovery,
                # LogMetric.metricDescriptor).
                metric_descriptor=gcp.logging.MetricMetricDescriptorArgs(
                    metric_kind="DELTA", value_type="INT64", unit="1"
                ),
                opts=after_apis,
            )
            for w in watched
        ]
        wait = time.Sleep(
            f"{name}-metric-propagation",
            create_duration=f"{METRIC_PROPAGATION_SECONDS}s",
            # A metric added later makes the wait run again before its policy.
            triggers={w.metric: "logging.googleapis.com/user/" + w.metric for w in watched},
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(self.metrics)),
        )
        notify = [channel.name for channel in self.channels] + list(args.channels)
        self.policies = [self._policy(name, w, notify, args.project, wait) for w in watched]
        # Display names: known before Google assigns each policy its projects/P/alertPolicies/ID,
        # so plans and previews show them; `gcloud alpha monitoring policies list
        # --filter='displayName="..."'` finds a policy by it.
        self.policy_names = pulumi.Output.all(*[p.display_name for p in self.policies]).apply(
            lambda values: [str(v) for v in values]
        )
        self.register_outputs({"policies": self.policy_names})

    def _policy(
        self,
        name: str,
        watched: _Watched,
        notify: list[pulumi.Output[str] | str],
        project: pulumi.Input[str],
        wait: time.Sleep,
    ) -> gcp.monitoring.AlertPolicy:
        return gcp.monitoring.AlertPolicy(
            f"{name}-{watched.key}",
            project=project,
            display_name=watched.display_name,
            combiner="OR",
            conditions=[
                gcp.monitoring.AlertPolicyConditionArgs(
                    display_name=watched.condition,
                    condition_threshold=gcp.monitoring.AlertPolicyConditionConditionThresholdArgs(
                        filter=metric_condition_filter(watched.metric, watched.resource_type),
                        # Only COMPARISON_GT/LT are supported; duration whole minutes (monitoring
                        # v3 discovery, MetricThreshold.comparison and .duration).
                        comparison="COMPARISON_GT",
                        threshold_value=0,
                        duration="0s",
                        aggregations=[
                            gcp.monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
                                alignment_period="300s", per_series_aligner="ALIGN_SUM"
                            )
                        ],
                        trigger=gcp.monitoring.AlertPolicyConditionConditionThresholdTriggerArgs(
                            count=1
                        ),
                    ),
                )
            ],
            notification_channels=notify,
            alert_strategy=gcp.monitoring.AlertPolicyAlertStrategyArgs(auto_close="1800s"),
            documentation=gcp.monitoring.AlertPolicyDocumentationArgs(
                mime_type="text/markdown",
                subject=watched.subject,
                content=(
                    f"{watched.what} Logs Explorer query:\n\n```\n{watched.log_filter}\n```\n\n"
                    "Then `dicom-bq operations` / `dicom-bq verify` on the stack."
                ),
            ),
            severity="ERROR",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[wait]),
        )
