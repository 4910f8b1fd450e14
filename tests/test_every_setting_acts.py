"""Every setting does something, where infra/setting_effects.py says it does.

Each key of the settings model is set in turn to a valid non-default value (CHANGES) and the
declared places are compared with and without it:
- component: program.component_args changes exactly in the declared arguments, and the component
  acts on them: the plan with the setting differs from the same run (same config, same offline
  answers) with those arguments put back as they were without it;
- offline plan: the plan's resources, outputs or data-source answers differ while the component's
  arguments do not;
- policy config: the pack's config property (flows/up.own_pack_config) and `plan --check`'s
  context differ;
- cli: the named behaviour, run through the command's own flow, gives a different answer.
A key without a declaration or without a change here fails; a place that does not change fails.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from dicom_bq.errors import DicomBqError
from dicom_bq.infra.program import component_args
from dicom_bq.infra.setting_effects import (
    SETTING_EFFECTS,
    CliBehaviour,
    SettingEffect,
    declaration_problems,
)
from dicom_bq.stack.config import PROJECT_NAME
from dicom_bq.stack.plan import Plan, known_project_numbers, plan_settings, record_program
from dicom_bq.vocabulary.settings import StackSettings, config_keys
from tests.conftest import base_settings

BASE: dict[str, Any] = base_settings()
KMS = "projects/kms-test/locations/us-central1/keyRings/imaging/cryptoKeys/{}"
SCHEDULE = {"snapshotSchedule": "0 2 * * *"}


@dataclass(frozen=True)
class Change:
    """`key: value` compared with its absence (or BASE's value), both on top of BASE with
    `given` (None: the key removed); `replaces`: keys the value takes the place of."""

    value: Any
    given: dict[str, Any] = field(default_factory=dict)
    replaces: tuple[str, ...] = ()


CHANGES: dict[str, Change] = {
    "sourceProject": Change("imaging-src-other"),
    "location": Change("europe-west4"),
    "healthcareDatasetId": Change("imaging-2"),
    "dicomStoreId": Change("studies"),
    "dicomStores": Change([{"id": "studies"}, {"id": "research"}], replaces=("dicomStoreId",)),
    "bigqueryDatasetId": Change("dicom_other"),
    "sourceProjectNumber": Change("987654321098", given={"sourceProjectNumber": None}),
    "destinationProject": Change("imaging-analytics-1"),
    "destinationProjectNumber": Change(
        "555566667777",
        given={"destinationProject": "imaging-analytics-1", "bigqueryKmsKey": KMS.format("bq")},
    ),
    "timeZone": Change("Europe/Amsterdam"),
    "labels": Change({"env": "test"}),
    "notificationTopic": Change("projects/dicom-src-test/topics/instances"),
    "streamTables": Change(["instances_stream"]),
    "bigqueryLocation": Change("US"),
    "healthcareKmsKey": Change(KMS.format("hc")),
    "bigqueryKmsKey": Change(KMS.format("bq")),
    "filterBucket": Change("dicom-src-test-filters"),
    "protected": Change(True),
    "retainOnDelete": Change(True),
    "iamPropagationWait": Change("3m"),
    "dataEditorScope": Change("project"),
    "allowedBigqueryLocations": Change(["EU"]),
    "requireCmek": Change(True),
    "universeDomain": Change("s3nsapis.fr"),
    "agentIamDomain": Change("example-system.iam.gserviceaccount.com"),
    "alertEmails": Change(["imaging-oncall@example.com"]),
    "alertChannels": Change(["projects/dicom-src-test/notificationChannels/123"]),
    "snapshotSchedule": Change("0 2 * * *"),
    "snapshotTimeZone": Change("Europe/Amsterdam", given=SCHEDULE),
    "snapshotTable": Change("dicom_snapshot_nightly", given=SCHEDULE),
    "snapshotRegion": Change("us-east1", given=SCHEDULE),
}

_PLANS: dict[str, Plan] = {}


def raw_pair(key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    change = CHANGES[key]
    without = {k: v for k, v in (BASE | change.given).items() if v is not None}
    with_key = {k: v for k, v in without.items() if k not in change.replaces}
    return without, with_key | {key: change.value}


def planned(raw: dict[str, Any]) -> Plan:
    """Plans of the same settings are reused (several keys share their `without`)."""
    cache_key = json.dumps(raw, sort_keys=True)
    if cache_key not in _PLANS:
        _PLANS[cache_key] = plan_settings("effects", raw)
    return _PLANS[cache_key]


def settings_of(raw: dict[str, Any]) -> StackSettings:
    settings = planned(raw).settings
    assert settings is not None
    return settings


def signature(plan: Plan) -> str:
    """What the plan would create and answer; its notes are left out (they only explain)."""
    return json.dumps(
        {
            "resources": [r.as_dict() for r in plan.resources],
            "outputs": plan.outputs,
            "invokes": [(i.token, i.args, i.result) for i in plan.invokes],
        },
        sort_keys=True,
        default=str,
    )


def changed_args(before: StackSettings, after: StackSettings) -> set[str]:
    args_before: dict[str, Any] = dict(component_args(before))
    args_after: dict[str, Any] = dict(component_args(after))
    return {
        name
        for name in args_before.keys() | args_after.keys()
        if args_before.get(name, _ABSENT) != args_after.get(name, _ABSENT)
    }


_ABSENT = object()


def restored_args(
    before: StackSettings, after: StackSettings, names: tuple[str, ...]
) -> dict[str, Any]:
    """`after`'s component arguments with `names` as they are (or are not) in `before`'s."""
    args: dict[str, Any] = dict(component_args(after))
    restored: dict[str, Any] = dict(component_args(before))
    for arg in names:
        if arg in restored:
            args[arg] = restored[arg]
        else:
            args.pop(arg, None)
    return args


def component_signature(
    raw: dict[str, Any], args: dict[str, Any], numbers_of: tuple[StackSettings, ...] = ()
) -> str:
    """The program run on `raw`'s config with the offline answers of its settings, the
    component given `args` instead of the settings' own (and the project numbers of `numbers_of`
    known too): its plan's signature, or what stopped it (a refusal acts on the arguments too)."""
    from dicom_bq.infra import program as stack_program

    settings = settings_of(raw)
    numbers: dict[str, str] = {}
    for known in (*numbers_of, settings):
        numbers.update(known_project_numbers(known))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stack_program, "component_args", lambda _settings: args)
        try:
            plan = record_program(
                "effects",
                {f"{PROJECT_NAME}:{k}": v for k, v in raw.items()},
                lambda: stack_program.define_stack(stack_program.load_settings()),
                known_numbers=numbers,
                universe_domain=settings.universe_domain,
                agent_iam_domain=settings.agent_iam_domain,
            )
        except Exception as error:
            return f"stopped: {type(error).__name__}: {error}"
    return signature(plan)


