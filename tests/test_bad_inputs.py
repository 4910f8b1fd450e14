"""Bad input is refused with exit 2 and a one-paragraph fix, before any request is sent."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from tests.conftest import STORE
from tests.fakes.http import RequestRecorder

runner = CliRunner()
TABLE = "bq://dicom-src-test.dicom_metadata.t"

BAD_EXPORTS: list[tuple[str, list[str], str]] = [
    ("store without prefix", ["--store", "dicom", "--table", TABLE], "give the full store name"),
    (
        "store missing dataset",
        ["--store", "projects/p-123456/locations/us/dicomStores/s", "--table", TABLE],
        "--store",
    ),
    (
        "store bad project",
        [
            "--store",
            "projects/P_1/locations/us-central1/datasets/d/dicomStores/s",
            "--table",
            TABLE,
        ],
        "a project ID",
    ),
    (
        "store bad location",
        [
            "--store",
            "projects/my-proj/locations/US_CENTRAL/datasets/d/dicomStores/s",
            "--table",
            TABLE,
        ],
        "a location",
    ),
    (
        "store id with space",
        [
            "--store",
            "projects/my-proj/locations/us-central1/datasets/d/dicomStores/a b",
            "--table",
            TABLE,
        ],
        "DICOM store ID",
    ),
    ("store trailing slash", ["--store", STORE + "/", "--table", TABLE], "--store"),
    (
        "table without scheme",
        ["--store", STORE, "--table", "dicom-src-test.dicom_metadata.t"],
        "bq://PROJECT.DATASET.TABLE",
    ),
    (
        "table two parts",
        ["--store", STORE, "--table", "bq://dicom_metadata.t"],
        "bq://PROJECT.DATASET.TABLE",
    ),
    (
        "table empty part",
        ["--store", STORE, "--table", "bq://dicom-src-test..t"],
        "bq://PROJECT.DATASET.TABLE",
    ),
    (
        "table dataset hyphen",
        ["--store", STORE, "--table", "bq://dicom-src-test.dicom-metadata.t"],
        "BigQuery dataset ID",
    ),
    ("table bad project", ["--store", STORE, "--table", "bq://Bad_Project.ds.t"], "a project ID"),
    (
        "table name with slash",
        ["--store", STORE, "--table", "bq://dicom-src-test.ds.a/b"],
        "may not contain '/'",
    ),
    (
        "table name too long",
        ["--store", STORE, "--table", "bq://dicom-src-test.ds." + "t" * 1025],
        "1 to 1024 UTF-8 bytes",
    ),
    (
        "table uri over 2000",
        ["--store", STORE, "--table", "bq://dicom-src-test." + "d" * 1000 + "." + "t" * 1000],
        "at most 2000 characters",
    ),
    (
        "gs scheme missing",
        ["--store", STORE, "--table", TABLE, "--filter", "bucket/f.txt"],
        "gs://BUCKET/OBJECT",
    ),
    (
        "gs bucket only",
        ["--store", STORE, "--table", TABLE, "--filter", "gs://bucket-name"],
        "name the filter file",
    ),
    (
        "gs folder",
        ["--store", STORE, "--table", TABLE, "--filter", "gs://bucket-name/dir/"],
        "name the filter file",
    ),
    (
        "gs bad bucket",
        ["--store", STORE, "--table", TABLE, "--filter", "gs://Bad_Bucket/f.txt"],
        "a bucket name",
    ),
    (
        "gs wildcard",
        ["--store", STORE, "--table", TABLE, "--filter", "gs://bucket-name/*.txt"],
        "no *, ?, [, ] or #",
    ),
    (
        "force with disposition",
        ["--store", STORE, "--table", TABLE, "--force", "--write-disposition", "WRITE_APPEND"],
        "say the same thing twice",
    ),
    (
        "no-force with disposition",
        ["--store", STORE, "--table", TABLE, "--no-force", "--write-disposition", "WRITE_EMPTY"],
        "say the same thing twice",
    ),
    (
        "unknown disposition",
        ["--store", STORE, "--table", TABLE, "--write-disposition", "OVERWRITE"],
        "WRITE_EMPTY, WRITE_TRUNCATE, WRITE_APPEND",
    ),
    ("timeout words", ["--store", STORE, "--table", TABLE, "--timeout", "soon"], "90s, 30m or 2h"),
    ("timeout zero", ["--store", STORE, "--table", TABLE, "--timeout", "0"], "more than zero"),
    ("timeout negative", ["--store", STORE, "--table", TABLE, "--timeout", "-5m"], "--timeout"),
    ("timeout unit", ["--store", STORE, "--table", TABLE, "--timeout", "3d"], "--timeout"),
    ("api version", ["--store", STORE, "--table", TABLE, "--api-version", "v2"], "v1 or v1beta1"),
    (
        "permission window",
        ["--store", STORE, "--table", TABLE, "--permission-window", "forever"],
        "--permission-window",
    ),
    (
        "endpoint not a url",
        ["--store", STORE, "--table", TABLE, "--api-endpoint", "healthcare.internal"],
        "--api-endpoint",
    ),
]


@pytest.mark.parametrize(
    ("args", "fragment"), [pytest.param(a, f, id=n) for n, a, f in BAD_EXPORTS]
)
def test_bad_export_input_is_refused_before_any_request(
    request_recorder: RequestRecorder,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    fragment: str,
) -> None:
    if "--api-endpoint" in args:
        # The emulator variable would take precedence over --api-endpoint (endpoints.py).
        monkeypatch.delenv("HEALTHCARE_EMULATOR_HOST")
    result = runner.invoke(app, ["export", *args])
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert request_recorder.requests == []


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["operations", "wait", "operations/123"], "give the full name"),
        (["operations", "describe", STORE], "give the full name"),
        (["verify"], "exactly one of --stack NAME, --outputs FILE or --store NAME"),
        (["verify", "--store", STORE], "--store needs --table"),
        (
            ["verify", "--store", STORE, "--table", TABLE, "--filter-bucket", "gs://x"],
            "--filter-bucket",
        ),
        (["verify", "--outputs", "/nonexistent/outputs.json"], "cannot read it"),
    ],
)
def test_other_bad_inputs(
    request_recorder: RequestRecorder, args: list[str], fragment: str
) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr
    assert "Traceback" not in result.output
    assert request_recorder.requests == []
