"""Each policy rule on a resource that passes and one that fails; the example stacks pass all."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dicom_bq.infra.policy_rules import (
    RULES,
    ExpectedGrant,
    ListedGrant,
    PolicyContext,
    Resource,
    canonical_member,
    evaluate,
    scope_of,
)
from dicom_bq.security.checks import check_plan, has_mandatory, plan_resources
from dicom_bq.stack.plan import known_project_numbers, record_program
from dicom_bq.vocabulary.settings import parse_settings, settings_from_config
from tests.conftest import base_settings, cached_plan
from tests.inventory import ROOT

AGENT = "serviceAccount:service-111122223333@gcp-sa-healthcare.iam.gserviceaccount.com"
IDENTITY = Resource(
    "gcp:projects/serviceIdentity:ServiceIdentity",
    "identity",
    {"project": "p-src", "service": "healthcare.googleapis.com"},
)
DATASET_SCOPE = "//bigquery.googleapis.com/projects/p-bq/datasets/ds"
EXPECTED = frozenset(
    {
        ExpectedGrant("roles/bigquery.dataEditor", DATASET_SCOPE),
        ExpectedGrant(
            "roles/bigquery.jobUser", "//cloudresourcemanager.googleapis.com/projects/p-bq"
        ),
    }
)


def member(type_: str, name: str, role: str, who: str = AGENT, **props: Any) -> Resource:
    return Resource(type_, name, {"role": role, "member": who, **props})


def bq_dataset(name: str = "bq", protect: bool = False, **props: Any) -> Resource:
    base = {
        "project": "p-bq",
        "datasetId": "ds",
        "location": "EU",
        "deleteContentsOnDestroy": False,
    }
    return Resource("gcp:bigquery/dataset:Dataset", name, {**base, **props}, protect)


# What plan_context / the pack's config say: the agent above is the source project p-src's.
SOURCE = PolicyContext(source_project="p-src", source_project_number="111122223333")
GOOD_EDITOR = member(
    "gcp:bigquery/datasetIamMember:DatasetIamMember",
    "editor",
    "roles/bigquery.dataEditor",
    project="p-bq",
    datasetId="ds",
)
GOOD_JOBS = member(
    "gcp:projects/iAMMember:IAMMember", "jobs", "roles/bigquery.jobUser", project="p-bq"
)

SNAPSHOT_MEMBER = "serviceAccount:dicom-bq-snapshot-0123abcd@p-src.iam.gserviceaccount.com"
SNAPSHOT_ROLE = "projects/p-src/roles/dicomBqSnapshotExport_0123abcd"
SNAPSHOT_ROLE_RESOURCE = Resource(
    "gcp:projects/iAMCustomRole:IAMCustomRole",
    "snapshot-role",
    {
        "project": "p-src",
        "roleId": "dicomBqSnapshotExport_0123abcd",
        "permissions": ["healthcare.dicomStores.export"],
    },
)
SNAPSHOT_GRANT = member(
    "gcp:healthcare/dicomStoreIamMember:DicomStoreIamMember",
    "snapshot-export",
    SNAPSHOT_ROLE,
    SNAPSHOT_MEMBER,
    dicomStoreId="p-src/eu/imaging/studies",
)
SCHEDULER_AGENT = (
    "serviceAccount:service-111122223333@gcp-sa-cloudscheduler.iam.gserviceaccount.com"
)
SNAPSHOT_ACCOUNT_ID = (
    "projects/p-src/serviceAccounts/dicom-bq-snapshot-0123abcd@p-src.iam.gserviceaccount.com"
)
SNAPSHOT_ACCOUNT_RESOURCE = Resource(
    "gcp:serviceaccount/account:Account",
    "snapshot-account",
    {"project": "p-src", "accountId": "dicom-bq-snapshot-0123abcd"},
)
# What grants.py gives Cloud Scheduler's agent: Token Creator on the snapshot account alone.
SCHEDULER_GRANT = member(
    "gcp:serviceaccount/iAMMember:IAMMember",
    "scheduler-token",
    "roles/iam.serviceAccountTokenCreator",
    SCHEDULER_AGENT,
    serviceAccountId=SNAPSHOT_ACCOUNT_ID,
)

# The grants list of the fixtures: the agent's two grants (DBQ019 compares every grant with it).
LISTED = PolicyContext(
    expected_grants=EXPECTED,
    listed_grants=frozenset(ListedGrant(g.role, AGENT, g.scope) for g in EXPECTED),
)


def dicom_store(name: str, *tables: str) -> Resource:
    """A DICOM store of the fixtures' Healthcare dataset, streaming into each table."""
    return Resource(
        "gcp:healthcare/dicomStore:DicomStore",
        name,
        {
            "name": name,
            "dataset": "projects/p-src/locations/eu/datasets/imaging",
            "streamConfigs": [{"bigqueryDestination": {"tableUri": t}} for t in tables],
        },
    )


