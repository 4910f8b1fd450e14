"""The whole DICOM-to-BigQuery export path, in the order Google requires, as one component.

Other Pulumi programs use it with their own resources' Outputs as inputs (a project they create,
a dataset they already have); `pulumi package add` on scripts/dicom_bq/provider makes it usable
from TypeScript, Go or YAML. No `from __future__ import annotations` here: Pulumi's component
analyzer reads these annotations at run time
(pulumi/provider/experimental/analyzer.py, Analyzer.analyze_component).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import NotRequired, TypedDict, cast

import pulumi
import pulumi_gcp as gcp

from dicom_bq.infra.components.agent import AgentAccess
from dicom_bq.infra.components.healthcare import DicomStorage
from dicom_bq.infra.components.path_inputs import (
    PathInputs,
    grant_request,
    read_inputs,
    settled_on_failure,
)
from dicom_bq.infra.components.path_parts import (
    BigQuerySide,
    SnapshotSide,
    agent_side,
    bigquery_side,
    enabled_apis,
    healthcare_side,
    nightly_snapshot,
    operations_alerts,
    project_number_gate,
)
from dicom_bq.infra.grants import GrantSpec, grant_specs
from dicom_bq.vocabulary import naming


class DicomStoreArgs(TypedDict):
    """One DICOM store of a `dicom_stores` list."""

    store_id: str
    """Store ID. Plain text: the store's resource is named after it."""
    labels: NotRequired[Mapping[str, pulumi.Input[str]]]
    """The store's own labels, over the path's `labels`."""
    notification_topic: NotRequired[pulumi.Input[str]]
    """Pub/Sub topic projects/P/topics/T notified of the store's new instances."""
    send_for_bulk_import: NotRequired[bool]
    """Notify on bulk imports too (Healthcare v1 NotificationConfig.sendForBulkImport)."""
    stream_tables: NotRequired[Sequence[pulumi.Input[str]]]
    """Tables of the BigQuery dataset that the store streams metadata to (at most 5)."""


class StoreOutput(TypedDict):
    """One DICOM store of the path."""

    store_id: pulumi.Output[str]
    name: pulumi.Output[str]
    """Full name, projects/P/locations/L/datasets/D/dicomStores/S."""
    dicomweb_url: pulumi.Output[str]


