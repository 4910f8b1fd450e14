"""Where each Google API is reached, and with which credentials.

Production and local runs share this code: an emulator variable (HEALTHCARE_EMULATOR_HOST,
BIGQUERY_EMULATOR_HOST, STORAGE_EMULATOR_HOST, IAM_EMULATOR_HOST and
RESOURCEMANAGER_EMULATOR_HOST for the audit, CLOUDSCHEDULER_EMULATOR_HOST for status, as a URL
such as http://127.0.0.1:8123) only changes the endpoint and switches to anonymous credentials,
as Google's own clients do for STORAGE_EMULATOR_HOST; it wins over the universe domain.

Every client names the universe through its library's own option (google-api-python-client
and google-cloud-* `client_options.universe_domain`), so each library derives its host and checks
that the credentials belong to that universe.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dicom_bq.errors import EXIT_FAILED, DicomBqError
from dicom_bq.texts import excerpt
from dicom_bq.vocabulary import identifiers, naming

CLOUD_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
NO_CREDENTIALS = (
    "no Google credentials found: run `gcloud auth application-default login` (or set "
    "GOOGLE_APPLICATION_CREDENTIALS), then try again"
)
# What google.auth.default() reads before the credentials' own project (google/auth/_default.py,
# explicit_project_id); with an emulator, google-cloud-storage reads them alone
# (google/cloud/storage/_helpers.py, _get_environ_project).
PROJECT_VARIABLES = ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT")


@dataclass(frozen=True)
class Endpoint:
    url: str  # where requests go: scheme://host[:port]/ with a trailing slash
    emulated: bool
    universe_domain: str = naming.DEFAULT_UNIVERSE
    # The URL is not the one the library derives from the universe: an emulator, --api-endpoint.
    overridden: bool = False

    def discovery_options(self) -> dict[str, str]:
        """client_options for googleapiclient.discovery.build_from_document: without
        api_endpoint it replaces googleapis.com in the document's rootUrl with universe_domain,
        and checks the credentials' universe at the first call (googleapiclient/discovery.py,
        build_from_document and Resource._validate_credentials)."""
        if self.emulated:
            # Anonymous credentials are of googleapis.com: naming another universe would fail
            # the library's check, and an emulator has no universe.
            return {"api_endpoint": self.url}
        options = {"universe_domain": self.universe_domain}
        if self.overridden:
            options["api_endpoint"] = self.url
        return options

    def cloud_options(self) -> Any:
        """ClientOptions for google-cloud-bigquery and google-cloud-storage: api_endpoint (no
        trailing slash: they append "/bigquery/v2", "/storage/v1") wins over universe_domain,
        which gives https://bigquery.UNIVERSE, https://storage.UNIVERSE and a check of the
        credentials' universe (google/cloud/bigquery/client.py Client.__init__, _helpers.py
        _DEFAULT_HOST_TEMPLATE; google/cloud/storage/client.py Client.__init__ rule 4)."""
        from google.api_core.client_options import ClientOptions

        if self.emulated:
            return ClientOptions(api_endpoint=self.url.rstrip("/"))
        return ClientOptions(universe_domain=self.universe_domain)


@dataclass(frozen=True)
class Connection:
    """What every client of one CLI run needs: endpoints and the identity to call them as."""

    universe_domain: str = naming.DEFAULT_UNIVERSE
    healthcare_endpoint: str | None = None  # --api-endpoint, for private endpoints
    impersonate: str | None = None
    environ: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        """The universe and --api-endpoint are checked when given, whether or not an emulator
        is in use, before any request."""
        problem = identifiers.check_hostname(self.universe_domain)
        if problem:
            raise DicomBqError(
                f"universe domain {excerpt(self.universe_domain)} is not valid: {problem}"
            )
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
        return Endpoint(url.rstrip("/") + "/", emulated=True, overridden=True)

    def _universe(self, service: str, path: str = "") -> Endpoint:
        return Endpoint(
            f"https://{service}.{self.universe_domain}/{path}",
            emulated=False,
            universe_domain=self.universe_domain,
        )

    def healthcare(self) -> Endpoint:
        emulator = self._emulator("HEALTHCARE_EMULATOR_HOST")
        if emulator:
            return emulator
        if self.healthcare_endpoint is not None:
            return Endpoint(
                self.healthcare_endpoint.rstrip("/") + "/",
                emulated=False,
                universe_domain=self.universe_domain,
                overridden=True,
            )
        return self._universe("healthcare")

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
        "cloudscheduler": "CLOUDSCHEDULER_EMULATOR_HOST",
    }

    def discovery_endpoint(self, api: str, service_path: str) -> Endpoint:
        """The base URL a discovery client needs: its `api_endpoint` replaces the document's
        rootUrl *and* servicePath (googleapiclient discovery.build_from_document), so the
        servicePath ("storage/v1/", "bigquery/v2/") is appended here."""
        variable = self._EMULATOR_VARIABLES.get(api)
        emulator = self._emulator(variable) if variable else None
        if emulator is not None:
            return Endpoint(emulator.url + service_path, emulated=True, overridden=True)
        return self._universe(api, service_path)

    def bigquery(self) -> Endpoint:
        return self._emulator("BIGQUERY_EMULATOR_HOST") or self._universe("bigquery")

    def storage(self) -> Endpoint:
        return self._emulator("STORAGE_EMULATOR_HOST") or self._universe("storage")

    def bigquery_client(self, project: str) -> Any:
        """A google-cloud-bigquery client whose jobs run in, and are billed to, `project`
        (jobs.query and jobs.insert are called on projects/{client.project}: Client.query,
        query_and_wait); the tables a query names stay fully qualified."""
        from google.cloud import bigquery

        endpoint = self.bigquery()
        credentials = self.credentials(endpoint.emulated)
        return _universe_checked(
            lambda: bigquery.Client(
                project=project,
                credentials=credentials,
                client_options=endpoint.cloud_options(),
            )
        )

    def storage_client(self) -> Any:
        """A google-cloud-storage client for objects, on the emulator when one is set. It acts for
        no project (project=None: google-cloud-storage's Client neither sets nor looks one up);
        only bucket-level calls such as buckets.list and buckets.insert would need one."""
        from google.cloud import storage  # type: ignore[attr-defined]

        endpoint = self.storage()
        credentials = self.credentials(endpoint.emulated)
        return _universe_checked(
            lambda: storage.Client(
                project=None,
                credentials=credentials,
                client_options=endpoint.cloud_options(),
            )
        )

    def billing_project(self, *, explicit: str | None, fallback: str) -> str:
        """Where a BigQuery job runs and is billed: `explicit` (--billing-project), else the
        caller's own project (see caller_project), else `fallback` (the table's project)."""
        if explicit is not None:
            problem = identifiers.check_project_id(explicit)
            if problem:
                raise DicomBqError(f"--billing-project {excerpt(explicit)} is not valid: {problem}")
            return explicit
        return self.caller_project(emulated=self.bigquery().emulated) or fallback

    def caller_project(self, *, emulated: bool) -> str | None:
        """The project the caller's setup names: GOOGLE_CLOUD_PROJECT, else the project of the
        Application Default Credentials (a key's project_id, gcloud's configured project), else
        their quota project (what `gcloud auth application-default login` records), as
        google.auth.default() resolves them. An emulator uses no credentials: only the
        variables count, as google-cloud-storage does with STORAGE_EMULATOR_HOST."""
        for variable in PROJECT_VARIABLES:
            named = self._env(variable)
            if named:
                return named
        if emulated:
            return None
        from google.auth import exceptions as auth_exceptions

        try:
            credentials, project = self._adc
        except auth_exceptions.DefaultCredentialsError:
            return None
        quota = getattr(credentials, "quota_project_id", None)
        return str(project) if project else (str(quota) if quota else None)

    @functools.cached_property
    def _adc(self) -> tuple[Any, str | None]:
        """Application Default Credentials and their project, looked up once per run: the
        lookup may run gcloud or ask the metadata server."""
        import google.auth

        credentials, project = google.auth.default(scopes=[CLOUD_SCOPE])
        return credentials, project

    def credentials(self, emulated: bool) -> Any:
        """Application Default Credentials, optionally impersonating a service account, checked
        to belong to the connection's universe."""
        from google.auth import credentials as auth_credentials

        if emulated:
            return auth_credentials.AnonymousCredentials()  # type: ignore[no-untyped-call]
        from google.auth import exceptions as auth_exceptions

        try:
            source, _ = self._adc
        except auth_exceptions.DefaultCredentialsError:
            raise DicomBqError(NO_CREDENTIALS, exit_code=EXIT_FAILED) from None
        # Checked here, once, for every client: each library would refuse the mismatch too, but
        # only at its first call, with its own wording.
        found = getattr(source, "universe_domain", naming.DEFAULT_UNIVERSE)
        if found != self.universe_domain:
            raise DicomBqError(_universe_mismatch(str(found), self.universe_domain), EXIT_FAILED)
        if not self.impersonate:
            return source
        from google.auth import impersonated_credentials

        # The token comes from iamcredentials.UNIVERSE: impersonated credentials take the
        # source's universe (google/auth/impersonated_credentials.py, Credentials.__init__ and
        # _make_iam_token_request).
        return impersonated_credentials.Credentials(  # type: ignore[no-untyped-call]
            source_credentials=source,
            target_principal=self.impersonate,
            target_scopes=[CLOUD_SCOPE],
        )