# rule id -> (context, passing resources, failing resources, the failing resource's name)
CASES: dict[str, tuple[PolicyContext, list[Resource], list[Resource], str]] = {
    "DBQ001": (
        PolicyContext(),
        [GOOD_JOBS],
        [
            Resource(
                "gcp:projects/iAMBinding:IAMBinding",
                "binding",
                {"project": "p", "role": "roles/bigquery.jobUser", "members": [AGENT]},
            )
        ],
        "binding",
    ),
    "DBQ002": (
        PolicyContext(),
        [GOOD_JOBS],
        [
            member(
                "gcp:projects/iAMMember:IAMMember",
                "owner",
                "roles/owner",
                "user:a@example.com",
                project="p",
            )
        ],
        "owner",
    ),
    "DBQ003": (
        PolicyContext(),
        [bq_dataset(accesses=[{"role": "READER", "groupByEmail": "team@example.com"}])],
        [
            bq_dataset(
                "public", accesses=[{"role": "READER", "specialGroup": "allAuthenticatedUsers"}]
            )
        ],
        "public",
    ),
    "DBQ004": (
        PolicyContext(),
        [GOOD_EDITOR],
        [
            member(
                "gcp:projects/iAMMember:IAMMember",
                "token",
                "roles/iam.serviceAccountTokenCreator",
                project="p",
            )
        ],
        "token",
    ),
    "DBQ005": (
        PolicyContext(expected_grants=EXPECTED),
        [GOOD_EDITOR, GOOD_JOBS],
        [
            member(
                "gcp:storage/bucketIAMMember:BucketIAMMember",
                "reader",
                "roles/storage.objectViewer",
                bucket="b",
            )
        ],
        "reader",
    ),
    "DBQ006": (
        PolicyContext(expected_grants=EXPECTED),
        [GOOD_EDITOR],
        [
            member(
                "gcp:projects/iAMMember:IAMMember",
                "wide",
                "roles/bigquery.dataEditor",
                project="p-bq",
            )
        ],
        "wide",
    ),
    "DBQ007": (
        PolicyContext(),
        [bq_dataset(), GOOD_EDITOR],
        [bq_dataset(accesses=[{"role": "OWNER", "userByEmail": "a@example.com"}]), GOOD_EDITOR],
        "editor",
    ),
    "DBQ008": (
        PolicyContext(protected=True),
        [bq_dataset(protect=True)],
        [bq_dataset("unprotected")],
        "unprotected",
    ),
    "DBQ009": (
        PolicyContext(),
        [bq_dataset()],
        [bq_dataset("dropper", deleteContentsOnDestroy=True)],
        "dropper",
    ),
    "DBQ010": (
        PolicyContext(allowed_bigquery_locations=frozenset({"EU"})),
        [bq_dataset()],
        [bq_dataset("us", location="US")],
        "us",
    ),
    "DBQ011": (
        PolicyContext(require_cmek=True),
        [
            bq_dataset(
                defaultEncryptionConfiguration={
                    "kmsKeyName": "projects/k/locations/eu/keyRings/r/cryptoKeys/k"
                }
            )
        ],
        [bq_dataset("plain")],
        "plain",
    ),
    "DBQ012": (SOURCE, [GOOD_JOBS], [GOOD_JOBS], "jobs"),
    "DBQ013": (
        PolicyContext(),
        [
            Resource(
                "gcp:projects/service:Service",
                "api",
                {"service": "bigquery.googleapis.com", "disableOnDestroy": False},
            )
        ],
        [
            Resource(
                "gcp:projects/service:Service", "api-off", {"service": "bigquery.googleapis.com"}
            )
        ],
        "api-off",
    ),
    # The nightly snapshot's account: its export-only custom role on a store, nothing broader.
    "DBQ014": (
        PolicyContext(),
        [SNAPSHOT_ROLE_RESOURCE, SNAPSHOT_GRANT],
        [
            member(
                "gcp:healthcare/dicomStoreIamMember:DicomStoreIamMember",
                "snapshot-viewer",
                "roles/healthcare.dicomViewer",
                SNAPSHOT_MEMBER,
                dicomStoreId="p-src/eu/imaging/studies",
            )
        ],
        "snapshot-viewer",
    ),
    "DBQ015": (
        PolicyContext(),
        [SNAPSHOT_GRANT],
        [
            member(
                "gcp:projects/iAMMember:IAMMember",
                "snapshot-project",
                SNAPSHOT_ROLE,
                SNAPSHOT_MEMBER,
                project="p-src",
            )
        ],
        "snapshot-project",
    ),
    # Cloud Scheduler's agent: Token Creator on the snapshot account, nothing else, nowhere else.
    "DBQ016": (
        SOURCE,
        [SNAPSHOT_ACCOUNT_RESOURCE, SCHEDULER_GRANT],
        [
            member(
                "gcp:projects/iAMMember:IAMMember",
                "scheduler-project",
                "roles/cloudscheduler.serviceAgent",
                SCHEDULER_AGENT,
                project="p-src",
            )
        ],
        "scheduler-project",
    ),
    # Nobody else may act as the snapshot account through the stack.
    "DBQ017": (
        PolicyContext(),
        [SNAPSHOT_ACCOUNT_RESOURCE, SCHEDULER_GRANT, GOOD_JOBS],
        [
            SNAPSHOT_ACCOUNT_RESOURCE,
            member(
                "gcp:serviceaccount/iAMMember:IAMMember",
                "user-act-as",
                "roles/iam.serviceAccountUser",
                "user:dev@example.com",
                serviceAccountId=SNAPSHOT_ACCOUNT_ID,
            ),
        ],
        "user-act-as",
    ),
    # Deny by default (issue 17 item 6): only the program's types, grants and data paths.
    "DBQ018": (
        PolicyContext(),
        [GOOD_JOBS, bq_dataset(), SNAPSHOT_ACCOUNT_RESOURCE],
        [
            SNAPSHOT_ACCOUNT_RESOURCE,
            Resource(
                "gcp:serviceaccount/key:Key",
                "snapshot-key",
                {"serviceAccountId": SNAPSHOT_ACCOUNT_ID},
            ),
        ],
        "snapshot-key",
    ),
    "DBQ019": (
        LISTED,
        [GOOD_EDITOR, GOOD_JOBS],
        [
            GOOD_JOBS,
            member(
                "gcp:projects/iAMMember:IAMMember",
                "iam-admin",
                "roles/resourcemanager.projectIamAdmin",
                "user:dev@example.com",
                project="p-bq",
            ),
        ],
        "iam-admin",
    ),
    "DBQ020": (
        PolicyContext(),
        [bq_dataset(), dicom_store("store", "bq://p-bq.ds.stream")],
        [bq_dataset(), dicom_store("store", "bq://elsewhere.ds.stream")],
        "store",
    ),
}


