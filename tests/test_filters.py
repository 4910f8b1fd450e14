"""Filter files: validation, building, normalizing, uploading, and the filtered export."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.errors import DicomBqError
from dicom_bq.files import DiskFullError, OutputExistsError
from dicom_bq.filters import filter_files as filters
from tests.conftest import FILTER_BUCKET, STORE, Cloud

runner = CliRunner()
GOOD = [
    "/studies/1.2.840.10008.1",
    "/studies/1.2.840.10008.1/series/1.2.3",
    "/studies/1.2.840.10008.1/series/1.2.3/instances/1.2.3.0.4",
    "/studies/0/series/0.0/instances/2.25.329800735698586629295641978511506172918",
]

# (line, fragment of the reason): at least 20 kinds of bad line.
BAD_LINES = [
    ("", "empty"),
    ("studies/1.2", "must start with /studies/"),
    ("/study/1.2", "must start with /studies/"),
    ("/studies/", "UID is empty"),
    ("/studies//series/1", "UID is empty"),
    ("/studies/1.2/", "ends with '/'"),
    ("/studies/1.2/series", "has no UID after it"),
    ("/studies/1.2/instances/3", "expected 'series'"),
    ("/studies/1.2/series/3/series/4", "expected 'instances'"),
    ("/studies/1.2/series/3/instances/4/frames/1", "nothing may follow"),
    ("/studies/1.2a", "characters other than digits"),
    ("/studies/1,2", "characters other than digits"),
    ("/studies/-1.2", "characters other than digits"),
    ("/studies/.1.2", "empty component"),
    ("/studies/1.2.", "empty component"),
    ("/studies/1..2", "empty component"),
    ("/studies/1.2 ", "spaces or tabs"),
    ("\t/studies/1.2", "spaces or tabs"),
    ("/studies/1.2\r/series/3", "carriage return"),
    ("\ufeff/studies/1.2", "byte order mark"),
    ("/studies/\uff11.\uff12", "non-ASCII"),  # fullwidth digits
    ("/STUDIES/1.2", "must start with /studies/"),
    ("/studies/1.2/series//instances/3", "UID is empty"),
]


def write(tmp_path: Path, text: str | bytes, name: str = "filter.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_good_lines_pass_with_either_line_ending(tmp_path: Path) -> None:
    for ending in ("\n", "\r\n"):
        report = filters.validate_file(write(tmp_path, ending.join(GOOD) + ending))
        assert report.ok
        assert report.lines == 4
        assert report.warning_count == 0
    assert filters.validate_file(write(tmp_path, "\n".join(GOOD))).lines == 4  # no final newline


@pytest.mark.parametrize(("line", "reason"), BAD_LINES, ids=[repr(b[0])[:40] for b in BAD_LINES])
def test_bad_line_is_reported_with_number_and_reason(
    tmp_path: Path, line: str, reason: str
) -> None:
    path = write(tmp_path, f"{GOOD[0]}\n{line}\n{GOOD[1]}\n")
    report = filters.validate_file(path)
    assert not report.ok
    assert report.errors[0].line == 2
    assert reason in report.errors[0].reason


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("/studies/1.02.3", "leading zero"),
        ("/studies/1.2/series/01.3", "leading zero"),
        ("/studies/1." + "2" * 70, "characters long"),
    ],
)
def test_real_archive_quirks_are_warnings_or_strict_errors(
    tmp_path: Path, line: str, reason: str
) -> None:
    path = write(tmp_path, line + "\n")
    lenient = filters.validate_file(path)
    assert lenient.ok
    assert reason in lenient.warnings[0].reason
    strict = filters.validate_file(path, strict=True)
    assert not strict.ok
    assert reason in strict.errors[0].reason


def test_first_20_errors_then_a_count(tmp_path: Path) -> None:
    path = write(tmp_path, "bad\n" * 35)
    result = runner.invoke(app, ["filter", "validate", str(path)])
    assert result.exit_code == 2
    assert result.stderr.count("error:") == 20
    assert "... and 15 more errors" in result.stderr
    assert f"{path}:1: error: the line must start with /studies/" in result.stderr


def test_errors_across_chunks_and_parallel_ranges_keep_their_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filters, "CHUNK", 4096)
    monkeypatch.setattr(filters, "PARALLEL_FROM", 1)
    lines = [GOOD[2]] * 3000
    lines[1234] = "/studies/x"
    lines[2999] = "/studies/1.2/"
    path = write(tmp_path, "\n".join(lines) + "\n")
    for workers in (1, 2):
        report = filters.validate_file(path, workers=workers)
        assert report.lines == 3000
        assert [(e.line, e.reason[:20]) for e in report.errors] == [
            (1235, "the study UID 'x' ha"),
            (3000, "the line ends with '"),
        ]


def test_validate_json(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["filter", "validate", str(write(tmp_path, GOOD[0] + "\r\n" + GOOD[1] + "\n")), "--json"],
    )
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert (report["lines"], report["errors"], report["crlf_lines"]) == (2, 0, 1)


# -- normalize and the properties ---------------------------------------------------------

uid = st.lists(st.integers(min_value=0, max_value=999), min_size=1, max_size=4).map(
    lambda parts: ".".join(map(str, parts))
)
paths = st.lists(
    st.tuples(
        st.sampled_from(["1.2", "1.3", "2"]),
        st.one_of(st.none(), st.sampled_from(["5", "5.1"])),
        st.one_of(st.none(), uid),
    ),
    max_size=40,
).map(lambda rows: [filters.path_line(s, se, i) for s, se, i in rows])


def covered(line: str, by: str) -> bool:
    return line == by or line.startswith(by + "/")


@settings(max_examples=150, deadline=None)
@given(paths)
def test_normalize_is_idempotent_and_drops_only_covered_paths(lines: list[str]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "in.txt"
        filters.write_lines(lines, source)
        once = list(filters.normalize(source))
        again = Path(folder) / "once.txt"
        filters.write_lines(once, again)
        assert list(filters.normalize(again)) == once
        assert len(once) == len(set(once))
        for line in lines:
            assert any(covered(line, kept) for kept in once)
        for kept in once:
            assert not any(covered(kept, other) for other in once if other != kept)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(uid, st.one_of(st.none(), uid), st.one_of(st.none(), uid)), max_size=20))
def test_every_line_the_tool_writes_passes_its_validator(
    rows: list[tuple[str, str | None, str | None]],
) -> None:
    text = "StudyInstanceUID,SeriesInstanceUID,SOPInstanceUID\n" + "".join(
        f"{s},{se or ''},{(i or '') if se else ''}\n" for s, se, i in rows
    )
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out.txt"
        lines = filters.lines_from_csv(io.StringIO(text))
        if not rows:  # an empty filter is refused, and nothing is written
            with pytest.raises(filters.BuildError, match="no paths to write"):
                filters.build_file(lines, out, normalized=True)
            assert list(Path(folder).iterdir()) == []
            return
        filters.build_file(lines, out, normalized=True)
        report = filters.validate_file(out)
        assert report.ok
        assert report.warning_count == sum(
            1 for line in out.read_text().splitlines() if filters.check_line(line.encode())[1]
        )


# -- build -------------------------------------------------------------------------------


def test_build_from_csv_normalized(tmp_path: Path) -> None:
    csv = write(
        tmp_path,
        "StudyInstanceUID,SeriesInstanceUID,SOPInstanceUID\n1.2,3,4\n1.2,3,\n1.2,3,5\n9.9,,\n9.9,1,1\n",
        "uids.csv",
    )
    out = tmp_path / "filter.txt"
    result = runner.invoke(
        app, ["filter", "build", "--uids-csv", str(csv), "--normalize", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.read_text() == "/studies/1.2/series/3\n/studies/9.9\n"
    assert "2 lines written to" in result.stderr


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("Study,Series\n1,2\n", "needs a header"),
        (
            "StudyInstanceUID,SeriesInstanceUID,SOPInstanceUID\n,1,2\n",
            "CSV line 2: StudyInstanceUID is empty",
        ),
        (
            "StudyInstanceUID,SeriesInstanceUID,SOPInstanceUID\n1,,2\n",
            "needs its SeriesInstanceUID",
        ),
        (
            "StudyInstanceUID,SeriesInstanceUID,SOPInstanceUID\n1.2.a,,\n",
            "CSV line 2: the study UID",
        ),
    ],
)
def test_bad_csv_is_refused(tmp_path: Path, csv: str, message: str) -> None:
    result = runner.invoke(
        app, ["filter", "build", "--uids-csv", str(write(tmp_path, csv, "u.csv"))]
    )
    assert result.exit_code == 2
    assert message in result.stderr


def test_build_from_stdin(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["filter", "build", "--normalize"], input=f"{GOOD[1]}\n{GOOD[2]}\n{GOOD[1]}\n"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == GOOD[1] + "\n"
    bad = runner.invoke(app, ["filter", "build"], input="/studies/1/\n")
    assert bad.exit_code == 2
    assert "stdin line 1" in bad.stderr


def test_build_from_table_streams_the_concat_query(cloud: Cloud, tmp_path: Path) -> None:
    cloud.bigquery.tables["dicom-src-test.dicom_metadata.exported"] = [
        {
            "StudyInstanceUID": "1.2",
            "SeriesInstanceUID": "3",
            "SOPInstanceUID": str(n),
            "Modality": "CT" if n % 2 else "MR",
        }
        for n in range(10)
    ]
    out = tmp_path / "f.txt"
    result = runner.invoke(
        app,
        [
            "filter",
            "build",
            "--table",
            "bq://dicom-src-test.dicom_metadata.exported",
            "--where",
            "Modality = 'CT'",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines() == [
        f"/studies/1.2/series/3/instances/{n}" for n in (1, 3, 5, 7, 9)
    ]
    (query,) = cloud.bigquery.queries()
    assert query["query"].startswith("SELECT CONCAT('/studies/', StudyInstanceUID, '/series/'")
    assert query["query"].endswith("WHERE Modality = 'CT'")


def test_build_straight_to_cloud_storage(cloud: Cloud) -> None:
    from google.cloud import storage

    result = runner.invoke(
        app, ["filter", "build", "-o", f"gs://{FILTER_BUCKET}/built.txt"], input=GOOD[0] + "\n"
    )
    assert result.exit_code == 0, result.output
    blob = storage.Client(project="dicom-src-test").bucket(FILTER_BUCKET).blob("built.txt")
    assert blob.download_as_text() == GOOD[0] + "\n"


# -- upload and the filtered export ---------------------------------------------------------


def test_upload_larger_than_one_resumable_chunk(cloud: Cloud, tmp_path: Path) -> None:
    from google.cloud import storage

    lines = [f"/studies/1.2.{n}/series/3.{n}/instances/4.{n}" for n in range(40_000)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    assert path.stat().st_size > 1024 * 1024
    result = runner.invoke(
        app, ["filter", "upload", str(path), f"gs://{FILTER_BUCKET}/big.txt", "--chunk-mib", "1"]
    )
    assert result.exit_code == 0, result.output
    assert f"uploaded 40000 lines ({path.stat().st_size} bytes)" in result.stdout
    blob = storage.Client(project="dicom-src-test").bucket(FILTER_BUCKET).blob("big.txt")
    assert blob.download_as_bytes() == path.read_bytes()


def test_upload_refuses_an_invalid_file(cloud: Cloud, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["filter", "upload", str(write(tmp_path, "/studies/x\n")), f"gs://{FILTER_BUCKET}/x.txt"],
    )
    assert result.exit_code == 2
    assert "error:" in result.stderr


def test_export_with_a_local_filter_file(cloud: Cloud, tmp_path: Path) -> None:
    from tests.test_export_cli import seed

    chosen, _ = seed(cloud, 2)
    path = write(tmp_path, chosen.filter_line + "\n")
    result = runner.invoke(
        app,
        [
            "export",
            "--store",
            STORE,
            "--table",
            "bq://dicom-src-test.dicom_metadata.subset",
            "--filter-file",
            str(path),
            "--filter-bucket",
            FILTER_BUCKET,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "is not the stack's filter bucket" in result.stderr
    uri = cloud.healthcare.export_bodies[-1]["filterConfig"]["resourcePathsGcsUri"]
    assert uri.startswith(f"gs://{FILTER_BUCKET}/dicom-bq/filters/")
    assert uri.endswith("-filter.txt")
    rows = cloud.bigquery.tables["dicom-src-test.dicom_metadata.subset"]
    assert [r["SOPInstanceUID"] for r in rows] == [chosen.sop_uid]


def test_export_filter_file_needs_a_bucket(cloud: Cloud, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "export",
            "--store",
            STORE,
            "--table",
            "bq://p-123456.d.t",
            "--filter-file",
            str(write(tmp_path, GOOD[0])),
        ],
    )
    assert result.exit_code == 2
    assert "needs a bucket" in result.stderr
    assert cloud.healthcare.requests == []


# -- queries -----------------------------------------------------------------------------


def _exported(cloud: Cloud) -> str:
    """A table in the default (nested) export schema: StudyDate DATE, StudyTime TIME, DroppedTags
    a repeated TagName record (tests/fakes/export_shapes.py gives the sources)."""
    import datetime

    table = "dicom-src-test.dicom_metadata.exported"
    cloud.bigquery.tables[table] = [
        {
            "StudyInstanceUID": f"1.{s}",
            "SeriesInstanceUID": "2",
            "SOPInstanceUID": f"3.{s}.{i}",
            "PatientID": "19045" if s < 2 else "other",
            "StudyDate": datetime.date(2021, 7, 10 + s),
            "StudyTime": datetime.time(0, 38, 22),
            "DroppedTags": [{"TagName": t} for t in (["Tag1"] if i else ["Tag1", "Tag2"])],
        }
        for s in range(4)
        for i in range(s + 1)
    ]
    return f"bq://{table}"


def test_dicomweb_paths_sends_the_patient_as_a_parameter(cloud: Cloud) -> None:
    table = _exported(cloud)
    result = runner.invoke(
        app, ["query", "dicomweb-paths", "--patient-id", "19045", "--table", table, "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"DICOMwebPath": "/dicomWeb/studies/1.0/series/2/instances/3.0.0"},
        {"DICOMwebPath": "/dicomWeb/studies/1.1/series/2/instances/3.1.0"},
        {"DICOMwebPath": "/dicomWeb/studies/1.1/series/2/instances/3.1.1"},
    ]
    (query,) = cloud.bigquery.queries()
    assert "WHERE PatientID = @patient_id" in query["query"]
    assert query["queryParameters"] == [
        {
            "name": "patient_id",
            "parameterType": {"type": "STRING"},
            "parameterValue": {"value": "19045"},
        }
    ]


def test_injection_in_patient_id_stays_a_parameter_value(cloud: Cloud) -> None:
    table = _exported(cloud)
    attack = "19045' OR '1'='1"
    result = runner.invoke(
        app, ["query", "dicomweb-paths", "--patient-id", attack, "--table", table, "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
    (query,) = cloud.bigquery.queries()
    assert attack not in query["query"]
    assert query["queryParameters"][0]["parameterValue"]["value"] == attack


def test_latest_studies_in_the_how_tos_shape(cloud: Cloud) -> None:
    table = _exported(cloud)
    result = runner.invoke(
        app, ["query", "latest-studies", "--limit", "2", "--table", table, "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {
            "StudyDateTime": "2021-07-13 00:38:22",
            "PatientID": "other",
            "StudyInstanceUID": "1.3",
            "InstanceCount": "4",
        },
        {
            "StudyDateTime": "2021-07-12 00:38:22",
            "PatientID": "other",
            "StudyInstanceUID": "1.2",
            "InstanceCount": "3",
        },
    ]
    (query,) = cloud.bigquery.queries()
    assert "GROUP BY StudyInstanceUID\nORDER BY StudyDateTime DESC\nLIMIT @limit" in query["query"]
    assert query["queryParameters"][0]["parameterValue"]["value"] == "2"


def test_dropped_tags_with_counts(cloud: Cloud) -> None:
    table = _exported(cloud)
    result = runner.invoke(app, ["query", "dropped-tags", "--table", table, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"DroppedTag": "Tag1", "InstanceCount": "10"},
        {"DroppedTag": "Tag2", "InstanceCount": "4"},
    ]
    assert "tag.TagName AS DroppedTag" in cloud.bigquery.queries()[0]["query"]
    assert "UNNEST(DroppedTags)" in cloud.bigquery.queries()[0]["query"]


def test_query_table_is_validated_before_any_request(cloud: Cloud) -> None:
    result = runner.invoke(
        app, ["query", "latest-studies", "--table", "bq://p-123456.d.t`; DROP TABLE x; --"]
    )
    assert result.exit_code == 2
    assert cloud.bigquery.requests == []


def test_rich_table_output(cloud: Cloud) -> None:
    result = runner.invoke(app, ["query", "latest-studies", "--table", _exported(cloud)])
    assert result.exit_code == 0, result.output
    assert "StudyInstanceUID" in result.stdout


# -- bounded memory, empty and binary files --------------------------------------------------

LONG_LINE_BYTES = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def one_long_line(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 50 MB file that is one line without a newline (a path with a huge UID)."""
    path = tmp_path_factory.mktemp("long") / "one-line.txt"
    with path.open("wb") as out:
        out.write(b"/studies/1.2")
        block = b"3" * (1024 * 1024)
        for _ in range(LONG_LINE_BYTES // len(block)):
            out.write(block)
    return path


def test_the_longest_valid_line_is_220_characters() -> None:
    uid = "1" * filters.MAX_UID
    longest = filters.path_line(uid, uid, uid)
    assert len(longest) == filters.MAX_LINE == 9 + 64 + 8 + 64 + 11 + 64 == 220
    assert filters.check_line(longest.encode()) == (None, [])
    error, _ = filters.check_line(longest.encode() + b"1")
    assert error is not None
    assert "221 bytes long: a valid line has at most 220" in error


def _peak_python_memory(run: Any) -> tuple[Any, int]:
    import tracemalloc

    tracemalloc.start()
    try:
        result = run()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("how", ["file", "stream", "parallel"])
def test_a_50_mb_single_line_is_an_error_without_reading_it_whole(
    one_long_line: Path, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if how == "parallel":
        monkeypatch.setattr(filters, "PARALLEL_FROM", 1)

    def validate() -> filters.FilterReport:
        if how == "stream":
            with one_long_line.open("rb") as stream:
                return filters.validate_stream(stream, str(one_long_line))
        return filters.validate_file(one_long_line, workers=1 if how == "file" else 2)

    report, peak = _peak_python_memory(validate)
    # Holding the line would take 50 MB at least; a few chunks are allowed.
    assert peak < 4 * 1024 * 1024, f"peak {peak:,} bytes"
    assert (report.lines, report.error_count) == (1, 1)
    (error,) = report.errors
    assert error.line == 1
    assert f"{LONG_LINE_BYTES + 12:,} bytes long: a valid line has at most 220" in error.reason
    assert error.text == "/studies/1.2" + "3" * 48 + "..."


def test_validation_goes_on_after_an_over_long_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filters, "CHUNK", 4096)  # the long line spans several reads
    long = "/studies/" + "1" * 20_000
    path = write(tmp_path, f"{GOOD[0]}\r\n{long}\r\n/studies/x\n{GOOD[1]}\n{long}")
    report = filters.validate_file(path)
    assert report.lines == 5
    assert [(e.line, e.reason.split(":")[0]) for e in report.errors] == [
        (2, "the line is 20,009 bytes long"),
        (3, "the study UID 'x' has characters other than digits and dots"),
        (5, "the line is 20,009 bytes long"),
    ]
    assert report.crlf_lines == 2


def _child_peak_rss(args: list[str], stdin: Path | None = None) -> tuple[int, str, int]:
    """Exit code, stderr and peak resident memory (bytes) of the CLI in a child process."""
    import subprocess
    import sys

    command = [sys.executable, "-c", "from dicom_bq.cli import main; main()", *args]
    with (stdin or Path(os.devnull)).open("rb") as given:
        child = subprocess.Popen(
            command, stdin=given, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert child.stderr is not None
        errors = child.stderr.read().decode()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, errors, usage.ru_maxrss * 1024


@pytest.mark.processes
def test_cli_memory_stays_bounded_on_a_50_mb_single_line(
    one_long_line: Path, tmp_path: Path
) -> None:
    small = write(tmp_path, GOOD[0] + "\n", "small.txt")
    _, _, baseline = _child_peak_rss(["filter", "validate", str(small)])
    code, errors, peak = _child_peak_rss(["filter", "validate", str(one_long_line)])
    assert code == 2
    assert "1: error: the line is 52,428,812 bytes long" in errors
    assert peak - baseline < 40 * 1024 * 1024, f"{peak - baseline:,} bytes more"
    out = tmp_path / "out.txt"
    code, errors, peak = _child_peak_rss(["filter", "build", "-o", str(out)], one_long_line)
    assert code == 2
    assert "stdin line 1: the line is 52,428,812 bytes long" in errors
    assert peak - baseline < 40 * 1024 * 1024, f"{peak - baseline:,} bytes more"
    assert not out.exists()


def test_an_empty_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, b"")
    report = filters.validate_file(path)
    assert not report.ok
    assert report.lines == 0
    assert "the file is empty" in report.errors[0].reason
    assert not filters.validate_stream(io.BytesIO(b""), "stdin").ok
    result = runner.invoke(app, ["filter", "validate", str(path)])
    assert result.exit_code == 2
    assert "error: the file is empty: a filter needs at least one path" in result.stderr
    built = runner.invoke(app, ["filter", "build", "-o", str(tmp_path / "out.txt")], input="")
    assert built.exit_code == 2
    assert "no paths to write" in built.stderr
    assert not (tmp_path / "out.txt").exists()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"/studies/1.2\x00\x00\x00\x01", "a NUL byte (\\x00) at column 13: the file is binary"),
        (
            b"\x1f\x8b\x08\x00\x00\x00",
            "a control character (\\x1f) at column 1: the file is binary",
        ),
        (b"/studies/\xff\xfe1", "not UTF-8 text (byte 0xff at column 10): the file is binary"),
        (b"/studies/1\x1c\x1d", "control character (\\x1c) at column 11"),
        (b"\x1b[31m/studies/1", "control character (\\x1b) at column 1"),
    ],
)
def test_binary_input_is_called_binary(tmp_path: Path, content: bytes, reason: str) -> None:
    path = write(tmp_path, GOOD[0].encode() + b"\n" + content + b"\n")
    report = filters.validate_file(path)
    (error,) = report.errors
    assert error.line == 2
    assert reason in error.reason
    assert "spaces or tabs" not in error.reason
    assert all(ch.isprintable() for ch in error.text)


