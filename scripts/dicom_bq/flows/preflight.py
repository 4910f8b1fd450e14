"""`dicom-bq preflight`: what the first `pulumi up` of a stack needs, checked with the caller's
credentials before anything is created.

What is checked comes from the stack's plan (the resources and grants it will create), so it
follows the program: APIs it enables, resources it grants roles on but does not create (bucket,
topic, keys), the caller's permissions for each create and IAM change (testIamPermissions, which
answers the subset of the asked permissions the caller holds), and resources with the stack's
names that already exist. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Literal

from dicom_bq.clients.discovery import ApiCallError, DiscoveryClients
from dicom_bq.clients.endpoints import Connection
from dicom_bq.clients.retry import RetryPolicy
from dicom_bq.infra import naming
from dicom_bq.stack.plan import Plan, PlannedResource

Status = Literal["ok", "fail", "warn"]

# The narrowest predefined role that holds each permission the deployer needs, for the fix text
# (https://cloud.google.com/iam/docs/roles-permissions).
ROLE_FOR = {
    "healthcare.datasets.create": "roles/healthcare.datasetAdmin",
    "healthcare.dicomStores.create": "roles/healthcare.dicomStoreAdmin",
    "bigquery.datasets.create": "roles/bigquery.user",
    "bigquery.jobs.create": "roles/bigquery.jobUser",
    "resourcemanager.projects.getIamPolicy": "roles/resourcemanager.projectIamAdmin",
    "resourcemanager.projects.setIamPolicy": "roles/resourcemanager.projectIamAdmin",
    "serviceusage.services.enable": "roles/serviceusage.serviceUsageAdmin",
    "storage.buckets.getIamPolicy": "roles/storage.admin",
    "storage.buckets.setIamPolicy": "roles/storage.admin",
    "pubsub.topics.getIamPolicy": "roles/pubsub.admin",
    "pubsub.topics.setIamPolicy": "roles/pubsub.admin",
    "cloudkms.cryptoKeys.getIamPolicy": "roles/cloudkms.admin",
    "cloudkms.cryptoKeys.setIamPolicy": "roles/cloudkms.admin",
    "iam.serviceAccounts.create": "roles/iam.serviceAccountCreator",
    "iam.serviceAccounts.actAs": "roles/iam.serviceAccountUser",
    "iam.roles.create": "roles/iam.roleAdmin",
    "cloudscheduler.jobs.create": "roles/cloudscheduler.admin",
    "healthcare.dicomStores.getIamPolicy": "roles/healthcare.dicomStoreAdmin",
    "healthcare.dicomStores.setIamPolicy": "roles/healthcare.dicomStoreAdmin",
    "logging.logMetrics.create": "roles/logging.configWriter",
    "monitoring.alertPolicies.create": "roles/monitoring.alertPolicyEditor",
    "monitoring.notificationChannels.create": "roles/monitoring.notificationChannelEditor",
}
# The optional parts' creates, each checked on its project (pulumi-gcp type -> permission).
CREATE_PERMISSION = {
    "gcp:serviceaccount/account:Account": "iam.serviceAccounts.create",
    "gcp:projects/iAMCustomRole:IAMCustomRole": "iam.roles.create",
    "gcp:cloudscheduler/job:Job": "cloudscheduler.jobs.create",
    "gcp:logging/metric:Metric": "logging.logMetrics.create",
    "gcp:monitoring/alertPolicy:AlertPolicy": "monitoring.alertPolicies.create",
    "gcp:monitoring/notificationChannel:NotificationChannel": (
        "monitoring.notificationChannels.create"
    ),
}


@dataclass(frozen=True)
class PreflightCheck:
    area: Literal["api", "resource", "permission", "existing"]
    subject: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class PreflightReport:
    stack: str
    checks: list[PreflightCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(check.status == "fail" for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "ok": self.ok,
            "checks": [asdict(check) for check in self.checks],
            "notes": self.notes,
        }


@dataclass(frozen=True)
class NeededPermission:
    resource: str  # "projects/P", "buckets/B", a topic or key name
    permission: str
    why: str


def needed_permissions(plan: Plan) -> list[NeededPermission]:
    """The caller's permissions each planned create or IAM change needs, from the plan alone."""
    needed: list[NeededPermission] = []

    def need(resource: str, permission: str, why: str) -> None:
        needed.append(NeededPermission(resource, permission, why))

    for r in plan.custom_resources():
        kind = r.type.rsplit(":", 1)[-1]
        if r.type == "gcp:healthcare/dataset:Dataset":
            need(f"projects/{r.inputs['project']}", "healthcare.datasets.create", r.name)
        elif kind == "DicomStore":
            project = str(r.inputs["dataset"]).split("/")[1]
            need(f"projects/{project}", "healthcare.dicomStores.create", r.name)
        elif r.type == "gcp:bigquery/dataset:Dataset":
            # The creator is the new dataset's owner, so its IAM member needs nothing more
            # (https://cloud.google.com/bigquery/docs/datasets#required_permissions).
            need(f"projects/{r.inputs['project']}", "bigquery.datasets.create", r.name)
        elif kind == "IAMMember":
            for verb in ("get", "set"):
                need(
                    f"projects/{r.inputs['project']}",
                    f"resourcemanager.projects.{verb}IamPolicy",
                    r.name,
                )
        elif kind == "BucketIAMMember":
            for verb in ("get", "set"):
                need(f"buckets/{r.inputs['bucket']}", f"storage.buckets.{verb}IamPolicy", r.name)
        elif kind == "TopicIAMMember":
            for verb in ("get", "set"):
                need(str(r.inputs["topic"]), f"pubsub.topics.{verb}IamPolicy", r.name)
        elif kind == "CryptoKeyIAMMember":
            for verb in ("get", "set"):
                need(str(r.inputs["cryptoKeyId"]), f"cloudkms.cryptoKeys.{verb}IamPolicy", r.name)
        elif kind == "DicomStoreIamMember":
            # The store may not exist before the first up: tested on its project, which is
            # where a role granting these is usually held.
            project = str(r.inputs["dicomStoreId"]).split("/")[0]
            for verb in ("get", "set"):
                need(f"projects/{project}", f"healthcare.dicomStores.{verb}IamPolicy", r.name)
        elif r.type in CREATE_PERMISSION:
            need(f"projects/{r.inputs['project']}", CREATE_PERMISSION[r.type], r.name)
            if "oauthToken" in (r.inputs.get("httpTarget") or {}):
                # cloudscheduler v1 discovery, OAuthToken.serviceAccountEmail: "The caller must
                # have iam.serviceAccounts.actAs permission for the service account." Tested on
                # the project: the account does not exist before the first up.
                need(f"projects/{r.inputs['project']}", "iam.serviceAccounts.actAs", r.name)
    for invoke in plan.invokes:
        if invoke.token.endswith("getDefaultServiceAccount"):
            # bigquery v2 discovery document, projects.getServiceAccount: "Requires the
            # bigquery.jobs.create permission on the project resource."
            need(f"projects/{invoke.args['project']}", "bigquery.jobs.create", invoke.token)
    return needed