# -- the red-team's bypasses (issue 9 item 4): each must now fail its rule ---------------------

MIXED_AGENT = "serviceAccount:Service-111122223333@GCP-SA-Healthcare.iam.gserviceaccount.com"
AGENT_EMAIL = AGENT.removeprefix("serviceAccount:")
OTHER_AGENT = "serviceAccount:service-999988887777@gcp-sa-healthcare.iam.gserviceaccount.com"
HEALTHCARE_DATASET = Resource(
    "gcp:healthcare/dataset:Dataset",
    "hc",
    {"project": "p-src", "location": "eu", "name": "imaging"},
)


def access(name: str, role: str, **who: Any) -> Resource:
    """A gcp.bigquery.DatasetAccess entry on the fixtures' dataset."""
    return Resource(
        "gcp:bigquery/datasetAccess:DatasetAccess",
        name,
        {"project": "p-bq", "datasetId": "ds", "role": role, **who},
    )


def storage(kind: str, name: str, **props: Any) -> Resource:
    """A Cloud Storage ACL/IAM resource, e.g. storage("bucketACL:BucketACL", ...)."""
    return Resource(f"gcp:storage/{kind}", name, {"bucket": "b", **props})


def iam_policy(type_: str, name: str, role: str, who: str, **props: Any) -> Resource:
    policy = {"bindings": [{"role": role, "members": [who]}]}
    return Resource(type_, name, {"policyData": json.dumps(policy), **props})


def identity(project: str, service: str = "healthcare.googleapis.com") -> Resource:
    return Resource(
        "gcp:projects/serviceIdentity:ServiceIdentity",
        f"identity-{project}",
        {"project": project, "service": service},
    )


ORG_MEMBER = "gcp:organizations/iAMMember:IAMMember"
FOLDER_MEMBER = "gcp:folder/iAMMember:IAMMember"

