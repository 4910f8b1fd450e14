"""The CrossGuard pack, run in its own environment (.venv-policy) on CrossGuard's own types."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.inventory import ROOT

pytestmark = pytest.mark.processes

POLICY_PYTHON = ROOT / ".venv-policy" / "bin" / "python"

# Run from policy/, as Pulumi runs the pack: `pack` is found there, dicom_bq is installed.
DRIVER = r"""
import json, sys
from pulumi_policy import PolicyCustomTimeouts, PolicyResource, PolicyResourceOptions, StackValidationArgs
from pack import policies

from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy

spec = json.loads(sys.stdin.read())
def resource(r):
    opts = PolicyResourceOptions(r.get("protect", False), [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
    # spec["proxy"]: props as the engine hands them during preview, behind CrossGuard's proxy,
    # which raises on a value not known yet (pulumi_policy/policy.py, AnalyzeStack).
    props = unknown_checking_proxy(r["props"]) if spec.get("proxy") else r["props"]
    return PolicyResource(r["type"], props, "urn:pulumi:s::p::" + r["type"] + "::" + r["name"], r["name"], opts, None, None, [], {})
resources = [resource(r) for r in spec["resources"]]
# A config file as `pulumi up --policy-pack-config` takes it is keyed by policy name; the engine
# hands each policy its own entry (https://www.pulumi.com/docs/iac/using-pulumi/crossguard/
# configuration/). Without one, every policy gets spec["config"].
per_policy = spec.get("pack_config")
report = {}
for policy in policies():
    found = []
    config = per_policy.get(policy.name, {}) if per_policy is not None else spec["config"]
    args = StackValidationArgs(resources, config)
    skipped = None
    try:
        policy.validate(args, lambda message, urn=None: found.append(message))
    except UnknownValueError as unknown:
        # What CrossGuard does then: an advisory note, and the policy is not enforced.
        skipped = unknown.message
    report[policy.name] = {"level": policy.enforcement_level.value, "violations": found, "skipped": skipped}
print(json.dumps(report))
"""


def run_pack(
    resources: list[dict[str, Any]],
    config: dict[str, Any] | None = None,
    *,
    pack_config: dict[str, Any] | None = None,
    proxy: bool = False,
) -> dict[str, Any]:
    if not POLICY_PYTHON.exists():
        pytest.fail("the policy environment is missing: run scripts/bootstrap.sh")
    answer = subprocess.run(
        [str(POLICY_PYTHON), "-c", DRIVER],
        cwd=ROOT / "policy",
        input=json.dumps(
            {
                "resources": resources,
                "config": config or {},
                "pack_config": pack_config,
                "proxy": proxy,
            }
        ),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    report: dict[str, Any] = json.loads(answer.stdout)
    return report


def plan_resources(stack: str) -> list[dict[str, Any]]:
    from tests.conftest import cached_plan

    return [
        {"type": r.type, "name": r.name, "props": r.inputs, "protect": r.protect}
        for r in cached_plan(stack).custom_resources()
    ]


def test_pack_has_a_policy_per_rule_and_passes_prod() -> None:
    from tests.conftest import cached_plan

    plan = cached_plan("prod")
    config = {
        "protected": True,
        "requireCmek": True,
        "allowedBigqueryLocations": ["europe-west4"],
        "expectedGrants": plan.grants,
    }
    report = run_pack(plan_resources("prod"), config)
    assert len(report) >= 12
    assert {name: r["violations"] for name, r in report.items() if r["violations"]} == {}
    assert report["dbq013-apis-stay-enabled"]["level"] == "advisory"


def test_pack_blocks_an_authoritative_binding_and_a_basic_role() -> None:
    resources = [
        *plan_resources("dev"),
        {
            "type": "gcp:projects/iAMBinding:IAMBinding",
            "name": "wipe",
            "props": {
                "project": "dicom-bq-dev",
                "role": "roles/bigquery.jobUser",
                "members": ["user:a@example.com"],
            },
        },
        {
            "type": "gcp:projects/iAMMember:IAMMember",
            "name": "editor",
            "props": {
                "project": "dicom-bq-dev",
                "role": "roles/editor",
                "member": "user:a@example.com",
            },
        },
    ]
    report = run_pack(resources)
    assert report["dbq001-no-authoritative-iam"]["level"] == "mandatory"
    assert report["dbq001-no-authoritative-iam"]["violations"][0].startswith("wipe: ")
    assert (
        "Fix: Use the *IAMMember resource" in report["dbq001-no-authoritative-iam"]["violations"][0]
    )
    assert report["dbq002-no-basic-roles"]["violations"][0].startswith("editor: ")


def test_pack_holds_the_snapshot_account_to_its_role_and_stores() -> None:
    from tests.conftest import cached_plan

    plan = cached_plan("operations")
    resources = plan_resources("operations")
    assert {
        name: r["violations"]
        for name, r in run_pack(resources, {"expectedGrants": plan.grants}).items()
        if r["violations"]
    } == {}
    member = next(g["member"] for g in plan.grants if "dicom-bq-snapshot-" in g["member"])
    widened = [
        *resources,
        {
            "type": "gcp:projects/iAMMember:IAMMember",
            "name": "snapshot-editor",
            "props": {
                "project": "dicom-src-test",
                "role": "roles/healthcare.dicomEditor",
                "member": member,
            },
        },
    ]
    report = run_pack(widened, {"expectedGrants": plan.grants})
    assert report["dbq014-snapshot-account-export-only"]["violations"][0].startswith(
        "snapshot-editor: "
    )
    assert report["dbq015-snapshot-account-store-scope"]["violations"][0].startswith(
        "snapshot-editor: "
    )


def test_the_config_up_writes_makes_the_pack_enforce_protection() -> None:
    from dicom_bq.flows.up import own_pack_config
    from tests.conftest import cached_plan

    config = own_pack_config(cached_plan("prod"))
    resources = plan_resources("prod")
    assert {
        name: r["violations"]
        for name, r in run_pack(resources, pack_config=config).items()
        if r["violations"]
    } == {}
    unprotected = [{**r, "protect": False} for r in resources]
    report = run_pack(unprotected, pack_config=config)
    found = report["dbq008-phi-protected"]["violations"]
    assert report["dbq008-phi-protected"]["level"] == "mandatory"
    assert any("holds PHI in a protected stack but is not protected" in v for v in found)
    # What `up` ran before it passed a config: the same resources went through.
    assert run_pack(unprotected)["dbq008-phi-protected"]["violations"] == []


def test_the_pack_reads_grants_as_the_grants_output_lists_them() -> None:
    """[{role, member, scope, reason}] as OutputNames.GRANTS: a grant without its member is not
    taken for the agent's (the pack once assumed it was)."""
    from tests.conftest import cached_plan

    grants = [{k: v for k, v in g.items() if k != "member"} for g in cached_plan("dev").grants]
    with pytest.raises(subprocess.CalledProcessError) as failure:
        run_pack(plan_resources("dev"), {"expectedGrants": grants})
    assert "is not a list of grants (role, member, scope)" in failure.value.stderr


def test_pack_holds_the_scheduler_agent_to_token_creator_on_the_snapshot_account() -> None:
    from tests.conftest import cached_plan

    plan = cached_plan("operations")
    resources = plan_resources("operations")
    agent = next(g["member"] for g in plan.grants if "@gcp-sa-cloudscheduler." in g["member"])
    widened = [
        *resources,
        {
            "type": "gcp:projects/iAMMember:IAMMember",
            "name": "scheduler-everywhere",
            "props": {
                "project": "dicom-src-test",
                "role": "roles/iam.serviceAccountTokenCreator",
                "member": agent,
            },
        },
    ]
    report = run_pack(widened, {"expectedGrants": plan.grants})
    for policy in (
        "dbq016-scheduler-agent-token-creator-only",
        "dbq017-snapshot-account-not-impersonated",
    ):
        assert report[policy]["level"] == "mandatory"
        assert report[policy]["violations"][0].startswith("scheduler-everywhere: ")
