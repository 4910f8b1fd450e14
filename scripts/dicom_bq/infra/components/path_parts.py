"""The parts DicomExportPath is composed of, in the order Google requires.

Each part registers its own resources (children of the path, through the sub-components of the
sibling modules), takes what the earlier parts returned, and returns a small typed result for
the later ones. Values pass along as Inputs and Outputs, so most dependencies follow from them;
the explicit ones (an API before what uses it, a propagation wait before what Google checks) are
each part's own.

    inputs = read_inputs(args)            the arguments checked (components/path_inputs.py)
    apis = enabled_apis(...)              the Healthcare, BigQuery and optional parts' APIs
    gate = project_number_gate(...)       the configured project number checked before any grant
    bigquery = bigquery_side(...)         the BigQuery dataset (and its CMEK key's grant, wait)
    agent = agent_side(...)               the Healthcare agent, its grants, their wait
    storage = healthcare_side(...)        the Healthcare dataset and its DICOM stores
    snapshot = nightly_snapshot(...)      the optional nightly export job and its account
    alert_policies = operations_alerts()  the optional error alerts
    outputs = path_outputs(...)           the path's outputs (components/export_path.py)

Each takes `parent=` the path: the resources keep the names and parents (URNs) they always had.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi

from dicom_bq.infra.components.agent import AgentAccess, AgentAccessArgs, after, checked_number
from dicom_bq.infra.components.alerts import (
    AlertedJob,
    AlertedStore,
    OperationsAlerts,
    OperationsAlertsArgs,
)
from dicom_bq.infra.components.bigquery import BigQueryDestination, BigQueryDestinationArgs
from dicom_bq.infra.components.healthcare import DicomStorage, DicomStorageArgs, DicomStoreSpec
from dicom_bq.infra.components.path_inputs import PathInputs, StoreInput
from dicom_bq.infra.components.services import ProjectServices, ProjectServicesArgs
from dicom_bq.infra.components.snapshot import (
    NightlySnapshot,
    NightlySnapshotArgs,
    SnapshotTarget,
)
from dicom_bq.infra.grants import GrantSpec, Principal
from dicom_bq.vocabulary import naming

# BigQuery's encryption account of a project, looked up once the BigQuery API is enabled
# (DicomExportPath._bigquery_encryption_member).
EncryptionAccount = Callable[[pulumi.Input[str], list[pulumi.Resource]], pulumi.Input[str]]


def _child(parent: pulumi.Resource) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(parent=parent)


def granted_to(specs: Sequence[GrantSpec], principal: Principal) -> list[GrantSpec]:
    """The grants of one principal, in the grants list's order."""
    return [spec for spec in specs if spec.principal == principal]


@dataclass(frozen=True)
class EnabledApis:
    """The APIs the path enables; empty where enable_apis=False leaves them to the consumer."""

    healthcare: list[pulumi.Resource] = field(default_factory=list)
    bigquery: list[pulumi.Resource] = field(default_factory=list)
    # Service name -> its resource: logging and monitoring (alerts), cloudscheduler and iam
    # (the nightly snapshot).
    operations: dict[str, pulumi.Resource] = field(default_factory=dict)

    def of(self, *services: str) -> list[pulumi.Resource]:
        """The optional parts' APIs whose names start with one of `services` ("logging.")."""
        return [api for service, api in self.operations.items() if service.startswith(services)]


def enabled_apis(name: str, inputs: PathInputs, *, parent: pulumi.Resource) -> EnabledApis:
    if not inputs.enable_apis:
        return EnabledApis()
    extras = ["logging.googleapis.com", "monitoring.googleapis.com"] if inputs.alerting else []
    if inputs.snapshot is not None:
        extras += ["cloudscheduler.googleapis.com", "iam.googleapis.com"]
    services = ProjectServices(
        f"{name}-apis",
        ProjectServicesArgs(
            source_project=inputs.source_project,
            bigquery_project=inputs.bigquery_project,
            source_extras=extras,
        ),
        opts=_child(parent),
    )
    return EnabledApis(
        healthcare=[services.healthcare],
        bigquery=[services.bigquery],
        operations=dict(zip(extras, services.extras, strict=True)),
    )


def project_number_gate(
    inputs: PathInputs, *, parent: pulumi.Resource
) -> pulumi.Output[Any] | None:
    """A configured source project number, checked against Google's before any grant: every
    member waits for the check and fails with it. None: no number configured (Google's answer
    is used as is)."""
    if inputs.source_project_number is None:
        return None
    return checked_number(
        inputs.source_project,
        inputs.source_project_number,
        "dicom-bq:sourceProjectNumber (source_project_number)",
        pulumi.InvokeOutputOptions(parent=parent),
    )


