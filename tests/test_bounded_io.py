"""Everything the tool reads, waits for or shows is bounded (issue 17): files are regular and
small, JSON is shallow, a `pulumi` that never answers is stopped, what it printed is shown as a
short excerpt without terminal escapes, any COLUMNS gives a readable plan, and a full disk is
said with the file and TMPDIR."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dicom_bq import files, texts
from dicom_bq.cli import app
from dicom_bq.errors import DicomBqError
from dicom_bq.stack import outputs as stack_outputs
from dicom_bq.stack.render import plan_lines, print_table
from tests.conftest import STORE, cached_plan
from tests.fakes.http import RequestRecorder
from tests.fast_cli import build_once
from tests.inventory import ROOT

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_click_command(monkeypatch: pytest.MonkeyPatch) -> None:
    build_once(monkeypatch)


TABLE = "bq://dicom-src-test.dicom_metadata.t"
OUTPUTS = {
    "dicomStoreName": STORE,
    "dicomStores": [{"id": "dicom", "name": STORE}],
    "verificationTableUri": TABLE,
    "sourceProject": "dicom-src-test",
    "grants": [],
}
# What each command that reads a stack's outputs is given, besides the source.
READERS = {
    "verify": ["verify"],
    "status": ["status"],
    "audit": ["audit"],
}


def _deep_json(depth: int) -> str:
    return '{"dicomStoreName": ' + "[" * depth + "1" + "]" * depth + "}"


def _within(seconds: float, call: Any) -> Any:
    """`call()`, failing the test (not hanging it) when it takes longer: a real-time alarm
    interrupts whatever it waits on (an open(2) of a FIFO, a read, a subprocess). In the main
    thread, where the plan's Pulumi mocks need their event loop."""

    def expired(_signal: int, _frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- files --------------------------------------------------------------------------------------


def test_a_fifo_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "outputs.json"
    os.mkfifo(fifo)  # no writer: an open for reading would wait forever
    with pytest.raises(DicomBqError, match=r"named pipe \(FIFO\)"):
        _within(5, lambda: stack_outputs.read_outputs_file(fifo))


def test_a_device_is_refused_before_any_read() -> None:
    # /dev/zero never ends: reading it whole was a MemoryError.
    with pytest.raises(DicomBqError, match="character device"):
        _within(5, lambda: stack_outputs.read_outputs_file(Path("/dev/zero")))


def test_a_file_larger_than_the_limit_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "o.json"
    with big.open("wb") as out:
        out.truncate(stack_outputs.MAX_OUTPUTS_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(DicomBqError, match="bytes allowed"):
        stack_outputs.read_outputs_file(big)


def test_read_bounded_refuses_what_grew_past_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 11)
    assert files.read_bounded(path, limit=11, what="f") == b"x" * 11
    with pytest.raises(DicomBqError, match="f: cannot read it"):
        files.read_bounded(path, limit=10, what="f")


def test_json_depth_counts_brackets_outside_strings() -> None:
    assert files.json_depth('"[[[["') == 0
    assert files.json_depth('{"a": ["]", {"b": "\\"["}]}') == 3
    assert files.json_depth("[" * 5000 + "]" * 5000) == 5000


def test_yaml_shape_counts_collections_and_refuses_deep_ones() -> None:
    assert files.yaml_shape("a: [1, {b: [2]}]\nc: &x 1\nd: *x\n", what="f") == (4, 1)
    assert files.yaml_shape("[" * 100 + "]" * 100, what="f") == (100, 0)
    for depth in (101, 3000, 1_000_000):  # at once: PyYAML's own scanner takes minutes
        with pytest.raises(DicomBqError, match="more than 100 levels deep"):
            _within(5, lambda d=depth: files.yaml_shape("[" * d + "]" * d, what="f"))


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (_deep_json(5000).encode(), "nests 5001 levels deep"),
        (b"[" * 100_000, "nests 100000 levels deep"),
        ("fifo", "named pipe"),
        ("/dev/zero", "character device"),
    ],
    ids=["deep", "unclosed", "fifo", "device"],
)
def test_every_outputs_reader_refuses_deep_or_endless_files(
    request_recorder: RequestRecorder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reader: str,
    content: bytes | str,
    fragment: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    if content == "fifo":
        os.mkfifo("o.json")
        path = "o.json"
    elif content == "/dev/zero":
        path = "/dev/zero"
    else:
        assert isinstance(content, bytes)
        Path("o.json").write_bytes(content)
        path = "o.json"
    result = _within(10, lambda: runner.invoke(app, [*READERS[reader], "--outputs", path]))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr, result.stderr
    assert len(result.stderr) < 500
    assert request_recorder.requests == []


def test_an_output_holding_a_control_character_is_refused(
    request_recorder: RequestRecorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spoiled = {**OUTPUTS, "verificationTableUri": TABLE + "\n"}
    Path("o.json").write_text(json.dumps(spoiled), encoding="utf-8")
    result = runner.invoke(app, ["verify", "--outputs", "o.json"])
    assert result.exit_code == 2, result.output
    assert "verificationTableUri" in result.stderr
    assert request_recorder.requests == []


# -- the Pulumi CLI -----------------------------------------------------------------------------


def _fake_pulumi(folder: Path, body: str) -> None:
    """A `pulumi` on PATH that runs `body` (sh)."""
    folder.mkdir(exist_ok=True)
    script = folder / "pulumi"
    script.write_text("#!/bin/sh\n" + body + "\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def pulumi_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "bin"
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")
    return folder


@pytest.fixture
def short_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack_outputs, "PULUMI_READ_TIMEOUT", 0.3)


# (`audit --stack` plans the stack offline: it asks Pulumi nothing.)
@pytest.mark.parametrize("command", [["verify"], ["status"]])
@pytest.mark.usefixtures("short_deadline")
def test_a_pulumi_that_never_answers_is_stopped(
    request_recorder: RequestRecorder, pulumi_bin: Path, command: list[str]
) -> None:
    _fake_pulumi(pulumi_bin, "exec sleep 600")
    args = [*command, "--stack", "dev", "--project-dir", str(ROOT)]
    result = _within(30, lambda: runner.invoke(app, args))
    assert result.exit_code == 3, result.output
    assert "`pulumi stack output --json --stack dev` did not answer in 0.3s" in result.stderr
    assert request_recorder.requests == []


def test_what_pulumi_printed_is_shown_short_and_without_escapes(
    request_recorder: RequestRecorder, pulumi_bin: Path, tmp_path: Path
) -> None:
    # 300 KB of stderr with a window title change (OSC) and colours (CSI) in it.
    noise = tmp_path / "noise.txt"
    lines = [f"\x1b]0;owned title {i}\x07\x1b[31mline {i}\x1b[0m" for i in range(10_000)]
    noise.write_text("\n".join([*lines, "error: no stack named 'dev' found"]), encoding="utf-8")
    _fake_pulumi(pulumi_bin, f"cat {noise} >&2; exit 255")
    result = runner.invoke(app, ["verify", "--stack", "dev", "--project-dir", str(ROOT)])
    assert result.exit_code == 2, result.output
    assert "error: no stack named 'dev' found" in result.stderr
    assert "\x1b" not in result.stderr
    assert "\x07" not in result.stderr
    assert "owned title" not in result.stderr  # the OSC sequence is gone, not just escaped
    assert "earlier lines left out" in result.stderr
    assert len(result.stderr.splitlines()) <= texts.SUBPROCESS_LINES + 3
    assert len(result.stderr) < texts.SUBPROCESS_BYTES + 600
    assert request_recorder.requests == []


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        ("printf '%*s' 100000 '' | tr ' ' '['", "nests 100000 levels deep"),
        ("head -c 5000000 /dev/zero | tr '\\0' ' '", "more than the 4194304 read here"),
    ],
    ids=["deep", "huge"],
)
def test_a_deep_or_huge_pulumi_answer_is_refused(
    request_recorder: RequestRecorder, pulumi_bin: Path, answer: str, fragment: str
) -> None:
    _fake_pulumi(pulumi_bin, answer)
    result = runner.invoke(app, ["status", "--stack", "dev", "--project-dir", str(ROOT)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code in (1, 2), result.output
    assert fragment in result.stderr, result.stderr
    assert request_recorder.requests == []


def test_a_stack_name_is_never_passed_to_pulumi_as_a_flag(pulumi_bin: Path) -> None:
    _fake_pulumi(pulumi_bin, "echo ran >&2; exit 1")
    with pytest.raises(DicomBqError, match="stack name '--show-secrets' is not valid"):
        stack_outputs.read_stack_outputs("--show-secrets", ROOT)
    assert stack_outputs.read_stack_resource_ids("-x", ROOT)[0] is None


@pytest.mark.usefixtures("short_deadline")
def test_preflight_s_stack_export_read_has_a_deadline_too(pulumi_bin: Path) -> None:
    _fake_pulumi(pulumi_bin, "exec sleep 600")
    owned, why = _within(30, lambda: stack_outputs.read_stack_resource_ids("dev", ROOT))
    assert owned is None
    assert "did not answer in 0.3s" in why


# -- what is shown ------------------------------------------------------------------------------


def test_terminal_safe_removes_escape_sequences_and_escapes_other_controls() -> None:
    raw = "a\x1b]0;title\x07b\x1b]8;;http://x\x1b\\link\x1b[1;31mc\x1b[0m\x9b2Jd\x07e\x1bcf\tg\r\n"
    assert texts.terminal_safe(raw) == "ablinkcd\\x07ef\tg\n"


def test_output_excerpt_keeps_the_end_within_bounds() -> None:
    data = "\n".join(f"line {i}" for i in range(1000)).encode()
    shown = texts.output_excerpt(data)
    assert shown.splitlines()[0] == "[... 960 earlier lines left out]"
    assert shown.splitlines()[-1] == "line 999"
    assert len(shown.splitlines()) == 41
    assert len(texts.output_excerpt(b"x" * 100_000)) <= texts.SUBPROCESS_BYTES
    assert len(texts.output_excerpt(b"\x07" * 100_000)) <= texts.SUBPROCESS_BYTES
    assert texts.output_excerpt(b"") == ""


# -- COLUMNS ------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [0, 3, -5, 1])
def test_any_width_gives_a_readable_plan(width: int) -> None:
    lines = _within(10, lambda: plan_lines(cached_plan("dev"), width=width))
    assert lines[0].startswith("Universe: googleapis.com")
    assert any(line.startswith("Resources of stack dev") for line in lines)
    assert max(len(line) for line in lines) <= 40


@pytest.mark.parametrize("columns", ["0", "3"])
def test_plan_with_a_tiny_columns_prints_the_plan(
    columns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    result = _within(
        60, lambda: runner.invoke(app, ["plan", "--stack", "dev", "--project-dir", str(ROOT)])
    )
    assert result.exit_code == 0, result.output
    assert "Resources of stack dev" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 40


def test_a_zero_width_console_still_prints() -> None:
    import io

    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, width=0)
    print_table(cached_plan("dev"), console)
    assert "Resources of stack dev" in out.getvalue()


# -- a full disk --------------------------------------------------------------------------------


def test_a_full_disk_names_the_file_and_tmpdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicom_bq.filters import filter_files

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    Path("u.csv").write_text("StudyInstanceUID\n1.2.3\n", encoding="utf-8")

    def full(*_args: object, **_kwargs: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(filter_files, "_write", full)
    result = runner.invoke(app, ["filter", "build", "--uids-csv", "u.csv", "-o", "out.txt"])
    assert result.exit_code == 1, result.output
    assert "no space left on the device writing out.txt" in result.stderr
    assert "TMPDIR" in result.stderr
    assert not Path("out.txt").exists()


def test_an_unattributed_full_disk_still_names_tmpdir() -> None:
    from dicom_bq.cli.common import _known_failure

    said = _known_failure(OSError(errno.ENOSPC, "No space left on device"))
    assert said is not None
    assert "TMPDIR" in said.message
    assert said.exit_code == 1
