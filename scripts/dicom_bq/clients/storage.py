"""Cloud Storage objects the CLI writes: filter files.

Every object write is sent once. google-cloud-storage (3.x) retries uploads by default
(`Blob.upload_from_string`/`upload_from_filename`, `retry=DEFAULT_RETRY`: ConnectionError, 429
and 5xx, google/cloud/storage/retry.py), so a write whose answer was lost after Cloud Storage
stored the object is sent and stored again; the tool passes `retry=None` ("A None value will
disable retries", same docstring). Below it, requests' HTTPAdapter retries nothing
(`DEFAULT_RETRIES = 0`, `Retry(0, read=False)`) and urllib3 closes a connection that an exception
interrupted instead of returning it to the pool (connectionpool.urlopen, `clean_exit`).
Cloud Storage's own retry guide classes an upload without a precondition as not idempotent
(https://cloud.google.com/storage/docs/retry-strategy).

Every request has a deadline (`timeout=`, requests' connect and read timeouts), and the retries
of a delete stop RETRY_DEADLINE seconds after the first try (Retry.with_timeout; the library's
default goes on for 120 s): a closed or silent STORAGE_EMULATOR_HOST port ends the command with
a message naming the endpoint. A write that never reached the server (its connection was
refused, or not made in time) is said to be unwritten.
"""

from __future__ import annotations

from typing import Any

from dicom_bq.clients.endpoints import Connection, Endpoint
from dicom_bq.clients.retry import connection_failure
from dicom_bq.errors import EXIT_FAILED, DicomBqError
from dicom_bq.refs import GcsUri

# Blob.upload_from_*(retry=...): None sends the request once (google/cloud/storage/blob.py).
WRITE_ONCE = None
# Seconds to connect, and to wait for each answer (google-cloud-storage's default is 60 s for
# both); seconds after which the retries of an idempotent request stop.
CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 60.0
RETRY_DEADLINE = 30.0


def _timeout() -> tuple[float, float]:
    return (CONNECT_TIMEOUT, READ_TIMEOUT)


def _never_connected(error: BaseException) -> bool:
    """Whether the request never left: its connection was refused or not made in time."""
    import requests
    from urllib3.exceptions import NewConnectionError

    if isinstance(error, requests.ConnectTimeout):
        return True
    while isinstance(getattr(error, "cause", None), BaseException):  # a RetryError's last
        error = error.cause  # type: ignore[attr-defined]
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, NewConnectionError) or isinstance(
        error.__context__, NewConnectionError
    )


def _where(endpoint: Endpoint) -> str:
    variable = " (STORAGE_EMULATOR_HOST)" if endpoint.emulated else ""
    return f"Cloud Storage at {endpoint.url}{variable}"


def _write_failed(target: GcsUri, error: Exception, endpoint: Endpoint) -> DicomBqError:
    from google.api_core import exceptions

    if isinstance(error, exceptions.GoogleAPIError):
        return DicomBqError(f"could not write {target.uri}: {error}", exit_code=EXIT_FAILED)
    if _never_connected(error):
        return DicomBqError(
            f"could not write {target.uri}: {_where(endpoint)} could not be reached "
            f"({connection_failure(error)}); nothing was written. "
            "Check that the endpoint is right and reachable, then run the command again",
            exit_code=EXIT_FAILED,
        )
    return DicomBqError(
        f"could not write {target.uri}: the answer was lost ({type(error).__name__}: {error}). "
        "The write is not sent again: the object may or may not have been written; check with "
        f"`gcloud storage ls -l {target.uri}`, then run the command again",
        exit_code=EXIT_FAILED,
    )


class StorageObjects:
    def __init__(self, connection: Connection, project: str) -> None:
        self._client = connection.storage_client(project)
        self._endpoint = connection.storage()

    def upload_text(self, target: GcsUri, text: str) -> None:
        import requests
        from google.api_core import exceptions

        try:
            blob = self._client.bucket(target.bucket).blob(target.name)
            blob.upload_from_string(
                text, content_type="text/plain", retry=WRITE_ONCE, timeout=_timeout()
            )
        except (exceptions.GoogleAPIError, requests.RequestException) as error:
            raise _write_failed(target, error, self._endpoint) from None

    def upload_file(self, source: str, target: GcsUri, chunk_size: int) -> int:
        """One upload of the file, returning its size: a single multipart request up to 8 MiB
        (google-cloud-storage's _MAX_MULTIPART_SIZE), else resumable in `chunk_size` pieces (a
        multiple of 256 KiB); nothing of it is sent twice."""
        import requests
        from google.api_core import exceptions

        try:
            blob = self._client.bucket(target.bucket).blob(target.name, chunk_size=chunk_size)
            blob.upload_from_filename(
                source, content_type="text/plain", retry=WRITE_ONCE, timeout=_timeout()
            )
            return int(blob.size or 0)
        except (exceptions.GoogleAPIError, requests.RequestException) as error:
            raise _write_failed(target, error, self._endpoint) from None

    def delete(self, target: GcsUri) -> None:
        """Delete the object; a missing one is no error. Retried (a resent delete finds the object
        gone: 404) until RETRY_DEADLINE."""
        import requests
        from google.api_core import exceptions

        try:
            self._client.bucket(target.bucket).blob(target.name).delete(
                retry=_delete_retry(), timeout=_timeout()
            )
        except exceptions.NotFound:
            return
        except (exceptions.RetryError, requests.RequestException) as error:
            cause = error.cause if isinstance(error, exceptions.RetryError) else error
            raise DicomBqError(
                f"{_where(self._endpoint)} did not answer ({type(cause).__name__}: "
                f"{connection_failure(cause)}; tried for up to {RETRY_DEADLINE:g}s)",
                exit_code=EXIT_FAILED,
            ) from None
        except exceptions.GoogleAPIError as error:
            raise DicomBqError(f"Cloud Storage refused: {error}", exit_code=EXIT_FAILED) from None


def _delete_retry() -> Any:
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(RETRY_DEADLINE)
