"""What infra/policy_rules.py reads out of each kind of access resource, held to Google's
documented grammar (issue 19, mutation testing: written to kill the mutants scripts/mutation found
surviving in the rules' readers). Every rule judges the (role, member, scope) bindings these
produce, so a reader that misreads an ACL entity or an access entry hides a grant from all of
them."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from dicom_bq.infra import policy_rules
from dicom_bq.infra.policy_rules import (
    ExpectedGrant,
    ListedGrant,
    PolicyContext,
    ProgramAllowlist,
    Resource,
    bindings,
    canonical_member,
    evaluate,
    program_allowlist,
    resolved,
    scope_of,
)

BUCKET = "//storage.googleapis.com/projects/_/buckets/b"


def granted(resource: Resource) -> set[tuple[str, str]]:
    return {(b.role, b.member) for b in bindings([resource])}


def storage(kind: str, **props: Any) -> Resource:
    return Resource(f"gcp:storage/{kind}", "acl", {"bucket": "b", **props})


# Cloud Storage ACL entities (https://cloud.google.com/storage/docs/json_api/v1/bucketAccessControls:
# user-EMAIL, group-EMAIL, domain-DOMAIN, project-TEAM-PROJECTID, allUsers,
# allAuthenticatedUsers) on a BucketACL, whose roles are the legacy bucket roles
# (https://cloud.google.com/storage/docs/access-control/iam-roles#legacy-roles).
@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "OWNER:user-Alice@Example.com",
            ("roles/storage.legacyBucketOwner", "user:alice@example.com"),
        ),
        (
            "WRITER:group-team@example.com",
            ("roles/storage.legacyBucketWriter", "group:team@example.com"),
        ),
        ("READER:domain-example.com", ("roles/storage.legacyBucketReader", "domain:example.com")),
        (
            "READER:user-robot@p.iam.gserviceaccount.com",
            ("roles/storage.legacyBucketReader", "serviceAccount:robot@p.iam.gserviceaccount.com"),
        ),
        ("OWNER:project-owners-123", ("roles/storage.legacyBucketOwner", "projectOwner:123")),
        # The project ID is everything after the team: project IDs hold hyphens.
        (
            "READER:project-viewers-my-data-prj",
            ("roles/storage.legacyBucketReader", "projectViewer:my-data-prj"),
        ),
        ("WRITER:project-Editors-p-1", ("roles/storage.legacyBucketWriter", "projectEditor:p-1")),
        ("READER:allusers", ("roles/storage.legacyBucketReader", "allUsers")),
    ],
)
def test_a_bucket_acl_entry_is_the_legacy_role_granted_to_its_entity(
    entry: str, expected: tuple[str, str]
) -> None:
    assert granted(storage("bucketACL:BucketACL", roleEntities=[entry])) == {expected}


def test_an_unknown_project_team_is_kept_as_written() -> None:
    (found,) = granted(storage("bucketACL:BucketACL", roleEntities=["READER:project-auditors-p"]))
    assert found == ("roles/storage.legacyBucketReader", "auditors:p")


def test_an_entity_with_a_service_account_domain_is_only_a_service_account_as_a_user() -> None:
    """group-/domain- entities stay groups and domains whatever their address ends with."""
    entries = ["READER:group-g@p.iam.gserviceaccount.com", "READER:domain-gserviceaccount.com"]
    assert granted(storage("bucketACL:BucketACL", roleEntities=entries)) == {
        ("roles/storage.legacyBucketReader", "group:g@p.iam.gserviceaccount.com"),
        ("roles/storage.legacyBucketReader", "domain:gserviceaccount.com"),
    }


@pytest.mark.parametrize("kind", ["defaultObjectACL:DefaultObjectACL", "objectACL:ObjectACL"])
def test_an_object_acl_entry_is_a_legacy_object_role(kind: str) -> None:
    resource = storage(
        kind, object="o", roleEntities=["OWNER:user-a@example.com", "READER:allUsers"]
    )
    assert granted(resource) == {
        ("roles/storage.legacyObjectOwner", "user:a@example.com"),
        ("roles/storage.legacyObjectReader", "allUsers"),
    }


@pytest.mark.parametrize(
    ("kind", "role", "expected_role"),
    [
        ("bucketAccessControl:BucketAccessControl", "writer", "roles/storage.legacyBucketWriter"),
        ("bucketAccessControl:BucketAccessControl", "OWNER", "roles/storage.legacyBucketOwner"),
        (
            "defaultObjectAccessControl:DefaultObjectAccessControl",
            "READER",
            "roles/storage.legacyObjectReader",
        ),
        ("objectAccessControl:ObjectAccessControl", "OWNER", "roles/storage.legacyObjectOwner"),
    ],
)
def test_an_access_control_grants_its_role_to_its_entity(
    kind: str, role: str, expected_role: str
) -> None:
    resource = storage(kind, object="o", entity="group-team@example.com", role=role)
    assert granted(resource) == {(expected_role, "group:team@example.com")}


@pytest.mark.parametrize(
    ("kind", "props", "expected"),
    [
        # A canned ACL on the bucket grants the bucket role...
        (
            "bucketACL:BucketACL",
            {"predefinedAcl": "publicReadWrite"},
            ("roles/storage.legacyBucketWriter", "allUsers"),
        ),
        (
            "bucketACL:BucketACL",
            {"predefinedAcl": "authenticatedRead"},
            ("roles/storage.legacyBucketReader", "allAuthenticatedUsers"),
        ),
        # ...BucketACL's defaultAcl is the default *object* ACL: the object role...
        (
            "bucketACL:BucketACL",
            {"defaultAcl": "publicRead"},
            ("roles/storage.legacyObjectReader", "allUsers"),
        ),
        # ...and an object's canned ACL the object role.
        (
            "objectACL:ObjectACL",
            {"object": "o", "predefinedAcl": "publicRead"},
            ("roles/storage.legacyObjectReader", "allUsers"),
        ),
    ],
)
def test_a_public_canned_acl_is_a_public_grant_of_the_right_role(
    kind: str, props: dict[str, Any], expected: tuple[str, str]
) -> None:
    assert granted(storage(kind, **props)) == {expected}


def dataset_access(**entry: Any) -> Resource:
    return Resource(
        "gcp:bigquery/datasetAccess:DatasetAccess",
        "access",
        {"project": "p-bq", "datasetId": "ds", "role": "READER", **entry},
    )


# access[] of https://cloud.google.com/bigquery/docs/reference/rest/v2/datasets.
@pytest.mark.parametrize(
    ("entry", "member"),
    [
        ({"userByEmail": "Bob@Example.com"}, "user:bob@example.com"),
        (
            {"userByEmail": "robot@p.iam.gserviceaccount.com"},
            "serviceAccount:robot@p.iam.gserviceaccount.com",
        ),
        ({"groupByEmail": "team@example.com"}, "group:team@example.com"),
        ({"domain": "example.com"}, "domain:example.com"),
        ({"specialGroup": "projectOwners"}, "projectOwner:p-bq"),
        ({"specialGroup": "allAuthenticatedUsers"}, "allAuthenticatedUsers"),
    ],
)
def test_a_dataset_access_entry_grants_its_principal(entry: dict[str, Any], member: str) -> None:
    assert granted(dataset_access(**entry)) == {("roles/bigquery.dataViewer", member)}


def test_a_dataset_access_entry_of_a_view_grants_no_principal() -> None:
    view = {"projectId": "p-bq", "datasetId": "other", "tableId": "v"}
    assert granted(dataset_access(view=view)) == set()


@pytest.mark.parametrize(
    ("ring", "scope"),
    [
        # pulumi-gcp's key_ring_id: PROJECT/LOCATION/RING, or the full name.
        ("p/us/ring", "//cloudkms.googleapis.com/projects/p/locations/us/keyRings/ring"),
        (
            "projects/p/locations/us/keyRings/ring",
            "//cloudkms.googleapis.com/projects/p/locations/us/keyRings/ring",
        ),
        # LOCATION/RING, the provider's project filled in at deploy time: kept as given.
        ("us/ring", "//cloudkms.googleapis.com/us/ring"),
    ],
)
def test_a_key_ring_grant_is_on_the_rings_full_name(ring: str, scope: str) -> None:
    resource = Resource(
        "gcp:kms/keyRingIAMMember:KeyRingIAMMember",
        "ring",
        {"keyRingId": ring, "role": "roles/cloudkms.admin", "member": "user:a@example.com"},
    )
    assert scope_of(resource) == scope


# -- DBQ018: why a type the program never creates is refused, as the reviewer reads it ----------


def refusal(resource_type: str, **props: Any) -> str:
    """DBQ018's message on one resource of this type."""
    found = [
        f.message
        for f in evaluate([Resource(resource_type, "x", props)], PolicyContext())
        if f.rule == "DBQ018"
    ]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize(
    "resource_type",
    [
        "pulumi-python:dynamic:Resource",
        "pulumi-nodejs:dynamic:Resource",
        # A dynamic provider's resource under its own type name, and the dynamic type token
        # under any package: both run the deployer's code during `pulumi up`.
        "pulumi-python:dynamic/counter:Counter",
        "acme:dynamic:Resource",
    ],
)
def test_a_dynamic_provider_resource_is_refused_as_one(resource_type: str) -> None:
    assert refusal(resource_type).startswith("is a dynamic provider resource")


