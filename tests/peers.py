"""Real local peers for the tests: Orthanc (DICOMweb), gcp-storage-emulator (Cloud Storage, the
fast tier) and fake-gcs-server (Cloud Storage with its preconditions, the storage tier)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STORAGE_PEER_SCRIPT = ROOT / "scripts" / "storage-peer"
ORTHANC_PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins")
INSTALL_HINT = "install the test peers: apt-get install orthanc orthanc-dicomweb (.ci/run does)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(url: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _dicomweb_plugin() -> str:
    for folder in ORTHANC_PLUGIN_DIRS:
        plugin = Path(folder) / "libOrthancDicomWeb.so"
        if plugin.exists():
            return str(plugin)
    raise RuntimeError(f"Orthanc's DICOMweb plugin is missing: {INSTALL_HINT}")


@contextlib.contextmanager
def orthanc(workdir: Path) -> Iterator[str]:
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not Path(binary).exists():
        raise RuntimeError(f"Orthanc is not installed: {INSTALL_HINT}")
    port = free_port()
    config = {
        "Name": "dicom-bq-tests",
        "HttpPort": port,
        "DicomServerEnabled": False,
        "DicomPort": free_port(),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "storage"),
        "Plugins": [_dicomweb_plugin()],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (workdir / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
    log = (workdir / "orthanc.log").open("w")
    process = subprocess.Popen([binary, str(workdir / "orthanc.json")], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{url}/system")
        yield url
    finally:
        # SIGKILL, not SIGTERM: Orthanc 1.10's HTTP server takes about 2.5 s to stop gracefully
        # (its log: "Orthanc is stopping" ... "HTTP server has stopped"), and nothing reads this
        # session's throwaway storage directory afterwards.
        process.kill()
        process.wait(timeout=20)
        log.close()


def clear_orthanc(url: str) -> None:
    with urllib.request.urlopen(f"{url}/instances", timeout=10) as answer:
        ids = json.loads(answer.read())
    for instance in ids:
        request = urllib.request.Request(f"{url}/instances/{instance}", method="DELETE")
        urllib.request.urlopen(request, timeout=10).close()


@contextlib.contextmanager
def storage_emulator() -> Iterator[str]:
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{url}/storage/v1/b")
        yield url
    finally:
        server.stop()


# -- the storage tier: fake-gcs-server ---------------------------------------------------------
#
# gcp-storage-emulator (above) ignores ifGenerationMatch: measured with google-cloud-storage
# 3.17.1 against gcp-storage-emulator 2026.7.19, a second create-only upload (ifGenerationMatch=0),
# an upload and a delete with a wrong generation all succeed (its handlers never read the
# parameter). fake-gcs-server v1.56.1 answers 412 to an upload whose ifGenerationMatch does not
# hold, multipart and resumable (checked when the session is finalized); it ignores
# ifGenerationMatch on objects.delete, but honours its `generation` (404 for a generation that
# is gone), which the tool's deletes also send. Tests that claim precondition behaviour run
# against it only.


class StoragePeerUnavailable(Exception):
    """No Go toolchain: fake-gcs-server cannot be built on this machine."""


def storage_peer_binary() -> str:
    """The fake-gcs-server binary, built (once, cached) by scripts/storage-peer."""
    if shutil.which("go") is None:
        raise StoragePeerUnavailable(
            "Go is not installed: the storage tier builds fake-gcs-server with it "
            "(scripts/storage-peer)"
        )
    done = subprocess.run(
        [str(STORAGE_PEER_SCRIPT), "path"],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if done.returncode != 0:
        # Go is here, so a failed build is a failure, never a skip.
        raise RuntimeError(f"scripts/storage-peer path failed:\n{done.stderr[-4000:]}")
    return done.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def fake_gcs_server(workdir: Path) -> Iterator[str]:
    """fake-gcs-server on a free loopback port: plain HTTP, objects in memory."""
    binary = storage_peer_binary()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (workdir / "fake-gcs-server.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-backend",
            "memory",
            # Where resumable upload sessions point (its Location header).
            "-external-url",
            url,
            "-log-level",
            "warn",
        ],
        stdout=log,
        stderr=log,
    )
    try:
        _wait_for(f"{url}/storage/v1/b")
        yield url
    finally:
        process.kill()
        process.wait(timeout=20)
        log.close()


@pytest.fixture(scope="session")
def fake_gcs_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One fake-gcs-server per test process; the tier is skipped, and says why, without Go."""
    try:
        storage_peer_binary()
    except StoragePeerUnavailable as error:
        pytest.skip(f"the storage peer cannot be built here: {error}")
    with fake_gcs_server(tmp_path_factory.mktemp("fake-gcs-server")) as url:
        yield url


@pytest.fixture
def storage_peer(fake_gcs_server_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """fake-gcs-server behind STORAGE_EMULATOR_HOST (clients/endpoints.py Connection.storage)."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs_server_url)
    return fake_gcs_server_url
