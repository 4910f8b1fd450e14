"""Inputs that got past the front door (issue 17): a stack file nested thousands deep, a FIFO
for Pulumi.yaml, a `pulumi config` that never answers, closed emulator ports, and a `pulumi up`
whose stderr is one enormous line. Each ends quickly, with a message and no traceback."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.clients.endpoints import Connection
from dicom_bq.errors import DicomBqError
from dicom_bq.refs import GcsUri, TableUri
from dicom_bq.stack.config import read_stack_config
from tests.inventory import ROOT

runner = CliRunner()
T = TypeVar("T")
TABLE = "bq://dicom-src-test.dicom_metadata.instances"

REQUIRED_YAML = """config:
  dicom-bq:sourceProject: dicom-src-test
  dicom-bq:location: us-central1
  dicom-bq:healthcareDatasetId: imaging
  dicom-bq:dicomStoreId: dicom
  dicom-bq:bigqueryDatasetId: dicom_metadata
"""


def within(seconds: float, call: Callable[[], T]) -> T:
    """`call()`'s result (or its exception), failing the test when it takes longer than
    `seconds`: the old code hung, and a hung test should fail, not hang the suite."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed to the test
            outcome["error"] = error

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds}s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for path in ROOT.glob("Pulumi*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- stack/config.py ---------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [500, 5000])
@pytest.mark.parametrize("style", ["flow", "block"])
def test_a_deeply_nested_stack_file_is_refused_quickly(
    project: Path, depth: int, style: str
) -> None:
    # flow lists, or block sequences one inside the next
    nested = "[" * depth + "]" * depth if style == "flow" else "\n    " + "- " * depth + "v"
    (project / "Pulumi.deep.yaml").write_text(
        REQUIRED_YAML + f"  dicom-bq:labels: {nested}\n", encoding="utf-8"
    )
    started = time.monotonic()
    result = within(
        20, lambda: runner.invoke(app, ["plan", "--stack", "deep", "--project-dir", str(project)])
    )
    assert time.monotonic() - started < 5
    assert result.exit_code == 2, result.output
    assert "Pulumi.deep.yaml nests its lists and maps more than 100 levels" in result.stderr
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, RecursionError)


def test_a_fifo_for_pulumi_yaml_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "Pulumi.yaml"
    os.mkfifo(fifo)
    (tmp_path / "Pulumi.dev.yaml").write_text(REQUIRED_YAML, encoding="utf-8")
    try:
        with pytest.raises(DicomBqError) as caught:
            within(5, lambda: read_stack_config(tmp_path, "dev", use_cli=False))
    finally:
        # Let a reader the old code left blocked in open(2) go (ENXIO when there is none).
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert caught.value.exit_code == 2
    assert "Pulumi.yaml" in caught.value.message
    assert "named pipe (FIFO)" in caught.value.message


