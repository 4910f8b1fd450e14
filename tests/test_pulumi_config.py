"""Pulumi's own config rules, applied to the real Pulumi.yaml and every stack file in the repo.

The rules and messages are the engine's (pulumi/pulumi sdk/go/common/workspace/config.go,
mergeConfig and validateStackConfigValue; project.go, Project.Validate): the mocks never apply
them, so `dicom-bq plan` reproduces them and these tests pin the reproduction.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.errors import DicomBqError
from dicom_bq.infra import project_config
from dicom_bq.infra.settings import project_config_schema, required_keys
from dicom_bq.stack.config import available_stacks, read_stack_config
from dicom_bq.stack.plan import plan_stack
from tests.inventory import ROOT

runner = CliRunner()
REQUIRED = {
    "dicom-bq:sourceProject": "dicom-src-test",
    "dicom-bq:location": "us-central1",
    "dicom-bq:healthcareDatasetId": "imaging",
    "dicom-bq:dicomStoreId": "dicom",
    "dicom-bq:bigqueryDatasetId": "dicom_metadata",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the real project files (Pulumi.yaml and the stacks) to change one thing in."""
    for path in ROOT.glob("Pulumi*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def write_stack(folder: Path, stack: str, config: dict[str, Any], **extra: Any) -> None:
    document = {"config": config, **extra}
    (folder / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")


def test_pulumi_yaml_is_generated_from_the_settings_model() -> None:
    current = (ROOT / "Pulumi.yaml").read_text(encoding="utf-8")
    assert project_config.render(current) == current, (
        f"Pulumi.yaml's config block drifted from dicom_bq/infra/settings.py: run "
        f"`{project_config.REGENERATE}` and review the diff"
    )


def test_only_required_settings_lack_a_default() -> None:
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text(encoding="utf-8"))["config"]
    without_default = sorted(k for k, v in declared.items() if "default" not in v)
    # The store is required in one of two forms (dicomStoreId or the undeclarable list
    # dicomStores): the program checks that, so Pulumi.yaml gives dicomStoreId a default.
    engine_required = sorted(k.split(":")[1] for k in REQUIRED if k != "dicom-bq:dicomStoreId")
    assert without_default == required_keys() == engine_required


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda c: c["timeZone"].pop("default"), id="default removed"),
        pytest.param(lambda c: c.update(newKey={"type": "string"}), id="key added"),
        pytest.param(lambda c: c["protected"].update(type="string"), id="type changed"),
        pytest.param(lambda c: c.pop("filterBucket"), id="key removed"),
    ],
)
def test_a_hand_edited_pulumi_yaml_is_caught(edit: Any) -> None:
    document = yaml.safe_load((ROOT / "Pulumi.yaml").read_text(encoding="utf-8"))
    edit(document["config"])
    assert document["config"] != project_config_schema()


@pytest.mark.parametrize("stack", available_stacks(ROOT))
def test_every_stack_in_the_repo_passes_pulumis_rules(stack: str) -> None:
    config = read_stack_config(ROOT, stack, use_cli=False)
    assert config.own()["sourceProject"]
    plan_stack(config)


def test_a_stack_of_only_the_required_keys_deploys(project: Path) -> None:
    write_stack(project, "minimal", dict(REQUIRED))
    config = read_stack_config(project, "minimal", use_cli=False)
    # Pulumi.yaml's defaults fill in the rest, as the engine's mergeConfig does.
    assert config.values["dicom-bq:timeZone"] == "UTC"
    assert config.values["dicom-bq:protected"] == "false"
    assert config.values["dicom-bq:streamTables"] == []
    plan = plan_stack(config)
    assert plan.settings is not None
    assert plan.settings.notification_topic is None
    assert plan.settings.iam_propagation_wait == 120


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        (["dicom-bq:location"], "Stack 'bare' is missing configuration value 'location'"),
        (
            ["dicom-bq:location", "dicom-bq:sourceProject"],
            "Stack 'bare' is missing configuration values 'location' and 'sourceProject'",
        ),
        (
            ["dicom-bq:location", "dicom-bq:sourceProject", "dicom-bq:healthcareDatasetId"],
            "Stack 'bare' is missing configuration values 'healthcareDatasetId', 'location' and "
            "'sourceProject'",
        ),
    ],
)
def test_a_missing_required_key_fails_with_pulumis_message(
    project: Path, drop: list[str], message: str
) -> None:
    write_stack(project, "bare", {k: v for k, v in REQUIRED.items() if k not in drop})
    with pytest.raises(DicomBqError) as error:
        read_stack_config(project, "bare", use_cli=False)
    assert error.value.message.startswith(message)