def _read(call: Callable[[], Any]) -> tuple[Any, ApiCallError | None]:
    try:
        return call(), None
    except ApiCallError as error:
        return None, error


def _grant_fix(resource: str, permissions: list[str]) -> str:
    roles = sorted({ROLE_FOR.get(p, "a role with it") for p in permissions})
    return f"ask for {' or '.join(roles)} on {resource} (it holds {', '.join(permissions)})"


def run_preflight(
    *,
    plan: Plan,
    connection: Connection,
    owned_ids: set[str] | None,
    owned_note: str = "",
    retry: RetryPolicy | None = None,
) -> PreflightReport:
    """Check the stack's plan against the live project; never writes anything."""
    apis = DiscoveryClients(connection, retry)
    report = PreflightReport(stack=plan.stack)
    if owned_ids is None:
        report.notes.append(
            f"what stack {plan.stack} already manages is unknown ({owned_note}): existing "
            "resources are reported as warnings"
        )
    held = _check_permissions(apis, plan, report)
    _check_apis(apis, plan, report, held)
    _check_references(apis, plan, report)
    _check_existing(apis, plan, report, owned_ids)
    return report


def _test_permissions(
    apis: DiscoveryClients, resource: str, asked: list[str]
) -> set[str] | ApiCallError:
    body = {"permissions": sorted(set(asked))}
    if resource.startswith("projects/") and "/" not in resource[len("projects/") :]:
        api = apis.api("cloudresourcemanager")
        call = api.service.projects().testIamPermissions(resource=resource.split("/")[1], body=body)
    elif resource.startswith("buckets/"):
        api = apis.api("storage")
        call = api.service.buckets().testIamPermissions(
            bucket=resource.split("/")[1], permissions=body["permissions"]
        )
    elif "/topics/" in resource:
        api = apis.api("pubsub")
        call = api.service.projects().topics().testIamPermissions(resource=resource, body=body)
    else:
        api = apis.api("cloudkms")
        call = (
            api.service.projects()
            .locations()
            .keyRings()
            .cryptoKeys()
            .testIamPermissions(resource=resource, body=body)
        )
    answer, error = _read(lambda: api.call(call))
    if error is not None:
        return error
    return set(answer.get("permissions") or [])


