"""The Cloud Healthcare API calls dicom-bq makes, through Google's discovery client.

The discovery documents are the static copies shipped in google-api-python-client (v1 and
v1beta1), so no discovery request is made and the request shapes are Google's own.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import google_auth_httplib2
import httplib2
from googleapiclient import discovery, discovery_cache
from googleapiclient.errors import HttpError

from dicom_bq.endpoints import Connection
from dicom_bq.refs import WriteDisposition
from dicom_bq.retry import RETRYABLE_STATUSES, RetryPolicy, TransientError

API_VERSIONS = ("v1", "v1beta1")
REQUEST_TIMEOUT = 60.0


class ApiCallError(Exception):
    """An answer that retrying will not change (400, 403, 404...), or retries ran out."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def _error_details(status: int, content: bytes | str | None) -> ApiCallError:
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else (content or "")
    try:
        error = json.loads(text).get("error", {})
        return ApiCallError(status, str(error.get("status", "")), str(error.get("message", text)))
    except (ValueError, AttributeError):
        return ApiCallError(status, "", text.strip()[:500])


def discovery_document(api_version: str) -> dict[str, Any]:
    text = discovery_cache.get_static_doc("healthcare", api_version)
    if text is None:
        raise RuntimeError(f"google-api-python-client ships no healthcare {api_version} document")
    document: dict[str, Any] = json.loads(text)
    return document


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


class HealthcareApi:
    def __init__(
        self,
        connection: Connection,
        api_version: str = "v1",
        retry: RetryPolicy | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        endpoint = connection.healthcare()
        credentials = connection.credentials(endpoint.emulated)
        self.api_version = api_version
        self.base_url = f"{endpoint.url}{api_version}/"
        self.retry = retry or RetryPolicy()
        self._http = google_auth_httplib2.AuthorizedHttp(
            credentials, http=httplib2.Http(timeout=request_timeout)
        )
        self._service = discovery.build_from_document(
            discovery_document(api_version),
            http=self._http,
            client_options={"api_endpoint": endpoint.url},
        )

    # -- plumbing ---------------------------------------------------------------------------

    def _once(self, request: Any) -> Any:
        try:
            return request.execute(num_retries=0)
        except HttpError as error:
            status = int(error.resp.status)
            if status in RETRYABLE_STATUSES:
                raise TransientError(f"HTTP {status} from {request.uri}") from None
            raise _error_details(status, error.content) from None
        except (TimeoutError, OSError, httplib2.HttpLib2Error) as error:
            raise TransientError(f"{type(error).__name__} talking to {request.uri}") from None

    def _call(self, request: Any) -> Any:
        try:
            return self.retry.run(lambda: self._once(request))
        except TransientError as error:
            raise ApiCallError(503, "UNAVAILABLE", f"gave up after retries: {error}") from None

    def _raw(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> bytes:
        def once() -> bytes:
            try:
                response, content = self._http.request(url, method, body=body, headers=headers)
            except (OSError, httplib2.HttpLib2Error) as error:
                raise TransientError(f"{type(error).__name__} talking to {url}") from None
            status = int(response.status)
            if status in RETRYABLE_STATUSES:
                raise TransientError(f"HTTP {status} from {url}")
            if status >= 400:
                raise _error_details(status, content)
            return bytes(content)

        try:
            return self.retry.run(once)
        except TransientError as error:
            raise ApiCallError(503, "UNAVAILABLE", f"gave up after retries: {error}") from None

    def _stores(self) -> Any:
        return self._service.projects().locations().datasets().dicomStores()

    # -- the API ----------------------------------------------------------------------------

    def export(self, request: ExportRequest) -> dict[str, Any]:
        return dict(self._call(self._stores().export(name=request.store, body=request.body())))

    def get_operation(self, name: str) -> dict[str, Any]:
        operations = self._service.projects().locations().datasets().operations()
        return dict(self._call(operations.get(name=name)))

    def get_store(self, name: str) -> dict[str, Any]:
        return dict(self._call(self._stores().get(name=name)))

    def store_metrics(self, name: str) -> dict[str, Any]:
        return dict(self._call(self._stores().getDICOMStoreMetrics(name=name)))

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
        content = self._raw("POST", f"{self.dicomweb_url(store)}/studies", body, headers)
        return json.loads(content) if content.strip() else {}

    def delete_instance(self, store: str, study: str, series: str, instance: str) -> None:
        path = f"/studies/{study}/series/{series}/instances/{instance}"
        self._raw("DELETE", self.dicomweb_url(store) + path, None, {})
