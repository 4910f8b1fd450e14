"""The Healthcare service agent's grants, as data.

One list, four users: the Pulumi program renders it as additive IAM members, the CLI prints it,
the review and the policy checks compare against it. Nothing here talks to Google.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

from dicom_bq.infra import naming

if TYPE_CHECKING:
    # Only for annotations: the policy pack imports this module without pydantic installed.
    from dicom_bq.infra.settings import StackSettings

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


@dataclass(frozen=True)
class Scope:
    """Where a role is granted, with the full resource name IAM reviewers know."""

    kind: ScopeKind
    project: str
    resource: str  # dataset ID, bucket name, topic or key name; the project for kind=project

    @property
    def uri(self) -> str:
        if self.kind == "bigquery_dataset":
            return naming.bigquery_dataset_scope(self.project, self.resource)
        if self.kind == "bucket":
            return naming.bucket_scope(self.resource)
        if self.kind == "topic":
            return naming.topic_scope(self.resource)
        if self.kind == "crypto_key":
            return naming.crypto_key_scope(self.resource)
        return naming.project_scope(self.project)


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

    def for_member(self, member: str) -> Grant:
        return Grant(role=self.role, member=member, scope=self.scope.uri, reason=self.reason)


@dataclass(frozen=True)
class Grant:
    role: str
    member: str
    scope: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def grant_specs(settings: StackSettings) -> list[GrantSpec]:
    """Every role the Cloud Healthcare service agent needs for this stack, and why."""
    bq_project = settings.bigquery_project
    where = "in another project" if settings.cross_project else "in the same project"
    if settings.data_editor_scope == "dataset":
        editor_scope = Scope("bigquery_dataset", bq_project, settings.bigquery_dataset_id)
        editor_key = "bigquery-data-editor-dataset"
    else:
        editor_scope = Scope("project", bq_project, bq_project)
        editor_key = "bigquery-data-editor-project"
    specs = [
        GrantSpec(
            editor_key,
            "roles/bigquery.dataEditor",
            editor_scope,
            f"The export and the streams create and write tables in the BigQuery dataset "
            f"{where} as the source project's Healthcare service agent.",
        ),
        GrantSpec(
            "bigquery-job-user",
            "roles/bigquery.jobUser",
            Scope("project", bq_project, bq_project),
            "The export runs BigQuery load jobs, which are billed to and run in the BigQuery "
            "project; jobs can only be granted on a project.",
        ),
    ]
    if settings.filter_bucket:
        specs.append(
            GrantSpec(
                "filter-bucket-object-viewer",
                "roles/storage.objectViewer",
                Scope("bucket", settings.source_project, settings.filter_bucket),
                "A filtered export reads the filter file (study/series/instance paths) from "
                "this bucket.",
            )
        )
    if settings.notification_topic:
        specs.append(
            GrantSpec(
                "notification-topic-publisher",
                "roles/pubsub.publisher",
                Scope(
                    "topic",
                    settings.notification_topic.split("/")[1],
                    settings.notification_topic,
                ),
                "The DICOM store publishes a message to this topic for each new instance.",
            )
        )
    if settings.healthcare_kms_key:
        specs.append(
            GrantSpec(
                "healthcare-cmek-encrypter",
                "roles/cloudkms.cryptoKeyEncrypterDecrypter",
                Scope(
                    "crypto_key",
                    settings.healthcare_kms_key.split("/")[1],
                    settings.healthcare_kms_key,
                ),
                "The Healthcare dataset is encrypted with this customer-managed key; the agent "
                "must be able to use it before the dataset is created.",
            )
        )
    if settings.bigquery_kms_key:
        specs.append(
            GrantSpec(
                "bigquery-cmek-encrypter",
                "roles/cloudkms.cryptoKeyEncrypterDecrypter",
                Scope(
                    "crypto_key",
                    settings.bigquery_kms_key.split("/")[1],
                    settings.bigquery_kms_key,
                ),
                "BigQuery's own encryption account encrypts the tables the export and the streams "
                "create in the CMEK dataset; without this grant their creation fails.",
                principal="bigquery_encryption",
            )
        )
    return specs


def stack_grants(settings: StackSettings, members: dict[Principal, str]) -> list[Grant]:
    return [spec.for_member(members[spec.principal]) for spec in grant_specs(settings)]
