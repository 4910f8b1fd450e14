"""`dicom-bq plan` as users run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.stack.render import wrap_value
from tests.inventory import ROOT
from tests.test_expected_grants import EXPECTED_GRANTS

runner = CliRunner()


def test_plan_json_has_resources_and_grants() -> None:
    result = runner.invoke(
        app, ["plan", "--stack", "prod", "--format", "json", "--project-dir", str(ROOT)]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert {"resources", "grants"} <= document.keys()
    # Exactly the hand-written list (tests/test_expected_grants.py), not merely well-formed
    # entries: an empty or shortened list fails.
    shown = sorted((g["role"], g["member"], g["scope"]) for g in document["grants"])
    assert shown == sorted(EXPECTED_GRANTS["prod"])
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


def write_generated_project(folder: Path) -> Path:
    """A project folder with the generated stacks of tests/stacks.py INVENTORIED as stack files
    (namespaced dicom-bq: keys), so the CLI plans them as users' stacks."""
    import yaml

    from tests.stacks import INVENTORIED

    (folder / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text("utf-8"), "utf-8")
    for stack, settings in INVENTORIED.items():
        config = {f"dicom-bq:{key}": value for key, value in settings().items()}
        (folder / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}), "utf-8")
    return folder


def _generated_plan(folder: Path, stack: str, *options: str) -> str:
    result = runner.invoke(app, ["plan", "--stack", stack, "--project-dir", str(folder), *options])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_plan_shows_the_key_inputs_of_operations_resources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    text = _generated_plan(write_generated_project(tmp_path), "operations")
    assert max(len(line) for line in text.splitlines()) <= 80
    # A resource's block: its name, then its fields. An alert policy and its log metric share
    # a name, so a block is found by name and type.
    blocks = {
        (block.split("\n", 1)[0], block.split("\n")[1].removeprefix("  type: ")): block
        for block in text.split("\n\n")
        if block.count("\n") > 1
    }
    job = blocks["dicom-bq-snapshot-job-clinical", "gcp:cloudscheduler/job:Job"].splitlines()
    for line in (
        "  schedule: 0 2 * * *",
        "  timeZone: Europe/Paris",
        "  calls: POST https://healthcare.googleapis.com/v1/projects/dicom-src-test/",
        "      locations/us-central1/datasets/imaging/dicomStores/clinical:export",
        "  oauthScope: https://www.googleapis.com/auth/cloud-platform",
        "  retryCount: 0",
    ):
        assert line in job
    role = blocks["dicom-bq-snapshot-role", "gcp:projects/iAMCustomRole:IAMCustomRole"]
    assert "  permissions: healthcare.dicomStores.export" in role.splitlines()
    account = blocks["dicom-bq-snapshot-account", "gcp:serviceaccount/account:Account"]
    assert "  accountId: dicom-bq-snapshot-" in account
    channel = blocks[
        "dicom-bq-alerts-email-0", "gcp:monitoring/notificationChannel:NotificationChannel"
    ]
    assert "  email: oncall@example.org" in channel.splitlines()
    policy = blocks[
        "dicom-bq-alerts-export_errors-clinical", "gcp:monitoring/alertPolicy:AlertPolicy"
    ]
    assert "  displayName: dicom-bq: export errors on DICOM store clinical" in policy.splitlines()
    metric = blocks["dicom-bq-alerts-export_errors-clinical", "gcp:logging/metric:Metric"]
    assert "  name: dicom_bq/export_errors/us-central1/imaging/clinical" in metric.splitlines()
    assert '  filter: resource.type="healthcare_dicom_store" AND' in metric.splitlines()


def test_the_plan_shows_bulk_import_notifications_and_store_labels(tmp_path: Path) -> None:
    text = _generated_plan(write_generated_project(tmp_path), "three-stores")
    research = next(b for b in text.split("\n\n") if b.startswith("dicom-bq-dicom-store-research"))
    assert "  labels: env=test, team=research" in research.splitlines()
    assert "  notify: projects/dicom-src-test/topics/research-instances" in research.splitlines()
    assert "  sendForBulkImport: true" in research.splitlines()


def test_markdown_key_inputs_keep_spaces_and_asterisks_as_code(tmp_path: Path) -> None:
    text = _generated_plan(write_generated_project(tmp_path), "operations", "-f", "markdown")
    job_row = next(line for line in text.splitlines() if "`dicom-bq-snapshot-job-archive`" in line)
    assert "schedule: `0 2 * * *`<br>timeZone: `Europe/Paris`" in job_row
    assert "retryCount: `0`" in job_row


def test_planning_the_same_stack_twice_gives_identical_json(tmp_path: Path) -> None:
    # Pulumi's SDK registers resources from a thread pool as their inputs resolve
    # (pulumi/runtime/resource.py, register_resource): arrival order differs run to run.
    folder = write_generated_project(tmp_path)
    first = _generated_plan(folder, "operations", "-f", "json")
    for _ in range(3):
        assert _generated_plan(folder, "operations", "-f", "json") == first


def test_the_plan_lists_dependencies_first_then_by_type_and_name(tmp_path: Path) -> None:
    document = json.loads(
        _generated_plan(write_generated_project(tmp_path), "operations", "-f", "json")
    )
    resources = document["resources"]
    # depends_on and parent are names, and an alert policy shares its log metric's name: a name
    # stands for its first resource, the one every resource of that name may depend on.
    position: dict[str, int] = {}
    depth: dict[str, int] = {}
    keys = []
    for index, r in enumerate(resources):
        before = [*r["depends_on"], *([r["parent"]] if r["parent"] else [])]
        assert all(name in position for name in before), r["name"]
        own_depth = 1 + max((depth[name] for name in before), default=-1)
        position.setdefault(r["name"], index)
        depth.setdefault(r["name"], own_depth)
        keys.append((own_depth, r["type"], r["name"]))
    assert keys == sorted(keys)
