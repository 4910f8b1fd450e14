"""The storage tier: gs:// writes and deletes against fake-gcs-server, a peer that enforces Cloud
Storage's generation preconditions (gcp-storage-emulator does not: tests/peers.py says what was
measured). `filter build -o gs://` and `filter upload` never replace an object without --force;
with --force they replace only the generation they read; `export --filter-file` deletes the
object it uploaded once the export has ended, and never an object another writer put there.

Run by scripts/test after the fast tier whenever Go is present (pytest marker `storage_peer`);
without Go the fixture skips the tier and says why."""

from __future__ import annotations

import functools
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.clients.storage import StorageObjects, StoredObject
from dicom_bq.refs import GcsUri
from tests.conftest import FILTER_BUCKET, Cloud
from tests.peers import fake_gcs_server_url, storage_peer  # noqa: F401 (fixtures)
from tests.test_export_filter_cleanup import export_through_a_filter_file

pytestmark = pytest.mark.storage_peer

runner = CliRunner()
LINE = "/studies/1.2.840.1/series/1.2.840.2"
OTHER = "/studies/9.9.9\n"


@pytest.fixture
def storage_url(fake_gcs_server_url: str) -> str:  # noqa: F811 (conftest's, replaced)
    """The `cloud` fixture's Cloud Storage is fake-gcs-server here."""
    return fake_gcs_server_url


def _bucket(url: str) -> Any:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project="dicom-src-test",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=url),
    )
    bucket = client.bucket(FILTER_BUCKET)
    if not bucket.exists():
        bucket = client.create_bucket(FILTER_BUCKET)
    return bucket


def _put(url: str, name: str, text: str) -> int:
    """Another writer's object; its generation."""
    blob = _bucket(url).blob(name)
    blob.upload_from_string(text, retry=None)
    return int(blob.generation)


def _read(url: str, name: str) -> str | None:
    blob = _bucket(url).get_blob(name)
    return None if blob is None else str(blob.download_as_text())


def _name() -> str:
    return f"t/{uuid.uuid4().hex}.txt"


def _filter_file(tmp_path: Path, text: str = LINE + "\n") -> Path:
    path = tmp_path / "filter.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("how", ["multipart", "resumable", "text"])
def test_the_peer_refuses_a_create_only_write_over_an_object(
    storage_peer: str,  # noqa: F811
    tmp_path: Path,
    how: str,
) -> None:
    """What the rest relies on, at the client: every write is create-only by default, its
    ifGenerationMatch=0 sent and enforced, a resumable upload's too (past 8 MiB)."""
    from dicom_bq.clients.endpoints import Connection
    from dicom_bq.clients.storage import GenerationMismatchError

    name = _name()
    _put(storage_peer, name, OTHER)
    objects = StorageObjects(Connection(), FILTER_BUCKET)
    target = GcsUri(FILTER_BUCKET, name)
    source = _filter_file(tmp_path, (LINE + "\n") * (300_000 if how == "resumable" else 1))
    write = (
        functools.partial(objects.upload_text, target, LINE + "\n")
        if how == "text"
        else functools.partial(objects.upload_file, str(source), target, 1 << 20)
    )
    with pytest.raises(GenerationMismatchError):
        write()
    assert _read(storage_peer, name) == OTHER


