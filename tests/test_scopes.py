"""Every scope kind vocabulary/scopes.py describes is handled by every part that deals with scopes:
the renderer (a Pulumi class of the described type), the policy rules (scope_of names the
grant's scope), the audit's commands (show, add, remove) and its live reader (a discovery
request asking for policy version 3, a parser for the response), and preflight (the permissions
a grant needs, tested through a discovery request on the scope or its project, and the
existence of a scope the stack does not create). A kind described but not handled by one of
them fails here."""

from __future__ import annotations

import json
import urllib.parse
from functools import cache
from typing import Any, get_args

import pulumi
import pytest
from pulumi.type_token import get_type_token

from dicom_bq.clients.discovery import DiscoveryClients
from dicom_bq.clients.endpoints import Connection
from dicom_bq.errors import DicomBqError
from dicom_bq.flows.preflight import (
    ROLE_FOR,
    existence_read,
    needed_permissions,
    permission_test,
)
from dicom_bq.infra.components.iam import IAM_MEMBER_CLASSES, render_grant
from dicom_bq.infra.grants import GrantSpec, Scope
from dicom_bq.infra.policy_rules import Resource, scope_of
from dicom_bq.security.audit import (
    BINDINGS_OF_RESPONSE,
    PolicyReader,
    _iam_command,
    check_command,
)
from dicom_bq.stack.plan import Plan, record_program
from dicom_bq.vocabulary.scopes import (
    SCOPE_KINDS,
    ParsedScope,
    ScopeKind,
    ScopeKindName,
    kind_of_member,
    parse_scope,
    project_scope,
)
from tests.conftest import cached_plan

KINDS: list[ScopeKindName] = sorted(SCOPE_KINDS)
MEMBER = "serviceAccount:someone@example-project.iam.gserviceaccount.com"
ROLE = "roles/example.role"


class Sample:
    """A scope of the kind, its parts named after themselves, and the (project, resource) a
    grant names it with: the bare ID when the template has no other part, else the full
    relative name (as the grants list passes topics, keys and stores)."""

    def __init__(self, kind: ScopeKind) -> None:
        self.kind = kind
        self.parts = {part: f"{part}-1" for part in kind.template_parts}
        self.parts["name"] = kind.name_template.format(**self.parts)
        self.project = self.parts.get("project", "project-1")
        bare = set(kind.template_parts) <= {"project", kind.resource_part}
        self.resource = self.parts[kind.resource_part] if bare else self.parts["name"]
        self.uri = f"//{kind.host}/{self.parts['name']}"


def sample(kind: ScopeKindName) -> Sample:
    return Sample(SCOPE_KINDS[kind])


def test_the_kind_type_names_exactly_the_described_kinds() -> None:
    assert set(get_args(ScopeKindName)) == set(SCOPE_KINDS)
    assert all(kind.name == name for name, kind in SCOPE_KINDS.items())


@pytest.mark.parametrize("kind", KINDS)
def test_a_grant_scope_becomes_a_uri_that_parses_back(kind: ScopeKindName) -> None:
    it = sample(kind)
    assert it.kind.uri(project=it.project, resource=it.resource) == it.uri
    assert it.kind.uri(project=it.project, resource=it.parts["name"]) == it.uri
    parsed = parse_scope(it.uri)
    assert parsed is not None
    assert (parsed.kind.name, parsed.parts) == (kind, it.parts)


def test_each_uri_and_each_pulumi_type_belongs_to_one_kind() -> None:
    for kind in KINDS:
        uri = sample(kind).uri
        assert [k for k in KINDS if SCOPE_KINDS[k].parse(uri)] == [kind]
    prefixes = [k.pulumi_inputs.type_prefix for k in SCOPE_KINDS.values()]
    assert [(a, b) for a in prefixes for b in prefixes if a != b and b.startswith(a)] == []
    for described in SCOPE_KINDS.values():
        token = described.pulumi_member.type_token
        assert token.startswith(described.pulumi_inputs.type_prefix)


