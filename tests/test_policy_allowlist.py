"""Deny by default (issue 17 item 6): a stack creates only what the program creates and grants.

The allow-list is generated from the program (tests/allowlist.py); every example and generated
stack passes every rule with and without a grants list; bypass programs of new kinds are refused
offline (`plan --check`'s rules) and by the CrossGuard pack, with and without a grants list.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from typing import Any

import pytest

from dicom_bq.infra import policy_rules
from dicom_bq.infra.policy_config import context_from_config
from dicom_bq.infra.policy_rules import (
    SINGLETON_TYPES,
    PolicyContext,
    Resource,
    canonical_member,
    evaluate,
    grants_of,
    program_allowlist,
)
from dicom_bq.security.checks import plan_context, plan_resources
from tests import allowlist
from tests.conftest import cached_plan
from tests.test_policy_pack import run_pack

NEW_RULES = ("DBQ018", "DBQ019", "DBQ020")
BASE = "operations"  # alerts, a nightly snapshot (its account, role, scheduler grant), 2 stores
SOURCE = "dicom-src-test"
AGENT = "serviceAccount:service-111122223333@gcp-sa-healthcare.iam.gserviceaccount.com"
MIXED_AGENT = "serviceAccount:Service-111122223333@GCP-SA-Healthcare.iam.gserviceaccount.com"
SNAPSHOT_EMAIL = "dicom-bq-snapshot-0906db8b@dicom-src-test.iam.gserviceaccount.com"
SNAPSHOT_ACCOUNT = f"projects/{SOURCE}/serviceAccounts/{SNAPSHOT_EMAIL}"
HEALTHCARE_DATASET = f"projects/{SOURCE}/locations/us-central1/datasets/imaging"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # pulumi_policy's UNKNOWN_STRING_VALUE


# -- the allow-list is the program's ------------------------------------------------------------


def _fallback(plan: Any, *, number: bool) -> PolicyContext:
    """What the pack gets from `dicom-bq up` when the agent's number is not known offline: no
    grants list (with or without the number, as a hand-written config may give it)."""
    assert plan.settings is not None
    config: dict[str, Any] = {
        "protected": plan.settings.protected,
        "sourceProject": plan.settings.source_project,
    }
    if number and plan.settings.source_project_number:
        config["sourceProjectNumber"] = plan.settings.source_project_number
    return context_from_config(config)


def test_the_allowlist_is_what_the_program_creates_and_every_stack_passes() -> None:
    """One test, so that each stack is planned once per session (a plan takes ~0.2 s)."""
    committed = program_allowlist()
    plans = [allowlist.planned(name) for name in allowlist.stack_names()]
    generated = allowlist.allowlist_of(plans)
    assert committed == generated, (
        f"{allowlist.ALLOWLIST.relative_to(allowlist.ROOT)} has drifted from what the program "
        f"creates: run `{policy_rules.REGENERATE_ALLOWLIST}` and review the diff.\n"
        f"types added: {sorted(generated.custom_types - committed.custom_types)}, "
        f"removed: {sorted(committed.custom_types - generated.custom_types)}; grants added: "
        f"{sorted(generated.grants - committed.grants)}, removed: "
        f"{sorted(committed.grants - generated.grants)}"
    )
    # The file reads as the generator writes it (sorted, stable): a regeneration diffs cleanly.
    assert allowlist.ALLOWLIST.read_text(encoding="utf-8") == allowlist.render(generated)
    failures = {}
    for plan in plans:
        counts = Counter(r.type for r in plan.custom_resources())
        assert all(counts[t] <= 1 for t in SINGLETON_TYPES), (plan.stack, counts)
        assert plan.settings is not None
        resources = plan_resources(plan)
        for label, context in (
            ("first preview, grants list", plan_context(plan.settings, plan.grants)),
            ("first preview, no grants list", _fallback(plan, number=False)),
        ):
            found = [f for f in evaluate(first_preview(resources), context) if f.rule in NEW_RULES]
            if found:
                failures[(plan.stack, label)] = found
        for label, context in (
            ("grants list", plan_context(plan.settings, plan.grants)),
            ("number, no grants list", _fallback(plan, number=True)),
            ("no number, no grants list", _fallback(plan, number=False)),
            ("no config", PolicyContext()),
        ):
            found = [f for f in evaluate(resources, context) if f.rule in NEW_RULES]
            if found:
                failures[(plan.stack, label)] = found
    assert failures == {}


# Inputs that are other resources' outputs, unknown in a first `pulumi preview`: the agents' and
# accounts' addresses, the stores' dataset and the IAM members' store and account names.
_OUTPUT_INPUTS = ("member", "dataset", "dicomStoreId", "serviceAccountId", "serviceAccountEmail")


def first_preview(resources: list[Resource]) -> list[Resource]:
    def blank(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: blank(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [blank(v, key) for v in value]
        return policy_rules.UNKNOWN if key in _OUTPUT_INPUTS else value

    return [Resource(r.type, r.name, blank(dict(r.props)), r.protect) for r in resources]


def test_the_rules_know_the_plans_unknown_marker() -> None:
    from dicom_bq.stack.plan import UNKNOWN_UNTIL_CREATED

    assert UNKNOWN_UNTIL_CREATED == policy_rules.UNKNOWN


def test_bigquerys_project_special_groups_are_members() -> None:
    """projectReaders/Writers/Owners are the dataset project's viewers, editors and owners."""
    entry = Resource(
        "gcp:bigquery/datasetAccess:DatasetAccess",
        "readers",
        {"project": "p", "datasetId": "d", "role": "READER", "specialGroup": "projectReaders"},
    )
    assert list(grants_of(entry)) == [("roles/bigquery.dataViewer", "projectViewer:p")]
    # A special group BigQuery may add later is a member no grants list names, never nobody.
    other = Resource(entry.type, "new", {**entry.props, "specialGroup": "projectAuditors"})
    assert list(grants_of(other)) == [("roles/bigquery.dataViewer", "specialGroup:projectAuditors")]


