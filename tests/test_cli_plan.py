"""`dicom-bq plan` as users run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.stack.render import wrap_value
from tests.inventory import ROOT

runner = CliRunner()


def test_plan_json_has_resources_and_grants() -> None:
    result = runner.invoke(
        app, ["plan", "--stack", "prod", "--format", "json", "--project-dir", str(ROOT)]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert {"resources", "grants"} <= document.keys()
    assert all({"role", "member", "scope"} <= grant.keys() for grant in document["grants"])
    types = {resource["type"] for resource in document["resources"]}
    assert "gcp:healthcare/dicomStore:DicomStore" in types


def test_plan_table_shows_grants() -> None:
    result = runner.invoke(app, ["plan", "--stack", "dev", "--project-dir", str(ROOT)])
    assert result.exit_code == 0, result.output
    assert "roles/bigquery.dataEditor" in result.stdout
    assert "service-123456789012@gcp-sa-healthcare" in result.stdout


def test_plan_markdown() -> None:
    result = runner.invoke(
        app, ["plan", "-s", "prod", "-f", "markdown", "--project-dir", str(ROOT)]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# dicom-bq plan: stack `prod`")
    assert "| `roles/bigquery.jobUser` |" in result.stdout


def _project(tmp_path: Path, stack_text: str) -> Path:
    (tmp_path / "Pulumi.yaml").write_text("name: dicom-bq\nruntime: python\n", encoding="utf-8")
    (tmp_path / "Pulumi.bad.yaml").write_text(stack_text, encoding="utf-8")
    return tmp_path


def test_bad_stack_config_exits_2_without_traceback(tmp_path: Path) -> None:
    folder = _project(
        tmp_path,
        "config:\n  dicom-bq:sourceProject: Bad_Project\n  dicom-bq:location: us-central1\n",
    )
    result = runner.invoke(app, ["plan", "--stack", "bad", "--project-dir", str(folder)])
    assert result.exit_code == 2
    assert "dicom-bq:sourceProject = 'Bad_Project' is not valid" in result.stderr
    assert "dicom-bq:dicomStoreId is required" in result.stderr
    assert "Traceback" not in result.output


def test_missing_stack_lists_the_stacks(tmp_path: Path) -> None:
    folder = _project(tmp_path, "config: {}\n")
    result = runner.invoke(app, ["plan", "--stack", "staging", "--project-dir", str(folder)])
    assert result.exit_code == 2
    assert "the stacks here are bad" in result.stderr


def test_broken_yaml_is_explained(tmp_path: Path) -> None:
    folder = _project(tmp_path, "config:\n  dicom-bq:sourceProject: [oops\n")
    result = runner.invoke(app, ["plan", "--stack", "bad", "--project-dir", str(folder)])
    assert result.exit_code == 2
    assert "not valid YAML" in result.stderr


def test_secret_values_are_refused(tmp_path: Path) -> None:
    folder = _project(tmp_path, "config:\n  dicom-bq:sourceProject:\n    secure: AAAbase64\n")
    result = runner.invoke(app, ["plan", "--stack", "bad", "--project-dir", str(folder)])
    assert result.exit_code == 2
    assert "secret" in result.stderr


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == "0.1.0"


def _plan_text(stack: str, columns: int, monkeypatch: pytest.MonkeyPatch) -> str:
    # CliRunner's stdout is not a terminal: this is `dicom-bq plan | less`, sized by COLUMNS.
    monkeypatch.setenv("COLUMNS", str(columns))
    result = runner.invoke(app, ["plan", "--stack", stack, "--project-dir", str(ROOT)])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_plan_fits_80_columns_with_every_name_whole(
    stack: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _plan_text(stack, 80, monkeypatch)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    document = json.loads(
        runner.invoke(
            app, ["plan", "--stack", stack, "--format", "json", "--project-dir", str(ROOT)]
        ).stdout
    )
    words = set(text.split())
    for resource in (r for r in document["resources"] if not r["component"]):
        assert resource["name"] in words
        assert resource["type"] in words
    for grant in document["grants"]:
        assert grant["role"] in words


def test_piped_plan_follows_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    wide = _plan_text("prod", 160, monkeypatch).splitlines()
    assert 80 < max(len(line) for line in wide) <= 160
    narrow = _plan_text("prod", 60, monkeypatch).splitlines()
    assert max(len(line) for line in narrow) <= 60
    assert len(narrow) > len(wide)


def test_a_value_breaks_only_after_a_separator() -> None:
    lines = wrap_value(
        "projects/clinical-kms-prod/locations/europe-west4/keyRings/imaging/cryptoKeys/bq",
        width=40,
        first="  cryptoKeyId: ",
        rest="      ",
    )
    assert lines == [
        "  cryptoKeyId: projects/",
        "      clinical-kms-prod/locations/",
        "      europe-west4/keyRings/imaging/",
        "      cryptoKeys/bq",
    ]
    assert wrap_value("x" * 12, width=10, first="k: ", rest="  ") == ["k: xxxxxxx", "  xxxxx"]
