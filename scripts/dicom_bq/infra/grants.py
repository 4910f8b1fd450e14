"""The Healthcare service agent's grants, as data.

One list, four users: the Pulumi program renders it as additive IAM members, the CLI prints it,
the review and the policy checks compare against it. Nothing here talks to Google.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Literal

import pulumi

from dicom_bq.vocabulary.scopes import SCOPE_KINDS, ScopeKindName

# Every role grant_specs can give the agent: the allow-list when a checker lacks the exact list.
AGENT_ROLES = frozenset(
    {
        "roles/bigquery.dataEditor",
        "roles/bigquery.jobUser",
        "roles/storage.objectViewer",
        "roles/pubsub.publisher",
        "roles/cloudkms.cryptoKeyEncrypterDecrypter",
    }
)

# Who a grant is for: the Cloud Healthcare service agent, or BigQuery's encryption account (which
# must use the BigQuery dataset's CMEK key when the export and the streams create tables).
# The nightly snapshot's own service account ("snapshot") calls dicomStores.export and nothing
# else; Cloud Scheduler's service agent ("scheduler") mints that account's token for each run.
Principal = Literal["agent", "bigquery_encryption", "snapshot", "scheduler"]
# What the Cloud Scheduler service agent needs to send a job's request with an OAuth token of
# the job's account: to "generate header tokens on behalf of your client service account"
# (https://cloud.google.com/scheduler/docs/http-target-auth). Token Creator holds
# iam.serviceAccounts.getAccessToken (https://cloud.google.com/iam/docs/service-account-permissions),
# and granted on the snapshot account it reaches that account alone. Not the project-level
# roles/cloudscheduler.serviceAgent, Google's automatic grant when the API is enabled: on the
# project it reaches every service account there (and more than tokens). Projects that enabled
# Cloud Scheduler before 2019-03-19, or removed that grant, lack it (same page); this one makes
# the job work either way, and adds to the automatic grant where it exists.
SCHEDULER_ROLE = "roles/iam.serviceAccountTokenCreator"
# The snapshot account's custom role. dicomStores.export is what the Cloud Scheduler job calls;
# it is checked on the store (https://cloud.google.com/healthcare-api/docs/access-control, "DICOM
# store roles"). Not healthcare.operations.get: the job starts the export and never polls it, and
# that permission is checked on the dataset, not the store (same page). The predefined roles
# holding export (roles/healthcare.dicomViewer, dicomEditor) also grant dicomWebRead, that is,
# the images themselves.
SNAPSHOT_PERMISSIONS = ("healthcare.dicomStores.export",)


@dataclass(frozen=True)
class Scope:
    """Where a role is granted. Values may be another resource's Outputs (a program passing
    its own project), so the full resource name IAM reviewers know is an Output too."""

    kind: ScopeKindName
    project: pulumi.Input[str]
    # The kind's bare ID (dataset ID, bucket, the project itself) or its relative resource
    # name (a topic's, key's or DICOM store's projects/...): vocabulary/scopes.py, ScopeKind.uri.
    resource: pulumi.Input[str]

    @property
    def uri(self) -> pulumi.Output[str]:
        return pulumi.Output.all(self.project, self.resource).apply(
            lambda values: SCOPE_KINDS[self.kind].uri(
                project=str(values[0]), resource=str(values[1])
            )
        )


@dataclass(frozen=True)
class GrantSpec:
    """A role a principal needs somewhere, before we know the principal's address."""

    key: str  # stable, unique within a stack: names the IAM resource
    role: str
    scope: Scope
    reason: str
    principal: Principal = "agent"
    # Keys this grant had before (its resource was named after them): aliases keep the live
    # IAM member instead of replacing it when a key is renamed.
    former_keys: tuple[str, ...] = ()
    # Kept in Google Cloud when its resource is deleted or replaced (`pulumi destroy`, a grant
    # the settings no longer need): the grant is on a scope the stack does not create, where
    # another stack of this project or a person may hold the same binding (kept_on_delete).
    kept: bool = False

    def for_member(self, member: pulumi.Input[str]) -> pulumi.Output[dict[str, str]]:
        return pulumi.Output.all(member, self.scope.uri).apply(
            lambda values: Grant(
                role=self.role, member=str(values[0]), scope=str(values[1]), reason=self.reason
            ).as_dict()
        )