# name -> (rule, context, resources, the resource the rule must name). IDENTITY (the agent's own,
# in p-src) is added to every case except DBQ012's, which bring their own identities.
BYPASSES: dict[str, tuple[str, PolicyContext, list[Resource], str]] = {
    # gcp.bigquery.DatasetAccess: one access entry, as a resource of its own
    "dataset-access-special-group-public": (
        "DBQ003",
        PolicyContext(),
        [access("pub", "READER", specialGroup="allAuthenticatedUsers")],
        "pub",
    ),
    "dataset-access-iam-member-allusers": (
        "DBQ003",
        PolicyContext(),
        [access("pub", "READER", iamMember="allUsers")],
        "pub",
    ),
    "dataset-access-roles-owner": (
        "DBQ002",
        PolicyContext(),
        [access("own", "roles/owner", userByEmail="a@example.com")],
        "own",
    ),
    "dataset-access-legacy-owner": (
        "DBQ002",
        PolicyContext(),
        [access("own", "OWNER", groupByEmail="team@example.com")],
        "own",
    ),
    "dataset-access-agent-admin": (
        "DBQ004",
        PolicyContext(),
        [access("adm", "roles/bigquery.admin", userByEmail=AGENT_EMAIL.upper())],
        "adm",
    ),
    "dataset-access-beside-accesses": (
        "DBQ007",
        PolicyContext(),
        [
            bq_dataset(accesses=[{"role": "READER", "groupByEmail": "team@example.com"}]),
            access("extra", "READER", groupByEmail="other@example.com"),
        ],
        "extra",
    ),
    # Cloud Storage ACLs
    "bucket-acl-role-entities": (
        "DBQ003",
        PolicyContext(),
        [
            storage(
                "bucketACL:BucketACL",
                "acl",
                roleEntities=["OWNER:project-owners-1", "READER:allUsers"],
            )
        ],
        "acl",
    ),
    "bucket-acl-canned-public-read": (
        "DBQ003",
        PolicyContext(),
        [storage("bucketACL:BucketACL", "acl", predefinedAcl="publicRead")],
        "acl",
    ),
    "bucket-acl-default-object-acl-public": (
        "DBQ003",
        PolicyContext(),
        [storage("bucketACL:BucketACL", "acl", defaultAcl="publicRead")],
        "acl",
    ),
    "bucket-access-control-allusers": (
        "DBQ003",
        PolicyContext(),
        [
            storage(
                "bucketAccessControl:BucketAccessControl", "ac", entity="allUsers", role="READER"
            )
        ],
        "ac",
    ),
    "default-object-access-control-allusers": (
        "DBQ003",
        PolicyContext(),
        [
            storage(
                "defaultObjectAccessControl:DefaultObjectAccessControl",
                "ac",
                entity="allUsers",
                role="READER",
            )
        ],
        "ac",
    ),
    "object-access-control-all-authenticated": (
        "DBQ003",
        PolicyContext(),
        [
            storage(
                "objectAccessControl:ObjectAccessControl",
                "ac",
                object="filters/study.txt",
                entity="allAuthenticatedUsers",
                role="READER",
            )
        ],
        "ac",
    ),
    "default-object-acl-role-entities": (
        "DBQ003",
        PolicyContext(),
        [storage("defaultObjectACL:DefaultObjectACL", "acl", roleEntities=["READER:allUsers"])],
        "acl",
    ),
    "object-acl-role-entities": (
        "DBQ003",
        PolicyContext(),
        [
            storage(
                "objectACL:ObjectACL",
                "acl",
                object="o",
                roleEntities=["READER:allAuthenticatedUsers"],
            )
        ],
        "acl",
    ),
    "object-acl-canned-public-read": (
        "DBQ003",
        PolicyContext(),
        [storage("objectACL:ObjectACL", "acl", object="o", predefinedAcl="publicRead")],
        "acl",
    ),
    "bucket-acl-is-authoritative": (
        "DBQ001",
        PolicyContext(),
        [storage("bucketACL:BucketACL", "acl", roleEntities=["OWNER:project-owners-1"])],
        "acl",
    ),
    "agent-through-bucket-acl": (
        "DBQ005",
        PolicyContext(expected_grants=EXPECTED),
        [
            storage(
                "bucketAccessControl:BucketAccessControl",
                "ac",
                entity=f"user-{AGENT_EMAIL.title()}",
                role="READER",
            )
        ],
        "ac",
    ),
    # members spelt as Google still reads them
    "mixed-case-agent-admin": (
        "DBQ004",
        PolicyContext(),
        [
            member(
                "gcp:projects/iAMMember:IAMMember",
                "adm",
                "roles/bigquery.admin",
                MIXED_AGENT,
                project="p-bq",
            )
        ],
        "adm",
    ),
    "mixed-case-member-type": (
        "DBQ004",
        PolicyContext(),
        [
            member(
                "gcp:projects/iAMMember:IAMMember",
                "adm",
                "roles/bigquery.admin",
                "SERVICEACCOUNT:" + AGENT_EMAIL,
                project="p-bq",
            )
        ],
        "adm",
    ),
    "deleted-agent-admin": (
        "DBQ004",
        PolicyContext(),
        [
            member(
                "gcp:projects/iAMMember:IAMMember",
                "adm",
                "roles/bigquery.admin",
                f"deleted:{MIXED_AGENT}?uid=123456789012345678901",
                project="p-bq",
            )
        ],
        "adm",
    ),
    "mixed-case-agent-unlisted-role": (
        "DBQ005",
        PolicyContext(expected_grants=EXPECTED),
        [
            member(
                "gcp:storage/bucketIAMMember:BucketIAMMember",
                "rd",
                "roles/storage.objectViewer",
                MIXED_AGENT,
                bucket="b",
            )
        ],
        "rd",
    ),
    "mixed-case-agent-project-wide": (
        "DBQ006",
        PolicyContext(expected_grants=EXPECTED),
        [
            member(
                "gcp:projects/iAMMember:IAMMember",
                "wide",
                "roles/bigquery.dataEditor",
                MIXED_AGENT,
                project="p-bq",
            )
        ],
        "wide",
    ),
    "mixed-case-public-member": (
        "DBQ003",
        PolicyContext(),
        [
            member(
                "gcp:storage/bucketIAMMember:BucketIAMMember",
                "pub",
                "roles/storage.objectViewer",
                "AllUsers",
                bucket="b",
            )
        ],
        "pub",
    ),
    # a dataset's `accesses` list: authoritative, and its entries are grants
    "dataset-accesses-authoritative": (
        "DBQ001",
        PolicyContext(),
        [bq_dataset("listed", accesses=[{"role": "READER", "groupByEmail": "team@example.com"}])],
        "listed",
    ),
    "dataset-accesses-iam-member-public": (
        "DBQ003",
        PolicyContext(),
        [bq_dataset("listed", accesses=[{"role": "READER", "iamMember": "allUsers"}])],
        "listed",
    ),
    "dataset-accesses-legacy-owner": (
        "DBQ002",
        PolicyContext(),
        [bq_dataset("listed", accesses=[{"role": "OWNER", "userByEmail": "a@example.com"}])],
        "listed",
    ),
    "dataset-accesses-agent-admin": (
        "DBQ004",
        PolicyContext(),
        [
            bq_dataset(
                "listed", accesses=[{"role": "roles/bigquery.admin", "iamMember": MIXED_AGENT}]
            )
        ],
        "listed",
    ),
    # Without a grants list (a pack run by hand, with no config): dataEditor on the project is
    # still too wide for the agent, the dataset is the scope the export needs.
    "project-agent-data-editor-without-grants-list": (
        "DBQ006",
        PolicyContext(),
        [
            member(
                "gcp:projects/iAMMember:IAMMember",
                "wide",
                "roles/bigquery.dataEditor",
                project="p-bq",
            )
        ],
        "wide",
    ),
    # organization and folder grants
    "org-agent-data-editor": (
        "DBQ006",
        PolicyContext(),
        [member(ORG_MEMBER, "org", "roles/bigquery.dataEditor", orgId="123")],
        "org",
    ),
    "org-agent-data-editor-with-grants-list": (
        "DBQ006",
        PolicyContext(expected_grants=EXPECTED),
        [member(ORG_MEMBER, "org", "roles/bigquery.dataEditor", orgId="123")],
        "org",
    ),
    "folder-agent-job-user": (
        "DBQ006",
        PolicyContext(),
        [member(FOLDER_MEMBER, "folder", "roles/bigquery.jobUser", folder="folders/456")],
        "folder",
    ),
    "org-binding-agent": (
        "DBQ006",
        PolicyContext(),
        [
            Resource(
                "gcp:organizations/iAMBinding:IAMBinding",
                "org",
                {"orgId": "123", "role": "roles/bigquery.dataEditor", "members": [MIXED_AGENT]},
            )
        ],
        "org",
    ),
    "folder-policy-agent": (
        "DBQ006",
        PolicyContext(),
        [
            iam_policy(
                "gcp:folder/iAMPolicy:IAMPolicy",
                "folder",
                "roles/bigquery.dataEditor",
                AGENT,
                folder="folders/456",
            )
        ],
        "folder",
    ),
    "org-basic-role": (
        "DBQ002",
        PolicyContext(),
        [member(ORG_MEMBER, "org", "roles/editor", "user:dev@example.com", orgId="123")],
        "org",
    ),
    "folder-public-member": (
        "DBQ003",
        PolicyContext(),
        [
            member(
                FOLDER_MEMBER,
                "folder",
                "roles/bigquery.dataViewer",
                "allAuthenticatedUsers",
                folder="folders/456",
            )
        ],
        "folder",
    ),
    "org-policy-public": (
        "DBQ003",
        PolicyContext(),
        [
            iam_policy(
                "gcp:organizations/iAMPolicy:IAMPolicy",
                "org",
                "roles/bigquery.dataViewer",
                "allUsers",
                orgId="123",
            )
        ],
        "org",
    ),
    # IAM policies (policyData) and the other resources that grant on data
    "project-policy-owner": (
        "DBQ002",
        PolicyContext(),
        [
            iam_policy(
                "gcp:projects/iAMPolicy:IAMPolicy",
                "proj",
                "roles/owner",
                "user:a@example.com",
                project="p",
            )
        ],
        "proj",
    ),
    "dataset-policy-public": (
        "DBQ003",
        PolicyContext(),
        [
            iam_policy(
                "gcp:bigquery/datasetIamPolicy:DatasetIamPolicy",
                "dsp",
                "roles/bigquery.dataViewer",
                "allUsers",
                project="p-bq",
                datasetId="ds",
            )
        ],
        "dsp",
    ),
    "table-member-public": (
        "DBQ003",
        PolicyContext(),
        [
            member(
                "gcp:bigquery/iamMember:IamMember",
                "tbl",
                "roles/bigquery.dataViewer",
                "allUsers",
                project="p-bq",
                datasetId="ds",
                tableId="instances",
            )
        ],
        "tbl",
    ),
    "table-policy-agent-admin": (
        "DBQ004",
        PolicyContext(),
        [
            iam_policy(
                "gcp:bigquery/iamPolicy:IamPolicy",
                "tbl",
                "roles/bigquery.admin",
                AGENT,
                project="p-bq",
                datasetId="ds",
                tableId="instances",
            )
        ],
        "tbl",
    ),
    "managed-folder-public": (
        "DBQ003",
        PolicyContext(),
        [
            storage(
                "managedFolderIamMember:ManagedFolderIamMember",
                "mf",
                managedFolder="filters/",
                role="roles/storage.objectViewer",
                member="allUsers",
            )
        ],
        "mf",
    ),
    "key-ring-agent-admin": (
        "DBQ004",
        PolicyContext(),
        [
            member(
                "gcp:kms/keyRingIAMMember:KeyRingIAMMember",
                "kr",
                "roles/cloudkms.admin",
                keyRingId="projects/k/locations/eu/keyRings/r",
            )
        ],
        "kr",
    ),
    # DBQ012: the agent's identity in the agent's own project
    "identity-in-another-project": (
        "DBQ012",
        SOURCE,
        [GOOD_JOBS, identity("p-other")],
        "jobs",
    ),
    "identity-in-another-project-no-config": (
        "DBQ012",
        PolicyContext(),
        [HEALTHCARE_DATASET, GOOD_JOBS, identity("p-other")],
        "jobs",
    ),
    "identity-for-another-service": (
        "DBQ012",
        SOURCE,
        [GOOD_JOBS, identity("p-src", "bigquery.googleapis.com")],
        "jobs",
    ),
    "agent-of-another-project": (
        "DBQ012",
        SOURCE,
        [
            IDENTITY,
            member(
                "gcp:projects/iAMMember:IAMMember",
                "foreign",
                "roles/bigquery.jobUser",
                OTHER_AGENT,
                project="p-bq",
            ),
        ],
        "foreign",
    ),
}

