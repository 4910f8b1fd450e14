"""The whole DICOM-to-BigQuery export path for one stack, in the order Google requires."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp as gcp

from dicom_bq.infra import naming
from dicom_bq.infra.components.agent import AgentAccess, AgentAccessArgs
from dicom_bq.infra.components.bigquery import BigQueryDestination, BigQueryDestinationArgs
from dicom_bq.infra.components.healthcare import DicomStorage, DicomStorageArgs
from dicom_bq.infra.components.services import ProjectServices, ProjectServicesArgs
from dicom_bq.infra.grants import grant_specs
from dicom_bq.infra.settings import StackSettings


@dataclass(frozen=True)
class DicomExportPathArgs:
    settings: StackSettings


class DicomExportPath(pulumi.ComponentResource):
    """APIs, service agent, BigQuery dataset, grants, wait, then Healthcare dataset and store."""

    def __init__(
        self, name: str, args: DicomExportPathArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dicom-bq:index:DicomExportPath", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)

        services = ProjectServices(
            f"{name}-apis",
            ProjectServicesArgs(
                source_project=s.source_project, bigquery_project=s.bigquery_project
            ),
            opts=child,
        )
        self.agent_member = self._agent_member(s)
        specs = grant_specs(s)
        encryption = [spec for spec in specs if spec.principal == "bigquery_encryption"]
        self.bigquery_encryption_member = (
            self._bigquery_encryption_member(s, services.bigquery) if encryption else None
        )
        destination = BigQueryDestination(
            f"{name}-bigquery",
            BigQueryDestinationArgs(
                project=s.bigquery_project,
                dataset_id=s.bigquery_dataset_id,
                location=s.bigquery_dataset_location,
                labels=s.labels,
                kms_key=s.bigquery_kms_key,
                encryption_grant=encryption[0] if encryption else None,
                encryption_member=self.bigquery_encryption_member,
                propagation_wait_seconds=s.iam_propagation_wait,
                protected=s.protected,
                retain_on_delete=s.retain_on_delete,
                depends_on=[services.bigquery],
            ),
            opts=child,
        )
        access = AgentAccess(
            f"{name}-agent",
            AgentAccessArgs(
                source_project=s.source_project,
                member=self.agent_member,
                grants=[spec for spec in specs if spec.principal == "agent"],
                propagation_wait_seconds=s.iam_propagation_wait,
                scope_resources={"bigquery_dataset": destination.dataset},
                depends_on=[services.healthcare],
            ),
            opts=child,
        )
        # The API checks the agent's access when a CMEK dataset or a streaming or notifying store
        # is created, so those wait until the grants have propagated.
        after_grants: list[pulumi.Resource] = [access.propagated]
        storage = DicomStorage(
            f"{name}-dicom",
            DicomStorageArgs(
                project=s.source_project,
                location=s.location,
                dataset_id=s.healthcare_dataset_id,
                store_id=s.dicom_store_id,
                time_zone=s.time_zone,
                labels=s.labels,
                notification_topic=s.notification_topic,
                stream_table_uris=[
                    naming.table_uri(s.bigquery_project, s.bigquery_dataset_id, table)
                    for table in s.stream_tables
                ],
                kms_key=s.healthcare_kms_key,
                protected=s.protected,
                retain_on_delete=s.retain_on_delete,
                dataset_depends_on=[services.healthcare]
                + (after_grants if s.healthcare_kms_key else []),
                # Streams need their BigQuery dataset to exist, whatever the grant's scope.
                store_depends_on=(after_grants if (s.stream_tables or s.notification_topic) else [])
                + ([destination.dataset] if s.stream_tables else []),
            ),
            opts=child,
        )

        self.store = storage.store
        self.store_name = storage.store_name
        self.agent_email = pulumi.Output.from_input(self.agent_member).apply(
            lambda member: member.removeprefix("serviceAccount:")
        )
        self.grants = pulumi.Output.all(self.agent_member, self.bigquery_encryption_member).apply(
            lambda members: [
                spec.for_member(members[0] if spec.principal == "agent" else members[1]).as_dict()
                for spec in specs
            ]
        )
        self.bigquery_dataset = destination.dataset
        self.outputs: dict[str, Any] = {
            "dicomStoreName": self.store.id.apply(lambda _: self.store_name),
            "dicomwebUrl": naming.dicomweb_url(self.store_name, s.universe_domain),
            "agentEmail": self.agent_email,
            "sourceProject": s.source_project,
            "bigqueryProject": s.bigquery_project,
            "bigqueryDataset": destination.dataset.dataset_id.apply(
                lambda dataset_id: f"{s.bigquery_project}.{dataset_id}"
            ),
            "verificationTableUri": naming.verification_table_uri(
                s.bigquery_project, s.bigquery_dataset_id
            ),
            "filterBucket": s.filter_bucket,
            "universeDomain": s.universe_domain,
            "grants": self.grants,
        }
        self.register_outputs(self.outputs)

    def _project_number(self, project: str, known: str | None) -> pulumi.Input[str]:
        """A project's number: from the settings, or looked up at deploy time."""
        if known:
            return known
        found = gcp.organizations.get_project_output(
            project_id=project, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        return found.number.apply(str)

    def _agent_member(self, s: StackSettings) -> pulumi.Input[str]:
        number = self._project_number(s.source_project, s.source_project_number)
        return pulumi.Output.from_input(number).apply(
            lambda n: naming.agent_member(n, s.universe_domain, s.agent_iam_domain)
        )

    def _bigquery_encryption_member(
        self, s: StackSettings, bigquery_api: pulumi.Resource
    ) -> pulumi.Output[str]:
        """BigQuery's encryption account, made to exist before anything is granted to it.

        Google creates bq-NUMBER@bigquery-encryption.iam.gserviceaccount.com lazily, on the first
        projects.getServiceAccount call; granting a key to the address built by hand fails with
        "Service account ... does not exist" (terraform-google-bigquery#80). The data source calls
        that method (pulumi-gcp bigquery/get_default_service_account.py), after the BigQuery API
        is enabled.
        """
        account = gcp.bigquery.get_default_service_account_output(
            project=s.bigquery_project,
            opts=pulumi.InvokeOutputOptions(parent=self, depends_on=[bigquery_api]),
        )
        return account.member
