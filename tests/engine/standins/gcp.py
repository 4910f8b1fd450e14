"""The stand-in `gcp` provider: the pulumi-gcp resource types and functions the program uses.

Sources, cited per entry below:
- ForceNew: the pulumi_gcp SDK docstrings ("Changing this forces a new resource to be created",
  read by sdkschema.py) plus Terraform's schema, which the bridge replaces on, from
  GoogleCloudPlatform/magic-modules (the generator of terraform-provider-google, which
  pulumi-gcp bridges): `immutable: true` in mmv1/products/<product>/<Resource>.yaml, the
  `project` of every generated resource (ForceNew), and `ForceNew: true` in the handwritten
  resources under mmv1/third_party/terraform/. Read at magic-modules d5778440 (2026), later than
  the terraform-provider-google that pulumi-gcp 10.2.0 bridges; the fields used here have been
  immutable for years.
- IDs: each resource's `id_format` (mmv1 yaml) or `d.SetId(...)` (handwritten Go).
- Optional+Computed inputs (kept when the program stops setting them): `default_value` /
  `default_from_api` in the mmv1 yaml.
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from tests.engine.standins.common import (
    AGENT_IAM_DOMAINS,
    UNKNOWN,
    Binding,
    Context,
    JsonMap,
    Kind,
    Provider,
    StandinError,
    contains_unknown,
    is_empty,
    project_number,
    sdk_plugin,
    serve,
    stable_digits,
)


def _iam_domain(ctx: Context) -> str:
    return AGENT_IAM_DOMAINS.get(ctx.config.universe_domain, "iam.gserviceaccount.com")


def _now_ms() -> float:
    return float(int(time.time() * 1000))


class Service(Kind):
    token = "gcp:projects/service:Service"
    # resource_google_project_service.go.tmpl: service and project ForceNew.
    force_new = frozenset({"service", "project"})

    def resource_id(self, ctx: Context, state: JsonMap) -> str:
        # d.SetId(fmt.Sprintf("%s/%s", projectStr, serviceStr))
        return f"{state['project']}/{state['service']}"


class ServiceIdentity(Kind):
    token = "gcp:projects/serviceIdentity:ServiceIdentity"
    # resource_project_service_identity.go.tmpl: service and project ForceNew.
    force_new = frozenset({"service", "project"})

    def computed(self, ctx: Context, state: JsonMap) -> JsonMap:
        # services.generateServiceIdentity answers the agent's email, e.g.
        # service-NUMBER@gcp-sa-healthcare.iam.gserviceaccount.com; the resource sets email and
        # member = "serviceAccount:" + email (resource_project_service_identity.go.tmpl).
        short = str(state["service"]).split(".", 1)[0]
        number = project_number(str(state["project"]))
        email = f"service-{number}@gcp-sa-{short}.{_iam_domain(ctx)}"
        return {"email": email, "member": f"serviceAccount:{email}"}

    def resource_id(self, ctx: Context, state: JsonMap) -> str:
        return f"projects/{state['project']}/services/{state['service']}"


class HealthcareDataset(Kind):
    token = "gcp:healthcare/dataset:Dataset"
    # mmv1/products/healthcare/Dataset.yaml: location, name, encryptionSpec immutable.
    force_new = frozenset({"location", "name", "encryptionSpec", "project"})
    also_computed = frozenset({"timeZone", "encryptionSpec"})  # default_from_api
    autoname = "name"

    def computed(self, ctx: Context, state: JsonMap) -> JsonMap:
        if is_empty(state.get("timeZone")):
            return {"timeZone": "UTC", "selfLink": self.resource_id(ctx, state)}
        return {"selfLink": self.resource_id(ctx, state)}

    def resource_id(self, ctx: Context, state: JsonMap) -> str:
        # id_format: projects/{{project}}/locations/{{location}}/datasets/{{name}}
        return f"projects/{state['project']}/locations/{state['location']}/datasets/{state['name']}"


_TABLE_URI = re.compile(r"bq://([^.]+(?::[^.]+)?)\.([^.]+)\.(.+)")


class DicomStore(Kind):
    token = "gcp:healthcare/dicomStore:DicomStore"
    # mmv1/products/healthcare/DicomStore.yaml: dataset and name immutable (the SDK's name
    # docstring: "Changing this property may recreate the Dicom store").
    force_new = frozenset({"dataset", "name"})
    autoname = "name"

    def computed(self, ctx: Context, state: JsonMap) -> JsonMap:
        return {"selfLink": self.resource_id(ctx, state)}

    def resource_id(self, ctx: Context, state: JsonMap) -> str:
        # id_format: {{dataset}}/dicomStores/{{name}}
        return f"{state['dataset']}/dicomStores/{state['name']}"

    def fault_error(self, state: Mapping[str, Any]) -> str | None:
        # With streamConfigs the API verifies, at create, that the project's Healthcare agent may
        # write the BigQuery dataset; until the grant propagates it answers 403, which
        # terraform-provider-google reports as (hashicorp/terraform-provider-google#13721):
        streams = state.get("streamConfigs") or []
        for stream in streams:
            uri = str((stream.get("bigqueryDestination") or {}).get("tableUri", ""))
            match = _TABLE_URI.fullmatch(uri)
            if match:
                project, dataset, _ = match.groups()
                return (
                    "Error creating DicomStore: googleapi: Error 403: failed to verify dataset "
                    f"(projectID:{project}, datasetID:{dataset}), please add the required "
                    "bigquery.dataEditor role to your project's service account"
                )
        return None


class BigQueryDataset(Kind):
    token = "gcp:bigquery/dataset:Dataset"
    # mmv1/products/bigquery/Dataset.yaml: datasetReference.datasetId, location,
    # externalDatasetReference immutable (the SDK docstring says so for location).
    force_new = frozenset({"datasetId", "location", "externalDatasetReference", "project"})
    defaults: ClassVar[Mapping[str, Any]] = {"location": "US"}
    also_computed = frozenset(
        {"accesses", "maxTimeTravelHours", "isCaseInsensitive", "storageBillingModel"}
    )

    def computed(self, ctx: Context, state: JsonMap) -> JsonMap:
        now = _now_ms()
        project, dataset = state["project"], state["datasetId"]
        return {
            "creationTime": now,
            "lastModifiedTime": now,
            "etag": hashlib.sha256(f"{project}:{dataset}:{now}".encode()).hexdigest()[:22],
            "selfLink": f"https://bigquery.{ctx.config.universe_domain}/bigquery/v2/projects/"
            f"{project}/datasets/{dataset}",
        }

    def resource_id(self, ctx: Context, state: JsonMap) -> str:
        # import_format / id: projects/{{project}}/datasets/{{dataset_id}}
        return f"projects/{state['project']}/datasets/{state['datasetId']}"


# --- IAM members ------------------------------------------------------------------------------


# tpgiamresource/resource_iam_member.go, IamMemberBaseSchema: role, member, condition ForceNew.
_MEMBER_FORCE_NEW = frozenset({"role", "member", "condition"})


class IamMember(Kind):
    """An additive IAM member (tpgiamresource/resource_iam_member.go): role, member and
    condition ForceNew, and so is each field of the parent's IamSchema; the ID
    `<updater.GetResourceId()>/<role>/<member>` (resourceIamMemberCreate, d.SetId)."""

    def parent(self, state: Mapping[str, Any]) -> tuple[str, str]:
        """(updater resource ID, IAM full resource name of the scope)."""
        raise NotImplementedError

    def computed(self, ctx: Context, state: JsonMap) -> JsonMap:
        # The policy's etag after the write: opaque base64 in Google's answers.
        seed = "|".join(str(state.get(k)) for k in sorted(state))
        return {"etag": "BwY" + stable_digits(seed, 12)}

    def resource_id(self, ctx: Context, state: JsonMap) -> str:
        base, _ = self.parent(state)
        return f"{base}/{state['role']}/{state['member']}"

    def binding(self, state: Mapping[str, Any]) -> Binding | None:
        if contains_unknown(dict(state)):
            return None
        _, scope = self.parent(state)
        return Binding(scope, str(state["role"]), str(state["member"]))


class ProjectIamMember(IamMember):
    token = "gcp:projects/iAMMember:IAMMember"
    # iam_project.go.tmpl: the parent's fields ForceNew.
    force_new = _MEMBER_FORCE_NEW | {"project"}

    def parent(self, state: Mapping[str, Any]) -> tuple[str, str]:
        project = str(state["project"]).removeprefix("projects/")
        return project, f"//cloudresourcemanager.googleapis.com/projects/{project}"


class DatasetIamMember(IamMember):
    token = "gcp:bigquery/datasetIamMember:DatasetIamMember"
    # iam_bigquery_dataset.go.tmpl: the parent's fields ForceNew.
    force_new = _MEMBER_FORCE_NEW | {"datasetId", "project"}

    def parent(self, state: Mapping[str, Any]) -> tuple[str, str]:
        name = f"projects/{state['project']}/datasets/{state['datasetId']}"
        return name, f"//bigquery.googleapis.com/{name}"


class BucketIamMember(IamMember):
    token = "gcp:storage/bucketIAMMember:BucketIAMMember"
    # iam_storage_bucket.go: the parent's fields ForceNew.
    force_new = _MEMBER_FORCE_NEW | {"bucket"}

    def parent(self, state: Mapping[str, Any]) -> tuple[str, str]:
        # StorageBucketDiffSuppress: "b/NAME" and "NAME" are the same bucket.
        bucket = str(state["bucket"]).removeprefix("b/")
        return f"b/{bucket}", f"//storage.googleapis.com/projects/_/buckets/{bucket}"


class TopicIamMember(IamMember):
    token = "gcp:pubsub/topicIAMMember:TopicIAMMember"
    # generated from pubsub/Topic.yaml: the parent's fields ForceNew.
    force_new = _MEMBER_FORCE_NEW | {"topic", "project"}

    def parent(self, state: Mapping[str, Any]) -> tuple[str, str]:
        topic = str(state["topic"])
        match = re.fullmatch(r"projects/([^/]+)/topics/([^/]+)", topic)
        project, name = match.groups() if match else (str(state["project"]), topic)
        full = f"projects/{project}/topics/{name}"
        return full, f"//pubsub.googleapis.com/{full}"


def _full_name(value: str, pattern: tuple[str, ...], default_project: str | None) -> str:
    """A parent ID given whole ("projects/P/locations/L/..."), as "P/L/..." or as "L/..." (the
    provider project): the short forms the IAM parsers accept."""
    parts = value.split("/")
    if parts[0] == "projects":
        return value
    if len(parts) == len(pattern) - 1 and default_project:
        parts = [default_project, *parts]
    if len(parts) != len(pattern):
        raise StandinError(f"Invalid ID {value!r}: expected {'/'.join(pattern)}")
    return "/".join(f"{collection}/{part}" for collection, part in zip(pattern, parts, strict=True))


class CryptoKeyIamMember(IamMember):
    token = "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember"
    # iam_kms_crypto_key.go.tmpl: the parent's fields ForceNew.
    force_new = _MEMBER_FORCE_NEW | {"cryptoKeyId"}
    _collections = ("projects", "locations", "keyRings", "cryptoKeys")

    def parent(self, state: Mapping[str, Any]) -> tuple[str, str]:
        full = _full_name(str(state["cryptoKeyId"]), self._collections, None)
        return full, f"//cloudkms.googleapis.com/{full}"


class DicomStoreIamMember(IamMember):
    token = "gcp:healthcare/dicomStoreIamMember:DicomStoreIamMember"
    # iam_healthcare_dicom_store.go: the parent's fields ForceNew.
    force_new = _MEMBER_FORCE_NEW | {"dicomStoreId"}
    _collections = ("projects", "locations", "datasets", "dicomStores")

    def parent(self, state: Mapping[str, Any]) -> tuple[str, str]:
        full = _full_name(str(state["dicomStoreId"]), self._collections, None)
        return full, f"//healthcare.googleapis.com/{full}"


class ServiceAccountIamMember(IamMember):
    token = "gcp:serviceaccount/iAMMember:IAMMember"
    # iam_service_account.go.tmpl: the parent's fields ForceNew.
    force_new = _MEMBER_FORCE_NEW | {"serviceAccountId"}

    def parent(self, state: Mapping[str, Any]) -> tuple[str, str]:
        account = str(state["serviceAccountId"])
        return account, f"//iam.googleapis.com/{account}"


# --- Operations resources ---------------------------------------------------------------------


class SchedulerJob(Kind):
    token = "gcp:cloudscheduler/job:Job"
    # mmv1/products/cloudscheduler/Job.yaml: region and name immutable.
    force_new = frozenset({"name", "region", "project"})
    defaults: ClassVar[Mapping[str, Any]] = {"timeZone": "Etc/UTC", "attemptDeadline": "180s"}
    also_computed = frozenset({"region", "paused"})
    autoname = "name"

    def with_defaults(self, ctx: Context, inputs: Mapping[str, Any], preview: bool) -> JsonMap:
        state = super().with_defaults(ctx, inputs, preview)
        if is_empty(state.get("region")):
            region = ctx.config.region
            if region is None and not preview:
                raise StandinError("region: required field is not set")
            state["region"] = region or UNKNOWN
        return state

    def computed(self, ctx: Context, state: JsonMap) -> JsonMap:
        return {
            "paused": bool(state.get("paused")),
            "state": "PAUSED" if state.get("paused") else "ENABLED",
        }

    def resource_id(self, ctx: Context, state: JsonMap) -> str:
        # id_format: projects/{{project}}/locations/{{region}}/jobs/{{name}}
        return f"projects/{state['project']}/locations/{state['region']}/jobs/{state['name']}"


class ServiceAccount(Kind):
    token = "gcp:serviceaccount/account:Account"
    # resource_google_service_account.go: account_id and project ForceNew.
    force_new = frozenset({"accountId", "project"})
    defaults: ClassVar[Mapping[str, Any]] = {"disabled": False}

    def computed(self, ctx: Context, state: JsonMap) -> JsonMap:
        project = str(state["project"])
        # A domain-scoped project "example.com:p" puts its accounts under p.example.com
        # (https://cloud.google.com/iam/docs/service-account-overview).
        domain, _, name = project.rpartition(":")
        host = f"{name}.{domain}" if domain else project
        email = f"{state['accountId']}@{host}.{_iam_domain(ctx)}"
        return {
            "email": email,
            "member": f"serviceAccount:{email}",
            "name": f"projects/{project}/serviceAccounts/{email}",
            "uniqueId": stable_digits(f"sa:{email}", 21),
        }

    def resource_id(self, ctx: Context, state: JsonMap) -> str:
        return str(state["name"])  # d.SetId(sa.Name)


class CustomRole(Kind):
    token = "gcp:projects/iAMCustomRole:IAMCustomRole"
    # resource_google_project_iam_custom_role.go: role_id and project ForceNew.
    force_new = frozenset({"roleId", "project"})
    defaults: ClassVar[Mapping[str, Any]] = {"stage": "GA"}

    def computed(self, ctx: Context, state: JsonMap) -> JsonMap:
        return {"name": self.resource_id(ctx, state), "deleted": False}

    def resource_id(self, ctx: Context, state: JsonMap) -> str:
        return f"projects/{state['project']}/roles/{state['roleId']}"  # d.SetId(r.Name)


def _server_number(urn_seed: str) -> str:
    # Alert policies and channels get a server-chosen number: a fresh one on each create.
    return stable_digits(f"{urn_seed}:{time.time_ns()}", 19)


_METRIC_TYPE = re.compile(r'metric\.type\s*=\s*"([^"]+)"')


class AlertPolicy(Kind):
    token = "gcp:monitoring/alertPolicy:AlertPolicy"
    force_new = frozenset({"project"})  # mmv1: the generated project field
    defaults: ClassVar[Mapping[str, Any]] = {
        "enabled": True
    }  # mmv1/products/monitoring/AlertPolicy.yaml default_value

    def computed(self, ctx: Context, state: JsonMap) -> JsonMap:
        name = f"projects/{state['project']}/alertPolicies/{_server_number(str(state))}"
        record = {
            "mutateTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "mutatedBy": "stand-in",
        }
        return {"name": name, "creationRecords": [record]}

    def resource_id(self, ctx: Context, state: JsonMap) -> str:
        return str(state["name"])  # id_format: {{name}}

    def fault_error(self, state: Mapping[str, Any]) -> str | None:
        # A log-based metric can take up to 10 minutes before a policy may use it; meanwhile
        # (hashicorp/terraform-provider-google#11102, as of provider 7.28):
        for condition in state.get("conditions") or []:
            for body in condition.values():
                if not isinstance(body, Mapping):
                    continue
                match = _METRIC_TYPE.search(str(body.get("filter", "")))
                if match:
                    return (
                        "Error creating AlertPolicy: googleapi: Error 404: Cannot find metric(s) "
                        f'that match type = "{match.group(1)}". If a metric was created '
                        "recently, it could take up to 10 minutes to become available. Please "
                        "try again soon."
                    )
        return None


class NotificationChannel(Kind):
    token = "gcp:monitoring/notificationChannel:NotificationChannel"
    force_new = frozenset({"project"})
    defaults: ClassVar[Mapping[str, Any]] = {
        "enabled": True
    }  # NotificationChannel.yaml default_value

    def computed(self, ctx: Context, state: JsonMap) -> JsonMap:
        number = _server_number(str(state))
        return {
            "name": f"projects/{state['project']}/notificationChannels/{number}",
            # Email channels need no verification (VerificationStatus enum, monitoring v3).
            "verificationStatus": "VERIFICATION_STATUS_UNSPECIFIED",
        }

    def resource_id(self, ctx: Context, state: JsonMap) -> str:
        return str(state["name"])


class LogMetric(Kind):
    token = "gcp:logging/metric:Metric"
    # mmv1/products/logging/Metric.yaml: metricDescriptor.labels[].key and .valueType immutable.
    force_new = frozenset(
        {"project", "metricDescriptor.labels[*].key", "metricDescriptor.labels[*].valueType"}
    )
    also_computed = frozenset({"metricDescriptor"})  # default_from_api
    autoname = "name"

    def resource_id(self, ctx: Context, state: JsonMap) -> str:
        return str(state["name"])  # id_format: {{name}}


KINDS: list[Kind] = [
    Service(),
    ServiceIdentity(),
    HealthcareDataset(),
    DicomStore(),
    BigQueryDataset(),
    ProjectIamMember(),
    DatasetIamMember(),
    BucketIamMember(),
    TopicIamMember(),
    CryptoKeyIamMember(),
    DicomStoreIamMember(),
    ServiceAccountIamMember(),
    SchedulerJob(),
    ServiceAccount(),
    CustomRole(),
    AlertPolicy(),
    NotificationChannel(),
    LogMetric(),
]


# --- Functions ---------------------------------------------------------------------------------


def _project_arg(ctx: Context, args: JsonMap, key: str) -> str:
    project = args.get(key) or ctx.config.project
    if not project:
        raise StandinError("project: required field is not set")
    return str(project)


def get_project(ctx: Context, args: JsonMap) -> JsonMap:
    """data.google_project (data_source_google_project.go): id "projects/<id>", the number as a
    string."""
    project = _project_arg(ctx, args, "projectId")
    return {
        "id": f"projects/{project}",
        "projectId": project,
        "number": project_number(project),
        "name": project,
        "orgId": "",
        "folderId": "",
        "billingAccount": "",
        "labels": {},
        "effectiveLabels": {},
        "pulumiLabels": {},
        "autoCreateNetwork": True,
        "deletionPolicy": "PREVENT",
    }


def get_default_service_account(ctx: Context, args: JsonMap) -> JsonMap:
    """data.google_bigquery_default_service_account: projects.getServiceAccount, which creates
    BigQuery's encryption account on first call (bq-NUMBER@bigquery-encryption...,
    https://cloud.google.com/bigquery/docs/customer-managed-encryption); id = email."""
    project = _project_arg(ctx, args, "project")
    email = f"bq-{project_number(project)}@bigquery-encryption.{_iam_domain(ctx)}"
    return {"id": email, "email": email, "member": f"serviceAccount:{email}", "project": project}


INVOKES = {
    "gcp:organizations/getProject:getProject": get_project,
    "gcp:bigquery/getDefaultServiceAccount:getDefaultServiceAccount": get_default_service_account,
}


def provider() -> Provider:
    name, version = sdk_plugin("pulumi_gcp")
    return Provider(name, version, KINDS, INVOKES)


if __name__ == "__main__":
    serve(provider(), sys.argv[1:])
