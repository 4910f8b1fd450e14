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

Beyond the named rules, the stack is denied by default (DBQ018-DBQ020): it may create only the
resource types the program itself creates (data/allowed_types.json, generated from the program by
`python -m tests.allowlist`), every grant must be one of the grants list (or, without one, one the
program makes: its principals, roles and scope kinds, on the scopes the stack creates), every
custom role holds exactly the program's permission set, and data flows (streams, scheduled
exports) stay in the stack's own BigQuery dataset.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from dicom_bq.vocabulary import naming
from dicom_bq.vocabulary.scopes import SCOPE_KINDS, parse_scope, project_scope

Enforcement = Literal["mandatory", "advisory"]
# Matched against canonical_member(...) of a member, never the member as written.
AGENT = re.compile(r"^serviceAccount:service-[0-9A-Za-z_]+@gcp-sa-healthcare\.[a-z0-9.-]+$")
_AGENT_NUMBER = re.compile(r"^serviceAccount:service-([0-9A-Za-z_]+)@gcp-sa-healthcare\.")
# The nightly snapshot's service account and custom role, as vocabulary/naming.py names them.
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
class ListedGrant:
    """A grant of the grants list (the stack output `grants`), member in canonical_member form."""

    role: str
    member: str
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
    # Every grant of the grants list (every principal's); None: the program's allow-list
    # (data/allowed_types.json) instead.
    listed_grants: frozenset[ListedGrant] | None = None


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
    scope kind's (vocabulary/scopes.py) when the type is one of its family, else the part of one
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
            try:
                return kind.uri_from_inputs(p)
            except (KeyError, IndexError, ValueError):
                # A bare ID where the kind needs a path (a store's ID not known during preview,
                # or written short): a scope no grant names, keeping what it was given.
                given = p.get(kind.pulumi_inputs.resource_input)
                return f"//{kind.host}/{given}"
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


# BigQuery's special groups besides allAuthenticatedUsers (access[].specialGroup in
# https://cloud.google.com/bigquery/docs/reference/rest/v2/datasets): the enclosing project's
# owners, writers and readers, as the IAM convenience members that name the same people
# (projectOwner:P, projectEditor:P, projectViewer:P).
_PROJECT_SPECIAL_GROUPS = {
    "projectowners": "projectOwner",
    "projectwriters": "projectEditor",
    "projectreaders": "projectViewer",
}


def _access_member(entry: Mapping[str, Any], project: str = "") -> str | None:
    """The member a dataset access entry (or DatasetAccess) names; None for view/routine/dataset
    entries, which authorize a query, not a principal. `project`: the dataset's, which BigQuery's
    project special groups stand for; any other special group is kept as written, a member no
    grants list names."""
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
    special = str(entry.get("specialGroup") or "").strip()
    if not special:
        return None
    if special.lower() in _PROJECT_SPECIAL_GROUPS:
        return f"{_PROJECT_SPECIAL_GROUPS[special.lower()]}:{project}"
    return _PUBLIC_BY_CASE.get(special.lower(), f"specialGroup:{special}")


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
        member = _access_member(p, _text(p, "project"))
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
            granted = (
                _access_member(entry, _text(p, "project")) if isinstance(entry, Mapping) else None
            )
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


# -- deny by default: only what the program itself creates and grants ----------------------------

# A value not known until the update runs, as the offline plan shows it (stack/plan.py,
# UNKNOWN_UNTIL_CREATED) and as policy/pack.py hands over pulumi_policy's sentinels for one (read
# through CrossGuard's proxy, a single unknown value would skip the whole policy). A grant with an
# unknown part is judged on its known parts: it must match a listed grant in every part that is
# known. The marker holds parentheses and spaces, which no IAM member, role or resource name
# accepts, so a value written to look unknown is refused by Google anyway.
UNKNOWN = "(known after creation)"


def is_unknown(value: Any) -> bool:
    """Whether a value (or a name built from one) holds a part not known before the update."""
    return isinstance(value, str) and UNKNOWN in value