BYPASSES.update(
    {
        # DBQ014: a role of the same name in another project is not the stack's
        "snapshot-role-of-another-project": (
            "DBQ014",
            SOURCE,
            [
                member(
                    "gcp:healthcare/dicomStoreIamMember:DicomStoreIamMember",
                    "foreign-role",
                    "projects/p-attacker/roles/dicomBqSnapshotExport_0123abcd",
                    SNAPSHOT_MEMBER,
                    dicomStoreId="p-src/eu/imaging/studies",
                )
            ],
            "foreign-role",
        ),
        "snapshot-role-of-another-project-no-config": (
            "DBQ014",
            PolicyContext(),
            [
                SNAPSHOT_ROLE_RESOURCE,
                member(
                    "gcp:healthcare/dicomStoreIamMember:DicomStoreIamMember",
                    "foreign-role",
                    "projects/p-attacker/roles/dicomBqSnapshotExport_0123abcd",
                    SNAPSHOT_MEMBER,
                    dicomStoreId="p-src/eu/imaging/studies",
                ),
            ],
            "foreign-role",
        ),
        # DBQ016: the scheduler agent's Token Creator anywhere but the snapshot account
        "scheduler-token-creator-on-the-project": (
            "DBQ016",
            SOURCE,
            [
                member(
                    "gcp:projects/iAMMember:IAMMember",
                    "scheduler-everywhere",
                    "roles/iam.serviceAccountTokenCreator",
                    SCHEDULER_AGENT.upper().replace("SERVICEACCOUNT:", "serviceAccount:"),
                    project="p-src",
                )
            ],
            "scheduler-everywhere",
        ),
        "scheduler-token-creator-on-another-account": (
            "DBQ016",
            SOURCE,
            [
                member(
                    "gcp:serviceaccount/iAMMember:IAMMember",
                    "scheduler-other",
                    "roles/iam.serviceAccountTokenCreator",
                    SCHEDULER_AGENT,
                    serviceAccountId="projects/p-src/serviceAccounts/deployer@p-src.iam.gserviceaccount.com",
                )
            ],
            "scheduler-other",
        ),
        "scheduler-agent-of-another-project": (
            "DBQ016",
            SOURCE,
            [
                member(
                    "gcp:serviceaccount/iAMMember:IAMMember",
                    "foreign-scheduler",
                    "roles/iam.serviceAccountTokenCreator",
                    "serviceAccount:service-999988887777@gcp-sa-cloudscheduler.iam.gserviceaccount.com",
                    serviceAccountId=SNAPSHOT_ACCOUNT_ID,
                )
            ],
            "foreign-scheduler",
        ),
        # DBQ017: impersonation reaching the snapshot account
        "token-creator-on-the-snapshot-project": (
            "DBQ017",
            PolicyContext(),
            [
                SNAPSHOT_ACCOUNT_RESOURCE,
                member(
                    "gcp:projects/iAMMember:IAMMember",
                    "project-token",
                    "roles/iam.serviceAccountTokenCreator",
                    "group:ops@example.com",
                    project="p-src",
                ),
            ],
            "project-token",
        ),
        "scheduler-agent-other-role-on-the-account": (
            "DBQ017",
            PolicyContext(),
            [
                SNAPSHOT_ACCOUNT_RESOURCE,
                iam_policy(
                    "gcp:serviceaccount/iAMPolicy:IAMPolicy",
                    "account-policy",
                    "roles/iam.serviceAccountUser",
                    SCHEDULER_AGENT,
                    serviceAccountId=SNAPSHOT_ACCOUNT_ID,
                ),
            ],
            "account-policy",
        ),
    }
)

