"""What the deployer's `pulumi up` needs, written from Google's pages, one row per resource type.

An oracle for preflight's tests that owes nothing to `flows/preflight.py` or `vocabulary/scopes.py`:
each row names the permissions Google documents for the create or the IAM change the resource
makes, the resource they are tested on (read from the resource's own inputs, pulumi-gcp's
argument names), and the page that says so. `expected_permissions(plan)` walks a plan with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dicom_bq.stack.plan import Plan

Inputs = Mapping[str, Any]


@dataclass(frozen=True)
class Row:
    permissions: tuple[str, ...]
    tested_on: Callable[[Inputs], str]  # the resource's full name (//service/...)
    source: str


def _project(project: Any) -> str:
    return f"//cloudresourcemanager.googleapis.com/projects/{project}"


def _on_project(inputs: Inputs) -> str:
    return _project(inputs["project"])


def _dataset_project(inputs: Inputs) -> str:
    # A DICOM store's `dataset` input is the Healthcare dataset's id, projects/P/locations/L/...
    return _project(str(inputs["dataset"]).split("/")[1])


def _iam_policy(service: str) -> tuple[str, str]:
    # pulumi-gcp's *IamMember reads the policy and writes it back with the member added
    # (terraform-provider-google, iam.go iamPolicyReadModifyWrite): get + set on the scope.
    return (f"{service}.getIamPolicy", f"{service}.setIamPolicy")


# Creates, tested on the project the resource is created in.
CREATES: dict[str, Row] = {
    "gcp:healthcare/dataset:Dataset": Row(
        ("healthcare.datasets.create",),
        _on_project,
        "https://cloud.google.com/healthcare-api/docs/access-control "
        "(projects.locations.datasets.create: healthcare.datasets.create on the parent project)",
    ),
    "gcp:healthcare/dicomStore:DicomStore": Row(
        ("healthcare.dicomStores.create",),
        _dataset_project,
        "https://cloud.google.com/healthcare-api/docs/access-control "
        "(projects.locations.datasets.dicomStores.create: healthcare.dicomStores.create)",
    ),
    "gcp:bigquery/dataset:Dataset": Row(
        ("bigquery.datasets.create",),
        _on_project,
        "https://cloud.google.com/bigquery/docs/datasets#required_permissions "
        "(bigquery.datasets.create on the project)",
    ),
    "gcp:serviceaccount/account:Account": Row(
        ("iam.serviceAccounts.create",),
        _on_project,
        "https://cloud.google.com/iam/docs/service-accounts-create#permissions "
        "(iam.serviceAccounts.create)",
    ),
    "gcp:projects/iAMCustomRole:IAMCustomRole": Row(
        ("iam.roles.create",),
        _on_project,
        "https://cloud.google.com/iam/docs/creating-custom-roles#required-roles "
        "(iam.roles.create on the project)",
    ),
    "gcp:cloudscheduler/job:Job": Row(
        ("cloudscheduler.jobs.create",),
        _on_project,
        "https://cloud.google.com/scheduler/docs/reference/rest/v1/projects.locations.jobs/create "
        "(IAM permission cloudscheduler.jobs.create on the parent)",
    ),
    "gcp:logging/metric:Metric": Row(
        ("logging.logMetrics.create",),
        _on_project,
        "https://cloud.google.com/logging/docs/reference/v2/rest/v2/projects.metrics/create "
        "(IAM permission logging.logMetrics.create on the parent)",
    ),
    "gcp:monitoring/alertPolicy:AlertPolicy": Row(
        ("monitoring.alertPolicies.create",),
        _on_project,
        "https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.alertPolicies/create "
        "(IAM permission monitoring.alertPolicies.create on the project)",
    ),
    "gcp:monitoring/notificationChannel:NotificationChannel": Row(
        ("monitoring.notificationChannels.create",),
        _on_project,
        "https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.notificationChannels/"
        "create (IAM permission monitoring.notificationChannels.create on the project)",
    ),
}

# A Cloud Scheduler job that calls with an OAuth token acts as a service account.
ACT_AS = Row(
    ("iam.serviceAccounts.actAs",),
    _on_project,
    "cloudscheduler v1 discovery document, OAuthToken.serviceAccountEmail: the caller must have "
    "iam.serviceAccounts.actAs permission for the service account (the account is new, so the "
    "project is where it can be tested before the first up)",
)

# Grants: get and set of the scope's policy, tested on the scope.
GRANTS: dict[str, Row] = {
    "gcp:projects/iAMMember:IAMMember": Row(
        _iam_policy("resourcemanager.projects"),
        _on_project,
        "https://cloud.google.com/iam/docs/granting-changing-revoking-access#required-permissions "
        "(resourcemanager.projects.getIamPolicy, setIamPolicy)",
    ),
    "gcp:storage/bucketIAMMember:BucketIAMMember": Row(
        _iam_policy("storage.buckets"),
        lambda inputs: f"//storage.googleapis.com/projects/_/buckets/{inputs['bucket']}",
        "https://cloud.google.com/storage/docs/access-control/iam-permissions "
        "(buckets.getIamPolicy / setIamPolicy: storage.buckets.getIamPolicy, setIamPolicy)",
    ),
    "gcp:pubsub/topicIAMMember:TopicIAMMember": Row(
        _iam_policy("pubsub.topics"),
        lambda inputs: f"//pubsub.googleapis.com/{inputs['topic']}",
        "https://cloud.google.com/pubsub/docs/access-control#permissions "
        "(pubsub.topics.getIamPolicy, pubsub.topics.setIamPolicy)",
    ),
    "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember": Row(
        _iam_policy("cloudkms.cryptoKeys"),
        lambda inputs: f"//cloudkms.googleapis.com/{inputs['cryptoKeyId']}",
        "https://cloud.google.com/kms/docs/reference/permissions-and-roles "
        "(cloudkms.cryptoKeys.getIamPolicy, cloudkms.cryptoKeys.setIamPolicy)",
    ),
    "gcp:healthcare/dicomStoreIamMember:DicomStoreIamMember": Row(
        _iam_policy("healthcare.dicomStores"),
        # The store is created by the same `pulumi up` (testIamPermissions on it would answer
        # 404), so the test is on the project it inherits from (https://cloud.google.com/iam/
        # docs/resource-hierarchy-access-control). dicomStoreId: {project}/{location}/{dataset}/
        # {store} (pulumi-gcp DicomStoreIamMember docs).
        lambda inputs: _project(str(inputs["dicomStoreId"]).split("/")[0]),
        "https://cloud.google.com/healthcare-api/docs/access-control "
        "(dicomStores.getIamPolicy / setIamPolicy: healthcare.dicomStores.getIamPolicy, "
        "setIamPolicy)",
    ),
    "gcp:serviceaccount/iAMMember:IAMMember": Row(
        _iam_policy("iam.serviceAccounts"),
        # The account is created by the same `pulumi up`: tested on its project, as above.
        # serviceAccountId: projects/{project}/serviceAccounts/{email}.
        lambda inputs: _project(str(inputs["serviceAccountId"]).split("/")[1]),
        "https://cloud.google.com/iam/docs/service-account-permissions "
        "(iam.serviceAccounts.getIamPolicy, iam.serviceAccounts.setIamPolicy)",
    ),
}

# Data sources the program reads during `pulumi up`, and what they ask of the caller.
INVOKES: dict[str, Row] = {
    "gcp:bigquery/getDefaultServiceAccount:getDefaultServiceAccount": Row(
        ("bigquery.jobs.create",),
        _on_project,
        "bigquery v2 discovery document, projects.getServiceAccount: requires the "
        "bigquery.jobs.create permission on the project resource",
    ),
}

# Resource types that ask the deployer nothing preflight tests with testIamPermissions, and why.
NOT_TESTED: dict[str, str] = {
    # https://cloud.google.com/bigquery/docs/datasets#required_permissions: the creator of a
    # dataset is granted bigquery.dataOwner on it, so its grants need nothing more than the create.
    "gcp:bigquery/datasetIamMember:DatasetIamMember": "the dataset's creator owns it",
    # https://cloud.google.com/service-usage/docs/access-control: services.enable needs
    # serviceusage.services.enable on the project, asked only of an API that is disabled (the API
    # check, not this table).
    "gcp:projects/service:Service": "serviceusage.services.enable, by the API check",
    # serviceusage v1beta1 services.generateServiceIdentity documents OAuth scopes and no IAM
    # permission (https://cloud.google.com/service-usage/docs/reference/rest/v1beta1/services/
    # generateServiceIdentity).
    "gcp:projects/serviceIdentity:ServiceIdentity": "no IAM permission documented",
    "time:index/sleep:Sleep": "not a Google resource",
}
INVOKES_NOT_TESTED = {
    # https://cloud.google.com/resource-manager/reference/rest/v3/projects/get needs
    # resourcemanager.projects.get: preflight's identity check reads the same project itself.
    "gcp:organizations/getProject:getProject": "resourcemanager.projects.get, by the identity check",
}


def expected_permissions(plan: Plan) -> set[tuple[str, str]]:
    """(resource tested on, permission) for everything the plan creates, grants and reads."""
    expected: set[tuple[str, str]] = set()

    def add(row: Row, inputs: Inputs) -> None:
        expected.update((row.tested_on(inputs), permission) for permission in row.permissions)

    for resource in plan.custom_resources():
        row = CREATES.get(resource.type) or GRANTS.get(resource.type)
        if row is None:
            assert resource.type in NOT_TESTED, (
                f"{resource.type}: add a row to tests/permission_oracle.py from Google's page on "
                "what creating it asks of the caller"
            )
            continue
        add(row, resource.inputs)
        if "oauthToken" in (resource.inputs.get("httpTarget") or {}):
            add(ACT_AS, resource.inputs)
    for invoke in plan.invokes:
        row = INVOKES.get(invoke.token)
        if row is None:
            assert invoke.token in INVOKES_NOT_TESTED, f"{invoke.token}: add a row"
            continue
        add(row, invoke.args)
    return expected


def short_name(scope: str) -> str:
    """The resource as preflight's report names it: the full name without its service."""
    name = scope.split("googleapis.com/", 1)[1]
    return name.removeprefix("projects/_/")
