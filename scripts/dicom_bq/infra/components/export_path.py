"""The whole DICOM-to-BigQuery export path, in the order Google requires, as one component.

Other Pulumi programs use it with their own resources' Outputs as inputs (a project they create,
a dataset they already have); `pulumi package add` on scripts/dicom_bq/provider makes it usable
from TypeScript, Go or YAML. No `from __future__ import annotations` here: Pulumi's component
analyzer reads these annotations at run time
(pulumi/provider/experimental/analyzer.py, Analyzer.analyze_component).
"""

from collections.abc import Mapping, Sequence
from typing import Literal, NotRequired, TypedDict

import pulumi
import pulumi_gcp as gcp

from dicom_bq.infra import naming
from dicom_bq.infra.components.agent import AgentAccess, AgentAccessArgs
from dicom_bq.infra.components.bigquery import BigQueryDestination, BigQueryDestinationArgs
from dicom_bq.infra.components.healthcare import DicomStorage, DicomStorageArgs
from dicom_bq.infra.components.services import ProjectServices, ProjectServicesArgs
from dicom_bq.infra.grants import GrantRequest, grant_specs


class DicomExportPathArgs(TypedDict):
    """Where the path goes and what it has. Values may be Outputs of other resources; which
    optional parts exist (a topic, streams, keys, a bucket) is known when the program runs."""

    source_project: pulumi.Input[str]
    """Project that holds the Healthcare dataset and the DICOM store (the agent's project)."""
    location: pulumi.Input[str]
    """Location of the Healthcare dataset, such as us-central1."""
    healthcare_dataset_id: pulumi.Input[str]
    """Healthcare dataset ID."""
    dicom_store_id: pulumi.Input[str]
    """DICOM store ID."""
    bigquery_dataset_id: pulumi.Input[str]
    """BigQuery dataset receiving exports and streams."""
    source_project_number: NotRequired[pulumi.Input[str]]
    """Number of the source project; looked up when absent."""
    bigquery_project: NotRequired[pulumi.Input[str]]
    """Project of the BigQuery dataset; the source project when absent."""
    bigquery_location: NotRequired[pulumi.Input[str]]
    """Location of a BigQuery dataset the component creates; the Healthcare location when absent."""
    create_bigquery_dataset: NotRequired[bool]
    """False: the BigQuery dataset exists already (the component only grants on it)."""
    enable_apis: NotRequired[bool]
    """False: the Healthcare and BigQuery APIs are enabled elsewhere."""
    time_zone: NotRequired[pulumi.Input[str]]
    """IANA time zone of the Healthcare dataset (default UTC)."""
    labels: NotRequired[pulumi.Input[Mapping[str, pulumi.Input[str]]]]
    """Labels on the store and the datasets the component creates."""
    notification_topic: NotRequired[pulumi.Input[str]]
    """Pub/Sub topic projects/P/topics/T notified of new instances."""
    stream_tables: NotRequired[Sequence[pulumi.Input[str]]]
    """Tables of the BigQuery dataset that the store streams metadata to (at most 5)."""
    healthcare_kms_key: NotRequired[pulumi.Input[str]]
    """Cloud KMS key of the Healthcare dataset."""
    bigquery_kms_key: NotRequired[pulumi.Input[str]]
    """Cloud KMS key of the BigQuery dataset's tables."""
    filter_bucket: NotRequired[pulumi.Input[str]]
    """Bucket of export filter files, which the agent may read."""
    data_editor_scope: NotRequired[str]
    """Where roles/bigquery.dataEditor is granted: dataset (default) or project."""
    iam_propagation_wait_seconds: NotRequired[int]
    """Wait after the grants before creating what Google checks them for (default 120)."""
    protected: NotRequired[bool]
    """Protect the Healthcare dataset, the DICOM store and the BigQuery dataset."""
    retain_on_delete: NotRequired[bool]
    """Keep those resources in Google Cloud when they leave the stack."""
    universe_domain: NotRequired[str]
    """API universe (googleapis.com unless in a sovereign cloud)."""
    agent_iam_domain: NotRequired[str]
    """Service-agent domain for a universe dicom-bq does not know."""


class GrantOutput(TypedDict):
    """One grant the path makes: additive, explained."""

    role: pulumi.Output[str]
    member: pulumi.Output[str]
    scope: pulumi.Output[str]
    """Full resource name, such as //bigquery.googleapis.com/projects/P/datasets/D."""
    reason: pulumi.Output[str]