def _check_permissions(
    apis: DiscoveryClients, plan: Plan, report: PreflightReport
) -> dict[str, set[str]]:
    by_resource: dict[str, list[str]] = {}
    for need in needed_permissions(plan):
        by_resource.setdefault(need.resource, []).append(need.permission)
    held: dict[str, set[str]] = {}
    for resource, asked in sorted(by_resource.items()):
        extra = ["serviceusage.services.enable"] if resource.startswith("projects/") else []
        answer = _test_permissions(apis, resource, asked + extra)
        if isinstance(answer, ApiCallError):
            if answer.status == 404:
                continue  # reported by the existence checks
            report.checks.append(
                PreflightCheck(
                    "permission",
                    resource,
                    "warn",
                    f"could not test your permissions there ({answer.status} {answer.reason}: "
                    f"{answer.message[:200]})",
                    f"check by hand: gcloud ... get-iam-policy on {resource}",
                )
            )
            continue
        held[resource] = answer
        missing = sorted(set(asked) - answer)
        if missing:
            report.checks.append(
                PreflightCheck(
                    "permission",
                    resource,
                    "fail",
                    f"you lack {', '.join(missing)}: `pulumi up` will fail creating or granting "
                    "there",
                    _grant_fix(resource, missing),
                )
            )
        else:
            report.checks.append(
                PreflightCheck(
                    "permission", resource, "ok", f"you hold {', '.join(sorted(set(asked)))}"
                )
            )
    return held


def _check_apis(
    apis: DiscoveryClients, plan: Plan, report: PreflightReport, held: dict[str, set[str]]
) -> None:
    for r in plan.custom_resources():
        if r.type != "gcp:projects/service:Service":
            continue
        project, service = str(r.inputs["project"]), str(r.inputs["service"])
        subject = f"{service} in {project}"
        api = apis.api("serviceusage")
        request = api.service.services().get(name=f"projects/{project}/services/{service}")
        answer, error = _read(partial(api.call, request))
        if error is not None:
            report.checks.append(
                PreflightCheck(
                    "api",
                    subject,
                    "warn",
                    f"could not read its state ({error.status} {error.reason})",
                    f"gcloud services list --enabled --project {project}",
                )
            )
        elif answer.get("state") == "ENABLED":
            report.checks.append(PreflightCheck("api", subject, "ok", "enabled"))
        elif "serviceusage.services.enable" in held.get(f"projects/{project}", set()):
            report.checks.append(
                PreflightCheck("api", subject, "ok", "disabled; `pulumi up` will enable it")
            )
        else:
            report.checks.append(
                PreflightCheck(
                    "api",
                    subject,
                    "fail",
                    "disabled, and you lack serviceusage.services.enable to enable it",
                    f"gcloud services enable {service} --project {project} (someone with "
                    "roles/serviceusage.serviceUsageAdmin)",
                )
            )


