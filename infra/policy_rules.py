"""Security and data-loss rules, as plain functions over resources and their properties.

The same rules run offline on a recorded plan (`dicom-bq plan --check`), in the CrossGuard pack
(`policy/`, during `pulumi preview --policy-pack policy`), and in `dicom-bq review`. Properties
are Pulumi's camelCase inputs, as both the mock monitor and CrossGuard see them. No Pulumi import.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from infra import naming

Enforcement = Literal["mandatory", "advisory"]
AGENT = re.compile(r"^serviceAccount:service-[0-9A-Za-z_]+@gcp-sa-healthcare\.[a-z0-9.-]+$")
BASIC_ROLES = frozenset({"roles/owner", "roles/editor", "roles/viewer"})
PUBLIC_MEMBERS = frozenset({"allUsers", "allAuthenticatedUsers"})
IMPERSONATION_ROLES = frozenset(
    {
        "roles/iam.serviceAccountUser",
        "roles/iam.serviceAccountTokenCreator",
        "roles/iam.serviceAccountAdmin",
        "roles/iam.workloadIdentityUser",
    }
)
PHI_TYPES = frozenset(
    {
        "gcp:healthcare/dataset:Dataset",
        "gcp:healthcare/dicomStore:DicomStore",
        "gcp:bigquery/dataset:Dataset",
    }
)
BIGQUERY_DATASET = "gcp:bigquery/dataset:Dataset"
HEALTHCARE_DATASET = "gcp:healthcare/dataset:Dataset"
SERVICE_IDENTITY = "gcp:projects/serviceIdentity:ServiceIdentity"


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    props: Mapping[str, Any]
    protect: bool = False


@dataclass(frozen=True)
class ExpectedGrant:
    role: str
    scope: str


@dataclass(frozen=True)
class PolicyContext:
    """What the stack says should be true; None where the checker does not know."""

    protected: bool = False
    expected_grants: frozenset[ExpectedGrant] | None = None
    allowed_bigquery_locations: frozenset[str] | None = None
    require_cmek: bool = False


@dataclass(frozen=True)
class Finding:
    rule: str
    enforcement: Enforcement
    resource: str
    message: str
    remediation: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


Check = Callable[[list[Resource], PolicyContext], Iterable[tuple[str, str]]]


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    description: str
    enforcement: Enforcement
    remediation: str
    check: Check = field(repr=False)
    nearest: str = ""  # the closest Checkov / Trivy / policy-library check, for the README


@dataclass(frozen=True)
class Binding:
    """One (role, member) a resource grants, and where."""

    resource: str
    role: str
    member: str
    scope: str


def _type_name(resource_type: str) -> str:
    return resource_type.rsplit(":", 1)[-1].lower()


def is_authoritative(resource_type: str) -> bool:
    kind = _type_name(resource_type)
    return kind.endswith(("iampolicy", "iambinding"))


def _members(props: Mapping[str, Any]) -> list[str]:
    if isinstance(props.get("member"), str):
        return [props["member"]]
    members = props.get("members")
    return [m for m in members if isinstance(m, str)] if isinstance(members, list) else []


def scope_of(resource: Resource) -> str:
    """The full resource name an IAM resource grants on, in the grants list's vocabulary."""
    p = resource.props
    kind = _type_name(resource.type)
    if resource.type.startswith("gcp:projects/"):
        return naming.project_scope(str(p.get("project", "")))
    if resource.type.startswith("gcp:bigquery/dataset"):
        return naming.bigquery_dataset_scope(str(p.get("project", "")), str(p.get("datasetId", "")))
    if resource.type.startswith("gcp:storage/bucket"):
        return naming.bucket_scope(str(p.get("bucket", "")).removeprefix("b/"))
    if resource.type.startswith("gcp:pubsub/topic"):
        topic = str(p.get("topic", ""))
        if not topic.startswith("projects/"):
            topic = f"projects/{p.get('project', '')}/topics/{topic}"
        return naming.topic_scope(topic)
    if resource.type.startswith("gcp:kms/cryptoKey"):
        return naming.crypto_key_scope(str(p.get("cryptoKeyId", "")))
    return f"//{kind}/{resource.name}"