SILENT_PULUMI = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_PULUMI_LOG"
exec sleep 30
"""


def test_a_pulumi_config_that_never_answers_is_stopped(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicom_bq.stack import outputs

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pulumi").write_text(SILENT_PULUMI, encoding="utf-8")
    (bin_dir / "pulumi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PULUMI_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setattr(outputs, "PULUMI_READ_TIMEOUT", 1.0)
    (project / "Pulumi.esc.yaml").write_text(
        REQUIRED_YAML + "environment:\n  - img/prod\n", encoding="utf-8"
    )
    started = time.monotonic()
    config = within(10, lambda: read_stack_config(project, "esc"))
    assert time.monotonic() - started < 3
    assert not config.resolved_by_cli
    assert config.own()["location"] == "us-central1"  # the offline reading
    (note,) = [n for n in config.notes if "could not open" in n]
    assert "did not answer in 1s and was stopped" in note
    assert "config --show-secrets --json --stack esc" in (tmp_path / "calls.log").read_text()


# -- clients/bigquery.py and clients/storage.py: closed emulator ports --------------------------


def test_a_closed_bigquery_emulator_port_ends_with_the_endpoint_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dicom_bq.clients import bigquery

    monkeypatch.setattr(bigquery, "RETRY_DEADLINE", 0.5)
    url = f"http://127.0.0.1:{closed_port()}"
    tables = bigquery.BigQueryTables(
        Connection(environ={"BIGQUERY_EMULATOR_HOST": url}), "dicom-src-test"
    )
    table = TableUri.parse(TABLE)
    started = time.monotonic()
    with pytest.raises(DicomBqError) as described:
        within(10, lambda: tables.table_info(table))
    with pytest.raises(DicomBqError) as queried:
        within(10, lambda: tables.instance_rows(table, "1.2.3"))
    with pytest.raises(DicomBqError) as dataset:
        within(10, lambda: tables.dataset_access("dicom-src-test", "dicom_metadata"))
    assert time.monotonic() - started < 3
    for caught in (described, queried, dataset):
        assert caught.value.exit_code == 1
        assert f"BigQuery at {url}/ (BIGQUERY_EMULATOR_HOST) did not answer" in (
            caught.value.message
        )
        assert "Connection refused" in caught.value.message


@pytest.mark.processes
def test_query_with_a_closed_bigquery_emulator_port_exits_1(tmp_path: Path) -> None:
    """The whole command, in its own process (the deadline shortened there), without a
    traceback."""
    url = f"http://127.0.0.1:{closed_port()}"
    program = (
        "import sys; from dicom_bq.clients import bigquery; bigquery.RETRY_DEADLINE = 0.5; "
        "from dicom_bq.cli import main; sys.argv[0] = 'dicom-bq'; main()"
    )
    environment = {**os.environ, "BIGQUERY_EMULATOR_HOST": url, "COLUMNS": "200"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", program, "query", "dropped-tags", "--table", TABLE],
        capture_output=True,
        text=True,
        timeout=20,
        env=environment,
        cwd=tmp_path,
        check=False,
    )
    assert time.monotonic() - started < 10
    assert done.returncode == 1, done.stderr
    said = " ".join(done.stderr.split())
    assert f"BigQuery at {url}/ (BIGQUERY_EMULATOR_HOST) did not answer" in said
    assert "Traceback" not in done.stderr


def test_a_filter_upload_to_a_closed_storage_emulator_port_says_nothing_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
    path = tmp_path / "filter.txt"
    path.write_text("/studies/1.2\n", encoding="utf-8")
    started = time.monotonic()
    result = within(
        10, lambda: runner.invoke(app, ["filter", "upload", str(path), "gs://dicom-f/filter.txt"])
    )
    assert time.monotonic() - started < 3
    assert result.exit_code == 1, result.output
    said = " ".join(result.stderr.split())
    assert f"Cloud Storage at {url}/ (STORAGE_EMULATOR_HOST) could not be reached" in said
    assert "nothing was written" in said
    assert "the answer was lost" not in said  # it never left
    assert "Traceback" not in result.output


def test_a_delete_on_a_closed_storage_emulator_port_stops_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dicom_bq.clients import storage

    monkeypatch.setattr(storage, "RETRY_DEADLINE", 0.5)
    url = f"http://127.0.0.1:{closed_port()}"
    objects = storage.StorageObjects(Connection(environ={"STORAGE_EMULATOR_HOST": url}), "dicom-f")
    started = time.monotonic()
    with pytest.raises(DicomBqError) as caught:
        within(10, lambda: objects.delete(GcsUri("dicom-f", "filter.txt")))
    assert time.monotonic() - started < 3
    assert f"Cloud Storage at {url}/ (STORAGE_EMULATOR_HOST) did not answer" in (
        caught.value.message
    )


# -- flows/up.py: the end of pulumi's stderr ---------------------------------------------------


def test_the_stderr_shown_after_a_failed_up_is_its_bounded_end() -> None:
    from dicom_bq.flows.up import PulumiRun, _failed

    huge = ("x" * 300_000 + "\n") * 5
    run = PulumiRun(255, [], huge + "\x1b]0;owned\x07error: Stack 'prod' is missing a value\n")
    message = _failed(run, [])
    assert message.endswith("error: Stack 'prod' is missing a value")
    assert "owned" not in message
    assert "\x1b" not in message
    assert len(message) < 600


STDERR_PULUMI = """#!/usr/bin/env bash
head -c 2000000 /dev/zero | tr '\\0' 'y' >&2
printf '\\nerror: the real reason\\n' >&2
exit 255
"""


def test_a_pulumi_up_stderr_line_of_megabytes_is_kept_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dicom_bq.flows.up import STDERR_LINES, run_pulumi_up
    from dicom_bq.stack.outputs import UpOptions
    from dicom_bq.texts import SUBPROCESS_BYTES

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pulumi").write_text(STDERR_PULUMI, encoding="utf-8")
    (bin_dir / "pulumi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    run = run_pulumi_up(
        "dev",
        tmp_path,
        UpOptions(),
        event_log=tmp_path / "events.json",
        output_to_stderr=True,
        impersonate=None,
    )
    assert run.exit_code == 255
    assert len(run.stderr) <= STDERR_LINES * SUBPROCESS_BYTES
    assert run.stderr.endswith("error: the real reason\n")
    assert len(capsys.readouterr().err) > 2_000_000  # all of it was still copied on
