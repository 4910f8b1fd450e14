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
# Run N of `up` fails when $PULUMI_STAND_IN_FAILURES/N.out exists: it prints that (pulumi's
# display) and copies N.events where --event-log says (the engine's events, one JSON a line).
echo "$*" >> "$PULUMI_STAND_IN_LOG"
previous=""; kept=0; event_log=""
for argument in "$@"; do
  if [ "$previous" = "--policy-pack-config" ]; then
    cp "$argument" "$PULUMI_STAND_IN_CONFIGS/$kept.json"; kept=$((kept + 1))
  fi
  if [ "$previous" = "--event-log" ]; then event_log="$argument"; fi
  previous="$argument"
done
if [ -n "$event_log" ] && [ "${PULUMI_DEBUG_COMMANDS:-}" != "true" ]; then
  # pulumi declares --event-log only when PULUMI_DEBUG_COMMANDS is set (operations/up.go).
  echo "error: unknown flag: --event-log" >&2; exit 255
fi
case "$1 $2" in
  "up --stack")
    runs="$PULUMI_STAND_IN_FAILURES/runs"
    run=$(( $(cat "$runs" 2>/dev/null || echo 0) + 1 )); echo "$run" > "$runs"
    echo "Updating ($3)"
    if [ -n "${PULUMI_STAND_IN_SAY:-}" ]; then printf '%b\\n' "$PULUMI_STAND_IN_SAY" >&2; fi
    if [ -f "$PULUMI_STAND_IN_FAILURES/$run.out" ]; then
      cat "$PULUMI_STAND_IN_FAILURES/$run.out"
      cp "$PULUMI_STAND_IN_FAILURES/$run.events" "$event_log"
      exit 255
    fi
    echo "Resources: 15 created"; exit "${PULUMI_UP_EXIT:-0}" ;;
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
    (tmp_path / "failures").mkdir()
    monkeypatch.setenv("PULUMI_STAND_IN_CONFIGS", str(tmp_path / "pack-configs"))
    monkeypatch.setenv("PULUMI_STAND_IN_FAILURES", str(tmp_path / "failures"))
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
        r"--policy-pack-config \S+/policy-pack-0\.json --event-log \S+/events-1\.jsonl",
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
    assert re.fullmatch(
        r"up --stack dev --policy-pack /packs/org --refresh --diff --target urn:a "
        r"--target urn:b --message why --event-log \S+/events-1\.jsonl",
        up,
    )


def test_up_without_a_policy_pack(cloud: Cloud, stand_in_pulumi: Path) -> None:
    args = ["up", "--stack", "dev", "--skip-preflight", "--no-policy-pack"]
    result = runner.invoke(app, [*args, "--project-dir", str(ROOT)])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(
        r"up --stack dev --event-log \S+", stand_in_pulumi.read_text().splitlines()[0]
    )


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
        r" --policy-pack-config \S+/policy-pack-0\.json --policy-pack-config \S+/policy-pack-1\.json"
        r" --event-log \S+",
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


# --- `pulumi up` failing while IAM or a metric propagates ---------------------------------------
# Google's refusals as pulumi-gcp passes them on: older bridges wrap the terraform provider's error
# in hashicorp/go-multierror's list; newer ones prefix the SDKv2 shim's location and add the
# provider (pulumi/pulumi-gcp#2896). The texts are the providers' own, from the reports cited.
def multierror(error: str) -> str:
    return f"1 error occurred:\n\t* {error}\n\n"


def shimmed(error: str) -> str:
    return f"sdk-v2/provider2.go:515: sdk.helper_schema: {error}: provider=google-beta@6.50.0"


# hashicorp/terraform-provider-google#13721 (a streaming store before its agent's dataEditor).
STORE_DENIED = (
    "Error creating DicomStore: googleapi: Error 403: failed to verify dataset "
    "(projectID:imaging-analytics-prod, datasetID:dicom_metadata), please add the required "
    "bigquery.dataEditor role to your project's service account"
)
# hashicorp/terraform-provider-google#11102 (a policy on a log-based metric just created).
METRIC_MISSING = (
    "Error creating AlertPolicy: googleapi: Error 404: Cannot find metric(s) that match type = "
    '"logging.googleapis.com/user/{metric}". If a metric was created recently, it could take up '
    "to 10 minutes to become available. Please try again soon."
)


def urn_of(plan: Any, type_suffix: str, name: str | None = None) -> str:
    return next(
        r.urn
        for r in plan.custom_resources()
        if r.type.endswith(type_suffix) and (name is None or r.name == name)
    )


