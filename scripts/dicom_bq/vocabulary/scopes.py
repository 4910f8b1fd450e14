"""Every kind of IAM scope a grant can name, described once.

One entry per kind, read by every part that deals with scopes: the grants list builds its URIs
here (infra/grants.py), the Pulumi program picks the IAM member resource (components/iam.py,
whose classes are keyed by the same kinds), the policy rules name the scope of any pulumi-gcp
IAM resource (policy_rules.scope_of), the audit parses URIs, prints the gcloud commands and
reads the live policy (security/audit.py), and preflight tests the deployer's permissions to
grant on the scope and that a scope the stack does not create exists (flows/preflight.py).
tests/test_scopes.py fails when a kind described here is not handled by one of them, so adding
a kind is one entry here, plus its Pulumi class and, for a new response shape, its bindings
reader.

Standard library only: the CrossGuard pack imports policy_rules, hence this, in an environment
without pulumi or pydantic (policy/requirements.txt).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from dicom_bq.errors import DicomBqError

ScopeKindName = Literal[
    "project",
    "bigquery_dataset",
    "bucket",
    "topic",
    "crypto_key",
    "dicom_store",
    "service_account",
]
# What a Pulumi member argument takes: the grant scope's `project` or `resource` as given (an
# Output keeps its dependencies), or the scope in the kind's `provider_id` form.
ArgumentSource = Literal["project", "resource", "provider_id"]
# What the live read returns: an IAM Policy (`bindings`), or a BigQuery Dataset whose `access`
# list is its policy.
LiveResponse = Literal["iam_policy", "bigquery_access"]


@dataclass(frozen=True)
class PulumiMember:
    """The additive pulumi-gcp IAM member resource of the kind (never a policy or binding)."""

    # As the installed pulumi_gcp registers it (`@pulumi.type_token(...)` on the class).
    type_token: str
    # Its Python keyword arguments besides role and member, and what each takes.
    arguments: tuple[tuple[str, ArgumentSource], ...]


@dataclass(frozen=True)
class PulumiInputs:
    """Where any pulumi-gcp resource granting on the kind (IamMember, IamBinding, IamPolicy,
    ACLs) says its scope, in Pulumi's camelCase inputs: what the policy rules read."""

    # Every such resource's type token starts with it.
    type_prefix: str
    project_input: str | None
    resource_input: str
    # A prefix the provider accepts before the resource and the IAM name does not have.
    resource_prefix: str = ""


@dataclass(frozen=True)
class Commands:
    """What a person runs by hand; templates over the URI's parts."""

    # Prints the scope's policy, conditions included.
    show: str
    # Adds or removes one binding: {verb} is add or remove, {member_role} the
    # --member='...' --role='...' flags.
    binding: str


@dataclass(frozen=True)
class LiveRead:
    """How the audit reads the live policy through the API's discovery document."""

    api: str  # a name in clients/discovery.DISCOVERY_APIS
    # The method as the discovery document nests it: collections, then the method.
    method: str
    # Each parameter of the method and its value, a template over the URI's parts.
    arguments: tuple[tuple[str, str], ...]
    # Where the requested policy version goes: a query parameter (the discovery client's Python
    # name), or a dotted path in the request body.
    version_parameter: str
    version_in: Literal["query", "body"]
    response: LiveResponse

    def request_arguments(self, parts: Mapping[str, str], version: int) -> dict[str, Any]:
        found: dict[str, Any] = {name: value.format(**parts) for name, value in self.arguments}
        if self.version_in == "query":
            found[self.version_parameter] = version
            return found
        body: dict[str, Any] = {}
        *path, last = self.version_parameter.split(".")
        level = body
        for key in path:
            level = level.setdefault(key, {})
        level[last] = version
        found["body"] = body
        return found


