"""The whole DICOM-to-BigQuery export path, in the order Google requires, as one component.

Other Pulumi programs use it with their own resources' Outputs as inputs (a project they create,
a dataset they already have); `pulumi package add` on scripts/dicom_bq/provider makes it usable
from TypeScript, Go or YAML. No `from __future__ import annotations` here: Pulumi's component
analyzer reads these annotations at run time
(pulumi/provider/experimental/analyzer.py, Analyzer.analyze_component).
"""

import dataclasses
import datetime
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NotRequired, TypedDict, cast

import pulumi
import pulumi_gcp as gcp

from dicom_bq import cron
from dicom_bq.errors import DicomBqError
from dicom_bq.infra import naming
from dicom_bq.infra.components.agent import AgentAccess, AgentAccessArgs, after, checked_number
from dicom_bq.infra.components.alerts import (
    AlertedJob,
    AlertedStore,
    OperationsAlerts,
    OperationsAlertsArgs,
)
from dicom_bq.infra.components.bigquery import BigQueryDestination, BigQueryDestinationArgs
from dicom_bq.infra.components.healthcare import DicomStorage, DicomStorageArgs, DicomStoreSpec
from dicom_bq.infra.components.services import ProjectServices, ProjectServicesArgs
from dicom_bq.infra.components.snapshot import (
    NightlySnapshot,
    NightlySnapshotArgs,
    SnapshotTarget,
    scheduler_region,
)
from dicom_bq.infra.grants import GrantRequest, TopicGrant, grant_specs

