"""Cloud Storage objects the CLI writes: filter files."""

from __future__ import annotations

from dicom_bq.clients.endpoints import Connection
from dicom_bq.errors import EXIT_FAILED, DicomBqError
from dicom_bq.refs import GcsUri


class StorageObjects:
    def __init__(self, connection: Connection, project: str) -> None:
        self._client = connection.storage_client(project)

    def upload_text(self, target: GcsUri, text: str) -> None:
        from google.api_core import exceptions

        try:
            blob = self._client.bucket(target.bucket).blob(target.name)
            blob.upload_from_string(text, content_type="text/plain")
        except exceptions.GoogleAPIError as error:
            raise DicomBqError(
                f"could not write {target.uri}: {error}", exit_code=EXIT_FAILED
            ) from None

    def upload_file(self, source: str, target: GcsUri, chunk_size: int) -> int:
        """A resumable upload in `chunk_size` pieces (a multiple of 256 KiB); returns the size."""
        from google.api_core import exceptions

        try:
            blob = self._client.bucket(target.bucket).blob(target.name, chunk_size=chunk_size)
            blob.upload_from_filename(source, content_type="text/plain")
            return int(blob.size or 0)
        except exceptions.GoogleAPIError as error:
            raise DicomBqError(
                f"could not upload to {target.uri}: {error}", exit_code=EXIT_FAILED
            ) from None

    def delete(self, target: GcsUri) -> None:
        from google.api_core import exceptions

        try:
            self._client.bucket(target.bucket).blob(target.name).delete()
        except exceptions.NotFound:
            return
