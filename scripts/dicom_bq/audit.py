"""`dicom-bq audit`: the live IAM policies compared with the stack's grants list."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from dicom_bq.endpoints import Connection
from dicom_bq.errors import EXIT_FAILED, DicomBqError
from dicom_bq.google_api import ApiCallError, GoogleApi
from infra import naming
from infra.policy_rules import AGENT, BASIC_ROLES, PUBLIC_MEMBERS

# Google grants this to the agent on its own project when it creates the agent; removing it
# breaks the Healthcare API, so it is expected, never "extra".
SERVICE_AGENT_ROLE = "roles/healthcare.serviceAgent"
Kind = Literal["missing", "extra", "basic-role", "public", "deleted-principal"]
# BigQuery's legacy dataset roles, as the access list may still spell them.
LEGACY_DATASET_ROLES = {
    "OWNER": "roles/bigquery.dataOwner",
    "WRITER": "roles/bigquery.dataEditor",
    "READER": "roles/bigquery.dataViewer",
}


@dataclass(frozen=True)
class AuditTarget:
    stack: str
    agent_member: str
    grants: tuple[tuple[str, str], ...]  # (role, scope)
    source_project: str
    bigquery_project: str
    bigquery_dataset: str
    filter_bucket: str | None

    @classmethod
    def from_outputs(cls, stack: str, outputs: dict[str, Any]) -> AuditTarget:
        needed = ["agentEmail", "grants", "sourceProject", "bigqueryProject", "bigqueryDataset"]
        missing = [key for key in needed if not outputs.get(key)]
        if missing:
            raise DicomBqError(
                f"the outputs lack {', '.join(missing)}: audit a dicom-bq stack that has been "
                "deployed (pulumi stack output --json > outputs.json; dicom-bq audit --outputs ...)"
            )
        if not AGENT.match(f"serviceAccount:{outputs['agentEmail']}"):
            raise DicomBqError(
                f"the agent's address {outputs['agentEmail']!r} is not known offline: set "
                "dicom-bq:sourceProjectNumber, or audit with --outputs from the deployed stack"
            )
        return cls(
            stack=stack,
            agent_member=f"serviceAccount:{outputs['agentEmail']}",
            grants=tuple(
                (g["role"], g["scope"])
                for g in outputs["grants"]
                if g.get("member") == f"serviceAccount:{outputs['agentEmail']}"
            ),
            source_project=str(outputs["sourceProject"]),
            bigquery_project=str(outputs["bigqueryProject"]),
            bigquery_dataset=str(outputs["bigqueryDataset"]).rsplit(".", 1)[-1],
            filter_bucket=outputs.get("filterBucket") or None,
        )

    def scopes(self) -> list[str]:
        scopes = [
            naming.project_scope(self.source_project),
            naming.project_scope(self.bigquery_project),
            naming.bigquery_dataset_scope(self.bigquery_project, self.bigquery_dataset),
        ]
        if self.filter_bucket:
            scopes.append(naming.bucket_scope(self.filter_bucket))
        return list(dict.fromkeys(scopes))


@dataclass(frozen=True)
class LivePolicy:
    scope: str
    bindings: tuple[tuple[str, str], ...]  # (role, member)


@dataclass(frozen=True)
class AuditFinding:
    kind: Kind
    scope: str
    role: str
    member: str
    message: str
    fix: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _iam_command(scope: str, verb: Literal["add", "remove"], member: str, role: str) -> str:
    tail = f"--member='{member}' --role='{role}'"
    if scope.startswith("//cloudresourcemanager.googleapis.com/projects/"):
        project = scope.rsplit("/", 1)[-1]
        return f"gcloud projects {verb}-iam-policy-binding {project} {tail}"
    if scope.startswith("//bigquery.googleapis.com/projects/"):
        parts = scope.split("/")
        return f"bq {verb}-iam-policy-binding {tail} {parts[4]}:{parts[6]}"
    bucket = scope.rsplit("/", 1)[-1]
    return f"gcloud storage buckets {verb}-iam-policy-binding gs://{bucket} {tail}"


def compare(target: AuditTarget, policies: list[LivePolicy]) -> list[AuditFinding]:
    findings: list[AuditFinding] = []
    held = {
        (role, p.scope)
        for p in policies
        for role, member in p.bindings
        if member == target.agent_member
    }
    read = {p.scope for p in policies}
    for role, scope in target.grants:
        if scope in read and (role, scope) not in held:
            findings.append(
                AuditFinding(
                    "missing",
                    scope,
                    role,
                    target.agent_member,
                    f"the agent lacks {role} on {scope}: exports will fail with PERMISSION_DENIED "
                    "(an authoritative binding or a manual edit may have removed it)",
                    f"pulumi up --stack {target.stack}   # or: "
                    + _iam_command(scope, "add", target.agent_member, role),
                )
            )
    expected = set(target.grants) | {
        (SERVICE_AGENT_ROLE, naming.project_scope(target.source_project))
    }
    for policy in policies:
        for role, member in policy.bindings:
            if member == target.agent_member and (role, policy.scope) not in expected:
                findings.append(
                    AuditFinding(
                        "extra",
                        policy.scope,
                        role,
                        member,
                        f"the agent holds {role} on {policy.scope}, which the grants list "
                        "does not need",
                        _iam_command(policy.scope, "remove", member, role),
                    )
                )
            if member in PUBLIC_MEMBERS:
                findings.append(
                    AuditFinding(
                        "public",
                        policy.scope,
                        role,
                        member,
                        f"{member} holds {role} on {policy.scope}: PHI may be readable by anyone",
                        _iam_command(policy.scope, "remove", member, role),
                    )
                )
            if member.startswith("deleted:"):
                findings.append(
                    AuditFinding(
                        "deleted-principal",
                        policy.scope,
                        role,
                        member,
                        f"{role} is granted to a deleted principal on {policy.scope}; if it "
                        "was the agent, the new agent lacks it",
                        _iam_command(policy.scope, "remove", member, role),
                    )
                )
            if role in BASIC_ROLES and (
                member == target.agent_member
                or not policy.scope.startswith("//cloudresourcemanager")
            ):
                findings.append(
                    AuditFinding(
                        "basic-role",
                        policy.scope,
                        role,
                        member,
                        f"{member} holds the basic role {role} on {policy.scope}",
                        _iam_command(policy.scope, "remove", member, role),
                    )
                )
    return findings


def _bindings(policy: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (str(b.get("role")), str(m))
        for b in policy.get("bindings") or []
        for m in b.get("members") or []
    )


class ProjectPolicies(GoogleApi):
    def __init__(self, connection: Connection) -> None:
        endpoint = connection.resource_manager()
        super().__init__(
            "cloudresourcemanager", "v1", endpoint, connection.credentials(endpoint.emulated)
        )

    def read(self, project: str) -> LivePolicy:
        request = self.service.projects().getIamPolicy(
            resource=project, body={"options": {"requestedPolicyVersion": 3}}
        )
        return LivePolicy(naming.project_scope(project), _bindings(self.call(request)))


def _access_member(entry: Any) -> str | None:
    kind, value = entry.entity_type, str(entry.entity_id)
    if kind == "iamMember":
        return value
    if kind == "userByEmail":
        return ("serviceAccount:" if value.endswith("gserviceaccount.com") else "user:") + value
    if kind == "groupByEmail":
        return f"group:{value}"
    if kind == "domain":
        return f"domain:{value}"
    if kind == "specialGroup" and value in PUBLIC_MEMBERS:
        return value
    return None  # projectOwners/Readers/Writers, views, routines: not principals


def read_dataset_policy(connection: Connection, project: str, dataset: str) -> LivePolicy:
    from google.api_core import exceptions

    try:
        entries = (
            connection.bigquery_client(project).get_dataset(f"{project}.{dataset}").access_entries
        )
    except exceptions.GoogleAPIError as error:
        raise DicomBqError(
            f"cannot read BigQuery dataset {project}:{dataset}: {error}", exit_code=EXIT_FAILED
        ) from None
    bindings = []
    for entry in entries:
        member = _access_member(entry)
        if member and entry.role:
            bindings.append((LEGACY_DATASET_ROLES.get(entry.role, entry.role), member))
    return LivePolicy(naming.bigquery_dataset_scope(project, dataset), tuple(bindings))


def read_bucket_policy(connection: Connection, project: str, bucket: str) -> LivePolicy:
    from google.api_core import exceptions

    try:
        policy = (
            connection.storage_client(project)
            .bucket(bucket)
            .get_iam_policy(requested_policy_version=3)
        )
    except exceptions.GoogleAPIError as error:
        raise DicomBqError(
            f"cannot read bucket gs://{bucket}: {error}", exit_code=EXIT_FAILED
        ) from None
    bindings = tuple((str(b["role"]), str(m)) for b in policy.bindings for m in b["members"])
    return LivePolicy(naming.bucket_scope(bucket), bindings)


def read_live_policies(connection: Connection, target: AuditTarget) -> list[LivePolicy]:
    projects = ProjectPolicies(connection)
    policies = []
    for project in dict.fromkeys([target.source_project, target.bigquery_project]):
        try:
            policies.append(projects.read(project))
        except ApiCallError as error:
            raise DicomBqError(
                f"cannot read the IAM policy of project {project}: {error.status} {error.message}",
                exit_code=EXIT_FAILED,
            ) from None
    policies.append(
        read_dataset_policy(connection, target.bigquery_project, target.bigquery_dataset)
    )
    if target.filter_bucket:
        policies.append(read_bucket_policy(connection, target.source_project, target.filter_bucket))
    return policies