# The single-store form's key of the publisher grant; a listed store's topic takes it over.
SINGLE_TOPIC_KEY = "notification-topic-publisher"


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

        if args.get("bigquery_kms_key") is not None and not args.get(
            "create_bigquery_dataset", True
        ):
            # The key's grant to BigQuery's encryption account is made with the dataset
            # (components/bigquery.py); on a dataset made elsewhere it would be listed in
            # `grants` but never made.
            raise DicomBqError(
                "bigquery_kms_key sets the default key of the dataset this component creates; "
                "with create_bigquery_dataset=False set the key on your dataset (and grant "
                "BigQuery's encryption account roles/cloudkms.cryptoKeyEncrypterDecrypter on "
                "it), and leave bigquery_kms_key out"
            )
        alert_emails = list(args.get("alert_emails", []))
        alert_channels = list(args.get("alert_channels", []))
        alerting = bool(alert_emails or alert_channels)
        schedule = args.get("snapshot_schedule")
        stores = _store_inputs(args, labels)
        # (store ID, store name) of every store the path manages: alerts and snapshots cover each.
        named_after_ids = alerting or schedule is not None
        store_ids = [
            self._text(store.store_id, "dicom_store_id", named_after_ids) for store in stores
        ]
        # Metric names and filters are made from these too (components/alerts.py).
        location_text = self._text(args["location"], "location", named_after_ids)
        dataset_id_text = self._text(
            args["healthcare_dataset_id"], "healthcare_dataset_id", named_after_ids
        )
        snapshot_stores: tuple[tuple[str, pulumi.Input[str]], ...] = ()
        snapshot_account = snapshot_role = ""
        snapshot_email: pulumi.Input[str] | None = None
        resolve_snapshot_email: Callable[[pulumi.Output[str]], None] | None = None
        snapshot_jobs: list[AlertedJob] = []
        snapshot_zone = ""
        if schedule is not None:
            # Checked before any resource is registered: `pulumi up` creates what was registered
            # before the program fails.
            snapshot_zone = self._text(
                args.get("snapshot_time_zone") or args.get("time_zone", "UTC"),
                "snapshot_time_zone (or time_zone)",
                True,
            )
            problem = cron.snapshot_schedule_problem(
                cron.parse_schedule(schedule, snapshot_zone, what="snapshot_schedule"),
                now=datetime.datetime.now(datetime.UTC),
            )
            if problem:
                raise DicomBqError(f"snapshot_schedule {problem}")
            hc_dataset = naming.healthcare_dataset_name(
                self._text(source_project, "source_project", True), location_text, dataset_id_text
            )
            snapshot_account = naming.snapshot_account_id(hc_dataset)
            snapshot_role = naming.snapshot_role_id(hc_dataset)
            # Cloud Scheduler's agent is granted on the account: known offline where the
            # universe's address form is, elsewhere the account's own email once it exists.
            if universe == naming.DEFAULT_UNIVERSE:
                snapshot_email = naming.service_account_email(
                    snapshot_account, self._text(source_project, "source_project", True)
                )
            else:
                snapshot_email, resolve_snapshot_email = pulumi.deferred_output()
            _refuse_shared_names(
                store_ids,
                table=args.get("snapshot_table", naming.DEFAULT_SNAPSHOT_TABLE),
                account_id=snapshot_account,
            )
            snapshot_stores = tuple(
                (store_id, f"{hc_dataset}/dicomStores/{store_id}") for store_id in store_ids
            )

        healthcare_api: list[pulumi.Resource] = []
        bigquery_api: list[pulumi.Resource] = []
        operations_api: dict[str, pulumi.Resource] = {}
        if args.get("enable_apis", True):
            extras = ["logging.googleapis.com", "monitoring.googleapis.com"] if alerting else []
            if schedule is not None:
                extras += ["cloudscheduler.googleapis.com", "iam.googleapis.com"]
            services = ProjectServices(
                f"{name}-apis",
                ProjectServicesArgs(
                    source_project=source_project,
                    bigquery_project=bigquery_project,
                    source_extras=extras,
                ),
                opts=child,
            )
            healthcare_api, bigquery_api = [services.healthcare], [services.bigquery]
            operations_api = dict(zip(extras, services.extras, strict=True))

        specs = grant_specs(
            GrantRequest(
                source_project=source_project,
                bigquery_project=bigquery_project,
                bigquery_dataset_id=args["bigquery_dataset_id"],
                data_editor_scope=data_editor_scope,
                filter_bucket=args.get("filter_bucket"),
                notification_topic=args.get("notification_topic"),
                notification_topics=_topic_grants(stores),
                healthcare_kms_key=args.get("healthcare_kms_key"),
                bigquery_kms_key=args.get("bigquery_kms_key"),
                snapshot_stores=snapshot_stores,
                snapshot_account=snapshot_email,
                snapshot_role=(
                    naming.custom_role_name(str(source_project), snapshot_role)
                    if schedule is not None
                    else None
                ),
                creates_bigquery_dataset=args.get("create_bigquery_dataset", True),
            )
        )
        # A configured source project number is checked against Google's before any grant:
        # every member below waits for the check and fails with it.
        configured_number = args.get("source_project_number")
        gate = (
            checked_number(
                source_project,
                configured_number,
                "dicom-bq:sourceProjectNumber (source_project_number)",
                pulumi.InvokeOutputOptions(parent=self),
            )
            if configured_number is not None
            else None
        )
        encryption = [spec for spec in specs if spec.principal == "bigquery_encryption"]
        encryption_member = (
            after(self._bigquery_encryption_member(bigquery_project, bigquery_api), gate)
            if encryption
            else None
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
        # The agent's address is the one Google answers when the ServiceIdentity makes the agent
        # exist, not one built from the configured number.
        access = AgentAccess(
            f"{name}-agent",
            AgentAccessArgs(
                source_project=source_project,
                gate=gate,
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
        agent_member = access.member
        scheduler_member: pulumi.Output[str] | None = None
        storage = DicomStorage(
            f"{name}-dicom",
            DicomStorageArgs(
                project=source_project,
                location=args["location"],
                dataset_id=args["healthcare_dataset_id"],
                stores=[
                    DicomStoreSpec(
                        store_id=store.store_id,
                        labels=store.labels,
                        notification_topic=store.notification_topic,
                        send_for_bulk_import=store.send_for_bulk_import,
                        stream_table_uris=[
                            pulumi.Output.concat(
                                "bq://", bigquery_project, ".", dataset_id, ".", table
                            )
                            for table in store.stream_tables
                        ],
                        # Each store waits for what Google checks when creating it, only that:
                        # a plain store of a CMEK dataset still follows the key's wait through
                        # its dataset.
                        depends_on=(
                            after_grants
                            if store.stream_tables or store.notification_topic is not None
                            else []
                        )
                        + (after_dataset if store.stream_tables else []),
                        listed_id=store.listed_id,
                        adopts_single_store=index == 0 and store.listed_id is not None,
                    )
                    for index, store in enumerate(stores)
                ],
                time_zone=args.get("time_zone", "UTC"),
                kms_key=args.get("healthcare_kms_key"),
                protected=protected,
                retain_on_delete=retain,
                dataset_depends_on=healthcare_api
                + (after_grants if args.get("healthcare_kms_key") is not None else []),
            ),
            opts=child,
        )

        dataset_text = args["bigquery_dataset_id"]
        snapshot_uris: list[pulumi.Output[str]] = []
        snapshot_job_names: list[pulumi.Output[str]] = []
        snapshot_member: pulumi.Input[str] | None = None
        if schedule is not None:
            tables = naming.snapshot_tables(
                store_ids, args.get("snapshot_table", naming.DEFAULT_SNAPSHOT_TABLE)
            )
            snapshot_uris = [
                pulumi.Output.concat("bq://", bigquery_project, ".", dataset_text, ".", table)
                for table in (tables[store_id] for store_id in store_ids)
            ]
            # Text where the universe's address form is known (snapshot_email above), so plans,
            # reviews and policy checks see the member; elsewhere, the account's own output.
            if isinstance(snapshot_email, str):
                snapshot_member = "serviceAccount:" + snapshot_email
            snapshot = NightlySnapshot(
                f"{name}-snapshot",
                NightlySnapshotArgs(
                    project=source_project,
                    region=args.get("snapshot_region") or scheduler_region(location_text),
                    schedule=schedule,
                    time_zone=snapshot_zone,
                    targets=[
                        SnapshotTarget(store_id, store, uri)
                        for (store_id, store), uri in zip(
                            snapshot_stores, snapshot_uris, strict=True
                        )
                    ],
                    grants=[spec for spec in specs if spec.principal == "snapshot"],
                    account_id=snapshot_account,
                    role_id=snapshot_role,
                    member=snapshot_member,
                    gate=gate,
                    scheduler_grants=[spec for spec in specs if spec.principal == "scheduler"],
                    propagation_wait_seconds=wait,
                    universe_domain=universe,
                    depends_on=[
                        api
                        for service, api in operations_api.items()
                        if service.startswith(("cloudscheduler.", "iam."))
                    ],
                    stores=list(storage.stores),
                ),
                opts=child,
            )
            if snapshot_member is None:
                snapshot_member = snapshot.account.member
            if snapshot.scheduler is not None:
                scheduler_member = snapshot.scheduler.member
            if resolve_snapshot_email is not None:
                resolve_snapshot_email(snapshot.account.email)
            # The job's resource name, the form its ID takes in the provider
            # (pulumi_gcp/cloudscheduler/job.py, import: projects/{{project}}/locations/
            # {{region}}/jobs/{{name}}) and jobs.get's `name` (cloudscheduler v1 discovery).
            snapshot_job_names = [
                pulumi.Output.concat(
                    "projects/", job.project, "/locations/", job.region, "/jobs/", job.name
                )
                for job in snapshot.jobs
            ]
            snapshot_jobs = [
                AlertedJob(store_id=store_id, job_id=job_id, region=snapshot.region)
                for store_id, job_id in snapshot.job_ids.items()
            ]
        policy_names: pulumi.Output[list[str]] = pulumi.Output.from_input([])
        if alerting:
            alerts = OperationsAlerts(
                f"{name}-alerts",
                OperationsAlertsArgs(
                    project=source_project,
                    stores=[
                        AlertedStore(
                            store_id=store_id,
                            dataset_id=dataset_id_text,
                            location=location_text,
                            store_name=store_name,
                            streams=bool(store.stream_tables),
                        )
                        for store_id, store, store_name in zip(
                            store_ids, stores, storage.store_names, strict=True
                        )
                    ],
                    emails=alert_emails,
                    channels=alert_channels,
                    snapshot_jobs=snapshot_jobs,
                    depends_on=[
                        api
                        for service, api in operations_api.items()
                        if service.startswith(("logging.", "monitoring."))
                    ],
                ),
                opts=child,
            )
            policy_names = alerts.policy_names

        self.store_name = storage.store_name
        self.dicomweb_url = storage.store_name.apply(
            lambda store: naming.dicomweb_url(store, universe)
        )
        self.stores = pulumi.Output.all(*storage.store_names).apply(
            lambda names: _store_outputs([str(full) for full in names], universe)
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
        self.snapshot_tables = pulumi.Output.all(*snapshot_uris).apply(
            lambda uris: [str(u) for u in uris]
        )
        self.snapshot_jobs = pulumi.Output.all(*snapshot_job_names).apply(
            lambda names: [str(n) for n in names]
        )
        self.snapshot_schedule = pulumi.Output.from_input(schedule)
        self.snapshot_time_zone = pulumi.Output.from_input(
            snapshot_zone if schedule is not None else None
        )
        self.alert_policies = policy_names
        members = {
            "agent": agent_member,
            "bigquery_encryption": encryption_member,
            "snapshot": snapshot_member,
            "scheduler": scheduler_member,
        }
        self.grants = pulumi.Output.all(
            *[spec.for_member(members[spec.principal] or "") for spec in specs]
        ).apply(list)
        self.register_outputs(
            {
                "store_name": self.store_name,
                "dicomweb_url": self.dicomweb_url,
                "stores": self.stores,
                "agent_email": self.agent_email,
                "source_project": self.source_project,
                "bigquery_project": self.bigquery_project,
                "bigquery_dataset": self.bigquery_dataset,
                "verification_table_uri": self.verification_table_uri,
                "filter_bucket": self.filter_bucket,
                "universe_domain": self.universe_domain,
                "grants": self.grants,
                "snapshot_tables": self.snapshot_tables,
                "snapshot_jobs": self.snapshot_jobs,
                "snapshot_schedule": self.snapshot_schedule,
                "snapshot_time_zone": self.snapshot_time_zone,
                "alert_policies": self.alert_policies,
            }
        )

    @staticmethod
    def _text(value: pulumi.Input[str], arg: str, needed: object) -> str:
        """Alerts and snapshots name resources after the store, so its IDs must be plain text
        when the program runs (not another resource's Output)."""
        if needed and not isinstance(value, str):
            raise DicomBqError(
                f"{arg} must be plain text when alerts or a snapshot schedule are on: their "
                "resource names are made from it"
            )
        return str(value)

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
class _StoreInput:
    store_id: pulumi.Input[str]
    labels: pulumi.Input[Mapping[str, pulumi.Input[str]]]
    notification_topic: pulumi.Input[str] | None
    send_for_bulk_import: bool | None
    stream_tables: list[pulumi.Input[str]]
    # The store's ID when a dicom_stores list declared it (its resource is named after it).
    listed_id: str | None


def _store_inputs(
    args: DicomExportPathArgs, labels: pulumi.Input[Mapping[str, pulumi.Input[str]]]
) -> list[_StoreInput]:
    """The path's stores, whichever form declared them; exactly one form."""
    single = args.get("dicom_store_id")
    listed = args.get("dicom_stores")
    if (single is None) == (listed is None) or (listed is not None and not listed):
        raise DicomBqError(
            "DicomExportPath needs dicom_store_id (one store) or dicom_stores (a non-empty "
            "list), not both and not neither"
        )
    if single is not None:
        return [
            _StoreInput(
                store_id=single,
                labels=labels,
                notification_topic=args.get("notification_topic"),
                send_for_bulk_import=None,
                stream_tables=list(args.get("stream_tables", [])),
                listed_id=None,
            )
        ]
    if args.get("notification_topic") is not None or args.get("stream_tables"):
        raise DicomBqError(
            "with dicom_stores, give each store its notification_topic and stream_tables"
        )
    assert listed is not None
    inputs = []
    for entry in listed:
        if not isinstance(entry["store_id"], str):
            raise DicomBqError(
                "a dicom_stores entry's store_id must be plain text: it names a resource"
            )
        inputs.append(
            _StoreInput(
                store_id=entry["store_id"],
                labels=_merged_labels(labels, entry.get("labels", {})),
                notification_topic=entry.get("notification_topic"),
                send_for_bulk_import=entry.get("send_for_bulk_import"),
                stream_tables=list(entry.get("stream_tables", [])),
                listed_id=entry["store_id"],
            )
        )
    return inputs


def _refuse_shared_names(store_ids: list[str], *, table: str, account_id: str) -> None:
    """Each store's snapshot table and job are named after its ID: two IDs that differ only by
    what those names replace would share them (naming.shared_snapshot_names)."""
    shared = naming.shared_snapshot_names(store_ids, table=table, account_id=account_id)
    if shared:
        pair = shared[0]
        raise DicomBqError(
            f"dicom_stores[{pair.second}] store_id '{store_ids[pair.second]}' and "
            f"dicom_stores[{pair.first}] store_id '{store_ids[pair.first]}' would share "
            f"{' and '.join(pair.shared)}: one store's nightly export would replace the other's "
            "snapshot; rename one"
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


def _merged_labels(
    base: pulumi.Input[Mapping[str, pulumi.Input[str]]], own: Mapping[str, pulumi.Input[str]]
) -> pulumi.Input[Mapping[str, pulumi.Input[str]]]:
    """The path's labels with the store's own over them."""
    if not own:
        return base
    if isinstance(base, Mapping):
        return {**base, **own}
    return pulumi.Output.all(base).apply(lambda values: {**values[0], **own})


def _topic_grants(stores: list[_StoreInput]) -> tuple[TopicGrant, ...]:
    """One publisher grant per distinct topic of a dicom_stores list, keyed by the first store
    that names it: a key (the grant's resource name) that does not move when stores are added
    or reordered. The first store's topic keeps the single-store form's grant through an alias.
    Topics that are another resource's Output cannot be compared: each gets its own grant."""
    grants: dict[object, TopicGrant] = {}
    for index, store in enumerate(stores):
        topic = store.notification_topic
        if store.listed_id is None or topic is None:
            continue
        same = topic if isinstance(topic, str) else id(topic)
        found = grants.get(same)
        grants[same] = (
            dataclasses.replace(found, store_ids=(*found.store_ids, store.listed_id))
            if found is not None
            else TopicGrant(
                key=f"{SINGLE_TOPIC_KEY}-{store.listed_id}",
                topic=topic,
                store_ids=(store.listed_id,),
                former_keys=(SINGLE_TOPIC_KEY,) if index == 0 else (),
            )
        )
    return tuple(grants.values())
