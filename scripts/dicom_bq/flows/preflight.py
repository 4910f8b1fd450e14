"""`dicom-bq preflight`: what the first `pulumi up` of a stack needs, checked with the caller's
credentials before anything is created.

What is checked comes from the stack's plan (the resources and grants it will create), so it
follows the program: APIs it enables, resources it grants roles on but does not create (bucket,
topic, keys), the caller's permissions for each create and IAM change (testIamPermissions, which
answers the subset of the asked permissions the caller holds), and resources with the stack's
names that already exist. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Literal

from dicom_bq.clients.discovery import ApiCallError, DiscoveryClients, GoogleApi
from dicom_bq.clients.endpoints import Connection
from dicom_bq.clients.retry import RetryPolicy
from dicom_bq.security.audit import LivePolicy, PolicyReader, check_command
from dicom_bq.security.stacks import (
    AgentOwners,
    ProjectNumbers,
    ProjectStacks,
    describe_command,
    kept_grants,
    with_number,
)
from dicom_bq.stack.plan import Plan, PlannedResource
from dicom_bq.vocabulary import naming
from dicom_bq.vocabulary.contract import OutputNames
from dicom_bq.vocabulary.scopes import (
    SCOPE_KINDS,
    ParsedScope,
    ScopeKind,
    ScopeKindName,
    kind_of_member,
    parse_scope,
    project_scope,
)

Status = Literal["ok", "fail", "warn"]

# The narrowest predefined role that holds each permission the deployer needs, for the fix text
# (https://cloud.google.com/iam/docs/roles-permissions); those granting on a scope are its kind's.
ROLE_FOR = {
    "healthcare.datasets.create": "roles/healthcare.datasetAdmin",
    "healthcare.dicomStores.create": "roles/healthcare.dicomStoreAdmin",
    "bigquery.datasets.create": "roles/bigquery.user",
    "bigquery.jobs.create": "roles/bigquery.jobUser",
    "serviceusage.services.enable": "roles/serviceusage.serviceUsageAdmin",
    "iam.serviceAccounts.create": "roles/iam.serviceAccountCreator",
    "iam.serviceAccounts.actAs": "roles/iam.serviceAccountUser",
    "iam.roles.create": "roles/iam.roleAdmin",
    "cloudscheduler.jobs.create": "roles/cloudscheduler.admin",
    "logging.logMetrics.create": "roles/logging.configWriter",
    "monitoring.alertPolicies.create": "roles/monitoring.alertPolicyEditor",
    "monitoring.notificationChannels.create": "roles/monitoring.notificationChannelEditor",
} | {
    permission: kind.preflight.admin_role
    for kind in SCOPE_KINDS.values()
    for permission in kind.preflight.grant_permissions
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
    area: Literal["identity", "api", "resource", "permission", "existing", "shared"]
    subject: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class PreflightReport:
    stack: str
    checks: list[PreflightCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Where the checks' requests and `pulumi up` go: universeDomain and gcpProvider.
    universe: dict[str, Any] = field(default_factory=dict)
    universe_text: str = ""

    @property
    def ok(self) -> bool:
        return not any(check.status == "fail" for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "ok": self.ok,
            **({"universe": self.universe} if self.universe else {}),
            "checks": [asdict(check) for check in self.checks],
            "notes": self.notes,
        }


def _parsed(scope: str) -> ParsedScope:
    parsed = parse_scope(scope)
    assert parsed is not None, f"{scope} is of no kind vocabulary/scopes.py describes"
    return parsed


@dataclass(frozen=True)
class NeededPermission:
    scope: str  # the full resource name (vocabulary/scopes.py) the permission is tested on
    permission: str
    why: str

    @property
    def resource(self) -> str:
        """The scope as the report names it: "projects/P", "buckets/B", a topic or key name."""
        parsed = _parsed(self.scope)
        return parsed.kind.preflight.subject.format(**parsed.parts)


def tested_scope(kind: ScopeKind, scope: str) -> str | None:
    """Where the permissions to grant on `scope` are tested, as its kind says; None: nowhere."""
    tested_on = kind.preflight.tested_on
    if tested_on == "nowhere":
        return None
    if tested_on == "project":
        return project_scope(_parsed(scope).parts["project"])
    return scope


def needed_permissions(plan: Plan) -> list[NeededPermission]:
    """The caller's permissions each planned create or IAM change needs, from the plan alone."""
    needed: list[NeededPermission] = []

    def need(scope: str, permission: str, why: str) -> None:
        needed.append(NeededPermission(scope, permission, why))

    def on_project(project: Any) -> str:
        return project_scope(str(project))

    for r in plan.custom_resources():
        granted_on = kind_of_member(r.type)
        if granted_on is not None:
            tested = tested_scope(granted_on, granted_on.uri_from_inputs(r.inputs))
            if tested is not None:
                for permission in granted_on.preflight.grant_permissions:
                    need(tested, permission, r.name)
        elif r.type == "gcp:healthcare/dataset:Dataset":
            need(on_project(r.inputs["project"]), "healthcare.datasets.create", r.name)
        elif r.type.rsplit(":", 1)[-1] == "DicomStore":
            project = str(r.inputs["dataset"]).split("/")[1]
            need(on_project(project), "healthcare.dicomStores.create", r.name)
        elif r.type == "gcp:bigquery/dataset:Dataset":
            # Its creator owns it, so a grant on it asks nothing more (scopes.py, tested_on).
            need(on_project(r.inputs["project"]), "bigquery.datasets.create", r.name)
        elif r.type in CREATE_PERMISSION:
            need(on_project(r.inputs["project"]), CREATE_PERMISSION[r.type], r.name)
            if "oauthToken" in (r.inputs.get("httpTarget") or {}):
                # cloudscheduler v1 discovery, OAuthToken.serviceAccountEmail: "The caller must
                # have iam.serviceAccounts.actAs permission for the service account." Tested on
                # the project: the account does not exist before the first up.
                need(on_project(r.inputs["project"]), "iam.serviceAccounts.actAs", r.name)
    for invoke in plan.invokes:
        if invoke.token.endswith("getDefaultServiceAccount"):
            # bigquery v2 discovery document, projects.getServiceAccount: "Requires the
            # bigquery.jobs.create permission on the project resource."
            need(on_project(invoke.args["project"]), "bigquery.jobs.create", invoke.token)
    return needed


