"""The stack's universe end to end, offline: where `pulumi up` deploys, as the program decides it
and as `plan` and `preflight` show it.

dicom-bq:universeDomain sets dicom-bq's own clients; the gcp provider has its own key,
gcp:universeDomain (pulumi-gcp's provider config; Terraform's `universe_domain`, with no
environment variable). Outside googleapis.com the program makes its own gcp provider configured
for the stack's universe (and the stack's other gcp settings) and gives it to the component; a
gcp:universeDomain that names another universe is refused, by the program and by the offline
commands alike, before any resource. The engine tier (tests/engine/test_engine_universe.py)
deploys the same under the real engine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.errors import EXIT_BAD_INPUT, DicomBqError
from dicom_bq.stack.config import PROJECT_NAME, StackConfig
from dicom_bq.stack.plan import plan_settings, plan_stack
from tests.conftest import base_settings
from tests.inventory import ROOT
from tests.test_preflight import cloud_for, ready_for  # noqa: F401 - the fixture and its cloud
from tests.test_program_config import engine_config, run_as_pulumi_up

runner = CliRunner()
SOVEREIGN = "s3nsapis.fr"


def project_with(tmp_path: Path, stack: str, config: dict[str, Any]) -> Path:
    """A project folder holding Pulumi.yaml and Pulumi.<stack>.yaml of these namespaced keys."""
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    values = {f"{PROJECT_NAME}:{k}": v for k, v in base_settings().items()}
    values.update(config)
    (tmp_path / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": values}))
    return tmp_path


def stack_config(stack: str, **config: Any) -> StackConfig:
    values: dict[str, Any] = {f"{PROJECT_NAME}:{k}": v for k, v in base_settings().items()}
    values.update(config)
    return StackConfig(stack=stack, values=values)


# --- The provider the program gives the component ------------------------------------------------


def test_another_universe_gets_the_programs_provider_for_it() -> None:
    plan = plan_stack(
        stack_config(
            "sov",
            **{
                "dicom-bq:universeDomain": SOVEREIGN,
                "gcp:project": "dicom-src-test",
                "gcp:region": "europe-west9",
                "gcp:userProjectOverride": "true",
                "gcp:notAProviderSetting": "x",
            },
        )
    )
    (provider,) = [r for r in plan.resources if r.type == "pulumi:providers:gcp"]
    assert provider.name == "dicom-bq-gcp"
    assert provider.parent is None
    # The universe, and the stack's gcp settings an explicit provider would not read otherwise.
    assert provider.inputs == {
        "universeDomain": SOVEREIGN,
        "project": "dicom-src-test",
        "region": "europe-west9",
        "userProjectOverride": "true",
    }
    gcp_resources = [r for r in plan.custom_resources() if r.type.startswith("gcp:")]
    assert gcp_resources
    assert {r.provider for r in gcp_resources} == {"dicom-bq-gcp"}
    # Other packages keep their own providers.
    assert {r.provider for r in plan.custom_resources() if r.type.startswith("time:")} == {None}


def test_googleapis_keeps_the_default_provider_and_every_registration() -> None:
    """A deployed stack's resources keep the provider they were made with: nothing to replace."""
    plan = plan_settings("dev", base_settings())
    assert not [r for r in plan.resources if r.type.startswith("pulumi:providers:")]
    assert {r.provider for r in plan.resources} == {None}


def test_a_stacks_secret_gcp_setting_stays_secret_in_its_provider() -> None:
    from dicom_bq.infra.program import stack_gcp_arguments

    pulumi.runtime.set_all_config({"gcp:accessToken": "ya29.token"}, ["gcp:accessToken"])
    try:
        arguments = stack_gcp_arguments({"gcp:accessToken": "ya29.token", "gcp:zone": "z"})
    finally:
        pulumi.runtime.set_all_config({}, [])
    assert arguments["zone"] == "z"
    assert isinstance(arguments["access_token"], pulumi.Output)
    assert not isinstance(arguments["zone"], pulumi.Output)


# --- Refused when gcp:universeDomain says another universe --------------------------------------


DISAGREEING = [
    ({}, {"gcp:universeDomain": SOVEREIGN}, "'googleapis.com' (the default)", SOVEREIGN),
    (
        {"dicom-bq:universeDomain": SOVEREIGN},
        {"gcp:universeDomain": "googleapis.com"},
        f"'{SOVEREIGN}'",
        "googleapis.com",
    ),
]