# The allow-list generated from the program: every resource type it registers, every (principal,
# role, scope kind) it grants, every custom role's permission set, over the example stacks and
# the generated ones (tests/allowlist.py writes it; tests/test_policy_allowlist.py fails when it
# drifts from what the program creates).
ALLOWLIST_FILE = "data/allowed_types.json"
REGENERATE_ALLOWLIST = "python -m tests.allowlist"
# What the engine registers beside the program's resources: the stack itself. Default providers
# (pulumi:providers:PACKAGE) are allowed for the packages of the program's own types.
ENGINE_TYPES = frozenset({"pulumi:pulumi:Stack"})
PROVIDER_PREFIX = "pulumi:providers:"
# Types the program creates at most once per stack, whatever the settings: the one Healthcare
# dataset (every store's), the one BigQuery dataset, the snapshot's one account and custom role.
# A second one is a place the stack's own rules do not follow (another project's dataset).
SINGLETON_TYPES = frozenset(
    {HEALTHCARE_DATASET, BIGQUERY_DATASET, CUSTOM_ROLE, "gcp:serviceaccount/account:Account"}
)
# The principals the program grants to, as the allow-list's grants name them.
Principal = Literal["agent", "bigquery_encryption", "snapshot", "scheduler"]
PRINCIPAL_TITLES: dict[str, str] = {
    "agent": "the Healthcare service agent",
    "bigquery_encryption": "BigQuery's encryption account",
    "snapshot": "the nightly snapshot's service account",
    "scheduler": "Cloud Scheduler's service agent",
}
# BigQuery's encryption account (bq-NUMBER@bigquery-encryption.iam.gserviceaccount.com:
# https://cloud.google.com/bigquery/docs/customer-managed-encryption).
BIGQUERY_ENCRYPTION = re.compile(
    r"^serviceAccount:bq-[0-9A-Za-z_]+@bigquery-encryption\.[a-z0-9.-]+$"
)
# Every snapshot role (projects/P/roles/dicomBqSnapshotExport_HASH) as the allow-list names it.
SNAPSHOT_ROLE_KEY = f"projects/*/roles/{naming.SNAPSHOT_ROLE_PREFIX}_*"
DATA_EDITOR = "roles/bigquery.dataEditor"


