"""`export --filter-file`: the object it uploads is deleted once no export can read it, and kept,
with the command that removes it, while one may (--no-wait, --timeout, Ctrl-C, a lost answer).

Against gcp-storage-emulator, which ignores preconditions (tests/peers.py): these tests claim
only what is deleted or kept and what is said. That the delete spares an object another writer
put there is shown against fake-gcs-server (tests/test_storage_preconditions.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.errors import DicomBqError
from tests.conftest import FILTER_BUCKET, STORE, Cloud
from tests.fakes.healthcare import Fault
from tests.fakes.http import RequestRecorder
from tests.test_export_cli import TABLE, seed

runner = CliRunner()
REMOVE = re.compile(
    rf"gcloud storage rm gs://{FILTER_BUCKET}/(dicom-bq/filters/\S+) --if-generation-match=(\d+)"
)


def export_through_a_filter_file(cloud: Cloud, tmp_path: Path, *args: str) -> tuple[Any, str]:
    """An export of one seeded instance through a local filter file; the object it uploaded."""
    (chosen,) = seed(cloud, 1)
    path = tmp_path / "filter.txt"
    path.write_text(chosen.filter_line + "\n", encoding="utf-8")
    result = runner.invoke(
        app,
        [
            "export",
            "--store",
            STORE,
            "--table",
            TABLE,
            "--filter-file",
            str(path),
            "--filter-bucket",
            FILTER_BUCKET,
            *args,
        ],
    )
    uploaded = re.search(rf"Uploaded \S+ to gs://{FILTER_BUCKET}/(\S+)", result.stderr)
    assert uploaded, result.output
    return result, uploaded.group(1)


def _exists(name: str) -> bool:
    from google.cloud import storage

    return bool(storage.Client(project="dicom-src-test").bucket(FILTER_BUCKET).blob(name).exists())


def test_the_filter_is_deleted_once_the_export_has_ended(cloud: Cloud, tmp_path: Path) -> None:
    result, name = export_through_a_filter_file(cloud, tmp_path, "--json")
    assert result.exit_code == 0, result.output
    assert cloud.bigquery.tables  # the export read the filter while it was there
    assert not _exists(name)
    assert f"Deleted gs://{FILTER_BUCKET}/{name}: the export has ended" in result.stderr


def test_keep_filter_keeps_it_and_says_how_to_remove_it(cloud: Cloud, tmp_path: Path) -> None:
    result, name = export_through_a_filter_file(cloud, tmp_path, "--keep-filter")
    assert result.exit_code == 0, result.output
    assert _exists(name)
    said = " ".join(result.stderr.split())
    assert f"Kept gs://{FILTER_BUCKET}/{name} (--keep-filter)" in said
    found = REMOVE.search(said)
    assert found is not None
    assert found.group(1) == name


def test_the_filter_of_a_failed_export_is_deleted(cloud: Cloud, tmp_path: Path) -> None:
    cloud.bigquery.datasets.clear()  # the operation ends FAILED: dataset not found
    result, name = export_through_a_filter_file(cloud, tmp_path)
    assert result.exit_code != 0, result.output
    assert "FAILED" in result.stdout
    assert not _exists(name)


def test_the_filter_of_a_refused_export_is_deleted(cloud: Cloud, tmp_path: Path) -> None:
    cloud.healthcare.caller_denied_exports = 1  # 403 to the request: nothing started
    result, name = export_through_a_filter_file(cloud, tmp_path)
    assert result.exit_code == 1, result.output
    assert cloud.healthcare.operations == {}
    assert not _exists(name)


@pytest.mark.parametrize(
    "args",
    [pytest.param(["--no-wait"], id="no-wait"), pytest.param(["--timeout", "30s"], id="timeout")],
)
def test_the_filter_of_a_running_export_is_kept_with_the_command_that_removes_it(
    cloud: Cloud, tmp_path: Path, args: list[str]
) -> None:
    cloud.healthcare.export_seconds = 3600
    result, name = export_through_a_filter_file(cloud, tmp_path, *args)
    assert _exists(name)
    (operation,) = cloud.healthcare.operations
    said = " ".join(result.stderr.split())
    assert f"Kept gs://{FILTER_BUCKET}/{name}: operation {operation} may still read it" in said
    assert f"dicom-bq operations wait {operation}" in said
    found = REMOVE.search(said)
    assert found is not None
    assert found.group(1) == name
    assert "Traceback" not in result.output


def test_an_interrupted_export_keeps_the_filter(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicom_bq.clients.operations import Follower

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Follower, "follow", interrupted)
    result, name = export_through_a_filter_file(cloud, tmp_path)
    assert result.exit_code == 130, result.output
    assert _exists(name)
    (operation,) = cloud.healthcare.operations
    said = " ".join(result.stderr.split())
    assert f"Kept gs://{FILTER_BUCKET}/{name}: operation {operation} may still read it" in said
    assert REMOVE.search(said)


def test_a_lost_answer_with_no_export_found_keeps_the_filter(cloud: Cloud, tmp_path: Path) -> None:
    """WRITE_APPEND is never sent twice: the answer lost and no export listed, Google may still
    start one that reads the file."""
    cloud.healthcare.faults.append(Fault("POST", ":export", "reset"))
    result, name = export_through_a_filter_file(
        cloud, tmp_path, "--write-disposition", "WRITE_APPEND"
    )
    assert result.exit_code == 1, result.output
    assert _exists(name)
    said = " ".join(result.stderr.split())
    assert "its answer never came" in said
    assert "gcloud healthcare operations list --dataset=imaging" in said
    assert REMOVE.search(said)


def test_a_lost_answer_whose_export_was_found_and_ended_deletes_the_filter(
    cloud: Cloud, tmp_path: Path
) -> None:
    cloud.healthcare.faults.append(Fault("POST", ":export", "reset", after=True))
    result, name = export_through_a_filter_file(cloud, tmp_path)
    assert result.exit_code == 0, result.output
    assert "found by listing" in result.stderr
    assert not _exists(name)


def test_a_failed_delete_is_a_warning_not_a_failure(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicom_bq.clients.storage import StorageObjects

    def refused(self: StorageObjects, stored: Any) -> bool:
        raise DicomBqError("Cloud Storage refused: 403 storage.objects.delete denied")

    monkeypatch.setattr(StorageObjects, "delete_written", refused)
    result, name = export_through_a_filter_file(cloud, tmp_path, "--json")
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert f"Warning: could not delete gs://{FILTER_BUCKET}/{name}" in said
    assert "storage.objects.delete denied" in said
    assert REMOVE.search(said)


def test_keep_filter_goes_with_filter_file(request_recorder: RequestRecorder) -> None:
    result = runner.invoke(app, ["export", "--store", STORE, "--table", TABLE, "--keep-filter"])
    assert result.exit_code == 2, result.output
    assert "--keep-filter goes with --filter-file" in result.stderr
    assert request_recorder.requests == []
