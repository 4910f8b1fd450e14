"""Deploying under a model of Google's create-time rules: the stacks pass; break an ordering edge
the program declares and the stacks that need it fail, with the rule that says why. Past Google's
typical propagation delay, the stacks are covered by their waits or by `dicom-bq up`'s recovery,
except where the model reports a gap."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from dicom_bq.flows import propagation
from dicom_bq.stack.plan import Plan, plan_settings
from dicom_bq.vocabulary import naming
from dicom_bq.vocabulary.settings import parse_duration
from tests import deployment_model as model
from tests.conftest import base_settings, cached_plan
from tests.stacks import INVENTORIED, generated_stacks

GENERATED = generated_stacks()
# The three-store and the snapshot + alerts stacks (their inventories are in tests/inventories/).
OTHERS = [(name, make()) for name, make in INVENTORIED.items()]
_PLANS: dict[str, Plan] = {}


def plan_of(name: str) -> tuple[Plan, dict[str, Any]]:
    if name in ("dev", "prod"):
        from dicom_bq.stack.config import read_stack_config
        from tests.inventory import ROOT

        raw = read_stack_config(ROOT, name, use_cli=False).own()
        return cached_plan(name), raw
    raw = dict([*GENERATED, *OTHERS])[name]
    if name not in _PLANS:
        _PLANS[name] = plan_settings(name, raw)
    return _PLANS[name], raw


ALL = ["dev", "prod", *[name for name, _ in GENERATED], *[name for name, _ in OTHERS]]


def test_the_stacks_cover_every_rule() -> None:
    assert len(GENERATED) == 20
    assert "operations" in ALL
    covered = set().union(*(model.applicable_rules(plan_of(n)[0]) for n in ALL))
    assert covered == set(model.RULES)
    assert set(model.PROPAGATION) <= set(model.RULES)


def test_the_model_and_up_take_the_same_worst_cases_from_google() -> None:
    # IAM: "could potentially take 7 minutes or longer"; a log-based metric: up to 10 minutes.
    assert model.IAM_WORST_SECONDS == propagation.IAM.seconds == 420
    assert model.METRIC_WORST_SECONDS == propagation.METRIC.seconds == 600


def _known_gaps(raw: dict[str, Any]) -> set[str]:
    """What the model reports past Google's typical delay, from the settings alone: a CMEK
    Healthcare dataset waits iamPropagationWait after its key's grant, and no documented failure
    lets `dicom-bq up` recover it (deployment_model's docstring)."""
    wait = parse_duration(raw.get("iamPropagationWait", "120s"))
    return {"cmek-healthcare"} if raw.get("healthcareKmsKey") and wait < 420 else set()


@pytest.mark.parametrize("stack", ALL)
def test_stack_deploys_under_googles_rules(stack: str) -> None:
    plan, raw = plan_of(stack)
    violations = model.check(plan)
    assert [v for v in violations if not v.worst_case_only] == []
    assert {v.rule for v in violations} == _known_gaps(raw)


def test_the_snapshot_and_alerts_stack_is_covered_by_ups_recovery() -> None:
    """Its store streams and its policies use new metrics: the program's waits (120 s) are
    Google's typical case; the rest is `dicom-bq up` running `pulumi up` again. Without that
    recovery, the model finds the gaps."""
    plan, _ = plan_of("operations")
    assert model.check(plan) == []
    assert {"streaming-store", "metric-visible"} <= model.applicable_rules(plan)


@pytest.mark.parametrize("stack", ["prod", "operations"])
def test_without_ups_recovery_the_waits_fall_short_of_the_worst_case(
    stack: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(propagation, "recognise", lambda *_args, **_kwargs: None)
    plan, raw = plan_of(stack)
    violations = model.check(plan)
    assert all(v.worst_case_only for v in violations)
    expected = {"streaming-store", *(["cmek-bigquery"] if raw.get("bigqueryKmsKey") else [])}
    expected |= {"metric-visible"} if stack == "operations" else set()
    assert {v.rule for v in violations} == expected | _known_gaps(raw)


def test_a_wait_of_googles_worst_case_covers_without_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(propagation, "recognise", lambda *_args, **_kwargs: None)
    _, raw = plan_of("prod")
    assert model.check(plan_settings("prod-7m", {**raw, "iamPropagationWait": "7m"})) == []


def test_notifications_need_only_the_typical_wait() -> None:
    """Nothing fails at create (Google logs failed notifications): the store needs the typical
    wait after the publisher grant, not the worst case."""
    spec = model.PROPAGATION["notifying-store"]
    assert not spec.fails_at_create
    _, raw = plan_of("prod")
    short = plan_settings("prod-short", {**raw, "iamPropagationWait": "60s"})
    assert "notifying-store" in {v.rule for v in model.check(short) if not v.worst_case_only}


def _stores(raw: dict[str, Any]) -> list[tuple[str, bool, bool]]:
    """Each store's resource name, whether it streams, whether it notifies (both store forms)."""
    if raw.get("dicomStores"):
        return [
            (
                f"dicom-bq-dicom-store-{store['id']}",
                bool(store.get("streamTables")),
                bool((store.get("notification") or {}).get("pubsubTopic")),
            )
            for store in raw["dicomStores"]
        ]
    return [
        ("dicom-bq-dicom-store", bool(raw.get("streamTables")), bool(raw.get("notificationTopic")))
    ]


def _needed_edges(raw: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """The ordering edges the program declares for Google, and the rules their removal breaks,
    derived from the settings alone (not from the model)."""
    stores = _stores(raw)
    hc_cmek = bool(raw.get("healthcareKmsKey"))
    bq_cmek = bool(raw.get("bigqueryKmsKey"))
    editor = "bigquery-data-editor-" + (raw.get("dataEditorScope") or "dataset")
    needed: dict[tuple[str, str], set[str]] = {
        ("dicom-bq-agent-identity", "dicom-bq-apis-healthcare"): {"api-enabled"},
        (f"dicom-bq-agent-{editor}", "dicom-bq-agent-identity"): {"principal-exists"},
        ("dicom-bq-agent-bigquery-job-user", "dicom-bq-agent-identity"): {"principal-exists"},
    }
    for store, streams, topic in stores:
        store_rules = ({"streaming-store"} if streams else set()) | (
            {"notifying-store"} if topic else set()
        )
        # The store reaches the Healthcare API through its dataset, or through the wait.
        needed[(store, "dicom-bq-dicom-dataset")] = {"scope-exists"} | (
            set() if store_rules else {"api-enabled"}
        )
        if store_rules:
            # Redundant when the CMEK dataset (which the store follows) already waits.
            needed[(store, "dicom-bq-agent-iam-propagation")] = set() if hc_cmek else store_rules
        if streams:
            # Redundant when dataEditor is granted on the dataset: the wait follows that grant.
            needed[(store, "dicom-bq-bigquery-dataset")] = (
                {"scope-exists"} if editor.endswith("project") else set()
            )
    if any(streams for _, streams, _ in stores):
        needed[("dicom-bq-agent-iam-propagation", f"dicom-bq-agent-{editor}")] = {"streaming-store"}
    if raw.get("notificationTopic"):
        needed[
            ("dicom-bq-agent-iam-propagation", "dicom-bq-agent-notification-topic-publisher")
        ] = {"notifying-store"}
    for store in raw.get("dicomStores") or []:
        if (store.get("notification") or {}).get("pubsubTopic"):
            publisher = f"dicom-bq-agent-notification-topic-publisher-{store['id']}"
            needed[("dicom-bq-agent-iam-propagation", publisher)] = {"notifying-store"}
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
    if raw.get("alertEmails") or raw.get("alertChannels"):
        # Each policy waits for the metrics (a metric and its policy share their name).
        wait = "dicom-bq-alerts-metric-propagation"
        for store, streams, _ in stores:
            watched = [
                "export_errors",
                "snapshot_job_failures" if raw.get("snapshotSchedule") else "",
            ]
            watched += ["stream_errors"] if streams else []
            for key in filter(None, watched):
                policy = f"dicom-bq-alerts-{key}-{store.removeprefix('dicom-bq-dicom-store-')}"
                needed[(policy, wait)] = {"metric-visible"}
                needed[(wait, policy)] = {"metric-visible"}
    if raw.get("snapshotSchedule"):
        # The scheduler's agent gets token creator on the snapshot account; the account gets
        # the export role on each store.
        grant = "dicom-bq-snapshot-agent-scheduler-token-creator"
        needed[(grant, "dicom-bq-snapshot-agent-identity")] = {"principal-exists"}
        needed[(grant, "dicom-bq-snapshot-account")] = {"scope-exists"}
        for store, _, _ in stores:
            member = "dicom-bq-snapshot-snapshot-export-" + store.removeprefix(
                "dicom-bq-dicom-store-"
            )
            needed[(member, "dicom-bq-snapshot-account")] = {"principal-exists"}
            needed[(member, store)] = {"scope-exists"}
    return needed


@pytest.mark.parametrize("stack", ALL)
def test_removing_an_ordering_edge_fails_where_it_is_needed(stack: str) -> None:
    plan, raw = plan_of(stack)
    present = set(model.edges(plan))
    for edge, rules in _needed_edges(raw).items():
        assert edge in present, f"{stack}: the program no longer declares {edge}"
        violations = model.check(plan, without=[edge])
        broken = {v.rule for v in violations if not v.worst_case_only}
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