def bindings(resources: Iterable[Resource]) -> Iterator[Binding]:
    """Every (role, member) granted by IAM resources, and by BigQuery dataset access entries."""
    for resource in resources:
        if "role" in resource.props and isinstance(resource.props["role"], str):
            for member in _members(resource.props):
                yield Binding(resource.name, resource.props["role"], member, scope_of(resource))
        for binding in resource.props.get("bindings") or []:
            if isinstance(binding, Mapping):
                for member in binding.get("members") or []:
                    yield Binding(
                        resource.name, str(binding.get("role")), str(member), scope_of(resource)
                    )
        if resource.type == BIGQUERY_DATASET:
            for entry in resource.props.get("accesses") or []:
                granted = _access_member(entry)
                if granted:
                    yield Binding(
                        resource.name, str(entry.get("role")), granted, scope_of(resource)
                    )


def _access_member(entry: Mapping[str, Any]) -> str | None:
    if entry.get("iamMember"):
        return str(entry["iamMember"])
    if entry.get("userByEmail"):
        email = str(entry["userByEmail"])
        kind = "serviceAccount" if email.endswith("gserviceaccount.com") else "user"
        return f"{kind}:{email}"
    if entry.get("groupByEmail"):
        return f"group:{entry['groupByEmail']}"
    special = {"allAuthenticatedUsers": "allAuthenticatedUsers", "allUsers": "allUsers"}
    return special.get(str(entry.get("specialGroup")))


def _of_type(resources: list[Resource], resource_type: str) -> list[Resource]:
    return [r for r in resources if r.type == resource_type]


# -- the rules ------------------------------------------------------------------------------


def _no_authoritative_iam(resources: list[Resource], _: PolicyContext) -> Iterator[tuple[str, str]]:
    for r in resources:
        if is_authoritative(r.type):
            yield r.name, f"{r.type} replaces every other grant on its resource"


def _no_basic_roles(resources: list[Resource], _: PolicyContext) -> Iterator[tuple[str, str]]:
    for b in bindings(resources):
        if b.role in BASIC_ROLES:
            yield b.resource, f"grants the basic role {b.role} to {b.member} on {b.scope}"


def _no_public_members(resources: list[Resource], _: PolicyContext) -> Iterator[tuple[str, str]]:
    for b in bindings(resources):
        if b.member in PUBLIC_MEMBERS:
            yield b.resource, f"grants {b.role} to {b.member} on {b.scope}: anyone could read PHI"


def _agent_no_admin(resources: list[Resource], _: PolicyContext) -> Iterator[tuple[str, str]]:
    for b in bindings(resources):
        if AGENT.match(b.member) and (
            b.role in IMPERSONATION_ROLES
            or b.role in BASIC_ROLES
            or b.role.endswith(("admin", "Admin"))
        ):
            yield b.resource, f"gives the Healthcare agent {b.role} on {b.scope}"


def _agent_only_listed_roles(
    resources: list[Resource], context: PolicyContext
) -> Iterator[tuple[str, str]]:
    from infra.grants import AGENT_ROLES

    allowed = (
        {g.role for g in context.expected_grants}
        if context.expected_grants is not None
        else set(AGENT_ROLES)
    )
    for b in bindings(resources):
        if AGENT.match(b.member) and b.role not in allowed:
            yield (
                b.resource,
                f"gives the Healthcare agent {b.role}, which the grants list does not name",
            )


def _agent_narrow_scope(
    resources: list[Resource], context: PolicyContext
) -> Iterator[tuple[str, str]]:
    for b in bindings(resources):
        if not AGENT.match(b.member):
            continue
        if context.expected_grants is not None:
            scopes = {g.scope for g in context.expected_grants if g.role == b.role}
            if scopes and b.scope not in scopes:
                yield (
                    b.resource,
                    f"grants {b.role} on {b.scope}; the grants list says {', '.join(sorted(scopes))}",
                )
        elif b.role == "roles/bigquery.dataEditor" and b.scope.startswith("//cloudresourcemanager"):
            yield b.resource, f"grants roles/bigquery.dataEditor on the whole project {b.scope}"


def _no_mixed_dataset_access(
    resources: list[Resource], _: PolicyContext
) -> Iterator[tuple[str, str]]:
    with_access = {
        scope_of(r): r for r in _of_type(resources, BIGQUERY_DATASET) if r.props.get("accesses")
    }
    for r in resources:
        if r.type.startswith("gcp:bigquery/datasetIam") and scope_of(r) in with_access:
            yield (
                r.name,
                (
                    f"manages IAM on {scope_of(r)} whose dataset also sets `accesses` "
                    f"({with_access[scope_of(r)].name}): each apply undoes the other"
                ),
            )