def test_a_provider_of_another_package_is_refused_naming_the_programs_own() -> None:
    assert refusal("pulumi:providers:aws") == (
        "is a provider for package aws, which the program does not use (its providers are gcp, "
        "time)"
    )


def test_a_type_of_another_package_is_refused_naming_the_programs_own() -> None:
    message = refusal("aws:s3/bucket:Bucket")
    assert message.startswith("is a resource of package aws (aws:s3/bucket:Bucket)")
    assert "only the gcp, time types" in message


def test_a_granting_type_and_a_plain_one_are_refused_for_different_reasons() -> None:
    assert refusal("gcp:compute/instanceIAMMember:InstanceIAMMember").startswith(
        "grants access through gcp:compute/instanceIAMMember:InstanceIAMMember"
    )
    assert refusal("gcp:compute/instance:Instance") == (
        "is a gcp:compute/instance:Instance, a type the program never creates"
    )


# access[].view / dataset of https://cloud.google.com/bigquery/docs/reference/rest/v2/datasets;
# pulumi-gcp's DatasetAccess takes `dataset` as {dataset: {projectId, datasetId}, targetTypes}.
@pytest.mark.parametrize(
    ("entry", "authorized"),
    [
        ({"view": {"projectId": "p", "datasetId": "d", "tableId": "v"}}, "the view p.d.v"),
        ({"routine": {"projectId": "p", "datasetId": "d", "routineId": "r"}}, "the routine p.d.r"),
        (
            {
                "dataset": {
                    "dataset": {"projectId": "p", "datasetId": "d"},
                    "targetTypes": ["VIEWS"],
                }
            },
            "the dataset p.d",
        ),
        ({"dataset": {"projectId": "p", "datasetId": "d"}}, "the dataset p.d"),
    ],
)
def test_an_authorized_view_routine_or_dataset_is_named_in_the_refusal(
    entry: dict[str, Any], authorized: str
) -> None:
    message = refusal(
        "gcp:bigquery/datasetAccess:DatasetAccess", project="p-bq", datasetId="ds", **entry
    )
    assert message.startswith(f"authorizes {authorized} to read dataset ")


def test_the_allowlist_reads_back_what_it_writes() -> None:
    allow = program_allowlist()
    assert ProgramAllowlist.from_json(allow.as_json()) == allow


# -- DBQ020: a Cloud Scheduler job may only export a stack's store as its snapshot account ----

SNAPSHOT = "dicom-bq-snapshot-0a1b2c3d"
STORE = "projects/p/locations/l/datasets/d/dicomStores/s"
EXPORT_URI = f"https://healthcare.googleapis.com/v1/{STORE}:export"


def job_problems(*extra: Resource, **props: Any) -> list[str]:
    job = Resource("gcp:cloudscheduler/job:Job", "job", props)
    return [
        f.message
        for f in evaluate([job, *extra], PolicyContext())
        if f.rule == "DBQ020" and f.resource == "job"
    ]


def http_target(**target: Any) -> dict[str, Any]:
    return {
        "uri": EXPORT_URI,
        "oauthToken": {"serviceAccountEmail": f"{SNAPSHOT}@p.iam.gserviceaccount.com"},
        **target,
    }


def test_the_programs_own_job_shape_passes() -> None:
    assert job_problems(httpTarget=http_target()) == []


@pytest.mark.parametrize("other", ["pubsubTarget", "appEngineHttpTarget"])
def test_a_job_with_another_target_is_refused(other: str) -> None:
    assert job_problems(**{other: {"topicName": "t"}}) == [
        f"has a {other}; the program's jobs only call dicomStores.export over HTTP"
    ]


def test_a_job_sending_an_oidc_token_is_refused() -> None:
    target = http_target(oidcToken={"serviceAccountEmail": f"{SNAPSHOT}@p.iam.gserviceaccount.com"})
    assert job_problems(httpTarget=target) == [
        "sends an OIDC token; the program's jobs send the snapshot account's OAuth token"
    ]


@pytest.mark.parametrize(
    "email",
    [
        "deployer@p.iam.gserviceaccount.com",  # not a snapshot account
        "dicom-bq-snapshot-99999999@p.iam.gserviceaccount.com",  # another stack's
    ],
)
def test_a_job_calling_as_another_account_is_refused(email: str) -> None:
    ours = Resource(
        "gcp:serviceaccount/account:Account", "sa", {"project": "p", "accountId": SNAPSHOT}
    )
    target = http_target(oauthToken={"serviceAccountEmail": email})
    assert job_problems(ours, httpTarget=target) == [
        f"calls as {email}, not the stack's snapshot account: Cloud Scheduler's agent would mint "
        "that account's tokens for whoever edits the job"
    ]


def test_a_job_calling_as_the_stacks_snapshot_account_passes() -> None:
    ours = Resource(
        "gcp:serviceaccount/account:Account", "sa", {"project": "p", "accountId": SNAPSHOT}
    )
    target = http_target(
        oauthToken={"serviceAccountEmail": f"{SNAPSHOT.upper()}@p.iam.gserviceaccount.com"}
    )
    assert job_problems(ours, httpTarget=target) == []


# -- DBQ019 without a grants list: the program's grants land only on what the stack creates ----

HEALTHCARE_AGENT = "serviceAccount:service-111122223333@gcp-sa-healthcare.iam.gserviceaccount.com"
SOURCE = PolicyContext(source_project="p-src", source_project_number="111122223333")
BQ = "//bigquery.googleapis.com/projects"
CRM = "//cloudresourcemanager.googleapis.com/projects"


def unlisted(resources: list[Resource]) -> list[str]:
    """DBQ019's messages on the grant `g`, with no grants list (a hand-run pack's case)."""
    return [
        f.message for f in evaluate(resources, SOURCE) if f.rule == "DBQ019" and f.resource == "g"
    ]


def dataset(dataset_id: str, project: str = "p-bq") -> Resource:
    return Resource(
        "gcp:bigquery/dataset:Dataset",
        dataset_id,
        {
            "project": project,
            "datasetId": dataset_id,
            "location": "EU",
            "deleteContentsOnDestroy": False,
        },
    )


def grant(resource_type: str, role: str, who: str, **scope: Any) -> Resource:
    return Resource(resource_type, "g", {"role": role, "member": who, **scope})


def test_a_grant_on_one_of_two_datasets_is_refused_the_program_makes_one() -> None:
    editor = grant(
        "gcp:bigquery/datasetIamMember:DatasetIamMember",
        "roles/bigquery.dataEditor",
        HEALTHCARE_AGENT,
        project="p-bq",
        datasetId="a",
    )
    assert unlisted([dataset("a"), dataset("b"), editor]) == [
        f"grants roles/bigquery.dataEditor to the Healthcare service agent on {BQ}/p-bq/datasets/a, "
        f"one of 2 BigQuery datasets ({BQ}/p-bq/datasets/a, {BQ}/p-bq/datasets/b): the program "
        "creates one"
    ]
    assert unlisted([dataset("a"), editor]) == []


