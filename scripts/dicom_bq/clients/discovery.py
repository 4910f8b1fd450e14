"""A Google REST API through the discovery client: static documents, retries, clear errors.

The discovery documents are the copies shipped in google-api-python-client, so no discovery
request is made and the request shapes are Google's own.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import google_auth_httplib2
import httplib2
from googleapiclient import discovery, discovery_cache
from googleapiclient.errors import HttpError

from dicom_bq.clients.endpoints import Connection, Endpoint
from dicom_bq.clients.retry import RETRYABLE_STATUSES, RetryPolicy, TransientError
from dicom_bq.clients.transport import SendOnceHttp

REQUEST_TIMEOUT = 60.0


class ApiCallError(Exception):
    """An answer that retrying will not change (400, 403, 404...), or retries ran out."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def error_details(status: int, content: bytes | str | None) -> ApiCallError:
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else (content or "")
    try:
        error = json.loads(text).get("error", {})
        return ApiCallError(status, str(error.get("status", "")), str(error.get("message", text)))
    except (ValueError, AttributeError):
        return ApiCallError(status, "", text.strip()[:500])


@functools.cache
def discovery_document(api: str, version: str) -> dict[str, Any]:
    """The static document, parsed once per process (it is up to a megabyte of JSON, and each
    client is built from it). Shared: googleapiclient itself re-applies its in-place fix-ups to
    the same method descriptions each time a resource is reached, so they are idempotent."""
    text = discovery_cache.get_static_doc(api, version)
    if text is None:
        raise RuntimeError(f"google-api-python-client ships no {api} {version} document")
    document: dict[str, Any] = json.loads(text)
    return document


class GoogleApi:
    def __init__(
        self,
        api: str,
        version: str,
        endpoint: Endpoint,
        credentials: Any,
        retry: RetryPolicy | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.retry = retry or RetryPolicy()
        # SendOnceHttp: no hidden resend of a POST, no connection reused after an exception
        # (clients/transport.py); `timeout` bounds each connect and each read of the socket.
        self.http = google_auth_httplib2.AuthorizedHttp(
            credentials, http=SendOnceHttp(timeout=request_timeout)
        )
        self._collections: dict[str, Any] = {}
        self.service = discovery.build_from_document(
            discovery_document(api, version),
            http=self.http,
            # The universe, or the emulator / private endpoint that overrides it.
            client_options=endpoint.discovery_options(),
        )

    def _once(self, request: Any) -> Any:
        try:
            return request.execute(num_retries=0)
        except HttpError as error:
            status = int(error.resp.status)
            if status in RETRYABLE_STATUSES:
                raise TransientError(f"HTTP {status} from {request.uri}") from None
            raise error_details(status, error.content) from None
        except (TimeoutError, OSError, httplib2.HttpLib2Error) as error:
            raise TransientError(f"{type(error).__name__} talking to {request.uri}") from None

    def collection(self, path: str) -> Any:
        """The resource at `path` ("projects.locations.datasets"), built once: googleapiclient
        builds every method of a resource each time one is reached, which cost more CPU than
        the requests themselves."""
        if path not in self._collections:
            resource = self.service
            for name in path.split("."):
                resource = getattr(resource, name)()
            self._collections[path] = resource
        return self._collections[path]

    def request(self, method: str, arguments: dict[str, Any]) -> Any:
        """The request for `method` named as the discovery document nests it
        ("projects.locations.datasets.dicomStores.getIamPolicy"), not yet sent."""
        path, _, name = method.rpartition(".")
        resource = self.collection(path) if path else self.service
        return getattr(resource, name)(**arguments)

    def call(self, request: Any) -> Any:
        try:
            return self.retry.run(lambda: self._once(request))
        except TransientError as error:
            raise ApiCallError(503, "UNAVAILABLE", f"gave up after retries: {error}") from None

    def raw(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> bytes:
        """A request the discovery document does not describe (DICOMweb), same retries."""

        def once() -> bytes:
            try:
                response, content = self.http.request(url, method, body=body, headers=headers)
            except (OSError, httplib2.HttpLib2Error) as error:
                raise TransientError(f"{type(error).__name__} talking to {url}") from None
            status = int(response.status)
            if status in RETRYABLE_STATUSES:
                raise TransientError(f"HTTP {status} from {url}")
            if status >= 400:
                raise error_details(status, content)
            return bytes(content)

        try:
            return self.retry.run(once)
        except TransientError as error:
            raise ApiCallError(503, "UNAVAILABLE", f"gave up after retries: {error}") from None


# Each REST API dicom-bq reads through its discovery document: (version, servicePath). The
# discovery client's api_endpoint replaces rootUrl *and* servicePath, so the path is kept here.
DISCOVERY_APIS = {
    "cloudresourcemanager": ("v1", ""),
    "serviceusage": ("v1", ""),
    "bigquery": ("v2", "bigquery/v2/"),
    "storage": ("v1", "storage/v1/"),
    "pubsub": ("v1", ""),
    "cloudkms": ("v1", ""),
    "healthcare": ("v1", ""),
    "iam": ("v1", ""),
    # rootUrl https://cloudscheduler.googleapis.com/, servicePath "" (cloudscheduler v1 document)
    "cloudscheduler": ("v1", ""),
}


class DiscoveryClients:
    """One GoogleApi per API, built on first use with the connection's endpoints and identity."""

    def __init__(self, connection: Connection, retry: RetryPolicy | None = None) -> None:
        self.connection = connection
        self.retry = retry
        self.built: dict[str, GoogleApi] = {}

    def api(self, name: str) -> GoogleApi:
        if name not in self.built:
            version, service_path = DISCOVERY_APIS[name]
            endpoint = self.connection.discovery_endpoint(name, service_path)
            self.built[name] = GoogleApi(
                name,
                version,
                endpoint,
                self.connection.credentials(endpoint.emulated),
                retry=self.retry,
            )
        return self.built[name]