# Scope kinds the stack never creates: a grant there may be a binding someone else also holds.
# An additive IAM member resource adds its member to the role's binding when created and removes
# it when deleted, whoever else added the same member (pulumi-gcp's IAM members read, modify and
# write the scope's policy: https://www.pulumi.com/registry/packages/gcp/api-docs/projects/iammember/,
# "google_project_iam_member"; DESIGN.md, pulumi-gcp #442 and #2463), so deleting one stack's
# member would take the binding from every other holder. Those grants are kept on delete
# (Pulumi's retainOnDelete: the provider's Delete is not called when the resource is deleted or
# replaced, https://www.pulumi.com/docs/iac/concepts/options/retainondelete/) and listed, with
# the commands that remove them, by `dicom-bq shared-grants` and `dicom-bq review`.
SHARED_SCOPE_KINDS: frozenset[ScopeKindName] = frozenset(
    {"project", "bucket", "topic", "crypto_key"}
)


def kept_on_delete(kind: ScopeKindName, creates_bigquery_dataset: bool) -> bool:
    """Whether a grant on a scope of this kind is kept when its resource is deleted: on every
    scope the stack does not create (a BigQuery dataset only when it exists already); never on
    what the stack creates (its dataset, DICOM stores, snapshot account), whose bindings go with
    it."""
    if kind == "bigquery_dataset":
        return not creates_bigquery_dataset
    return kind in SHARED_SCOPE_KINDS


@dataclass(frozen=True)
class Grant:
    role: str
    member: str
    scope: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class GrantRequest:
    """What decides the grants: where things are, and which optional parts the path has.

    Which grants exist must be known when the program runs (each is a resource), so the optional
    parts are present or None; their values may be Outputs.
    """

    source_project: pulumi.Input[str]
    bigquery_project: pulumi.Input[str]
    bigquery_dataset_id: pulumi.Input[str]
    data_editor_scope: Literal["dataset", "project"] = "dataset"
    filter_bucket: pulumi.Input[str] | None = None
    notification_topic: pulumi.Input[str] | None = None
    # The topics of a dicomStores list, one publisher grant each (notification_topic: the
    # single-store form's, under the key it always had).
    notification_topics: tuple[TopicGrant, ...] = ()
    healthcare_kms_key: pulumi.Input[str] | None = None
    bigquery_kms_key: pulumi.Input[str] | None = None
    # (store ID, full store name) of each store the nightly snapshot exports; empty: none.
    snapshot_stores: tuple[tuple[str, pulumi.Input[str]], ...] = ()
    # projects/P/roles/ID of the snapshot's custom role (known before the role exists).
    snapshot_role: str | None = None
    # The snapshot account's email: Cloud Scheduler's agent may mint its tokens; None: no grant.
    snapshot_account: pulumi.Input[str] | None = None
    # False: the BigQuery dataset exists already (a grant there is on a scope the stack does not
    # create, so it is kept on delete).
    creates_bigquery_dataset: bool = True


@dataclass(frozen=True)
class TopicGrant:
    """A Pub/Sub topic stores of a dicomStores list notify, and the key of its grant."""

    key: str
    topic: pulumi.Input[str]
    store_ids: tuple[str, ...]
    former_keys: tuple[str, ...] = ()


def _project_of(resource_name: pulumi.Input[str]) -> pulumi.Output[str]:
    """The project in projects/P/..., a topic's or a key's."""
    return pulumi.Output.from_input(resource_name).apply(lambda name: str(name).split("/")[1])