class DicomExportPath(pulumi.ComponentResource):
    """APIs, service agent, BigQuery dataset, additive grants, a wait for IAM to propagate, then
    the Healthcare dataset and the DICOM store that exports (and streams) to BigQuery."""

    store_name: pulumi.Output[str]
    """Full name of the DICOM store, projects/P/locations/L/datasets/D/dicomStores/S."""
    dicomweb_url: pulumi.Output[str]
    """DICOMweb endpoint of the store."""
    agent_email: pulumi.Output[str]
    """The Cloud Healthcare service agent of the source project."""
    source_project: pulumi.Output[str]
    bigquery_project: pulumi.Output[str]
    bigquery_dataset: pulumi.Output[str]
    """PROJECT.DATASET of the BigQuery dataset."""
    verification_table_uri: pulumi.Output[str]
    """bq://P.D.dicom_bq_verification, the table `dicom-bq verify` owns."""
    filter_bucket: pulumi.Output[str | None]
    universe_domain: pulumi.Output[str]
    grants: pulumi.Output[list[GrantOutput]]
    """Every grant the path makes (role, member, scope, reason)."""

    def __init__(
        self,
        name: str,
        args: DicomExportPathArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("dicom-bq:index:DicomExportPath", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        source_project = args["source_project"]
        bigquery_project = args.get("bigquery_project", source_project)
        universe = args.get("universe_domain", naming.DEFAULT_UNIVERSE)
        protected = args.get("protected", False)
        retain = args.get("retain_on_delete", False)
        wait = args.get("iam_propagation_wait_seconds", 120)
        labels = args.get("labels", {})
        data_editor_scope: Literal["dataset", "project"] = (
            "project" if args.get("data_editor_scope") == "project" else "dataset"
        )

        healthcare_api: list[pulumi.Resource] = []
        bigquery_api: list[pulumi.Resource] = []
        if args.get("enable_apis", True):
            services = ProjectServices(
                f"{name}-apis",
                ProjectServicesArgs(
                    source_project=source_project, bigquery_project=bigquery_project
                ),
                opts=child,
            )
            healthcare_api, bigquery_api = [services.healthcare], [services.bigquery]

        specs = grant_specs(
            GrantRequest(
                source_project=source_project,
                bigquery_project=bigquery_project,
                bigquery_dataset_id=args["bigquery_dataset_id"],
                data_editor_scope=data_editor_scope,
                filter_bucket=args.get("filter_bucket"),
                notification_topic=args.get("notification_topic"),
                healthcare_kms_key=args.get("healthcare_kms_key"),
                bigquery_kms_key=args.get("bigquery_kms_key"),
            )
        )
        agent_member = self._agent_member(
            source_project,
            args.get("source_project_number"),
            universe,
            args.get("agent_iam_domain"),
        )
        encryption = [spec for spec in specs if spec.principal == "bigquery_encryption"]
        encryption_member = (
            self._bigquery_encryption_member(bigquery_project, bigquery_api) if encryption else None
        )
        scope_resources: dict[str, pulumi.Resource] = {}
        after_dataset: list[pulumi.Resource] = []
        if args.get("create_bigquery_dataset", True):
            destination = BigQueryDestination(
                f"{name}-bigquery",
                BigQueryDestinationArgs(
                    project=bigquery_project,
                    dataset_id=args["bigquery_dataset_id"],
                    location=args.get("bigquery_location", args["location"]),
                    labels=labels,
                    kms_key=args.get("bigquery_kms_key"),
                    encryption_grant=encryption[0] if encryption else None,
                    encryption_member=encryption_member,
                    propagation_wait_seconds=wait,
                    protected=protected,
                    retain_on_delete=retain,
                    depends_on=bigquery_api,
                ),
                opts=child,
            )
            scope_resources["bigquery_dataset"] = destination.dataset
            after_dataset = [destination.dataset]
            dataset_id: pulumi.Input[str] = destination.dataset.dataset_id
        else:
            dataset_id = args["bigquery_dataset_id"]
        access = AgentAccess(
            f"{name}-agent",
            AgentAccessArgs(
                source_project=source_project,
                member=agent_member,
                grants=[spec for spec in specs if spec.principal == "agent"],
                propagation_wait_seconds=wait,
                scope_resources=scope_resources,
                depends_on=healthcare_api,
            ),
            opts=child,
        )
        # The API checks the agent's access when a CMEK dataset or a streaming or notifying store
        # is created, so those wait until the grants have propagated; streams also need their
        # BigQuery dataset to exist, whatever the grant's scope.
        after_grants: list[pulumi.Resource] = [access.propagated]
        streams = list(args.get("stream_tables", []))
        notifies = args.get("notification_topic") is not None
        storage = DicomStorage(
            f"{name}-dicom",
            DicomStorageArgs(
                project=source_project,
                location=args["location"],
                dataset_id=args["healthcare_dataset_id"],
                store_id=args["dicom_store_id"],
                time_zone=args.get("time_zone", "UTC"),
                labels=labels,
                notification_topic=args.get("notification_topic"),
                stream_table_uris=[
                    pulumi.Output.concat("bq://", bigquery_project, ".", dataset_id, ".", table)
                    for table in streams
                ],
                kms_key=args.get("healthcare_kms_key"),
                protected=protected,
                retain_on_delete=retain,
                dataset_depends_on=healthcare_api
                + (after_grants if args.get("healthcare_kms_key") is not None else []),
                store_depends_on=(after_grants if streams or notifies else [])
                + (after_dataset if streams else []),
            ),
            opts=child,
        )

        self.store_name = storage.store_name
        self.dicomweb_url = storage.store_name.apply(
            lambda store: naming.dicomweb_url(store, universe)
        )
        self.agent_email = pulumi.Output.from_input(agent_member).apply(
            lambda member: member.removeprefix("serviceAccount:")
        )
        self.source_project = pulumi.Output.from_input(source_project)
        self.bigquery_project = pulumi.Output.from_input(bigquery_project)
        self.bigquery_dataset = pulumi.Output.concat(bigquery_project, ".", dataset_id)
        self.verification_table_uri = pulumi.Output.all(bigquery_project, dataset_id).apply(
            lambda values: naming.verification_table_uri(str(values[0]), str(values[1]))
        )
        self.filter_bucket = pulumi.Output.from_input(args.get("filter_bucket"))
        self.universe_domain = pulumi.Output.from_input(universe)
        members = {"agent": agent_member, "bigquery_encryption": encryption_member}
        self.grants = pulumi.Output.all(
            *[spec.for_member(members[spec.principal] or "") for spec in specs]
        ).apply(list)
        self.register_outputs(
            {
                "store_name": self.store_name,
                "dicomweb_url": self.dicomweb_url,
                "agent_email": self.agent_email,
                "source_project": self.source_project,
                "bigquery_project": self.bigquery_project,
                "bigquery_dataset": self.bigquery_dataset,
                "verification_table_uri": self.verification_table_uri,
                "filter_bucket": self.filter_bucket,
                "universe_domain": self.universe_domain,
                "grants": self.grants,
            }
        )

    def _agent_member(
        self,
        project: pulumi.Input[str],
        known_number: pulumi.Input[str] | None,
        universe: str,
        agent_iam_domain: str | None,
    ) -> pulumi.Output[str]:
        """The source project's Healthcare agent: from its number, given or looked up."""
        if known_number is not None:
            number: pulumi.Input[str] = known_number
        else:
            found = gcp.organizations.get_project_output(
                project_id=project, opts=pulumi.InvokeOutputOptions(parent=self)
            )
            number = found.number.apply(str)
        return pulumi.Output.from_input(number).apply(
            lambda n: naming.agent_member(n, universe, agent_iam_domain)
        )

    def _bigquery_encryption_member(
        self, project: pulumi.Input[str], bigquery_api: list[pulumi.Resource]
    ) -> pulumi.Output[str]:
        """BigQuery's encryption account, made to exist before anything is granted to it.

        Google creates bq-NUMBER@bigquery-encryption.iam.gserviceaccount.com lazily, on the first
        projects.getServiceAccount call; granting a key to the address built by hand fails with
        "Service account ... does not exist" (terraform-google-bigquery#80). The data source calls
        that method (pulumi-gcp bigquery/get_default_service_account.py), after the BigQuery API
        is enabled.
        """
        account = gcp.bigquery.get_default_service_account_output(
            project=project,
            opts=pulumi.InvokeOutputOptions(parent=self, depends_on=bigquery_api),
        )
        return account.member
