"""Alerts on the Healthcare API's export and streaming errors for the stack's stores.

The API writes these errors to Cloud Logging by itself, always on
(https://cloud.google.com/healthcare-api/docs/how-tos/logging): a log-based metric counts them
per store, and an alert policy fires when the count rises above zero.
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
# Google's logging page says entries carry the store as their monitored resource and can be
# filtered on resource.type="healthcare_dicom_store". The exact log names (logName) are not
# documented, so the filters never use them; the label names dataset_id and dicom_store_id are
# inferred from the documented consent-store entries (labels consent_store_id, dataset_id):
# check them in Logs Explorer after the first error.
RESOURCE_TYPE = "healthcare_dicom_store"
# Creating an alert policy on a log-based metric just created fails with 404 "Cannot find
# metric(s) ... could take up to 10 minutes" (hashicorp/terraform-provider-google#11102, open);
# a wait between the two is the known workaround. Should it still be too short, a second
# `pulumi up` creates the policies.
METRIC_PROPAGATION_SECONDS = 120
# Metric IDs: up to 100 of A-Z a-z 0-9 _-.,+!*',()%/ (logging v2 discovery, LogMetric.name).
_METRIC_CHARS = re.compile(r"^[A-Za-z0-9_\-.,+!*'()%/]{1,100}$")


def error_log_filter(*, dataset_id: str, store_id: str, entry_type: str) -> str:
    """The Logging query of one store's error entries of one kind (Logging query language)."""
    return (
        f'resource.type="{RESOURCE_TYPE}" '
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


def policy_display_name(title: str, store_id: str) -> str:
    return f"dicom-bq: {title} errors on DICOM store {store_id}"


def metric_condition_filter(name: str) -> str:
    """A threshold filter must name the metric type and the resource type (monitoring v3
    discovery, MetricThreshold.filter); a log-based metric's series carry the entry's resource."""
    return f'metric.type="logging.googleapis.com/user/{name}" AND resource.type="{RESOURCE_TYPE}"'


@dataclass(frozen=True)
class AlertedStore:
    store_id: str
    dataset_id: str
    location: str
    store_name: pulumi.Input[str]
    streams: bool


@dataclass(frozen=True)
class OperationsAlertsArgs:
    project: pulumi.Input[str]
    stores: Sequence[AlertedStore]
    emails: Sequence[str] = ()
    channels: Sequence[str] = ()  # existing projects/P/notificationChannels/ID
    depends_on: list[pulumi.Resource] = field(default_factory=list)


@dataclass(frozen=True)
class _Watched:
    kind: str  # "export_errors" or "stream_errors"
    entry_type: str
    title: str
    store: AlertedStore


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
        watched = [
            _Watched("export_errors", EXPORT_ENTRY, "export", store) for store in args.stores
        ] + [
            _Watched("stream_errors", STREAM_ENTRY, "BigQuery streaming", store)
            for store in args.stores
            if store.streams
        ]
        names = [
            metric_name(
                kind=w.kind,
                location=w.store.location,
                dataset_id=w.store.dataset_id,
                store_id=w.store.store_id,
            )
            for w in watched
        ]
        self.metrics = [
            gcp.logging.Metric(
                f"{name}-{w.kind}-{w.store.store_id}",
                project=args.project,
                name=metric,
                description=f"Healthcare API {w.title} errors logged for the DICOM store "
                f"{w.store.store_id} (dicom-bq).",
                filter=error_log_filter(
                    dataset_id=w.store.dataset_id,
                    store_id=w.store.store_id,
                    entry_type=w.entry_type,
                ),
                # DELTA/INT64/"1": one point per matching entry (logging v2 discovery,
                # LogMetric.metricDescriptor).
                metric_descriptor=gcp.logging.MetricMetricDescriptorArgs(
                    metric_kind="DELTA", value_type="INT64", unit="1"
                ),
                opts=after_apis,
            )
            for w, metric in zip(watched, names, strict=True)
        ]
        wait = time.Sleep(
            f"{name}-metric-propagation",
            create_duration=f"{METRIC_PROPAGATION_SECONDS}s",
            # A metric added later makes the wait run again before its policy.
            triggers={metric: "logging.googleapis.com/user/" + metric for metric in names},
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(self.metrics)),
        )
        notify = [channel.name for channel in self.channels] + list(args.channels)
        self.policies = [
            self._policy(name, w, metric, notify, args.project, wait)
            for w, metric in zip(watched, names, strict=True)
        ]
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
        metric: str,
        notify: list[pulumi.Output[str] | str],
        project: pulumi.Input[str],
        wait: time.Sleep,
    ) -> gcp.monitoring.AlertPolicy:
        store = watched.store
        logs_query = error_log_filter(
            dataset_id=store.dataset_id, store_id=store.store_id, entry_type=watched.entry_type
        )
        return gcp.monitoring.AlertPolicy(
            f"{name}-{watched.kind}-{store.store_id}",
            project=project,
            display_name=policy_display_name(watched.title, store.store_id),
            combiner="OR",
            conditions=[
                gcp.monitoring.AlertPolicyConditionArgs(
                    display_name=f"{watched.title} error logged",
                    condition_threshold=gcp.monitoring.AlertPolicyConditionConditionThresholdArgs(
                        filter=metric_condition_filter(metric),
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
                subject=f"DICOM {watched.title} failed on {store.store_id}",
                content=(
                    f"The Healthcare API logged {watched.title} errors for the DICOM store "
                    f"`{store.store_id}`. Logs Explorer query:\n\n```\n{logs_query}\n```\n\n"
                    "Then `dicom-bq operations` / `dicom-bq verify` on the stack."
                ),
            ),
            severity="ERROR",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[wait]),
        )