def test_a_binary_file_is_reported_briefly(tmp_path: Path) -> None:
    import random

    noise = random.Random(9).randbytes(3 * 1024 * 1024)
    report = filters.validate_file(write(tmp_path, noise))
    assert report.error_count == report.lines > 1000
    assert all("binary" in e.reason or "bytes long" in e.reason for e in report.errors)
    assert all(len(e.text) <= 63 and e.text.isprintable() for e in report.errors)


def test_messages_quote_a_short_escaped_excerpt(tmp_path: Path) -> None:
    line = "/studies/" + "9" * 30 + "\x1b[2J" + "x" * 200
    assert filters.excerpt(line) == "/studies/" + "9" * 30 + "\\x1b[2J" + "x" * 14 + "..."
    assert filters.excerpt(b"\xff\x00abc") == "\\xff\\x00abc"
    bad_uid = "/studies/1." + "a" * 100
    report = filters.validate_file(write(tmp_path, bad_uid + "\n"))
    (error,) = report.errors
    assert len(error.text) == 63
    assert len(error.reason) < 140


# -- building safely -------------------------------------------------------------------------


def _failing(lines: list[str], error: BaseException) -> Iterator[str]:
    yield from lines
    raise error


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("error", [filters.BuildError("CSV line 3: bad"), KeyboardInterrupt()])
def test_a_failed_build_leaves_the_target_as_it_was(
    tmp_path: Path, normalized: bool, error: BaseException
) -> None:
    target = write(tmp_path, "/studies/9\n", "target.txt")
    lines = _failing([GOOD[0]] * 50_000, error)  # far past the first write
    with pytest.raises(type(error)):
        filters.build_file(lines, target, normalized, replace=True)
    assert target.read_text() == "/studies/9\n"
    assert [p.name for p in tmp_path.iterdir()] == ["target.txt"]


