"""`dicom-bq up`: pulumi up, then verify on the fresh outputs; with a stand-in `pulumi` on PATH."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from tests.conftest import FILTER_BUCKET, STORE, Cloud
from tests.inventory import ROOT

runner = CliRunner()

STAND_IN = """#!/usr/bin/env bash
# Stands in for the Pulumi CLI: records its arguments, answers `up` and `stack output --json`.
# Keeps a copy of each --policy-pack-config file (dicom-bq deletes them after `pulumi up`).
echo "$*" >> "$PULUMI_STAND_IN_LOG"
previous=""; kept=0
for argument in "$@"; do
  if [ "$previous" = "--policy-pack-config" ]; then
    cp "$argument" "$PULUMI_STAND_IN_CONFIGS/$kept.json"; kept=$((kept + 1))
  fi
  previous="$argument"
done
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
    (tmp_path / "pack-configs").mkdir()
    monkeypatch.setenv("PULUMI_STAND_IN_CONFIGS", str(tmp_path / "pack-configs"))
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
    (up, output) = stand_in_pulumi.read_text().splitlines()
    # The project's own policy pack runs by default, with the stack's config.
    assert re.fullmatch(
        rf"up --stack dev --yes --policy-pack {re.escape(str(ROOT / 'policy'))} "
        r"--policy-pack-config \S+/policy-pack-0\.json",
        up,
    )
    assert output == "stack output --json --stack dev"
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


def pack_configs(log: Path) -> list[dict[str, Any]]:
    """The --policy-pack-config files `pulumi up` was given, in order (the stand-in's copies)."""
    folder = log.parent / "pack-configs"
    return [
        json.loads((folder / f"{i}.json").read_text()) for i in range(len(list(folder.iterdir())))
    ]


def test_up_gives_its_own_pack_the_stacks_config(cloud: Cloud, stand_in_pulumi: Path) -> None:
    from dicom_bq.infra.policy_rules import RULES
    from tests.conftest import cached_plan

    args = ["up", "--stack", "prod", "--yes", "--skip-preflight", "--project-dir", str(ROOT)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (config,) = pack_configs(stand_in_pulumi)
    # One entry per policy, each with the properties its config schema declares
    # (https://www.pulumi.com/docs/iac/using-pulumi/crossguard/configuration/).
    assert set(config) == {f"{rule.id.lower()}-{rule.name}" for rule in RULES}
    assert config["dbq008-phi-protected"] == {
        "protected": True,
        "requireCmek": True,
        "sourceProject": "clinical-imaging-prod",
        "allowedBigqueryLocations": ["europe-west4", "EU"],
        "sourceProjectNumber": "987654321098",
        "expectedGrants": cached_plan("prod").grants,
    }


def test_up_pairs_a_config_with_every_pack_when_its_own_is_one(
    cloud: Cloud, stand_in_pulumi: Path
) -> None:
    # `pulumi up` wants a --policy-pack-config per --policy-pack or none (pulumi/pulumi
    # pkg/cmd/pulumi, validatePolicyPackConfig): another pack gets {}, its own defaults.
    args = ["up", "--stack", "dev", "--skip-preflight", "--project-dir", str(ROOT)]
    packs = ["--policy-pack", "/packs/org", "--policy-pack", str(ROOT / "policy")]
    result = runner.invoke(app, [*args, *packs])
    assert result.exit_code == 0, result.output
    up = stand_in_pulumi.read_text().splitlines()[0]
    assert re.fullmatch(
        rf"up --stack dev --policy-pack /packs/org --policy-pack {re.escape(str(ROOT / 'policy'))}"
        r" --policy-pack-config \S+/policy-pack-0\.json --policy-pack-config \S+/policy-pack-1\.json",
        up,
    )
    other, own = pack_configs(stand_in_pulumi)
    assert other == {}
    assert own["dbq008-phi-protected"]["protected"] is False
    assert own["dbq008-phi-protected"]["sourceProjectNumber"] == "123456789012"


def test_a_stack_without_its_source_number_leaves_the_grants_to_the_allow_list() -> None:
    from dicom_bq.flows.up import own_pack_config
    from dicom_bq.stack.plan import plan_settings

    plan = plan_settings(
        "x",
        {
            "sourceProject": "dicom-bq-dev",
            "location": "us-central1",
            "healthcareDatasetId": "imaging",
            "dicomStoreId": "dicom",
            "bigqueryDatasetId": "dicom_metadata",
            "protected": True,
        },
    )
    config = own_pack_config(plan)["dbq008-phi-protected"]
    # The plan's agent is service-PROJECT_NUMBER_OF_...@: no deployed agent matches it.
    assert "expectedGrants" not in config
    assert "sourceProjectNumber" not in config
    assert config["protected"] is True