def fail_runs(log: Path, runs: range | list[int], errors: list[tuple[str, str]]) -> None:
    """Runs `runs` of the stand-in's `up` fail with `errors` ((URN, message)): pulumi's display,
    and the engine's events as `--event-log` records them: a diagnostic per failed resource,
    then the update's own "update failed" (pulumi/pulumi pkg/resource/deploy/
    deployment_executor.go, reportExecResult)."""
    folder = log.parent / "failures"
    display = ["", "Diagnostics:"]
    events: list[dict[str, Any]] = []
    for urn, message in errors:
        types, _, name = urn.rpartition("::")
        display.append(f"  {types.rsplit('$', 1)[-1]} ({name}):")
        first, *more = message.splitlines()
        display += [f"    error: {first}", *(f"    {line}" for line in more)]
        events.append({"urn": urn, "message": message})
    display += ["  pulumi:pulumi:Stack (dicom-bq):", "    error: update failed"]
    events.append({"message": "update failed"})
    lines = [
        json.dumps(
            {
                "sequence": index,
                "timestamp": 1_700_000_000 + index,
                "diagnosticEvent": {
                    **event,
                    "prefix": "error: ",
                    "color": "never",
                    "severity": "error",
                },
            }
        )
        for index, event in enumerate(events)
    ]
    for run in runs:
        (folder / f"{run}.out").write_text("\n".join(display) + "\n", encoding="utf-8")
        (folder / f"{run}.events").write_text("\n".join(lines) + "\n", encoding="utf-8")


def up_runs(log: Path) -> int:
    return sum(line.startswith("up ") for line in log.read_text().splitlines())


UP_PROD = ["up", "--stack", "prod", "--yes", "--skip-preflight", "--project-dir", str(ROOT)]


def test_up_runs_pulumi_again_while_the_agents_grant_propagates(
    cloud: Cloud, stand_in_pulumi: Path
) -> None:
    from tests.conftest import cached_plan

    store = urn_of(cached_plan("prod"), ":DicomStore")
    fail_runs(stand_in_pulumi, [1], [(store, multierror(STORE_DENIED))])
    fail_runs(stand_in_pulumi, [2], [(store, shimmed(STORE_DENIED))])
    result = runner.invoke(app, [*UP_PROD, "--json"])
    assert result.exit_code == 0, result.output
    assert up_runs(stand_in_pulumi) == 3
    deployment = json.loads(result.stdout)["deployment"]
    assert deployment["attempts"] == 3
    assert [w["seconds"] for w in deployment["waits"]] == [30, 60]
    (why,) = deployment["waits"][0]["for"]
    assert why["kind"] == "IAM propagation"
    assert why["window_seconds"] == 420
    assert why["resource"] == "DicomStore dicom-bq-dicom-store"
    assert "roles/bigquery.dataEditor of serviceAccount:service-987654321098@" in why["waiting_for"]
    # The waits were on the command's clock (virtual here), before verify's own.
    assert cloud.clock.sleeps[:2] == [30, 60]
    # What it waits for and why, on stderr.
    assert (
        "`pulumi up` run 1: DicomStore dicom-bq-dicom-store was refused; waiting for "
        "roles/bigquery.dataEditor of serviceAccount:service-987654321098@gcp-sa-healthcare"
        ".iam.gserviceaccount.com on imaging-analytics-prod.dicom_metadata, granted by this "
        "stack, to reach BigQuery"
    ) in result.stderr
    assert "could take 7 or longer" in result.stderr
    assert "420s left of 420s from its first failure" in result.stderr
    assert "390s left of 420s from its first failure" in result.stderr
    assert "waiting for IAM to propagate; retrying in 30s" in result.stderr
    assert "waiting for IAM to propagate; retrying in 60s" in result.stderr


def test_up_gives_up_when_the_grant_has_not_propagated_in_seven_minutes(
    cloud: Cloud, stand_in_pulumi: Path
) -> None:
    from tests.conftest import cached_plan

    store = urn_of(cached_plan("prod"), ":DicomStore")
    fail_runs(stand_in_pulumi, range(1, 50), [(store, multierror(STORE_DENIED))])
    result = runner.invoke(app, UP_PROD)
    assert result.exit_code == 1
    # Runs at 0, 30, 90, 210, 330 and 420 s after the first failure; the last wait cut to 90 s.
    assert cloud.clock.sleeps == [30, 60, 120, 120, 90]
    assert up_runs(stand_in_pulumi) == 6
    message = " ".join(result.stderr.split())
    assert (
        "`pulumi up` still fails on DicomStore dicom-bq-dicom-store 420s after it first did "
        "(6 runs), past the 420s Google gives IAM propagation" in message
    )
    assert "dicom-bq audit --stack prod" in message
    assert "nothing was verified" in message
    assert cloud.healthcare.requests == []