# -- bypass programs --------------------------------------------------------------------------


def res(type_: str, name: str, /, **props: Any) -> dict[str, Any]:
    return {"type": type_, "name": name, "props": props}


def iam(name: str, role: str, who: str, **where: Any) -> dict[str, Any]:
    kind = "gcp:projects/iAMMember:IAMMember"
    if "datasetId" in where:
        kind = "gcp:bigquery/datasetIamMember:DatasetIamMember"
    elif "bucket" in where:
        kind = "gcp:storage/bucketIAMMember:BucketIAMMember"
    elif "serviceAccountId" in where:
        kind = "gcp:serviceaccount/iAMMember:IAMMember"
    return res(kind, name, role=role, member=who, **({"project": SOURCE} | where))


def access(name: str, role: str, **entry: Any) -> dict[str, Any]:
    """A gcp.bigquery.DatasetAccess on the stack's dataset."""
    props = {"project": SOURCE, "datasetId": "dicom_metadata", "role": role, **entry}
    return res("gcp:bigquery/datasetAccess:DatasetAccess", name, **props)


def export_job(name: str, email: str, uri: str, table: str) -> dict[str, Any]:
    body = json.dumps({"bigqueryDestination": {"tableUri": table, "force": True}})
    return res(
        "gcp:cloudscheduler/job:Job",
        name,
        project=SOURCE,
        region="us-central1",
        schedule="0 3 * * *",
        httpTarget={
            "httpMethod": "POST",
            "uri": uri,
            "body": base64.b64encode(body.encode()).decode(),
            "oauthToken": {"serviceAccountEmail": email},
        },
    )


STORE_EXPORT = (
    f"https://healthcare.googleapis.com/v1/{HEALTHCARE_DATASET}/dicomStores/clinical:export"
)