def _phi_protected(resources: list[Resource], context: PolicyContext) -> Iterator[tuple[str, str]]:
    if not context.protected:
        return
    for r in resources:
        if r.type in PHI_TYPES and not r.protect:
            yield r.name, f"{r.type} holds PHI in a protected stack but is not protected"


def _bigquery_keeps_contents(
    resources: list[Resource], _: PolicyContext
) -> Iterator[tuple[str, str]]:
    for r in _of_type(resources, BIGQUERY_DATASET):
        if r.props.get("deleteContentsOnDestroy") is not False:
            yield (
                r.name,
                "deleteContentsOnDestroy is not false: destroying the stack would drop exported PHI",
            )


def _bigquery_location_allowed(
    resources: list[Resource], context: PolicyContext
) -> Iterator[tuple[str, str]]:
    allowed = context.allowed_bigquery_locations
    if allowed is None:
        return
    lowered = {location.lower() for location in allowed}
    for r in _of_type(resources, BIGQUERY_DATASET):
        location = str(r.props.get("location", "US"))
        if location.lower() not in lowered:
            yield r.name, f"BigQuery location {location} is not in the allow-list {sorted(allowed)}"


def _cmek_present(resources: list[Resource], context: PolicyContext) -> Iterator[tuple[str, str]]:
    if not context.require_cmek:
        return
    for r in _of_type(resources, HEALTHCARE_DATASET):
        if not (r.props.get("encryptionSpec") or {}).get("kmsKeyName"):
            yield r.name, "the Healthcare dataset has no customer-managed key (encryptionSpec)"
    for r in _of_type(resources, BIGQUERY_DATASET):
        if not (r.props.get("defaultEncryptionConfiguration") or {}).get("kmsKeyName"):
            yield r.name, "the BigQuery dataset has no default customer-managed key"


def _agent_identity_exists(
    resources: list[Resource], _: PolicyContext
) -> Iterator[tuple[str, str]]:
    identities = [
        r
        for r in _of_type(resources, SERVICE_IDENTITY)
        if r.props.get("service") == "healthcare.googleapis.com"
    ]
    if identities:
        return
    for b in bindings(resources):
        if AGENT.match(b.member):
            yield (
                b.resource,
                (
                    f"grants to {b.member} but no ServiceIdentity forces the agent to exist: the "
                    "grant fails on a project where the Healthcare API was never used"
                ),
            )


def _apis_stay_enabled(resources: list[Resource], _: PolicyContext) -> Iterator[tuple[str, str]]:
    for r in _of_type(resources, "gcp:projects/service:Service"):
        if r.props.get("disableOnDestroy") is not False:
            yield (
                r.name,
                f"destroying the stack would disable {r.props.get('service')} for everyone",
            )