def test_the_snapshot_role_on_a_store_the_stack_does_not_create_is_refused() -> None:
    store = Resource(
        "gcp:healthcare/dicomStore:DicomStore",
        "store",
        {"dataset": "projects/p-src/locations/l/datasets/d", "name": "s1"},
    )

    def export_grant(store_id: str) -> Resource:
        return grant(
            "gcp:healthcare/dicomStoreIamMember:DicomStoreIamMember",
            "projects/p-src/roles/dicomBqSnapshotExport_0a1b2c3d",
            "serviceAccount:dicom-bq-snapshot-0a1b2c3d@p-src.iam.gserviceaccount.com",
            dicomStoreId=f"projects/p-src/locations/l/datasets/d/dicomStores/{store_id}",
        )

    assert unlisted([store, export_grant("s2")]) == [
        "grants projects/p-src/roles/dicomBqSnapshotExport_0a1b2c3d to the nightly snapshot's "
        "service account on //healthcare.googleapis.com/projects/p-src/locations/l/datasets/d/"
        "dicomStores/s2, which is not one of the stack's DICOM stores"
    ]
    assert unlisted([store, export_grant("s1")]) == []


def test_token_creator_on_another_account_than_the_stacks_is_refused() -> None:
    account = Resource(
        "gcp:serviceaccount/account:Account",
        "sa",
        {"project": "p-src", "accountId": "dicom-bq-snapshot-0a1b2c3d"},
    )

    def token_creator(email: str) -> Resource:
        return grant(
            "gcp:serviceaccount/iAMMember:IAMMember",
            "roles/iam.serviceAccountTokenCreator",
            "serviceAccount:service-111122223333@gcp-sa-cloudscheduler.iam.gserviceaccount.com",
            serviceAccountId=f"projects/p-src/serviceAccounts/{email}",
        )

    other = (
        "//iam.googleapis.com/projects/p-src/serviceAccounts/other@p-src.iam.gserviceaccount.com"
    )
    assert unlisted([account, token_creator("other@p-src.iam.gserviceaccount.com")]) == [
        f"grants roles/iam.serviceAccountTokenCreator to Cloud Scheduler's service agent on "
        f"{other}, which is not the stack's own service account"
    ]
    ours = "dicom-bq-snapshot-0a1b2c3d@p-src.iam.gserviceaccount.com"
    assert unlisted([account, token_creator(ours)]) == []


def test_the_agents_bigquery_project_role_goes_on_its_one_datasets_project() -> None:
    def job_user(project: str) -> Resource:
        return grant(
            "gcp:projects/iAMMember:IAMMember",
            "roles/bigquery.jobUser",
            HEALTHCARE_AGENT,
            project=project,
        )

    assert unlisted([dataset("a"), job_user("p-other")]) == [
        f"grants roles/bigquery.jobUser to the Healthcare service agent on {CRM}/p-other, which "
        "is not the project of the stack's one BigQuery dataset (p-bq)"
    ]
    assert unlisted([dataset("a"), job_user("p-bq")]) == []
    assert (
        f"grants roles/bigquery.jobUser to the Healthcare service agent on {CRM}/p-bq, which is "
        "not the project of the stack's one BigQuery dataset (p-bq, p-bq2)"
    ) in unlisted([dataset("a"), dataset("b", "p-bq2"), job_user("p-bq")])


def test_a_grant_to_anyone_but_the_programs_principals_is_refused() -> None:
    viewer = grant(
        "gcp:bigquery/datasetIamMember:DatasetIamMember",
        "roles/bigquery.dataViewer",
        "user:eve@example.com",
        project="p-bq",
        datasetId="a",
    )
    assert unlisted([dataset("a"), viewer]) == [
        f"grants roles/bigquery.dataViewer to user:eve@example.com on {BQ}/p-bq/datasets/a: the "
        "program grants only to the Healthcare service agent, BigQuery's encryption account, the "
        "nightly snapshot's service account, Cloud Scheduler's service agent, and no grants list "
        "names anyone else"
    ]


def test_a_role_the_program_never_gives_its_principal_is_refused_with_the_ones_it_does() -> None:
    admin = grant(
        "gcp:storage/bucketIAMMember:BucketIAMMember",
        "roles/storage.admin",
        HEALTHCARE_AGENT,
        bucket="b",
    )
    given = sorted(f"{r} on a {k}" for p, r, k in program_allowlist().grants if p == "agent")
    assert "roles/storage.objectViewer on a bucket" in given
    assert unlisted([admin]) == [
        "grants roles/storage.admin to the Healthcare service agent on "
        f"//storage.googleapis.com/projects/_/buckets/b; the program grants the Healthcare service "
        f"agent only {', '.join(given)}"
    ]


UNKNOWN_VALUE = "(known after creation)"


@pytest.mark.parametrize(
    ("role", "member", "dataset_id"),
    [
        # During a preview, a member, a role or a scope may be unknown: judged by what is known.
        ("roles/bigquery.dataEditor", UNKNOWN_VALUE, "a"),
        (UNKNOWN_VALUE, HEALTHCARE_AGENT, "a"),
        ("roles/bigquery.dataEditor", HEALTHCARE_AGENT, UNKNOWN_VALUE),
    ],
)
def test_a_grant_with_a_part_unknown_until_the_update_is_not_refused_for_it(
    role: str, member: str, dataset_id: str
) -> None:
    editor = grant(
        "gcp:bigquery/datasetIamMember:DatasetIamMember",
        role,
        member,
        project="p-bq",
        datasetId=dataset_id,
    )
    assert unlisted([dataset("a"), editor]) == []


SNAPSHOT_ROLE_ID = "dicomBqSnapshotExport_0a1b2c3d"


def custom_role(
    permissions: Any, role_id: str = SNAPSHOT_ROLE_ID, kind: str = "projects", **scope: Any
) -> Resource:
    return Resource(
        f"gcp:{kind}/iAMCustomRole:IAMCustomRole",
        "g",
        {"roleId": role_id, "permissions": permissions, **(scope or {"project": "p-src"})},
    )


def test_the_snapshot_role_holds_exactly_the_programs_permissions() -> None:
    assert unlisted([custom_role(["healthcare.dicomStores.export"])]) == []
    assert unlisted([custom_role(["iam.roles.create", "healthcare.dicomStores.export"])]) == [
        f"custom role projects/p-src/roles/{SNAPSHOT_ROLE_ID} holds {{healthcare.dicomStores."
        "export, iam.roles.create}; the program's custom role holds exactly "
        "{healthcare.dicomStores.export}"
    ]


def test_a_custom_role_whose_permissions_cannot_be_read_is_refused() -> None:
    assert unlisted([custom_role(None)]) == [
        f"custom role projects/p-src/roles/{SNAPSHOT_ROLE_ID} has no readable permission list"
    ]
    # Unknown until the update: judged when known.
    assert unlisted([custom_role(UNKNOWN_VALUE)]) == []


def test_an_organization_custom_role_is_named_by_its_organization() -> None:
    role = custom_role(
        ["healthcare.dicomStores.export"], "auditor", kind="organizations", orgId="123"
    )
    assert unlisted([role]) == [
        "custom role organizations/123/roles/auditor is not the nightly snapshot's role, the one "
        "custom role the program creates"
    ]


def test_with_a_grants_list_a_custom_role_is_judged_by_the_list() -> None:
    role = custom_role(["healthcare.dicomStores.export"], "exporter")
    listed = ListedGrant(
        "projects/p-src/roles/exporter",
        "serviceAccount:x@p-src.iam.gserviceaccount.com",
        "//healthcare.googleapis.com/projects/p-src/locations/l/datasets/d/dicomStores/s",
    )
    context = PolicyContext(listed_grants=frozenset({listed}))
    assert [f.message for f in evaluate([role], context) if f.rule == "DBQ019"] == []
    assert unlisted([role]) == [
        "custom role projects/p-src/roles/exporter is not the nightly snapshot's role, the one "
        "custom role the program creates"
    ]


