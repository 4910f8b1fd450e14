"""`dicom-bq audit`: the live IAM policies compared with the stack's grants list.

The audit says what it read. Every scope a grant names, of any kind vocabulary/scopes.py describes
(project, BigQuery dataset, bucket, Pub/Sub topic, Cloud KMS key, DICOM store, service
account), is read, and a
scope it could not read is a finding of its own.
"Clean" therefore means every grant was checked against a policy that was actually read, not
"nothing was wrong in the part we looked at".
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from dicom_bq.clients.discovery import ApiCallError, DiscoveryClients, GoogleApi
from dicom_bq.clients.endpoints import Connection
from dicom_bq.clients.retry import RetryPolicy
from dicom_bq.errors import DicomBqError
from dicom_bq.infra.grants import AGENT_ROLES
from dicom_bq.infra.policy_rules import (
    AGENT,
    BASIC_ROLES,
    PUBLIC_MEMBERS,
    is_snapshot_account,
    is_snapshot_account_scope,
)
from dicom_bq.security.stacks import (
    AgentOwners,
    ProjectNumber,
    ProjectNumbers,
    ProjectStacks,
    agent_number,
    describe_command,
    is_healthcare_agent,
)
from dicom_bq.vocabulary.contract import OutputNames, StackOutputs
from dicom_bq.vocabulary.scopes import (
    LiveResponse,
    ParsedScope,
    parse_scope,
    project_scope,
    scope_uri,
)

# Google grants this to the agent on its own project when it creates the agent; removing it
# breaks the Healthcare API, so it is expected, never "extra".
SERVICE_AGENT_ROLE = "roles/healthcare.serviceAgent"
Kind = Literal[
    "missing",
    "extra",
    "basic-role",
    "public",
    "deleted-principal",
    "conditional-grant",
    "unread",
    # A Healthcare agent that is not the source project's (a wrong sourceProjectNumber names it).
    "foreign-agent",
    # A dicom-bq role held by a Healthcare agent no stack of this project deploys: kept when its
    # stack was destroyed (grants on shared scopes are kept on delete), or made by hand.
    "orphaned",
]
# BigQuery's legacy dataset roles, as the access list may still spell them.
LEGACY_DATASET_ROLES = {
    "OWNER": "roles/bigquery.dataOwner",
    "WRITER": "roles/bigquery.dataEditor",
    "READER": "roles/bigquery.dataViewer",
}
# Every read asks for policy version 3: below it, a policy with conditional bindings is either
# refused or returned with the conditions stripped and the role renamed "<role>_withcond_<hash>"
# (https://cloud.google.com/iam/docs/policies#versions,
# https://cloud.google.com/iam/docs/troubleshooting-withcond).
POLICY_VERSION = 3
# The offline plan's address for an agent whose project number it was not given
# (stack/plan.py, UNRESOLVED_NUMBER): the audit reads the number from Google.
UNRESOLVED_AGENT = re.compile(r"^service-PROJECT_NUMBER_OF_[^@]+@gcp-sa-healthcare\.")
_WITHCOND_ROLE = re.compile(r"^(?P<role>.+?)_(?:withcond|with_conditionalbinding)_[0-9A-Za-z]+$")


class Grant(NamedTuple):
    role: str
    member: str
    scope: str


@dataclass(frozen=True)
class AuditTarget:
    stack: str
    agent_member: str
    # Every grant of the stack, whoever the member: the agent's, and BigQuery's encryption
    # account's on the dataset key (a missing one of those breaks table creation just the same).
    grants: tuple[Grant, ...]
    source_project: str
    bigquery_project: str
    bigquery_dataset: str
    filter_bucket: str | None
    # Agents the stack's settings or outputs named that are not the source project's (their
    # number is not its number): any binding they hold on the stack's scopes is foreign.
    foreign_members: frozenset[str] = frozenset()
    # The agents of the project's other stacks (None: not known, orphans are not judged).
    other_agents: AgentOwners | None = None

    @classmethod
    def from_outputs(cls, stack: str, outputs: dict[str, Any]) -> AuditTarget:
        parsed = StackOutputs.parse(outputs)
        parsed.require(
            OutputNames.AGENT,
            OutputNames.GRANTS,
            OutputNames.SOURCE_PROJECT,
            OutputNames.BIGQUERY_PROJECT,
            OutputNames.BIGQUERY_DATASET,
        )
        assert parsed.agent_email
        assert parsed.source_project
        assert parsed.bigquery_project
        assert parsed.bigquery_dataset_id
        if not AGENT.match(f"serviceAccount:{parsed.agent_email}") and not (
            UNRESOLVED_AGENT.match(parsed.agent_email)
        ):
            raise DicomBqError(
                f"the agent's address {parsed.agent_email!r} is not known offline: set "
                "dicom-bq:sourceProjectNumber, or audit with --outputs from the deployed stack"
            )
        agent = f"serviceAccount:{parsed.agent_email}"
        return cls(
            stack=stack,
            agent_member=agent,
            grants=tuple(
                Grant(g["role"], g.get("member") or agent, g["scope"]) for g in parsed.grants
            ),
            source_project=parsed.source_project,
            bigquery_project=parsed.bigquery_project,
            bigquery_dataset=parsed.bigquery_dataset_id,
            filter_bucket=parsed.filter_bucket,
        )

    @property
    def agent_resolved(self) -> bool:
        """False while the agent's address holds the offline plan's placeholder number."""
        return not UNRESOLVED_AGENT.match(self.agent_member.removeprefix("serviceAccount:"))

    def with_agent_number(self, number: str) -> AuditTarget:
        """The same target for the source project numbered `number`: the Healthcare agent and
        every service agent of the project (Cloud Scheduler's) take that number, and the
        agents named before, when their number differs, are foreign."""
        old = agent_number(self.agent_member)
        if old is None or old == number:
            return self
        before = f"serviceAccount:service-{old}@gcp-sa-"

        def renumbered(member: str) -> str:
            if member.startswith(before):
                return f"serviceAccount:service-{number}@gcp-sa-" + member[len(before) :]
            return member

        named = {g.member for g in self.grants if g.member.startswith(before)} | {self.agent_member}
        return dataclasses.replace(
            self,
            agent_member=renumbered(self.agent_member),
            grants=tuple(Grant(g.role, renumbered(g.member), g.scope) for g in self.grants),
            foreign_members=(
                self.foreign_members | frozenset(named) if self.agent_resolved else frozenset()
            ),
        )

    def scopes(self) -> list[str]:
        """The projects (read for extra, public and basic roles even without a grant there),
        then every scope a grant names, once each."""
        scopes = [
            project_scope(self.source_project),
            project_scope(self.bigquery_project),
            scope_uri(
                "bigquery_dataset", project=self.bigquery_project, resource=self.bigquery_dataset
            ),
        ]
        if self.filter_bucket:
            scopes.append(
                scope_uri("bucket", project=self.source_project, resource=self.filter_bucket)
            )
        scopes += [grant.scope for grant in self.grants]
        return list(dict.fromkeys(scopes))


@dataclass(frozen=True)
class Binding:
    role: str
    member: str
    # The binding's IAM condition (an Expr: expression, title, description), None when plain.
    condition: dict[str, str] | None = None


@dataclass(frozen=True)
class LivePolicy:
    scope: str
    bindings: tuple[Binding, ...] = ()
    # Why the policy could not be read (status and message); None when it was read.
    error: str | None = None

    @property
    def read(self) -> bool:
        return self.error is None


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


@dataclass(frozen=True)
class AuditResult:
    """What the audit read and what it found; `clean` only when every scope was read."""

    stack: str
    grants: int
    findings: tuple[AuditFinding, ...]
    scopes_read: tuple[str, ...]
    scopes_unread: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())

    @property
    def clean(self) -> bool:
        return not self.findings and not self.scopes_unread

    @property
    def exit_code(self) -> int:
        return 0 if self.clean else 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "clean": self.clean,
            "grants": self.grants,
            "scopes_read": list(self.scopes_read),
            "scopes_unread": list(self.scopes_unread),
            "findings": [f.as_dict() for f in self.findings],
            "notes": list(self.notes),
        }

    def text(self) -> str:
        total = len(self.scopes_read) + len(self.scopes_unread)
        if self.clean:
            head = (
                f"clean: the live IAM policies match the {self.grants} grants of {self.stack} "
                f"(read all {total} scopes)"
            )
            return "\n".join(
                [
                    head,
                    *(f"  read {scope}" for scope in self.scopes_read),
                    *(f"note: {note}" for note in self.notes),
                ]
            )
        lines = [f"{f.kind}: {f.message}\n  fix: {f.fix}" for f in self.findings]
        tail = f"not clean: {len(self.findings)} findings for the {self.grants} grants of "
        tail += f"{self.stack}; read {len(self.scopes_read)} of {total} scopes"
        if self.scopes_unread:
            tail += f", could not read {', '.join(self.scopes_unread)}"
        return "\n".join([*lines, *(f"note: {note}" for note in self.notes), tail])


# -- Commands a person runs: to check a scope by hand, to add or remove a binding -------------


def check_command(scope: str) -> str:
    """The command that shows the scope's policy by hand (version 3, with its conditions)."""
    parsed = parse_scope(scope)
    if parsed is None:
        return f"# the audit cannot read {scope}: inspect its IAM policy in the console"
    return parsed.kind.commands.show.format(**parsed.parts)


def iam_command(scope: str, verb: Literal["add", "remove"], member: str, role: str) -> str:
    """The command that adds or removes one binding by hand."""
    parsed = parse_scope(scope)
    if parsed is None:
        return f"# {verb} {role} for {member} on {scope} by hand"
    member_role = f"--member='{member}' --role='{role}'"
    return parsed.kind.commands.binding.format(verb=verb, member_role=member_role, **parsed.parts)


# The name tests/test_scopes.py (and earlier callers) know it by.
_iam_command = iam_command


def _consequence(scope: str) -> str:
    """What breaks when a grant on this scope is not in force."""
    parsed = parse_scope(scope)
    return parsed.kind.consequence if parsed else "exports will fail with PERMISSION_DENIED"


def _restore(stack: str) -> str:
    # Pulumi compares with its state, not the live policy: without --refresh it does not see a
    # binding someone removed or replaced, and `up` would change nothing.
    return f"pulumi up --stack {stack} --refresh"


# -- IAM conditions ---------------------------------------------------------------------------

# A binding with a condition grants its role only while the CEL expression evaluates to true
# (https://cloud.google.com/iam/docs/conditions-overview). The audit proves an expression true
# for every future request only in the forms below; anything else ("resource.name...",
# "request.time.getHours(...)", "||", "!") is a condition it cannot evaluate, so the binding
# does not count as the grant. request.time is the request's timestamp
# (https://cloud.google.com/iam/docs/conditions-attribute-reference#request-time).
ConditionState = Literal["always", "expired", "until", "not-yet", "unknown"]
_TIME_TERM = re.compile(
    r"""^request\.time\s*(?P<op><=|<|>=|>)\s*timestamp\(\s*(?P<q>["'])(?P<at>[^"']+)(?P=q)\s*\)$"""
)


def _strip_parens(term: str) -> str:
    term = term.strip()
    while term.startswith("(") and term.endswith(")") and _balanced(term[1:-1]):
        term = term[1:-1].strip()
    return term


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def condition_state(expression: str, now: datetime) -> tuple[ConditionState, datetime | None]:
    """Whether `expression` holds for every request from `now` on.

    ("always", None): proven (literally true, or only start times already past);
    ("expired", t): an end time `t` already past, IAM no longer applies the binding;
    ("until", t): true now, false from `t` on; ("not-yet", t): false until `t`;
    ("unknown", None): anything else.
    """
    ends: list[datetime] = []
    starts: list[datetime] = []
    for raw in _strip_parens(expression).split("&&"):
        term = _strip_parens(raw)
        if term == "true":
            continue
        found = _TIME_TERM.match(term)
        if found is None:
            return "unknown", None
        try:
            at = datetime.fromisoformat(found["at"])
        except ValueError:
            return "unknown", None
        if at.tzinfo is None:
            return "unknown", None  # CEL timestamps are RFC 3339, which carry an offset
        (ends if found["op"].startswith("<") else starts).append(at)
    if ends and min(ends) <= now:
        return "expired", min(ends)
    if starts and max(starts) > now:
        return "not-yet", max(starts)
    if ends:
        return "until", min(ends)
    return "always", None


def _describe_condition(condition: dict[str, str], now: datetime) -> str:
    expression = condition.get("expression", "")
    title = condition.get("title")
    label = f"condition {title!r} ({expression})" if title else f"condition {expression!r}"
    if not expression:
        return (
            f"{label}, hidden because the policy was read below version 3, so the audit "
            "cannot tell when it holds"
        )
    state, at = condition_state(expression, now)
    if state == "expired":
        return f"{label}, which expired at {at:%Y-%m-%dT%H:%M:%SZ}: IAM no longer applies it"
    if state == "until":
        return f"{label}, which expires at {at:%Y-%m-%dT%H:%M:%SZ}: exports fail from then on"
    if state == "not-yet":
        return f"{label}, which applies only from {at:%Y-%m-%dT%H:%M:%SZ}"
    return f"{label}, which the audit cannot prove always true"


def _plain(binding: Binding, now: datetime) -> bool:
    """A binding that grants its role to every request from now on."""
    if binding.condition is None:
        return True
    expression = binding.condition.get("expression", "")
    return bool(expression) and condition_state(expression, now)[0] == "always"


# -- The comparison ---------------------------------------------------------------------------


def compare(
    target: AuditTarget, policies: list[LivePolicy], now: datetime | None = None
) -> list[AuditFinding]:
    now = now or datetime.now(UTC)
    findings: list[AuditFinding] = []
    by_scope = {p.scope: p for p in policies}
    for policy in policies:
        if not policy.read:
            roles = sorted({g.role for g in target.grants if g.scope == policy.scope})
            unchecked = (
                f"its grants ({', '.join(roles)}) are unchecked"
                if roles
                else "its extra, public and basic-role bindings are unchecked"
            )
            findings.append(
                AuditFinding(
                    "unread",
                    policy.scope,
                    ", ".join(roles),
                    "",
                    f"could not read the IAM policy of {policy.scope} ({policy.error}): "
                    f"{unchecked}, so the stack cannot be called clean",
                    check_command(policy.scope),
                )
            )
    for scope in dict.fromkeys(g.scope for g in target.grants if g.scope not in by_scope):
        roles = sorted({g.role for g in target.grants if g.scope == scope})
        findings.append(
            AuditFinding(
                "unread",
                scope,
                ", ".join(roles),
                "",
                f"the audit does not know how to read the IAM policy of {scope}: its grants "
                f"({', '.join(roles)}) are unchecked",
                check_command(scope),
            )
        )
    read = {p.scope: p for p in policies if p.read}
    for grant in target.grants:
        live = read.get(grant.scope)
        if live is None:
            continue  # reported as unread above
        mine = [b for b in live.bindings if (b.role, b.member) == (grant.role, grant.member)]
        if any(_plain(b, now) for b in mine):
            continue
        conditional = [b for b in mine if b.condition is not None]
        for binding in conditional:
            assert binding.condition is not None
            findings.append(
                AuditFinding(
                    "conditional-grant",
                    grant.scope,
                    grant.role,
                    grant.member,
                    f"{grant.member} holds {grant.role} on {grant.scope} only under "
                    f"{_describe_condition(binding.condition, now)}; the stack grants it "
                    f"without a condition: when it does not hold, {_consequence(grant.scope)}",
                    f"{check_command(grant.scope)}   # then: {_restore(target.stack)}",
                )
            )
        if not conditional:
            who = "the agent" if grant.member == target.agent_member else grant.member
            findings.append(
                AuditFinding(
                    "missing",
                    grant.scope,
                    grant.role,
                    grant.member,
                    f"{who} lacks {grant.role} on {grant.scope}: {_consequence(grant.scope)} "
                    "(an authoritative binding or a manual edit may have removed it)",
                    f"{_restore(target.stack)}   # or: "
                    + iam_command(grant.scope, "add", grant.member, grant.role),
                )
            )
    expected = {(g.role, g.scope) for g in target.grants if g.member == target.agent_member}
    expected.add((SERVICE_AGENT_ROLE, project_scope(target.source_project)))
    granted = {(g.member, g.role, g.scope) for g in target.grants}
    for policy in read.values():
        for binding in policy.bindings:
            findings += _binding_findings(target, policy.scope, binding, expected, now)
            findings += _snapshot_findings(target, policy.scope, binding, granted)
    return findings


def _snapshot_findings(
    target: AuditTarget, scope: str, binding: Binding, granted: set[tuple[str, str, str]]
) -> Iterable[AuditFinding]:
    """The nightly snapshot's account holds only what the grants list gives it, like the agent;
    and on that account, which the stack creates, nobody holds anything the grants list does not
    give: whoever holds a role there (Token Creator, Service Account User) can act as it and
    export any store it reaches (policy rule DBQ017, snapshot-account-not-impersonated)."""
    role, member = binding.role, binding.member
    if (member, role, scope) in granted:
        return
    remove = iam_command(scope, "remove", member, role)
    if is_snapshot_account(member):
        yield AuditFinding(
            "extra",
            scope,
            role,
            member,
            f"the snapshot account {member} holds {role} on {scope}, which the grants list "
            "does not give it",
            remove,
        )
    elif is_snapshot_account_scope(scope) and member != target.agent_member:
        # The agent's extra binding is reported by _binding_findings already.
        yield AuditFinding(
            "extra",
            scope,
            role,
            member,
            f"{member} holds {role} on the snapshot account {scope}, which the grants list "
            "does not give: it may act as that account, which only Cloud Scheduler's agent "
            "should",
            remove,
        )


def _binding_findings(
    target: AuditTarget,
    scope: str,
    binding: Binding,
    expected: set[tuple[str, str]],
    now: datetime,
) -> Iterable[AuditFinding]:
    role, member = binding.role, binding.member
    remove = iam_command(scope, "remove", member, role)
    note = ""
    if binding.condition is not None:
        note = f" ({_describe_condition(binding.condition, now)})"
    if member == target.agent_member and (role, scope) not in expected:
        yield AuditFinding(
            "extra",
            scope,
            role,
            member,
            f"the agent holds {role} on {scope}{note}, which the grants list does not need",
            remove,
        )
    if member != target.agent_member and is_healthcare_agent(member):
        yield from _other_agent_findings(target, scope, binding, remove, note)
    if member in PUBLIC_MEMBERS:
        yield AuditFinding(
            "public",
            scope,
            role,
            member,
            f"{member} holds {role} on {scope}{note}: PHI may be readable by anyone",
            remove,
        )
    if member.startswith("deleted:"):
        yield AuditFinding(
            "deleted-principal",
            scope,
            role,
            member,
            f"{role} is granted to a deleted principal on {scope}; if it was the agent, the "
            "new agent lacks it",
            remove,
        )
    if role in BASIC_ROLES and (
        member == target.agent_member or not scope.startswith("//cloudresourcemanager")
    ):
        yield AuditFinding(
            "basic-role",
            scope,
            role,
            member,
            f"{member} holds the basic role {role} on {scope}{note}",
            remove,
        )


def _other_agent_findings(
    target: AuditTarget, scope: str, binding: Binding, remove: str, note: str
) -> Iterable[AuditFinding]:
    """Another Healthcare agent on the stack's scopes: the one a wrong project number named
    (foreign), another stack's (shared: fine), or nobody's that the audit knows (orphaned)."""
    role, member = binding.role, binding.member
    if member in target.foreign_members:
        yield AuditFinding(
            "foreign-agent",
            scope,
            role,
            member,
            f"{member} holds {role} on {scope}{note}: it is not the source project "
            f"{target.source_project}'s Healthcare agent ({target.agent_member}) but another "
            "project's, named by a wrong sourceProjectNumber; that project's Healthcare API "
            "may use this access",
            remove,
        )
        return
    others = target.other_agents
    if others is None or role not in AGENT_ROLES or others.stacks_of(member):
        return
    unsure = (
        f" (unless it is the agent of stack {', '.join(others.unknown)}, whose project number "
        "could not be read)"
        if others.unknown
        else ""
    )
    yield AuditFinding(
        "orphaned",
        scope,
        role,
        member,
        f"{member} holds {role} on {scope}{note}, and no stack of this project deploys that "
        f"Healthcare agent{unsure}: a grant kept when its stack was destroyed (dicom-bq keeps "
        "grants on scopes a stack does not create) or one made by hand; remove it if nothing "
        "needs it",
        remove,
    )


# -- The source project's agent, from Google --------------------------------------------------


def resolve_agent(
    target: AuditTarget, live: ProjectNumber
) -> tuple[AuditTarget, list[AuditFinding]]:
    """The target with the agent of the source project's live number, and what the stack's own
    address said wrong; the stack's address, unverified, when the number cannot be read."""
    project = target.source_project
    if live.number is None:
        if not target.agent_resolved:
            raise DicomBqError(
                f"the agent's address is not known: project {project}'s number could not be "
                f"read ({live.error}); set dicom-bq:sourceProjectNumber, or audit with "
                "--outputs from the deployed stack"
            )
        return target, [
            AuditFinding(
                "unread",
                project_scope(project),
                "",
                target.agent_member,
                f"could not read project {project}'s number from Resource Manager "
                f"({live.error}): the agent {target.agent_member} is the stack's word, "
                "unverified, so the stack cannot be called clean",
                describe_command(project),
            )
        ]
    resolved = target.with_agent_number(live.number)
    if resolved is target or not target.agent_resolved:
        return resolved, []
    return resolved, [
        AuditFinding(
            "foreign-agent",
            project_scope(project),
            "",
            target.agent_member,
            f"the stack's grants name {target.agent_member}, but project {project}'s number is "
            f"{live.number} (Resource Manager): its Healthcare agent is {resolved.agent_member}, "
            "and the address the stack names is another project's agent",
            f"set dicom-bq:sourceProjectNumber to {live.number} in Pulumi.{target.stack}.yaml "
            f"(or remove it: the program reads the number), then {_restore(target.stack)}; "
            "remove the foreign agent's bindings this audit lists",
        )
    ]


# -- Reading the live policies ----------------------------------------------------------------


def _policy_bindings(policy: dict[str, Any]) -> tuple[Binding, ...]:
    """The bindings of an IAM Policy (the same shape for Resource Manager, Cloud Storage,
    Pub/Sub, Cloud KMS and Cloud Healthcare), one per member."""
    found = []
    for entry in policy.get("bindings") or []:
        role, condition = _role_and_condition(str(entry.get("role")), entry.get("condition"))
        found += [Binding(role, str(m), condition) for m in entry.get("members") or []]
    return tuple(found)


def _role_and_condition(role: str, condition: Any) -> tuple[str, dict[str, str] | None]:
    if condition:
        return role, {str(k): str(v) for k, v in dict(condition).items()}
    hidden = _WITHCOND_ROLE.match(role)
    if hidden:  # a conditional binding read below version 3: its condition is not shown
        return hidden["role"], {"expression": "", "title": "hidden"}
    return role, None


def _access_member(entry: dict[str, Any]) -> str | None:
    """The IAM principal of a BigQuery access entry (Dataset.access in bigquery v2)."""
    if entry.get("iamMember"):
        return str(entry["iamMember"])
    if entry.get("userByEmail"):
        value = str(entry["userByEmail"])
        return ("serviceAccount:" if value.endswith("gserviceaccount.com") else "user:") + value
    if entry.get("groupByEmail"):
        return f"group:{entry['groupByEmail']}"
    if entry.get("domain"):
        return f"domain:{entry['domain']}"
    if entry.get("specialGroup") in PUBLIC_MEMBERS:
        return str(entry["specialGroup"])
    return None  # projectOwners/Readers/Writers, views, routines, datasets: not principals


def _dataset_bindings(dataset: dict[str, Any]) -> tuple[Binding, ...]:
    found = []
    for entry in dataset.get("access") or []:
        member = _access_member(entry)
        if member and entry.get("role"):
            role = LEGACY_DATASET_ROLES.get(entry["role"], str(entry["role"]))
            role, condition = _role_and_condition(role, entry.get("condition"))
            found.append(Binding(role, member, condition))
    return tuple(found)


# How each kind of live response (vocabulary/scopes.py, LiveRead.response) holds its bindings.
BINDINGS_OF_RESPONSE: dict[LiveResponse, Callable[[dict[str, Any]], tuple[Binding, ...]]] = {
    "iam_policy": _policy_bindings,
    "bigquery_access": _dataset_bindings,
}


class PolicyReader:
    """Reads one scope's IAM policy through Google's discovery clients, version 3 everywhere.

    A scope that cannot be read (403, 404, retries exhausted on the network) comes back as a
    LivePolicy with `error` set, never as an exception: the audit reports it and goes on.
    """

    def __init__(self, connection: Connection, retry: RetryPolicy | None = None) -> None:
        self.connection = connection
        self.clients = DiscoveryClients(connection, retry)

    def api(self, name: str) -> GoogleApi:
        return self.clients.api(name)

    def read(self, scope: str) -> LivePolicy | None:
        """The scope's policy; None when the audit has no reader for this kind of scope."""
        from google.auth import exceptions as auth_exceptions

        parsed = parse_scope(scope)
        if parsed is None:
            return None
        try:
            return LivePolicy(scope, self._read(parsed))
        except ApiCallError as error:
            reason = f" {error.reason}" if error.reason else ""
            return LivePolicy(scope, error=f"{error.status}{reason}: {error.message}")
        except auth_exceptions.GoogleAuthError as error:
            return LivePolicy(scope, error=f"credentials: {error}")

    def request(self, scope: ParsedScope) -> Any:
        """The discovery client's request for the scope's policy, as its kind describes it."""
        how = scope.kind.live_read
        return self.api(how.api).request(
            how.method, how.request_arguments(scope.parts, POLICY_VERSION)
        )

    def _read(self, scope: ParsedScope) -> tuple[Binding, ...]:
        response = self.api(scope.kind.live_read.api).call(self.request(scope))
        return BINDINGS_OF_RESPONSE[scope.kind.live_read.response](response)


def read_live_policies(
    connection: Connection, target: AuditTarget, retry: RetryPolicy | None = None
) -> list[LivePolicy]:
    """One LivePolicy per scope the audit knows how to read, read or not (see `error`)."""
    reader = PolicyReader(connection, retry)
    policies = []
    for scope in target.scopes():
        policy = reader.read(scope)
        if policy is not None:
            policies.append(policy)
    return policies


def run_audit(
    connection: Connection,
    target: AuditTarget,
    *,
    now: datetime | None = None,
    retry: RetryPolicy | None = None,
    stacks: ProjectStacks | None = None,
) -> AuditResult:
    """The live policies against the stack's grants, for the agent of the source project's
    live number (Resource Manager), not the one the stack's settings or outputs name; with the
    project's `stacks`, bindings of Healthcare agents no stack deploys are reported too."""
    numbers = ProjectNumbers(DiscoveryClients(connection, retry))
    target, findings = resolve_agent(target, numbers.of(target.source_project))
    notes: list[str] = []
    if stacks is not None:
        owners = stacks.agents(numbers, besides=target.stack)
        target = dataclasses.replace(target, other_agents=owners)
        if owners.unknown:
            notes.append(
                f"the Healthcare agent of stack {', '.join(owners.unknown)} is unknown (no "
                "number, or its stack file could not be read): a binding of that agent may be "
                "reported as orphaned"
            )
    else:
        notes.append(
            "the project's other stacks are unknown (no project folder): bindings of other "
            "Healthcare agents are not judged"
        )
    policies = read_live_policies(connection, target, retry)
    findings += compare(target, policies, now)
    read = {p.scope for p in policies if p.read}
    scopes = target.scopes()
    return AuditResult(
        stack=target.stack,
        grants=len(target.grants),
        findings=tuple(findings),
        scopes_read=tuple(s for s in scopes if s in read),
        scopes_unread=tuple(s for s in scopes if s not in read),
        notes=tuple(notes),
    )