def _universe_mismatch(found: str, wanted: str) -> str:
    return (
        f"your Google credentials belong to the universe {found}, not {wanted}: sign in to "
        f"{wanted} (gcloud auth application-default login, or its key in "
        "GOOGLE_APPLICATION_CREDENTIALS), or name the universe your credentials belong to "
        "(--universe-domain, or the stack's dicom-bq:universeDomain)"
    )


def _universe_checked(build: Callable[[], Any]) -> Any:
    """A google-cloud client; its ValueError on a credentials/universe mismatch (bigquery
    _helpers._validate_universe, storage Client.__init__) becomes the tool's own message."""
    try:
        return build()
    except ValueError as error:
        if "universe domain" not in str(error):
            raise
        raise DicomBqError(f"Google's client refused the universe: {error}", EXIT_FAILED) from None


# A service account key or an authorized-user file is a few KiB of JSON.
MAX_CREDENTIALS_BYTES = 1024 * 1024


def check_environment(environ: Mapping[str, str]) -> None:
    """The environment values every command may use, checked before it runs (DicomBqError, exit
    2, naming the variable): each emulator variable the clients read (a URL or HOST:PORT,
    Connection: a malformed one failed deep in http.client, InvalidURL), and the file
    GOOGLE_APPLICATION_CREDENTIALS names, a regular file of at most 1 MiB (google.auth reads it
    whole: /dev/zero never ends, a FIFO waits for a writer)."""
    import os

    from dicom_bq.files import regular_file_problem

    for variable in sorted(set(Connection._EMULATOR_VARIABLES.values())):
        value = environ.get(variable)
        if not value:
            continue
        problem = identifiers.check_emulator_host(value)
        if problem:
            raise DicomBqError(f"{variable} {excerpt(value)} is not valid: {problem}")
    credentials = environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if credentials and os.path.exists(credentials):  # a missing one: google.auth says so
        problem = regular_file_problem(credentials, limit=MAX_CREDENTIALS_BYTES)
        if problem:
            raise DicomBqError(
                f"GOOGLE_APPLICATION_CREDENTIALS {excerpt(credentials)} cannot be used: {problem}"
            )
