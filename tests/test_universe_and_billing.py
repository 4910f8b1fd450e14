"""Every client in one universe, query jobs billed where the user is, and impersonation on every
command that calls Google.

Requests to a universe's hosts (https://SERVICE.example-universe.test/...) are sent, by the
`internet` fixture, to loopback fakes registered under that exact host name; a request to any
other host fails the test. So a client that ignores the universe (and calls googleapis.com) fails,
and one that honours it is served by the fake as if it were Google.

The credentials are a real service-account key of that universe ("universe_domain" in the key
file, as Google issues them in sovereign clouds): google-auth signs its own JWTs there
(google/oauth2/service_account.py: always_use_jwt_access outside googleapis.com), so no token
server is involved unless a service account is impersonated.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httplib2
import pytest
import requests
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.clients.bigquery import BigQueryTables
from dicom_bq.clients.discovery import DiscoveryClients
from dicom_bq.clients.endpoints import Connection
from dicom_bq.clients.healthcare import HealthcareApi
from dicom_bq.clients.storage import StorageObjects
from dicom_bq.errors import DicomBqError
from dicom_bq.refs import GcsUri, TableUri
from dicom_bq.security.roles import IamRoles
from tests.conftest import _ensure_bucket
from tests.fakes.bigquery import FakeBigQuery
from tests.fakes.http import LoopbackFake, Request, Response
from tests.fast_cli import commands_taking
from tests.inventory import ROOT

UNIVERSE = "example-universe.test"
DEPLOYER = "deployer@ops-prj.iam.gserviceaccount.com"
TABLE = "data-prj.dicom_metadata.exported"
EMULATOR_VARIABLES = (
    "HEALTHCARE_EMULATOR_HOST",
    "BIGQUERY_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "IAM_EMULATOR_HOST",
    "RESOURCEMANAGER_EMULATOR_HOST",
    "GOOGLE_CLOUD_PROJECT",
    "GCLOUD_PROJECT",
    "GOOGLE_CLOUD_UNIVERSE_DOMAIN",
)
PATHS_QUERY = ["query", "dicomweb-paths", "--patient-id", "19045", "--table", f"bq://{TABLE}"]
UP = ["up", "--stack", "dev", "--skip-preflight", "--project-dir", str(ROOT)]
runner = CliRunner()


# -- a loopback "internet" -------------------------------------------------------------------


@dataclass
class Internet:
    """Host name -> loopback base URL; every request to a non-loopback host is recorded."""

    hosts: dict[str, str] = field(default_factory=dict)
    seen: list[tuple[str, str]] = field(default_factory=list)  # (method, url as sent)
    # The thread of each request in `seen`: under pytest-xdist two storage GETs from a thread
    # another test had left running were once recorded here; a test proving that *it* sent
    # nothing reads the requests of its own thread.
    threads: list[int] = field(default_factory=list)

    def sent_by_this_thread(self) -> list[tuple[str, str]]:
        mine = threading.get_ident()
        return [sent for sent, t in zip(self.seen, self.threads, strict=True) if t == mine]

    def route(self, url: str, method: str) -> str:
        parts = urlsplit(url)
        if parts.hostname in ("127.0.0.1", "localhost"):
            return url
        self.seen.append((method, url))
        self.threads.append(threading.get_ident())
        base = self.hosts.get(parts.hostname or "")
        if base is None:
            raise ConnectionError(f"the test network has no host {parts.hostname} ({url})")
        return base + parts.path + (f"?{parts.query}" if parts.query else "")


@pytest.fixture
def internet(monkeypatch: pytest.MonkeyPatch) -> Internet:
    """Routes both transports the Google libraries use: requests (google-auth, google-cloud-*)
    and httplib2 (google-api-python-client through google-auth-httplib2)."""
    network = Internet()
    send = requests.adapters.HTTPAdapter.send
    request = httplib2.Http.request

    def routed_send(self: Any, prepared: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            prepared.url = network.route(prepared.url, prepared.method)
        except ConnectionError as error:
            raise requests.exceptions.ConnectionError(str(error)) from None
        return send(self, prepared, *args, **kwargs)

    def routed_request(self: Any, uri: str, method: str = "GET", *args: Any, **kw: Any) -> Any:
        return request(self, network.route(uri, method), method, *args, **kw)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", routed_send)
    monkeypatch.setattr(httplib2.Http, "request", routed_request)
    for variable in EMULATOR_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return network


@pytest.fixture
def started() -> Iterator[Callable[[Any], Any]]:
    fakes: list[LoopbackFake] = []

    def start(fake: Any) -> Any:
        fakes.append(fake.start())
        return fake

    yield start
    for fake in fakes:
        fake.stop()


@dataclass
class Recorder(LoopbackFake):
    """Answers every request with `answer` and keeps it."""

    answer: dict[str, Any] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def handle(self, request: Request) -> Response:
        self.requests.append(request)
        return Response.json(self.answer)


@dataclass
class FakeIamCredentials(LoopbackFake):
    """iamcredentials v1 projects.serviceAccounts.generateAccessToken: POST
    /v1/projects/-/serviceAccounts/EMAIL:generateAccessToken with a required `scope` list,
    answering accessToken and expireTime
    (https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateAccessToken)."""

    TOKEN = "impersonated-token"
    impersonated: list[str] = field(default_factory=list)
    url: str = ""

    def handle(self, request: Request) -> Response:
        prefix, verb = "/v1/projects/-/serviceAccounts/", ":generateAccessToken"
        if request.method != "POST" or not (
            request.path.startswith(prefix) and request.path.endswith(verb)
        ):
            return Response.error(404, "NOT_FOUND", f"no {request.method} {request.path}")
        if not request.json().get("scope"):
            return Response.error(400, "INVALID_ARGUMENT", "scope is required")
        self.impersonated.append(request.path[len(prefix) : -len(verb)])
        return Response.json({"accessToken": self.TOKEN, "expireTime": "2099-01-01T00:00:00Z"})


# -- credentials -----------------------------------------------------------------------------


@functools.cache
def _private_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def use_key(
    monkeypatch: pytest.MonkeyPatch,
    folder: Path,
    universe: str = UNIVERSE,
    project: str = "key-prj",
) -> None:
    """Application Default Credentials: a service-account key file of `universe`."""
    key = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "0123456789abcdef",
        "private_key": _private_key(),
        "client_email": f"runner@{project}.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": f"https://oauth2.{universe}/token",
        "universe_domain": universe,
    }
    path = folder / "key.json"
    path.write_text(json.dumps(key), encoding="utf-8")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))


def exported_rows() -> list[dict[str, Any]]:
    return [
        {
            "StudyInstanceUID": "1.2",
            "SeriesInstanceUID": "1.2.3",
            "SOPInstanceUID": "1.2.3.4",
            "PatientID": "19045",
        }
    ]


# -- B: one universe for every client --------------------------------------------------------


def test_healthcare_calls_healthcare_in_the_universe(
    internet: Internet, started: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_key(monkeypatch, tmp_path)
    healthcare = started(Recorder(answer={"name": "projects/p/locations/l/datasets/d"}))
    internet.hosts[f"healthcare.{UNIVERSE}"] = healthcare.url
    api = HealthcareApi(Connection(universe_domain=UNIVERSE))
    datasets = api.service.projects().locations().datasets()
    api.call(datasets.get(name="projects/p/locations/l/datasets/d"))
    assert [r.path for r in healthcare.requests] == ["/v1/projects/p/locations/l/datasets/d"]
    assert healthcare.requests[0].headers["authorization"].startswith("Bearer ")


def test_iam_roles_are_read_from_iam_in_the_universe(
    internet: Internet, started: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_key(monkeypatch, tmp_path)
    role = "roles/healthcare.datasetViewer"
    iam = started(Recorder(answer={"name": role, "title": "Viewer", "includedPermissions": ["a"]}))
    internet.hosts[f"iam.{UNIVERSE}"] = iam.url
    found = IamRoles(Connection(universe_domain=UNIVERSE)).get(role)
    assert found.permissions == ("a",)
    assert [r.path for r in iam.requests] == [f"/v1/{role}"]


@pytest.mark.parametrize(
    ("api", "path", "call"),
    [
        (
            "cloudresourcemanager",
            "/v1/projects/p:getIamPolicy",
            lambda s: s.projects().getIamPolicy(resource="p", body={}),
        ),
        ("storage", "/storage/v1/b/bkt/iam", lambda s: s.buckets().getIamPolicy(bucket="bkt")),
        (
            "bigquery",
            "/bigquery/v2/projects/p/datasets/d",
            lambda s: s.datasets().get(projectId="p", datasetId="d"),
        ),
    ],
)
def test_audit_clients_call_their_api_in_the_universe(
    internet: Internet,
    started: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    api: str,
    path: str,
    call: Callable[[Any], Any],
) -> None:
    use_key(monkeypatch, tmp_path)
    recorder = started(Recorder())
    internet.hosts[f"{api}.{UNIVERSE}"] = recorder.url
    client = DiscoveryClients(Connection(universe_domain=UNIVERSE)).api(api)
    client.call(call(client.service))
    assert [r.path for r in recorder.requests] == [path]


def test_bigquery_client_calls_bigquery_in_the_universe(
    internet: Internet, started: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_key(monkeypatch, tmp_path)
    bigquery = started(FakeBigQuery(tables={TABLE: exported_rows()}))
    internet.hosts[f"bigquery.{UNIVERSE}"] = bigquery.url
    tables = BigQueryTables(Connection(universe_domain=UNIVERSE), "data-prj")
    assert tables.row_count(TableUri.parse(f"bq://{TABLE}")) == 1
    assert [url for _, url in internet.seen] == [
        f"https://bigquery.{UNIVERSE}/bigquery/v2/projects/data-prj/datasets/dicom_metadata"
        "/tables/exported?prettyPrint=false"
    ]


def test_storage_client_uploads_to_storage_in_the_universe(
    internet: Internet, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, storage_url: str
) -> None:
    use_key(monkeypatch, tmp_path)
    _ensure_bucket(storage_url, "universe-filters")
    internet.hosts[f"storage.{UNIVERSE}"] = storage_url
    target = GcsUri("universe-filters", "filter.txt")
    StorageObjects(Connection(universe_domain=UNIVERSE), "universe-filters").upload_text(
        target, "/studies/1\n"
    )
    hosts = {urlsplit(url).hostname for _, url in internet.seen}
    assert hosts == {f"storage.{UNIVERSE}"}
    with requests.get(f"{storage_url}/storage/v1/b/universe-filters/o/filter.txt?alt=media") as got:
        assert got.text == "/studies/1\n"


def test_the_storage_client_acts_for_no_project_and_one_bucket(
    internet: Internet, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Object calls need no project: the client has none (neither the key's, looked up, nor a
    bucket name taken for one), and StorageObjects keeps to the bucket it was made for."""
    use_key(monkeypatch, tmp_path)
    connection = Connection(universe_domain=UNIVERSE)
    assert connection.storage_client().project is None
    objects = StorageObjects(connection, "universe-filters")
    with pytest.raises(ValueError, match="is not in gs://universe-filters"):
        objects.upload_text(GcsUri("other-bucket", "filter.txt"), "/studies/1\n")
    assert internet.sent_by_this_thread() == []


