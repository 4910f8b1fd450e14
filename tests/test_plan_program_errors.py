"""A program that raises ends the offline plan with its error, whatever the stack sets.

Once a Pulumi program has raised, the Python SDK still awaits every Output the program made before
it reports the error (pulumi/runtime/stack.py, run_pulumi_func -> wait_for_rpcs), under the mocks
of `dicom-bq plan` as under `pulumi preview`; an Output that nothing will ever resolve turns the
error into a wait that never ends (pulumi/pulumi#18559). The component has one: the snapshot
account's email outside googleapis.com, deferred until the account exists
(components/path_inputs.py, PendingEmail). Each plan here runs in a thread given a deadline, so a
return of the hang fails the test instead of stopping the suite.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pulumi
import pytest
import yaml
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.errors import EXIT_BAD_INPUT, DicomBqError
from dicom_bq.infra import grants
from dicom_bq.infra.components.export_path import DicomExportPath, DicomExportPathArgs
from dicom_bq.stack.config import PROJECT_NAME
from dicom_bq.stack.plan import plan_settings, record_program
from tests.inventory import ROOT
from tests.stacks import operations_stack

T = TypeVar("T")
SOVEREIGN = "s3nsapis.fr"
REFUSAL = "refused on purpose: the snapshot's grants cannot be made"
# A plan takes a fraction of a second; past this, it is hanging.
DEADLINE_SECONDS = 30.0


def within_deadline(run: Callable[[], T]) -> T:
    """run() in a thread of its own (its own event loop, closed after), or a failure once
    DEADLINE_SECONDS have passed. A hung thread is a daemon: it does not keep pytest alive."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            outcome["value"] = run()
        except BaseException as error:  # handed back to the test's thread
            outcome["error"] = error
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    thread = threading.Thread(target=target, name="plan-under-deadline", daemon=True)
    thread.start()
    thread.join(DEADLINE_SECONDS)
    if thread.is_alive():
        pytest.fail(f"the plan was still running after {DEADLINE_SECONDS:.0f}s: it hangs")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def _refuse(error: Exception) -> Callable[[grants.GrantRequest], list[grants.GrantSpec]]:
    def refuse(request: grants.GrantRequest) -> list[grants.GrantSpec]:
        raise error

    return refuse


def _without_snapshot(settings: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in settings.items() if key != "snapshotSchedule"}


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param(operations_stack(universeDomain=SOVEREIGN), id="snapshot-another-universe"),
        pytest.param(operations_stack(), id="snapshot-only"),
        pytest.param(
            _without_snapshot(operations_stack(universeDomain=SOVEREIGN)), id="universe-only"
        ),
    ],
)
def test_a_raising_program_ends_the_plan_with_its_error(
    monkeypatch: pytest.MonkeyPatch, settings: dict[str, Any]
) -> None:
    monkeypatch.setattr(grants, "snapshot_grant_specs", _refuse(DicomBqError(REFUSAL)))
    with pytest.raises(DicomBqError) as raised:
        within_deadline(lambda: plan_settings("x", settings))
    assert raised.value.message == REFUSAL


def test_the_next_plan_runs_as_before_after_a_failed_one(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = operations_stack(universeDomain=SOVEREIGN)

    def failed_then_planned() -> list[str]:
        with monkeypatch.context() as patched:
            patched.setattr(grants, "snapshot_grant_specs", _refuse(DicomBqError(REFUSAL)))
            with pytest.raises(DicomBqError, match=REFUSAL):
                plan_settings("x", settings)
        return [r.name for r in plan_settings("x", settings).custom_resources()]

    names = within_deadline(failed_then_planned)
    # The snapshot's account and the scheduler agent's grant on it, whose scope is the email
    # that was pending in the failed plan.
    assert "dicom-bq-snapshot-account" in names
    assert "dicom-bq-snapshot-agent-scheduler-token-creator" in names


def test_plan_shows_the_programs_refusal_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A pulumi.RunError is the program's refusal (the engine prints its message alone): the
    plan reports it as every other bad stack, exit 2 and one message."""
    (tmp_path / "Pulumi.yaml").write_bytes((ROOT / "Pulumi.yaml").read_bytes())
    values = {
        f"{PROJECT_NAME}:{key}": value
        for key, value in operations_stack(universeDomain=SOVEREIGN).items()
        if value is not None
    }
    (tmp_path / "Pulumi.sov.yaml").write_text(yaml.safe_dump({"config": values}))
    monkeypatch.setattr(grants, "snapshot_grant_specs", _refuse(pulumi.RunError(REFUSAL)))

    result = within_deadline(
        lambda: CliRunner().invoke(app, ["plan", "--stack", "sov", "--project-dir", str(tmp_path)])
    )
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    said = " ".join(result.output.split())
    assert f"Error: the program refused stack 'sov': {REFUSAL}" in said
    assert "Traceback" not in result.output


def test_the_component_refuses_shared_snapshot_names_in_another_universe_at_once() -> None:
    """Used without the settings (infra/examples/consumer), the component makes its own checks;
    the last of them came after the pending email was made, and its refusal never showed."""
    args = DicomExportPathArgs(
        source_project="team-project-1",
        source_project_number="111122223333",
        location="us-central1",
        healthcare_dataset_id="imaging",
        bigquery_dataset_id="dicom",
        dicom_stores=[{"store_id": "site.a"}, {"store_id": "site_a"}],
        snapshot_schedule="0 2 * * *",
        universe_domain=SOVEREIGN,
    )

    def program() -> dict[str, Any]:
        DicomExportPath("dicom", args)
        return {}

    with pytest.raises(DicomBqError, match="would share the snapshot table"):
        within_deadline(lambda: record_program("shared", {}, program, universe_domain=SOVEREIGN))