def test_a_failure_while_normalizing_or_writing_leaves_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = write(tmp_path, "/studies/9\n", "target.txt")
    folder = tmp_path / "work"
    folder.mkdir()
    spill = write(folder, "\n".join(GOOD) + "\n", "spill.txt")

    def broken(path: Path) -> Iterator[tuple[bytes, int]]:
        yield GOOD[0].encode() + b"\n", 1
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(filters, "_normalized_blocks", broken)
    # A full disk is said with the file it was writing and where temporary files go.
    with pytest.raises(DiskFullError, match="no space left") as full:
        filters.build_from_spill(spill, target, True, "stdin", replace=True)
    assert str(target) in full.value.message
    assert "TMPDIR" in full.value.message
    assert target.read_text() == "/studies/9\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target.txt", "work"]


def test_an_existing_file_is_replaced_only_when_asked(tmp_path: Path) -> None:
    target = write(tmp_path, "/studies/9\n", "target.txt")
    target.chmod(0o640)
    spill = write(tmp_path, GOOD[0] + "\n", "spill.txt")
    for build in (
        lambda **kw: filters.build_file([GOOD[0]], target, False, **kw),
        lambda **kw: filters.build_file([GOOD[0]], target, True, **kw),
        lambda **kw: filters.build_from_spill(spill, target, False, "stdin", **kw),
        lambda **kw: filters.build_from_spill(spill, target, True, "stdin", **kw),
    ):
        with pytest.raises(OutputExistsError) as refused:
            build()
        assert (
            str(refused.value)
            == f"{target} exists: pass --force to replace it, or name another file"
        )
        assert target.read_text() == "/studies/9\n"
        assert build(replace=True) == 1
        assert target.read_text() == GOOD[0] + "\n"
        assert target.stat().st_mode & 0o777 == 0o640  # the replaced file's permissions
        target.write_text("/studies/9\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spill.txt", "target.txt"]