def grant_specs(request: GrantRequest) -> list[GrantSpec]:
    """Every role the Cloud Healthcare service agent (and BigQuery's encryption account) needs
    for this path, and why."""
    bq_project = request.bigquery_project
    if request.data_editor_scope == "dataset":
        editor_scope = Scope("bigquery_dataset", bq_project, request.bigquery_dataset_id)
        editor_key = "bigquery-data-editor-dataset"
    else:
        editor_scope = Scope("project", bq_project, bq_project)
        editor_key = "bigquery-data-editor-project"
    specs = [
        GrantSpec(
            editor_key,
            "roles/bigquery.dataEditor",
            editor_scope,
            "The export and the streams create and write tables in the BigQuery dataset as the "
            "source project's Healthcare service agent, in the same project or another one.",
        ),
        GrantSpec(
            "bigquery-job-user",
            "roles/bigquery.jobUser",
            Scope("project", bq_project, bq_project),
            "The export runs BigQuery load jobs, which are billed to and run in the BigQuery "
            "project; jobs can only be granted on a project.",
        ),
    ]
    if request.filter_bucket is not None:
        specs.append(
            GrantSpec(
                "filter-bucket-object-viewer",
                "roles/storage.objectViewer",
                Scope("bucket", request.source_project, request.filter_bucket),
                "A filtered export reads the filter file (study/series/instance paths) from "
                "this bucket.",
            )
        )
    if request.notification_topic is not None:
        topic = request.notification_topic
        specs.append(
            GrantSpec(
                "notification-topic-publisher",
                "roles/pubsub.publisher",
                Scope("topic", _project_of(topic), topic),
                "The DICOM store publishes a message to this topic for each new instance.",
            )
        )
    for topic_grant in request.notification_topics:
        topic = topic_grant.topic
        specs.append(
            GrantSpec(
                topic_grant.key,
                "roles/pubsub.publisher",
                Scope("topic", _project_of(topic), topic),
                f"DICOM store{'s' if len(topic_grant.store_ids) > 1 else ''} "
                f"{', '.join(topic_grant.store_ids)} "
                f"{'publish' if len(topic_grant.store_ids) > 1 else 'publishes'} a message to "
                "this topic for each new instance.",
                former_keys=topic_grant.former_keys,
            )
        )
    if request.healthcare_kms_key is not None:
        key = request.healthcare_kms_key
        specs.append(
            GrantSpec(
                "healthcare-cmek-encrypter",
                "roles/cloudkms.cryptoKeyEncrypterDecrypter",
                Scope("crypto_key", _project_of(key), key),
                "The Healthcare dataset is encrypted with this customer-managed key; the agent "
                "must be able to use it before the dataset is created.",
            )
        )
    if request.bigquery_kms_key is not None:
        key = request.bigquery_kms_key
        specs.append(
            GrantSpec(
                "bigquery-cmek-encrypter",
                "roles/cloudkms.cryptoKeyEncrypterDecrypter",
                Scope("crypto_key", _project_of(key), key),
                "BigQuery's own encryption account encrypts the tables the export and the streams "
                "create in the CMEK dataset; without this grant their creation fails.",
                principal="bigquery_encryption",
            )
        )
    specs += snapshot_grant_specs(request)
    return [
        dataclasses.replace(
            spec, kept=kept_on_delete(spec.scope.kind, request.creates_bigquery_dataset)
        )
        for spec in specs
    ]


def snapshot_grant_specs(request: GrantRequest) -> list[GrantSpec]:
    """The snapshot account's one role on each store it exports, and nowhere else; and Cloud
    Scheduler's service agent's Token Creator on that account alone."""
    if not request.snapshot_stores or request.snapshot_role is None:
        return []
    scheduler = (
        [
            GrantSpec(
                "scheduler-token-creator",
                SCHEDULER_ROLE,
                Scope("service_account", request.source_project, request.snapshot_account),
                "Cloud Scheduler's service agent mints the snapshot account's OAuth token for "
                "each nightly request (https://cloud.google.com/scheduler/docs/http-target-auth); "
                "granted on that account alone, not roles/cloudscheduler.serviceAgent on the "
                "project, which projects that enabled the API before 2019-03-19 lack.",
                principal="scheduler",
            )
        ]
        if request.snapshot_account is not None
        else []
    )
    stores = [
        GrantSpec(
            f"snapshot-export-{store_id}",
            request.snapshot_role,
            Scope("dicom_store", request.source_project, store),
            "The nightly Cloud Scheduler job calls dicomStores.export on this store as the "
            "snapshot account; the role holds only healthcare.dicomStores.export. The export "
            "itself writes to BigQuery as the Healthcare service agent.",
            principal="snapshot",
        )
        for store_id, store in request.snapshot_stores
    ]
    return stores + scheduler
