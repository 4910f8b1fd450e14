"""The wheel adds one import root, `dicom_bq`, with every subpackage and data file it reads."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("dicom_bq-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_the_wheel_installs_only_the_dicom_bq_package(wheel_names: set[str]) -> None:
    tops = {name.split("/")[0] for name in wheel_names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"dicom_bq"}


def test_every_source_package_and_data_file_is_in_the_wheel(wheel_names: set[str]) -> None:
    source = ROOT / "scripts"
    expected = {
        path.relative_to(source).as_posix()
        for path in source.joinpath("dicom_bq").rglob("*")
        if path.suffix in {".py", ".json", ".yaml"} and "__pycache__" not in path.parts
    }
    assert expected - wheel_names == set()
    assert "dicom_bq/cli/__init__.py" in expected