def ops_project(tmp_path: Path) -> Path:
    """A project folder with the snapshot + alerts stack as `ops`."""
    import shutil

    import yaml

    from tests.stacks import operations_stack

    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(ROOT / "Pulumi.yaml", folder)
    config = {f"dicom-bq:{key}": value for key, value in operations_stack().items()}
    (folder / "Pulumi.ops.yaml").write_text(yaml.safe_dump({"config": config}), encoding="utf-8")
    return folder


def test_up_waits_up_to_ten_minutes_for_a_new_metric(
    cloud: Cloud, stand_in_pulumi: Path, tmp_path: Path
) -> None:
    from dicom_bq.stack.config import read_stack_config
    from dicom_bq.stack.plan import plan_stack

    folder = ops_project(tmp_path)
    plan = plan_stack(read_stack_config(folder, "ops", use_cli=False))
    policies = [r for r in plan.custom_resources() if r.type.endswith(":AlertPolicy")]
    metrics = {r.name: str(r.inputs["name"]) for r in plan.custom_resources() if "Metric" in r.type}
    errors = [(p.urn, shimmed(METRIC_MISSING.format(metric=metrics[p.name]))) for p in policies]
    fail_runs(stand_in_pulumi, range(1, 50), errors)
    args = ["up", "--stack", "ops", "--yes", "--skip-preflight", "--no-policy-pack"]
    result = runner.invoke(app, [*args, "--project-dir", str(folder)])
    assert result.exit_code == 1
    # 600 s from the first failure: runs at 0, 30, 90, 210, 330, 450, 570 and 600 s.
    assert cloud.clock.sleeps == [30, 60, 120, 120, 120, 120, 30]
    assert up_runs(stand_in_pulumi) == 8
    assert "past the 600s Google gives metric propagation" in " ".join(result.stderr.split())
    assert "the log-based metric dicom_bq/export_errors/us-central1/imaging/archive" in (
        " ".join(result.stderr.split())
    )


def test_a_failure_that_is_not_propagation_stops_at_once(
    cloud: Cloud, stand_in_pulumi: Path
) -> None:
    from tests.conftest import cached_plan

    plan = cached_plan("prod")
    # The deployer's own missing permission: nothing the stack grants (a red, bold escape
    # sequence in it, and more text than a message should carry).
    denied = (
        "Error creating Dataset: googleapi: Error 403: \x1b[1;31mPermission "
        "'healthcare.datasets.create' denied\x1b[0m on resource "
        "'//healthcare.googleapis.com/projects/clinical-imaging-prod/locations/europe-west4' "
        "(or it may not exist)., forbidden " + "x" * 2000
    )
    errors = [
        (urn_of(plan, ":DicomStore"), multierror(STORE_DENIED)),
        (urn_of(plan, "healthcare/dataset:Dataset"), multierror(denied)),
    ]
    fail_runs(stand_in_pulumi, range(1, 50), errors)
    result = runner.invoke(app, UP_PROD)
    assert result.exit_code == 1
    assert up_runs(stand_in_pulumi) == 1
    assert cloud.clock.sleeps == []
    (message,) = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert message.startswith(
        "Error: `pulumi up` failed with exit code 255: nothing was verified. pulumi said: "
        "Dataset dicom-bq-dicom-dataset: 1 error occurred: * Error creating Dataset: googleapi: "
        "Error 403: Permission 'healthcare.datasets.create' denied on resource"
    )
    assert "\x1b" not in message
    assert len(message) < 600


def test_pulumis_own_message_when_the_engine_did_not_run(
    cloud: Cloud, stand_in_pulumi: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULUMI_UP_EXIT", "255")
    monkeypatch.setenv(
        "PULUMI_STAND_IN_SAY",
        "warning: "
        + "w" * 900
        + "\\n\\033[31merror:\\033[0m Stack 'prod' is missing configuration",
    )
    result = runner.invoke(app, UP_PROD)
    assert result.exit_code == 1
    assert up_runs(stand_in_pulumi) == 1
    (message,) = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert message.startswith(
        "Error: `pulumi up` failed with exit code 255: nothing was verified. pulumi said: ...www"
    )
    # The end of what it said, where it says why; without its colours.
    assert message.endswith("www error: Stack 'prod' is missing configuration")
    assert len(message) < 600


def test_up_without_the_pulumi_cli_stops_before_any_request(
    request_recorder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """issue 18 item 7: `up` checked for the CLI only after preflight had called Google, then
    suggested --outputs, an option `up` does not have."""
    monkeypatch.setenv("PATH", "/nonexistent")
    result = runner.invoke(app, ["up", "--stack", "dev", "--project-dir", str(ROOT)])
    assert result.exit_code == 2, result.output
    assert "the Pulumi CLI is not on PATH" in result.stderr
    assert "--outputs" not in result.stderr
    assert "nothing was sent to Google" in result.stderr
    assert request_recorder.requests == []