class DicomExportPathArgs(TypedDict):
    """Where the path goes and what it has. Values may be Outputs of other resources; which
    optional parts exist (a topic, streams, keys, a bucket) is known when the program runs."""

    source_project: pulumi.Input[str]
    """Project that holds the Healthcare dataset and the DICOM store (the agent's project)."""
    location: pulumi.Input[str]
    """Location of the Healthcare dataset, such as us-central1."""
    healthcare_dataset_id: pulumi.Input[str]
    """Healthcare dataset ID."""
    dicom_store_id: NotRequired[pulumi.Input[str]]
    """DICOM store ID, for a path of one store (else dicom_stores)."""
    dicom_stores: NotRequired[Sequence[DicomStoreArgs]]
    """The DICOM stores of the Healthcare dataset, instead of dicom_store_id. The first takes
    over the store of a path that had dicom_store_id: keep that store first when converting."""
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
    """Labels on the stores and the datasets the component creates."""
    notification_topic: NotRequired[pulumi.Input[str]]
    """Pub/Sub topic projects/P/topics/T notified of new instances (dicom_store_id's store)."""
    stream_tables: NotRequired[Sequence[pulumi.Input[str]]]
    """Tables of the BigQuery dataset that dicom_store_id's store streams metadata to (at most
    5)."""
    healthcare_kms_key: NotRequired[pulumi.Input[str]]
    """Cloud KMS key of the Healthcare dataset."""
    bigquery_kms_key: NotRequired[pulumi.Input[str]]
    """Cloud KMS key of the BigQuery dataset's tables: only for the dataset the component
    creates (not with create_bigquery_dataset=False)."""
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
    """API universe (googleapis.com unless in a sovereign cloud) of the outputs' endpoints. The
    resources go where the component's gcp provider goes: outside googleapis.com give it one
    configured for this universe (the `providers` option, gcp.Provider universe_domain), as
    dicom-bq's own program does."""
    agent_iam_domain: NotRequired[str]
    """Service-agent domain for a universe dicom-bq does not know. Unused here: the component
    takes the agent's address from Google (its ServiceIdentity's answer); dicom-bq's offline plan
    reads the stack's agentIamDomain setting to show that address."""
    alert_emails: NotRequired[Sequence[str]]
    """Emails alerted on the stores' export and streaming errors."""
    alert_channels: NotRequired[Sequence[str]]
    """Existing notification channels (projects/P/notificationChannels/ID) alerted too."""
    snapshot_schedule: NotRequired[str]
    """Unix-cron schedule of a nightly WRITE_TRUNCATE export to the tool's snapshot table: at
    most hourly, and firing within a year (such as "0 2 * * *")."""
    snapshot_time_zone: NotRequired[str]
    """Time zone of the schedule (default: time_zone)."""
    snapshot_table: NotRequired[str]
    """The tool's snapshot table in the BigQuery dataset (default dicom_snapshot)."""
    snapshot_region: NotRequired[str]
    """Cloud Scheduler region (default: from the Healthcare location)."""


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
    """Full name of the (first) DICOM store, projects/P/locations/L/datasets/D/dicomStores/S."""
    dicomweb_url: pulumi.Output[str]
    """DICOMweb endpoint of the (first) store."""
    stores: pulumi.Output[list[StoreOutput]]
    """Every DICOM store of the path, in order."""
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
    snapshot_tables: pulumi.Output[list[str]]
    """bq://P.D.T of each store's nightly snapshot; empty without a schedule."""
    snapshot_jobs: pulumi.Output[list[str]]
    """projects/P/locations/R/jobs/ID of each store's snapshot job, in the stores' order; empty
    without a schedule."""
    snapshot_schedule: pulumi.Output[str | None]
    """Unix-cron of the snapshot job; None without one."""
    snapshot_time_zone: pulumi.Output[str | None]
    """Time zone of that schedule."""
    alert_policies: pulumi.Output[list[str]]
    """Display names of the error alert policies (unique per stack; Google assigns their
    projects/P/alertPolicies/ID names at creation); empty without alerts."""

    def __init__(
        self,
        name: str,
        args: DicomExportPathArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("dicom-bq:index:DicomExportPath", name, None, opts)
        # Checked before any resource is registered: `pulumi up` creates what was registered
        # before the program fails.
        inputs = read_inputs(args)
        # A failure from here on settles the snapshot account's pending email first: left
        # pending, the program's error would never be reported (path_inputs.PendingEmail).
        with settled_on_failure(inputs):
            self._build(name, inputs)

    def _build(self, name: str, inputs: PathInputs) -> None:
        specs = grant_specs(grant_request(inputs))
        # The parts (components/path_parts.py), each after what it needs.
        apis = enabled_apis(name, inputs, parent=self)
        gate = project_number_gate(inputs, parent=self)
        bigquery = bigquery_side(
            name,
            inputs,
            specs,
            gate,
            apis,
            encryption_account=self._bigquery_encryption_member,
            parent=self,
        )
        agent = agent_side(name, inputs, specs, gate, apis, bigquery, parent=self)
        storage = healthcare_side(name, inputs, apis, agent, bigquery, parent=self)
        snapshot = nightly_snapshot(name, inputs, specs, gate, apis, storage, parent=self)
        alert_policies = operations_alerts(name, inputs, apis, storage, snapshot, parent=self)
        outputs = path_outputs(inputs, specs, bigquery, agent, storage, snapshot, alert_policies)
        published = outputs.as_dict()
        for key, value in published.items():
            setattr(self, key, value)
        self.register_outputs(published)

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


@dataclass(frozen=True)
class PathOutputs:
    """The path's outputs: DicomExportPath's attributes of the same names and types."""

    store_name: pulumi.Output[str]
    dicomweb_url: pulumi.Output[str]
    stores: pulumi.Output[list[StoreOutput]]
    agent_email: pulumi.Output[str]
    source_project: pulumi.Output[str]
    bigquery_project: pulumi.Output[str]
    bigquery_dataset: pulumi.Output[str]
    verification_table_uri: pulumi.Output[str]
    filter_bucket: pulumi.Output[str | None]
    universe_domain: pulumi.Output[str]
    grants: pulumi.Output[list[GrantOutput]]
    snapshot_tables: pulumi.Output[list[str]]
    snapshot_jobs: pulumi.Output[list[str]]
    snapshot_schedule: pulumi.Output[str | None]
    snapshot_time_zone: pulumi.Output[str | None]
    alert_policies: pulumi.Output[list[str]]

    def as_dict(self) -> dict[str, pulumi.Output[object]]:
        """Output name -> its Output (not dataclasses.asdict, which would copy the Outputs)."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


def path_outputs(
    inputs: PathInputs,
    specs: Sequence[GrantSpec],
    bigquery: BigQuerySide,
    agent: AgentAccess,
    storage: DicomStorage,
    snapshot: SnapshotSide,
    alert_policies: pulumi.Output[list[str]],
) -> PathOutputs:
    """The last part: what the path tells its users, from what the other parts returned."""
    universe = inputs.universe
    project, dataset_id = inputs.bigquery_project, bigquery.dataset_id
    members = {
        "agent": agent.member,
        "bigquery_encryption": bigquery.encryption_member,
        "snapshot": snapshot.member,
        "scheduler": snapshot.scheduler_member,
    }
    schedule = inputs.snapshot.schedule if inputs.snapshot is not None else None
    return PathOutputs(
        store_name=storage.store_name,
        dicomweb_url=storage.store_name.apply(lambda store: naming.dicomweb_url(store, universe)),
        stores=pulumi.Output.all(*storage.store_names).apply(
            lambda names: _store_outputs([str(full) for full in names], universe)
        ),
        agent_email=pulumi.Output.from_input(agent.member).apply(
            lambda member: member.removeprefix("serviceAccount:")
        ),
        source_project=pulumi.Output.from_input(inputs.source_project),
        bigquery_project=pulumi.Output.from_input(project),
        bigquery_dataset=pulumi.Output.concat(project, ".", dataset_id),
        verification_table_uri=pulumi.Output.all(project, dataset_id).apply(
            lambda values: naming.verification_table_uri(str(values[0]), str(values[1]))
        ),
        filter_bucket=pulumi.Output.from_input(inputs.filter_bucket),
        universe_domain=pulumi.Output.from_input(universe),
        grants=pulumi.Output.all(
            *[spec.for_member(members[spec.principal] or "") for spec in specs]
        ).apply(list),
        snapshot_tables=pulumi.Output.all(*snapshot.table_uris).apply(
            lambda uris: [str(u) for u in uris]
        ),
        snapshot_jobs=pulumi.Output.all(*snapshot.job_names).apply(
            lambda names: [str(n) for n in names]
        ),
        snapshot_schedule=pulumi.Output.from_input(schedule),
        snapshot_time_zone=pulumi.Output.from_input(
            inputs.snapshot.time_zone if inputs.snapshot is not None else None
        ),
        alert_policies=alert_policies,
    )


def _store_outputs(names: list[str], universe: str) -> list[StoreOutput]:
    """Each store's outputs, from its full name (plain values once resolved; StoreOutput's fields
    are Outputs for the component schema, as GrantOutput's)."""
    return cast(
        "list[StoreOutput]",
        [
            {
                "store_id": name.rsplit("/", 1)[-1],
                "name": name,
                "dicomweb_url": naming.dicomweb_url(name, universe),
            }
            for name in names
        ],
    )