# name -> (rules that must each name the resource called `name`, the resources added). Each is
# a kind the rules before issue 17 let through; the culprit is the resource named like the case.
BYPASSES: dict[str, tuple[tuple[str, ...], list[dict[str, Any]]]] = {
    "snapshot-account-key": (
        ("DBQ018",),
        [
            res(
                "gcp:serviceaccount/key:Key",
                "snapshot-account-key",
                serviceAccountId=SNAPSHOT_ACCOUNT,
            )
        ],
    ),
    "hmac-key": (
        ("DBQ018",),
        [res("gcp:storage/hmacKey:HmacKey", "hmac-key", serviceAccountEmail=SNAPSHOT_EMAIL)],
    ),
    "workload-pool-open-to-any-repository": (
        ("DBQ018",),
        [
            res(
                "gcp:iam/workloadIdentityPool:WorkloadIdentityPool",
                "pool",
                workloadIdentityPoolId="ci",
            ),
            res(
                "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider",
                "workload-pool-open-to-any-repository",
                workloadIdentityPoolId="ci",
                workloadIdentityPoolProviderId="github",
                attributeMapping={"google.subject": "assertion.sub"},
                oidc={"issuerUri": "https://token.actions.githubusercontent.com"},
            ),
        ],
    ),
    "principal-set-member": (
        ("DBQ019",),
        [
            iam(
                "principal-set-member",
                "roles/bigquery.dataViewer",
                "principalSet://iam.googleapis.com/projects/111122223333/locations/global/"
                "workloadIdentityPools/ci/attribute.repository/any/thing",
            )
        ],
    ),
    "project-iam-admin-to-anyone": (
        ("DBQ019",),
        [
            iam(
                "project-iam-admin-to-anyone",
                "roles/resourcemanager.projectIamAdmin",
                "user:Contractor@Example.com",
            )
        ],
    ),
    "security-admin-to-the-agent": (
        ("DBQ019",),
        [iam("security-admin-to-the-agent", "roles/iam.securityAdmin", MIXED_AGENT)],
    ),
    "token-minting-custom-role": (
        ("DBQ019",),
        [
            res(
                "gcp:projects/iAMCustomRole:IAMCustomRole",
                "token-minting-custom-role",
                project=SOURCE,
                roleId="helper",
                title="helper",
                permissions=["iam.serviceAccounts.getAccessToken"],
            ),
            iam("helper-grant", f"projects/{SOURCE}/roles/helper", "group:ops@example.com"),
        ],
    ),
    "snapshot-role-widened": (
        ("DBQ019",),
        [
            res(
                "gcp:projects/iAMCustomRole:IAMCustomRole",
                "snapshot-role-widened",
                project=SOURCE,
                roleId="dicomBqSnapshotExport_deadbeef",
                permissions=[
                    "healthcare.dicomStores.export",
                    "healthcare.dicomStores.export",
                    "healthcare.dicomStores.dicomWebRead",
                ],
            )
        ],
    ),
    "cross-project-authorized-view": (
        ("DBQ018", "DBQ019"),
        [
            access(
                "cross-project-authorized-view",
                "",
                view={"projectId": "attacker", "datasetId": "views", "tableId": "all_instances"},
            )
        ],
    ),
    "authorized-routine": (
        ("DBQ018", "DBQ019"),
        [
            access(
                "authorized-routine",
                "",
                routine={"projectId": "attacker", "datasetId": "fns", "routineId": "dump"},
            )
        ],
    ),
    "authorized-dataset": (
        ("DBQ018", "DBQ019"),
        [
            access(
                "authorized-dataset",
                "",
                dataset={
                    "dataset": {"projectId": "attacker", "datasetId": "views"},
                    "targetTypes": ["VIEWS"],
                },
            )
        ],
    ),
    "authorized-view-in-accesses": (
        ("DBQ019",),
        [
            res(
                "gcp:bigquery/dataset:Dataset",
                "authorized-view-in-accesses",
                project=SOURCE,
                datasetId="dicom_metadata",
                deleteContentsOnDestroy=False,
                accesses=[
                    {"view": {"projectId": "attacker", "datasetId": "v", "tableId": "t"}},
                ],
            )
        ],
    ),
    "special-group-project-readers": (
        ("DBQ018", "DBQ019"),
        [access("special-group-project-readers", "READER", specialGroup="projectReaders")],
    ),
    "domain-access-entry": (
        ("DBQ018", "DBQ019"),
        [access("domain-access-entry", "READER", domain="example.com")],
    ),
    "extra-store-streams-elsewhere": (
        ("DBQ020",),
        [
            res(
                "gcp:healthcare/dicomStore:DicomStore",
                "extra-store-streams-elsewhere",
                name="shadow",
                dataset=HEALTHCARE_DATASET,
                streamConfigs=[
                    {"bigqueryDestination": {"tableUri": "bq://attacker.loot.instances"}}
                ],
            )
        ],
    ),
    "dynamic-provider-grant": (
        ("DBQ018",),
        [
            res(
                "pulumi-python:dynamic:Resource",
                "dynamic-provider-grant",
                __provider="gASVpickled-provider",
                project=SOURCE,
            )
        ],
    ),
    "command-grant": (
        ("DBQ018",),
        [
            res(
                "command:local:Command",
                "command-grant",
                create=f"gcloud projects add-iam-policy-binding {SOURCE} "
                "--member=user:x@example.com --role=roles/owner",
            )
        ],
    ),
    "raw-type-token": (
        ("DBQ018",),
        [
            res(
                "google-native:iam/v1:ServiceAccountKey",
                "raw-type-token",
                serviceAccountId=SNAPSHOT_EMAIL,
            )
        ],
    ),
    "foreign-provider": (("DBQ018",), [res("pulumi:providers:command", "foreign-provider")]),
    "second-bigquery-dataset": (
        ("DBQ018",),
        [
            res(
                "gcp:bigquery/dataset:Dataset",
                "second-bigquery-dataset",
                project="attacker",
                datasetId="loot",
                deleteContentsOnDestroy=False,
            )
        ],
    ),
    "deleted-principal-reader": (
        ("DBQ019",),
        [
            iam(
                "deleted-principal-reader",
                "roles/bigquery.dataViewer",
                "deleted:user:Former@Example.com?uid=123456789012345678901",
                datasetId="dicom_metadata",
            )
        ],
    ),
    "agent-writes-another-dataset": (
        ("DBQ019",),
        [
            iam(
                "agent-writes-another-dataset",
                "roles/bigquery.dataEditor",
                AGENT,
                project="attacker",
                datasetId="loot",
            )
        ],
    ),
    # Offline, a string that looks like one of CrossGuard's unknown values is a value like any.
    "sentinel-in-an-email": (
        ("DBQ019",),
        [
            iam(
                "sentinel-in-an-email",
                "roles/bigquery.dataEditor",
                f"user:{UNKNOWN}@example.com",
                datasetId="dicom_metadata",
            )
        ],
    ),
    "encryption-account-admin": (
        ("DBQ019",),
        [
            iam(
                "encryption-account-admin",
                "roles/bigquery.admin",
                "serviceAccount:bq-111122223333@bigquery-encryption.iam.gserviceaccount.com",
            )
        ],
    ),
    "bucket-reader-for-a-group": (
        ("DBQ019",),
        [
            iam(
                "bucket-reader-for-a-group",
                "roles/storage.objectViewer",
                "group:Analysts@Example.com",
                bucket="dicom-src-test-filters",
            )
        ],
    ),
    "scheduler-job-as-another-account": (
        ("DBQ020",),
        [
            export_job(
                "scheduler-job-as-another-account",
                f"deployer@{SOURCE}.iam.gserviceaccount.com",
                "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"
                f"deployer@{SOURCE}.iam.gserviceaccount.com:generateAccessToken",
                "bq://dicom-src-test.dicom_metadata.x",
            )
        ],
    ),
    "snapshot-export-elsewhere": (
        ("DBQ020",),
        [
            export_job(
                "snapshot-export-elsewhere",
                SNAPSHOT_EMAIL,
                STORE_EXPORT,
                "bq://attacker.loot.snapshot",
            )
        ],
    ),
}


