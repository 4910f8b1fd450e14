"""Each policy rule on a resource that passes and one that fails; the example stacks pass all."""

from __future__ import annotations

from typing import Any

import pytest

from dicom_bq.checks import check_plan, has_mandatory, plan_resources
from dicom_bq.planner import record_program
from infra.policy_rules import RULES, ExpectedGrant, PolicyContext, Resource, evaluate
from infra.settings import parse_settings, settings_from_config
from tests.conftest import base_settings, cached_plan
from tests.inventory import ROOT

AGENT = "serviceAccount:service-111122223333@gcp-sa-healthcare.iam.gserviceaccount.com"
IDENTITY = Resource(
    "gcp:projects/serviceIdentity:ServiceIdentity",
    "identity",
    {"project": "p-src", "service": "healthcare.googleapis.com"},
)
DATASET_SCOPE = "//bigquery.googleapis.com/projects/p-bq/datasets/ds"
EXPECTED = frozenset(
    {
        ExpectedGrant("roles/bigquery.dataEditor", DATASET_SCOPE),
        ExpectedGrant(
            "roles/bigquery.jobUser", "//cloudresourcemanager.googleapis.com/projects/p-bq"
        ),
    }
)


def member(type_: str, name: str, role: str, who: str = AGENT, **props: Any) -> Resource:
    return Resource(type_, name, {"role": role, "member": who, **props})


def bq_dataset(name: str = "bq", protect: bool = False, **props: Any) -> Resource:
    base = {
        "project": "p-bq",
        "datasetId": "ds",
        "location": "EU",
        "deleteContentsOnDestroy": False,
    }
    return Resource("gcp:bigquery/dataset:Dataset", name, {**base, **props}, protect)


GOOD_EDITOR = member(
    "gcp:bigquery/datasetIamMember:DatasetIamMember",
    "editor",
    "roles/bigquery.dataEditor",
    project="p-bq",
    datasetId="ds",
)
GOOD_JOBS = member(
    "gcp:projects/iAMMember:IAMMember", "jobs", "roles/bigquery.jobUser", project="p-bq"
)

# rule id -> (context, passing resources, failing resources, the failing resource's name)
CASES: dict[str, tuple[PolicyContext, list[Resource], list[Resource], str]] = {
    "DBQ001": (
        PolicyContext(),
        [GOOD_JOBS],
        [
            Resource(
                "gcp:projects/iAMBinding:IAMBinding",
                "binding",
                {"project": "p", "role": "roles/bigquery.jobUser", "members": [AGENT]},
            )
        ],
        "binding",
    ),
    "DBQ002": (
        PolicyContext(),
        [GOOD_JOBS],
        [
            member(
                "gcp:projects/iAMMember:IAMMember",
                "owner",
                "roles/owner",
                "user:a@example.com",
                project="p",
            )
        ],
        "owner",
    ),
    "DBQ003": (
        PolicyContext(),
        [bq_dataset(accesses=[{"role": "READER", "groupByEmail": "team@example.com"}])],
        [
            bq_dataset(
                "public", accesses=[{"role": "READER", "specialGroup": "allAuthenticatedUsers"}]
            )
        ],
        "public",
    ),
    "DBQ004": (
        PolicyContext(),
        [GOOD_EDITOR],
        [
            member(
                "gcp:projects/iAMMember:IAMMember",
                "token",
                "roles/iam.serviceAccountTokenCreator",
                project="p",
            )
        ],
        "token",
    ),
    "DBQ005": (
        PolicyContext(expected_grants=EXPECTED),
        [GOOD_EDITOR, GOOD_JOBS],
        [
            member(
                "gcp:storage/bucketIAMMember:BucketIAMMember",
                "reader",
                "roles/storage.objectViewer",
                bucket="b",
            )
        ],
        "reader",
    ),
    "DBQ006": (
        PolicyContext(expected_grants=EXPECTED),
        [GOOD_EDITOR],
        [
            member(
                "gcp:projects/iAMMember:IAMMember",
                "wide",
                "roles/bigquery.dataEditor",
                project="p-bq",
            )
        ],
        "wide",
    ),
    "DBQ007": (
        PolicyContext(),
        [bq_dataset(), GOOD_EDITOR],
        [bq_dataset(accesses=[{"role": "OWNER", "userByEmail": "a@example.com"}]), GOOD_EDITOR],
        "editor",
    ),
    "DBQ008": (
        PolicyContext(protected=True),
        [bq_dataset(protect=True)],
        [bq_dataset("unprotected")],
        "unprotected",
    ),
    "DBQ009": (
        PolicyContext(),
        [bq_dataset()],
        [bq_dataset("dropper", deleteContentsOnDestroy=True)],
        "dropper",
    ),
    "DBQ010": (
        PolicyContext(allowed_bigquery_locations=frozenset({"EU"})),
        [bq_dataset()],
        [bq_dataset("us", location="US")],
        "us",
    ),
    "DBQ011": (
        PolicyContext(require_cmek=True),
        [
            bq_dataset(
                defaultEncryptionConfiguration={
                    "kmsKeyName": "projects/k/locations/eu/keyRings/r/cryptoKeys/k"
                }
            )
        ],
        [bq_dataset("plain")],
        "plain",
    ),
    "DBQ012": (PolicyContext(), [GOOD_JOBS], [GOOD_JOBS], "jobs"),
    "DBQ013": (
        PolicyContext(),
        [
            Resource(
                "gcp:projects/service:Service",
                "api",
                {"service": "bigquery.googleapis.com", "disableOnDestroy": False},
            )
        ],
        [
            Resource(
                "gcp:projects/service:Service", "api-off", {"service": "bigquery.googleapis.com"}
            )
        ],
        "api-off",
    ),
}