def test_a_file_that_appears_during_the_build_is_not_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "target.txt"

    def lines() -> Iterator[str]:
        yield GOOD[0]
        target.write_text("someone else's\n")

    with pytest.raises(OutputExistsError):
        filters.build_file(lines(), target, False)
    assert target.read_text() == "someone else's\n"
    assert [p.name for p in tmp_path.iterdir()] == ["target.txt"]


def test_output_problems_are_refused_before_any_work(tmp_path: Path) -> None:
    def untouched() -> Iterator[str]:
        raise AssertionError("the lines were read")
        yield ""

    with pytest.raises(DicomBqError, match="is a folder"):
        filters.build_file(untouched(), tmp_path, False)
    with pytest.raises(DicomBqError, match="does not exist"):
        filters.build_file(untouched(), tmp_path / "no" / "f.txt", False)
    with pytest.raises(OutputExistsError):
        filters.build_file(untouched(), write(tmp_path, "x", "there.txt"), False)


def test_writing_to_a_device_or_through_a_link(tmp_path: Path) -> None:
    assert filters.build_file([GOOD[0]], Path(os.devnull), False) == 1
    real = write(tmp_path, "/studies/9\n", "real.txt")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    assert filters.build_file([GOOD[1]], link, False, replace=True) == 1
    assert link.is_symlink()
    assert real.read_text() == GOOD[1] + "\n"


