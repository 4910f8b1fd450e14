"""The grants each example stack must make, written out by hand: an oracle independent of
`dicom_bq.infra.grants.grant_specs` (nothing here calls into the package to compute them).

Derived from the seed (shared/DESIGN.md, "The resources and their order": step 2 names the agent,
step 4 the grants, additive only; Google's how-to, shared/reference/dicom-export-bigquery.fr.txt:
the export writes as the source project's Healthcare service agent, which needs
`roles/bigquery.dataEditor` and `roles/bigquery.jobUser` on the BigQuery side, also across
projects, and `roles/storage.objectViewer` on the filter files' bucket) and from the README's
security model and settings table (narrow scopes: dataEditor on the dataset, jobUser on the
BigQuery project, bucket, topic and key roles on those resources only; `notificationTopic` gives
the agent `roles/pubsub.publisher` on it; `healthcareKmsKey` gives the agent encrypter/decrypter
on it; `bigqueryKmsKey` gives BigQuery's encryption account encrypter/decrypter on it).

The members, as Google names them:
- the Healthcare service agent of the project holding the store:
  service-PROJECT_NUMBER@gcp-sa-healthcare.iam.gserviceaccount.com (DESIGN step 2; the number
  is `sourceProjectNumber`, never the BigQuery project's);
- BigQuery's encryption account of the BigQuery project:
  bq-PROJECT_NUMBER@bigquery-encryption.iam.gserviceaccount.com
  (https://cloud.google.com/bigquery/docs/customer-managed-encryption; the number is
  `destinationProjectNumber`).
Scopes are full resource names (https://cloud.google.com/iam/docs/full-resource-names).

Each list is held against the plan's `grants` output and against the IAM member resources the
plan creates (their type and inputs), exactly: a grant missing, extra, widened or given to the
wrong member fails, whatever grant_specs says.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest

from dicom_bq.stack.config import read_stack_config
from dicom_bq.stack.plan import Plan, plan_stack

ROOT = Path(__file__).resolve().parents[1]

DEV_AGENT = "serviceAccount:service-123456789012@gcp-sa-healthcare.iam.gserviceaccount.com"
PROD_AGENT = "serviceAccount:service-987654321098@gcp-sa-healthcare.iam.gserviceaccount.com"
# Pulumi.prod.yaml's destinationProjectNumber: the analytics project's BigQuery encrypts there.
PROD_BIGQUERY_ENCRYPTION = (
    "serviceAccount:bq-555566667777@bigquery-encryption.iam.gserviceaccount.com"
)
PROD_HEALTHCARE_KEY = (
    "projects/clinical-kms-prod/locations/europe-west4/keyRings/imaging/cryptoKeys/healthcare"
)
PROD_BIGQUERY_KEY = (
    "projects/clinical-kms-prod/locations/europe-west4/keyRings/imaging/cryptoKeys/bigquery"
)
PROD_TOPIC = "projects/clinical-imaging-prod/topics/dicom-instances"

# (role, member, scope) each stack must grant, and nothing else.
EXPECTED_GRANTS: dict[str, list[tuple[str, str, str]]] = {
    # Pulumi.dev.yaml: one project (dicom-bq-dev, number 123456789012), BigQuery dataset
    # dicom_metadata_dev in it, a filter bucket; no topic, no CMEK, dataEditorScope left at
    # `dataset`.
    "dev": [
        (
            "roles/bigquery.dataEditor",
            DEV_AGENT,
            "//bigquery.googleapis.com/projects/dicom-bq-dev/datasets/dicom_metadata_dev",
        ),
        (
            "roles/bigquery.jobUser",
            DEV_AGENT,
            "//cloudresourcemanager.googleapis.com/projects/dicom-bq-dev",
        ),
        (
            "roles/storage.objectViewer",
            DEV_AGENT,
            "//storage.googleapis.com/projects/_/buckets/dicom-bq-dev-filters",
        ),
    ],
    # Pulumi.prod.yaml: the store in clinical-imaging-prod (987654321098), BigQuery in
    # imaging-analytics-prod (555566667777): the source project's agent is granted in the
    # analytics project. A filter bucket, a notification topic, CMEK on both datasets. The two
    # stream tables are in the stack's BigQuery dataset: dataEditor on it covers them.
    "prod": [
        (
            "roles/bigquery.dataEditor",
            PROD_AGENT,
            "//bigquery.googleapis.com/projects/imaging-analytics-prod/datasets/dicom_metadata",
        ),
        (
            "roles/bigquery.jobUser",
            PROD_AGENT,
            "//cloudresourcemanager.googleapis.com/projects/imaging-analytics-prod",
        ),
        (
            "roles/storage.objectViewer",
            PROD_AGENT,
            "//storage.googleapis.com/projects/_/buckets/clinical-imaging-prod-export-filters",
        ),
        ("roles/pubsub.publisher", PROD_AGENT, f"//pubsub.googleapis.com/{PROD_TOPIC}"),
        (
            "roles/cloudkms.cryptoKeyEncrypterDecrypter",
            PROD_AGENT,
            f"//cloudkms.googleapis.com/{PROD_HEALTHCARE_KEY}",
        ),
        (
            "roles/cloudkms.cryptoKeyEncrypterDecrypter",
            PROD_BIGQUERY_ENCRYPTION,
            f"//cloudkms.googleapis.com/{PROD_BIGQUERY_KEY}",
        ),
    ],
}

# The additive IAM member resources that make those grants (pulumi-gcp's types; DESIGN step 4:
# IAMMember and DatasetIamMember, never IAMPolicy or IAMBinding), with their inputs.
DATASET_MEMBER = "gcp:bigquery/datasetIamMember:DatasetIamMember"
PROJECT_MEMBER = "gcp:projects/iAMMember:IAMMember"
BUCKET_MEMBER = "gcp:storage/bucketIAMMember:BucketIAMMember"
TOPIC_MEMBER = "gcp:pubsub/topicIAMMember:TopicIAMMember"
KEY_MEMBER = "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember"

EXPECTED_MEMBERS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "dev": [
        (
            DATASET_MEMBER,
            {
                "project": "dicom-bq-dev",
                "datasetId": "dicom_metadata_dev",
                "role": "roles/bigquery.dataEditor",
                "member": DEV_AGENT,
            },
        ),
        (
            PROJECT_MEMBER,
            {"project": "dicom-bq-dev", "role": "roles/bigquery.jobUser", "member": DEV_AGENT},
        ),
        (
            BUCKET_MEMBER,
            {
                "bucket": "dicom-bq-dev-filters",
                "role": "roles/storage.objectViewer",
                "member": DEV_AGENT,
            },
        ),
    ],
    "prod": [
        (
            DATASET_MEMBER,
            {
                "project": "imaging-analytics-prod",
                "datasetId": "dicom_metadata",
                "role": "roles/bigquery.dataEditor",
                "member": PROD_AGENT,
            },
        ),
        (
            PROJECT_MEMBER,
            {
                "project": "imaging-analytics-prod",
                "role": "roles/bigquery.jobUser",
                "member": PROD_AGENT,
            },
        ),
        (
            BUCKET_MEMBER,
            {
                "bucket": "clinical-imaging-prod-export-filters",
                "role": "roles/storage.objectViewer",
                "member": PROD_AGENT,
            },
        ),
        (
            TOPIC_MEMBER,
            {
                "project": "clinical-imaging-prod",
                "topic": PROD_TOPIC,
                "role": "roles/pubsub.publisher",
                "member": PROD_AGENT,
            },
        ),
        (
            KEY_MEMBER,
            {
                "cryptoKeyId": PROD_HEALTHCARE_KEY,
                "role": "roles/cloudkms.cryptoKeyEncrypterDecrypter",
                "member": PROD_AGENT,
            },
        ),
        (
            KEY_MEMBER,
            {
                "cryptoKeyId": PROD_BIGQUERY_KEY,
                "role": "roles/cloudkms.cryptoKeyEncrypterDecrypter",
                "member": PROD_BIGQUERY_ENCRYPTION,
            },
        ),
    ],
}

# Any IAM resource that grants: members, and the authoritative bindings and policies that must
# never appear (they would show here and break the exact match).
_GRANTING = re.compile(r"(?i)iam(member|binding|policy)$")


@functools.cache
def _plan(stack: str) -> Plan:
    return plan_stack(read_stack_config(ROOT, stack, use_cli=False))


def _sorted(items: list[Any]) -> list[Any]:
    return sorted(items, key=repr)


@pytest.mark.parametrize("stack", sorted(EXPECTED_GRANTS))
def test_the_grants_output_is_the_hand_written_list(stack: str) -> None:
    made = [(g["role"], g["member"], g["scope"]) for g in _plan(stack).grants]
    assert _sorted(made) == _sorted(EXPECTED_GRANTS[stack])


@pytest.mark.parametrize("stack", sorted(EXPECTED_MEMBERS))
def test_the_iam_resources_are_the_hand_written_members(stack: str) -> None:
    made = [
        (resource.type, resource.inputs)
        for resource in _plan(stack).custom_resources()
        if _GRANTING.search(resource.type.rsplit(":", 1)[-1])
    ]
    assert _sorted(made) == _sorted(EXPECTED_MEMBERS[stack])


def test_the_two_lists_describe_the_same_grants() -> None:
    """The lists above agree with each other, so neither can drift alone: each member resource
    is one (role, member) pair of the stack's grants."""
    for stack, grants in EXPECTED_GRANTS.items():
        pairs = sorted((inputs["role"], inputs["member"]) for _, inputs in EXPECTED_MEMBERS[stack])
        assert pairs == sorted((role, member) for role, member, _ in grants)