# -- DBQ012: the agent's grants need the ServiceIdentity that makes the agent exist ----------

AGENT_FAILS = (
    ": the grant fails on a project where the Healthcare API was never used, and an agent of "
    "another project is not the source project's"
)


def identity_problems(resources: list[Resource]) -> list[str]:
    return [f.message for f in evaluate(resources, SOURCE) if f.rule == "DBQ012"]


def agent_grant(name: str = "g") -> Resource:
    return Resource(
        "gcp:projects/iAMMember:IAMMember",
        name,
        {"project": "p-bq", "role": "roles/bigquery.jobUser", "member": HEALTHCARE_AGENT},
    )


def service_identity(project: str) -> Resource:
    return Resource(
        "gcp:projects/serviceIdentity:ServiceIdentity",
        f"identity-{project}",
        {"project": project, "service": "healthcare.googleapis.com"},
    )


def test_an_agent_grant_without_a_service_identity_is_refused() -> None:
    someone = Resource(
        "gcp:projects/iAMMember:IAMMember",
        "other",
        {"project": "p-bq", "role": "roles/bigquery.jobUser", "member": "user:a@example.com"},
    )
    assert identity_problems([someone, agent_grant()]) == [
        f"grants to {HEALTHCARE_AGENT} but no ServiceIdentity forces the agent to exist"
        + AGENT_FAILS
    ]
    assert identity_problems([service_identity("p-src"), agent_grant()]) == []


def test_an_agent_grant_with_another_projects_service_identity_is_refused() -> None:
    assert identity_problems([service_identity("p-other"), agent_grant()]) == [
        f"grants to {HEALTHCARE_AGENT} but the ServiceIdentity names p-other, not the project of "
        "this agent (111122223333 or p-src)" + AGENT_FAILS
    ]


# -- DBQ014: the snapshot account holds its export-only role, of the source project, only -----

SNAPSHOT_MEMBER = "serviceAccount:dicom-bq-snapshot-0a1b2c3d@p-src.iam.gserviceaccount.com"


def snapshot_problems(resources: list[Resource], context: PolicyContext = SOURCE) -> list[str]:
    return [f.message for f in evaluate(resources, context) if f.rule == "DBQ014"]


def store_grant(role: str, member: str = SNAPSHOT_MEMBER, name: str = "g") -> Resource:
    return Resource(
        "gcp:healthcare/dicomStoreIamMember:DicomStoreIamMember",
        name,
        {
            "dicomStoreId": "projects/p-src/locations/l/datasets/d/dicomStores/s",
            "role": role,
            "member": member,
        },
    )


@pytest.mark.parametrize(
    "permissions",
    [["healthcare.dicomStores.export", "iam.roles.create"], "iam.roles.create"],
)
def test_a_snapshot_role_with_more_than_export_is_refused(permissions: Any) -> None:
    role = Resource(
        "gcp:projects/iAMCustomRole:IAMCustomRole",
        "role",
        {"project": "p-src", "roleId": SNAPSHOT_ROLE_ID, "permissions": permissions},
    )
    assert snapshot_problems([role]) == [
        "the snapshot role also grants iam.roles.create; it may hold only "
        "healthcare.dicomStores.export"
    ]


def test_the_snapshot_account_may_hold_only_a_listed_snapshot_role_of_the_source_project() -> None:
    ours = f"projects/p-src/roles/{SNAPSHOT_ROLE_ID}"
    other = "projects/p-src/roles/dicomBqSnapshotExport_99999999"
    listed = PolicyContext(
        source_project="p-src",
        snapshot_grants=frozenset({ExpectedGrant(ours, "//healthcare.googleapis.com/x")}),
    )
    someone = store_grant("roles/healthcare.dicomViewer", "user:a@example.com", "first")
    assert snapshot_problems([someone, store_grant(ours)], listed) == []
    assert snapshot_problems([someone, store_grant(other)], listed) == [
        f"gives the snapshot account {other}; it may hold only its export-only custom role"
    ]
    assert snapshot_problems([store_grant("roles/healthcare.dicomEditor")]) == [
        "gives the snapshot account roles/healthcare.dicomEditor; it may hold only its "
        "export-only custom role"
    ]


def test_a_snapshot_role_of_another_project_is_refused() -> None:
    foreign = f"projects/p-other/roles/{SNAPSHOT_ROLE_ID}"
    assert snapshot_problems([store_grant(foreign)]) == [
        f"gives the snapshot account {foreign}, a role of another project than the source "
        "project (p-src)"
    ]
    # Without the context's source project, the stack's own snapshot role names it...
    own_role = Resource(
        "gcp:projects/iAMCustomRole:IAMCustomRole",
        "role",
        {
            "project": "p-src",
            "roleId": SNAPSHOT_ROLE_ID,
            "permissions": ["healthcare.dicomStores.export"],
        },
    )
    assert snapshot_problems([own_role, store_grant(foreign)], PolicyContext()) == [
        f"gives the snapshot account {foreign}, a role of another project than the source "
        "project (p-src)"
    ]
    # ...and with neither, no project is the source project.
    assert snapshot_problems([store_grant(foreign)], PolicyContext()) == [
        f"gives the snapshot account {foreign}, a role of another project than the source "
        "project (unknown)"
    ]
    # The context's source project wins over the role's.
    stray_role = Resource(
        "gcp:projects/iAMCustomRole:IAMCustomRole",
        "role",
        {
            "project": "p-x",
            "roleId": SNAPSHOT_ROLE_ID,
            "permissions": ["healthcare.dicomStores.export"],
        },
    )
    ours = f"projects/p-src/roles/{SNAPSHOT_ROLE_ID}"
    assert snapshot_problems([stray_role, store_grant(ours)]) == []


# -- the wording of single findings: what a reviewer reads names the role, member and scope ----


def messages(rule: str, resources: list[Resource], context: PolicyContext = SOURCE) -> list[str]:
    return [f.message for f in evaluate(resources, context) if f.rule == rule]


def test_a_basic_role_and_the_dataset_owner_role_are_named_for_what_they_are() -> None:
    owner = grant(
        "gcp:projects/iAMMember:IAMMember", "roles/owner", "user:a@example.com", project="p"
    )
    data_owner = grant(
        "gcp:bigquery/datasetIamMember:DatasetIamMember",
        "roles/bigquery.dataOwner",
        "user:a@example.com",
        project="p-bq",
        datasetId="a",
    )
    assert messages("DBQ002", [owner]) == [
        f"grants the basic role roles/owner to user:a@example.com on {CRM}/p"
    ]
    assert messages("DBQ002", [data_owner]) == [
        "grants the dataset owner role roles/bigquery.dataOwner to user:a@example.com on "
        f"{BQ}/p-bq/datasets/a"
    ]


def test_required_cmek_names_each_dataset_without_a_key() -> None:
    healthcare = Resource("gcp:healthcare/dataset:Dataset", "hc", {"location": "us-central1"})
    keyed = Resource(
        "gcp:healthcare/dataset:Dataset",
        "hc-keyed",
        {"encryptionSpec": {"kmsKeyName": "projects/k/locations/l/keyRings/r/cryptoKeys/c"}},
    )
    context = PolicyContext(require_cmek=True)
    assert messages("DBQ011", [healthcare, keyed, dataset("a")], context) == [
        "the Healthcare dataset has no customer-managed key (encryptionSpec)",
        "the BigQuery dataset has no default customer-managed key",
    ]


