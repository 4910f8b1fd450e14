"""Real local peers for the tests: Orthanc (DICOMweb) and gcp-storage-emulator (Cloud Storage)."""

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