def _check_references(apis: DiscoveryClients, plan: Plan, report: PreflightReport) -> None:
    """The bucket, topic and keys the stack grants roles on but does not create."""
    for r in plan.custom_resources():
        kind = r.type.rsplit(":", 1)[-1]
        if kind == "BucketIAMMember":
            _check_bucket(apis, str(r.inputs["bucket"]), report)
        elif kind == "TopicIAMMember":
            _check_topic(apis, str(r.inputs["topic"]), report)
        elif kind == "CryptoKeyIAMMember":
            _check_key(apis, str(r.inputs["cryptoKeyId"]), plan, report)


def _missing(area_subject: str, error: ApiCallError, create: str) -> PreflightCheck:
    if error.status == 404:
        return PreflightCheck(
            "resource",
            area_subject,
            "fail",
            "does not exist: the stack grants a role on it",
            create,
        )
    return PreflightCheck(
        "resource",
        area_subject,
        "warn",
        f"could not read it ({error.status} {error.reason}: {error.message[:200]})",
        "check that it exists and that you may read it",
    )


def _check_bucket(apis: DiscoveryClients, bucket: str, report: PreflightReport) -> None:
    api = apis.api("storage")
    answer, error = _read(lambda: api.call(api.service.buckets().get(bucket=bucket)))
    subject = f"gs://{bucket}"
    if error is not None:
        report.checks.append(
            _missing(
                subject,
                error,
                f"gcloud storage buckets create gs://{bucket} --location LOCATION "
                "--uniform-bucket-level-access",
            )
        )
        return
    report.checks.append(
        PreflightCheck("resource", subject, "ok", f"exists in {answer.get('location', '?')}")
    )


def _check_topic(apis: DiscoveryClients, topic: str, report: PreflightReport) -> None:
    api = apis.api("pubsub")
    _, error = _read(lambda: api.call(api.service.projects().topics().get(topic=topic)))
    if error is not None:
        project, name = topic.split("/")[1], topic.split("/")[3]
        report.checks.append(
            _missing(topic, error, f"gcloud pubsub topics create {name} --project {project}")
        )
        return
    report.checks.append(PreflightCheck("resource", topic, "ok", "exists"))


def _check_key(apis: DiscoveryClients, key: str, plan: Plan, report: PreflightReport) -> None:
    api = apis.api("cloudkms")
    answer, error = _read(
        lambda: api.call(api.service.projects().locations().keyRings().cryptoKeys().get(name=key))
    )
    parts = key.split("/")
    if error is not None:
        report.checks.append(
            _missing(
                key,
                error,
                f"gcloud kms keys create {parts[7]} --keyring {parts[5]} --location {parts[3]} "
                f"--purpose encryption --project {parts[1]}",
            )
        )
        return
    purpose = answer.get("purpose")
    state = (answer.get("primary") or {}).get("state")
    if purpose != "ENCRYPT_DECRYPT":
        report.checks.append(
            PreflightCheck(
                "resource",
                key,
                "fail",
                f"its purpose is {purpose}; CMEK needs a symmetric ENCRYPT_DECRYPT key",
                "create a key with --purpose encryption and point the stack at it",
            )
        )
    elif state != "ENABLED":
        report.checks.append(
            PreflightCheck(
                "resource",
                key,
                "fail",
                f"its primary version is {state or 'missing'}: the dataset cannot be encrypted",
                f"gcloud kms keys versions enable VERSION --key {parts[7]} --keyring {parts[5]} "
                f"--location {parts[3]} --project {parts[1]}",
            )
        )
    else:
        report.checks.append(
            PreflightCheck("resource", key, "ok", f"ENCRYPT_DECRYPT, enabled, in {parts[3]}")
        )


def _import_command(plan: Plan, resource: PlannedResource, resource_id: str) -> str:
    parent = next((r for r in plan.resources if r.name == resource.parent), None)
    parent_flag = f" --parent '{parent.name}={parent.urn}'" if parent and parent.urn else ""
    protect = "" if resource.protect else " --protect=false"
    return (
        f"pulumi import {resource.type} {resource.name} '{resource_id}'{parent_flag}{protect} "
        f"--stack {plan.stack}   (or choose another ID in Pulumi.{plan.stack}.yaml)"
    )