def _base() -> tuple[Any, list[dict[str, Any]]]:
    from tests.test_policy_pack import plan_resources as pack_resources

    return cached_plan(BASE), pack_resources(BASE)


def _as_resources(specs: list[dict[str, Any]]) -> list[Resource]:
    return [Resource(r["type"], r["name"], r["props"], r.get("protect", False)) for r in specs]


def test_there_are_enough_new_bypasses() -> None:
    assert len(BYPASSES) >= 12
    assert {rule for rules, _ in BYPASSES.values() for rule in rules} == set(NEW_RULES)


@pytest.mark.parametrize("case", sorted(BYPASSES))
def test_bypass_is_refused_offline_with_and_without_a_grants_list(case: str) -> None:
    plan, base = _base()
    rules, added = BYPASSES[case]
    resources = _as_resources([*base, *added])
    assert plan.settings is not None
    for context in (
        plan_context(plan.settings, plan.grants),
        _fallback(plan, number=True),
        _fallback(plan, number=False),
    ):
        found = evaluate(resources, context)
        for rule in rules:
            named = [f for f in found if f.rule == rule and f.resource == case]
            assert named, (rule, context.listed_grants is not None, found)
            assert all(f.enforcement == "mandatory" for f in named)


@pytest.mark.processes
def test_the_pack_refuses_every_bypass_with_and_without_a_grants_list() -> None:
    plan, base = _base()
    added = [r for _, resources in BYPASSES.values() for r in resources]
    assert plan.settings is not None
    configs = {
        "grants list": {"expectedGrants": plan.grants, "sourceProject": SOURCE},
        # What `dicom-bq up` writes when the agent's number is not known offline.
        "no grants list": {"protected": plan.settings.protected, "sourceProject": SOURCE},
    }
    for label, config in configs.items():
        report = run_pack([*base, *added], config)
        for policy, result in report.items():
            assert result["skipped"] is None, (label, policy, result["skipped"])
        for case, (rules, _) in BYPASSES.items():
            for rule in rules:
                policy = next(name for name in report if name.startswith(rule.lower()))
                named = [v for v in report[policy]["violations"] if v.startswith(f"{case}: ")]
                assert named, (label, case, policy)
                assert report[policy]["level"] == "mandatory"


