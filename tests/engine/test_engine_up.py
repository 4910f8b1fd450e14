"""`dicom-bq up` end to end with the real Pulumi CLI: `pulumi up` (policy pack included) against
the stand-in providers, `pulumi stack output --json`, then `verify` against the project's fakes
(Healthcare, BigQuery, the storage emulator) and Orthanc."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import STORE, Cloud
from tests.engine.harness import Workspace, fakes_workspace, up_fakes

pytestmark = pytest.mark.engine


@pytest.fixture
def engine_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    return fakes_workspace(tmp_path / "project", monkeypatch)


def test_up_deploys_with_the_real_engine_then_verifies(
    cloud: Cloud, engine_workspace: Workspace
) -> None:
    result = up_fakes(engine_workspace)
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
