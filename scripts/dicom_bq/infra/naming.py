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