def test_messages_say_what_a_credential_or_authorization_does() -> None:
    plan, base = _base()
    assert plan.settings is not None
    added = [r for _, resources in BYPASSES.values() for r in resources]
    found: dict[tuple[str, str], str] = {}
    for f in evaluate(_as_resources([*base, *added]), _fallback(plan, number=False)):
        found[(f.rule, f.resource)] = f"{found.get((f.rule, f.resource), '')}\n{f.message}"
    expected = {
        ("DBQ018", "snapshot-account-key"): "creates a service account key",
        ("DBQ018", "hmac-key"): "creates an HMAC key",
        ("DBQ018", "workload-pool-open-to-any-repository"): "workload identity pool provider",
        ("DBQ018", "cross-project-authorized-view"): "authorizes the view attacker.views.",
        ("DBQ018", "dynamic-provider-grant"): "dynamic provider",
        ("DBQ018", "command-grant"): "runs a command",
        ("DBQ018", "raw-type-token"): "package google-native",
        ("DBQ018", "second-bigquery-dataset"): "a second gcp:bigquery/dataset:Dataset",
        ("DBQ019", "authorized-routine"): "authorizes the routine attacker.fns.dump",
        ("DBQ019", "token-minting-custom-role"): "iam.serviceAccounts.getAccessToken",
        ("DBQ019", "principal-set-member"): "principalSet://",
        ("DBQ020", "extra-store-streams-elsewhere"): "bq://attacker.loot.instances",
    }
    for key, text in expected.items():
        assert text in found.get(key, ""), (key, found.get(key))


# -- members compared as Google compares them; values unknown during preview ---------------------


@pytest.mark.parametrize(
    "written",
    [
        AGENT.upper().replace("SERVICEACCOUNT:", "serviceaccount:"),
        MIXED_AGENT,
        f"deleted:{MIXED_AGENT}?uid=123456789012345678901",
    ],
)
def test_a_listed_grant_matches_in_any_spelling_google_reads_as_it(written: str) -> None:
    plan, base = _base()
    assert plan.settings is not None
    respelt = [
        {**r, "props": {**r["props"], "member": written}}
        if r["props"].get("member") == AGENT
        else r
        for r in base
    ]
    assert canonical_member(written) == AGENT
    found = evaluate(_as_resources(respelt), plan_context(plan.settings, plan.grants))
    assert [f for f in found if f.rule == "DBQ019"] == []


def _unknown_members(resources: list[dict[str, Any]], unknown: str) -> list[dict[str, Any]]:
    """The stack as a first `pulumi preview` sees it: the agent's and the snapshot account's
    addresses (outputs of resources not created yet) are unknown."""
    return [
        {**r, "props": {**r["props"], "member": unknown}}
        if r["props"].get("member") in (AGENT, f"serviceAccount:{SNAPSHOT_EMAIL}")
        else r
        for r in resources
    ]