@pytest.mark.parametrize(("own", "gcp", "ours", "theirs"), DISAGREEING)
def test_plan_refuses_a_gcp_universe_that_disagrees_naming_both(
    tmp_path: Path, own: dict[str, str], gcp: dict[str, str], ours: str, theirs: str
) -> None:
    folder = project_with(tmp_path, "mixed", {**own, **gcp})
    result = runner.invoke(app, ["plan", "--stack", "mixed", "--project-dir", str(folder)])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    said = " ".join(result.output.split())
    assert f"dicom-bq:universeDomain is {ours} but gcp:universeDomain is '{theirs}'" in said
    assert f"`pulumi config set dicom-bq:universeDomain {theirs} --stack mixed`" in said
    wanted = ours.split("'")[1]
    assert f"`pulumi config set gcp:universeDomain {wanted} --stack mixed`" in said


def test_preflight_refuses_it_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    for variable in ("RESOURCEMANAGER_EMULATOR_HOST", "SERVICEUSAGE_EMULATOR_HOST"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")  # nothing listens: a request fails
    folder = project_with(tmp_path, "mixed", {"gcp:universeDomain": SOVEREIGN})
    result = runner.invoke(app, ["preflight", "--stack", "mixed", "--project-dir", str(folder)])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    said = " ".join(result.output.split())
    assert f"but gcp:universeDomain is '{SOVEREIGN}'" in said


def test_the_program_refuses_it_as_plan_does(monkeypatch: pytest.MonkeyPatch) -> None:
    config = engine_config(**{"gcp:universeDomain": SOVEREIGN})
    _, error = run_as_pulumi_up(monkeypatch, config)
    assert isinstance(error, pulumi.RunError)
    with pytest.raises(DicomBqError) as planned:
        plan_stack(stack_config("dev", **{"gcp:universeDomain": SOVEREIGN}))
    assert str(error).splitlines()[1:] == planned.value.message.splitlines()[1:]
    assert f"gcp:universeDomain is '{SOVEREIGN}'" in str(error)


@pytest.mark.parametrize(
    "config",
    [
        {"gcp:universeDomain": "googleapis.com"},
        {"gcp:universeDomain": ""},
        {"gcp:universeDomain": SOVEREIGN, "dicom-bq:universeDomain": SOVEREIGN},
    ],
)
def test_a_gcp_universe_that_agrees_is_fine(config: dict[str, str]) -> None:
    plan = plan_stack(stack_config("ok", **config))
    assert plan.gcp_provider is not None
    assert plan.gcp_provider.universe_domain == config.get(
        "dicom-bq:universeDomain", "googleapis.com"
    )


# --- plan and preflight say where the deployment goes ----------------------------------------


def test_plan_shows_the_universe_and_its_provider(tmp_path: Path) -> None:
    result = runner.invoke(app, ["plan", "--stack", "dev", "--project-dir", str(ROOT)])
    assert result.exit_code == 0, result.output
    assert "Universe: googleapis.com, through the stack's default gcp provider" in " ".join(
        result.stdout.split()
    )
    result = runner.invoke(
        app, ["plan", "--stack", "dev", "-f", "json", "--project-dir", str(ROOT)]
    )
    assert json.loads(result.stdout)["universe"] == {
        "universeDomain": "googleapis.com",
        "gcpProvider": "default",
    }

    folder = project_with(tmp_path, "sov", {"dicom-bq:universeDomain": SOVEREIGN})
    result = runner.invoke(app, ["plan", "--stack", "sov", "--project-dir", str(folder)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert f"Universe: {SOVEREIGN}, through the program's own gcp provider 'dicom-bq-gcp'" in text
    assert f"dicom-bq-gcp type: pulumi:providers:gcp universeDomain: {SOVEREIGN}" in text
    result = runner.invoke(
        app, ["plan", "--stack", "sov", "-f", "json", "--project-dir", str(folder)]
    )
    document = json.loads(result.stdout)
    assert document["universe"] == {"universeDomain": SOVEREIGN, "gcpProvider": "dicom-bq-gcp"}
    assert {r["provider"] for r in document["resources"] if r["type"].startswith("gcp:")} == {
        "dicom-bq-gcp"
    }
    result = runner.invoke(
        app, ["plan", "--stack", "sov", "-f", "markdown", "--project-dir", str(folder)]
    )
    assert f"Universe: {SOVEREIGN}, through the program's own gcp provider" in result.stdout


def test_preflight_shows_the_universe(cloud_for: Any) -> None:  # noqa: F811 - the fixture
    cloud_for(ready_for("dev"))
    result = runner.invoke(app, ["preflight", "--stack", "dev", "--project-dir", str(ROOT)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "universe: googleapis.com, through the stack's default gcp provider"
    )
    result = runner.invoke(
        app, ["preflight", "--stack", "dev", "--json", "--project-dir", str(ROOT)]
    )
    assert json.loads(result.stdout)["universe"] == {
        "universeDomain": "googleapis.com",
        "gcpProvider": "default",
    }
