"""Where each Google API is reached, and with which credentials.

Production and local runs share this code: an emulator variable (HEALTHCARE_EMULATOR_HOST,
BIGQUERY_EMULATOR_HOST, STORAGE_EMULATOR_HOST, as a URL such as http://127.0.0.1:8123) only
(and IAM_EMULATOR_HOST, RESOURCEMANAGER_EMULATOR_HOST for the audit) only
changes the endpoint and switches to anonymous credentials, as Google's own clients do for
STORAGE_EMULATOR_HOST.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dicom_bq.errors import DicomBqError
from dicom_bq.infra import naming
from dicom_bq.texts import excerpt

CLOUD_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
NO_CREDENTIALS = (
    "no Google credentials found: run `gcloud auth application-default login` (or set "
    "GOOGLE_APPLICATION_CREDENTIALS), then try again"
)


@dataclass(frozen=True)
class Endpoint:
    url: str  # scheme://host[:port]/ with a trailing slash
    emulated: bool


@dataclass(frozen=True)
class Connection:
    """What every client of one CLI run needs: endpoints and the identity to call them as."""

    universe_domain: str = naming.DEFAULT_UNIVERSE
    healthcare_endpoint: str | None = None  # --api-endpoint, for private endpoints
    impersonate: str | None = None
    environ: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        """--api-endpoint is checked when given, whether or not an emulator is in use."""
        if self.healthcare_endpoint is None:
            return
        url = self.healthcare_endpoint
        if not url.startswith(("https://", "http://")) or url != url.strip():
            raise DicomBqError(
                f"--api-endpoint {excerpt(url)} is not valid: give a URL such as "
                "https://healthcare.googleapis.com/"
            )
        host = (urlsplit(url).hostname or "").lower()
        if url.startswith("http://") and host not in LOOPBACK_HOSTS:
            # The request carries the caller's OAuth access token: never in clear text off
            # this machine (RFC 6750 section 5.3: bearer tokens only over TLS).
            raise DicomBqError(
                f"--api-endpoint {excerpt(url)} is plain HTTP to another machine: your "
                "access token would travel in clear text. Use https://, or http:// only to "
                "127.0.0.1/localhost"
            )

    def _env(self, name: str) -> str | None:
        value = (self.environ if self.environ is not None else os.environ).get(name)
        return value or None

    def _emulator(self, variable: str) -> Endpoint | None:
        host = self._env(variable)
        if host is None:
            return None
        url = host if "://" in host else f"http://{host}"
        return Endpoint(url.rstrip("/") + "/", emulated=True)

    def healthcare(self) -> Endpoint:
        emulator = self._emulator("HEALTHCARE_EMULATOR_HOST")
        if emulator:
            return emulator
        if self.healthcare_endpoint is not None:
            return Endpoint(self.healthcare_endpoint.rstrip("/") + "/", emulated=False)
        return Endpoint(f"https://healthcare.{self.universe_domain}/", emulated=False)

    def _service(self, variable: str, service: str) -> Endpoint:
        return self._emulator(variable) or Endpoint(
            f"https://{service}.{self.universe_domain}/", emulated=False
        )

    # The emulator variable of each Google REST API read through its discovery document.
    # PUBSUB_EMULATOR_HOST and STORAGE_EMULATOR_HOST are Google's own names; the others follow
    # the same convention.
    _EMULATOR_VARIABLES = {  # noqa: RUF012 - a constant table
        "serviceusage": "SERVICEUSAGE_EMULATOR_HOST",
        "cloudresourcemanager": "RESOURCEMANAGER_EMULATOR_HOST",
        "storage": "STORAGE_EMULATOR_HOST",
        "pubsub": "PUBSUB_EMULATOR_HOST",
        "cloudkms": "KMS_EMULATOR_HOST",
        "healthcare": "HEALTHCARE_EMULATOR_HOST",
        "bigquery": "BIGQUERY_EMULATOR_HOST",
        "iam": "IAM_EMULATOR_HOST",
    }

    def discovery_endpoint(self, api: str, service_path: str) -> Endpoint:
        """The base URL a discovery client needs: its `api_endpoint` replaces the document's
        rootUrl *and* servicePath (googleapiclient discovery.build_from_document), so the
        servicePath ("storage/v1/", "bigquery/v2/") is appended here."""
        variable = self._EMULATOR_VARIABLES.get(api)
        emulator = self._emulator(variable) if variable else None
        if emulator is not None:
            return Endpoint(emulator.url + service_path, emulated=True)
        return Endpoint(f"https://{api}.{self.universe_domain}/{service_path}", emulated=False)

    def iam(self) -> Endpoint:
        return self._service("IAM_EMULATOR_HOST", "iam")

    def resource_manager(self) -> Endpoint:
        return self._service("RESOURCEMANAGER_EMULATOR_HOST", "cloudresourcemanager")

    def bigquery(self) -> Endpoint | None:
        return self._emulator("BIGQUERY_EMULATOR_HOST")

    def storage(self) -> Endpoint | None:
        return self._emulator("STORAGE_EMULATOR_HOST")

    def bigquery_client(self, project: str) -> Any:
        """A google-cloud-bigquery client billing `project`, on the emulator when one is set."""
        from google.api_core.client_options import ClientOptions
        from google.cloud import bigquery

        endpoint = self.bigquery()
        return bigquery.Client(
            project=project,
            credentials=self.credentials(endpoint is not None),
            client_options=ClientOptions(api_endpoint=endpoint.url.rstrip("/"))
            if endpoint
            else None,
        )

    def storage_client(self, project: str) -> Any:
        """A google-cloud-storage client, on the emulator when one is set."""
        from google.api_core.client_options import ClientOptions
        from google.cloud import storage  # type: ignore[attr-defined]

        endpoint = self.storage()
        return storage.Client(
            project=project,
            credentials=self.credentials(endpoint is not None),
            client_options=ClientOptions(api_endpoint=endpoint.url.rstrip("/"))
            if endpoint
            else None,
        )

    def credentials(self, emulated: bool) -> Any:
        """Application Default Credentials, optionally impersonating a service account."""
        from google.auth import credentials as auth_credentials

        if emulated:
            return auth_credentials.AnonymousCredentials()  # type: ignore[no-untyped-call]
        import google.auth
        from google.auth import exceptions as auth_exceptions

        try:
            source, _ = google.auth.default(scopes=[CLOUD_SCOPE])
        except auth_exceptions.DefaultCredentialsError:
            raise DicomBqError(NO_CREDENTIALS, exit_code=1) from None
        if not self.impersonate:
            return source
        from google.auth import impersonated_credentials

        return impersonated_credentials.Credentials(  # type: ignore[no-untyped-call]
            source_credentials=source,
            target_principal=self.impersonate,
            target_scopes=[CLOUD_SCOPE],
        )