def test_the_snapshot_account_is_granted_only_on_the_listed_stores() -> None:
    store = "//healthcare.googleapis.com/projects/p-src/locations/l/datasets/d/dicomStores/s"
    other = "//healthcare.googleapis.com/projects/p-src/locations/l/datasets/d/dicomStores/t"
    role = f"projects/p-src/roles/{SNAPSHOT_ROLE_ID}"
    someone = store_grant("roles/healthcare.dicomViewer", "user:a@example.com", "first")
    listed = PolicyContext(snapshot_grants=frozenset({ExpectedGrant(role, other)}))
    assert messages("DBQ015", [someone, store_grant(role)], listed) == [
        f"grants {role} to the snapshot account on {store}; the grants list names {other}"
    ]
    nothing = PolicyContext(snapshot_grants=frozenset())
    assert messages("DBQ015", [store_grant(role)], nothing) == [
        f"grants {role} to the snapshot account on {store}; the grants list names no store"
    ]
    assert messages("DBQ015", [store_grant(role)], PolicyContext()) == []


def test_top_level_bindings_and_a_policy_documents_are_both_read() -> None:
    policy = Resource(
        "gcp:projects/iAMPolicy:IAMPolicy",
        "p",
        {
            "project": "p",
            "bindings": [{"role": "roles/viewer", "members": ["user:a@example.com"]}],
            "policyData": json.dumps(
                {"bindings": [{"role": "roles/editor", "members": ["user:b@example.com"]}]}
            ),
        },
    )
    assert granted(policy) == {
        ("roles/viewer", "user:a@example.com"),
        ("roles/editor", "user:b@example.com"),
    }
    unreadable = Resource(
        "gcp:projects/iAMPolicy:IAMPolicy",
        "p",
        {
            "project": "p",
            "bindings": [{"role": "roles/viewer", "members": ["user:a@example.com"]}],
            "policyData": "{not json",
        },
    )
    assert granted(unreadable) == {("roles/viewer", "user:a@example.com")}


@pytest.mark.parametrize(
    ("member", "canonical"),
    [
        # principal:// identifiers are case-sensitive, colons and all.
        (
            "principal://iam.googleapis.com/locations/global/workforcePools/p/subject/Alice",
            "principal://iam.googleapis.com/locations/global/workforcePools/p/subject/Alice",
        ),
        # A type IAM does not know keeps its spelling; its value compares lowercased.
        ("Custom:Value", "Custom:value"),
        ("USER:Alice@Example.com", "user:alice@example.com"),
        # A workload identity's subject may hold colons (GitHub's repo:OWNER/REPO:ref:...): the
        # type is what comes before the first one, and the subject keeps its case.
        (
            "principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/gh/"
            "subject/repo:Org/Repo:ref:refs/heads/Main",
            "principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/gh/"
            "subject/repo:Org/Repo:ref:refs/heads/Main",
        ),
    ],
)
def test_members_compare_the_way_iam_compares_them(member: str, canonical: str) -> None:
    assert canonical_member(member) == canonical


# -- where each kind of grant lands: the scope every rule compares -------------------------------

ORG = "//cloudresourcemanager.googleapis.com/organizations/123"
PUBSUB = "//pubsub.googleapis.com/projects"


@pytest.mark.parametrize(
    ("resource_type", "props", "scope"),
    [
        # An organization, by its number or its full name.
        ("gcp:organizations/iAMMember:IAMMember", {"orgId": "123"}, ORG),
        ("gcp:organizations/iAMMember:IAMMember", {"orgId": "organizations/123"}, ORG),
        # A table: pulumi-gcp's tableId takes the table's ID or its full name.
        (
            "gcp:bigquery/iamMember:IamMember",
            {"project": "p", "datasetId": "d", "tableId": "t"},
            f"{BQ}/p/datasets/d/tables/t",
        ),
        (
            "gcp:bigquery/iamMember:IamMember",
            {"project": "p", "datasetId": "d", "tableId": "projects/p/datasets/d/tables/t"},
            f"{BQ}/p/datasets/d/tables/t",
        ),
        # An object and a managed folder: inside their bucket, not the bucket itself.
        (
            "gcp:storage/objectAccessControl:ObjectAccessControl",
            {"bucket": "b", "object": "o"},
            f"{BUCKET}/objects/o",
        ),
        (
            "gcp:storage/managedFolderIamMember:ManagedFolderIamMember",
            {"bucket": "b", "managedFolder": "f/"},
            f"{BUCKET}/managedFolders/f/",
        ),
        # A subscription, by its ID in a project or its full name.
        (
            "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember",
            {"project": "p", "subscription": "s"},
            f"{PUBSUB}/p/subscriptions/s",
        ),
        (
            "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember",
            {"project": "p", "subscription": "projects/p/subscriptions/s"},
            f"{PUBSUB}/p/subscriptions/s",
        ),
        # A type no scope kind knows: named by its type and the resource's name.
        (
            "gcp:compute/instanceIAMMember:InstanceIAMMember",
            {"instanceName": "i"},
            "//instanceiammember/g",
        ),
    ],
)
def test_each_kind_of_grant_is_on_its_full_resource_name(
    resource_type: str, props: dict[str, Any], scope: str
) -> None:
    assert scope_of(grant(resource_type, "roles/viewer", "user:a@example.com", **props)) == scope


def test_an_acl_role_outside_googles_table_is_kept_as_written() -> None:
    """Objects have READER and OWNER only: a WRITER entry stays WRITER, a role no list names."""
    resource = storage(
        "objectACL:ObjectACL", object="o", roleEntities=["WRITER:user-a@example.com"]
    )
    assert granted(resource) == {("WRITER", "user:a@example.com")}


def test_a_datasets_access_list_names_its_project_and_skips_what_is_not_an_entry() -> None:
    """projectOwners is the dataset's own project's owners; an entry not known until the update
    (a string in the list) grants no one yet."""
    bq = Resource(
        "gcp:bigquery/dataset:Dataset",
        "bq",
        {
            "project": "p-bq",
            "datasetId": "a",
            "accesses": [UNKNOWN_VALUE, {"role": "OWNER", "specialGroup": "projectOwners"}],
        },
    )
    assert granted(bq) == {("roles/bigquery.dataOwner", "projectOwner:p-bq")}


def test_the_offline_stand_in_for_a_project_number_is_a_number() -> None:
    agent = (
        "serviceAccount:service-PROJECT_NUMBER_OF_p-src@gcp-sa-healthcare.iam.gserviceaccount.com"
    )
    assert resolved(agent) == "serviceAccount:service-0@gcp-sa-healthcare.iam.gserviceaccount.com"


def test_a_type_that_is_no_type_token_is_refused_not_crashed_on() -> None:
    assert refusal("mycomponent").startswith("is a resource of package mycomponent (mycomponent)")


# -- the wording and reach of the single-purpose rules -----------------------------------------


def test_a_datasets_access_list_and_an_iam_policy_are_refused_each_for_what_it_replaces() -> None:
    with_accesses = Resource(
        "gcp:bigquery/dataset:Dataset",
        "bq",
        {
            "project": "p-bq",
            "datasetId": "a",
            "deleteContentsOnDestroy": False,
            "accesses": [{"role": "WRITER", "userByEmail": "a@example.com"}],
        },
    )
    policy = Resource("gcp:projects/iAMPolicy:IAMPolicy", "policy", {"project": "p"})
    assert messages("DBQ001", [with_accesses, policy]) == [
        "the dataset's `accesses` list replaces every other access entry on the dataset",
        "gcp:projects/iAMPolicy:IAMPolicy replaces every other grant on its resource",
    ]


@pytest.mark.parametrize("role", ["roles/storage.objectAdmin", "roles/bigquery.admin"])
def test_the_agent_gets_no_admin_role_whatever_its_case(role: str) -> None:
    admin = grant("gcp:storage/bucketIAMMember:BucketIAMMember", role, HEALTHCARE_AGENT, bucket="b")
    assert messages("DBQ004", [admin]) == [f"gives the Healthcare agent {role} on {BUCKET}"]


DATA_EDITOR = "roles/bigquery.dataEditor"


def test_the_agents_data_editor_on_a_whole_project_is_refused_without_a_grants_list() -> None:
    def on_project(role: str) -> Resource:
        return grant("gcp:projects/iAMMember:IAMMember", role, HEALTHCARE_AGENT, project="p-bq")

    assert messages("DBQ006", [on_project(DATA_EDITOR)], PolicyContext()) == [
        f"grants roles/bigquery.dataEditor on the whole project {CRM}/p-bq"
    ]
    assert messages("DBQ006", [on_project("roles/bigquery.jobUser")], PolicyContext()) == []