@pytest.mark.parametrize(
    ("key", "value", "type_name"),
    [
        ("dicom-bq:protected", "yes", "boolean"),
        ("dicom-bq:protected", "True", "boolean"),
        ("dicom-bq:streamTables", "instances", "array<string>"),
        ("dicom-bq:streamTables", [["nested"]], "array<string>"),
        ("dicom-bq:sourceProject", ["a", "b"], "string"),
    ],
)
def test_a_value_of_the_wrong_type_fails_with_pulumis_message(
    project: Path, key: str, value: Any, type_name: str
) -> None:
    write_stack(project, "typed", {**REQUIRED, key: value})
    with pytest.raises(DicomBqError) as error:
        read_stack_config(project, "typed", use_cli=False)
    written = key.split(":")[1]
    assert error.value.message == (
        f"Stack 'typed' with configuration key '{written}' must be of type '{type_name}'"
    )


def test_values_are_read_as_text_like_the_engine(project: Path) -> None:
    # YAML 123456789012 and "123456789012" are the same string to Pulumi (config/value.go).
    write_stack(
        project, "text", {**REQUIRED, "dicom-bq:sourceProjectNumber": 123456789012, "x:y": True}
    )
    config = read_stack_config(project, "text", use_cli=False)
    assert config.values["dicom-bq:sourceProjectNumber"] == "123456789012"
    assert config.values["x:y"] == "true"


def test_project_level_value_and_default_yield_to_the_stack(project: Path) -> None:
    pulumi_yaml = project / "Pulumi.yaml"
    document = yaml.safe_load(pulumi_yaml.read_text(encoding="utf-8"))
    document["config"]["location"] = {"type": "string", "default": "europe-west4"}
    document["config"]["gcp:project"] = {"value": "shared-project"}
    pulumi_yaml.write_text(yaml.safe_dump(document), encoding="utf-8")
    write_stack(project, "inherit", {k: v for k, v in REQUIRED.items() if "location" not in k})
    inherited = read_stack_config(project, "inherit", use_cli=False)
    assert inherited.values["dicom-bq:location"] == "europe-west4"
    assert inherited.values["gcp:project"] == "shared-project"
    write_stack(project, "override", {**REQUIRED, "gcp:project": "mine"})
    overridden = read_stack_config(project, "override", use_cli=False)
    assert overridden.values["dicom-bq:location"] == "us-central1"
    assert overridden.values["gcp:project"] == "mine"


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        ({"gcp:project": {"type": "string", "value": "p"}}, "should not define a type"),
        ({"gcp:project": {"default": "p"}}, "should not define a default value"),
        ({"gcp:project": {"description": "x"}}, "must provide an attribute 'value'"),
        ({"timeZone": {"type": "string", "default": "UTC", "value": "UTC"}}, "cannot have both"),
        ({"streamTables": {"type": "array"}}, "does not specify the underlying type"),
        ({"protected": {"type": "boolean", "default": "maybe"}}, "not of the expected type"),
    ],
)
def test_a_pulumi_yaml_the_engine_refuses_is_refused(
    project: Path, declaration: dict[str, Any], message: str
) -> None:
    pulumi_yaml = project / "Pulumi.yaml"
    document = yaml.safe_load(pulumi_yaml.read_text(encoding="utf-8"))
    document["config"].update(declaration)
    pulumi_yaml.write_text(yaml.safe_dump(document), encoding="utf-8")
    with pytest.raises(DicomBqError, match=message):
        read_stack_config(project, "dev", use_cli=False)