@dataclass(frozen=True)
class BigQuerySide:
    # The dataset's ID: the created dataset's output (so what names it follows it), else the
    # argument.
    dataset_id: pulumi.Input[str]
    # BigQuery's encryption account, where a grant goes to it; else None.
    encryption_member: pulumi.Output[str] | None
    # The dataset, for what must follow it (a grant on it, a store streaming to it); empty
    # when the dataset exists already.
    dataset: list[pulumi.Resource]

    @property
    def scope_resources(self) -> dict[str, pulumi.Resource]:
        """Grant scope kind -> the resource a grant there waits for."""
        return {"bigquery_dataset": self.dataset[0]} if self.dataset else {}


def bigquery_side(
    name: str,
    inputs: PathInputs,
    specs: Sequence[GrantSpec],
    gate: pulumi.Output[Any] | None,
    apis: EnabledApis,
    *,
    encryption_account: EncryptionAccount,
    parent: pulumi.Resource,
) -> BigQuerySide:
    """The BigQuery dataset the path creates (unless it exists already), after its API and,
    with a CMEK key, after the key's grant to BigQuery's encryption account has propagated."""
    encryption = granted_to(specs, "bigquery_encryption")
    encryption_member = (
        after(encryption_account(inputs.bigquery_project, apis.bigquery), gate)
        if encryption
        else None
    )
    if not inputs.create_bigquery_dataset:
        return BigQuerySide(inputs.bigquery_dataset_id, encryption_member, [])
    destination = BigQueryDestination(
        f"{name}-bigquery",
        BigQueryDestinationArgs(
            project=inputs.bigquery_project,
            dataset_id=inputs.bigquery_dataset_id,
            location=inputs.bigquery_location,
            labels=inputs.labels,
            kms_key=inputs.bigquery_kms_key,
            encryption_grant=encryption[0] if encryption else None,
            encryption_member=encryption_member,
            propagation_wait_seconds=inputs.propagation_wait_seconds,
            protected=inputs.protected,
            retain_on_delete=inputs.retain_on_delete,
            depends_on=apis.bigquery,
        ),
        opts=_child(parent),
    )
    return BigQuerySide(destination.dataset.dataset_id, encryption_member, [destination.dataset])


def agent_side(
    name: str,
    inputs: PathInputs,
    specs: Sequence[GrantSpec],
    gate: pulumi.Output[Any] | None,
    apis: EnabledApis,
    bigquery: BigQuerySide,
    *,
    parent: pulumi.Resource,
) -> AgentAccess:
    """The Cloud Healthcare agent, made to exist, its grants and their propagation wait. Its
    address is the one Google answers when the ServiceIdentity makes it exist, not one built
    from the configured number."""
    return AgentAccess(
        f"{name}-agent",
        AgentAccessArgs(
            source_project=inputs.source_project,
            gate=gate,
            grants=granted_to(specs, "agent"),
            propagation_wait_seconds=inputs.propagation_wait_seconds,
            scope_resources=bigquery.scope_resources,
            depends_on=apis.healthcare,
        ),
        opts=_child(parent),
    )


def healthcare_side(
    name: str,
    inputs: PathInputs,
    apis: EnabledApis,
    agent: AgentAccess,
    bigquery: BigQuerySide,
    *,
    parent: pulumi.Resource,
) -> DicomStorage:
    """The Healthcare dataset and its stores. The API checks the agent's access when a CMEK
    dataset or a streaming or notifying store is created, so those wait until the grants have
    propagated; streams also need their BigQuery dataset to exist, whatever the grant's scope."""
    after_grants: list[pulumi.Resource] = [agent.propagated]
    return DicomStorage(
        f"{name}-dicom",
        DicomStorageArgs(
            project=inputs.source_project,
            location=inputs.location,
            dataset_id=inputs.healthcare_dataset_id,
            stores=[
                _store_spec(inputs, store, index, after_grants, bigquery)
                for index, store in enumerate(inputs.stores)
            ],
            time_zone=inputs.time_zone,
            kms_key=inputs.healthcare_kms_key,
            protected=inputs.protected,
            retain_on_delete=inputs.retain_on_delete,
            dataset_depends_on=apis.healthcare
            + (after_grants if inputs.healthcare_kms_key is not None else []),
        ),
        opts=_child(parent),
    )


def _store_spec(
    inputs: PathInputs,
    store: StoreInput,
    index: int,
    after_grants: list[pulumi.Resource],
    bigquery: BigQuerySide,
) -> DicomStoreSpec:
    return DicomStoreSpec(
        store_id=store.store_id,
        labels=store.labels,
        notification_topic=store.notification_topic,
        send_for_bulk_import=store.send_for_bulk_import,
        stream_table_uris=[
            pulumi.Output.concat(
                "bq://", inputs.bigquery_project, ".", bigquery.dataset_id, ".", table
            )
            for table in store.stream_tables
        ],
        # Each store waits for what Google checks when creating it, only that: a plain store
        # of a CMEK dataset still follows the key's wait through its dataset.
        depends_on=(
            after_grants if store.stream_tables or store.notification_topic is not None else []
        )
        + (bigquery.dataset if store.stream_tables else []),
        listed_id=store.listed_id,
        adopts_single_store=index == 0 and store.listed_id is not None,
    )