def test_a_grant_off_the_listed_scopes_names_every_listed_one() -> None:
    listed = PolicyContext(
        expected_grants=frozenset(
            {
                ExpectedGrant(DATA_EDITOR, f"{BQ}/p-bq/datasets/a"),
                ExpectedGrant(DATA_EDITOR, f"{BQ}/p-bq/datasets/b"),
            }
        )
    )
    editor = grant(
        "gcp:bigquery/datasetIamMember:DatasetIamMember",
        DATA_EDITOR,
        HEALTHCARE_AGENT,
        project="p-bq",
        datasetId="c",
    )
    assert messages("DBQ006", [editor], listed) == [
        f"grants roles/bigquery.dataEditor on {BQ}/p-bq/datasets/c; the grants list says "
        f"{BQ}/p-bq/datasets/a, {BQ}/p-bq/datasets/b"
    ]


def test_a_dataset_that_drops_its_tables_on_destroy_is_refused() -> None:
    dropping = Resource("gcp:bigquery/dataset:Dataset", "bq", {"project": "p-bq", "datasetId": "a"})
    assert messages("DBQ009", [dropping]) == [
        "deleteContentsOnDestroy is not false: destroying the stack would drop exported PHI"
    ]


def test_a_dataset_without_a_location_is_in_bigquerys_default_us() -> None:
    unplaced = Resource(
        "gcp:bigquery/dataset:Dataset",
        "bq",
        {"project": "p-bq", "datasetId": "a", "deleteContentsOnDestroy": False},
    )
    us_only = PolicyContext(allowed_bigquery_locations=frozenset({"US"}))
    assert messages("DBQ010", [unplaced], us_only) == []
    eu_only = PolicyContext(allowed_bigquery_locations=frozenset({"EU"}))
    assert messages("DBQ010", [unplaced], eu_only) == [
        "BigQuery location US is not in the allow-list ['EU']"
    ]


def test_an_api_disabled_on_destroy_is_named() -> None:
    service = Resource(
        "gcp:projects/service:Service",
        "api",
        {"project": "p", "service": "healthcare.googleapis.com"},
    )
    assert messages("DBQ013", [service]) == [
        "destroying the stack would disable healthcare.googleapis.com for everyone"
    ]


# -- DBQ012: every agent grant is judged, against every ServiceIdentity ---------------------------


def test_each_agent_grant_is_judged_after_one_that_passes() -> None:
    foreign = "serviceAccount:service-999@gcp-sa-healthcare.iam.gserviceaccount.com"
    other = grant(
        "gcp:projects/iAMMember:IAMMember", "roles/bigquery.jobUser", foreign, project="p-bq"
    )
    assert identity_problems([service_identity("p-src"), agent_grant(), other]) == [
        f"grants to {foreign} but the ServiceIdentity names p-src, not the project of this agent "
        "(999)" + AGENT_FAILS
    ]


def test_a_refusal_names_every_service_identitys_project() -> None:
    identities = [service_identity("p-a"), service_identity("p-b")]
    assert identity_problems([*identities, agent_grant()]) == [
        f"grants to {HEALTHCARE_AGENT} but the ServiceIdentity names p-a, p-b, not the project "
        "of this agent (111122223333 or p-src)" + AGENT_FAILS
    ]


def test_without_a_source_project_the_healthcare_datasets_project_is_the_agents() -> None:
    def problems(resources: list[Resource]) -> list[str]:
        return [f.message for f in evaluate(resources, PolicyContext()) if f.rule == "DBQ012"]

    placed = Resource("gcp:healthcare/dataset:Dataset", "hc", {"project": "p-src"})
    assert problems([placed, service_identity("p-src"), agent_grant()]) == []
    # A dataset in the provider's default project names none.
    unplaced = Resource("gcp:healthcare/dataset:Dataset", "hc", {"location": "l"})
    assert problems([unplaced, service_identity("p-other"), agent_grant()]) == [
        f"grants to {HEALTHCARE_AGENT} but the ServiceIdentity names p-other, not the project of "
        "this agent (111122223333)" + AGENT_FAILS
    ]


def test_only_a_healthcare_agent_address_needs_a_service_identity() -> None:
    """A look-alike is no agent: DBQ019 refuses it as a principal the program never grants to."""
    look_alike = "serviceAccount:service-999@gcp-sa-healthcare.iam.gserviceaccount.com/x"
    lookalike_grant = grant(
        "gcp:projects/iAMMember:IAMMember", "roles/bigquery.jobUser", look_alike, project="p-bq"
    )
    assert identity_problems([lookalike_grant]) == []
    (refused,) = unlisted([lookalike_grant])
    assert refused.startswith(f"grants roles/bigquery.jobUser to {look_alike} on {CRM}/p-bq: ")


# -- DBQ014-DBQ017: the snapshot account and Cloud Scheduler's agent -------------------------------