def test_an_unnamespaced_stack_key_is_refused_like_pulumi(project: Path) -> None:
    write_stack(project, "flat", {**REQUIRED, "protected": True})
    with pytest.raises(DicomBqError, match="should be of the form `<namespace>:<name>`"):
        read_stack_config(project, "flat", use_cli=False)


def test_undeclared_keys_pass_the_engine_but_not_the_program(project: Path) -> None:
    write_stack(project, "typo", {**REQUIRED, "dicom-bq:filterBuckt": "my-filters"})
    config = read_stack_config(project, "typo", use_cli=False)  # the engine lets it through
    with pytest.raises(DicomBqError, match="did you mean 'filterBucket'"):
        plan_stack(config)


def test_an_esc_environment_is_planned_with_a_note(project: Path) -> None:
    write_stack(
        project,
        "esc",
        {k: v for k, v in REQUIRED.items() if "sourceProject" not in k},
        environment=["imaging/prod"],
    )
    config = read_stack_config(project, "esc", use_cli=False)
    assert config.environments == ["imaging/prod"]
    (note,) = config.notes
    assert "imaging/prod" in note
    assert "'sourceProject' may come from them" in note


FAKE_PULUMI = """#!/usr/bin/env bash
# Stands in for the Pulumi CLI as the Automation API drives it (pulumi/automation/_cmd.py,
# _local_workspace.py): `version`, then with --non-interactive first, `stack select --stack S`
# and `config --show-secrets --json --stack S`.
echo "$*" >> "$FAKE_PULUMI_LOG"
[ "$1" = "--non-interactive" ] && shift
case "$1" in
  version) echo "v3.200.0" ;;
  stack) exit 0 ;;
  config) cat "$FAKE_PULUMI_CONFIG" ;;
  *) exit 64 ;;
esac
"""


def test_an_esc_environment_is_resolved_by_the_cli_when_there_is_one(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pulumi").write_text(FAKE_PULUMI, encoding="utf-8")
    (bin_dir / "pulumi").chmod(0o755)
    merged = {key: {"value": value, "secret": False} for key, value in REQUIRED.items()}
    merged["dicom-bq:streamTables"] = {"value": '["from_esc"]', "secret": False}
    (tmp_path / "config.json").write_text(json.dumps(merged), encoding="utf-8")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PULUMI_CONFIG", str(tmp_path / "config.json"))
    monkeypatch.setenv("FAKE_PULUMI_LOG", str(tmp_path / "calls.log"))
    write_stack(project, "esc", {"dicom-bq:location": "us-central1"}, environment=["img/prod"])
    config = read_stack_config(project, "esc")
    assert config.resolved_by_cli
    assert config.own()["streamTables"] == ["from_esc"]
    assert "config --show-secrets --json --stack esc" in (tmp_path / "calls.log").read_text()
    assert plan_stack(config).settings is not None


def test_plan_cli_shows_pulumis_message_and_exit_2(project: Path) -> None:
    write_stack(project, "bare", {k: v for k, v in REQUIRED.items() if "location" not in k})
    result = runner.invoke(app, ["plan", "--stack", "bare", "--project-dir", str(project)])
    assert result.exit_code == 2
    assert "Stack 'bare' is missing configuration value 'location'" in result.stderr
    assert "Traceback" not in result.output


def test_plan_cli_warns_about_a_near_miss_namespace(project: Path) -> None:
    write_stack(project, "ns", {**REQUIRED, "dicombq:protected": "true"})
    result = runner.invoke(
        app, ["plan", "--stack", "ns", "--format", "json", "--project-dir", str(project)]
    )
    assert result.exit_code == 0, result.output
    assert "did you mean 'dicom-bq:protected'" in result.stderr
    assert json.loads(result.stdout)["notes"]
