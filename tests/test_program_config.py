"""The program as `pulumi up` runs it: config from the engine's environment, no dicom-bq CLI.

The Python language host gives the program the merged config as JSON in PULUMI_CONFIG
(pulumi/pulumi sdk/python/lib/pulumi/runtime/config.py, get_config_env); nothing else checks
keys, so a typo would silently drop a grant or the protection unless the program refuses it.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest
from pulumi.runtime import config as runtime_config
from pulumi.runtime import settings as pulumi_settings

from dicom_bq.infra.program import define_stack, load_settings
from tests.conftest import base_settings


class _Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)
        if args.typ == "gcp:projects/serviceIdentity:ServiceIdentity":
            # The provider's computed address of the agent, which the program grants to.
            email = f"service-111122223333@gcp-sa-{str(args.inputs['service']).split('.')[0]}.x"
            outputs.update(email=email, member=f"serviceAccount:{email}")
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        return {"number": "111122223333", "member": "serviceAccount:bq@x", "email": "bq@x"}


def run_as_pulumi_up(
    monkeypatch: pytest.MonkeyPatch, config: dict[str, str]
) -> tuple[list[str], Exception | None]:
    """Run infra/__main__'s two calls with config only in PULUMI_CONFIG; return warnings, error."""
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(config))
    runtime_config.set_all_config({}, [])  # nothing set in-process: only the engine's variable
    warnings: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *a, **k: warnings.append(message))
    pulumi_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(_Mocks(), project="dicom-bq", stack="dev", preview=False)
    failure: list[Exception] = []

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def program() -> None:
        try:
            define_stack(load_settings())
        except pulumi.RunError as error:
            failure.append(error)

    program()
    return warnings, (failure[0] if failure else None)


def engine_config(**overrides: Any) -> dict[str, str]:
    values = {f"dicom-bq:{k}": v for k, v in base_settings().items()}
    values.update(overrides)
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


def test_good_config_from_the_engine_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    warnings, error = run_as_pulumi_up(monkeypatch, engine_config())
    assert error is None
    assert warnings == []


def test_a_misspelt_key_stops_pulumi_up_with_did_you_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    config = engine_config(**{"dicom-bq:filterBuckt": "my-filters"})
    _, error = run_as_pulumi_up(monkeypatch, config)
    assert isinstance(error, pulumi.RunError)
    assert "dicom-bq:filterBuckt is not a dicom-bq setting: did you mean 'filterBucket'?" in str(
        error
    )


@pytest.mark.parametrize("namespace", ["dicombq", "dicom_bq", "dicom-bq-", "Dicom-BQ", "dicom-qb"])
def test_a_near_miss_namespace_warns(monkeypatch: pytest.MonkeyPatch, namespace: str) -> None:
    config = engine_config(**{f"{namespace}:protected": "true"})
    warnings, error = run_as_pulumi_up(monkeypatch, config)
    assert error is None
    (warning,) = warnings
    assert f"'{namespace}:protected'" in warning
    assert "did you mean 'dicom-bq:protected'?" in warning


@pytest.mark.parametrize("namespace", ["gcp", "pulumi", "time", "dicom", "bq"])
def test_other_namespaces_are_left_alone(monkeypatch: pytest.MonkeyPatch, namespace: str) -> None:
    warnings, error = run_as_pulumi_up(monkeypatch, engine_config(**{f"{namespace}:x": "1"}))
    assert error is None
    assert warnings == []


def test_the_program_and_plan_say_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    from dicom_bq.errors import DicomBqError
    from dicom_bq.stack.plan import plan_settings

    _, error = run_as_pulumi_up(monkeypatch, engine_config(**{"dicom-bq:protectd": "true"}))
    with pytest.raises(DicomBqError) as planned:
        plan_settings("dev", {**base_settings(), "protectd": "true"})
    assert str(error).splitlines()[1:] == planned.value.message.splitlines()[1:]
