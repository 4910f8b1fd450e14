"""Bad input is refused with exit 2 and a one-paragraph fix, before any request is sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from tests.conftest import STORE
from tests.fakes.http import RequestRecorder
from tests.fast_cli import build_once

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_click_command(monkeypatch: pytest.MonkeyPatch) -> None:
    build_once(monkeypatch)


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


# -- issue 17: the input classes a new user found --------------------------------------------

OPERATION = "projects/dicom-src-test/locations/us-central1/datasets/imaging/operations/12"
OUTPUTS = {
    "dicomStoreName": STORE,
    "dicomStores": [{"id": "dicom", "name": STORE, "snapshotTable": TABLE}],
    "snapshotTable": TABLE,
    "snapshotSchedule": {"schedule": "0 2 * * *", "timeZone": "UTC"},
    "verificationTableUri": TABLE,
}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        # A trailing newline: `$` matches before it, so `^...$` patterns let it through to a URL.
        (["export", "--store", STORE + "\n", "--table", TABLE], "'\\n'"),
        (["export", "--store", STORE, "--table", TABLE + "\n"], "--table"),
        (["operations", "describe", OPERATION + "\n"], "'\\n'"),
        (
            [
                "export",
                "dicom",
                "--dataset",
                "imaging",
                "--location",
                "us-central1\n",
                "--project",
                "dicom-src-test",
                "--table",
                TABLE,
            ],
            "--location",
        ),
        (
            ["query", "dropped-tags", "--table", TABLE, "--billing-project", "dicom-src-test\n"],
            "--billing-project",
        ),
        (
            ["export", "--store", STORE, "--table", TABLE, "--universe-domain", "googleapis.com\n"],
            "--universe-domain",
        ),
        # Locations that do not exist.
        (
            ["export", "--store", STORE.replace("us-central1", "mars"), "--table", TABLE],
            "no such location",
        ),
        (
            [
                "export",
                "dicom",
                "--dataset",
                "imaging",
                "--location",
                "us-central2",
                "--project",
                "dicom-src-test",
                "--table",
                TABLE,
            ],
            "did you mean 'us-central1'",
        ),
        (["operations", "wait", OPERATION.replace("us-central1", "asia")], "no such location"),
        # Durations too large for any wait (a timedelta of them overflows).
        (["export", "--store", STORE, "--table", TABLE, "--timeout", "999999999h"], "30 days"),
        (["operations", "wait", OPERATION, "--timeout", "721h"], "30 days"),
        (["export", "--store", STORE, "--table", TABLE, "--timeout", "9" * 400], "--timeout"),
        (
            ["export", "--store", STORE, "--table", TABLE, "--permission-window", "9" * 400 + "m"],
            "--permission-window",
        ),
    ],
)
def test_issue_17_values_are_refused_before_any_request(
    request_recorder: RequestRecorder, args: list[str], fragment: str
) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert request_recorder.requests == []


@pytest.mark.parametrize("grace", ["99999999h", "999999999", "9" * 400])
def test_a_huge_snapshot_grace_is_refused_not_an_overflow(
    request_recorder: RequestRecorder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    grace: str,
) -> None:
    import json

    monkeypatch.chdir(tmp_path)
    with open("o.json", "w", encoding="utf-8") as out:
        json.dump(OUTPUTS, out)
    result = runner.invoke(app, ["status", "--outputs", "o.json", "--snapshot-grace", grace])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 2, result.output
    assert "--snapshot-grace" in result.stderr
    assert request_recorder.requests == []


def test_parsers_match_the_whole_value() -> None:
    from dicom_bq.errors import DicomBqError
    from dicom_bq.refs import GcsUri, StoreName, TableUri, parse_operation_name, parse_timeout

    for parse, value in (
        (StoreName.parse, STORE),
        (TableUri.parse, TABLE),
        (GcsUri.parse, "gs://bucket-x/f.txt"),
        (parse_operation_name, OPERATION),
        (parse_timeout, "30m"),
    ):
        parse(value)
        for spoiled in (value + "\n", value + "\r\n", value + "\x00"):
            with pytest.raises(DicomBqError):
                parse(spoiled)


# `$` also matches before a final newline: "dicom-bq-dev\n" passed `^[a-z][a-z0-9-]{4,28}[a-z0-9]$`
# with re.match and reached a URL. Patterns match whole values with re.fullmatch (or end in \Z).
PACKAGE = Path(__file__).resolve().parents[1] / "scripts" / "dicom_bq"
# Files that still hold a pattern ending in `$`, each owned elsewhere (issue 17's report says
# which to change): none may be added, and a file fixed leaves this list.
DOLLAR_PATTERNS_LEFT = {
    "infra/components/alerts.py",
    "infra/policy_rules.py",
    "vocabulary/scopes.py",
    "security/audit.py",
}


def _dollar_patterns() -> dict[str, list[int]]:
    import ast

    def text(node: ast.expr) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr) and node.values:
            return text(node.values[-1])  # type: ignore[arg-type]
        return None

    found: dict[str, list[int]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("compile", "match", "search", "fullmatch")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "re"
                and node.args
            ):
                pattern = text(node.args[0])
                if pattern and pattern.endswith("$") and not pattern.endswith("\\$"):
                    name = str(path.relative_to(PACKAGE))
                    found.setdefault(name, []).append(node.lineno)
    return found


def test_no_pattern_ends_in_a_dollar_that_lets_a_newline_through() -> None:
    found = _dollar_patterns()
    assert set(found) <= DOLLAR_PATTERNS_LEFT, {
        name: lines for name, lines in found.items() if name not in DOLLAR_PATTERNS_LEFT
    }


@pytest.mark.parametrize("free_text", [False, True])
def test_the_front_door_refuses_exactly_the_control_and_separator_characters(
    free_text: bool,
) -> None:
    # cli/common.py writes Unicode's categories Cc, Zl and Zp as character ranges: held here
    # against unicodedata for every code point (surrogates cannot be passed on a command line).
    import sys
    import unicodedata

    from dicom_bq.cli.common import _forbidden

    every = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    expected = [
        char
        for char in every
        if unicodedata.category(char) in ("Cc", "Zl", "Zp") and not (free_text and char in "\n\r\t")
    ]
    refused = []
    rest = every
    while (found := _forbidden(rest, free_text)) is not None:
        position, char = found
        refused.append(char)
        rest = rest[position:]
    assert refused == expected