def test_the_renderer_has_the_described_pulumi_class_for_exactly_the_described_kinds() -> None:
    assert set(IAM_MEMBER_CLASSES) == set(SCOPE_KINDS)
    tokens = {kind: get_type_token(cls) for kind, cls in IAM_MEMBER_CLASSES.items()}  # type: ignore[arg-type]
    assert tokens == {k: v.pulumi_member.type_token for k, v in SCOPE_KINDS.items()}


@cache
def planned_grants() -> Plan:
    """One grant of each kind, rendered under the mock engine as `pulumi preview` would."""

    def program() -> dict[str, Any]:
        for kind in KINDS:
            it = sample(kind)
            spec = GrantSpec(kind, ROLE, Scope(it.kind.name, it.project, it.resource), "test")
            render_grant("grant", spec, MEMBER, pulumi.ResourceOptions())
        return {}

    return record_program("scopes", {}, program)


def test_every_kind_renders_and_the_policy_rules_name_its_scope() -> None:
    """Each kind's grant is the described type, and scope_of reads the grant's own scope back
    from its inputs."""
    planned = {r.name: r for r in planned_grants().custom_resources()}
    assert sorted(planned) == [f"grant-{kind}" for kind in KINDS]
    for kind in KINDS:
        resource = planned[f"grant-{kind}"]
        assert resource.type == sample(kind).kind.pulumi_member.type_token
        assert (resource.inputs["role"], resource.inputs["member"]) == (ROLE, MEMBER)
        assert scope_of(Resource(resource.type, resource.name, resource.inputs)) == (
            sample(kind).uri
        )


def test_a_store_that_is_not_a_full_name_is_refused_before_any_request() -> None:
    store = SCOPE_KINDS["dicom_store"]
    with pytest.raises(DicomBqError, match="not a DICOM store"):
        store.provider_id_of("//healthcare.googleapis.com/my-store")


@pytest.mark.parametrize("kind", KINDS)
def test_the_audit_shows_adds_and_removes_a_binding_on_every_kind(kind: ScopeKindName) -> None:
    it = sample(kind)
    own_id = it.parts[it.kind.resource_part]
    show = check_command(it.uri)
    assert show.split()[0] in {"gcloud", "bq"}
    assert own_id in show
    for verb in ("add", "remove"):
        command = _iam_command(it.uri, verb, MEMBER, ROLE)
        assert f"{verb}-iam-policy-binding" in command
        assert own_id in command
        assert f"--member='{MEMBER}' --role='{ROLE}'" in command


@pytest.mark.parametrize("kind", KINDS)
def test_the_audit_reads_every_kind_asking_for_policy_version_3(
    kind: ScopeKindName, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request is built from the API's discovery document (a wrong method or parameter
    raises), for the scope's own resource, with version 3 in the query or the body."""
    it = sample(kind)
    for variable in Connection._EMULATOR_VARIABLES.values():
        monkeypatch.setenv(variable, "http://127.0.0.1:9")  # never reached: nothing is sent
    parsed = parse_scope(it.uri)
    assert parsed is not None
    request = PolicyReader(Connection()).request(parsed)
    url = urllib.parse.urlsplit(request.uri)
    assert urllib.parse.quote(it.parts[it.kind.resource_part]) in url.path
    query = urllib.parse.parse_qs(url.query)
    versions = [v for key, values in query.items() if "PolicyVersion" in key for v in values]
    if request.body:
        versions.append(str(json.loads(request.body)["options"]["requestedPolicyVersion"]))
    assert versions == ["3"]
    assert it.kind.live_read.response in BINDINGS_OF_RESPONSE


def parsed(uri: str) -> ParsedScope:
    found = parse_scope(uri)
    assert found is not None
    return found


def offline_apis(monkeypatch: pytest.MonkeyPatch) -> DiscoveryClients:
    """Discovery clients whose requests can be built and never sent."""
    for variable in Connection._EMULATOR_VARIABLES.values():
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    return DiscoveryClients(Connection())


