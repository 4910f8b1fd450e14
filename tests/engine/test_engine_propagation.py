"""`dicom-bq up` recovers from propagation under the real engine: the stand-in gcp provider fails
a resource's first creates with the error Google gives while IAM (a streaming store's 403) or a
new log metric (an alert policy's 404) propagates; `up` reads the engine's event log, waits on
the virtual clock and runs `pulumi up` again. Any other failure stops at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cloud
from tests.engine.harness import Workspace, fakes_workspace, up_fakes

pytestmark = pytest.mark.engine


def _workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, faults: list[dict[str, Any]], **settings: Any
) -> Workspace:
    monkeypatch.setenv("DICOM_BQ_STANDIN_FAULTS", json.dumps(faults))
    monkeypatch.setenv("DICOM_BQ_STANDIN_STATE_DIR", str(tmp_path / "standin-state"))
    (tmp_path / "standin-state").mkdir()
    return fakes_workspace(tmp_path / "project", monkeypatch, **settings)


def test_a_streaming_store_refused_while_iam_propagates_is_created_on_a_later_run(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = _workspace(
        tmp_path,
        monkeypatch,
        [{"name": "dicom-bq-dicom-store", "times": 2}],
        streamTables=["instances_stream"],
    )
    result = up_fakes(workspace)
    assert result.exit_code == 0, result.stderr[-4000:]
    deployment = json.loads(result.stdout)["deployment"]
    assert deployment["attempts"] == 3
    assert cloud.clock.sleeps[:2] == [30, 60]
    assert "failed to verify dataset" in result.stderr


def test_a_store_that_never_recovers_gives_up_at_googles_bound(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = _workspace(
        tmp_path,
        monkeypatch,
        [{"name": "dicom-bq-dicom-store", "times": 1000}],
        streamTables=["instances_stream"],
    )
    result = up_fakes(workspace)
    assert result.exit_code == 1
    # IAM: "could potentially take 7 minutes or longer" (iam/docs/access-change-propagation).
    assert sum(cloud.clock.sleeps) <= 420
    assert "7 minutes" in result.stderr or "420" in result.stderr, result.stderr[-3000:]
