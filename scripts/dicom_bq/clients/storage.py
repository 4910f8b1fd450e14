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
"""

from __future__ import annotations

from dicom_bq.clients.endpoints import Connection
from dicom_bq.errors import EXIT_FAILED, DicomBqError
from dicom_bq.refs import GcsUri

# Blob.upload_from_*(retry=...): None sends the request once (google/cloud/storage/blob.py).
WRITE_ONCE = None


def _write_failed(target: GcsUri, error: Exception) -> DicomBqError:
    from google.api_core import exceptions

    if isinstance(error, exceptions.GoogleAPIError):
        return DicomBqError(f"could not write {target.uri}: {error}", exit_code=EXIT_FAILED)
    return DicomBqError(
        f"could not write {target.uri}: the answer was lost ({type(error).__name__}: {error}). "
        "The write is not sent again: the object may or may not have been written; check with "
        f"`gcloud storage ls -l {target.uri}`, then run the command again",
        exit_code=EXIT_FAILED,
    )


class StorageObjects:
    def __init__(self, connection: Connection, project: str) -> None:
        self._client = connection.storage_client(project)

    def upload_text(self, target: GcsUri, text: str) -> None:
        import requests
        from google.api_core import exceptions

        try:
            blob = self._client.bucket(target.bucket).blob(target.name)
            blob.upload_from_string(text, content_type="text/plain", retry=WRITE_ONCE)
        except (exceptions.GoogleAPIError, requests.RequestException) as error:
            raise _write_failed(target, error) from None

    def upload_file(self, source: str, target: GcsUri, chunk_size: int) -> int:
        """One upload of the file, returning its size: a single multipart request up to 8 MiB
        (google-cloud-storage's _MAX_MULTIPART_SIZE), else resumable in `chunk_size` pieces (a
        multiple of 256 KiB); nothing of it is sent twice."""
        import requests
        from google.api_core import exceptions

        try:
            blob = self._client.bucket(target.bucket).blob(target.name, chunk_size=chunk_size)
            blob.upload_from_filename(source, content_type="text/plain", retry=WRITE_ONCE)
            return int(blob.size or 0)
        except (exceptions.GoogleAPIError, requests.RequestException) as error:
            raise _write_failed(target, error) from None

    def delete(self, target: GcsUri) -> None:
        from google.api_core import exceptions

        try:
            self._client.bucket(target.bucket).blob(target.name).delete()
        except exceptions.NotFound:
            return