# -- the CLI behaviours, each through the command's own flow ---------------------------------


class _Observer:
    def __init__(self) -> None:
        self.notices: list[str] = []

    def notice(self, message: str) -> None:
        self.notices.append(message)

    def waiting(self, why: str, delay: float) -> None:
        pass

    def started(self, operation: str) -> None:
        pass

    def progress(self, state: Any, elapsed: float) -> None:
        pass


def _export_filter_bucket(settings: StackSettings) -> str:
    from dicom_bq.flows.export import filter_bucket

    try:
        return filter_bucket(bucket=None, settings=settings, observer=_Observer())
    except DicomBqError as error:
        return f"refused: {error}"


class _ConnectionMade(Exception):
    pass


def _export_universe(settings: StackSettings) -> str:
    """`dicom-bq export --stack S`: the connection run_export makes from the stack's settings
    (stopped there, before any request), as the Healthcare endpoint it names."""
    import dataclasses
    import inspect

    from dicom_bq.flows import export
    from dicom_bq.flows.access import GoogleAccess
    from dicom_bq.flows.exporter import ExportPlan
    from dicom_bq.flows.targets import Target
    from dicom_bq.refs import StoreName, TableUri

    class StopAtConnection(GoogleAccess):
        def connection(self, *, default_universe: str | None = None) -> Any:
            made = super().connection(default_universe=default_universe)
            raise _ConnectionMade(dataclasses.replace(made, environ={}).healthcare().url)

    arguments: dict[str, Any] = {
        "plan": ExportPlan(
            store=StoreName.parse(settings.store_name),
            table=TableUri.parse("bq://dicom-src-test.dicom_metadata.instances"),
        ),
        "access": StopAtConnection(),
        "api_version": "v1",
        "target": Target(stack="effects"),
        "local_filter": None,
        "agent_email": None,
        "permission_window": 0,
        "wait": False,
        "timeout": None,
        "truncate_confirmed": False,
        "confirm_truncate": lambda risk: None,
        "allow_concurrent": True,
        "observer": _Observer(),
    }
    # Options the flow gains later are off (False/None) here: the connection comes first.
    for name, parameter in inspect.signature(export.run_export).parameters.items():
        if parameter.default is inspect.Parameter.empty:
            arguments.setdefault(name, None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Target, "settings", lambda target: settings)
        with pytest.raises(_ConnectionMade) as made:
            export.run_export(**arguments)
    return str(made.value)


