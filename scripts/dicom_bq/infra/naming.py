"""Names and addresses derived from settings: pure functions shared by the program and the CLI."""

from __future__ import annotations

DEFAULT_UNIVERSE = "googleapis.com"
VERIFICATION_TABLE = "dicom_bq_verification"

# Service-account domains per universe. Sovereign universes put Google-operated agents under
# "<prefix>-system"; an unlisted universe must name its agent domain explicitly in the settings.
_AGENT_IAM_DOMAINS = {
    "googleapis.com": "iam.gserviceaccount.com",
    "s3nsapis.fr": "s3ns-system.iam.gserviceaccount.com",
    "apis-berlin-build0.goog": "eu0-system.iam.gserviceaccount.com",
}


def known_universe(universe_domain: str) -> bool:
    return universe_domain in _AGENT_IAM_DOMAINS


def agent_email(
    source_project_number: str,
    universe_domain: str = DEFAULT_UNIVERSE,
    agent_iam_domain: str | None = None,
) -> str:
    """The Cloud Healthcare service agent of the project that holds the DICOM store.

    Always the SOURCE project's number: the agent acts for the store, wherever BigQuery is.
    """
    domain = agent_iam_domain or _AGENT_IAM_DOMAINS[universe_domain]
    return f"service-{source_project_number}@gcp-sa-healthcare.{domain}"


def agent_member(
    source_project_number: str,
    universe_domain: str = DEFAULT_UNIVERSE,
    agent_iam_domain: str | None = None,
) -> str:
    return "serviceAccount:" + agent_email(source_project_number, universe_domain, agent_iam_domain)


def bigquery_encryption_member(bigquery_project_number: str) -> str:
    """BigQuery's encryption account, which must be able to use a dataset's default CMEK key."""
    return (
        f"serviceAccount:bq-{bigquery_project_number}@bigquery-encryption.iam.gserviceaccount.com"
    )


def healthcare_dataset_name(project: str, location: str, dataset_id: str) -> str:
    return f"projects/{project}/locations/{location}/datasets/{dataset_id}"


def dicom_store_name(project: str, location: str, dataset_id: str, store_id: str) -> str:
    return f"{healthcare_dataset_name(project, location, dataset_id)}/dicomStores/{store_id}"


def healthcare_base_url(universe_domain: str = DEFAULT_UNIVERSE, api_version: str = "v1") -> str:
    return f"https://healthcare.{universe_domain}/{api_version}"


def dicomweb_url(store_name: str, universe_domain: str = DEFAULT_UNIVERSE) -> str:
    return f"{healthcare_base_url(universe_domain)}/{store_name}/dicomWeb"


def table_uri(project: str, dataset_id: str, table_id: str) -> str:
    return f"bq://{project}.{dataset_id}.{table_id}"


def verification_table_uri(project: str, dataset_id: str) -> str:
    return table_uri(project, dataset_id, VERIFICATION_TABLE)


def project_scope(project: str) -> str:
    return f"//cloudresourcemanager.googleapis.com/projects/{project}"


def bigquery_dataset_scope(project: str, dataset_id: str) -> str:
    return f"//bigquery.googleapis.com/projects/{project}/datasets/{dataset_id}"


def bucket_scope(bucket: str) -> str:
    return f"//storage.googleapis.com/projects/_/buckets/{bucket}"


def topic_scope(topic: str) -> str:
    return f"//pubsub.googleapis.com/{topic}"


def crypto_key_scope(key: str) -> str:
    return f"//cloudkms.googleapis.com/{key}"


# The nightly snapshot's own service account and custom role. Both live in the source project and
# are named after the Healthcare dataset (hashed: account IDs are 6-30 of [a-z0-9-], role IDs
# [a-zA-Z0-9_.]), so two stacks in one project get their own. Policy rules recognise the account
# by its prefix.
SNAPSHOT_ACCOUNT_PREFIX = "dicom-bq-snapshot-"
SNAPSHOT_ROLE_PREFIX = "dicomBqSnapshotExport"
DEFAULT_SNAPSHOT_TABLE = "dicom_snapshot"


def _short_hash(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def snapshot_account_id(healthcare_dataset: str) -> str:
    """`dicom-bq-snapshot-` + 8 hex digits of the Healthcare dataset's full name (26 chars)."""
    return SNAPSHOT_ACCOUNT_PREFIX + _short_hash(healthcare_dataset)


def snapshot_role_id(healthcare_dataset: str) -> str:
    return f"{SNAPSHOT_ROLE_PREFIX}_{_short_hash(healthcare_dataset)}"


def custom_role_name(project: str, role_id: str) -> str:
    """A project custom role as IAM bindings name it (projects/P/roles/ID)."""
    return f"projects/{project}/roles/{role_id}"


def service_account_email(account_id: str, project: str) -> str:
    """A user-managed service account's address in the googleapis.com universe.

    A domain-scoped project `example.com:proj` puts its accounts under `proj.example.com`
    (https://cloud.google.com/iam/docs/service-account-overview, "user-managed service accounts").
    """
    domain, colon, name = project.partition(":")
    project_part = f"{name}.{domain}" if colon else project
    return f"{account_id}@{project_part}.iam.gserviceaccount.com"


def healthcare_export_url(store_name: str, universe_domain: str = DEFAULT_UNIVERSE) -> str:
    """dicomStores.export: POST v1/{+name}:export (healthcare v1 discovery document)."""
    return f"{healthcare_base_url(universe_domain)}/{store_name}:export"


def snapshot_tables(store_ids: list[str], table: str) -> dict[str, str]:
    """Store ID -> its snapshot table. One store: `table`; several: `table_STORE` each, since
    every store's nightly WRITE_TRUNCATE would otherwise replace the others' rows ('.', valid in
    a store ID, is not in a table name: it becomes '_')."""
    if len(store_ids) == 1:
        return {store_ids[0]: table}
    return {store: f"{table}_{store.replace('.', '_')}" for store in store_ids}