def test_credentials_of_another_universe_are_refused_before_any_request(
    internet: Internet, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_key(monkeypatch, tmp_path, universe="googleapis.com")
    with pytest.raises(DicomBqError, match=f"universe googleapis.com, not {UNIVERSE}"):
        BigQueryTables(Connection(universe_domain=UNIVERSE), "data-prj")
    assert internet.sent_by_this_thread() == []


def test_an_emulator_wins_over_the_universe_and_needs_no_credentials(
    internet: Internet, started: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ADC that cannot load: an emulated client must not look for credentials at all.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")
    bigquery = started(FakeBigQuery(tables={TABLE: exported_rows()}))
    connection = Connection(
        universe_domain=UNIVERSE, environ={"BIGQUERY_EMULATOR_HOST": bigquery.url}
    )
    assert BigQueryTables(connection, "data-prj").row_count(TableUri.parse(f"bq://{TABLE}")) == 1
    assert internet.sent_by_this_thread() == []


def test_a_universe_that_is_not_a_host_name_is_refused() -> None:
    with pytest.raises(DicomBqError, match="universe domain"):
        Connection(universe_domain="https://example-universe.test/")


def test_query_names_its_universe_on_the_command_line(
    internet: Internet, started: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_key(monkeypatch, tmp_path)
    bigquery = started(FakeBigQuery(tables={TABLE: exported_rows()}))
    internet.hosts[f"bigquery.{UNIVERSE}"] = bigquery.url
    result = runner.invoke(
        app,
        [*PATHS_QUERY, "--universe-domain", UNIVERSE, "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)
    # With no --billing-project, the credentials' project (the key's project_id) is billed.
    assert [r.path for r in bigquery.requests if r.method == "POST"] == [
        "/bigquery/v2/projects/key-prj/queries"
    ]


# -- A: queries that run where the user is ---------------------------------------------------


def _query_with_emulator(
    bigquery: FakeBigQuery, monkeypatch: pytest.MonkeyPatch, *extra: str
) -> list[str]:
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery.url)
    result = runner.invoke(
        app,
        ["query", "dicomweb-paths", "--patient-id", "19045", "--table", f"bq://{TABLE}", *extra],
    )
    assert result.exit_code == 0, result.output
    return [r.path for r in bigquery.requests if r.path.endswith("/queries")]


def test_billing_project_runs_the_job_there_with_the_table_fully_qualified(
    internet: Internet, started: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bigquery = started(FakeBigQuery(tables={TABLE: exported_rows()}))
    paths = _query_with_emulator(bigquery, monkeypatch, "--billing-project", "bill-prj")
    assert paths == ["/bigquery/v2/projects/bill-prj/queries"]
    (query,) = bigquery.queries()
    assert f"`{TABLE}`" in query["query"]


def test_without_billing_project_the_callers_project_is_billed(
    internet: Internet, started: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bigquery = started(FakeBigQuery(tables={TABLE: exported_rows()}))
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "caller-prj")
    paths = _query_with_emulator(bigquery, monkeypatch)
    assert paths == ["/bigquery/v2/projects/caller-prj/queries"]


def test_with_no_caller_project_the_tables_project_is_billed(
    internet: Internet, started: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bigquery = started(FakeBigQuery(tables={TABLE: exported_rows()}))
    paths = _query_with_emulator(bigquery, monkeypatch)
    assert paths == ["/bigquery/v2/projects/data-prj/queries"]


def test_filter_build_from_a_table_bills_the_billing_project(
    internet: Internet, started: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bigquery = started(FakeBigQuery(tables={TABLE: exported_rows()}))
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery.url)
    result = runner.invoke(
        app, ["filter", "build", "--table", f"bq://{TABLE}", "--billing-project", "bill-prj"]
    )
    assert result.exit_code == 0, result.output
    assert [r.path for r in bigquery.requests if r.path.endswith("/queries")] == [
        "/bigquery/v2/projects/bill-prj/queries"
    ]


def test_a_bad_billing_project_is_refused_before_any_request(
    internet: Internet, started: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bigquery = started(FakeBigQuery(tables={TABLE: exported_rows()}))
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery.url)
    result = runner.invoke(
        app,
        ["query", "dropped-tags", "--table", f"bq://{TABLE}", "--billing-project", "Bad Project"],
    )
    assert result.exit_code == 2
    assert "--billing-project" in result.stderr
    assert bigquery.requests == []


def test_the_key_project_then_the_quota_project_is_the_callers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for variable in EMULATOR_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    use_key(monkeypatch, tmp_path, project="key-prj")
    assert Connection(universe_domain=UNIVERSE).caller_project(emulated=False) == "key-prj"
    # `gcloud auth application-default login` writes user credentials with a quota project
    # and no project of their own.
    user = tmp_path / "user.json"
    user.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "id",
                "client_secret": "secret",
                "refresh_token": "token",
                "quota_project_id": "quota-prj",
            }
        ),
        encoding="utf-8",
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(user))
    assert Connection().billing_project(explicit=None, fallback="data-prj") == "quota-prj"


# -- A: --impersonate-service-account on every command that calls Google -----------------------


def test_impersonation_takes_its_token_from_iam_credentials_in_the_universe(
    internet: Internet, started: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_key(monkeypatch, tmp_path)
    tokens = started(FakeIamCredentials())
    bigquery = started(FakeBigQuery(tables={TABLE: exported_rows()}))
    internet.hosts[f"iamcredentials.{UNIVERSE}"] = tokens.url
    internet.hosts[f"bigquery.{UNIVERSE}"] = bigquery.url
    result = runner.invoke(
        app,
        [*PATHS_QUERY, "--universe-domain", UNIVERSE, "--impersonate-service-account", DEPLOYER],
    )
    assert result.exit_code == 0, result.output
    assert tokens.impersonated == [DEPLOYER]
    assert {r.headers["authorization"] for r in bigquery.requests} == {
        f"Bearer {FakeIamCredentials.TOKEN}"
    }


class CredentialsAsked(Exception):
    pass


@pytest.fixture
def identity_asked(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The identity each Connection asks credentials for; the command stops there."""
    asked: list[str | None] = []

    def credentials(self: Connection, emulated: bool) -> Any:
        asked.append(self.impersonate)
        raise DicomBqError("stopped where credentials are needed")

    monkeypatch.setattr(Connection, "credentials", credentials)
    for variable in EMULATOR_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return asked


COMMANDS = {
    "filter build": [
        "filter",
        "build",
        "--table",
        f"bq://{TABLE}",
        "--billing-project",
        "bill-prj",
    ],
    "filter upload": ["filter", "upload", "{filter}", "gs://universe-filters/f.txt"],
    "query dicomweb-paths": [
        "query",
        "dicomweb-paths",
        "--patient-id",
        "1",
        "--table",
        f"bq://{TABLE}",
    ],
    "query latest-studies": ["query", "latest-studies", "--table", f"bq://{TABLE}"],
    "query dropped-tags": ["query", "dropped-tags", "--table", f"bq://{TABLE}"],
    "audit": ["audit", "--stack", "dev", "--project-dir", str(ROOT)],
    "preflight": ["preflight", "--stack", "dev", "--project-dir", str(ROOT)],
    "export": [
        "export",
        "--store",
        "projects/src-prj/locations/us/datasets/d/dicomStores/s",
        "--table",
        f"bq://{TABLE}",
    ],
    "operations wait": [
        "operations",
        "wait",
        "projects/src-prj/locations/us/datasets/d/operations/1",
    ],
    "operations describe": [
        "operations",
        "describe",
        "projects/src-prj/locations/us/datasets/d/operations/1",
    ],
    "status": ["status", "--outputs", "{outputs}"],
    "verify": ["verify", "--outputs", "{outputs}"],
    "review": ["review", "--stack", "dev", "--online", "--project-dir", str(ROOT)],
}
# Commands taking the option whose test is elsewhere: `up` hands it to the Pulumi CLI.
IMPERSONATION_TESTED_ELSEWHERE = {
    "up": "test_up_hands_the_impersonated_account_to_the_gcp_provider"
}


def test_every_command_taking_impersonation_is_in_the_list() -> None:
    taking = commands_taking("--impersonate-service-account")
    assert taking == set(COMMANDS) | set(IMPERSONATION_TESTED_ELSEWHERE)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_calls_google_as_the_impersonated_account(
    command: str, identity_asked: list[str | None], tmp_path: Path
) -> None:
    filter_file = tmp_path / "f.txt"
    filter_file.write_text("/studies/1.2\n", encoding="utf-8")
    outputs = tmp_path / "outputs.json"
    outputs.write_text(
        json.dumps(
            {
                "dicomStoreName": "projects/src-prj/locations/us/datasets/d/dicomStores/s",
                "verificationTableUri": f"bq://{TABLE}",
            }
        ),
        encoding="utf-8",
    )
    arguments = [
        a.replace("{filter}", str(filter_file)).replace("{outputs}", str(outputs))
        for a in COMMANDS[command]
    ]
    if "--billing-project" not in arguments and arguments[0] == "query":
        arguments += ["--billing-project", "bill-prj"]
    result = runner.invoke(app, [*arguments, "--impersonate-service-account", DEPLOYER])
    assert "stopped where credentials are needed" in result.stderr, result.output
    assert identity_asked
    assert set(identity_asked) == {DEPLOYER}


STAND_IN = """#!/usr/bin/env bash
# Stands in for the Pulumi CLI: records the identity the gcp provider would deploy as.
echo "$1 GOOGLE_IMPERSONATE_SERVICE_ACCOUNT=${GOOGLE_IMPERSONATE_SERVICE_ACCOUNT:-}" >> "$LOG"
exit 255
"""


def test_up_hands_the_impersonated_account_to_the_gcp_provider(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = tmp_path / "pulumi"
    script.write_text(STAND_IN, encoding="utf-8")
    script.chmod(0o755)
    log = tmp_path / "pulumi.log"
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("LOG", str(log))
    monkeypatch.delenv("GOOGLE_IMPERSONATE_SERVICE_ACCOUNT", raising=False)
    result = runner.invoke(
        app,
        [*UP, "--impersonate-service-account", DEPLOYER],
    )
    assert result.exit_code == 1, result.output
    assert f"up GOOGLE_IMPERSONATE_SERVICE_ACCOUNT={DEPLOYER}" in log.read_text().splitlines()
