"""A corpus of bad inputs across every command: each is refused with its exit code and a short
message, never a traceback, and nothing reaches Google: one loopback server stands in for every
API (all emulator variables point at it, tests/conftest.py `request_recorder`) and records each
request it gets."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dicom_bq.cli import app
from tests.fakes.http import RequestRecorder
from tests.fast_cli import build_once, commands_taking
from tests.inventory import ROOT
from tests.test_pulumi_config import REQUIRED

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_click_command(monkeypatch: pytest.MonkeyPatch) -> None:
    build_once(monkeypatch)


STORE = "projects/dicom-src-test/locations/us-central1/datasets/imaging/dicomStores/dicom"
TABLE = "bq://dicom-src-test.dicom_metadata.t"
OPERATION = "projects/dicom-src-test/locations/us-central1/datasets/imaging/operations/12"
MAX_STDERR = 2000
GOOD_OUTPUTS = (
    b'{"dicomStoreName": "'
    + STORE.encode()
    + b'", "verificationTableUri": "'
    + TABLE.encode()
    + b'"}'
)


@dataclass(frozen=True)
class Case:
    name: str
    args: list[str]
    files: dict[str, bytes] = field(default_factory=dict)  # relative to the project copy
    exit_code: int = 2
    fragment: str = ""
    stdin: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # set for the command, over the recorder's


def _stack(config: object, **extra: object) -> bytes:
    return yaml.safe_dump({"config": config, **extra}).encode()


ALIAS_BOMB = b'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + b"".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},"
    f"*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},"
    f"*{chr(97 + i)}]\n".encode()
    for i in range(12)
)
BAD_STACK_FILES: dict[str, tuple[bytes, str]] = {
    # UTF-16 with its byte order mark is read, as Pulumi's YAML reader does (yaml.v3): this
    # one lacks the other required values.
    "utf16": ("config:\n  dicom-bq:location: x\n".encode("utf-16"), "missing configuration"),
    "latin1": ("config:\n  dicom-bq:location: Zürich\n".encode("latin-1"), "not UTF-8"),
    "binary": (b"\x00\x01\x02\xff\xfe config", "not UTF-8"),
    "alias-bomb": (ALIAS_BOMB, "YAML aliases"),
    "not-a-map": (b"- a\n- b\n", "config:"),
    "config-list": (b"config:\n  - a\n", "config:"),
    "invalid-yaml": (b"config:\n  dicom-bq:location: [unclosed\n", "not valid YAML"),
    "tab-indent": (b"config:\n\tdicom-bq:location: x\n", "not valid YAML"),
    "secret": (_stack({**REQUIRED, "dicom-bq:location": {"secure": "AAA"}}), "secret"),
    # A key without a namespace is the project's (Pulumi reads `protected` as dicom-bq:protected);
    # one with two colons is no key at all.
    "key-two-colons": (_stack({**REQUIRED, "a:b:c": True}), "<namespace>:<name>"),
    "missing-required": (
        _stack({k: v for k, v in REQUIRED.items() if "location" not in k}),
        "missing configuration value 'location'",
    ),
    "bool-type": (_stack({**REQUIRED, "dicom-bq:protected": "yes"}), "must be of type"),
    "array-type": (_stack({**REQUIRED, "dicom-bq:streamTables": "t"}), "array<string>"),
    # Written around the YAML dumper, which takes seconds over 5 MiB of one scalar.
    "huge": (
        _stack({**REQUIRED, "dicom-bq:labels": {"k": "HUGE"}}).replace(b"HUGE", b"v" * (5 << 20)),
        "bytes",
    ),
    "typo": (_stack({**REQUIRED, "dicom-bq:filterBuckt": "b"}), "did you mean 'filterBucket'"),
    "bad-value": (_stack({**REQUIRED, "dicom-bq:location": "X" * 5000}), "dicom-bq:location"),
    "control-chars": (_stack({**REQUIRED, "dicom-bq:dicomStoreId": "a\x1b[31mb"}), "dicomStoreId"),
    "empty": (b"", "missing configuration values"),
    "dataset-dotdot": (_stack({**REQUIRED, "dicom-bq:healthcareDatasetId": ".."}), "'..'"),
}
# Every command that reads a stack file, from the app itself: a new one is tried with each bad
# file. Its other arguments, where it needs some to get to the stack file:
STACK_COMMAND_ARGUMENTS = {"up": ["--yes"], "export": ["--store", STORE, "--table", TABLE]}
# Commands whose --stack names outputs to read through the Pulumi CLI, never the stack file: their
# missing CLI and bad outputs are cases of their own (STATUS_CASES, the verify cases).
OUTPUTS_ONLY = {"status", "verify"}
STACK_COMMAND_NAMES = sorted(commands_taking("--stack") - OUTPUTS_ONLY)


def stack_command(name: str, stack: str) -> list[str]:
    return [*name.split(), "--stack", stack, *STACK_COMMAND_ARGUMENTS.get(name, [])]


STACK_COMMANDS = [stack_command(name, "bad") for name in STACK_COMMAND_NAMES]


def stack_cases() -> Iterator[Case]:
    for label, (content, fragment) in BAD_STACK_FILES.items():
        for command in STACK_COMMANDS:
            yield Case(
                f"{command[0]}-stack-{label}",
                command,
                {"Pulumi.bad.yaml": content},
                fragment=fragment,
            )
    for command_name in STACK_COMMAND_NAMES:
        command = stack_command(command_name, "bad")
        yield Case(f"{command[0]}-stack-is-a-folder", command, {"Pulumi.bad.yaml/x": b""})
        for name, fragment in [
            ("../etc", "is not valid"),
            ("a b", "is not valid"),
            ("dev\n", "is not valid"),
            ("x" * 300, "is not valid"),
            ("", "is not valid"),
        ]:
            yield Case(
                f"{command[0]}-stack-name-{name[:8]!r}",
                stack_command(command_name, name),
                {},
                2,
                fragment,
            )


BAD_PROJECTS: dict[str, tuple[bytes | None, str]] = {
    "missing": (None, "no Pulumi.yaml"),
    "list": (b"- a\n", "Pulumi.yaml must be a map"),
    "other-project": (b"name: other\nruntime: python\n", "names project 'other'"),
    "config-list": (b"name: dicom-bq\nruntime: python\nconfig: [a]\n", "`config:` must be a map"),
    "default-and-value": (
        b"name: dicom-bq\nruntime: python\nconfig:\n  timeZone: {default: UTC, value: UTC}\n",
        "cannot have both",
    ),
    "latin1": ("name: dicom-bq\ndescription: Zürich\n".encode("latin-1"), "not UTF-8"),
}


def project_cases() -> Iterator[Case]:
    for label, (content, fragment) in BAD_PROJECTS.items():
        for command in (
            ["plan", "--stack", "dev"],
            ["review", "--stack", "dev"],
            ["preflight", "--stack", "dev"],
        ):
            files = {"Pulumi.dev.yaml": _stack(REQUIRED)}
            files["Pulumi.yaml"] = content if content is not None else b"<delete>"
            yield Case(f"{command[0]}-project-{label}", command, files, fragment=fragment)


EXPORT = ["export", "--store", STORE, "--table", TABLE]
EXPORT_CASES = [
    Case(
        "export-dataset-dotdot",
        ["export", "--store", STORE.replace("imaging", ".."), "--table", TABLE],
        fragment="'..'",
    ),
    Case(
        "export-store-dot",
        ["export", "--store", STORE.rsplit("/", 1)[0] + "/.", "--table", TABLE],
        fragment="'.'",
    ),
    Case("export-empty-timeout", [*EXPORT, "--timeout", ""], fragment="--timeout"),
    Case(
        "export-empty-disposition",
        [*EXPORT, "--write-disposition", ""],
        fragment="--write-disposition",
    ),
    Case(
        "export-empty-window", [*EXPORT, "--permission-window", ""], fragment="--permission-window"
    ),
    Case(
        "export-filter-trailing-cr",
        [*EXPORT, "--filter", "gs://bucket-x/f.txt\r"],
        fragment="--filter",
    ),
    Case("export-filter-empty", [*EXPORT, "--filter", ""], fragment="--filter"),
    Case("export-filter-hash", [*EXPORT, "--filter", "gs://bucket-x/a#b"], fragment="no *"),
    Case("export-filter-nul", [*EXPORT, "--filter", "gs://bucket-x/a\x00b"], fragment="printable"),
    Case(
        "export-store-leading-space",
        ["export", "--store", " " + STORE, "--table", TABLE],
        fragment="--store",
    ),
    Case("export-store-empty", ["export", "--store", "", "--table", TABLE], fragment="--store"),
    Case(
        "export-store-control",
        ["export", "--store", "\x1b[2J" + STORE, "--table", TABLE],
        fragment="\\x1b",
    ),
    Case(
        "export-store-huge",
        ["export", "--store", "p" * (5 << 20), "--table", TABLE],
        fragment="characters)",
    ),
    Case(
        "export-table-huge",
        ["export", "--store", STORE, "--table", "bq://" + "t" * (5 << 20)],
        fragment="characters)",
    ),
    Case(
        "export-table-trailing-newline",
        ["export", "--store", STORE, "--table", TABLE + "\n"],
        fragment="--table",
    ),
    Case("export-table-empty", ["export", "--store", STORE, "--table", ""], fragment="--table"),
    Case(
        "export-cleartext-endpoint",
        [*EXPORT, "--api-endpoint", "http://healthcare.example.com/"],
        fragment="clear text",
    ),
    Case("export-endpoint-empty", [*EXPORT, "--api-endpoint", ""], fragment="--api-endpoint"),
    Case(
        "export-endpoint-space",
        [*EXPORT, "--api-endpoint", " https://h.example.com/"],
        fragment="--api-endpoint",
    ),
    Case(
        "export-filter-file-missing",
        [*EXPORT, "--filter-file", "nope.txt", "--filter-bucket", "bucket-x"],
        fragment="nope.txt",
    ),
    Case(
        "export-filter-file-folder",
        [*EXPORT, "--filter-file", "folder", "--filter-bucket", "bucket-x"],
        {"folder/x": b""},
    ),
    Case(
        "export-filter-file-empty",
        [*EXPORT, "--filter-file", "empty.txt", "--filter-bucket", "bucket-x"],
        {"empty.txt": b""},
    ),
    Case(
        "export-filter-file-binary",
        [*EXPORT, "--filter-file", "bin.txt", "--filter-bucket", "bucket-x"],
        {"bin.txt": b"\x00\xff\x00\n"},
    ),
    Case(
        "export-filter-file-no-bucket",
        [*EXPORT, "--filter-file", "f.txt"],
        {"f.txt": b"/studies/1.2\n"},
        fragment="needs a bucket",
    ),
    Case(
        "export-filter-and-file",
        [
            *EXPORT,
            "--filter",
            "gs://bucket-x/f",
            "--filter-file",
            "f.txt",
            "--filter-bucket",
            "bucket-x",
        ],
        {"f.txt": b"/studies/1.2\n"},
        fragment="not both",
    ),
    Case(
        "export-bad-filter-bucket",
        [*EXPORT, "--filter-file", "f.txt", "--filter-bucket", "Bad_Bucket"],
        {"f.txt": b"/studies/1.2\n"},
        fragment="--filter-bucket",
    ),
    Case("export-timeout-spaces", [*EXPORT, "--timeout", " 30m"], fragment="--timeout"),
]

OPERATION_CASES = [
    Case(f"operations-{verb}-{label}", ["operations", verb, value], fragment=fragment)
    for verb in ("describe", "wait")
    for label, value, fragment in [
        ("empty", "", "give the full name"),
        ("space", " " + OPERATION, "give the full name"),
        ("dotdot", OPERATION.replace("imaging", ".."), "'..'"),
        ("query", OPERATION + "?alt=media", "give the full name"),
        ("control", "\x07" + OPERATION, "\\x07"),
        ("huge", "o" * (5 << 20), "characters)"),
        ("store", STORE, "give the full name"),
        ("bad-project", OPERATION.replace("dicom-src-test", "BAD_PROJECT"), "a project ID"),
    ]
] + [
    Case(
        "operations-wait-empty-timeout",
        ["operations", "wait", OPERATION, "--timeout", ""],
        fragment="--timeout",
    ),
    Case(
        "operations-wait-bad-timeout",
        ["operations", "wait", OPERATION, "--timeout", "later"],
        fragment="--timeout",
    ),
]

VERIFY_CASES = [
    Case(
        "verify-outputs-not-json",
        ["verify", "--outputs", "o.json"],
        {"o.json": b"{not json"},
        fragment="not JSON",
    ),
    Case(
        "verify-outputs-list",
        ["verify", "--outputs", "o.json"],
        {"o.json": b"[1, 2]"},
        fragment="JSON object",
    ),
    Case(
        "verify-outputs-empty",
        ["verify", "--outputs", "o.json"],
        {"o.json": b""},
        fragment="not JSON",
    ),
    Case(
        "verify-outputs-binary",
        ["verify", "--outputs", "o.json"],
        {"o.json": b"\xff\xfe\x00"},
        fragment="o.json",
    ),
    Case(
        "verify-outputs-folder",
        ["verify", "--outputs", "folder"],
        {"folder/x": b""},
        fragment="folder",
    ),
    Case(
        "verify-outputs-missing-keys",
        ["verify", "--outputs", "o.json"],
        {"o.json": b"{}"},
        fragment="dicomStoreName",
    ),
    Case(
        "verify-outputs-bad-store",
        ["verify", "--outputs", "o.json"],
        {"o.json": GOOD_OUTPUTS.replace(b"projects/", b"project/")},
        fragment="--store",
    ),
    Case(
        "verify-outputs-bad-table",
        ["verify", "--outputs", "o.json"],
        {"o.json": GOOD_OUTPUTS.replace(b"bq://", b"bq:/")},
        fragment="bq://",
    ),
    Case(
        "verify-outputs-bad-bucket",
        ["verify", "--outputs", "o.json"],
        {"o.json": GOOD_OUTPUTS[:-1] + b', "filterBucket": "Bad Bucket"}'},
        fragment="filterBucket",
    ),
    Case(
        "verify-outputs-store-not-string",
        ["verify", "--outputs", "o.json"],
        {"o.json": b'{"dicomStoreName": 5, "verificationTableUri": 6}'},
        fragment="dicomStoreName is int, not text",
    ),
    Case(
        "verify-accept-without-in-place",
        ["verify", "--store", STORE, "--table", TABLE, "--accept-synthetic-in-streams"],
        fragment="--in-place",
    ),
    Case(
        "verify-no-seed-in-place",
        ["verify", "--store", STORE, "--table", TABLE, "--no-seed", "--in-place"],
        fragment="--no-seed",
    ),
    Case(
        "verify-empty-timeout",
        ["verify", "--store", STORE, "--table", TABLE, "--timeout", ""],
        fragment="--timeout",
    ),
    Case(
        "verify-two-sources",
        ["verify", "--store", STORE, "--table", TABLE, "--outputs", "o.json"],
        {"o.json": GOOD_OUTPUTS},
        fragment="exactly one",
    ),
    Case(
        "verify-table-dotdot",
        ["verify", "--store", STORE, "--table", "bq://p-123456...t"],
        fragment="--table",
    ),
    Case(
        "verify-stack-without-cli",
        ["verify", "--stack", "dev"],
        fragment="Pulumi CLI is not on PATH",
    ),
]

QUERY_CASES = [
    Case(
        f"query-{command}-{label}", ["query", command, "--table", value, *extra], fragment="--table"
    )
    for command, extra in (
        ("dicomweb-paths", ["--patient-id", "P1"]),
        ("latest-studies", []),
        ("dropped-tags", []),
    )
    for label, value in [
        ("empty", ""),
        ("no-scheme", "p-123456.d.t"),
        ("spaces", " " + TABLE),
        ("huge", "bq://" + "x" * (5 << 20)),
        ("backquote", "bq://p-123456.d.t`; DROP TABLE x; --"),
    ]
]

AUDIT_CASES = [
    Case("audit-no-source", ["audit"], fragment="exactly one"),
    Case(
        "audit-two-sources",
        ["audit", "--stack", "dev", "--outputs", "o.json"],
        {"o.json": GOOD_OUTPUTS},
        fragment="exactly one",
    ),
    Case(
        "audit-outputs-not-json",
        ["audit", "--outputs", "o.json"],
        {"o.json": b"nope"},
        fragment="not JSON",
    ),
    Case("audit-outputs-missing", ["audit", "--outputs", "missing.json"], fragment="missing.json"),
    Case(
        "audit-outputs-list",
        ["audit", "--outputs", "o.json"],
        {"o.json": b"[]"},
        fragment="JSON object",
    ),
    Case(
        "audit-outputs-bad-grants",
        ["audit", "--outputs", "o.json"],
        {"o.json": b'{"grants": 5, "sourceProject": "x"}'},
    ),
]


def _status_outputs(**extra: object) -> dict[str, bytes]:
    """A status outputs file: one store, its nightly snapshot, then `extra` over them."""
    outputs = {
        "dicomStoreName": STORE,
        "dicomStores": [{"id": "dicom", "name": STORE, "snapshotTable": TABLE}],
        "snapshotTable": TABLE,
        "snapshotSchedule": {"schedule": "0 2 * * *", "timeZone": "UTC"},
        **extra,
    }
    return {"o.json": json.dumps(outputs).encode()}


STATUS = ["status", "--outputs", "o.json"]
STATUS_CASES = [
    Case("status-no-source", ["status"], fragment="exactly one"),
    Case(
        "status-two-sources",
        ["status", "--stack", "dev", "--outputs", "o.json"],
        _status_outputs(),
        fragment="exactly one",
    ),
    Case("status-stack-without-cli", ["status", "--stack", "dev"], fragment="Pulumi CLI"),
    Case("status-outputs-not-json", STATUS, {"o.json": b"{nope"}, fragment="not JSON"),
    Case("status-outputs-list", STATUS, {"o.json": b"[]"}, fragment="JSON object"),
    Case("status-outputs-missing", STATUS, fragment="o.json"),
    Case("status-outputs-no-store", STATUS, {"o.json": b"{}"}, fragment="dicomStoreName"),
    Case(
        "status-unknown-store-id",
        [*STATUS, "--store-id", "nope"],
        _status_outputs(),
        fragment="no DICOM store 'nope'",
    ),
    Case(
        "status-empty-store-id",
        [*STATUS, "--store-id", ""],
        _status_outputs(),
        fragment="no DICOM store ''",
    ),
    Case(
        "status-bad-grace",
        [*STATUS, "--snapshot-grace", "soon"],
        _status_outputs(),
        fragment="--snapshot-grace",
    ),
    Case(
        "status-zero-grace",
        [*STATUS, "--snapshot-grace", "0"],
        _status_outputs(),
        fragment="more than zero",
    ),
    Case(
        "status-cleartext-endpoint",
        [*STATUS, "--api-endpoint", "http://healthcare.example.com/"],
        _status_outputs(),
        fragment="clear text",
    ),
    Case(
        "status-endpoint-empty",
        [*STATUS, "--api-endpoint", ""],
        _status_outputs(),
        fragment="--api-endpoint",
    ),
    Case(
        "status-schedule-bad-hour",
        STATUS,
        _status_outputs(snapshotSchedule={"schedule": "0 25 * * *"}),
        fragment="hour field '25'",
    ),
    Case(
        "status-schedule-not-object",
        STATUS,
        _status_outputs(snapshotSchedule="0 2 * * *"),
        fragment="is not an object of",
    ),
    Case(
        "status-schedule-bad-time-zone",
        STATUS,
        _status_outputs(snapshotSchedule={"schedule": "0 2 * * *", "timeZone": "Nowhere"}),
        fragment="snapshotSchedule",
    ),
    Case(
        "status-schedule-without-table",
        STATUS,
        _status_outputs(dicomStores=[{"id": "dicom", "name": STORE}], snapshotTable=None),
        fragment="has no snapshotTable",
    ),
    Case(
        "status-store-snapshot-not-text",
        STATUS,
        _status_outputs(dicomStores=[{"id": "dicom", "name": STORE, "snapshotTable": 5}]),
        fragment="snapshotTable that is int, not text",
    ),
    Case(
        "status-store-snapshot-bad-uri",
        STATUS,
        _status_outputs(dicomStores=[{"id": "dicom", "name": STORE, "snapshotTable": "t"}]),
        fragment="snapshotTable of 'dicom' 't' is not valid",
    ),
    Case(
        "status-store-job-not-text",
        STATUS,
        _status_outputs(dicomStores=[{"id": "dicom", "name": STORE, "snapshotJob": ["j"]}]),
        fragment="snapshotJob that is list, not text",
    ),
    Case(
        "status-store-job-not-a-job-name",
        STATUS,
        _status_outputs(
            dicomStores=[{"id": "dicom", "name": STORE, "snapshotJob": "projects/p/jobs/j"}]
        ),
        fragment="is not a Cloud Scheduler job name",
    ),
]

FILE_CASES = [
    Case(
        "review-output-missing-folder",
        ["review", "--stack", "dev", "-o", "no/such/folder/r.md"],
        fragment="no/such/folder",
    ),
    Case(
        "review-output-existing",
        ["review", "--stack", "dev", "-o", "r.md"],
        {"r.md": b"keep me"},
        fragment="--force",
    ),
    Case(
        "review-output-is-folder",
        ["review", "--stack", "dev", "-o", "folder"],
        {"folder/x": b""},
        fragment="folder",
    ),
    Case("filter-validate-missing", ["filter", "validate", "nope.txt"], fragment="nope.txt"),
    Case("filter-validate-folder", ["filter", "validate", "folder"], {"folder/x": b""}),
    Case(
        "filter-upload-bad-uri",
        ["filter", "upload", "f.txt", "gs://Bad/x"],
        {"f.txt": b"/studies/1.2\n"},
        fragment="a bucket name",
    ),
    Case(
        "filter-upload-wildcard",
        ["filter", "upload", "f.txt", "gs://bucket-x/*"],
        {"f.txt": b"/studies/1.2\n"},
        fragment="no *",
    ),
    Case(
        "filter-upload-missing",
        ["filter", "upload", "nope.txt", "gs://bucket-x/f.txt"],
        fragment="nope.txt",
    ),
    Case(
        "filter-upload-chunk-zero",
        ["filter", "upload", "f.txt", "gs://bucket-x/f.txt", "--chunk-mib", "0"],
        {"f.txt": b"/studies/1.2\n"},
    ),
    Case("filter-build-no-source", ["filter", "build"], fragment="no paths"),
    Case(
        "filter-build-csv-latin1",
        ["filter", "build", "--uids-csv", "u.csv"],
        {"u.csv": "StudyInstanceUID\n1.2.3é\n".encode("latin-1")},
    ),
    Case(
        "filter-build-csv-utf16",
        ["filter", "build", "--uids-csv", "u.csv"],
        {"u.csv": "StudyInstanceUID\n1.2.3\n".encode("utf-16")},
    ),
    Case(
        "filter-build-csv-huge-field",
        ["filter", "build", "--uids-csv", "u.csv"],
        {"u.csv": b"StudyInstanceUID\n" + b"1" * (1 << 20) + b"\n"},
    ),
    Case(
        "filter-build-csv-missing",
        ["filter", "build", "--uids-csv", "nope.csv"],
        fragment="nope.csv",
    ),
    Case(
        "filter-build-output-missing-folder",
        ["filter", "build", "--uids-csv", "u.csv", "-o", "no/dir/f.txt"],
        {"u.csv": b"StudyInstanceUID\n1.2.3\n"},
        fragment="no/dir",
    ),
    Case(
        "filter-build-output-existing",
        ["filter", "build", "--uids-csv", "u.csv", "-o", "f.txt"],
        {"u.csv": b"StudyInstanceUID\n1.2.3\n", "f.txt": b"keep me"},
        fragment="--force",
    ),
    Case(
        "filter-build-bad-gs-output",
        ["filter", "build", "--uids-csv", "u.csv", "-o", "gs://Bad/x"],
        {"u.csv": b"StudyInstanceUID\n1.2.3\n"},
        fragment="bucket",
    ),
    Case(
        "filter-build-where-without-table",
        ["filter", "build", "--where", "x=1"],
        fragment="--where",
    ),
    Case("filter-build-bad-table", ["filter", "build", "--table", "t"], fragment="--table"),
]

# Issue 17: the classes a new user's corpus found. A file's content may be "<fifo>" (a named pipe
# with no writer: opening it for reading waits forever) or "<dev-zero>" (a link to /dev/zero,
# which never ends).
DEEP_OUTPUTS = ('{"dicomStoreName": ' + "[" * 5000 + "1" + "]" * 5000 + "}").encode()
ISSUE_17_CASES = [
    *(
        Case(
            f"{command}-outputs-{label}",
            [command, "--outputs", "o.json"],
            {"o.json": content},
            fragment=fragment,
        )
        for command in ("verify", "status", "audit")
        for label, content, fragment in (
            ("deep", DEEP_OUTPUTS, "levels deep"),
            ("fifo", b"<fifo>", "named pipe"),
            ("dev-zero", b"<dev-zero>", "character device"),
        )
    ),
    *(
        Case(f"trailing-newline-{' '.join(args[:2])}-{args[-2]}", args, files, fragment="'\\n'")
        for args, files in (
            (["plan", "--stack", "dev", "--project-dir", ".\n"], {}),
            (["audit", "--outputs", "o.json\n"], {"o.json": GOOD_OUTPUTS}),
            (["status", "--outputs", "o.json", "--store-id", "dicom\n"], _status_outputs()),
            (["verify", "--store", STORE, "--table", TABLE, "--filter-bucket", "bucket-x\n"], {}),
            (
                [
                    "query",
                    "dropped-tags",
                    "--table",
                    TABLE,
                    "--impersonate-service-account",
                    "sa@dicom-src-test.iam.gserviceaccount.com\n",
                ],
                {},
            ),
            (
                [
                    "query",
                    "latest-studies",
                    "--table",
                    TABLE,
                    "--universe-domain",
                    "googleapis.com\n",
                ],
                {},
            ),
            (["filter", "upload", "f.txt", "gs://bucket-x/f.txt\n"], {"f.txt": b"/studies/1.2\n"}),
            (
                ["filter", "build", "--uids-csv", "u.csv", "-o", "f.txt\n"],
                {"u.csv": b"StudyInstanceUID\n1.2.3\n"},
            ),
            (["operations", "wait", OPERATION, "--timeout", "30m\n"], {}),
            (
                [
                    "export",
                    "--store",
                    STORE,
                    "--table",
                    TABLE,
                    "--agent-email",
                    "service-1@gcp-sa-healthcare.iam.gserviceaccount.com\n",
                ],
                {},
            ),
        )
    ),
    Case(
        "export-location-mars",
        ["export", "--store", STORE.replace("us-central1", "mars"), "--table", TABLE],
        fragment="no such location",
    ),
    Case(
        "operations-location-asia",
        ["operations", "describe", OPERATION.replace("us-central1", "asia")],
        fragment="no such location",
    ),
    Case("export-timeout-huge", [*EXPORT, "--timeout", "999999999h"], fragment="30 days"),
    Case(
        "status-grace-huge",
        [*STATUS, "--snapshot-grace", "99999999h"],
        _status_outputs(),
        fragment="30 days",
    ),
    *(
        Case(
            f"plan-stack-{label}",
            ["plan", "--stack", "bad"],
            {"Pulumi.bad.yaml": _stack({**REQUIRED, **config})},
            fragment=fragment,
        )
        for label, config, fragment in (
            ("location-mars", {"dicom-bq:location": "mars"}, "no such location"),
            ("bq-location-asia", {"dicom-bq:bigqueryLocation": "asia"}, "BigQuery has no other"),
            (
                "scheduler-multi-region",
                {"dicom-bq:snapshotSchedule": "0 2 * * *", "dicom-bq:snapshotRegion": "us"},
                "Cloud Scheduler has no multi-region",
            ),
            (
                "stream-verification-table",
                {"dicom-bq:streamTables": ["dicom_bq_verification"]},
                "the verification table",
            ),
            (
                "project-newline",
                {"dicom-bq:sourceProject": "dicom-src-test\n"},
                "dicom-bq:sourceProject",
            ),
        )
    ),
    *(
        Case(
            f"env-{variable.lower()}-{label}",
            ["query", "latest-studies", "--table", TABLE],
            env={variable: value},
            fragment=fragment,
        )
        for variable, label, value, fragment in (
            ("GOOGLE_CLOUD_PROJECT", "dotdot", "../../../evil", "not a project ID"),
            ("GOOGLE_CLOUD_PROJECT", "newline", "dicom-bq-dev\n", "not a project ID"),
            ("GCLOUD_PROJECT", "spaces", "dicom bq", "not a project ID"),
            ("BIGQUERY_EMULATOR_HOST", "bad-port", "http://127.0.0.1:notaport", "Port"),
            ("BIGQUERY_EMULATOR_HOST", "ipv6", "http://[::1", "IPv6"),
            ("STORAGE_EMULATOR_HOST", "port-range", "127.0.0.1:99999", "out of range"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "dev-zero", "/dev/zero", "character device"),
        )
    ),
]

CASES = [
    *stack_cases(),
    *project_cases(),
    *EXPORT_CASES,
    *OPERATION_CASES,
    *VERIFY_CASES,
    *QUERY_CASES,
    *AUDIT_CASES,
    *STATUS_CASES,
    *FILE_CASES,
    *ISSUE_17_CASES,
]


def test_case_names_are_unique() -> None:
    # A repeated name would silently replace a case in pytest's ids.
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))


@pytest.fixture
def recorder(
    request_recorder: RequestRecorder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> RequestRecorder:
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no Pulumi CLI
    return request_recorder


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_refused_without_traceback_or_request(
    case: Case, recorder: RequestRecorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for path in ROOT.glob("Pulumi*.yaml"):
        shutil.copy(path, project / path.name)
    for relative, content in case.files.items():
        target = project / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if content == b"<delete>":
            target.unlink()
        elif content == b"<fifo>":
            os.mkfifo(target)
        elif content == b"<dev-zero>":
            target.symlink_to("/dev/zero")
        else:
            target.write_bytes(content)
    monkeypatch.chdir(project)
    for variable in ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in case.env.items():
        monkeypatch.setenv(variable, value)
    before = {p: p.read_bytes() for p in project.rglob("*") if p.is_file()}
    result = runner.invoke(app, case.args, input=case.stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"traceback: {result.exception!r}"
    )
    assert result.exit_code == case.exit_code, result.output[-MAX_STDERR:]
    assert "Traceback" not in result.output
    assert len(result.stderr) <= MAX_STDERR, f"{len(result.stderr)} bytes of stderr"
    # "Error: ..." or, for a filter file, the validator's "FILE:LINE: error: ..." lines.
    assert "Error: " in result.stderr or ": error: " in result.stderr, result.stderr[:200]
    assert case.fragment in result.stderr
    assert recorder.requests == []
    # Nothing the user had was changed.
    assert {p: p.read_bytes() for p in before} == before
