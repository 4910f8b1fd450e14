"""Names and addresses derived from settings: pure functions shared by the program and the CLI."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

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


def bigquery_encryption_member(
    bigquery_project_number: str, universe_domain: str = DEFAULT_UNIVERSE
) -> str | None:
    """BigQuery's encryption account, which must be able to use a dataset's default CMEK key;
    None where its address is not known offline.

    bq-NUMBER@bigquery-encryption.iam.gserviceaccount.com is the form Google documents for
    googleapis.com (https://cloud.google.com/bigquery/docs/customer-managed-encryption, "Grant
    encryption and decryption permission"); no public source gives it for another universe, and
    the deployed grant takes the address from projects.getServiceAccount anyway
    (components/export_path.py), so elsewhere it is left to that lookup.
    """
    if universe_domain != DEFAULT_UNIVERSE:
        return None
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


def _store_part(store_id: str) -> str:
    """A store ID inside a job name: Cloud Scheduler job IDs take letters, digits, '-' and '_'
    (cloudscheduler v1 discovery, Job.name); '.', valid in a store ID, becomes '_'."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", store_id)


def snapshot_tables(store_ids: list[str], table: str) -> dict[str, str]:
    """Store ID -> its snapshot table. One store: `table`; several: `table_STORE` each, since
    every store's nightly WRITE_TRUNCATE would otherwise replace the others' rows ('.', valid in
    a store ID, is not in a table name: it becomes '_'). Two IDs that differ only there would get
    one table: shared_snapshot_names finds them."""
    if len(store_ids) == 1:
        return {store_ids[0]: table}
    return {store: f"{table}_{store.replace('.', '_')}" for store in store_ids}


def snapshot_job_name(account_id: str, store_id: str) -> str:
    """The store's Cloud Scheduler job: the snapshot account's ID, then the store's."""
    return f"{account_id}-{_store_part(store_id)}"


@dataclass(frozen=True)
class SharedNames:
    """Two stores (indexes in the list) that would get the same snapshot table or job."""

    first: int
    second: int
    # What they would share, as a person reads it: "the snapshot table T", "the job name J".
    shared: tuple[str, ...]


def shared_snapshot_names(
    store_ids: Sequence[str], *, table: str, account_id: str
) -> list[SharedNames]:
    """Pairs of stores whose snapshot table or Cloud Scheduler job would be one: one store's
    nightly WRITE_TRUNCATE would replace the other's snapshot, or the second job's creation
    fails with 409. Tables are compared case-insensitively: a dataset may be created
    case-insensitive (isCaseInsensitive, https://cloud.google.com/bigquery/docs/reference/rest/
    v2/datasets), and the component may be given one it does not create."""
    tables = snapshot_tables(list(store_ids), table) if len(set(store_ids)) > 1 else {}
    found = []
    for second, later in enumerate(store_ids):
        for first, earlier in enumerate(store_ids[:second]):
            shared = []
            if earlier != later and tables[earlier].casefold() == tables[later].casefold():
                shared.append(f"the snapshot table {tables[later]}")
            if snapshot_job_name(account_id, earlier) == snapshot_job_name(account_id, later):
                shared.append(f"the job name {snapshot_job_name(account_id, later)}")
            if shared:
                found.append(SharedNames(first, second, tuple(shared)))
                break
    return found
