"""Filter files: validation, building, normalizing, uploading, and the filtered export."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dicom_bq import filters
from dicom_bq.cli import app
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


def test_at_least_20_kinds_of_bad_line() -> None:
    assert len(BAD_LINES) >= 20


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
        filters.build_file(filters.lines_from_csv(io.StringIO(text)), out, normalized=True)
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
    table = "dicom-src-test.dicom_metadata.exported"
    cloud.bigquery.tables[table] = [
        {
            "StudyInstanceUID": f"1.{s}",
            "SeriesInstanceUID": "2",
            "SOPInstanceUID": f"3.{s}.{i}",
            "PatientID": "19045" if s < 2 else "other",
            "StudyDate": f"2021071{s}",
            "StudyTime": "003822",
            "DroppedTags": ["Tag1"] if i else ["Tag1", "Tag2"],
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
            "StudyDateTime": "20210713 003822",
            "PatientID": "other",
            "StudyInstanceUID": "1.3",
            "InstanceCount": "4",
        },
        {
            "StudyDateTime": "20210712 003822",
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