def test_the_snapshot_role_refusal_names_every_extra_permission(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    role = custom_role(["healthcare.dicomStores.export", "iam.roles.create", "iam.roles.delete"])
    assert snapshot_problems([role]) == [
        "the snapshot role also grants iam.roles.create, iam.roles.delete; it may hold only "
        "healthcare.dicomStores.export"
    ]
    # Every permission the role may hold is named, should the program need more than one.
    two = ("healthcare.dicomStores.export", "healthcare.dicomStores.get")
    monkeypatch.setattr("dicom_bq.infra.grants.SNAPSHOT_PERMISSIONS", two)
    assert snapshot_problems([role]) == [
        "the snapshot role also grants iam.roles.create, iam.roles.delete; it may hold only "
        "healthcare.dicomStores.export, healthcare.dicomStores.get"
    ]


def test_without_a_source_project_every_snapshot_roles_project_is_named() -> None:
    roles = [
        custom_role(["healthcare.dicomStores.export"], project="p-a"),
        custom_role(["healthcare.dicomStores.export"], project="p-b"),
    ]
    foreign = f"projects/p-c/roles/{SNAPSHOT_ROLE_ID}"
    assert snapshot_problems([*roles, store_grant(foreign)], PolicyContext()) == [
        f"gives the snapshot account {foreign}, a role of another project than the source "
        "project (p-a, p-b)"
    ]


def test_a_snapshot_grant_off_the_listed_stores_names_them_all() -> None:
    stores = "//healthcare.googleapis.com/projects/p-src/locations/l/datasets/d/dicomStores"
    role = f"projects/p-src/roles/{SNAPSHOT_ROLE_ID}"
    listed = PolicyContext(
        snapshot_grants=frozenset(
            {ExpectedGrant(role, f"{stores}/t"), ExpectedGrant(role, f"{stores}/u")}
        )
    )
    assert messages("DBQ015", [store_grant(role)], listed) == [
        f"grants {role} to the snapshot account on {stores}/s; the grants list names "
        f"{stores}/t, {stores}/u"
    ]


SCHEDULER_AGENT = (
    "serviceAccount:service-111122223333@gcp-sa-cloudscheduler.iam.gserviceaccount.com"
)
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
SNAPSHOT_EMAIL = "dicom-bq-snapshot-0a1b2c3d@p-src.iam.gserviceaccount.com"
ACCOUNTS = "//iam.googleapis.com/projects/p-src/serviceAccounts"


def on_account(member: str, email: str = SNAPSHOT_EMAIL, role: str = TOKEN_CREATOR) -> Resource:
    return Resource(
        "gcp:serviceaccount/iAMMember:IAMMember",
        "sa-grant",
        {
            "serviceAccountId": f"projects/p-src/serviceAccounts/{email}",
            "role": role,
            "member": member,
        },
    )


def test_cloud_schedulers_agent_mints_tokens_only_for_the_snapshot_account() -> None:
    someone = store_grant("roles/healthcare.dicomViewer", "user:a@example.com", "first")
    other = "other@p-src.iam.gserviceaccount.com"
    assert messages("DBQ016", [someone, on_account(SCHEDULER_AGENT, other)]) == [
        f"grants {TOKEN_CREATOR} to Cloud Scheduler's service agent on {ACCOUNTS}/{other}, which "
        "is not the nightly snapshot's service account"
    ]
    assert messages("DBQ016", [someone, on_account(SCHEDULER_AGENT)]) == []
    foreign = "serviceAccount:service-999@gcp-sa-cloudscheduler.iam.gserviceaccount.com"
    assert messages("DBQ016", [on_account(foreign)]) == [
        f"lets another project's Cloud Scheduler agent ({foreign}) mint the snapshot account's "
        "tokens"
    ]


def test_an_impersonation_role_reaching_the_snapshot_account_is_refused() -> None:
    account = Resource(
        "gcp:serviceaccount/account:Account",
        "sa",
        {"project": "p-src", "accountId": "dicom-bq-snapshot-0a1b2c3d"},
    )
    user = grant(
        "gcp:projects/iAMMember:IAMMember",
        "roles/iam.serviceAccountUser",
        "user:a@example.com",
        project="p-src",
    )
    # After the scheduler's own grant on the account, which passes, the rule goes on.
    assert messages("DBQ017", [account, on_account(SCHEDULER_AGENT), user]) == [
        f"gives user:a@example.com roles/iam.serviceAccountUser on {CRM}/p-src, which reaches "
        "the snapshot account: it could act as it"
    ]


# -- DBQ018: what the engine and the program register is allowed; a second singleton is not -------


def test_the_engines_resources_and_the_programs_components_and_providers_are_allowed() -> None:
    resources = [
        Resource("pulumi:pulumi:Stack", "stack", {}),
        Resource("pulumi:providers:gcp", "default", {}),
        *(Resource(t, t, {}) for t in sorted(program_allowlist().component_types)),
    ]
    assert messages("DBQ018", resources) == []


def test_a_second_bigquery_dataset_is_refused_naming_the_first() -> None:
    assert messages("DBQ018", [dataset("a"), dataset("b")]) == [
        "is a second gcp:bigquery/dataset:Dataset (besides a): the program creates one per "
        "stack, and the rules follow that one"
    ]


# -- DBQ019: what a refusal says, and what is judged when known ----------------------------------


def test_an_authorized_view_is_refused_by_the_grants_rule_too() -> None:
    view = dataset_access(view={"projectId": "p", "datasetId": "d", "tableId": "v"})
    assert messages("DBQ019", [view]) == [
        f"authorizes the view p.d.v to read dataset {BQ}/p-bq/datasets/ds: anyone who may query "
        "it reads the dataset's tables through it (an authorized view, routine or dataset), and "
        "no grant of the program is one"
    ]


def test_an_iam_member_without_a_readable_member_is_refused() -> None:
    unreadable = Resource(
        "gcp:projects/iAMMember:IAMMember", "g", {"project": "p", "role": "roles/viewer"}
    )
    assert messages("DBQ019", [unreadable]) == [
        "gcp:projects/iAMMember:IAMMember without a readable role and member: its grant cannot "
        "be checked"
    ]


def test_an_unlisted_grant_names_what_the_list_holds_for_its_member() -> None:
    listed = PolicyContext(
        listed_grants=frozenset(
            {
                ListedGrant(DATA_EDITOR, HEALTHCARE_AGENT, f"{BQ}/p-bq/datasets/a"),
                ListedGrant("roles/bigquery.jobUser", HEALTHCARE_AGENT, f"{CRM}/p-bq"),
                ListedGrant("roles/pubsub.publisher", "user:b@example.com", f"{PUBSUB}/p/topics/t"),
            }
        )
    )

    def editor(member: str, dataset_id: str) -> Resource:
        return grant(
            "gcp:bigquery/datasetIamMember:DatasetIamMember",
            DATA_EDITOR,
            member,
            project="p-bq",
            datasetId=dataset_id,
        )

    assert messages("DBQ019", [editor(HEALTHCARE_AGENT, "b")], listed) == [
        f"grants roles/bigquery.dataEditor to {HEALTHCARE_AGENT} on {BQ}/p-bq/datasets/b, which "
        f"the grants list does not name (it lists for {HEALTHCARE_AGENT}: roles/bigquery."
        f"dataEditor on {BQ}/p-bq/datasets/a; roles/bigquery.jobUser on {CRM}/p-bq)"
    ]
    assert messages("DBQ019", [editor("user:eve@example.com", "a")], listed) == [
        f"grants roles/bigquery.dataEditor to user:eve@example.com on {BQ}/p-bq/datasets/a, "
        "which the grants list does not name"
    ]
    # A role not known until the update matches the listed grant of that member and scope.
    unknown_role = grant(
        "gcp:bigquery/datasetIamMember:DatasetIamMember",
        UNKNOWN_VALUE,
        HEALTHCARE_AGENT,
        project="p-bq",
        datasetId="a",
    )
    assert messages("DBQ019", [unknown_role], listed) == []


def test_a_custom_role_is_judged_on_what_is_known_of_it() -> None:
    # Its ID not known yet: its name is judged when known, its permissions now.
    assert unlisted([custom_role(["healthcare.dicomStores.export"], UNKNOWN_VALUE)]) == []
    # A permission not known yet: those known must fit the program's set, the rest is judged
    # when known.
    assert unlisted([custom_role(["healthcare.dicomStores.export", UNKNOWN_VALUE])]) == []
    assert unlisted([custom_role(["iam.roles.create", UNKNOWN_VALUE])]) == [
        f"custom role projects/p-src/roles/{SNAPSHOT_ROLE_ID} holds {{iam.roles.create}} and "
        "permissions known only after creation; the program's custom role holds exactly "
        "{healthcare.dicomStores.export}"
    ]


def test_a_custom_role_refusal_names_every_permission_set_the_program_allows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should the program create more custom roles, or none, the refusal says so."""
    real = program_allowlist()
    two = dataclasses.replace(
        real,
        custom_role_permissions=frozenset(
            {frozenset({"a.b.get", "a.b.list"}), frozenset({"healthcare.dicomStores.export"})}
        ),
    )
    monkeypatch.setattr(policy_rules, "program_allowlist", lambda: two)
    role = custom_role(["iam.roles.create"])
    head = (
        f"custom role projects/p-src/roles/{SNAPSHOT_ROLE_ID} holds {{iam.roles.create}}; the "
        "program's custom role holds exactly "
    )
    # In the same order on every run: a reviewer compares runs.
    assert unlisted([role]) == [head + "{a.b.get, a.b.list} or {healthcare.dicomStores.export}"]
    none = dataclasses.replace(real, custom_role_permissions=frozenset())
    monkeypatch.setattr(policy_rules, "program_allowlist", lambda: none)
    assert unlisted([role]) == [head + "nothing"]


def test_a_member_unknown_in_part_is_judged_on_role_and_scope_alone() -> None:
    """A snapshot account of a project not known yet: its address is not judged until known."""
    partly = f"serviceAccount:dicom-bq-snapshot-0a1b2c3d@{UNKNOWN_VALUE}.iam.gserviceaccount.com"
    editor = grant(
        "gcp:bigquery/datasetIamMember:DatasetIamMember",
        DATA_EDITOR,
        partly,
        project="p-bq",
        datasetId="a",
    )
    assert unlisted([dataset("a"), editor]) == []


def test_an_unknown_member_with_a_role_the_program_never_grants_is_refused() -> None:
    owner = grant(
        "gcp:bigquery/datasetIamMember:DatasetIamMember",
        "roles/bigquery.dataOwner",
        UNKNOWN_VALUE,
        project="p-bq",
        datasetId="a",
    )
    assert unlisted([dataset("a"), owner]) == [
        f"grants roles/bigquery.dataOwner to {UNKNOWN_VALUE} on {BQ}/p-bq/datasets/a; the program "
        "grants no one roles/bigquery.dataOwner on a bigquery_dataset"
    ]


def test_a_principal_the_program_grants_nothing_is_told_so(monkeypatch: pytest.MonkeyPatch) -> None:
    real = program_allowlist()
    no_agent = dataclasses.replace(
        real, grants=frozenset(g for g in real.grants if g[0] != "agent")
    )
    monkeypatch.setattr(policy_rules, "program_allowlist", lambda: no_agent)
    job_user = grant(
        "gcp:projects/iAMMember:IAMMember",
        "roles/bigquery.jobUser",
        HEALTHCARE_AGENT,
        project="p-bq",
    )
    assert unlisted([job_user]) == [
        f"grants roles/bigquery.jobUser to the Healthcare service agent on {CRM}/p-bq; the "
        "program grants the Healthcare service agent nothing"
    ]


def test_a_store_not_known_yet_hides_which_stores_the_stack_creates() -> None:
    unnamed = Resource(
        "gcp:healthcare/dicomStore:DicomStore",
        "store",
        {"dataset": "projects/p-src/locations/l/datasets/d", "name": UNKNOWN_VALUE},
    )
    export = grant(
        "gcp:healthcare/dicomStoreIamMember:DicomStoreIamMember",
        f"projects/p-src/roles/{SNAPSHOT_ROLE_ID}",
        SNAPSHOT_MEMBER,
        dicomStoreId="projects/p-src/locations/l/datasets/d/dicomStores/s2",
    )
    assert unlisted([unnamed, export]) == []


# -- DBQ020: streams and notifications of a store, and a job's target ----------------------------

TOPIC = "projects/p-src/topics/t"


def dicom_store(**props: Any) -> Resource:
    return Resource(
        "gcp:healthcare/dicomStore:DicomStore",
        "store",
        {"dataset": "projects/p-src/locations/l/datasets/d", "name": "s", **props},
    )


def stream(table_uri: str) -> dict[str, Any]:
    return {"bigqueryDestination": {"tableUri": table_uri}}


def store_problems(resources: list[Resource], context: PolicyContext = SOURCE) -> list[str]:
    return [
        f.message
        for f in evaluate(resources, context)
        if f.rule == "DBQ020" and f.resource == "store"
    ]


def topic_grant(role: str) -> Resource:
    return Resource(
        "gcp:pubsub/topicIAMMember:TopicIAMMember",
        "pub",
        {"project": "p-src", "topic": "t", "role": role, "member": HEALTHCARE_AGENT},
    )


def test_a_store_notifies_only_a_topic_the_agent_may_publish_to() -> None:
    store = dicom_store(notificationConfig={"pubsubTopic": TOPIC})
    assert store_problems([store, topic_grant("roles/pubsub.publisher")]) == []
    # Another role of the agent on the topic is no publishing.
    assert store_problems([store, topic_grant("roles/pubsub.viewer")]) == [
        f"notifies {TOPIC}, a topic the stack does not let the agent publish to"
    ]
    # With a grants list, the list says which topics.
    listed = PolicyContext(
        listed_grants=frozenset(
            {
                ListedGrant(
                    "roles/pubsub.publisher", HEALTHCARE_AGENT, f"//pubsub.googleapis.com/{TOPIC}"
                )
            }
        )
    )
    assert store_problems([store], listed) == []
    other = dicom_store(notificationConfig={"pubsubTopic": "projects/p-src/topics/u"})
    assert store_problems([other], listed) == [
        "notifies projects/p-src/topics/u, a topic the grants list does not let the agent "
        "publish to"
    ]
    # A topic not known yet is judged when known.
    assert store_problems([dicom_store(notificationConfig={"pubsubTopic": UNKNOWN_VALUE})]) == []


HOLD = ": PHI would reach a table the stack does not hold"


def test_a_store_streams_only_into_the_stacks_dataset() -> None:
    def streaming(table_uri: str) -> Resource:
        return dicom_store(streamConfigs=[stream(table_uri)])

    assert store_problems([dataset("a"), streaming("bq://p-bq.a.t")]) == []
    assert store_problems([dataset("a"), streaming(UNKNOWN_VALUE)]) == []
    assert store_problems([dataset("a"), streaming("gs://bucket/t")]) == [
        "streams every instance's metadata into gs://bucket/t is not a bq://PROJECT.DATASET.TABLE "
        "table" + HOLD
    ]
    assert store_problems([dataset("a"), dataset("b"), streaming("bq://p-bq.a.t")]) == [
        "streams every instance's metadata into bq://p-bq.a.t, while the stack creates 2 BigQuery "
        f"datasets ({BQ}/p-bq/datasets/a, {BQ}/p-bq/datasets/b) where the program creates one"
        + HOLD
    ]
    # With a grants list and no dataset of its own: a dataset the list lets the agent write.
    listed = PolicyContext(
        listed_grants=frozenset(
            {
                ListedGrant(DATA_EDITOR, HEALTHCARE_AGENT, f"{BQ}/p-bq/datasets/a"),
                ListedGrant("roles/bigquery.dataViewer", HEALTHCARE_AGENT, f"{BQ}/p-bq/datasets/b"),
            }
        )
    )
    assert store_problems([streaming("bq://p-bq.a.t")], listed) == []
    assert store_problems([streaming("bq://p-bq.b.t")], listed) == [
        "streams every instance's metadata into bq://p-bq.b.t is in no dataset the grants list "
        "lets the Healthcare agent write" + HOLD
    ]


def test_a_job_calls_only_the_export_of_a_store() -> None:
    assert job_problems(httpTarget=http_target(uri="https://example.com/hook")) == [
        "calls https://example.com/hook, not dicomStores.export on one of the stack's DICOM stores"
    ]
    # A URI or a body not known yet is judged when known.
    assert job_problems(httpTarget=http_target(uri=UNKNOWN_VALUE)) == []
    assert job_problems(httpTarget=http_target(body=UNKNOWN_VALUE)) == []
    assert job_problems(httpTarget=http_target(body="not base64!")) == [
        "has a body that is not base64 JSON: the export it asks for cannot be checked"
    ]


def test_a_member_and_scope_unknown_with_a_role_the_program_never_grants_says_any_scope() -> None:
    owner = grant(
        "gcp:bigquery/datasetIamMember:DatasetIamMember",
        "roles/bigquery.dataOwner",
        UNKNOWN_VALUE,
        project="p-bq",
        datasetId=UNKNOWN_VALUE,
    )
    (refused,) = unlisted([owner])
    assert refused.endswith("; the program grants no one roles/bigquery.dataOwner on any scope")


def test_a_member_unknown_on_a_scope_of_no_described_kind_is_told_so() -> None:
    on_subscription = grant(
        "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember",
        UNKNOWN_VALUE,
        UNKNOWN_VALUE,
        project="p",
        subscription="s",
    )
    assert unlisted([on_subscription]) == [
        f"grants {UNKNOWN_VALUE} to {UNKNOWN_VALUE} on {PUBSUB}/p/subscriptions/s; the program "
        "grants nothing on a scope of this kind"
    ]


def test_a_custom_role_partly_unknown_is_refused_when_the_program_makes_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    none = dataclasses.replace(program_allowlist(), custom_role_permissions=frozenset())
    monkeypatch.setattr(policy_rules, "program_allowlist", lambda: none)
    assert unlisted([custom_role(["iam.roles.create", UNKNOWN_VALUE])]) == [
        f"custom role projects/p-src/roles/{SNAPSHOT_ROLE_ID} holds {{iam.roles.create}} and "
        "permissions known only after creation; the program's custom role holds exactly nothing"
    ]


def test_a_job_body_with_a_character_outside_base64_is_refused_not_skipped() -> None:
    """Scheduler's body is bytes, base64 in JSON: a character outside the alphabet is not
    dropped quietly before the export it asks for is checked."""
    import base64

    request = {"gcsDestination": {"uriPrefix": "gs://elsewhere/"}}
    body = base64.b64encode(json.dumps(request).encode()).decode()
    assert job_problems(httpTarget=http_target(body=body[:4] + "!" + body[4:])) == [
        "has a body that is not base64 JSON: the export it asks for cannot be checked"
    ]
