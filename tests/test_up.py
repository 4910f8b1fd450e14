"""`dicom-bq up`: pulumi up, then verify on the fresh outputs; with a stand-in `pulumi` on PATH."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from tests.conftest import FILTER_BUCKET, STORE, Cloud
from tests.inventory import ROOT

runner = CliRunner()

STAND_IN = """#!/usr/bin/env bash
# Stands in for the Pulumi CLI: records its arguments, answers `up` and `stack output --json`.
echo "$*" >> "$PULUMI_STAND_IN_LOG"
case "$1 $2" in
  "up --stack") echo "Updating ($3)"; echo "Resources: 15 created"; exit "${PULUMI_UP_EXIT:-0}" ;;
  "stack output") cat "$PULUMI_STAND_IN_OUTPUTS" ;;
  *) echo "unexpected: $*" >&2; exit 64 ;;
esac
"""


@pytest.fixture
def stand_in_pulumi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "pulumi"
    script.write_text(STAND_IN, encoding="utf-8")
    script.chmod(0o755)
    outputs = tmp_path / "outputs.json"
    outputs.write_text(
        json.dumps(
            {
                "dicomStoreName": STORE,
                "verificationTableUri": "bq://dicom-src-test.dicom_metadata.dicom_bq_verification",
                "filterBucket": FILTER_BUCKET,
                "agentEmail": "service-123456789012@gcp-sa-healthcare.iam.gserviceaccount.com",
            }
        ),
        encoding="utf-8",
    )
    log = tmp_path / "pulumi.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PULUMI_STAND_IN_OUTPUTS", str(outputs))
    monkeypatch.setenv("PULUMI_STAND_IN_LOG", str(log))
    return log


def test_up_deploys_then_verifies(cloud: Cloud, stand_in_pulumi: Path) -> None:
    result = runner.invoke(
        app,
        ["up", "--stack", "dev", "--yes", "--skip-preflight", "--project-dir", str(ROOT), "--json"],
    )
    assert result.exit_code == 0, result.output
    calls = stand_in_pulumi.read_text().splitlines()
    # The project's own policy pack runs by default.
    assert calls == [
        f"up --stack dev --yes --policy-pack {ROOT / 'policy'}",
        "stack output --json --stack dev",
    ]
    assert "Resources: 15 created" in result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert [s["step"] for s in report["steps"]][-2:] == ["query", "cleanup"]


def test_failed_up_is_not_verified(
    cloud: Cloud, stand_in_pulumi: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULUMI_UP_EXIT", "255")
    result = runner.invoke(
        app, ["up", "--stack", "dev", "--skip-preflight", "--project-dir", str(ROOT)]
    )
    assert result.exit_code == 1
    assert "`pulumi up` failed with exit code 255" in result.stderr
    assert cloud.healthcare.requests == []


def test_bad_stack_stops_before_pulumi(cloud: Cloud, stand_in_pulumi: Path) -> None:
    result = runner.invoke(app, ["up", "--stack", "nope", "--project-dir", str(ROOT)])
    assert result.exit_code == 2
    assert not stand_in_pulumi.exists()


def test_verify_reads_stack_outputs_through_pulumi(cloud: Cloud, stand_in_pulumi: Path) -> None:
    result = runner.invoke(app, ["verify", "--stack", "prod", "--project-dir", str(ROOT)])
    assert result.exit_code == 0, result.output
    assert "verification passed" in result.stdout
    assert stand_in_pulumi.read_text().splitlines() == ["stack output --json --stack prod"]


def test_missing_pulumi_cli_is_explained(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    result = runner.invoke(app, ["verify", "--stack", "dev", "--project-dir", str(ROOT)])
    assert result.exit_code == 2
    assert "the Pulumi CLI is not on PATH" in result.stderr


def test_up_passes_pulumis_common_flags(cloud: Cloud, stand_in_pulumi: Path) -> None:
    args = ["up", "--stack", "dev", "--skip-preflight", "--project-dir", str(ROOT)]
    flags = ["--refresh", "--diff", "--target", "urn:a", "--target", "urn:b", "-m", "why"]
    result = runner.invoke(app, [*args, "--policy-pack", "/packs/org", *flags])
    assert result.exit_code == 0, result.output
    (up, _) = stand_in_pulumi.read_text().splitlines()
    assert up == (
        "up --stack dev --policy-pack /packs/org --refresh --diff --target urn:a "
        "--target urn:b --message why"
    )


def test_up_without_a_policy_pack(cloud: Cloud, stand_in_pulumi: Path) -> None:
    args = ["up", "--stack", "dev", "--skip-preflight", "--no-policy-pack"]
    result = runner.invoke(app, [*args, "--project-dir", str(ROOT)])
    assert result.exit_code == 0, result.output
    assert stand_in_pulumi.read_text().splitlines()[0] == "up --stack dev"


def test_up_verifies_every_store_of_the_stack(
    cloud: Cloud, stand_in_pulumi: Path, tmp_path: Path
) -> None:
    dataset = STORE.rsplit("/dicomStores/", 1)[0]
    stores = [f"{dataset}/dicomStores/{store_id}" for store_id in ("clinical", "archive")]
    cloud.healthcare.stores.update(stores)
    outputs = json.loads((tmp_path / "outputs.json").read_text())
    outputs["dicomStores"] = [
        {"id": name.rsplit("/", 1)[1], "name": name, "dicomwebUrl": f"https://x/{name}"}
        for name in stores
    ]
    (tmp_path / "outputs.json").write_text(json.dumps(outputs), encoding="utf-8")
    result = runner.invoke(
        app,
        ["up", "--stack", "dev", "--yes", "--skip-preflight", "--project-dir", str(ROOT), "--json"],
    )
    assert result.exit_code == 0, result.output
    steps = [s["step"] for s in json.loads(result.stdout)["steps"]]
    assert {step.split(":")[0] for step in steps} == {"clinical", "archive"}
    assert "clinical:cleanup" in steps
    assert "archive:cleanup" in steps