@dataclass(frozen=True)
class SnapshotSide:
    """What the nightly snapshot adds to the path's outputs and alerts; empty without one."""

    # The snapshot account and Cloud Scheduler's agent, as their grants' members.
    member: pulumi.Input[str] | None = None
    scheduler_member: pulumi.Output[str] | None = None
    table_uris: list[pulumi.Output[str]] = field(default_factory=list)
    job_names: list[pulumi.Output[str]] = field(default_factory=list)
    jobs: list[AlertedJob] = field(default_factory=list)


def nightly_snapshot(
    name: str,
    inputs: PathInputs,
    specs: Sequence[GrantSpec],
    gate: pulumi.Output[Any] | None,
    apis: EnabledApis,
    storage: DicomStorage,
    *,
    parent: pulumi.Resource,
) -> SnapshotSide:
    plan = inputs.snapshot
    if plan is None:
        return SnapshotSide()
    # The tool's table in the dataset as configured: its URI is known before the dataset exists.
    table_uris = [
        pulumi.Output.concat(
            "bq://", inputs.bigquery_project, ".", inputs.bigquery_dataset_id, ".", table
        )
        for table in _snapshot_tables(inputs.store_ids, plan.table)
    ]
    snapshot = NightlySnapshot(
        f"{name}-snapshot",
        NightlySnapshotArgs(
            project=inputs.source_project,
            region=plan.region,
            schedule=plan.schedule,
            time_zone=plan.time_zone,
            targets=[
                SnapshotTarget(store_id, store, uri)
                for (store_id, store), uri in zip(plan.stores, table_uris, strict=True)
            ],
            grants=granted_to(specs, "snapshot"),
            account_id=plan.account_id,
            role_id=plan.role_id,
            member=plan.member,
            gate=gate,
            scheduler_grants=granted_to(specs, "scheduler"),
            propagation_wait_seconds=inputs.propagation_wait_seconds,
            universe_domain=inputs.universe,
            depends_on=apis.of("cloudscheduler.", "iam."),
            stores=list(storage.stores),
        ),
        opts=_child(parent),
    )
    if plan.pending_email is not None:
        plan.pending_email.resolve(snapshot.account.email)
    return SnapshotSide(
        member=plan.member if plan.member is not None else snapshot.account.member,
        scheduler_member=snapshot.scheduler.member if snapshot.scheduler is not None else None,
        table_uris=table_uris,
        # The job's resource name, the form its ID takes in the provider
        # (pulumi_gcp/cloudscheduler/job.py, import: projects/{{project}}/locations/
        # {{region}}/jobs/{{name}}) and jobs.get's `name` (cloudscheduler v1 discovery).
        job_names=[
            pulumi.Output.concat(
                "projects/", job.project, "/locations/", job.region, "/jobs/", job.name
            )
            for job in snapshot.jobs
        ],
        jobs=[
            AlertedJob(store_id=store_id, job_id=job_id, region=snapshot.region)
            for store_id, job_id in snapshot.job_ids.items()
        ],
    )


def _snapshot_tables(store_ids: list[str], table: str) -> list[str]:
    """Each store's snapshot table, in the stores' order."""
    tables = naming.snapshot_tables(store_ids, table)
    return [tables[store_id] for store_id in store_ids]


def operations_alerts(
    name: str,
    inputs: PathInputs,
    apis: EnabledApis,
    storage: DicomStorage,
    snapshot: SnapshotSide,
    *,
    parent: pulumi.Resource,
) -> pulumi.Output[list[str]]:
    """The error alerts' display names; empty without alerts."""
    if not inputs.alerting:
        return pulumi.Output.from_input([])
    alerts = OperationsAlerts(
        f"{name}-alerts",
        OperationsAlertsArgs(
            project=inputs.source_project,
            stores=[
                AlertedStore(
                    store_id=store_id,
                    dataset_id=inputs.dataset_id_text,
                    location=inputs.location_text,
                    store_name=store_name,
                    streams=bool(store.stream_tables),
                )
                for store_id, store, store_name in zip(
                    inputs.store_ids, inputs.stores, storage.store_names, strict=True
                )
            ],
            emails=inputs.alert_emails,
            channels=inputs.alert_channels,
            snapshot_jobs=snapshot.jobs,
            depends_on=apis.of("logging.", "monitoring."),
        ),
        opts=_child(parent),
    )
    return alerts.policy_names
