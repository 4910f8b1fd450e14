"""The Google APIs each project needs, enabled and never disabled on destroy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp


@dataclass(frozen=True)
class ProjectServicesArgs:
    source_project: pulumi.Input[str]
    bigquery_project: pulumi.Input[str]
    # More APIs in the source project, for the optional parts: logging and monitoring (alerts),
    # cloudscheduler (nightly snapshot) and iam (its custom role and service account).
    source_extras: Sequence[str] = ()


class ProjectServices(pulumi.ComponentResource):
    """The Healthcare API in the source project, the BigQuery API where BigQuery is."""

    healthcare: gcp.projects.Service
    bigquery: gcp.projects.Service
    extras: list[gcp.projects.Service]

    def __init__(
        self, name: str, args: ProjectServicesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dicom-bq:index:ProjectServices", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Other workloads may use these APIs: destroying this stack must not switch them off.
        self.healthcare = gcp.projects.Service(
            f"{name}-healthcare",
            project=args.source_project,
            service="healthcare.googleapis.com",
            disable_on_destroy=False,
            disable_dependent_services=False,
            opts=child,
        )
        self.bigquery = gcp.projects.Service(
            f"{name}-bigquery",
            project=args.bigquery_project,
            service="bigquery.googleapis.com",
            disable_on_destroy=False,
            disable_dependent_services=False,
            opts=child,
        )
        self.extras = [
            gcp.projects.Service(
                f"{name}-{service.split('.')[0]}",
                project=args.source_project,
                service=service,
                disable_on_destroy=False,
                disable_dependent_services=False,
                opts=child,
            )
            for service in args.source_extras
        ]
        self.register_outputs({})