def test_cli_build_refuses_to_replace_a_file(tmp_path: Path) -> None:
    out = write(tmp_path, "/studies/9\n", "out.txt")
    result = runner.invoke(app, ["filter", "build", "-o", str(out)], input=GOOD[0] + "\n")
    assert result.exit_code == 2
    assert f"{out} exists: pass --force to replace it, or name another file" in result.stderr
    assert out.read_text() == "/studies/9\n"


def test_a_binary_or_huge_csv_is_refused_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    header = b"StudyInstanceUID,SeriesInstanceUID,SOPInstanceUID\n"
    for content, message in [
        (header + b"1.2,3,\x00\n", "binary"),
        (header + b"1.2,3,\xff\xfe\n", "binary"),
        (header + b"1.2,3," + b"4" * 5000 + b"\n", "longer than 4,096 characters"),
    ]:
        monkeypatch.setattr(filters, "CSV_LINE_MAX", 4096)
        path = write(tmp_path, content, "u.csv")
        with (
            path.open(encoding="utf-8-sig", newline="") as stream,
            pytest.raises(filters.BuildError, match=message),
        ):
            list(filters.lines_from_csv(stream))


# -- normalizing in bounded memory -----------------------------------------------------------


def _reference_normalize(lines: list[str]) -> list[str]:
    """The rule, plainly: first of each path, without paths a broader one covers."""
    kept: list[str] = []
    for line in lines:
        if line in kept or any(covered(line, other) for other in lines if other != line):
            continue
        kept.append(line)
    return kept