CLI_PROBES = {
    CliBehaviour.EXPORT_FILTER_BUCKET: _export_filter_bucket,
    CliBehaviour.EXPORT_UNIVERSE: _export_universe,
}


# -- the tests -------------------------------------------------------------------------------


def test_every_key_of_the_settings_model_is_declared() -> None:
    assert declaration_problems(config_keys()) == []


def test_the_declaration_catches_a_key_it_lacks() -> None:
    assert declaration_problems([*config_keys(), "newKey"]) == [
        "dicom-bq:newKey has no entry in SETTING_EFFECTS: declare where it acts"
    ]


def test_every_key_has_a_change_and_every_behaviour_a_probe() -> None:
    assert sorted(CHANGES) == config_keys()
    assert set(CLI_PROBES) == set(CliBehaviour)


def test_the_component_run_reproduces_the_programs_plan() -> None:
    """component_signature (the ablation below) is the program's own plan given its own args."""
    raw = BASE | {
        "filterBucket": "dicom-src-test-filters",
        "protected": True,
        "universeDomain": "s3nsapis.fr",
    }
    assert component_signature(raw, dict(component_args(settings_of(raw)))) == signature(
        planned(raw)
    )


@pytest.mark.parametrize("key", config_keys())
def test_each_setting_acts_where_it_is_declared(key: str) -> None:
    effect: SettingEffect = SETTING_EFFECTS[key]
    without, with_key = raw_pair(key)
    before, after = settings_of(without), settings_of(with_key)
    name = next(n for n, f in StackSettings.model_fields.items() if (f.alias or n) == key)
    assert getattr(before, name) != getattr(after, name), f"{key}: the change is not a change"

    changed = changed_args(before, after)
    assert changed <= {*effect.component_args, *effect.passed_unused}, (
        f"{key} changes the component's {sorted(changed)}; declared: {effect.component_args}"
    )
    if effect.passed_unused:
        # Declared unused: the component still ignores them (else declare them as acting).
        unused = restored_args(before, after, effect.passed_unused)
        assert component_signature(with_key, unused, (before,)) == signature(planned(with_key)), (
            f"the component acts on {effect.passed_unused}: declare them in component_args"
        )
    if effect.component_args:
        assert changed, f"{key} is declared a component argument but changes none"
        # The component acts on them: put back as they were, the plan is not the same.
        args = restored_args(before, after, effect.component_args)
        assert component_signature(with_key, args, (before,)) != signature(planned(with_key)), (
            f"the component ignores {key} ({'/'.join(effect.component_args)})"
        )
    if effect.offline_plan or effect.component_args:
        assert signature(planned(without)) != signature(planned(with_key)), (
            f"the plan is the same with and without {key}"
        )
    for prop in effect.policy_config:
        from dicom_bq.flows.up import own_pack_config
        from dicom_bq.security.checks import plan_context

        configs = [own_pack_config(planned(raw)) for raw in (without, with_key)]
        values = [
            {json.dumps(policy.get(prop), sort_keys=True) for policy in config.values()}
            for config in configs
        ]
        assert values[0] != values[1], f"{key} does not change the policy config's {prop}"
        contexts = [
            plan_context(s, planned(r).grants) for s, r in ((before, without), (after, with_key))
        ]
        assert contexts[0] != contexts[1], f"{key} does not change `plan --check`'s context"
    for behaviour in effect.cli:
        probe = CLI_PROBES[behaviour]
        assert probe(before) != probe(after), f"{key} does not change {behaviour.value}"