# name -> (rules that must stay silent, context, resources): the legitimate neighbours.
ALLOWED: dict[str, tuple[tuple[str, ...], PolicyContext, list[Resource]]] = {
    "dataset-access-group-reader": (
        ("DBQ001", "DBQ002", "DBQ003", "DBQ007"),
        PolicyContext(),
        [bq_dataset(), access("team", "READER", groupByEmail="team@example.com")],
    ),
    "dataset-access-authorized-view": (
        ("DBQ003", "DBQ005"),
        PolicyContext(),
        [access("view", "", view={"projectId": "p-bq", "datasetId": "v", "tableId": "t"})],
    ),
    "dataset-access-agent-legacy-writer": (
        ("DBQ004", "DBQ005", "DBQ006"),
        PolicyContext(expected_grants=EXPECTED),
        [access("writer", "WRITER", userByEmail=AGENT_EMAIL), GOOD_JOBS],
    ),
    "bucket-acl-private": (
        ("DBQ002", "DBQ003"),
        PolicyContext(),
        [
            storage(
                "bucketACL:BucketACL",
                "acl",
                predefinedAcl="projectPrivate",
                roleEntities=["OWNER:project-owners-1", "READER:group-team@example.com"],
            )
        ],
    ),
    "bucket-access-control-group": (
        ("DBQ001", "DBQ003"),
        PolicyContext(),
        [
            storage(
                "bucketAccessControl:BucketAccessControl",
                "ac",
                entity="group-team@example.com",
                role="READER",
            )
        ],
    ),
    "mixed-case-agent-listed-grants": (
        ("DBQ004", "DBQ005", "DBQ006", "DBQ012"),
        PolicyContext(
            expected_grants=EXPECTED, source_project="p-src", source_project_number="111122223333"
        ),
        [
            member(
                "gcp:bigquery/datasetIamMember:DatasetIamMember",
                "editor",
                "roles/bigquery.dataEditor",
                MIXED_AGENT,
                project="p-bq",
                datasetId="ds",
            ),
            member(
                "gcp:projects/iAMMember:IAMMember",
                "jobs",
                "roles/bigquery.jobUser",
                MIXED_AGENT,
                project="p-bq",
            ),
        ],
    ),
    "org-grant-to-a-group": (
        ("DBQ002", "DBQ003", "DBQ004", "DBQ005", "DBQ006"),
        PolicyContext(expected_grants=EXPECTED),
        [
            member(
                ORG_MEMBER,
                "org",
                "roles/bigquery.dataViewer",
                "group:analysts@example.com",
                orgId="123",
            )
        ],
    ),
    "member-remove-is-no-grant": (
        ("DBQ003",),
        PolicyContext(),
        [
            member(
                "gcp:projects/iamMemberRemove:IamMemberRemove",
                "rm",
                "roles/viewer",
                "allUsers",
                project="p",
            )
        ],
    ),
    "identity-by-project-number": (
        ("DBQ012",),
        SOURCE,
        [GOOD_JOBS, identity("111122223333")],
    ),
    "identity-in-the-store-project-no-config": (
        ("DBQ012",),
        PolicyContext(),
        [HEALTHCARE_DATASET, GOOD_JOBS, identity("p-src")],
    ),
    # The stack's own grants: the snapshot role of the source project, the scheduler's Token
    # Creator; impersonation roles in a project without a snapshot account are not DBQ017's.
    "snapshot-and-scheduler-grants": (
        ("DBQ004", "DBQ014", "DBQ015", "DBQ016", "DBQ017"),
        SOURCE,
        [SNAPSHOT_ROLE_RESOURCE, SNAPSHOT_GRANT, SNAPSHOT_ACCOUNT_RESOURCE, SCHEDULER_GRANT],
    ),
    "token-creator-in-another-project": (
        ("DBQ016", "DBQ017"),
        PolicyContext(),
        [
            SNAPSHOT_ACCOUNT_RESOURCE,
            member(
                "gcp:projects/iAMMember:IAMMember",
                "elsewhere",
                "roles/iam.serviceAccountTokenCreator",
                "group:ops@example.com",
                project="p-other",
            ),
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(BYPASSES))
def test_known_bypass_fails_its_rule(case: str) -> None:
    rule_id, context, resources, culprit = BYPASSES[case]
    extra = [] if rule_id == "DBQ012" else [IDENTITY]
    found = [f for f in evaluate([*resources, *extra], context) if f.rule == rule_id]
    assert [f.resource for f in found] == [culprit], found


@pytest.mark.parametrize("case", sorted(ALLOWED))
def test_legitimate_neighbour_passes(case: str) -> None:
    rule_ids, context, resources = ALLOWED[case]
    found = [f for f in evaluate([*resources, IDENTITY], context) if f.rule in rule_ids]
    assert found == []


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        (MIXED_AGENT, AGENT),
        ("SERVICEACCOUNT:" + AGENT_EMAIL, AGENT),
        (f"deleted:{MIXED_AGENT}?uid=123", AGENT),
        (" allusers ", "allUsers"),
        ("ALLAUTHENTICATEDUSERS", "allAuthenticatedUsers"),
        ("user:Dev@Example.COM", "user:dev@example.com"),
        ("Group:Team@Example.com", "group:team@example.com"),
        # principal identifiers are case-sensitive: left as written
        (
            "principal://iam.googleapis.com/locations/global/workforcePools/P/subject/S",
            "principal://iam.googleapis.com/locations/global/workforcePools/P/subject/S",
        ),
        (
            "principalSet://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/P/*",
            "principalSet://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/P/*",
        ),
    ],
)
def test_members_compare_as_google_compares_them(written: str, canonical: str) -> None:
    assert canonical_member(written) == canonical


