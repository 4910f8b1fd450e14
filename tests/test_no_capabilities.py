"""What the CLI prints never hands out a capability, and what it names in Cloud Storage is safe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.texts import excerpt, without_capabilities
from tests.conftest import FILTER_BUCKET, STORE
from tests.fakes.http import RequestRecorder

runner = CliRunner()
SESSION = (
    "https://storage.googleapis.com/upload/storage/v1/b/dicom-src-test-filters/o?"
    "uploadType=resumable&upload_id=ADPycdtSECRET"
)


def test_a_session_url_is_withheld() -> None:
    message = f"upload failed at {SESSION}: 503"
    assert "upload_id" not in without_capabilities(message)
    assert without_capabilities(message).startswith(
        "upload failed at <upload session URL withheld>"
    )


def test_excerpts_are_short_and_escaped() -> None:
    assert excerpt("a\x1b[2Jb") == "'a\\x1b[2Jb'"
    long = excerpt("x" * 5_000_000)
    assert len(long) < 100
    assert long.endswith("(5000000 characters)")


@pytest.mark.parametrize(
    "error",
    [
        pytest.param("api_core", id="google.api_core error"),
        pytest.param("resumable", id="google.resumable_media error"),
    ],
)
def test_a_failed_upload_does_not_print_its_session_url(
    request_recorder: RequestRecorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: str
) -> None:
    from google.api_core import exceptions
    from google.cloud.storage import Blob
    from google.resumable_media import common

    def failing(self: Any, *args: Any, **kwargs: Any) -> None:
        if error == "api_core":
            raise exceptions.ServiceUnavailable(f"POST {SESSION}: backend error")
        raise common.InvalidResponse(None, f"Request failed at {SESSION}")

    monkeypatch.setattr(Blob, "upload_from_filename", failing)
    path = tmp_path / "f.txt"
    path.write_text("/studies/1.2.3\n", encoding="utf-8")
    result = runner.invoke(app, ["filter", "upload", str(path), f"gs://{FILTER_BUCKET}/f.txt"])
    assert result.exit_code == 1, result.output
    assert "upload_id" not in result.output
    assert "withheld" in result.stderr
    assert "Traceback" not in result.output
    assert request_recorder.requests == []  # the failure is the injected one, nothing was sent


def test_a_local_file_name_becomes_a_safe_object_name(
    request_recorder: RequestRecorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.cloud.storage import Blob

    names: list[str] = []

    def record(self: Any, *args: Any, **kwargs: Any) -> None:
        names.append(self.name)

    monkeypatch.setattr(Blob, "upload_from_filename", record)
    path = tmp_path / "my filter #1 [final]?.txt"
    path.write_text("/studies/1.2.3\n", encoding="utf-8")
    args = ["export", "--store", STORE, "--table", "bq://dicom-src-test.dicom_metadata.t"]
    runner.invoke(app, [*args, "--filter-file", str(path), "--filter-bucket", FILTER_BUCKET])
    (name,) = names
    assert name.startswith("dicom-bq/filters/")
    assert name.endswith("-my_filter__1__final__.txt")
    # The export names that same object (the recorder then fails it: only the name matters).
    (export_request,) = [r for r in request_recorder.requests if r.path.endswith(":export")]
    assert export_request.json()["filterConfig"] == {
        "resourcePathsGcsUri": f"gs://{FILTER_BUCKET}/{name}"
    }


def test_expired_credentials_get_the_command_that_fixes_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """google-auth raises RefreshError when a stored refresh token is expired or revoked
    (google/auth/exceptions.py); it happens before any request leaves the machine."""
    import google.auth
    from google.auth import credentials as auth_credentials
    from google.auth import exceptions

    class Expired(auth_credentials.Credentials):  # type: ignore[misc]
        def refresh(self, request: Any) -> None:
            raise exceptions.RefreshError("invalid_grant: Token has been expired or revoked.")

    for variable in ("HEALTHCARE_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(google.auth, "default", lambda scopes=None: (Expired(), "p"))
    result = runner.invoke(
        app,
        ["operations", "describe", STORE.rsplit("/dicomStores", 1)[0] + "/operations/1"],
    )
    assert result.exit_code == 1, result.output
    assert "expired or revoked" in result.stderr
    assert "gcloud auth application-default login" in result.stderr
    assert "Traceback" not in result.output
