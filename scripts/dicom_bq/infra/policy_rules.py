"""Security and data-loss rules, as plain functions over resources and their properties.

The same rules run offline on a recorded plan (`dicom-bq plan --check`), in the CrossGuard pack
(`policy/`, during `pulumi preview --policy-pack policy`), and in `dicom-bq review`. Properties
are Pulumi's camelCase inputs, as both the mock monitor and CrossGuard see them. No Pulumi import.

Every pulumi-gcp resource that can give a principal access is read into the same (role, member,
scope) bindings, so one rule covers all of them: any `*IamMember`/`*IAMMember` (`role` +
`member`), `*IamBinding` (`role` + `members`), `*IamPolicy` (`policyData`, a JSON policy) of any
service, including organizations, folders, projects, BigQuery datasets and tables, buckets and
managed folders, topics, subscriptions, key rings and keys; a BigQuery dataset's `accesses` and
`gcp:bigquery/datasetAccess:DatasetAccess`; and the Cloud Storage ACL resources (BucketACL,
DefaultObjectACL, ObjectACL with `roleEntities` / canned ACLs; BucketAccessControl,
DefaultObjectAccessControl, ObjectAccessControl with `entity` + `role`). Type tokens as the
installed pulumi_gcp registers them (`@pulumi.type_token(...)` on each resource class).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from dicom_bq.infra import naming
from dicom_bq.infra.scopes import SCOPE_KINDS

Enforcement = Literal["mandatory", "advisory"]
# Matched against canonical_member(...) of a member, never the member as written.
AGENT = re.compile(r"^serviceAccount:service-[0-9A-Za-z_]+@gcp-sa-healthcare\.[a-z0-9.-]+$")
_AGENT_NUMBER = re.compile(r"^serviceAccount:service-([0-9A-Za-z_]+)@gcp-sa-healthcare\.")
# The nightly snapshot's service account and custom role, as infra/naming.py names them.
SNAPSHOT_ACCOUNT = re.compile(
    rf"^serviceAccount:{re.escape(naming.SNAPSHOT_ACCOUNT_PREFIX)}[0-9a-f]{{8}}@[^@]+$"
)
SNAPSHOT_ROLE = re.compile(
    rf"^projects/[^/]+/roles/{re.escape(naming.SNAPSHOT_ROLE_PREFIX)}_[0-9a-f]{{8}}$"
)
# Cloud Scheduler's service agent (https://cloud.google.com/scheduler/docs/http-target-auth),
# which mints the snapshot account's token: Token Creator on that account is all it is granted.
SCHEDULER_AGENT = re.compile(
    r"^serviceAccount:service-([0-9A-Za-z_]+)@gcp-sa-cloudscheduler\.[a-z0-9.-]+$"
)
SCHEDULER_AGENT_ROLE = "roles/iam.serviceAccountTokenCreator"
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
BASIC_ROLES = frozenset({"roles/owner", "roles/editor", "roles/viewer"})
# BigQuery's dataset OWNER, the dataset-level basic role ("Basic roles for datasets",
# https://cloud.google.com/bigquery/docs/access-control-basic-roles), under its predefined name
# (see LEGACY_DATASET_ROLES): it may update the dataset, its access list included, so on a PHI
# dataset it is as broad as roles/owner.
OWNER_ROLES = frozenset({*BASIC_ROLES, "roles/bigquery.dataOwner"})
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
BIGQUERY_DATASET_ACCESS = "gcp:bigquery/datasetAccess:DatasetAccess"
HEALTHCARE_DATASET = "gcp:healthcare/dataset:Dataset"
SERVICE_IDENTITY = "gcp:projects/serviceIdentity:ServiceIdentity"
HEALTHCARE_SERVICE = "healthcare.googleapis.com"
# Cloud Storage ACL resources. The *ACL ones replace the whole list ("Authoritatively manages a
# bucket's ACLs" / "the default object ACLs" / "the access control list (ACL) for an object", in
# the pulumi-gcp docs of storage.BucketACL, DefaultObjectACL, ObjectACL); the *AccessControl ones
# add one entity. Bucket-level ACL roles are READER/WRITER/OWNER, object-level READER/OWNER.
BUCKET_ACL_LISTS = frozenset({"gcp:storage/bucketACL:BucketACL"})
OBJECT_ACL_LISTS = frozenset(
    {"gcp:storage/defaultObjectACL:DefaultObjectACL", "gcp:storage/objectACL:ObjectACL"}
)
BUCKET_ACL_ENTRIES = frozenset({"gcp:storage/bucketAccessControl:BucketAccessControl"})
OBJECT_ACL_ENTRIES = frozenset(
    {
        "gcp:storage/defaultObjectAccessControl:DefaultObjectAccessControl",
        "gcp:storage/objectAccessControl:ObjectAccessControl",
    }
)
AUTHORITATIVE_ACLS = BUCKET_ACL_LISTS | OBJECT_ACL_LISTS
# Scopes above a project: a grant there reaches every project, dataset and bucket beneath.
ABOVE_PROJECT = (
    f"//{SCOPE_KINDS['project'].host}/organizations/",
    f"//{SCOPE_KINDS['project'].host}/folders/",
)


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
    """What the stack says should be true; None where the checker does not know.

    `source_project` / `source_project_number`: the project that holds the DICOM store, whose
    Healthcare agent (service-NUMBER@gcp-sa-healthcare...) the grants name.
    """

    protected: bool = False
    expected_grants: frozenset[ExpectedGrant] | None = None
    allowed_bigquery_locations: frozenset[str] | None = None
    require_cmek: bool = False
    source_project: str | None = None
    source_project_number: str | None = None
    # The snapshot account's grants as the grants list names them; None: any snapshot role on
    # any DICOM store.
    snapshot_grants: frozenset[ExpectedGrant] | None = None


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
    """One (role, member) a resource grants, and where; member in canonical_member form."""

    resource: str
    role: str
    member: str
    scope: str


# -- members, compared the way Google compares them ---------------------------------------------

# IAM ignores the case of the email/domain in user:, serviceAccount:, group: and domain: members
# and stores them lowercased; only principal:, principalSet: and principalHierarchy: identifiers
# are case-sensitive. The Google provider that pulumi-gcp bridges relies on this: its
# normalizeIamMemberCasing (terraform-provider-google, tpgiamresource/iam.go) lowercases the value
# before comparing policies. https://cloud.google.com/iam/docs/principal-identifiers
# The type itself is documented case-sensitive; a misspelt type is mapped to its canonical
# spelling all the same, so a grant Google might accept is never missed (one it rejects fails
# anyway).
_MEMBER_TYPES = {
    kind.lower(): kind
    for kind in (
        "user",
        "serviceAccount",
        "group",
        "domain",
        "projectOwner",
        "projectEditor",
        "projectViewer",
    )
}
_CASE_SENSITIVE_TYPES = frozenset({"principal", "principalset", "principalhierarchy"})
_PUBLIC_BY_CASE = {m.lower(): m for m in PUBLIC_MEMBERS}


def canonical_member(member: str) -> str:
    """The member as IAM compares it: public members and emails case-insensitive.

    A `deleted:TYPE:EMAIL?uid=ID` member (what IAM shows for a principal deleted in the last
    ~30 days: https://cloud.google.com/iam/docs/principal-identifiers, and the Google provider's
    guide "Handling diffs with deleted IAM principals") is judged as the principal it names: it
    reverts to that principal if undeleted, so it is still a grant of that role to that identity.
    """
    text = member.strip()
    lowered = text.lower()
    if lowered in _PUBLIC_BY_CASE:
        return _PUBLIC_BY_CASE[lowered]
    if lowered.startswith("deleted:"):
        return canonical_member(text[len("deleted:") :].partition("?uid=")[0])
    kind, colon, value = text.partition(":")
    if not colon or kind.lower() in _CASE_SENSITIVE_TYPES:
        return text
    return f"{_MEMBER_TYPES.get(kind.lower(), kind)}:{value.lower()}"


def is_snapshot_account(member: str) -> bool:
    """Whether the member is a dicom-bq nightly snapshot account, in any spelling."""
    return SNAPSHOT_ACCOUNT.match(canonical_member(member)) is not None


def is_scheduler_agent(member: str) -> bool:
    """Whether the member is a Cloud Scheduler service agent (any project's), in any spelling."""
    return SCHEDULER_AGENT.match(canonical_member(member)) is not None


def is_snapshot_account_scope(scope: str) -> bool:
    """Whether the scope is a dicom-bq nightly snapshot account (a service account scope)."""
    parsed = SCOPE_KINDS["service_account"].parse(scope)
    return parsed is not None and is_snapshot_account(f"serviceAccount:{parsed['account']}")


def is_agent(member: str) -> bool:
    """Whether the member is a Cloud Healthcare service agent (any project's), in any spelling."""
    return AGENT.match(canonical_member(member)) is not None


def agent_project_number(member: str) -> str | None:
    """The project number in a Healthcare agent's address (service-NUMBER@gcp-sa-healthcare...)."""
    found = _AGENT_NUMBER.match(canonical_member(member))
    return found.group(1) if found and is_agent(member) else None


# -- what each resource grants ------------------------------------------------------------------


def _type_name(resource_type: str) -> str:
    return resource_type.rsplit(":", 1)[-1].lower()


def is_authoritative(resource_type: str) -> bool:
    """IAM policies and bindings, and the ACL-list resources, replace grants they do not name."""
    kind = _type_name(resource_type)
    return kind.endswith(("iampolicy", "iambinding")) or resource_type in AUTHORITATIVE_ACLS


def replaces_access(resource: Resource) -> bool:
    """Authoritative types, and a BigQuery dataset that lists `accesses`: the provider sets the
    dataset's whole access list to them, removing entries it does not name (the pulumi-gcp
    DatasetAccess docs: a Dataset with `access` blocks and DatasetAccess "fight")."""
    if resource.type == BIGQUERY_DATASET:
        return bool(resource.props.get("accesses"))
    return is_authoritative(resource.type)


def _members(props: Mapping[str, Any]) -> list[str]:
    if isinstance(props.get("member"), str):
        return [props["member"]]
    members = props.get("members")
    return [m for m in members if isinstance(m, str)] if isinstance(members, list) else []


def _text(props: Mapping[str, Any], key: str) -> str:
    value = props.get(key)
    return value if isinstance(value, str) else ""


def scope_of(resource: Resource) -> str:
    """The full resource name an IAM resource grants on, in the grants list's vocabulary: a
    scope kind's (infra/scopes.py) when the type is one of its family, else the part of one
    (table, object, managed folder) or a scope no grant names (organization, folder,
    subscription, key ring)."""
    p = resource.props
    t = resource.type
    if t.startswith("gcp:organizations/"):
        org = _text(p, "orgId").removeprefix("organizations/")
        return f"//{SCOPE_KINDS['project'].host}/organizations/{org}"
    if t.startswith("gcp:folder/"):
        folder = _text(p, "folder").removeprefix("folders/")
        return f"//{SCOPE_KINDS['project'].host}/folders/{folder}"
    if t.startswith("gcp:bigquery/iam"):  # IamMember/IamBinding/IamPolicy: a table
        dataset = SCOPE_KINDS["bigquery_dataset"].uri_from_inputs(p)
        return f"{dataset}/tables/{_text(p, 'tableId').rsplit('/', 1)[-1]}"
    if t.startswith("gcp:storage/object"):
        return f"{SCOPE_KINDS['bucket'].uri_from_inputs(p)}/objects/{_text(p, 'object')}"
    if t.startswith("gcp:storage/managedFolder"):
        bucket = SCOPE_KINDS["bucket"].uri_from_inputs(p)
        return f"{bucket}/managedFolders/{_text(p, 'managedFolder')}"
    if t.startswith("gcp:pubsub/subscription"):
        sub = _text(p, "subscription")
        if not sub.startswith("projects/"):
            sub = f"projects/{_text(p, 'project')}/subscriptions/{sub}"
        return f"//{SCOPE_KINDS['topic'].host}/{sub}"
    if t.startswith("gcp:kms/keyRing"):
        return _key_ring_uri(_text(p, "keyRingId"))
    for kind in SCOPE_KINDS.values():
        if t.startswith(kind.pulumi_inputs.type_prefix):
            return kind.uri_from_inputs(p)
    return f"//{_type_name(t)}/{resource.name}"


def _key_ring_uri(ring: str) -> str:
    """A key ring's full name: the crypto_key kind's, less its key. pulumi-gcp takes the ring as
    PROJECT/LOCATION/RING too (pulumi_gcp kms/key_ring_iam_member.py, key_ring_id)."""
    key = SCOPE_KINDS["crypto_key"]
    template = key.name_template.rsplit("/cryptoKeys/", 1)[0]
    parts = ring.split("/")
    if not ring.startswith("projects/") and len(parts) == 3:
        ring = template.format(project=parts[0], location=parts[1], ring=parts[2])
    return f"//{key.host}/{ring}"


def _policy_bindings(props: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """`bindings` as given, and those of an IAM policy's `policyData` (a JSON policy document,
    the input of every pulumi-gcp *IamPolicy / *IAMPolicy resource)."""
    found = props.get("bindings")
    entries: list[Any] = list(found) if isinstance(found, list) else []
    data = props.get("policyData")
    if isinstance(data, str):
        try:
            policy = json.loads(data)
        except ValueError:
            policy = None
        if isinstance(policy, Mapping) and isinstance(policy.get("bindings"), list):
            entries += policy["bindings"]
    return [b for b in entries if isinstance(b, Mapping)]


# BigQuery's legacy dataset roles and the predefined roles BigQuery maps them to (access[].role in
# https://cloud.google.com/bigquery/docs/reference/rest/v2/datasets). The access list accepts both
# and returns the legacy form (pulumi-gcp DatasetAccess docs), so an entry is judged by the
# predefined role it grants.
LEGACY_DATASET_ROLES = {
    "OWNER": "roles/bigquery.dataOwner",
    "WRITER": "roles/bigquery.dataEditor",
    "READER": "roles/bigquery.dataViewer",
}


def _dataset_role(role: Any) -> str:
    text = str(role)
    return LEGACY_DATASET_ROLES.get(text.strip().upper(), text)


def _access_member(entry: Mapping[str, Any]) -> str | None:
    """The member a dataset access entry (or DatasetAccess) names; None for view/routine/dataset
    entries, which authorize a query, not a principal."""
    if entry.get("iamMember"):
        return str(entry["iamMember"])
    if entry.get("userByEmail"):
        email = str(entry["userByEmail"])
        kind = "serviceAccount" if email.lower().endswith("gserviceaccount.com") else "user"
        return f"{kind}:{email}"
    if entry.get("groupByEmail"):
        return f"group:{entry['groupByEmail']}"
    if entry.get("domain"):
        return f"domain:{entry['domain']}"
    special = str(entry.get("specialGroup") or "")
    return _PUBLIC_BY_CASE.get(special.lower())


# Cloud Storage ACL roles as the legacy IAM roles Google defines to mirror them
# (https://cloud.google.com/storage/docs/access-control/iam-roles#legacy-roles).
_BUCKET_ACL_ROLES = {
    "OWNER": "roles/storage.legacyBucketOwner",
    "WRITER": "roles/storage.legacyBucketWriter",
    "READER": "roles/storage.legacyBucketReader",
}
_OBJECT_ACL_ROLES = {
    "OWNER": "roles/storage.legacyObjectOwner",
    "READER": "roles/storage.legacyObjectReader",
}
# Canned ACLs (`predefinedAcl`, BucketACL's `defaultAcl`) that open a bucket or object to all:
# https://cloud.google.com/storage/docs/access-control/lists#predefined-acl
_PUBLIC_CANNED_ACLS = {
    "publicread": ("READER", "allUsers"),
    "publicreadwrite": ("WRITER", "allUsers"),
    "authenticatedread": ("READER", "allAuthenticatedUsers"),
}
_ACL_PROJECT_TEAMS = {
    "owners": "projectOwner",
    "editors": "projectEditor",
    "viewers": "projectViewer",
}


def _acl_member(entity: str) -> str:
    """An ACL entity (allUsers, user-EMAIL, group-EMAIL, domain-DOMAIN, project-TEAM-PROJECT;
    https://cloud.google.com/storage/docs/json_api/v1/bucketAccessControls) as an IAM member."""
    text = entity.strip()
    lowered = text.lower()
    if lowered in _PUBLIC_BY_CASE:
        return _PUBLIC_BY_CASE[lowered]
    for prefix, kind in (("user-", "user"), ("group-", "group"), ("domain-", "domain")):
        if lowered.startswith(prefix):
            value = text[len(prefix) :]
            if kind == "user" and lowered.endswith("gserviceaccount.com"):
                kind = "serviceAccount"
            return f"{kind}:{value}"
    if lowered.startswith("project-"):
        team, _, project = text[len("project-") :].partition("-")
        return f"{_ACL_PROJECT_TEAMS.get(team.lower(), team)}:{project}"
    return text


def _acl_grants(resource: Resource) -> Iterator[tuple[str, str]]:
    p = resource.props
    t = resource.type
    roles = _BUCKET_ACL_ROLES if t in BUCKET_ACL_LISTS | BUCKET_ACL_ENTRIES else _OBJECT_ACL_ROLES
    pairs: list[tuple[str, str]] = []
    if t in BUCKET_ACL_LISTS | OBJECT_ACL_LISTS:
        entries = p.get("roleEntities")
        for entry in entries if isinstance(entries, list) else []:
            role, _, entity = str(entry).partition(":")
            pairs.append((role, entity))
    if t in BUCKET_ACL_ENTRIES | OBJECT_ACL_ENTRIES:
        pairs.append((_text(p, "role"), _text(p, "entity")))
    for key in ("predefinedAcl", "defaultAcl"):
        canned = _PUBLIC_CANNED_ACLS.get(_text(p, key).lower())
        if canned:
            # BucketACL's defaultAcl is the bucket's default *object* ACL.
            table = _OBJECT_ACL_ROLES if key == "defaultAcl" else roles
            yield table.get(canned[0], canned[0]), canned[1]
    for role, entity in pairs:
        if entity:
            yield roles.get(role.strip().upper(), role), _acl_member(entity)


def grants_of(resource: Resource) -> Iterator[tuple[str, str]]:
    """Every (role, member as written) the resource grants."""
    p = resource.props
    t = resource.type
    if _type_name(t).endswith("memberremove"):  # IamMemberRemove takes a grant away
        return
    if t == BIGQUERY_DATASET_ACCESS:
        member = _access_member(p)
        if member:
            yield _dataset_role(p.get("role")), member
        return
    if t in AUTHORITATIVE_ACLS | BUCKET_ACL_ENTRIES | OBJECT_ACL_ENTRIES:
        yield from _acl_grants(resource)
        return
    if isinstance(p.get("role"), str):
        for member in _members(p):
            yield p["role"], member
    for binding in _policy_bindings(p):
        for member in binding.get("members") or []:
            yield str(binding.get("role")), str(member)
    if t == BIGQUERY_DATASET:
        for entry in p.get("accesses") or []:
            granted = _access_member(entry) if isinstance(entry, Mapping) else None
            if granted:
                yield _dataset_role(entry.get("role")), granted


def bindings(resources: Iterable[Resource]) -> Iterator[Binding]:
    """Every (role, member) granted by IAM resources, dataset access entries and ACLs."""
    for resource in resources:
        for role, member in grants_of(resource):
            yield Binding(resource.name, role, canonical_member(member), scope_of(resource))


def _of_type(resources: list[Resource], resource_type: str) -> list[Resource]:
    return [r for r in resources if r.type == resource_type]


# -- the rules ------------------------------------------------------------------------------


def _no_authoritative_iam(resources: list[Resource], _: PolicyContext) -> Iterator[tuple[str, str]]:
    for r in resources:
        if r.type == BIGQUERY_DATASET and replaces_access(r):
            yield (
                r.name,
                "the dataset's `accesses` list replaces every other access entry on the dataset",
            )
        elif replaces_access(r):
            yield r.name, f"{r.type} replaces every other grant on its resource"


def _no_basic_roles(resources: list[Resource], _: PolicyContext) -> Iterator[tuple[str, str]]:
    for b in bindings(resources):
        if b.role in OWNER_ROLES:
            kind = "basic role" if b.role in BASIC_ROLES else "dataset owner role"
            yield b.resource, f"grants the {kind} {b.role} to {b.member} on {b.scope}"


def _no_public_members(resources: list[Resource], _: PolicyContext) -> Iterator[tuple[str, str]]:
    for b in bindings(resources):
        if b.member in PUBLIC_MEMBERS:
            yield b.resource, f"grants {b.role} to {b.member} on {b.scope}: anyone could read PHI"


def _agent_no_admin(resources: list[Resource], _: PolicyContext) -> Iterator[tuple[str, str]]:
    for b in bindings(resources):
        if is_agent(b.member) and (
            b.role in IMPERSONATION_ROLES
            or b.role in OWNER_ROLES
            or b.role.endswith(("admin", "Admin"))
        ):
            yield b.resource, f"gives the Healthcare agent {b.role} on {b.scope}"


def _agent_only_listed_roles(
    resources: list[Resource], context: PolicyContext
) -> Iterator[tuple[str, str]]:
    from dicom_bq.infra.grants import AGENT_ROLES

    allowed = (
        {g.role for g in context.expected_grants}
        if context.expected_grants is not None
        else set(AGENT_ROLES)
    )
    for b in bindings(resources):
        if is_agent(b.member) and b.role not in allowed:
            yield (
                b.resource,
                f"gives the Healthcare agent {b.role}, which the grants list does not name",
            )


def _agent_narrow_scope(
    resources: list[Resource], context: PolicyContext
) -> Iterator[tuple[str, str]]:
    for b in bindings(resources):
        if not is_agent(b.member):
            continue
        if b.scope.startswith(ABOVE_PROJECT):
            # Whatever the grants list says: no export needs more than one project, and a grant
            # on an organization or folder reaches every project beneath it.
            yield (
                b.resource,
                f"grants {b.role} to the Healthcare agent on {b.scope}, above project level",
            )
        elif context.expected_grants is not None:
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
        if (
            r.type.startswith("gcp:bigquery/datasetIam") or r.type == BIGQUERY_DATASET_ACCESS
        ) and scope_of(r) in with_access:
            yield (
                r.name,
                (
                    f"manages access on {scope_of(r)} whose dataset also sets `accesses` "
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


def _agent_projects(number: str, resources: list[Resource], context: PolicyContext) -> set[str]:
    """The projects (ID or number: ServiceIdentity's `project` takes either) whose Healthcare
    agent is service-NUMBER@...: the agent belongs to the project whose number it carries.

    The context knows the source project's ID and number; a number it does not know is only
    provably that project when the ServiceIdentity names the number itself. Without the number
    (CrossGuard with no config), the project of the stack's Healthcare dataset (the source
    project, where the agent acts for the store) is the best offline guess.
    """
    if context.source_project_number is not None and number != context.source_project_number:
        return {number}
    if context.source_project:
        return {number, context.source_project}
    return {number} | {
        _text(r.props, "project") for r in _of_type(resources, HEALTHCARE_DATASET)
    } - {""}


def _agent_identity_exists(
    resources: list[Resource], context: PolicyContext
) -> Iterator[tuple[str, str]]:
    identity_projects = {
        _text(r.props, "project")
        for r in _of_type(resources, SERVICE_IDENTITY)
        if _text(r.props, "service").strip().lower() == HEALTHCARE_SERVICE
    }
    for b in bindings(resources):
        number = agent_project_number(b.member)
        if number is None:
            continue
        projects = _agent_projects(number, resources, context)
        if identity_projects & projects:
            continue
        if not identity_projects:
            why = "no ServiceIdentity forces the agent to exist"
        else:
            why = (
                f"the ServiceIdentity names {', '.join(sorted(identity_projects))}, not the "
                f"project of this agent ({' or '.join(sorted(projects))})"
            )
        yield (
            b.resource,
            (
                f"grants to {b.member} but {why}: the grant fails on a project where the "
                "Healthcare API was never used, and an agent of another project is not the "
                "source project's"
            ),
        )


def _apis_stay_enabled(resources: list[Resource], _: PolicyContext) -> Iterator[tuple[str, str]]:
    for r in _of_type(resources, "gcp:projects/service:Service"):
        if r.props.get("disableOnDestroy") is not False:
            yield (
                r.name,
                f"destroying the stack would disable {r.props.get('service')} for everyone",
            )


def _snapshot_export_only(
    resources: list[Resource], context: PolicyContext
) -> Iterator[tuple[str, str]]:
    from dicom_bq.infra.grants import SNAPSHOT_PERMISSIONS

    snapshot_roles = [
        r
        for r in _of_type(resources, CUSTOM_ROLE)
        if _text(r.props, "roleId").startswith(naming.SNAPSHOT_ROLE_PREFIX)
    ]
    for r in snapshot_roles:
        permissions = r.props.get("permissions")
        extra = sorted(
            set(permissions if isinstance(permissions, list) else [str(permissions)])
            - set(SNAPSHOT_PERMISSIONS)
        )
        if extra:
            yield (
                r.name,
                f"the snapshot role also grants {', '.join(map(str, extra))}; it may hold only "
                f"{', '.join(SNAPSHOT_PERMISSIONS)}",
            )
    listed = (
        {g.role for g in context.snapshot_grants} if context.snapshot_grants is not None else None
    )
    # The role is the source project's: another project's role of the same name is not the one
    # this stack creates and checks. The source project as the context names it, else as the
    # stack's own snapshot role says.
    projects = (
        {context.source_project}
        if context.source_project is not None
        else {_text(r.props, "project") for r in snapshot_roles}
    )
    for b in bindings(resources):
        if not is_snapshot_account(b.member):
            continue
        if not SNAPSHOT_ROLE.match(b.role) or (listed is not None and b.role not in listed):
            yield (
                b.resource,
                f"gives the snapshot account {b.role}; it may hold only its export-only custom "
                "role",
            )
        elif b.role.split("/")[1] not in projects:
            yield (
                b.resource,
                f"gives the snapshot account {b.role}, a role of another project than the "
                f"source project ({', '.join(sorted(projects)) or 'unknown'})",
            )


def _snapshot_store_scope(
    resources: list[Resource], context: PolicyContext
) -> Iterator[tuple[str, str]]:
    listed = (
        {g.scope for g in context.snapshot_grants} if context.snapshot_grants is not None else None
    )
    for b in bindings(resources):
        if not is_snapshot_account(b.member):
            continue
        if SCOPE_KINDS["dicom_store"].parse(b.scope) is None:
            yield (
                b.resource,
                f"grants {b.role} to the snapshot account on {b.scope}, which is not a DICOM store",
            )
        elif listed is not None and b.scope not in listed:
            yield (
                b.resource,
                f"grants {b.role} to the snapshot account on {b.scope}; the grants list names "
                f"{', '.join(sorted(listed)) or 'no store'}",
            )


def _scheduler_agent_token_only(
    resources: list[Resource], context: PolicyContext
) -> Iterator[tuple[str, str]]:
    for b in bindings(resources):
        found = SCHEDULER_AGENT.match(b.member)
        if found is None:
            continue
        if b.role != SCHEDULER_AGENT_ROLE:
            yield (
                b.resource,
                f"gives Cloud Scheduler's service agent {b.role}; it may hold only {SCHEDULER_AGENT_ROLE}",
            )
        elif not is_snapshot_account_scope(b.scope):
            yield (
                b.resource,
                f"grants {b.role} to Cloud Scheduler's service agent on {b.scope}, which is not "
                "the nightly snapshot's service account",
            )
        elif context.source_project_number is not None and (
            found.group(1) != context.source_project_number
        ):
            yield (
                b.resource,
                f"lets another project's Cloud Scheduler agent ({b.member}) mint the snapshot "
                "account's tokens",
            )


def _snapshot_account_not_impersonated(
    resources: list[Resource], context: PolicyContext
) -> Iterator[tuple[str, str]]:
    # Impersonation roles on a project reach every service account in it, the snapshot's too.
    snapshot_projects = {
        _text(r.props, "project")
        for r in _of_type(resources, "gcp:serviceaccount/account:Account")
        if _text(r.props, "accountId").startswith(naming.SNAPSHOT_ACCOUNT_PREFIX)
    }
    project_kind = SCOPE_KINDS["project"]
    for b in bindings(resources):
        if is_snapshot_account_scope(b.scope):
            if not (is_scheduler_agent(b.member) and b.role == SCHEDULER_AGENT_ROLE):
                yield (
                    b.resource,
                    f"gives {b.member} {b.role} on the snapshot account; only Cloud Scheduler's "
                    f"service agent may, and only {SCHEDULER_AGENT_ROLE}",
                )
            continue
        on_project = project_kind.parse(b.scope)
        reaches = b.scope.startswith(ABOVE_PROJECT) or (
            on_project is not None and on_project["project"] in snapshot_projects
        )
        if snapshot_projects and reaches and b.role in IMPERSONATION_ROLES:
            yield (
                b.resource,
                f"gives {b.member} {b.role} on {b.scope}, which reaches the snapshot account: "
                "it could act as it",
            )


RULES: tuple[Rule, ...] = (
    Rule(
        "DBQ001",
        "no-authoritative-iam",
        "No authoritative IAM resources (IAMPolicy, IAMBinding, dataset/store/bucket IAM policies or bindings, a BigQuery dataset's `accesses`, bucket/object ACL lists).",
        "mandatory",
        "Use the *IAMMember resource for the same role (DatasetIamMember for dataset access, BucketIAMMember for ACLs): it adds one member and leaves others' grants alone.",
        _no_authoritative_iam,
        "none in Checkov/Trivy/policy-library for Pulumi; Fabric modules use additive *_iam_member",
    ),
    Rule(
        "DBQ002",
        "no-basic-roles",
        "No basic roles (owner, editor, viewer), nor BigQuery's dataset OWNER (roles/bigquery.dataOwner), at any level.",
        "mandatory",
        "Grant the predefined role the workload needs, e.g. roles/bigquery.dataEditor (legacy WRITER) on one dataset.",
        _no_basic_roles,
        "Trivy google-iam-no-project-level-service-account-impersonation (partial); policy-library gcp_iam_restrict_roles (basic roles)",
    ),
    Rule(
        "DBQ003",
        "no-public-members",
        "No allUsers or allAuthenticatedUsers members, in any spelling, including BigQuery dataset access entries and Cloud Storage ACLs.",
        "mandatory",
        "Remove the public member or canned public ACL; grant named principals or groups.",
        _no_public_members,
        "Checkov CKV_GCP_15 (BigQuery public) and CKV_GCP_28 (bucket public); Trivy google-bigquery-no-public-access, google-storage-no-public-access",
    ),
    Rule(
        "DBQ004",
        "agent-no-admin-or-impersonation",
        "The Healthcare service agent gets no admin, basic, dataset-owner, serviceAccountUser or serviceAccountTokenCreator role.",
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
        "Grants to the agent are scoped as narrowly as the grants list says (dataEditor on the dataset, not the project), and never on an organization or folder.",
        "mandatory",
        "Grant on the dataset (DatasetIamMember), or set dataEditorScope: project deliberately; never grant the agent on an organization or folder.",
        _agent_narrow_scope,
        "none; nearest Trivy google-iam-no-project-level-service-account-impersonation (project-level grants)",
    ),
    Rule(
        "DBQ007",
        "no-mixed-dataset-access",
        "A BigQuery dataset's `accesses` and dataset IAM or DatasetAccess resources are never both used.",
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
        "A ServiceIdentity for healthcare.googleapis.com exists in the project of each agent the grants name.",
        "mandatory",
        "Keep gcp.projects.ServiceIdentity(service='healthcare.googleapis.com', project=<source project>) in the stack, and grant only the source project's agent.",
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
    Rule(
        "DBQ014",
        "snapshot-account-export-only",
        "The nightly snapshot's service account holds only its custom role, and that role only healthcare.dicomStores.export.",
        "mandatory",
        "Grant the snapshot account nothing but the dicomBqSnapshotExport role the program creates, and keep that role's permissions to healthcare.dicomStores.export.",
        _snapshot_export_only,
        "none; nearest policy-library gcp_iam_allowed_bindings",
    ),
    Rule(
        "DBQ015",
        "snapshot-account-store-scope",
        "The nightly snapshot's service account is granted only on the stack's DICOM stores, never on a dataset, project or above.",
        "mandatory",
        "Grant the snapshot role with DicomStoreIamMember on each store the snapshot exports.",
        _snapshot_store_scope,
        "none; nearest Trivy google-iam-no-project-level-service-account-impersonation (project-level grants)",
    ),
    Rule(
        "DBQ016",
        "scheduler-agent-token-creator-only",
        "Cloud Scheduler's service agent holds only roles/iam.serviceAccountTokenCreator, only on the nightly snapshot's service account, and only the source project's agent.",
        "mandatory",
        "Grant the agent Token Creator with serviceaccount.IAMMember on the snapshot account alone, as the grants list does; never a project-level role.",
        _scheduler_agent_token_only,
        "Checkov CKV_GCP_41 (Token Creator at project level); policy-library gcp_iam_allowed_bindings",
    ),
    Rule(
        "DBQ017",
        "snapshot-account-not-impersonated",
        "Nobody but Cloud Scheduler's service agent is granted on the snapshot account, and no impersonation role (serviceAccountUser, TokenCreator, ...) is granted where it reaches that account (its project or above).",
        "mandatory",
        "Remove the grant: only the nightly job acts as the snapshot account, through Cloud Scheduler's agent.",
        _snapshot_account_not_impersonated,
        "Checkov CKV_GCP_41 and CKV_GCP_49 (Service Account User / Token Creator); Trivy google-iam-no-project-level-service-account-impersonation",
    ),
)


def evaluate(resources: list[Resource], context: PolicyContext) -> list[Finding]:
    return [
        Finding(rule.id, rule.enforcement, name, message, rule.remediation)
        for rule in RULES
        for name, message in rule.check(resources, context)
    ]