def test_upload_refuses_an_existing_object_and_leaves_it_as_it_was(
    storage_peer: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    name = _name()
    _put(storage_peer, name, OTHER)
    result = runner.invoke(
        app, ["filter", "upload", str(_filter_file(tmp_path)), f"gs://{FILTER_BUCKET}/{name}"]
    )
    assert result.exit_code == 2, result.output
    said = " ".join(result.stderr.split())
    assert f"gs://{FILTER_BUCKET}/{name} exists: pass --force to replace it" in said
    assert "Traceback" not in result.output
    assert _read(storage_peer, name) == OTHER


def test_upload_with_force_replaces_and_names_the_generation_replaced(
    storage_peer: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    name = _name()
    old = _put(storage_peer, name, OTHER)
    result = runner.invoke(
        app,
        [
            "filter",
            "upload",
            str(_filter_file(tmp_path)),
            f"gs://{FILTER_BUCKET}/{name}",
            "--force",
        ],
    )
    assert result.exit_code == 0, result.output
    assert _read(storage_peer, name) == LINE + "\n"
    assert f"replaced generation {old})" in result.stdout


def test_upload_with_force_of_a_new_object_replaces_nothing(
    storage_peer: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    name = _name()
    result = runner.invoke(
        app,
        [
            "filter",
            "upload",
            str(_filter_file(tmp_path)),
            f"gs://{FILTER_BUCKET}/{name}",
            "--force",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "replaced" not in result.stdout
    assert _read(storage_peer, name) == LINE + "\n"


def _writer_slips_in(monkeypatch: pytest.MonkeyPatch, url: str, name: str) -> None:
    """Another writer writes the object right after this command read its generation."""
    read = StorageObjects.generation

    def then_written(self: StorageObjects, target: GcsUri) -> int | None:
        found = read(self, target)
        _put(url, name, OTHER)
        return found

    monkeypatch.setattr(StorageObjects, "generation", then_written)


@pytest.mark.parametrize("exists", [True, False], ids=["replacing", "creating"])
def test_upload_with_force_refuses_a_write_that_slipped_in_after_the_read(
    storage_peer: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    exists: bool,
) -> None:
    name = _name()
    if exists:
        _put(storage_peer, name, "/studies/1.1\n")
    _writer_slips_in(monkeypatch, storage_peer, name)
    result = runner.invoke(
        app,
        [
            "filter",
            "upload",
            str(_filter_file(tmp_path)),
            f"gs://{FILTER_BUCKET}/{name}",
            "--force",
        ],
    )
    assert result.exit_code == 1, result.output
    said = " ".join(result.stderr.split())
    assert f"gs://{FILTER_BUCKET}/{name} changed while it was being replaced" in said
    assert "nothing was overwritten" in said
    assert _read(storage_peer, name) == OTHER  # the other writer's content stands


def test_build_refuses_an_existing_object_before_building(
    storage_peer: str,  # noqa: F811
) -> None:
    name = _name()
    _put(storage_peer, name, OTHER)
    result = runner.invoke(
        app, ["filter", "build", "-o", f"gs://{FILTER_BUCKET}/{name}"], input=LINE + "\n"
    )
    assert result.exit_code == 2, result.output
    assert f"gs://{FILTER_BUCKET}/{name} exists: pass --force" in " ".join(result.stderr.split())
    assert _read(storage_peer, name) == OTHER


def test_build_refuses_an_object_created_while_it_built(
    storage_peer: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without --force the write itself is create-only: the early look is no guarantee."""
    name = _name()
    _writer_slips_in(monkeypatch, storage_peer, name)
    result = runner.invoke(
        app, ["filter", "build", "-o", f"gs://{FILTER_BUCKET}/{name}"], input=LINE + "\n"
    )
    assert result.exit_code == 2, result.output
    assert f"gs://{FILTER_BUCKET}/{name} exists: pass --force" in " ".join(result.stderr.split())
    assert _read(storage_peer, name) == OTHER


def test_build_with_force_replaces_the_generation_it_read(
    storage_peer: str,  # noqa: F811
) -> None:
    name = _name()
    old = _put(storage_peer, name, OTHER)
    result = runner.invoke(
        app,
        ["filter", "build", "-o", f"gs://{FILTER_BUCKET}/{name}", "--force"],
        input=LINE + "\n",
    )
    assert result.exit_code == 0, result.output
    assert f"replaced generation {old})" in result.stderr
    assert _read(storage_peer, name) == LINE + "\n"


def test_build_with_force_refuses_a_write_that_slipped_in(
    storage_peer: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = _name()
    _put(storage_peer, name, "/studies/1.1\n")
    _writer_slips_in(monkeypatch, storage_peer, name)
    result = runner.invoke(
        app,
        ["filter", "build", "-o", f"gs://{FILTER_BUCKET}/{name}", "--force"],
        input=LINE + "\n",
    )
    assert result.exit_code == 1, result.output
    assert "changed while it was being replaced" in " ".join(result.stderr.split())
    assert _read(storage_peer, name) == OTHER


# -- export --filter-file ---------------------------------------------------------------------


def test_export_deletes_its_filter_once_the_operation_has_ended(
    cloud: Cloud, tmp_path: Path
) -> None:
    result, name = export_through_a_filter_file(cloud, tmp_path, "--json")
    assert result.exit_code == 0, result.output
    # The export read it while it was there: exactly the one instance it names.
    assert len(next(iter(cloud.bigquery.tables.values()))) == 1
    assert _read(cloud.storage_url, name) is None


def test_export_with_keep_filter_keeps_it(cloud: Cloud, tmp_path: Path) -> None:
    result, name = export_through_a_filter_file(cloud, tmp_path, "--keep-filter")
    assert result.exit_code == 0, result.output
    assert _read(cloud.storage_url, name) is not None
    assert f"gcloud storage rm gs://{FILTER_BUCKET}/{name} --if-generation-match=" in " ".join(
        result.stderr.split()
    )


def test_export_never_deletes_a_filter_object_another_writer_replaced(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The object is replaced between the upload and the delete: the delete names the generation
    it uploaded, so the other writer's object stays."""
    delete = StorageObjects.delete_written

    def replaced_first(self: StorageObjects, stored: StoredObject) -> bool:
        _put(cloud.storage_url, stored.uri.name, OTHER)
        return delete(self, stored)

    monkeypatch.setattr(StorageObjects, "delete_written", replaced_first)
    result, name = export_through_a_filter_file(cloud, tmp_path)
    assert result.exit_code == 0, result.output
    assert _read(cloud.storage_url, name) == OTHER
    said = " ".join(result.stderr.split())
    assert f"gs://{FILTER_BUCKET}/{name}" in said
    assert "nothing deleted" in said or "left" in said