def test_every_rule_has_fixtures_and_there_are_at_least_12() -> None:
    assert len(RULES) >= 12
    assert {rule.id for rule in RULES} == set(CASES)
    for rule in RULES:
        assert rule.description
        assert rule.remediation
        assert rule.nearest
        assert rule.enforcement in ("mandatory", "advisory")


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_passes_and_fails(rule_id: str) -> None:
    context, passing, failing, culprit = CASES[rule_id]
    with_identity = rule_id != "DBQ012"
    extra = [IDENTITY] if with_identity else []
    assert [f for f in evaluate([*passing, IDENTITY], context) if f.rule == rule_id] == []
    found = [f for f in evaluate(failing + extra, context) if f.rule == rule_id]
    assert [f.resource for f in found] == [culprit]
    assert found[0].remediation


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_example_stacks_pass_every_rule(stack: str) -> None:
    from dicom_bq.stack.config import read_stack_config

    plan = cached_plan(stack)
    config = read_stack_config(ROOT, stack, use_cli=False)
    assert check_plan(plan, settings_from_config(config.values, stack)[0]) == []


def _plan_with(extra: Any) -> Any:
    """The real program plus one more resource, as a careless change would add it."""
    from dicom_bq.infra.program import define_stack, load_settings

    def program() -> dict[str, Any]:
        outputs = define_stack(load_settings())
        extra()
        return outputs

    raw = base_settings(protected=True)
    settings = parse_settings(raw)
    plan = record_program(
        "change",
        {f"dicom-bq:{k}": v for k, v in raw.items()},
        program,
        known_numbers=known_project_numbers(settings),
    )
    return plan, check_plan(plan, settings)


def test_a_basic_role_fails_the_check() -> None:
    import pulumi_gcp as gcp

    _plan, findings = _plan_with(
        lambda: gcp.projects.IAMMember(
            "oops", project="dicom-src-test", role="roles/editor", member="user:dev@example.com"
        )
    )
    assert has_mandatory(findings)
    # A basic role, and a grant the grants list does not name.
    assert {f.rule for f in findings} == {"DBQ002", "DBQ019"}


def test_an_authoritative_binding_for_the_agent_fails_the_check() -> None:
    import pulumi_gcp as gcp

    plan, findings = _plan_with(
        lambda: gcp.bigquery.DatasetIamBinding(
            "authoritative",
            project="dicom-src-test",
            dataset_id="dicom_metadata",
            role="roles/bigquery.dataEditor",
            members=[AGENT],
        )
    )
    assert "DBQ001" in {f.rule for f in findings}
    assert any(r.name == "authoritative" for r in plan_resources(plan))


