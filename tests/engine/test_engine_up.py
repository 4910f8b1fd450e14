"""`dicom-bq up` end to end with the real Pulumi CLI: `pulumi up` (policy pack included) against
the stand-in providers, `pulumi stack output --json`, then `verify` against the project's fakes
(Healthcare, BigQuery, the storage emulator) and Orthanc."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dicom_bq.cli import app
from tests.conftest import FILTER_BUCKET, STORE, Cloud, base_settings
from tests.engine.harness import Workspace, engine_env

pytestmark = pytest.mark.engine
runner = CliRunner()


@pytest.fixture
def engine_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """A workspace whose stack `fakes` names what the fakes serve; the engine's variables set in
    this process, since `dicom-bq up` runs `pulumi` with its own environment."""
    workspace = Workspace.create(tmp_path / "project")
    for key, value in engine_env().items():
        if key.startswith("PULUMI_") or key == "PATH":
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("PULUMI_BACKEND_URL", workspace.env["PULUMI_BACKEND_URL"])
    # The stand-in's project numbers agree with the stack's (it looks them up like Google).
    monkeypatch.setenv("DICOM_BQ_STANDIN_PROJECTS", json.dumps({"dicom-src-test": "111122223333"}))
    settings = base_settings(filterBucket=FILTER_BUCKET, iamPropagationWait="5s")
    config = {"gcp:project": "dicom-src-test"}
    config.update({f"dicom-bq:{key}": value for key, value in settings.items()})
    workspace.write_stack("fakes", yaml.safe_dump({"config": config}))
    workspace.init("fakes")
    return workspace


def test_up_deploys_with_the_real_engine_then_verifies(
    cloud: Cloud, engine_workspace: Workspace
) -> None:
    result = runner.invoke(
        app,
        [
            "up",
            "--stack",
            "fakes",
            "--yes",
            "--skip-preflight",
            "--project-dir",
            str(engine_workspace.path),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True, report
    steps = [s["step"] for s in report["steps"]]
    assert steps[-2:] == ["query", "cleanup"], steps
    # The engine really deployed: the outputs verify read name the stack's store.
    outputs = json.loads(engine_workspace.pulumi("stack", "output", "--json", stack="fakes").stdout)
    assert outputs["dicomStoreName"] == STORE
    # The policy pack ran inside `pulumi up`, under the engine's analyzer.
    assert "dicom-bq@v" in result.stderr
