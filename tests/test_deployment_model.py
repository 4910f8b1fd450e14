"""Deploying under a model of Google's create-time rules: the stacks pass; break an ordering edge
the program declares and the stacks that need it fail, with the rule that says why."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from dicom_bq.infra import naming
from dicom_bq.stack.plan import Plan, plan_settings
from tests import deployment_model as model
from tests.conftest import base_settings, cached_plan
from tests.stacks import generated_stacks

GENERATED = generated_stacks()
_PLANS: dict[str, Plan] = {}


def plan_of(name: str) -> tuple[Plan, dict[str, Any]]:
    if name in ("dev", "prod"):
        from dicom_bq.stack.config import read_stack_config
        from tests.inventory import ROOT

        raw = read_stack_config(ROOT, name, use_cli=False).own()
        return cached_plan(name), raw
    raw = dict(GENERATED)[name]
    if name not in _PLANS:
        _PLANS[name] = plan_settings(name, raw)
    return _PLANS[name], raw


ALL = ["dev", "prod", *[name for name, _ in GENERATED]]


def test_twenty_generated_stacks_cover_every_rule() -> None:
    assert len(GENERATED) == 20
    covered = set().union(*(model.applicable_rules(plan_of(n)[0]) for n in ALL))
    assert covered == set(model.RULES)


@pytest.mark.parametrize("stack", ALL)
def test_stack_deploys_under_googles_rules(stack: str) -> None:
    plan, _ = plan_of(stack)
    assert model.check(plan) == []


def _needed_edges(raw: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """The ordering edges the program declares for Google, and the rules their removal breaks,
    derived from the settings alone (not from the model)."""
    streams = bool(raw.get("streamTables"))
    topic = bool(raw.get("notificationTopic"))
    hc_cmek = bool(raw.get("healthcareKmsKey"))
    bq_cmek = bool(raw.get("bigqueryKmsKey"))
    editor = "bigquery-data-editor-" + (raw.get("dataEditorScope") or "dataset")
    store_rules = ({"streaming-store"} if streams else set()) | (
        {"notifying-store"} if topic else set()
    )
    needed: dict[tuple[str, str], set[str]] = {
        ("dicom-bq-agent-identity", "dicom-bq-apis-healthcare"): {"api-enabled"},
        (f"dicom-bq-agent-{editor}", "dicom-bq-agent-identity"): {"principal-exists"},
        ("dicom-bq-agent-bigquery-job-user", "dicom-bq-agent-identity"): {"principal-exists"},
        # The store reaches the Healthcare API through its dataset, or through the wait.
        ("dicom-bq-dicom-store", "dicom-bq-dicom-dataset"): {"scope-exists"}
        | (set() if store_rules else {"api-enabled"}),
    }
    if store_rules:
        # Redundant when the CMEK dataset (which the store follows) already waits.
        needed[("dicom-bq-dicom-store", "dicom-bq-agent-iam-propagation")] = (
            set() if hc_cmek else store_rules
        )
    if streams:
        # Redundant when dataEditor is granted on the dataset: the wait follows that grant.
        needed[("dicom-bq-dicom-store", "dicom-bq-bigquery-dataset")] = (
            {"scope-exists"} if editor.endswith("project") else set()
        )
        needed[("dicom-bq-agent-iam-propagation", f"dicom-bq-agent-{editor}")] = {"streaming-store"}
    if topic:
        needed[
            ("dicom-bq-agent-iam-propagation", "dicom-bq-agent-notification-topic-publisher")
        ] = {"notifying-store"}
    if hc_cmek:
        needed[("dicom-bq-dicom-dataset", "dicom-bq-agent-iam-propagation")] = {"cmek-healthcare"}
        needed[("dicom-bq-agent-iam-propagation", "dicom-bq-agent-healthcare-cmek-encrypter")] = {
            "cmek-healthcare"
        }
    if bq_cmek:
        needed[("dicom-bq-bigquery-dataset", "dicom-bq-bigquery-iam-propagation")] = {
            "cmek-bigquery"
        }
        needed[
            ("dicom-bq-bigquery-iam-propagation", "dicom-bq-bigquery-bigquery-cmek-encrypter")
        ] = {"cmek-bigquery"}
    return needed


@pytest.mark.parametrize("stack", ALL)
def test_removing_an_ordering_edge_fails_where_it_is_needed(stack: str) -> None:
    plan, raw = plan_of(stack)
    present = set(model.edges(plan))
    for edge, rules in _needed_edges(raw).items():
        assert edge in present, f"{stack}: the program no longer declares {edge}"
        broken = {violation.rule for violation in model.check(plan, without=[edge])}
        assert broken == rules, f"{stack}: without {edge} the model found {broken}, not {rules}"


def test_every_applicable_rule_is_guarded_by_an_edge() -> None:
    for stack in ALL:
        plan, raw = plan_of(stack)
        guarded = set().union(*_needed_edges(raw).values())
        assert model.applicable_rules(plan) - {"scope-exists"} <= guarded | {"api-enabled"}


def test_hand_built_encryption_account_fails_like_google(monkeypatch: pytest.MonkeyPatch) -> None:
    """The old program granted the key to bq-NUMBER@... built from the number, before BigQuery
    had created it: "Service account ... does not exist" (terraform-google-bigquery#80)."""
    from dicom_bq.infra.components import export_path

    def hand_built(self: Any, project: Any, api: Any) -> str:
        assert project == "imaging-analytics-prod"
        return naming.bigquery_encryption_member("555566667777")

    monkeypatch.setattr(export_path.DicomExportPath, "_bigquery_encryption_member", hand_built)
    plan, raw = plan_of("prod")
    mutated = plan_settings("prod-mutated", raw)
    assert plan.outputs["grants"] == mutated.outputs["grants"]  # same addresses on paper
    broken = {(v.rule, v.resource) for v in model.check(mutated)}
    assert ("principal-exists", "dicom-bq-bigquery-bigquery-cmek-encrypter") in broken


def test_waits_that_wait_for_nothing_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Sleep registered without its grants as dependencies (a careless refactor)."""
    from dicom_bq.infra.components import iam

    real_sleep = iam.time.Sleep

    def detached(name: str, **kwargs: Any) -> Any:
        opts = kwargs.pop("opts")
        opts.depends_on = []
        return real_sleep(name, opts=opts, **kwargs)

    monkeypatch.setattr(iam.time, "Sleep", detached)
    _, raw = plan_of("prod")
    broken = {v.rule for v in model.check(plan_settings("prod-detached", raw))}
    assert broken >= {"cmek-healthcare", "cmek-bigquery", "streaming-store", "notifying-store"}


def test_a_renamed_grant_key_keeps_its_resource_through_an_alias(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dicom_bq.infra import grants
    from dicom_bq.infra.components import export_path

    real_specs = grants.grant_specs

    def renamed(settings: Any) -> list[grants.GrantSpec]:
        return [
            dataclasses.replace(spec, key="bigquery-jobs", former_keys=(spec.key,))
            if spec.key == "bigquery-job-user"
            else spec
            for spec in real_specs(settings)
        ]

    monkeypatch.setattr(export_path, "grant_specs", renamed)
    plan = plan_settings("renamed", base_settings())
    (resource,) = [r for r in plan.custom_resources() if r.name == "dicom-bq-agent-bigquery-jobs"]
    assert any("dicom-bq-agent-bigquery-job-user" in alias for alias in resource.aliases)
    assert resource.delete_before_replace
