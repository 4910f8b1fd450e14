"""The Cloud Healthcare API calls dicom-bq makes, through Google's discovery client.

The discovery documents are the static copies shipped in google-api-python-client (v1 and
v1beta1), so no discovery request is made and the request shapes are Google's own.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import httplib2
from googleapiclient.errors import HttpError

from dicom_bq.clients.discovery import REQUEST_TIMEOUT, ApiCallError, GoogleApi, error_details
from dicom_bq.clients.endpoints import Connection
from dicom_bq.clients.retry import RetryPolicy
from dicom_bq.refs import WriteDisposition

__all__ = [
    "API_VERSIONS",
    "ApiCallError",
    "ExportAnswerLostError",
    "ExportNotStartedError",
    "ExportRequest",
    "HealthcareApi",
]

API_VERSIONS = ("v1", "v1beta1")


@dataclass(frozen=True)
class ExportRequest:
    store: str
    table_uri: str
    write_disposition: WriteDisposition | None = None
    force: bool | None = None
    filter_uri: str | None = None

    def body(self) -> dict[str, Any]:
        destination: dict[str, Any] = {"tableUri": self.table_uri}
        # The API takes one of the two; writeDisposition wins when both are sent, so never both.
        if self.force is not None:
            destination["force"] = self.force
        else:
            destination["writeDisposition"] = (
                self.write_disposition or WriteDisposition.WRITE_EMPTY
            ).value
        body: dict[str, Any] = {"bigqueryDestination": destination}
        if self.filter_uri:
            body["filterConfig"] = {"resourcePathsGcsUri": self.filter_uri}
        return body


class ExportNotStartedError(Exception):
    """The export request was refused before Google acted on it: sending it again is safe."""


class ExportAnswerLostError(Exception):
    """The export request may have started an operation whose answer never arrived: a 5xx
    after sending, a reset connection, a timeout. Sending it again may export twice."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


# 429 RESOURCE_EXHAUSTED is a refusal (quota), not a failure half-way
# (https://cloud.google.com/apis/design/errors#handling_errors: "retry" for 429 and 503, but a
# 503 or 500 may come after the work was done, and a non-idempotent POST is not retried blindly).
_REFUSED_STATUSES = frozenset({429})


class HealthcareApi(GoogleApi):
    def __init__(
        self,
        connection: Connection,
        api_version: str = "v1",
        retry: RetryPolicy | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        endpoint = connection.healthcare()
        super().__init__(
            "healthcare",
            api_version,
            endpoint,
            connection.credentials(endpoint.emulated),
            retry,
            request_timeout,
        )
        self.api_version = api_version
        self.base_url = f"{endpoint.url}{api_version}/"

    def _stores(self) -> Any:
        return self.service.projects().locations().datasets().dicomStores()

    def export_once(self, request: ExportRequest) -> dict[str, Any]:
        """One export POST, never retried here: the caller decides, knowing what it risks."""
        call = self._stores().export(name=request.store, body=request.body())
        try:
            return dict(call.execute(num_retries=0))
        except HttpError as error:
            status = int(error.resp.status)
            if status in _REFUSED_STATUSES:
                raise ExportNotStartedError(f"HTTP {status}") from None
            if status >= 500:
                raise ExportAnswerLostError(f"HTTP {status} after the request was sent") from None
            raise error_details(status, error.content) from None
        except ConnectionRefusedError:
            raise ExportNotStartedError("connection refused") from None
        except (TimeoutError, OSError, httplib2.HttpLib2Error) as error:
            raise ExportAnswerLostError(
                f"{type(error).__name__} before the answer arrived"
            ) from None

    def list_operations(self, dataset: str, page_token: str | None = None) -> dict[str, Any]:
        operations = self.service.projects().locations().datasets().operations()
        return dict(self.call(operations.list(name=dataset, pageSize=100, pageToken=page_token)))

    def create_store(self, dataset: str, store_id: str, labels: dict[str, str]) -> dict[str, Any]:
        return dict(
            self.call(
                self._stores().create(
                    parent=dataset, dicomStoreId=store_id, body={"labels": labels}
                )
            )
        )

    def delete_store(self, name: str) -> None:
        self.call(self._stores().delete(name=name))

    def get_operation(self, name: str) -> dict[str, Any]:
        operations = self.service.projects().locations().datasets().operations()
        return dict(self.call(operations.get(name=name)))

    def get_store(self, name: str) -> dict[str, Any]:
        return dict(self.call(self._stores().get(name=name)))

    def store_metrics(self, name: str) -> dict[str, Any]:
        return dict(self.call(self._stores().getDICOMStoreMetrics(name=name)))

    def dicomweb_url(self, store: str) -> str:
        return f"{self.base_url}{store}/dicomWeb"

    def store_instance(self, store: str, instance: bytes) -> dict[str, Any]:
        """STOW-RS one Part 10 instance as multipart/related, which every DICOMweb server takes."""
        boundary = f"dicom-bq-{uuid.uuid4().hex}"
        body = (
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + instance
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
        content = self.raw("POST", f"{self.dicomweb_url(store)}/studies", body, headers)
        return json.loads(content) if content.strip() else {}

    def delete_instance(self, store: str, study: str, series: str, instance: str) -> None:
        path = f"/studies/{study}/series/{series}/instances/{instance}"
        self.raw("DELETE", self.dicomweb_url(store) + path, None, {})