def _check_existing(
    apis: DiscoveryClients, plan: Plan, report: PreflightReport, owned_ids: set[str] | None
) -> None:
    """A dataset or store with the stack's name that exists makes `pulumi up` fail with 409,
    unless the stack already manages it."""
    for r in plan.custom_resources():
        if r.type == "gcp:healthcare/dataset:Dataset":
            name = naming.healthcare_dataset_name(
                str(r.inputs["project"]), str(r.inputs["location"]), str(r.inputs["name"])
            )
            api = apis.api("healthcare")
            call = api.service.projects().locations().datasets().get(name=name)
            resource_id = name
        elif r.type == "gcp:healthcare/dicomStore:DicomStore":
            name = f"{r.inputs['dataset']}/dicomStores/{r.inputs['name']}"
            api = apis.api("healthcare")
            call = api.service.projects().locations().datasets().dicomStores().get(name=name)
            resource_id = name
        elif r.type == "gcp:bigquery/dataset:Dataset":
            project, dataset = str(r.inputs["project"]), str(r.inputs["datasetId"])
            api = apis.api("bigquery")
            call = api.service.datasets().get(projectId=project, datasetId=dataset)
            name = f"{project}.{dataset}"
            resource_id = f"projects/{project}/datasets/{dataset}"
        else:
            continue
        _, error = _read(partial(api.call, call))
        if error is not None and error.status == 404:
            report.checks.append(PreflightCheck("existing", name, "ok", "free: will be created"))
        elif error is not None:
            report.checks.append(
                PreflightCheck(
                    "existing",
                    name,
                    "warn",
                    f"could not tell whether it exists ({error.status} {error.reason})",
                    "check by hand that no resource has this name",
                )
            )
        elif owned_ids is not None and resource_id in owned_ids:
            report.checks.append(
                PreflightCheck("existing", name, "ok", f"exists, managed by stack {plan.stack}")
            )
        else:
            report.checks.append(
                PreflightCheck(
                    "existing",
                    name,
                    "fail" if owned_ids is not None else "warn",
                    "already exists outside the stack: `pulumi up` would fail creating it",
                    _import_command(plan, r, resource_id),
                )
            )


def preflight_stack(*, stack: str, project_dir: Any, impersonate: str | None) -> PreflightReport:
    """Plan the stack offline, then check that plan against Google with the caller's identity."""
    from dicom_bq.stack.config import read_stack_config
    from dicom_bq.stack.plan import plan_stack

    plan = plan_stack(read_stack_config(project_dir, stack))
    return preflight_plan(plan=plan, project_dir=project_dir, impersonate=impersonate)


def preflight_plan(*, plan: Plan, project_dir: Any, impersonate: str | None) -> PreflightReport:
    """Check an already planned stack against Google with the caller's identity."""
    from dicom_bq.stack.outputs import read_stack_resource_ids

    assert plan.settings is not None
    connection = Connection(universe_domain=plan.settings.universe_domain, impersonate=impersonate)
    owned, why = read_stack_resource_ids(plan.stack, project_dir)
    report = run_preflight(plan=plan, connection=connection, owned_ids=owned, owned_note=why)
    report.notes[:0] = plan.notes
    return report


def report_lines(report: PreflightReport) -> list[str]:
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    lines = []
    for check in report.checks:
        lines.append(f"{marks[check.status]} {check.area:<10} {check.subject}: {check.detail}")
        if check.fix and check.status != "ok":
            lines.append(f"     fix: {check.fix}")
    failed = sum(c.status == "fail" for c in report.checks)
    warned = sum(c.status == "warn" for c in report.checks)
    if failed:
        lines.append(
            f"{failed} check(s) failed: the first `pulumi up` of {report.stack} would fail"
        )
    else:
        lines.append(
            f"all clear for {report.stack}"
            + (f" ({warned} warning(s): read them)" if warned else "")
        )
    return lines