@settings(max_examples=150, deadline=None)
@given(paths, st.sampled_from([1, 200, 10**9]), st.sampled_from([40, 100, 65536]), st.booleans())
def test_normalize_in_runs_and_chunks_matches_the_rule(
    lines: list[str], run_bytes: int, chunk: int, crlf: bool
) -> None:
    import tempfile
    from unittest import mock

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "in.txt"
        source.write_bytes("".join(line + ("\r\n" if crlf else "\n") for line in lines).encode())
        with (
            mock.patch.object(filters, "RUN_BYTES", run_bytes),
            mock.patch.object(filters, "MERGE_FILES", 3),
            mock.patch.object(filters, "CHUNK", chunk),
        ):
            assert list(filters.normalize(source)) == _reference_normalize(lines)


def test_normalize_holds_a_bounded_amount(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [
        f"/studies/1.2.{n % 7}/series/3.{n % 11}/instances/1.2.840.113619.2.55.{n}"
        for n in range(80_000)
    ]
    lines += ["/studies/1.2.6/series/3.5", *lines[:1000]]  # covering lines and duplicates
    source = tmp_path / "in.txt"
    source.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(filters, "RUN_BYTES", 1024 * 1024)
    monkeypatch.setattr(filters, "MERGE_FILES", 8)
    count, peak = _peak_python_memory(lambda: sum(1 for _ in filters.normalize(source)))
    assert count == 80_000 - sum(1 for n in range(80_000) if (n % 7, n % 11) == (6, 5)) + 1
    # The file is 5 MB; a digest of each path in memory (as before) took 10 MB.
    assert peak < 3 * 1024 * 1024, f"peak {peak:,} bytes"