RULES: tuple[Rule, ...] = (
    Rule(
        "DBQ001",
        "no-authoritative-iam",
        "No authoritative IAM resources (IAMPolicy, IAMBinding, dataset/store/bucket IAM policies or bindings).",
        "mandatory",
        "Use the *IAMMember resource for the same role: it adds one member and leaves others' grants alone.",
        _no_authoritative_iam,
        "none in Checkov/Trivy/policy-library for Pulumi; Fabric modules use additive *_iam_member",
    ),
    Rule(
        "DBQ002",
        "no-basic-roles",
        "No basic roles (owner, editor, viewer).",
        "mandatory",
        "Grant the predefined role the workload needs, e.g. roles/bigquery.dataEditor on one dataset.",
        _no_basic_roles,
        "Trivy google-iam-no-project-level-service-account-impersonation (partial); policy-library gcp_iam_restrict_roles (basic roles)",
    ),
    Rule(
        "DBQ003",
        "no-public-members",
        "No allUsers or allAuthenticatedUsers members, including BigQuery dataset access entries.",
        "mandatory",
        "Remove the public member; grant named principals or groups.",
        _no_public_members,
        "Checkov CKV_GCP_15 (BigQuery public) and CKV_GCP_28 (bucket public); Trivy google-bigquery-no-public-access, google-storage-no-public-access",
    ),
    Rule(
        "DBQ004",
        "agent-no-admin-or-impersonation",
        "The Healthcare service agent gets no admin, basic, serviceAccountUser or serviceAccountTokenCreator role.",
        "mandatory",
        "Drop the role: the export needs only the roles in the grants list (dicom-bq plan shows it).",
        _agent_no_admin,
        "Checkov CKV_GCP_41 (Service Account User / Token Creator) and CKV_GCP_42 (service account admin); Trivy google-iam-no-privileged-service-accounts",
    ),
    Rule(
        "DBQ005",
        "agent-only-listed-roles",
        "The Healthcare service agent holds only the roles the grants list names.",
        "mandatory",
        "Remove roles the grants list does not need, or add them to infra/grants.py with a reason.",
        _agent_only_listed_roles,
        "none: no scanner knows the Healthcare agent; policy-library gcp_iam_allowed_bindings is the nearest mechanism",
    ),
    Rule(
        "DBQ006",
        "agent-narrow-scope",
        "Grants to the agent are scoped as narrowly as the grants list says (dataEditor on the dataset, not the project).",
        "mandatory",
        "Grant on the dataset (DatasetIamMember), or set dataEditorScope: project deliberately.",
        _agent_narrow_scope,
        "none; nearest Trivy google-iam-no-project-level-service-account-impersonation (project-level grants)",
    ),
    Rule(
        "DBQ007",
        "no-mixed-dataset-access",
        "A BigQuery dataset's `accesses` and dataset IAM resources are never both used.",
        "mandatory",
        "Manage dataset access with DatasetIamMember only; remove `accesses`.",
        _no_mixed_dataset_access,
        "none (a provider pitfall, not a scanner rule)",
    ),
    Rule(
        "DBQ008",
        "phi-protected",
        "In a stack marked protected, the Healthcare dataset, DICOM store and BigQuery dataset are protected.",
        "mandatory",
        "Set dicom-bq:protected true (the program then passes protect=True), or unprotect the stack deliberately.",
        _phi_protected,
        "none (Pulumi protect has no Terraform equivalent scanners read)",
    ),
    Rule(
        "DBQ009",
        "bigquery-keeps-contents",
        "BigQuery datasets never delete their tables on destroy.",
        "mandatory",
        "Set delete_contents_on_destroy=False.",
        _bigquery_keeps_contents,
        "none; nearest Checkov deletion-protection checks (e.g. CKV_GCP_81 family for BigQuery)",
    ),
    Rule(
        "DBQ010",
        "bigquery-location-allowed",
        "The BigQuery dataset's location is in the stack's allow-list.",
        "mandatory",
        "Set dicom-bq:bigqueryLocation to an allowed location, or extend allowedBigqueryLocations.",
        _bigquery_location_allowed,
        "policy-library gcp_bigquery_dataset_location",
    ),
    Rule(
        "DBQ011",
        "cmek-present",
        "Where the stack requires CMEK, both datasets name a Cloud KMS key.",
        "mandatory",
        "Set dicom-bq:healthcareKmsKey and dicom-bq:bigqueryKmsKey.",
        _cmek_present,
        "Checkov CKV_GCP_81 (BigQuery dataset CMEK); Trivy google-bigquery-table-customer-managed-key (nearest); policy-library gcp_cmek_settings",
    ),
    Rule(
        "DBQ012",
        "agent-identity-exists",
        "A ServiceIdentity for healthcare.googleapis.com exists for the agent the grants name.",
        "mandatory",
        "Keep gcp.projects.ServiceIdentity(service='healthcare.googleapis.com') in the stack.",
        _agent_identity_exists,
        "none",
    ),
    Rule(
        "DBQ013",
        "apis-stay-enabled",
        "Enabled APIs are not disabled when the stack is destroyed.",
        "advisory",
        "Set disable_on_destroy=False on gcp.projects.Service.",
        _apis_stay_enabled,
        "none; nearest Fabric project module (disable_on_destroy=false)",
    ),
)


def evaluate(resources: list[Resource], context: PolicyContext) -> list[Finding]:
    return [
        Finding(rule.id, rule.enforcement, name, message, rule.remediation)
        for rule in RULES
        for name, message in rule.check(resources, context)
    ]