@dataclass(frozen=True)
class TestPermissions:
    """How preflight asks which of some permissions the caller holds on a scope: the API's
    testIamPermissions, which answers the subset of the asked permissions the caller holds."""

    api: str  # a name in clients/discovery.DISCOVERY_APIS
    method: str  # as the discovery document nests it
    arguments: tuple[tuple[str, str], ...]  # templates over the URI's parts
    # Where the asked permissions go: the request body's `permissions` list
    # (TestIamPermissionsRequest), or the repeated query parameter `permissions`.
    permissions_in: Literal["query", "body"]

    def request_arguments(self, parts: Mapping[str, str], permissions: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {name: value.format(**parts) for name, value in self.arguments}
        if self.permissions_in == "query":
            found["permissions"] = permissions
        else:
            found["body"] = {"permissions": permissions}
        return found


@dataclass(frozen=True)
class ExistenceRead:
    """How preflight tells that a scope the stack grants on, but does not create, exists: a
    read that answers 404 when it does not."""

    api: str
    method: str
    arguments: tuple[tuple[str, str], ...]
    # How the report names the scope, and what a person runs to create it; templates over the
    # URI's parts.
    subject: str
    create: str

    def request_arguments(self, parts: Mapping[str, str]) -> dict[str, Any]:
        return {name: value.format(**parts) for name, value in self.arguments}


# Where preflight tests the permissions to grant on a scope of the kind: on the scope itself, on
# its project (the scope may not exist before the first `pulumi up`, and a role granting them
# there covers every scope below), or nowhere (the deployer is sure to hold them).
TestedOn = Literal["scope", "project", "nowhere"]


@dataclass(frozen=True)
class Preflight:
    """What `dicom-bq preflight` asks before the first `pulumi up` grants a role on the kind."""

    # What the deployer needs to add a member to the scope's policy: pulumi-gcp's IAM member
    # reads the policy, then writes it back with the member added.
    grant_permissions: tuple[str, ...]
    # The narrowest predefined role holding them, for the fix text
    # (https://cloud.google.com/iam/docs/roles-permissions).
    admin_role: str
    # How the report names the scope, a template over the URI's parts.
    subject: str
    test: TestPermissions | None
    tested_on: TestedOn
    # None: the stack creates every scope of the kind it grants on.
    existence: ExistenceRead | None = None


@dataclass(frozen=True)
class ScopeKind:
    name: ScopeKindName
    title: str
    host: str
    # The relative resource name after //{host}/ (https://cloud.google.com/iam/docs/full-resource-names).
    name_template: str
    # The template part a grant's `resource` is when it is a bare ID; `project` fills {project}.
    # A resource with a "/" is taken as the whole relative name.
    resource_part: str
    # What breaks when a grant on a scope of this kind is not in force.
    consequence: str
    pulumi_member: PulumiMember
    pulumi_inputs: PulumiInputs
    commands: Commands
    live_read: LiveRead
    preflight: Preflight
    # The form pulumi-gcp's IAM resources take the scope's ID in, when it is neither the bare
    # ID nor the relative name; a template over the name's parts.
    provider_id: str | None = None

    @cached_property
    def template_parts(self) -> tuple[str, ...]:
        return tuple(
            field for _, field, _, _ in string.Formatter().parse(self.name_template) if field
        )

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(rf"^//{re.escape(self.host)}/(?P<name>{_regex(self.name_template)})$")

    @cached_property
    def provider_id_pattern(self) -> re.Pattern[str] | None:
        return re.compile(f"^{_regex(self.provider_id)}$") if self.provider_id else None

    def uri(self, *, project: str, resource: str) -> str:
        if "/" in resource:
            return f"//{self.host}/{resource}"
        parts = {"project": project, self.resource_part: resource}
        return f"//{self.host}/{self.name_template.format(**parts)}"

    def parse(self, uri: str) -> dict[str, str] | None:
        """The URI's parts (each template part, and `name`, the relative name); None when the
        URI is not of this kind."""
        found = self.pattern.match(uri)
        return found.groupdict() if found else None

    def uri_from_inputs(self, inputs: Mapping[str, Any]) -> str:
        """The scope a pulumi-gcp IAM resource of this kind grants on, from its inputs."""
        where = self.pulumi_inputs

        def text(key: str | None) -> str:
            value = inputs.get(key) if key else None
            return value if isinstance(value, str) else ""

        resource = text(where.resource_input).removeprefix(where.resource_prefix)
        in_provider_form = self.provider_id_pattern and self.provider_id_pattern.match(resource)
        if in_provider_form:
            resource = self.name_template.format(**in_provider_form.groupdict())
        return self.uri(project=text(where.project_input), resource=resource)

    def provider_id_of(self, uri: str) -> str:
        """The scope in the `provider_id` form pulumi-gcp takes."""
        parts = self.parse(uri)
        if parts is None or self.provider_id is None:
            raise DicomBqError(
                f"{uri!r} is not a {self.title} ({self.name_template}): pass the "
                f"{self.title}'s full name"
            )
        return self.provider_id.format(**parts)


def _regex(template: str) -> str:
    """A template's text as a regex, each {part} a named group of one path segment."""
    return "".join(
        re.escape(literal) + (f"(?P<{field}>[^/]+)" if field else "")
        for literal, field, _, _ in string.Formatter().parse(template)
    )


_IAM_POLICY_VERSION = "options.requestedPolicyVersion"


def _policy_permissions(prefix: str) -> tuple[str, str]:
    return (f"{prefix}.getIamPolicy", f"{prefix}.setIamPolicy")


SCOPE_KINDS: dict[ScopeKindName, ScopeKind] = {
    kind.name: kind
    for kind in (
        ScopeKind(
            name="project",
            title="project",
            host="cloudresourcemanager.googleapis.com",
            name_template="projects/{project}",
            resource_part="project",
            consequence="exports will fail with PERMISSION_DENIED",
            pulumi_member=PulumiMember(
                "gcp:projects/iAMMember:IAMMember", (("project", "project"),)
            ),
            pulumi_inputs=PulumiInputs("gcp:projects/", "project", "project"),
            # https://cloud.google.com/sdk/gcloud/reference/projects/get-iam-policy
            # https://cloud.google.com/sdk/gcloud/reference/projects/add-iam-policy-binding
            # https://cloud.google.com/sdk/gcloud/reference/projects/remove-iam-policy-binding
            commands=Commands(
                show="gcloud projects get-iam-policy {project} --format=json",
                binding="gcloud projects {verb}-iam-policy-binding {project} {member_role}",
            ),
            # cloudresourcemanager v1 projects.getIamPolicy: POST, GetPolicyOptions in the body
            # (https://cloud.google.com/resource-manager/reference/rest/v1/projects/getIamPolicy).
            live_read=LiveRead(
                api="cloudresourcemanager",
                method="projects.getIamPolicy",
                arguments=(("resource", "{project}"),),
                version_parameter=_IAM_POLICY_VERSION,
                version_in="body",
                response="iam_policy",
            ),
            preflight=Preflight(
                grant_permissions=_policy_permissions("resourcemanager.projects"),
                admin_role="roles/resourcemanager.projectIamAdmin",
                subject="projects/{project}",
                # cloudresourcemanager v1 discovery document, projects.testIamPermissions: POST
                # v1/projects/{resource}:testIamPermissions, body TestIamPermissionsRequest.
                test=TestPermissions(
                    api="cloudresourcemanager",
                    method="projects.testIamPermissions",
                    arguments=(("resource", "{project}"),),
                    permissions_in="body",
                ),
                tested_on="scope",
            ),
        ),
        ScopeKind(
            name="bigquery_dataset",
            title="BigQuery dataset",
            host="bigquery.googleapis.com",
            name_template="projects/{project}/datasets/{dataset}",
            resource_part="dataset",
            consequence="exports will fail with PERMISSION_DENIED",
            pulumi_member=PulumiMember(
                "gcp:bigquery/datasetIamMember:DatasetIamMember",
                (("project", "project"), ("dataset_id", "resource")),
            ),
            # Also gcp:bigquery/dataset:Dataset (its `accesses`) and datasetAccess:DatasetAccess.
            pulumi_inputs=PulumiInputs("gcp:bigquery/dataset", "project", "datasetId"),
            # gcloud has no BigQuery dataset IAM commands; bq does
            # (https://cloud.google.com/bigquery/docs/reference/bq-cli-reference#bq_show,
            # #bq_add-iam-policy-binding, #bq_remove-iam-policy-binding;
            # https://cloud.google.com/bigquery/docs/control-access-to-resources-iam).
            commands=Commands(
                show="bq show --format=prettyjson {project}:{dataset}",
                binding="bq {verb}-iam-policy-binding {member_role} {project}:{dataset}",
            ),
            # bigquery v2 datasets.get: the access list is the dataset's policy; conditional
            # entries are returned only with accessPolicyVersion=3
            # (https://cloud.google.com/bigquery/docs/reference/rest/v2/datasets/get).
            live_read=LiveRead(
                api="bigquery",
                method="datasets.get",
                arguments=(("projectId", "{project}"), ("datasetId", "{dataset}")),
                version_parameter="accessPolicyVersion",
                version_in="query",
                response="bigquery_access",
            ),
            preflight=Preflight(
                # Through the API, a dataset's policy is its access list: read with
                # datasets.get, written with datasets.update; getIamPolicy and setIamPolicy
                # are the console's (https://cloud.google.com/bigquery/docs/
                # control-access-to-resources-iam#required_permissions).
                grant_permissions=("bigquery.datasets.get", "bigquery.datasets.update"),
                admin_role="roles/bigquery.dataOwner",
                subject="projects/{project}/datasets/{dataset}",
                # The bigquery v2 discovery document has testIamPermissions for tables,
                # routines and row access policies, none for datasets.
                test=None,
                # The stack grants only on the dataset it creates (components/bigquery.py), and
                # the creator is the new dataset's owner: preflight asks for
                # bigquery.datasets.create on its project instead
                # (https://cloud.google.com/bigquery/docs/datasets#required_permissions).
                tested_on="nowhere",
            ),
        ),
        ScopeKind(
            name="bucket",
            title="Cloud Storage bucket",
            host="storage.googleapis.com",
            name_template="projects/_/buckets/{bucket}",
            resource_part="bucket",
            consequence="filtered exports will fail with PERMISSION_DENIED",
            pulumi_member=PulumiMember(
                "gcp:storage/bucketIAMMember:BucketIAMMember", (("bucket", "resource"),)
            ),
            # Every gcp:storage/ type but objects and managed folders (policy_rules.scope_of
            # names those first); the provider accepts the bucket as b/NAME.
            pulumi_inputs=PulumiInputs("gcp:storage/", None, "bucket", resource_prefix="b/"),
            # https://cloud.google.com/sdk/gcloud/reference/storage/buckets/get-iam-policy
            # https://cloud.google.com/sdk/gcloud/reference/storage/buckets/add-iam-policy-binding
            # https://cloud.google.com/sdk/gcloud/reference/storage/buckets/remove-iam-policy-binding
            commands=Commands(
                show="gcloud storage buckets get-iam-policy gs://{bucket} --format=json",
                binding="gcloud storage buckets {verb}-iam-policy-binding gs://{bucket} "
                "{member_role}",
            ),
            # storage v1 buckets.getIamPolicy, query parameter optionsRequestedPolicyVersion
            # (https://cloud.google.com/storage/docs/json_api/v1/buckets/getIamPolicy).
            live_read=LiveRead(
                api="storage",
                method="buckets.getIamPolicy",
                arguments=(("bucket", "{bucket}"),),
                version_parameter="optionsRequestedPolicyVersion",
                version_in="query",
                response="iam_policy",
            ),
            preflight=Preflight(
                grant_permissions=_policy_permissions("storage.buckets"),
                admin_role="roles/storage.admin",
                subject="buckets/{bucket}",
                # storage v1 discovery document, buckets.testIamPermissions: GET
                # b/{bucket}/iam/testPermissions, `permissions` a repeated query parameter.
                test=TestPermissions(
                    api="storage",
                    method="buckets.testIamPermissions",
                    arguments=(("bucket", "{bucket}"),),
                    permissions_in="query",
                ),
                tested_on="scope",
                # storage v1 buckets.get: GET b/{bucket}; 404 when there is none
                # (https://cloud.google.com/storage/docs/json_api/v1/buckets/get).
                existence=ExistenceRead(
                    api="storage",
                    method="buckets.get",
                    arguments=(("bucket", "{bucket}"),),
                    subject="gs://{bucket}",
                    # https://cloud.google.com/sdk/gcloud/reference/storage/buckets/create
                    create="gcloud storage buckets create gs://{bucket} --location LOCATION "
                    "--uniform-bucket-level-access",
                ),
            ),
        ),
        ScopeKind(
            name="topic",
            title="Pub/Sub topic",
            host="pubsub.googleapis.com",
            name_template="projects/{project}/topics/{topic}",
            resource_part="topic",
            consequence="the store's Pub/Sub notifications will fail with PERMISSION_DENIED",
            pulumi_member=PulumiMember(
                "gcp:pubsub/topicIAMMember:TopicIAMMember",
                (("project", "project"), ("topic", "resource")),
            ),
            pulumi_inputs=PulumiInputs("gcp:pubsub/topic", "project", "topic"),
            # https://cloud.google.com/sdk/gcloud/reference/pubsub/topics/get-iam-policy
            # https://cloud.google.com/sdk/gcloud/reference/pubsub/topics/add-iam-policy-binding
            # https://cloud.google.com/sdk/gcloud/reference/pubsub/topics/remove-iam-policy-binding
            commands=Commands(
                show="gcloud pubsub topics get-iam-policy {topic} --project={project} "
                "--format=json",
                binding="gcloud pubsub topics {verb}-iam-policy-binding {topic} "
                "--project={project} {member_role}",
            ),
            # pubsub v1 projects.topics.getIamPolicy: GET v1/{+resource}:getIamPolicy with the
            # query parameter options.requestedPolicyVersion
            # (https://cloud.google.com/pubsub/docs/reference/rest/v1/projects.topics/getIamPolicy).
            live_read=LiveRead(
                api="pubsub",
                method="projects.topics.getIamPolicy",
                arguments=(("resource", "{name}"),),
                version_parameter="options_requestedPolicyVersion",
                version_in="query",
                response="iam_policy",
            ),
            preflight=Preflight(
                grant_permissions=_policy_permissions("pubsub.topics"),
                admin_role="roles/pubsub.admin",
                subject="{name}",
                # pubsub v1 discovery document, projects.topics.testIamPermissions: POST
                # v1/{+resource}:testIamPermissions, body TestIamPermissionsRequest.
                test=TestPermissions(
                    api="pubsub",
                    method="projects.topics.testIamPermissions",
                    arguments=(("resource", "{name}"),),
                    permissions_in="body",
                ),
                tested_on="scope",
                # pubsub v1 projects.topics.get: GET v1/{+topic}
                # (https://cloud.google.com/pubsub/docs/reference/rest/v1/projects.topics/get).
                existence=ExistenceRead(
                    api="pubsub",
                    method="projects.topics.get",
                    arguments=(("topic", "{name}"),),
                    subject="{name}",
                    # https://cloud.google.com/sdk/gcloud/reference/pubsub/topics/create
                    create="gcloud pubsub topics create {topic} --project {project}",
                ),
            ),
        ),
        ScopeKind(
            name="crypto_key",
            title="Cloud KMS key",
            host="cloudkms.googleapis.com",
            name_template="projects/{project}/locations/{location}/keyRings/{ring}/cryptoKeys/{key}",
            resource_part="key",
            consequence="what this key encrypts cannot be created or read (PERMISSION_DENIED)",
            pulumi_member=PulumiMember(
                "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember", (("crypto_key_id", "resource"),)
            ),
            pulumi_inputs=PulumiInputs("gcp:kms/cryptoKey", None, "cryptoKeyId"),
            # https://cloud.google.com/sdk/gcloud/reference/kms/keys/get-iam-policy
            # https://cloud.google.com/sdk/gcloud/reference/kms/keys/add-iam-policy-binding
            # https://cloud.google.com/sdk/gcloud/reference/kms/keys/remove-iam-policy-binding
            commands=Commands(
                show="gcloud kms keys get-iam-policy {key} --keyring={ring} "
                "--location={location} --project={project} --format=json",
                binding="gcloud kms keys {verb}-iam-policy-binding {key} --keyring={ring} "
                "--location={location} --project={project} {member_role}",
            ),
            # cloudkms v1 projects.locations.keyRings.cryptoKeys.getIamPolicy, same shape as
            # Pub/Sub's (https://cloud.google.com/kms/docs/reference/rest/v1/
            # projects.locations.keyRings.cryptoKeys/getIamPolicy).
            live_read=LiveRead(
                api="cloudkms",
                method="projects.locations.keyRings.cryptoKeys.getIamPolicy",
                arguments=(("resource", "{name}"),),
                version_parameter="options_requestedPolicyVersion",
                version_in="query",
                response="iam_policy",
            ),
            preflight=Preflight(
                grant_permissions=_policy_permissions("cloudkms.cryptoKeys"),
                admin_role="roles/cloudkms.admin",
                subject="{name}",
                # cloudkms v1 discovery document,
                # projects.locations.keyRings.cryptoKeys.testIamPermissions: POST
                # v1/{+resource}:testIamPermissions, body TestIamPermissionsRequest.
                test=TestPermissions(
                    api="cloudkms",
                    method="projects.locations.keyRings.cryptoKeys.testIamPermissions",
                    arguments=(("resource", "{name}"),),
                    permissions_in="body",
                ),
                tested_on="scope",
                # cloudkms v1 projects.locations.keyRings.cryptoKeys.get: GET v1/{+name}
                # (https://cloud.google.com/kms/docs/reference/rest/v1/
                # projects.locations.keyRings.cryptoKeys/get).
                existence=ExistenceRead(
                    api="cloudkms",
                    method="projects.locations.keyRings.cryptoKeys.get",
                    arguments=(("name", "{name}"),),
                    subject="{name}",
                    # Every key the stack grants on is a CMEK key, hence a symmetric one
                    # (https://cloud.google.com/sdk/gcloud/reference/kms/keys/create).
                    create="gcloud kms keys create {key} --keyring {ring} --location {location} "
                    "--purpose encryption --project {project}",
                ),
            ),
        ),
        ScopeKind(
            name="dicom_store",
            title="DICOM store",
            host="healthcare.googleapis.com",
            name_template="projects/{project}/locations/{location}/datasets/{dataset}"
            "/dicomStores/{store}",
            resource_part="store",
            consequence="the nightly snapshot export of this store will fail with "
            "PERMISSION_DENIED",
            # dicom_store_id "in the form {project_id}/{location_name}/{dataset_name}/
            # {dicom_store_name}" (pulumi_gcp healthcare/dicom_store_iam_member.py).
            provider_id="{project}/{location}/{dataset}/{store}",
            pulumi_member=PulumiMember(
                "gcp:healthcare/dicomStoreIamMember:DicomStoreIamMember",
                (("dicom_store_id", "provider_id"),),
            ),
            pulumi_inputs=PulumiInputs("gcp:healthcare/dicomStoreIam", None, "dicomStoreId"),
            # https://cloud.google.com/sdk/gcloud/reference/healthcare/dicom-stores/get-iam-policy
            # https://cloud.google.com/sdk/gcloud/reference/healthcare/dicom-stores/add-iam-policy-binding
            # https://cloud.google.com/sdk/gcloud/reference/healthcare/dicom-stores/remove-iam-policy-binding
            commands=Commands(
                show="gcloud healthcare dicom-stores get-iam-policy {store} --dataset={dataset} "
                "--location={location} --project={project} --format=json",
                binding="gcloud healthcare dicom-stores {verb}-iam-policy-binding {store} "
                "--dataset={dataset} --location={location} --project={project} {member_role}",
            ),
            # healthcare v1 projects.locations.datasets.dicomStores.getIamPolicy: GET
            # v1/{+resource}:getIamPolicy, query parameter options.requestedPolicyVersion
            # (healthcare v1 discovery document).
            live_read=LiveRead(
                api="healthcare",
                method="projects.locations.datasets.dicomStores.getIamPolicy",
                arguments=(("resource", "{name}"),),
                version_parameter="options_requestedPolicyVersion",
                version_in="query",
                response="iam_policy",
            ),
            preflight=Preflight(
                grant_permissions=_policy_permissions("healthcare.dicomStores"),
                admin_role="roles/healthcare.dicomStoreAdmin",
                subject="{name}",
                # healthcare v1 discovery document,
                # projects.locations.datasets.dicomStores.testIamPermissions: POST
                # v1/{+resource}:testIamPermissions, body TestIamPermissionsRequest.
                test=TestPermissions(
                    api="healthcare",
                    method="projects.locations.datasets.dicomStores.testIamPermissions",
                    arguments=(("resource", "{name}"),),
                    permissions_in="body",
                ),
                # The store may not exist before the first up (the stack creates its stores),
                # and a test on a missing store answers 404; a role granting these is usually
                # held on the project, where the test answers either way.
                tested_on="project",
            ),
        ),
        ScopeKind(
            name="service_account",
            title="service account",
            host="iam.googleapis.com",
            # https://cloud.google.com/iam/docs/full-resource-names: a service account is
            # //iam.googleapis.com/projects/P/serviceAccounts/EMAIL.
            name_template="projects/{project}/serviceAccounts/{account}",
            resource_part="account",
            consequence="Cloud Scheduler cannot mint the account's token: the nightly snapshot "
            "job's request fails and no export starts",
            # service_account_id: "The fully-qualified name of the service account"
            # (pulumi_gcp serviceaccount/iam_member.py), projects/P/serviceAccounts/EMAIL.
            provider_id="projects/{project}/serviceAccounts/{account}",
            pulumi_member=PulumiMember(
                "gcp:serviceaccount/iAMMember:IAMMember",
                (("service_account_id", "provider_id"),),
            ),
            # IAMMember, IAMBinding, IAMPolicy; not Account or Key, which grant nothing.
            pulumi_inputs=PulumiInputs("gcp:serviceaccount/iAM", None, "serviceAccountId"),
            # https://cloud.google.com/sdk/gcloud/reference/iam/service-accounts/get-iam-policy
            # https://cloud.google.com/sdk/gcloud/reference/iam/service-accounts/add-iam-policy-binding
            # https://cloud.google.com/sdk/gcloud/reference/iam/service-accounts/remove-iam-policy-binding
            commands=Commands(
                show="gcloud iam service-accounts get-iam-policy {account} --project={project} "
                "--format=json",
                binding="gcloud iam service-accounts {verb}-iam-policy-binding {account} "
                "--project={project} {member_role}",
            ),
            # iam v1 discovery document, projects.serviceAccounts.getIamPolicy: POST
            # v1/{+resource}:getIamPolicy, query parameter options.requestedPolicyVersion.
            live_read=LiveRead(
                api="iam",
                method="projects.serviceAccounts.getIamPolicy",
                arguments=(("resource", "{name}"),),
                version_parameter="options_requestedPolicyVersion",
                version_in="query",
                response="iam_policy",
            ),
            preflight=Preflight(
                grant_permissions=_policy_permissions("iam.serviceAccounts"),
                admin_role="roles/iam.serviceAccountAdmin",
                subject="{name}",
                # iam v1 discovery document, projects.serviceAccounts.testIamPermissions: POST
                # v1/{+resource}:testIamPermissions, body TestIamPermissionsRequest.
                test=TestPermissions(
                    api="iam",
                    method="projects.serviceAccounts.testIamPermissions",
                    arguments=(("resource", "{name}"),),
                    permissions_in="body",
                ),
                # The stack creates the only account it grants on (the snapshot's), so it does
                # not exist before the first up and a test on it answers 404; the project's
                # test answers either way (roles/iam.serviceAccountAdmin is usually held there).
                tested_on="project",
            ),
        ),
    )
}


@dataclass(frozen=True)
class ParsedScope:
    kind: ScopeKind
    parts: dict[str, str]


def parse_scope(uri: str) -> ParsedScope | None:
    """The kind and parts of a full resource name; None for a scope of no described kind."""
    for kind in SCOPE_KINDS.values():
        parts = kind.parse(uri)
        if parts is not None:
            return ParsedScope(kind, parts)
    return None


def kind_of_member(type_token: str) -> ScopeKind | None:
    """The kind whose pulumi-gcp IAM member resource has this type; None for any other type."""
    return next(
        (kind for kind in SCOPE_KINDS.values() if kind.pulumi_member.type_token == type_token),
        None,
    )


def scope_uri(kind: ScopeKindName, *, project: str, resource: str) -> str:
    return SCOPE_KINDS[kind].uri(project=project, resource=resource)


def project_scope(project: str) -> str:
    return scope_uri("project", project=project, resource=project)