def _read(call: Callable[[], Any]) -> tuple[Any, ApiCallError | None]:
    try:
        return call(), None
    except ApiCallError as error:
        return None, error


def _together(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _grant_fix(resource: str, permissions: list[str]) -> str:
    """The roles to ask for: the smallest set of Google's predefined roles in the package's role
    data that together hold every missing permission (security/roles.py, smallest_role_set),
    named as one request, never as alternatives."""
    from dicom_bq.security.roles import deployer_roles_date, smallest_role_set

    found = smallest_role_set(permissions)
    parts = []
    if found.roles:
        held = sorted(set(permissions) - set(found.uncovered))
        holds = "it holds" if len(found.roles) == 1 else "together they hold"
        parts.append(
            f"ask for {_together(list(found.roles))} on {resource} ({holds} {', '.join(held)})"
        )
    if found.uncovered:
        parts.append(
            f"no predefined role in dicom-bq's role data of {deployer_roles_date()} holds "
            f"{', '.join(found.uncovered)}: ask for a custom role with "
            f"{'it' if len(found.uncovered) == 1 else 'them'} on {resource}"
        )
    return "; ".join(parts)


def run_preflight(
    *,
    plan: Plan,
    connection: Connection,
    owned_ids: set[str] | None,
    owned_note: str = "",
    retry: RetryPolicy | None = None,
    stacks: ProjectStacks | None = None,
) -> PreflightReport:
    """Check the stack's plan against the live project; never writes anything."""
    apis = DiscoveryClients(connection, retry)
    report = PreflightReport(stack=plan.stack)
    if owned_ids is None:
        report.notes.append(
            f"what stack {plan.stack} already manages is unknown ({owned_note}): existing "
            "resources are reported as warnings"
        )
    numbers = ProjectNumbers(apis)
    agent = _check_project_numbers(numbers, plan, report)
    held = _check_permissions(apis, plan, report)
    _check_apis(apis, plan, report, held)
    _check_references(apis, plan, report)
    _check_existing(apis, plan, report, owned_ids)
    _check_shared_grants(PolicyReader(connection, retry), plan, report, agent, stacks, numbers)
    return report


# -- The project numbers the stack names, against Resource Manager ----------------------------


def _check_project_numbers(
    numbers: ProjectNumbers, plan: Plan, report: PreflightReport
) -> tuple[str, str] | None:
    """Each configured project number against the project's real one (Resource Manager
    projects.get), and the source project's number even when none is configured: the agent's
    address is made from it. Returns (the agent's address in the plan, its live address)."""
    settings = plan.settings
    assert settings is not None
    checked = [("sourceProjectNumber", settings.source_project, settings.source_project_number)]
    if settings.destination_project_number:
        checked.append(
            (
                "destinationProjectNumber",
                settings.bigquery_project,
                settings.destination_project_number,
            )
        )
    live_agent: tuple[str, str] | None = None
    for key, project, configured in checked:
        found = numbers.of(project)
        subject = f"number of {project}"
        if found.number is None:
            report.checks.append(
                PreflightCheck(
                    "identity",
                    subject,
                    "warn",
                    f"could not read it from Resource Manager ({found.error}): "
                    + (
                        f"dicom-bq:{key} {configured} is unverified"
                        if configured
                        else "the agent's address is known only once `pulumi up` runs"
                    ),
                    describe_command(project),
                )
            )
            continue
        if key == "sourceProjectNumber":
            planned = _planned_agent(plan)
            if planned is not None:
                live_agent = (planned, with_number(planned, found.number))
        if configured is None:
            report.checks.append(
                PreflightCheck(
                    "identity",
                    subject,
                    "ok",
                    f"{found.number} (Resource Manager); the program reads it too",
                )
            )
        elif configured == found.number:
            report.checks.append(
                PreflightCheck(
                    "identity",
                    subject,
                    "ok",
                    f"dicom-bq:{key} {configured} is the project's number (Resource Manager)",
                )
            )
        else:
            whose = (
                f": the stack would grant service-{configured}@gcp-sa-healthcare..., another "
                "project's Cloud Healthcare service agent, and `pulumi up` refuses it before "
                "any grant"
                if key == "sourceProjectNumber"
                else ": the plan's addresses of BigQuery's encryption account are wrong"
            )
            report.checks.append(
                PreflightCheck(
                    "identity",
                    subject,
                    "fail",
                    f"dicom-bq:{key} {configured} is not the number of project {project}: "
                    f"Resource Manager says {found.number}{whose}",
                    f"pulumi config set dicom-bq:{key} {found.number} --stack {plan.stack} "
                    "(or remove the key: the program reads the number)",
                )
            )
    return live_agent


def _planned_agent(plan: Plan) -> str | None:
    agent = plan.outputs.get(OutputNames.AGENT)
    return f"serviceAccount:{agent}" if isinstance(agent, str) and agent else None


# -- Grants on shared scopes: who already holds them -----------------------------------------


def _check_shared_grants(
    reader: PolicyReader,
    plan: Plan,
    report: PreflightReport,
    agent: tuple[str, str] | None,
    stacks: ProjectStacks | None,
    numbers: ProjectNumbers,
) -> None:
    """Each grant the stack keeps on delete (on a scope it does not create): whether the binding
    exists already, and who else holds the role there, other stacks' agents named. The stack
    adds its member where it is missing and, destroyed, leaves the binding in place."""
    owners = stacks.agents(numbers, besides=plan.stack) if stacks is not None else None
    policies: dict[str, LivePolicy] = {}
    for grant in kept_grants(plan):
        member = grant.member
        if agent is not None and member.lower() == agent[0].lower():
            member = agent[1]
        if grant.scope not in policies:
            policies[grant.scope] = reader.read(grant.scope) or LivePolicy(
                grant.scope, error="no reader for this kind of scope"
            )
        policy = policies[grant.scope]
        parsed = _parsed(grant.scope)
        subject = f"{grant.role} on {parsed.kind.preflight.subject.format(**parsed.parts)}"
        if not policy.read:
            report.checks.append(
                PreflightCheck(
                    "shared",
                    subject,
                    "warn",
                    f"could not read its IAM policy ({policy.error}): whether the binding exists "
                    "and who else holds the role there is unknown",
                    check_command(grant.scope),
                )
            )
            continue
        holders = [
            b.member for b in policy.bindings if b.role == grant.role and b.condition is None
        ]
        held = any(h.lower() == member.lower() for h in holders)
        others = [_holder(h, owners) for h in holders if h.lower() != member.lower()]
        state = (
            f"{member} holds it already (a person or another stack granted it): `pulumi up` "
            "adds this stack's own member resource"
            if held
            else f"will be granted to {member}"
        )
        also = f"; also held there by {', '.join(others)}" if others else "; nobody else holds it"
        report.checks.append(
            PreflightCheck("shared", subject, "ok", f"{state}{also}; kept on destroy")
        )
    if policies:
        report.notes.append(
            f"grants on scopes stack {plan.stack} does not create are kept when it is destroyed "
            "(another stack or a person may hold the same binding): `dicom-bq shared-grants "
            f"--stack {plan.stack}` lists them with the commands that remove them"
        )


def _holder(member: str, owners: AgentOwners | None) -> str:
    stacks = owners.stacks_of(member) if owners is not None else []
    if stacks:
        return f"{member} (the agent of stack {', '.join(stacks)})"
    return member


def permission_test(
    apis: DiscoveryClients, scope: str, permissions: list[str]
) -> tuple[GoogleApi, Any]:
    """The API and testIamPermissions request asking which of `permissions` the caller holds on
    `scope`, as its kind describes it."""
    parsed = _parsed(scope)
    how = parsed.kind.preflight.test
    assert how is not None, f"preflight has no permission test for a {parsed.kind.title}"
    api = apis.api(how.api)
    return api, api.request(how.method, how.request_arguments(parsed.parts, permissions))


def _test_permissions(
    apis: DiscoveryClients, scope: str, asked: list[str]
) -> set[str] | ApiCallError:
    api, call = permission_test(apis, scope, sorted(set(asked)))
    answer, error = _read(lambda: api.call(call))
    if error is not None:
        return error
    return set(answer.get("permissions") or [])


def _check_permissions(
    apis: DiscoveryClients, plan: Plan, report: PreflightReport
) -> dict[str, set[str]]:
    """What the caller holds of what each scope's creates and grants need, by scope."""
    by_scope: dict[str, list[str]] = {}
    subjects: dict[str, str] = {}
    for need in needed_permissions(plan):
        by_scope.setdefault(need.scope, []).append(need.permission)
        subjects[need.scope] = need.resource
    held: dict[str, set[str]] = {}
    for scope, asked in sorted(by_scope.items(), key=lambda item: subjects[item[0]]):
        resource = subjects[scope]
        on_project = _parsed(scope).kind.name == "project"
        extra = ["serviceusage.services.enable"] if on_project else []
        answer = _test_permissions(apis, scope, asked + extra)
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
        held[scope] = answer
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
        elif answer.get("state") != "DISABLED":
            # serviceusage v1 Service.state: ENABLED, DISABLED or STATE_UNSPECIFIED.
            said = answer.get("state")
            report.checks.append(
                PreflightCheck(
                    "api",
                    subject,
                    "warn",
                    "Google did not say whether it is enabled"
                    + (f" (its state is {said})" if said else " (no state in its answer)"),
                    f"gcloud services list --enabled --project {project}",
                )
            )
        elif "serviceusage.services.enable" in held.get(project_scope(project), set()):
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
    """The scopes the stack grants roles on but does not create (bucket, topic, keys)."""
    for r in plan.custom_resources():
        kind = kind_of_member(r.type)
        if kind is not None and kind.preflight.existence is not None:
            _check_exists(apis, kind, kind.uri_from_inputs(r.inputs), report)


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


def existence_read(apis: DiscoveryClients, kind: ScopeKind, scope: str) -> tuple[GoogleApi, Any]:
    """The API and request that read `scope`, which answers 404 when it does not exist."""
    how = kind.preflight.existence
    assert how is not None, f"preflight has no existence read for a {kind.title}"
    api = apis.api(how.api)
    return api, api.request(how.method, how.request_arguments(_parsed(scope).parts))


def _check_exists(
    apis: DiscoveryClients, kind: ScopeKind, scope: str, report: PreflightReport
) -> None:
    how = kind.preflight.existence
    assert how is not None
    parts = _parsed(scope).parts
    api, call = existence_read(apis, kind, scope)
    answer, error = _read(lambda: api.call(call))
    subject = how.subject.format(**parts)
    if error is not None:
        report.checks.append(_missing(subject, error, how.create.format(**parts)))
        return
    judge = _WHAT_IT_MUST_BE.get(kind.name)
    report.checks.append(
        judge(subject, parts, answer)
        if judge
        else PreflightCheck("resource", subject, "ok", "exists")
    )


def _bucket_found(subject: str, parts: Mapping[str, str], bucket: Any) -> PreflightCheck:
    location = bucket.get("location")
    where = f"in {location}" if location else "(its location was not in Google's answer)"
    return PreflightCheck("resource", subject, "ok", f"exists {where}")


def _key_found(subject: str, parts: Mapping[str, str], key: Any) -> PreflightCheck:
    """Every key the stack grants on encrypts a dataset (CMEK): it must be able to."""
    purpose = key.get("purpose")
    state = (key.get("primary") or {}).get("state")
    if purpose != "ENCRYPT_DECRYPT":
        said = f"its purpose is {purpose}" if purpose else "Google's answer gives no purpose"
        return PreflightCheck(
            "resource",
            subject,
            "fail",
            f"{said}; CMEK needs a symmetric ENCRYPT_DECRYPT key",
            "create a key with --purpose encryption and point the stack at it",
        )
    if state != "ENABLED":
        return PreflightCheck(
            "resource",
            subject,
            "fail",
            (f"its primary version is {state}" if state else "it has no primary version")
            + ": the dataset cannot be encrypted",
            "gcloud kms keys versions enable VERSION --key {key} --keyring {ring} "
            "--location {location} --project {project}".format(**parts),
        )
    return PreflightCheck(
        "resource", subject, "ok", f"ENCRYPT_DECRYPT, enabled, in {parts['location']}"
    )


# What an existing scope must be for the stack, beyond existing; by kind.
_WHAT_IT_MUST_BE: dict[ScopeKindName, Callable[[str, Mapping[str, str], Any], PreflightCheck]] = {
    "bucket": _bucket_found,
    "crypto_key": _key_found,
}


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
    from dicom_bq.security.stacks import read_project_stacks
    from dicom_bq.stack.outputs import read_stack_resource_ids

    assert plan.settings is not None
    connection = Connection(universe_domain=plan.settings.universe_domain, impersonate=impersonate)
    owned, why = read_stack_resource_ids(plan.stack, project_dir)
    report = run_preflight(
        plan=plan,
        connection=connection,
        owned_ids=owned,
        owned_note=why,
        stacks=read_project_stacks(project_dir),
    )
    report.notes[:0] = plan.notes
    if plan.gcp_provider is not None:
        report.universe = plan.gcp_provider.as_dict()
        report.universe_text = plan.gcp_provider.describe()
    return report


def report_lines(report: PreflightReport) -> list[str]:
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    # The universe first: every check below asked it, and `pulumi up` deploys there.
    lines = [f"universe: {report.universe_text}"] if report.universe_text else []
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