def test_every_rule_has_fixtures_and_there_are_at_least_12() -> None:
    assert len(RULES) >= 12
    assert {rule.id for rule in RULES} == set(CASES)
    for rule in RULES:
        assert rule.description
        assert rule.remediation
        assert rule.nearest
        assert rule.enforcement in ("mandatory", "advisory")


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_passes_and_fails(rule_id: str) -> None:
    context, passing, failing, culprit = CASES[rule_id]
    with_identity = rule_id != "DBQ012"
    extra = [IDENTITY] if with_identity else []
    assert [f for f in evaluate([*passing, IDENTITY], context) if f.rule == rule_id] == []
    found = [f for f in evaluate(failing + extra, context) if f.rule == rule_id]
    assert [f.resource for f in found] == [culprit]
    assert found[0].remediation


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_example_stacks_pass_every_rule(stack: str) -> None:
    from dicom_bq.stackfiles import read_stack_config

    plan = cached_plan(stack)
    config = read_stack_config(ROOT, stack, use_cli=False)
    assert check_plan(plan, settings_from_config(config.values, stack)[0]) == []


def _plan_with(extra: Any) -> Any:
    """The real program plus one more resource, as a careless change would add it."""
    from infra.program import define_stack, load_settings

    def program() -> dict[str, Any]:
        outputs = define_stack(load_settings()).outputs
        extra()
        return outputs

    raw = base_settings(protected=True)
    plan = record_program("change", {f"dicom-bq:{k}": v for k, v in raw.items()}, program)
    return plan, check_plan(plan, parse_settings(raw))


def test_a_basic_role_fails_the_check() -> None:
    import pulumi_gcp as gcp

    _plan, findings = _plan_with(
        lambda: gcp.projects.IAMMember(
            "oops", project="dicom-src-test", role="roles/editor", member="user:dev@example.com"
        )
    )
    assert has_mandatory(findings)
    assert {f.rule for f in findings} == {"DBQ002"}


def test_an_authoritative_binding_for_the_agent_fails_the_check() -> None:
    import pulumi_gcp as gcp

    plan, findings = _plan_with(
        lambda: gcp.bigquery.DatasetIamBinding(
            "authoritative",
            project="dicom-src-test",
            dataset_id="dicom_metadata",
            role="roles/bigquery.dataEditor",
            members=[AGENT],
        )
    )
    assert "DBQ001" in {f.rule for f in findings}
    assert any(r.name == "authoritative" for r in plan_resources(plan))


def test_plan_check_cli_exit_codes(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from dicom_bq.cli import app

    ok = CliRunner().invoke(app, ["plan", "--stack", "prod", "--check", "--project-dir", str(ROOT)])
    assert ok.exit_code == 0, ok.output
    assert "policy checks passed: 13 rules" in ok.stdout
    (tmp_path / "Pulumi.yaml").write_text("name: dicom-bq\nruntime: python\n")
    (tmp_path / "Pulumi.eu.yaml").write_text(
        "config:\n"
        + "".join(f"  dicom-bq:{k}: {v}\n" for k, v in base_settings().items())
        + "  dicom-bq:allowedBigqueryLocations: [EU]\n"
    )
    bad = CliRunner().invoke(
        app, ["plan", "-s", "eu", "--check", "-f", "json", "--project-dir", str(tmp_path)]
    )
    assert bad.exit_code == 1
    import json

    findings = json.loads(bad.stdout)["findings"]
    assert [f["rule"] for f in findings] == ["DBQ010"]


def test_readme_maps_every_rule() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for rule in RULES:
        assert f"| {rule.id} | {rule.description} | {rule.enforcement} | {rule.nearest} |" in readme