def asked_permissions(request: Any) -> list[str]:
    """The permissions a testIamPermissions request asks: in its query or its body."""
    asked = urllib.parse.parse_qs(urllib.parse.urlsplit(request.uri).query).get("permissions", [])
    if request.body:
        asked += json.loads(request.body)["permissions"]
    return asked


@pytest.mark.parametrize("kind", KINDS)
def test_preflight_tests_the_permissions_to_grant_on_every_kind(
    kind: ScopeKindName, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grant of the kind makes preflight ask for the permissions that change the scope's
    policy, where the kind says, through a testIamPermissions request built from the API's
    discovery document (a wrong method or parameter raises) and a fix naming a role."""
    it = sample(kind)
    how = it.kind.preflight
    needed = [n for n in needed_permissions(planned_grants()) if n.why == f"grant-{kind}"]
    if how.tested_on == "nowhere":
        # Only for scopes the stack creates, the deployer being their owner: checked below.
        assert (kind, needed) == ("bigquery_dataset", [])
        return
    assert [n.permission for n in needed] == list(how.grant_permissions)
    tested = it.uri if how.tested_on == "scope" else project_scope(it.project)
    assert {n.scope for n in needed} == {tested}
    tested_in = parsed(tested)
    assert {n.resource for n in needed} == {
        tested_in.kind.preflight.subject.format(**tested_in.parts)
    }
    _, request = permission_test(offline_apis(monkeypatch), tested, list(how.grant_permissions))
    path = urllib.parse.unquote(urllib.parse.urlsplit(request.uri).path)
    assert path.endswith((":testIamPermissions", "/iam/testPermissions"))
    assert (it.project if how.tested_on == "project" else it.parts[it.kind.resource_part]) in path
    assert asked_permissions(request) == list(how.grant_permissions)
    assert all(ROLE_FOR[p].startswith("roles/") for p in how.grant_permissions)


@pytest.mark.parametrize("stack", ["dev", "prod", "operations"])
def test_preflight_asks_nothing_to_grant_on_a_dataset_the_stack_creates(stack: str) -> None:
    """Every BigQuery dataset the stack grants on is one it creates (its creator owns it), and
    preflight asks for the create instead."""
    plan = cached_plan(stack)
    dataset = SCOPE_KINDS["bigquery_dataset"]
    created = {
        dataset.uri(project=str(r.inputs["project"]), resource=str(r.inputs["datasetId"]))
        for r in plan.custom_resources()
        if r.type == "gcp:bigquery/dataset:Dataset"
    }
    granted = {
        dataset.uri_from_inputs(r.inputs)
        for r in plan.custom_resources()
        if kind_of_member(r.type) is dataset
    }
    assert granted
    assert granted <= created
    needed = {(n.scope, n.permission) for n in needed_permissions(plan)}
    for uri in created:
        project = parsed(uri).parts["project"]
        assert (project_scope(project), "bigquery.datasets.create") in needed
    assert not any(n.scope.startswith("//bigquery") for n in needed_permissions(plan))


@pytest.mark.parametrize("kind", KINDS)
def test_preflight_checks_that_a_scope_the_stack_does_not_create_exists(
    kind: ScopeKindName, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kind the stack grants on without creating it is read (a discovery request for the
    scope itself), and its fix creates it; the kinds the stack creates or that exist by
    definition are not read."""
    it = sample(kind)
    how = it.kind.preflight.existence
    if how is None:
        assert kind in {"project", "bigquery_dataset", "dicom_store", "service_account"}
        return
    _, request = existence_read(offline_apis(monkeypatch), it.kind, it.uri)
    path = urllib.parse.unquote(urllib.parse.urlsplit(request.uri).path)
    assert request.method == "GET"
    assert path.endswith(it.parts[it.kind.resource_part])
    create = how.create.format(**it.parts)
    assert " create " in create
    assert it.parts[it.kind.resource_part] in create
    assert it.parts[it.kind.resource_part] in how.subject.format(**it.parts)
