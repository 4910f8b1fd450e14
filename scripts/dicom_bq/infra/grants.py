"""The Healthcare service agent's grants, as data.

One list, four users: the Pulumi program renders it as additive IAM members, the CLI prints it,
the review and the policy checks compare against it. Nothing here talks to Google.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import pulumi

from dicom_bq.infra import naming

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
Principal = Literal["agent", "bigquery_encryption"]
ScopeKind = Literal["bigquery_dataset", "project", "bucket", "topic", "crypto_key"]


def _scope_uri(kind: ScopeKind, project: str, resource: str) -> str:
    if kind == "bigquery_dataset":
        return naming.bigquery_dataset_scope(project, resource)
    if kind == "bucket":
        return naming.bucket_scope(resource)
    if kind == "topic":
        return naming.topic_scope(resource)
    if kind == "crypto_key":
        return naming.crypto_key_scope(resource)
    return naming.project_scope(project)


@dataclass(frozen=True)
class Scope:
    """Where a role is granted. Values may be another resource's Outputs (a program passing
    its own project), so the full resource name IAM reviewers know is an Output too."""

    kind: ScopeKind
    project: pulumi.Input[str]
    resource: pulumi.Input[str]  # dataset ID, bucket, topic or key name; project for kind=project

    @property
    def uri(self) -> pulumi.Output[str]:
        return pulumi.Output.all(self.project, self.resource).apply(
            lambda values: _scope_uri(self.kind, str(values[0]), str(values[1]))
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

    def for_member(self, member: pulumi.Input[str]) -> pulumi.Output[dict[str, str]]:
        return pulumi.Output.all(member, self.scope.uri).apply(
            lambda values: Grant(
                role=self.role, member=str(values[0]), scope=str(values[1]), reason=self.reason
            ).as_dict()
        )


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
    healthcare_kms_key: pulumi.Input[str] | None = None
    bigquery_kms_key: pulumi.Input[str] | None = None


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
    return specs
