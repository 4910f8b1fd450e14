"""The test harness proves what it claims: the request recorder catches a request sent by mistake,
it stands behind every emulator variable the package reads, and virtual time covers every wait."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from dicom_bq.cli import app
from tests.conftest import EMULATOR_VARIABLES, STORE
from tests.fakes.clock import VirtualClock
from tests.fakes.http import RequestRecorder
from tests.inventory import ROOT

runner = CliRunner()
PACKAGE = ROOT / "scripts" / "dicom_bq"
RETRY_MODULE = PACKAGE / "clients" / "retry.py"
# Waiting or reading the time other than through retry.SystemClock would escape virtual_clock.
OWN_WAIT = re.compile(
    r"\btime\.(sleep|monotonic|perf_counter)\b|\bfrom time import\b|\basyncio\.sleep\b"
)


def test_a_request_sent_by_mistake_is_recorded_and_fails_on_virtual_time(
    request_recorder: RequestRecorder, virtual_clock: VirtualClock
) -> None:
    # A valid command does send: the recorder must see it, or `requests == []` proves nothing.
    operation = STORE.rsplit("/dicomStores", 1)[0] + "/operations/1"
    result = runner.invoke(app, ["operations", "describe", operation])
    assert result.exit_code == 1, result.output
    assert [r.path for r in request_recorder.requests][:1] == [f"/v1/{operation}"]
    assert len(request_recorder.requests) > 1  # its 500 was retried...
    assert virtual_clock.sleeps  # ...after backoffs that took no real time


def test_the_recorder_stands_behind_every_emulator_variable_the_package_reads() -> None:
    read = {
        name
        for path in PACKAGE.rglob("*.py")
        for name in re.findall(r"\b[A-Z]+_EMULATOR_HOST\b", path.read_text(encoding="utf-8"))
    }
    assert read, "the package reads no emulator variable: the pattern is stale"
    assert read <= set(EMULATOR_VARIABLES)


def test_the_package_waits_only_through_the_system_clock() -> None:
    own_waits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        if path != RETRY_MODULE
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OWN_WAIT.search(line)
    ]
    assert own_waits == []
    assert OWN_WAIT.search(RETRY_MODULE.read_text(encoding="utf-8"))  # the pattern still matches