@dataclass(frozen=True)
class ProgramAllowlist:
    custom_types: frozenset[str]
    component_types: frozenset[str]
    # (principal, role or SNAPSHOT_ROLE_KEY, scope kind)
    grants: frozenset[tuple[str, str, str]]
    custom_role_permissions: frozenset[frozenset[str]]

    @property
    def packages(self) -> frozenset[str]:
        """The packages of the program's own types (gcp, time): their providers are allowed."""
        return frozenset(t.split(":", 1)[0] for t in self.custom_types)

    def as_json(self) -> dict[str, Any]:
        return {
            "regenerate": REGENERATE_ALLOWLIST,
            "resourceTypes": {
                "custom": sorted(self.custom_types),
                "component": sorted(self.component_types),
            },
            "grants": [
                {"principal": p, "role": r, "scopeKind": k} for p, r, k in sorted(self.grants)
            ],
            "customRolePermissions": sorted(sorted(s) for s in self.custom_role_permissions),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProgramAllowlist:
        types = data["resourceTypes"]
        return cls(
            custom_types=frozenset(types["custom"]),
            component_types=frozenset(types["component"]),
            grants=frozenset((g["principal"], g["role"], g["scopeKind"]) for g in data["grants"]),
            custom_role_permissions=frozenset(frozenset(s) for s in data["customRolePermissions"]),
        )


@functools.cache
def program_allowlist() -> ProgramAllowlist:
    from importlib import resources as package_files

    text = package_files.files("dicom_bq").joinpath(ALLOWLIST_FILE).read_text("utf-8")
    return ProgramAllowlist.from_json(json.loads(text))


# The offline plan's stand-in for a project number looked up at deploy time (stack/plan.py,
# UNRESOLVED_NUMBER: PROJECT_NUMBER_OF_{project}), in a service agent's address.
_UNRESOLVED_NUMBER = re.compile(r"project_number_of_[a-z0-9.:-]+?(?=@)", re.IGNORECASE)


def resolved(member: str) -> str:
    """The member with a number the offline plan could not know replaced by a stand-in one: to
    judge its shape (whose address it is), never to compare it."""
    return _UNRESOLVED_NUMBER.sub("0", member)


def principal_of(member: str) -> Principal | None:
    """Which of the program's principals the member is, in any spelling; None for anyone else.
    An address whose project number is known only at deploy time is judged by its shape."""
    member = resolved(member)
    if is_agent(member):
        return "agent"
    if BIGQUERY_ENCRYPTION.match(canonical_member(member)):
        return "bigquery_encryption"
    if is_snapshot_account(member):
        return "snapshot"
    if is_scheduler_agent(member):
        return "scheduler"
    return None


def role_key(role: str) -> str:
    return SNAPSHOT_ROLE_KEY if SNAPSHOT_ROLE.match(role) else role


def scope_kind(scope: str) -> str | None:
    parsed = parse_scope(scope)
    return parsed.kind.name if parsed is not None else None


def _package(resource_type: str) -> str:
    if resource_type.startswith(PROVIDER_PREFIX):
        return resource_type[len(PROVIDER_PREFIX) :]
    return resource_type.split(":", 1)[0]


# Types that grant access or make credentials: each named, so a reviewer reads why it is refused.
_CREDENTIAL_TYPES = {
    "gcp:serviceaccount/key:Key": "creates a service account key: a credential that acts as "
    "the account from anywhere, until someone deletes it",
    "gcp:storage/hmacKey:HmacKey": "creates an HMAC key: a credential that reads and writes "
    "Cloud Storage as its service account",
    "gcp:projects/apiKey:ApiKey": "creates an API key: a credential for the project's APIs",
    "gcp:iam/workloadIdentityPool:WorkloadIdentityPool": "creates a workload identity pool: "
    "identities outside Google (a CI system, another cloud) can then be granted roles and act "
    "as service accounts",
    "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider": "creates a workload "
    "identity pool provider: it decides which outside tokens (any repository, any account) "
    "become Google identities",
    "gcp:iam/workloadIdentityPoolManagedIdentity:WorkloadIdentityPoolManagedIdentity": "creates "
    "a workload identity: an outside identity Google trusts",
    "gcp:iam/workforcePool:WorkforcePool": "creates a workforce pool: outside users become "
    "Google identities",
    "gcp:iam/workforcePoolProvider:WorkforcePoolProvider": "creates a workforce pool provider: "
    "it decides which outside users become Google identities",
    "gcp:iam/oauthClient:OauthClient": "creates an OAuth client",
    "gcp:iam/oauthClientCredential:OauthClientCredential": "creates an OAuth client secret",
    "gcp:oslogin/sshPublicKey:SshPublicKey": "adds an SSH key to a user's OS Login profile",
    "gcp:organizations/iAMCustomRole:IAMCustomRole": "creates an organization custom role: "
    "its permissions are outside the grants list",
    "gcp:bigquery/routine:Routine": "creates a BigQuery routine, which an access entry can "
    "authorize to read the dataset",
}
_GRANTING_NAME_PARTS = (
    "iammember",
    "iambinding",
    "iampolicy",
    "memberremove",
    "auditconfig",
    "acl",
    "accesscontrol",
    "policybinding",
    "accesspolicy",
    "denypolicy",
    "boundarypolicy",
    "access",
)


def _authorized(entry: Mapping[str, Any]) -> str | None:
    """What a dataset access entry authorizes instead of a principal: a view, a routine or a
    whole dataset (access[].view / routine / dataset in
    https://cloud.google.com/bigquery/docs/reference/rest/v2/datasets); None for a member."""
    for key, id_key in (("view", "tableId"), ("routine", "routineId")):
        target = entry.get(key)
        if isinstance(target, Mapping):
            parts = [target.get("projectId"), target.get("datasetId"), target.get(id_key)]
            return f"the {key} {'.'.join(str(p) for p in parts)}"
        if target:
            return f"the {key} {target}"
    target = entry.get("dataset")
    if isinstance(target, Mapping):
        inner = target.get("dataset")
        named = inner if isinstance(inner, Mapping) else target
        return f"the dataset {named.get('projectId')}.{named.get('datasetId')}"
    if target:
        return f"the dataset {target}"
    return None


def _access_entries(resource: Resource) -> list[Mapping[str, Any]]:
    if resource.type == BIGQUERY_DATASET_ACCESS:
        return [resource.props]
    if resource.type == BIGQUERY_DATASET:
        found = resource.props.get("accesses")
        return [e for e in found if isinstance(e, Mapping)] if isinstance(found, list) else []
    return []


def _why_type_refused(resource: Resource, allow: ProgramAllowlist) -> str:
    t = resource.type
    kind = _type_name(t)
    package = _package(t)
    if t in _CREDENTIAL_TYPES:
        return f"{_CREDENTIAL_TYPES[t]}; the program never creates {t}"
    if t == BIGQUERY_DATASET_ACCESS:
        what = _authorized(resource.props)
        if what:
            return (
                f"authorizes {what} to read dataset {scope_of(resource)}: anyone who may query "
                f"it reads the dataset's tables through it, outside the grants list (an "
                f"authorized view, routine or dataset); the program never creates {t}"
            )
        return (
            f"adds a dataset access entry on {scope_of(resource)}, a grant outside the grants "
            f"list; the program never creates {t}"
        )
    if t.endswith(":dynamic:Resource") or package.startswith("pulumi-"):
        return (
            f"is a dynamic provider resource ({t}): it runs arbitrary code with the deployer's "
            "credentials during `pulumi up`, so no rule can see what it creates or grants"
        )
    if package == "command" or t.startswith(f"{PROVIDER_PREFIX}command"):
        return (
            f"runs a command ({t}) with the deployer's credentials: a gcloud call can grant any "
            "role or create keys, and no rule can see it"
        )
    if t.startswith(PROVIDER_PREFIX):
        return (
            f"is a provider for package {package}, which the program does not use (its providers "
            f"are {', '.join(sorted(allow.packages))})"
        )
    if package not in allow.packages:
        return (
            f"is a resource of package {package} ({t}), which the program does not use: a raw "
            f"type token or another provider's resource; only the {', '.join(sorted(allow.packages))} "
            "types the program creates are allowed"
        )
    if any(part in kind for part in _GRANTING_NAME_PARTS):
        return (
            f"grants access through {t}, a resource the program never creates: whatever it "
            "grants is outside the grants list"
        )
    return f"is a {t}, a type the program never creates"


def _only_program_types(resources: list[Resource], _: PolicyContext) -> Iterator[tuple[str, str]]:
    allow = program_allowlist()
    allowed = allow.custom_types | allow.component_types | ENGINE_TYPES
    first: dict[str, str] = {}
    for r in resources:
        provider = r.type.startswith(PROVIDER_PREFIX) and _package(r.type) in allow.packages
        if r.type not in allowed and not provider:
            yield r.name, _why_type_refused(r, allow)
        elif r.type in SINGLETON_TYPES:
            if r.type in first:
                yield (
                    r.name,
                    f"is a second {r.type} (besides {first[r.type]}): the program creates one "
                    "per stack, and the rules follow that one",
                )
            first.setdefault(r.type, r.name)


def member_matches(listed: str, member: str) -> bool:
    """Whether a member of the grants list names `member` (both in canonical_member form). A
    listed address whose project number the offline plan could not know (service-PROJECT_NUMBER_
    OF_p@...: `dicom-bq up` without dicom-bq:sourceProjectNumber) names that address with any
    number in its place: the rest of the address, the role and the scope must still match."""
    if listed == member:
        return True
    if not _UNRESOLVED_NUMBER.search(listed):
        return False
    parts = _UNRESOLVED_NUMBER.split(listed)
    return re.fullmatch("[0-9]+".join(re.escape(p) for p in parts), member) is not None


def _listed(b: Binding, listed: frozenset[ListedGrant]) -> bool:
    """Whether the grants list holds the binding: role exactly, member as IAM compares it (both
    in canonical_member form), scope exactly; a part not known yet matches any."""
    return any(
        (is_unknown(b.role) or g.role == b.role)
        and (is_unknown(b.member) or member_matches(g.member, b.member))
        and (is_unknown(b.scope) or g.scope == b.scope)
        for g in listed
    )


@dataclass(frozen=True)
class _StackScopes:
    """What the stack itself creates, as scopes: the fallback ties grants to them."""

    datasets: frozenset[str]
    dataset_projects: frozenset[str]
    stores: frozenset[str]
    accounts: frozenset[tuple[str, str]]  # (project, account ID)
    # Topics the stack lets the Healthcare agent publish to (the program grants one per topic).
    agent_topics: frozenset[str] = frozenset()


def _stack_scopes(resources: list[Resource]) -> _StackScopes:
    datasets = frozenset(scope_of(r) for r in _of_type(resources, BIGQUERY_DATASET))
    store_kind = SCOPE_KINDS["dicom_store"]
    stores = frozenset(
        f"//{store_kind.host}/{_text(r.props, 'dataset')}/dicomStores/{_text(r.props, 'name')}"
        for r in _of_type(resources, "gcp:healthcare/dicomStore:DicomStore")
    )
    accounts = frozenset(
        (_text(r.props, "project"), _text(r.props, "accountId"))
        for r in _of_type(resources, "gcp:serviceaccount/account:Account")
    )
    projects = frozenset(_text(r.props, "project") for r in _of_type(resources, BIGQUERY_DATASET))
    topics = frozenset(
        b.scope
        for b in bindings(resources)
        if b.role == "roles/pubsub.publisher"
        and (is_unknown(b.member) or principal_of(b.member) == "agent")
    )
    return _StackScopes(datasets, projects, stores, accounts, topics)


def _own_scope_problem(b: Binding, principal: str, own: _StackScopes) -> str | None:
    """Without a grants list, the scopes the stack creates are the only ones of their kind a
    program grant names: its dataset, its stores, its snapshot account; the BigQuery project's
    roles go on its dataset's project."""
    if is_unknown(b.scope):
        return None
    kind = scope_kind(b.scope)
    datasets = ", ".join(sorted(own.datasets))
    if kind == "bigquery_dataset" and len(own.datasets) > 1:
        return f"{b.scope}, one of {len(own.datasets)} BigQuery datasets ({datasets}): the program creates one"
    if kind == "bigquery_dataset" and own.datasets and b.scope not in own.datasets:
        return f"{b.scope}, which is not the stack's BigQuery dataset ({datasets})"
    known_stores = own.stores and not any(is_unknown(s) for s in own.stores)
    if kind == "dicom_store" and known_stores and b.scope not in own.stores:
        return f"{b.scope}, which is not one of the stack's DICOM stores"
    if kind == "service_account" and own.accounts:
        parts = SCOPE_KINDS["service_account"].parse(b.scope) or {}
        account = (parts.get("project", ""), parts.get("account", "").split("@")[0])
        if account not in own.accounts:
            return f"{b.scope}, which is not the stack's own service account"
    if (
        kind == "project"
        and principal == "agent"
        and b.role.startswith("roles/bigquery.")
        and own.dataset_projects
    ):
        project = (SCOPE_KINDS["project"].parse(b.scope) or {}).get("project", "")
        if project not in own.dataset_projects or len(own.dataset_projects) > 1:
            return (
                f"{b.scope}, which is not the project of the stack's one BigQuery dataset "
                f"({', '.join(sorted(own.dataset_projects))})"
            )
    return None


def _fallback_problem(
    b: Binding, context: PolicyContext, allow: ProgramAllowlist, own: _StackScopes
) -> str | None:
    """Without a grants list: the member is one of the program's principals, the (principal,
    role, scope kind) one the program grants, on a scope the stack creates where it creates one."""
    principal = None if is_unknown(b.member) else principal_of(b.member)
    if principal is None and not is_unknown(b.member):
        titles = ", ".join(PRINCIPAL_TITLES.values())
        return (
            f"grants {b.role} to {b.member} on {b.scope}: the program grants only to {titles}, "
            "and no grants list names anyone else"
        )
    if (
        principal == "agent"
        and context.source_project_number is not None
        and not _UNRESOLVED_NUMBER.search(b.member)
    ):
        number = agent_project_number(b.member)
        if number != context.source_project_number:
            return (
                f"grants {b.role} to {b.member}, the Healthcare agent of another project than "
                f"the source project (number {context.source_project_number})"
            )
    kind = None if is_unknown(b.scope) else scope_kind(b.scope)
    key = None if is_unknown(b.role) else role_key(b.role)
    if not any(
        (principal is None or p == principal)
        and (key is None or r == key)
        and (is_unknown(b.scope) or k == kind)
        for p, r, k in allow.grants
    ):
        if principal is None:
            # The member is known only after creation: nothing of the program fits the rest.
            # Every kind of scope described has a program grant, so with a known kind (or an
            # unknown scope) it is the role that no grant holds.
            if kind is None and not is_unknown(b.scope):
                held = "nothing on a scope of this kind"
            else:
                held = f"no one {b.role} on {f'a {kind}' if kind else 'any scope'}"
            return f"grants {b.role} to {b.member} on {b.scope}; the program grants {held}"
        who = PRINCIPAL_TITLES[principal]
        granted = sorted(f"{r} on a {k}" for p, r, k in allow.grants if p == principal)
        held = f"only {', '.join(granted)}" if granted else "nothing"
        return f"grants {b.role} to {who} on {b.scope}; the program grants {who} {held}"
    problem = _own_scope_problem(b, principal or "", own)
    who = PRINCIPAL_TITLES[principal] if principal else b.member
    return f"grants {b.role} to {who} on {problem}" if problem else None


def _custom_role_name(resource: Resource) -> str:
    role_id = _text(resource.props, "roleId")
    if resource.type.startswith("gcp:organizations/"):
        return f"organizations/{_text(resource.props, 'orgId')}/roles/{role_id}"
    return naming.custom_role_name(_text(resource.props, "project"), role_id)


def _custom_role_problems(
    r: Resource, context: PolicyContext, allow: ProgramAllowlist
) -> Iterator[str]:
    listed = context.listed_grants
    name = _custom_role_name(r)
    found = r.props.get("permissions")
    if isinstance(found, list):
        # IAM keeps a custom role's includedPermissions as a set: order and repeats do not count.
        permissions = frozenset(str(p) for p in found if not is_unknown(p))
        expected = " or ".join(
            sorted("{" + ", ".join(sorted(s)) + "}" for s in allow.custom_role_permissions)
        )
        held = ", ".join(sorted(permissions))
        if any(is_unknown(p) for p in found):
            # Some known only after creation (preview): those known must fit one of the
            # program's sets now; the whole list is judged when known, at the update.
            if not any(permissions <= s for s in allow.custom_role_permissions):
                yield (
                    f"custom role {name} holds {{{held}}} and permissions known only after "
                    f"creation; the program's custom role holds exactly {expected or 'nothing'}"
                )
        elif permissions not in allow.custom_role_permissions:
            yield (
                f"custom role {name} holds {{{held}}}; the program's custom role holds exactly "
                f"{expected or 'nothing'}"
            )
    elif not is_unknown(found):
        yield f"custom role {name} has no readable permission list"
    if is_unknown(name):
        return
    if listed is not None:
        if name not in {g.role for g in listed}:
            yield f"custom role {name} is not a role the grants list grants"
    elif not SNAPSHOT_ROLE.match(name):
        yield f"custom role {name} is not the nightly snapshot's role, the one custom role the program creates"


def _only_listed_grants(
    resources: list[Resource], context: PolicyContext
) -> Iterator[tuple[str, str]]:
    allow = program_allowlist()
    own = _stack_scopes(resources)
    listed = context.listed_grants
    for r in resources:
        for entry in _access_entries(r):
            what = _authorized(entry)
            if what:
                yield (
                    r.name,
                    f"authorizes {what} to read dataset {scope_of(r)}: anyone who may query it "
                    "reads the dataset's tables through it (an authorized view, routine or "
                    "dataset), and no grant of the program is one",
                )
        kind = _type_name(r.type)
        if kind.endswith("iammember") and not (
            isinstance(r.props.get("role"), str) and isinstance(r.props.get("member"), str)
        ):
            yield (
                r.name,
                f"{r.type} without a readable role and member: its grant cannot be checked",
            )
        if kind == "iamcustomrole":
            for problem in _custom_role_problems(r, context, allow):
                yield r.name, problem
    for b in bindings(resources):
        if listed is not None:
            if not _listed(b, listed):
                held = sorted(f"{g.role} on {g.scope}" for g in listed if g.member == b.member)
                also = f" (it lists for {b.member}: {'; '.join(held)})" if held else ""
                yield (
                    b.resource,
                    f"grants {b.role} to {b.member} on {b.scope}, which the grants list does "
                    f"not name{also}",
                )
        else:
            fallback = _fallback_problem(b, context, allow, own)
            if fallback:
                yield b.resource, fallback


def _bigquery_table(uri: str) -> tuple[str, str] | None:
    """(project, dataset) of a bq://PROJECT.DATASET.TABLE URI (a domain-scoped project
    example.com:p keeps its colon); None when it is not one."""
    found = re.fullmatch(r"bq://([^./]+(?:\.[^./:]+)*?:[^./]+|[^./:]+)\.([^./]+)\.([^./]+)", uri)
    return (found.group(1), found.group(2)) if found else None


def _destination_problem(uri: Any, context: PolicyContext, own: _StackScopes) -> str | None:
    if is_unknown(uri):
        return None
    parsed = _bigquery_table(str(uri))
    if parsed is None:
        return f"{uri} is not a bq://PROJECT.DATASET.TABLE table"
    project, dataset = parsed
    scope = SCOPE_KINDS["bigquery_dataset"].uri(project=project, resource=dataset)
    if len(own.datasets) > 1:
        # The program creates one; which of several is the stack's own is not for the stack to say.
        return (
            f"{uri}, while the stack creates {len(own.datasets)} BigQuery datasets "
            f"({', '.join(sorted(own.datasets))}) where the program creates one"
        )
    if own.datasets and scope not in own.datasets:
        return f"{uri} is outside the stack's BigQuery dataset ({', '.join(sorted(own.datasets))})"
    if context.listed_grants is not None:
        editor = {g.scope for g in context.listed_grants if g.role == DATA_EDITOR}
        if scope not in editor and project_scope(project) not in editor:
            return f"{uri} is in no dataset the grants list lets the Healthcare agent write"
    elif not own.datasets:
        return f"{uri} is in no BigQuery dataset the stack creates"
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _store_paths(store: Resource, context: PolicyContext, own: _StackScopes) -> Iterator[str]:
    streams = store.props.get("streamConfigs")
    for stream in streams if isinstance(streams, list) else []:
        uri = _mapping(_mapping(stream).get("bigqueryDestination")).get("tableUri")
        problem = _destination_problem(uri, context, own)
        if problem:
            yield (
                f"streams every instance's metadata into {problem}: PHI would reach a table "
                "the stack does not hold"
            )
    listed = context.listed_grants
    topic = _mapping(store.props.get("notificationConfig")).get("pubsubTopic")
    if isinstance(topic, str) and not is_unknown(topic):
        # The program grants the agent publisher on each topic a store notifies: with a grants
        # list, a listed grant; without one, a grant of the stack (which DBQ019 holds to topics).
        if listed is not None:
            publishers = {g.scope for g in listed if g.role == "roles/pubsub.publisher"}
            source = "the grants list does not let the agent publish to"
        else:
            publishers = set(own.agent_topics)
            source = "the stack does not let the agent publish to"
        if f"//{SCOPE_KINDS['topic'].host}/{topic}" not in publishers:
            yield f"notifies {topic}, a topic {source}"


_EXPORT_URI = re.compile(r"^https://healthcare\.[a-z0-9.-]+/v1/(projects/[^:]+):export$")


def _job_paths(job: Resource, context: PolicyContext, own: _StackScopes) -> Iterator[str]:
    props = job.props
    for other in ("pubsubTarget", "appEngineHttpTarget"):
        if props.get(other):
            yield f"has a {other}; the program's jobs only call dicomStores.export over HTTP"
    http = _mapping(props.get("httpTarget"))
    if not http:
        return
    if http.get("oidcToken"):
        yield "sends an OIDC token; the program's jobs send the snapshot account's OAuth token"
    email = _mapping(http.get("oauthToken")).get("serviceAccountEmail")
    if isinstance(email, str) and not is_unknown(email):
        account_id = email.partition("@")[0].lower()
        ours = not own.accounts or account_id in {a for _, a in own.accounts}
        if not (is_snapshot_account(f"serviceAccount:{email}") and ours):
            yield (
                f"calls as {email}, not the stack's snapshot account: Cloud Scheduler's agent "
                "would mint that account's tokens for whoever edits the job"
            )
    uri = http.get("uri")
    if isinstance(uri, str) and not is_unknown(uri):
        found = _EXPORT_URI.match(uri)
        store = f"//{SCOPE_KINDS['dicom_store'].host}/{found.group(1)}" if found else None
        if store is None:
            yield f"calls {uri}, not dicomStores.export on one of the stack's DICOM stores"
        elif own.stores and store not in own.stores and not any(is_unknown(s) for s in own.stores):
            yield f"calls {uri}, an export of a DICOM store the stack does not create"
    body = http.get("body")
    if isinstance(body, str) and not is_unknown(body):
        try:
            request = json.loads(base64.b64decode(body, validate=True))
        except (ValueError, TypeError):
            yield "has a body that is not base64 JSON: the export it asks for cannot be checked"
            return
        table = _mapping(_mapping(request).get("bigqueryDestination")).get("tableUri")
        problem = _destination_problem(table, context, own)
        if problem:
            yield f"exports into {problem}: PHI would reach a table the stack does not hold"


def _data_stays_in_the_stack(
    resources: list[Resource], context: PolicyContext
) -> Iterator[tuple[str, str]]:
    own = _stack_scopes(resources)
    for store in _of_type(resources, "gcp:healthcare/dicomStore:DicomStore"):
        for problem in _store_paths(store, context, own):
            yield store.name, problem
    for job in _of_type(resources, "gcp:cloudscheduler/job:Job"):
        for problem in _job_paths(job, context, own):
            yield job.name, problem


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
    Rule(
        "DBQ018",
        "only-program-resource-types",
        "The stack creates only the resource types the program creates (an allow-list generated from the program: scripts/dicom_bq/data/allowed_types.json), and one BigQuery dataset, Healthcare dataset, custom role and service account at most: no service account or HMAC keys, workload identity pools or providers, DatasetAccess entries, dynamic providers, commands or other packages' type tokens.",
        "mandatory",
        "Remove the resource. A type the program itself now creates goes into the allow-list with `python -m tests.allowlist` (reviewed like the IAM inventories).",
        _only_program_types,
        "policy-library gcp_restricted_resource_types / allowed resource types (nearest); no Checkov or Trivy equivalent",
    ),
    Rule(
        "DBQ019",
        "only-listed-grants",
        "Every IAM member, binding, policy, dataset access entry and ACL grants only what the grants list names (role exactly; member as IAM compares it: email and type case-insensitive, deleted: and ?uid= as the principal named; scope exactly), no access entry authorizes a view, routine or dataset, and every custom role holds exactly the program's permission set; without a grants list, only the program's principals, roles and scope kinds, on the scopes the stack creates.",
        "mandatory",
        "Grant only what infra/grants.py lists (dicom-bq plan shows it); give other people access outside this stack, through your organization's IAM process.",
        _only_listed_grants,
        "policy-library gcp_iam_allowed_bindings and gcp_iam_custom_role_permissions (nearest); Checkov CKV_GCP_15 (authorized/public datasets, partial)",
    ),
    Rule(
        "DBQ020",
        "data-stays-in-the-stack",
        "DICOM stores stream only into the stack's BigQuery dataset (and, with a grants list, notify only listed topics); Cloud Scheduler jobs only call dicomStores.export on the stack's stores as its snapshot account, into its dataset.",
        "mandatory",
        "Stream and export only into the stack's own dataset (dicom-bq:streamTables, snapshotTable); to copy data elsewhere, query it from there with your own grants.",
        _data_stays_in_the_stack,
        "none (no scanner follows Healthcare streams or Scheduler targets)",
    ),
)


def evaluate(resources: list[Resource], context: PolicyContext) -> list[Finding]:
    return [
        Finding(rule.id, rule.enforcement, name, message, rule.remediation)
        for rule in RULES
        for name, message in rule.check(resources, context)
    ]
