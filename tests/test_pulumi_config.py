"""Pulumi's own config rules, applied to the real Pulumi.yaml and every stack file in the repo.

The rules and messages are the engine's (pulumi/pulumi sdk/go/common/workspace/config.go,
mergeConfig and validateStackConfigValue; project.go, Project.Validate): the mocks never apply
them, so `dicom-bq plan` reproduces them and these tests pin the reproduction.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.errors import DicomBqError
from dicom_bq.infra import project_config
from dicom_bq.stack.config import available_stacks, read_stack_config
from dicom_bq.stack.plan import plan_stack
from dicom_bq.vocabulary.settings import project_config_schema, required_keys
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
        f"Pulumi.yaml's config block drifted from dicom_bq/vocabulary/settings.py: run "
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


# --- the engine's reading of a stack file (tests/engine/test_config_engine.py checks each of these
# against the real engine on a corpus; these pin them without it) ------------------------------

REQUIRED_YAML = "".join(f"  {key}: {value}\n" for key, value in REQUIRED.items())


def write_raw(folder: Path, stack: str, text: str) -> None:
    """A stack file exactly as written (yaml.safe_dump cannot write a duplicate key)."""
    (folder / f"Pulumi.{stack}.yaml").write_text(text, encoding="utf-8")


def read_raw(folder: Path, stack: str, extra: str) -> Any:
    write_raw(folder, stack, "config:\n" + REQUIRED_YAML + extra)
    return read_stack_config(folder, stack, use_cli=False)


def test_a_number_in_an_array_of_strings_is_refused_like_the_engine(project: Path) -> None:
    # validateStackConfigValue decodes an array value as JSON: 2024 is a number, not a string.
    with pytest.raises(DicomBqError) as error:
        read_raw(project, "years", "  dicom-bq:streamTables: [2024]\n")
    assert error.value.message == (
        "Stack 'years' with configuration key 'streamTables' must be of type 'array<string>'"
    )
    quoted = read_raw(project, "quoted", "  dicom-bq:streamTables: ['2024']\n")
    assert quoted.values["dicom-bq:streamTables"] == ["2024"]


@pytest.mark.parametrize(
    "items", ["[instances, ~]", "[true]", "[[instances]]", "[{table: t}]", "[EU, 1.5]"]
)
def test_every_item_of_an_array_must_be_of_its_type(project: Path, items: str) -> None:
    with pytest.raises(DicomBqError, match="must be of type 'array<string>'"):
        read_raw(project, "items", f"  dicom-bq:allowedBigqueryLocations: {items}\n")


@pytest.mark.processes
def test_plan_refuses_a_number_in_an_array_cleanly(project: Path) -> None:
    # A real process: what it prints at exit counts too (an event loop left open printed
    # "ValueError: Invalid file descriptor: -1" there).
    write_raw(project, "years", "config:\n" + REQUIRED_YAML + "  dicom-bq:streamTables: [2024]\n")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dicom-bq"), "plan", "--stack", "years"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "configuration key 'streamTables' must be of type 'array<string>'" in done.stderr
    assert "Traceback" not in done.stderr
    assert "Invalid file descriptor" not in done.stderr
    assert "Exception ignored" not in done.stderr


def test_an_unnamespaced_stack_key_belongs_to_the_project(project: Path) -> None:
    # stackConfigNamespacedWithProject: `protected` in a stack file is `dicom-bq:protected`.
    write_raw(
        project,
        "flat",
        "config:\n"
        + "".join(f"  {k.split(':')[1]}: {v}\n" for k, v in REQUIRED.items())
        + "  protected: true\n  gcp:project: p\n",
    )
    config = read_stack_config(project, "flat", use_cli=False)
    assert config.own()["sourceProject"] == "dicom-src-test"
    assert config.values["dicom-bq:protected"] == "true"
    assert config.values["gcp:project"] == "p"
    assert plan_stack(config).settings is not None


def test_an_unnamespaced_stack_key_is_type_checked(project: Path) -> None:
    with pytest.raises(DicomBqError) as error:
        read_raw(project, "flat", "  protected: maybe\n")
    assert error.value.message == (
        "Stack 'flat' with configuration key 'protected' must be of type 'boolean'"
    )


def test_the_old_ns_config_name_spelling_is_the_same_key(project: Path) -> None:
    config = read_raw(project, "old", "  dicom-bq:config:protected: true\n")
    assert config.values["dicom-bq:protected"] == "true"
    assert "dicom-bq:config:protected" not in config.values


@pytest.mark.parametrize(("key", "shown"), [("a:b:c", "a:b:c"), ("1", "1")])
def test_a_key_the_engine_cannot_parse_is_refused_with_its_message(
    project: Path, key: str, shown: str
) -> None:
    with pytest.raises(DicomBqError, match="should be of the form `<namespace>:<name>`") as error:
        read_raw(project, "keys", f"  {key}: x\n")
    assert f"could not parse {shown} as a configuration key" in error.value.message


@pytest.mark.parametrize("spelling", ["True", "TRUE", "true", '"true"'])
def test_yaml_v3_booleans_are_accepted(project: Path, spelling: str) -> None:
    config = read_raw(project, "bools", f"  dicom-bq:protected: {spelling}\n")
    assert config.values["dicom-bq:protected"] == "true"
    if spelling == "True":  # the program reads it as the engine hands it over
        plan = plan_stack(config)
        assert plan.settings is not None
        assert plan.settings.protected is True


@pytest.mark.parametrize("spelling", ["yes", "on", "Y", "1", '"True"', "[true]"])
def test_yaml_1_1_booleans_are_text_and_refused(project: Path, spelling: str) -> None:
    with pytest.raises(DicomBqError, match="'protected' must be of type 'boolean'"):
        read_raw(project, "bools", f"  dicom-bq:protected: {spelling}\n")


def test_yes_and_on_in_a_string_key_stay_as_written(project: Path) -> None:
    config = read_raw(project, "words", "  dicom-bq:timeZone: yes\n  dicom-bq:snapshotTable: on\n")
    assert config.values["dicom-bq:timeZone"] == "yes"
    assert config.values["dicom-bq:snapshotTable"] == "on"


@pytest.mark.parametrize("spelling", ["null", "~", "", "Null", "NULL"])
def test_a_null_value_is_empty_with_the_engines_warning(project: Path, spelling: str) -> None:
    config = read_raw(project, "nulls", f"  dicom-bq:filterBucket: {spelling}\n")
    assert config.values["dicom-bq:filterBucket"] == ""
    assert config.notes == [
        'No value for configuration key "dicom-bq:filterBucket". This is currently treated as '
        'an empty string `""`, but will be treated as `null` in a future version of pulumi. '
        'Set the value to `""` to avoid this warning.'
    ]
    if spelling != "null":
        return
    plan = plan_stack(config)
    assert plan.settings is not None
    assert plan.settings.filter_bucket is None  # no grant on a bucket named "null"
    assert not [g for g in plan.grants if g["role"] == "roles/storage.objectViewer"]
    assert any("No value for configuration key" in note for note in plan.notes)


def test_several_null_values_share_one_warning(project: Path) -> None:
    config = read_raw(
        project, "nulls", "  dicom-bq:filterBucket: ~\n  notificationTopic:\n  gcp:x: null\n"
    )
    (note,) = config.notes
    assert note.startswith(
        'No value for configuration keys "dicom-bq:filterBucket", "dicom-bq:notificationTopic", '
        '"gcp:x". '
    )
    assert 'Set the values to `""`' in note


def test_a_quoted_null_is_text(project: Path) -> None:
    config = read_raw(project, "text", '  dicom-bq:filterBucket: "null"\n')
    assert config.values["dicom-bq:filterBucket"] == "null"
    assert config.notes == []


@pytest.mark.parametrize(
    ("extra", "line", "key", "first"),
    [
        ("  dicom-bq:location: europe-west4\n", 7, "dicom-bq:location", 3),
        ('  "dicom-bq:sourceProject": other\n', 7, "dicom-bq:sourceProject", 2),
        ("  dicom-bq:labels:\n    env: a\n    env: b\n", 9, "env", 8),
    ],
)
def test_a_duplicate_key_is_refused_with_the_engines_message(
    project: Path, extra: str, line: int, key: str, first: int
) -> None:
    with pytest.raises(DicomBqError) as error:
        read_raw(project, "twice", extra)
    assert (
        f'yaml: unmarshal errors:\n  line {line}: mapping key "{key}" already defined at line '
        f"{first}"
    ) in error.value.message


def test_yaml_v3_numbers_and_dates_reach_the_program_as_the_engine_writes_them(
    project: Path,
) -> None:
    config = read_raw(
        project,
        "spellings",
        "  dicom-bq:sourceProjectNumber: 0x1F\n"
        "  dicom-bq:destinationProjectNumber: 017\n"
        "  dicom-bq:iamPropagationWait: 1e3\n"
        "  dicom-bq:snapshotRegion: -0.0\n"
        "  dicom-bq:timeZone: 2024-01-05\n"
        "  gcp:big: 123456789012345678901\n"
        "  gcp:small: 1e-7\n"
        "  gcp:text: !!str 0x1F\n",
    )
    assert config.values["dicom-bq:sourceProjectNumber"] == "31"
    assert config.values["dicom-bq:destinationProjectNumber"] == "15"
    assert config.values["dicom-bq:iamPropagationWait"] == "1000"
    assert config.values["dicom-bq:snapshotRegion"] == "0"
    assert config.values["dicom-bq:timeZone"] == "2024-01-05 00:00:00 +0000 UTC"
    assert config.values["gcp:big"] == "123456789012345680000"
    assert config.values["gcp:small"] == "1e-7"
    assert config.values["gcp:text"] == "0x1F"


def test_values_inside_a_map_keep_their_yaml_types(project: Path) -> None:
    config = read_raw(
        project,
        "labels",
        "  dicom-bq:labels: {env: dev, count: 1, ratio: 1.5, flag: true, none: null, 1: one}\n",
    )
    labels = config.values["dicom-bq:labels"]
    assert labels == {
        "env": "dev",
        "count": 1,
        "ratio": 1.5,
        "flag": True,
        "none": None,
        "1": "one",
    }
    assert isinstance(labels["count"], int)
    assert labels["flag"] is True


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (".inf", "json: unsupported value: +Inf"),
        (
            "[.nan]",
            "json: error calling MarshalJSON for type config.object: json: unsupported value: NaN",
        ),
        ("!!int abc", "yaml: cannot decode !!str `abc` as a !!int"),
    ],
)
def test_a_value_the_engine_cannot_read_is_refused(project: Path, value: str, message: str) -> None:
    with pytest.raises(DicomBqError) as error:
        read_raw(project, "unreadable", f"  dicom-bq:labels: {value}\n")
    assert message in error.value.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- config\n", "expected project to be an object, was '[]interface {}'"),
        ("1: x\nconfig: {}\n", "expected only string keys, got '%!s(int=1)'"),
        ("config:\n  - a\n", "line 2: cannot unmarshal !!seq into map[string]config.Value"),
        ("config: hello\n", "line 1: cannot unmarshal !!str `hello` into map[string]config.Value"),
    ],
)
def test_a_file_of_the_wrong_shape_is_refused_with_the_engines_message(
    project: Path, text: str, message: str
) -> None:
    write_raw(project, "shape", text)
    with pytest.raises(DicomBqError) as error:
        read_stack_config(project, "shape", use_cli=False)
    assert message in error.value.message


# Made with `pulumi config set --secret` (PULUMI_CONFIG_PASSPHRASE=dicom-bq-config-corpus), as in
# tests/engine/config_corpus/secrets.yaml.
SALT = "v1:/XanppKndZs=:v1:y3oMAz2diBKKUYrO:TdktWa0qrZlGg81eqVNhEwEi+c4Prg=="
FILTERS = "v1:yl+cqDvGPLX+yt3K:i7xjeKJB+6QFV3fPD8eUnTWE45NMcnh7LxIuEAlP"  # corpus-filters


def test_a_passphrase_secret_is_decrypted_like_the_engine_does(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "dicom-bq-config-corpus")
    write_raw(
        project,
        "secret",
        f"encryptionsalt: {SALT}\nconfig:\n{REQUIRED_YAML}"
        f"  dicom-bq:filterBucket:\n    secure: {FILTERS}\n"
        f"  dicom-bq:labels:\n    team:\n      secure: {FILTERS}\n",
    )
    config = read_stack_config(project, "secret", use_cli=False)
    assert config.values["dicom-bq:filterBucket"] == "corpus-filters"
    assert config.values["dicom-bq:labels"] == {"team": "corpus-filters"}
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "not-it")
    with pytest.raises(DicomBqError, match="incorrect passphrase"):
        read_stack_config(project, "secret", use_cli=False)


def test_a_secret_that_cannot_be_decrypted_offline_is_explained(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    write_raw(
        project,
        "secret",
        f"encryptionsalt: {SALT}\nconfig:\n{REQUIRED_YAML}"
        f"  dicom-bq:filterBucket:\n    secure: {FILTERS}\n",
    )
    with pytest.raises(DicomBqError, match="PULUMI_CONFIG_PASSPHRASE"):
        read_stack_config(project, "secret", use_cli=False)


def test_project_types_follow_the_engine(project: Path) -> None:
    # Integer: a whole float or integer text passes; object: a map; nested arrays are checked.
    pulumi_yaml = project / "Pulumi.yaml"
    document = yaml.safe_load(pulumi_yaml.read_text(encoding="utf-8"))
    document["config"].update(
        retries={"type": "integer", "default": 3},
        options={"type": "object", "default": {}},
        matrix={"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
    )
    document["config"]["matrix"]["default"] = []
    pulumi_yaml.write_text(yaml.safe_dump(document), encoding="utf-8")
    config = read_raw(
        project,
        "typed",
        "  dicom-bq:retries: 1.0\n  dicom-bq:options: {depth: 2}\n"
        '  dicom-bq:matrix: [[1, 2.0], ["3"]]\n',
    )
    assert config.values["dicom-bq:retries"] == "1"
    assert config.values["dicom-bq:options"] == {"depth": 2}
    assert config.values["dicom-bq:matrix"] == [[1, 2], ["3"]]
    for extra, kind in [
        ("  dicom-bq:retries: 1.5\n", "integer"),
        ("  dicom-bq:retries: true\n", "integer"),
        ("  dicom-bq:options: [depth]\n", "object"),
        ("  dicom-bq:matrix: [[1.5]]\n", "array<array<integer>>"),
    ]:
        with pytest.raises(DicomBqError, match=f"must be of type '{re.escape(kind)}'"):
            read_raw(project, "typed", extra)


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
