"""The deployment a command acts on is one value (flows.targets.Target), refused in one place:
exactly one of --stack and --outputs (verify: or --store), whatever command names it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.errors import EXIT_BAD_INPUT, DicomBqError
from dicom_bq.flows.targets import Target
from tests.fakes.http import RequestRecorder
from tests.fast_cli import build_once, commands_taking

runner = CliRunner()
STORE = "projects/p-123456/locations/us-central1/datasets/d/dicomStores/s"
TABLE = "bq://p-123456.d.t"


@pytest.fixture(autouse=True)
def _one_click_command(monkeypatch: pytest.MonkeyPatch) -> None:
    build_once(monkeypatch)


BOTH = Target(stack="dev", outputs=Path("o.json"))
NEITHER = Target()


@pytest.mark.parametrize("target", [BOTH, NEITHER], ids=["both", "neither"])
def test_both_or_neither_of_stack_and_outputs_is_refused(target: Target) -> None:
    with pytest.raises(DicomBqError) as refused:
        target.check()
    assert refused.value.message == (
        "say which stack with exactly one of --stack NAME or --outputs FILE"
    )
    assert refused.value.exit_code == EXIT_BAD_INPUT
    with pytest.raises(DicomBqError, match="say which stack with exactly one of"):
        target.outputs_document()


@pytest.mark.parametrize(
    "target",
    [BOTH, NEITHER, Target(stack="dev", store=STORE, table=TABLE)],
    ids=["both", "neither", "stack-and-store"],
)
def test_a_direct_store_is_one_more_choice(target: Target) -> None:
    with pytest.raises(DicomBqError) as refused:
        target.check("where to verify", direct_store=True)
    assert refused.value.message == (
        "say where to verify with exactly one of --stack NAME, --outputs FILE or --store NAME "
        "(with --table)"
    )


@pytest.mark.parametrize(
    "target",
    [Target(stack="dev"), Target(outputs=Path("o.json")), Target(stack="dev", store_id="x")],
)
def test_one_of_them_passes(target: Target) -> None:
    target.check()


@pytest.mark.parametrize(
    ("target", "said"),
    [
        (Target(store=STORE, table=TABLE, store_id="x"), "--store-id picks one of"),
        (Target(store=STORE), "--store needs --table"),
        (Target(store=STORE, table=TABLE, filter_bucket="gs://b"), "--filter-bucket 'gs://b'"),
    ],
)
def test_a_direct_store_needs_its_companions(target: Target, said: str) -> None:
    with pytest.raises(DicomBqError, match=said):
        target.check("where to verify", direct_store=True)


# Every command with both options, from the app: a new one is checked without being listed.
EITHER_COMMANDS = sorted(commands_taking("--stack") & commands_taking("--outputs"))


def test_the_commands_naming_a_deployment_either_way_are_found() -> None:
    assert {"status", "verify", "audit"} <= set(EITHER_COMMANDS)


@pytest.mark.parametrize("command", EITHER_COMMANDS)
@pytest.mark.parametrize("given", [["--stack", "dev", "--outputs", "o.json"], []])
def test_every_command_refuses_through_the_target(
    command: str,
    given: list[str],
    request_recorder: RequestRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[Target] = []
    original = Target.check

    def recorded(self: Target, *args: Any, **kwargs: Any) -> None:
        checked.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Target, "check", recorded)
    result = runner.invoke(app, [*command.split(), *given])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "with exactly one of --stack NAME" in result.stderr
    assert checked, f"{command} refused its --stack/--outputs without Target.check"
    assert request_recorder.requests == []