def test_plan_check_cli_exit_codes(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from dicom_bq.cli import app

    ok = CliRunner().invoke(app, ["plan", "--stack", "prod", "--check", "--project-dir", str(ROOT)])
    assert ok.exit_code == 0, ok.output
    assert f"policy checks passed: {len(RULES)} rules" in ok.stdout
    (tmp_path / "Pulumi.yaml").write_text("name: dicom-bq\nruntime: python\n")
    (tmp_path / "Pulumi.eu.yaml").write_text(
        "config:\n"
        + "".join(f"  dicom-bq:{k}: {v}\n" for k, v in base_settings().items())
        + "  dicom-bq:allowedBigqueryLocations: [EU]\n"
    )
    bad = CliRunner().invoke(
        app, ["plan", "-s", "eu", "--check", "-f", "json", "--project-dir", str(tmp_path)]
    )
    assert bad.exit_code == 1
    import json

    findings = json.loads(bad.stdout)["findings"]
    assert [f["rule"] for f in findings] == ["DBQ010"]


def test_readme_maps_every_rule() -> None:
    from dicom_bq.infra.policy_config import policy_name

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for rule in RULES:
        # The CrossGuard policy's name is what a --policy-pack-config file is keyed by.
        row = f"| {rule.id} | `{policy_name(rule)}` | {rule.description} | {rule.enforcement} |"
        assert f"{row} {rule.nearest} |" in readme


def test_bypasses_written_with_the_real_provider_fail_the_check() -> None:
    """The same bypasses as pulumi-gcp records them: its input names, its type tokens."""
    import pulumi_gcp as gcp

    def bypasses() -> None:
        gcp.bigquery.DatasetAccess(
            "open-dataset",
            project="dicom-src-test",
            dataset_id="dicom_metadata",
            role="READER",
            special_group="allAuthenticatedUsers",
        )
        gcp.storage.BucketACL(
            "open-bucket", bucket="dicom-src-test-filters", role_entities=["READER:allUsers"]
        )
        gcp.storage.DefaultObjectAccessControl(
            "open-objects", bucket="dicom-src-test-filters", entity="allUsers", role="READER"
        )
        gcp.organizations.IAMMember(
            "org-editor", org_id="123", role="roles/bigquery.dataEditor", member=MIXED_AGENT
        )
        gcp.projects.IAMMember(
            "shouted-admin",
            project="dicom-src-test",
            role="roles/bigquery.admin",
            member=MIXED_AGENT,
        )

    _plan, findings = _plan_with(bypasses)
    assert {(f.rule, f.resource) for f in findings} >= {
        ("DBQ003", "open-dataset"),
        ("DBQ003", "open-bucket"),
        ("DBQ001", "open-bucket"),
        ("DBQ003", "open-objects"),
        ("DBQ006", "org-editor"),
        ("DBQ004", "shouted-admin"),
        ("DBQ005", "shouted-admin"),
    }


def test_plan_check_ties_the_identity_to_the_source_project() -> None:
    from dicom_bq.security.checks import plan_context

    plan = cached_plan("prod")
    assert plan.settings is not None
    moved = [
        Resource(r.type, r.name, {**r.inputs, "project": "someone-else"}, r.protect)
        if r.type == "gcp:projects/serviceIdentity:ServiceIdentity"
        else Resource(r.type, r.name, r.inputs, r.protect)
        for r in plan.custom_resources()
    ]
    context = plan_context(plan.settings, plan.grants)
    assert context.source_project == "clinical-imaging-prod"
    assert context.source_project_number == "987654321098"
    assert {f.rule for f in evaluate(moved, context)} == {"DBQ012"}


@pytest.mark.processes
def test_the_pack_closes_the_bypasses_too() -> None:
    """CrossGuard, on its own types, with the config it is given (or none)."""
    from tests import test_policy_pack as pack

    dev = pack.plan_resources("dev")
    bypasses = [
        {
            "type": "gcp:bigquery/datasetAccess:DatasetAccess",
            "name": "open-dataset",
            "props": {
                "project": "dicom-bq-dev",
                "datasetId": "d",
                "role": "OWNER",
                "iamMember": "allUsers",
            },
        },
        {
            "type": "gcp:storage/bucketAccessControl:BucketAccessControl",
            "name": "open-bucket",
            "props": {"bucket": "dicom-bq-dev-filters", "entity": "allUsers", "role": "READER"},
        },
        {
            "type": "gcp:folder/iAMMember:IAMMember",
            "name": "folder-jobs",
            "props": {
                "folder": "folders/1",
                "role": "roles/bigquery.jobUser",
                "member": "serviceAccount:Service-123456789012@gcp-sa-healthcare.iam.gserviceaccount.com",
            },
        },
    ]
    report = pack.run_pack([*dev, *bypasses])
    violations = {name: [v.split(":")[0] for v in r["violations"]] for name, r in report.items()}
    assert violations["dbq002-no-basic-roles"] == ["open-dataset"]
    assert violations["dbq003-no-public-members"] == ["open-dataset", "open-bucket"]
    assert violations["dbq006-agent-narrow-scope"] == ["folder-jobs"]
    assert violations["dbq012-agent-identity-exists"] == []

    elsewhere = [
        {**r, "props": {**r["props"], "project": "someone-else"}}
        if r["type"] == "gcp:projects/serviceIdentity:ServiceIdentity"
        else r
        for r in dev
    ]
    grants = cached_plan("dev").grants
    for config in (
        {},
        {"expectedGrants": grants},
        {"sourceProject": "dicom-bq-dev", "sourceProjectNumber": "123456789012"},
    ):
        assert pack.run_pack(dev, config)["dbq012-agent-identity-exists"]["violations"] == []
        found = pack.run_pack(elsewhere, config)["dbq012-agent-identity-exists"]["violations"]
        assert found, config


@pytest.mark.parametrize(
    ("type_", "props", "scope"),
    [
        (
            "gcp:kms/keyRingIAMMember:KeyRingIAMMember",
            {"keyRingId": "projects/k/locations/eu/keyRings/r"},
            "//cloudkms.googleapis.com/projects/k/locations/eu/keyRings/r",
        ),
        # pulumi-gcp also takes PROJECT/LOCATION/RING (pulumi_gcp kms/key_ring_iam_member.py).
        (
            "gcp:kms/keyRingIAMMember:KeyRingIAMMember",
            {"keyRingId": "k/eu/r"},
            "//cloudkms.googleapis.com/projects/k/locations/eu/keyRings/r",
        ),
        (
            "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember",
            {"project": "p", "subscription": "s"},
            "//pubsub.googleapis.com/projects/p/subscriptions/s",
        ),
        (
            "gcp:folder/iAMMember:IAMMember",
            {"folder": "folders/42"},
            "//cloudresourcemanager.googleapis.com/folders/42",
        ),
    ],
)
def test_sub_scopes_are_full_resource_names(type_: str, props: dict[str, Any], scope: str) -> None:
    """https://cloud.google.com/iam/docs/full-resource-names, hosts from vocabulary/scopes.py."""
    assert scope_of(member(type_, "m", "roles/viewer", **props)) == scope