@pytest.mark.processes
def test_values_unknown_during_preview_neither_hide_grants_nor_refuse_the_program() -> None:
    plan, base = _base()
    first_preview = _unknown_members(base, UNKNOWN)
    admin = iam("unknown-admin", "roles/resourcemanager.projectIamAdmin", UNKNOWN)
    config = {"expectedGrants": plan.grants, "sourceProject": SOURCE}
    report = run_pack([*first_preview, admin], config, proxy=True)
    # Read through CrossGuard's proxy, one unknown value skipped a whole policy.
    assert all(r["skipped"] is None for r in report.values()), report
    violations = {n: r["violations"] for n, r in report.items() if r["violations"]}
    assert list(violations) == ["dbq019-only-listed-grants"], violations
    assert [v.split(": ")[0] for v in violations["dbq019-only-listed-grants"]] == ["unknown-admin"]
    offline_preview = _as_resources(_unknown_members(base, policy_rules.UNKNOWN))
    offline = evaluate(offline_preview, _fallback(plan, number=False))
    assert [f for f in offline if f.rule in NEW_RULES] == []


def test_stores_notify_only_topics_the_agent_is_granted() -> None:
    """With a grants list, a listed publisher grant; without one, one of the stack's own."""
    plan, base = _base()
    assert plan.settings is not None
    store = res(
        "gcp:healthcare/dicomStore:DicomStore",
        "notifies-elsewhere",
        name="shadow",
        dataset=HEALTHCARE_DATASET,
        notificationConfig={"pubsubTopic": "projects/attacker/topics/instances"},
    )
    for context in (plan_context(plan.settings, plan.grants), _fallback(plan, number=False)):
        found = evaluate(_as_resources([*base, store]), context)
        assert [(f.rule, f.resource) for f in found if f.rule in NEW_RULES] == [
            ("DBQ020", "notifies-elsewhere")
        ]
    three = allowlist.planned("three-stores")  # a store notifying its topic, with the grant
    assert three.settings is not None
    assert evaluate(plan_resources(three), _fallback(three, number=False)) == []


def test_without_a_grants_list_the_agent_is_the_source_projects() -> None:
    plan, base = _base()
    other = iam(
        "other-agent",
        "roles/bigquery.jobUser",
        "serviceAccount:service-999988887777@gcp-sa-healthcare.iam.gserviceaccount.com",
    )
    found = evaluate(_as_resources([*base, other]), _fallback(plan, number=True))
    assert [(f.rule, f.resource) for f in found if f.rule == "DBQ019"] == [
        ("DBQ019", "other-agent")
    ]


def test_a_grants_list_made_before_the_number_is_known_still_holds() -> None:
    """`dicom-bq up` without dicom-bq:sourceProjectNumber plans service-PROJECT_NUMBER_OF_p@...;
    given that list, the pack matches the deployed address (any number there) and nothing else."""
    from dicom_bq.infra.policy_config import pack_config

    name = next(n for n, r in allowlist.generated_stacks() if "sourceProjectNumber" not in r)
    plan = allowlist.planned(name)
    assert plan.settings is not None
    assert "PROJECT_NUMBER_OF_" in json.dumps(plan.grants)
    deployed = json.loads(
        json.dumps([r.__dict__ for r in plan.custom_resources()]).replace(
            f"PROJECT_NUMBER_OF_{SOURCE}", "555566667777"
        )
    )
    resources = [Resource(r["type"], r["name"], r["inputs"], r["protect"]) for r in deployed]
    config = pack_config(
        protected=plan.settings.protected,
        allowed_bigquery_locations=None,
        require_cmek=False,
        source_project=plan.settings.source_project,
        source_project_number=None,
        grants=plan.grants,
    )
    context = context_from_config(next(iter(config.values())))
    assert context.listed_grants is not None
    assert evaluate(resources, context) == []
    agent = "serviceAccount:service-555566667777@gcp-sa-healthcare.iam.gserviceaccount.com"
    extra = Resource(
        "gcp:storage/bucketIAMMember:BucketIAMMember",
        "agent-reads-another-bucket",
        {"bucket": "attacker-bucket", "role": "roles/storage.objectViewer", "member": agent},
    )
    found = evaluate([*resources, extra], context)
    assert ("DBQ019", "agent-reads-another-bucket") in {(f.rule, f.resource) for f in found}
    assert {f.resource for f in found} == {"agent-reads-another-bucket"}
