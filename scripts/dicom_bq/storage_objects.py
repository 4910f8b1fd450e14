"""Cloud Storage objects the CLI writes: filter files."""

from __future__ import annotations

from dicom_bq.endpoints import Connection
from dicom_bq.errors import EXIT_FAILED, DicomBqError
from dicom_bq.refs import GcsUri


class StorageObjects:
    def __init__(self, connection: Connection, project: str) -> None:
        from google.api_core.client_options import ClientOptions
        from google.cloud import storage  # type: ignore[attr-defined]

        endpoint = connection.storage()
        options = ClientOptions(api_endpoint=endpoint.url.rstrip("/")) if endpoint else None
        self._client = storage.Client(
            project=project,
            credentials=connection.credentials(endpoint is not None),
            client_options=options,
        )

    def upload_text(self, target: GcsUri, text: str) -> None:
        from google.api_core import exceptions

        try:
            blob = self._client.bucket(target.bucket).blob(target.name)
            blob.upload_from_string(text, content_type="text/plain")
        except exceptions.GoogleAPIError as error:
            raise DicomBqError(
                f"could not write {target.uri}: {error}", exit_code=EXIT_FAILED
            ) from None

    def delete(self, target: GcsUri) -> None:
        from google.api_core import exceptions

        try:
            self._client.bucket(target.bucket).blob(target.name).delete()
        except exceptions.NotFound:
            return
