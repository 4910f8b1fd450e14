"""Fuzzing, not only a corpus (issue 17, item 7): generated values for every option of every
command and every settings key, the commands taken from the typer app itself.

A bad value (a control character anywhere, a trailing newline, a length beyond any Google limit,
nesting thousands deep) is refused with exit 2 and a short message naming the option or key and
the value, never a traceback, and nothing reaches Google: every emulator variable points at one
loopback recorder (tests/conftest.py `request_recorder`). Hypothesis draws a few examples per
option (the fast tier stays fast); the deterministic cases run for each option every time.
"""

from __future__ import annotations

import enum
import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.cli.common import FREE_TEXT_OPTIONS, MAX_OPTION_CHARS
from dicom_bq.vocabulary import identifiers
from dicom_bq.vocabulary.settings import SettingsError, config_keys, parse_settings
from tests.conftest import STORE, base_settings
from tests.fakes.http import RequestRecorder
from tests.fast_cli import build_once, click_command

runner = CliRunner()
TABLE = "bq://dicom-src-test.dicom_metadata.t"
OPERATION = "projects/dicom-src-test/locations/us-central1/datasets/imaging/operations/12"
MAX_STDERR = 2000
FUZZ = settings(
    max_examples=2,
    deadline=None,
    derandomize=True,  # the same examples every run: a fast tier that never flakes
    phases=[Phase.explicit, Phase.generate],  # the values are short already: no shrinking
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# A valid value of each parameter, by its Python name: the start of every generated bad value,
# and what a required parameter is given while another one is fuzzed.
SAMPLES = {
    "agent_email": "service-111122223333@gcp-sa-healthcare.iam.gserviceaccount.com",
    "api_endpoint": "https://healthcare.googleapis.com/",
    "api_version": "v1",
    "billing_project": "dicom-src-test",
    "bq_table": TABLE,
    "chunk_mib": "8",
    "dataset": "imaging",
    "destination": "gs://bucket-x/f.txt",
    "filter_bucket": "bucket-x",
    "filter_config_gcs_uri": "gs://bucket-x/f.txt",
    "filter_file": "f.txt",
    "filter_uri": "gs://bucket-x/f.txt",
    "impersonate": "deployer@dicom-src-test.iam.gserviceaccount.com",
    "limit": "10",
    "location": "us-central1",
    "message": "nightly",
    "name": OPERATION,
    "output": "out.txt",
    "output_format": "json",
    "outputs": "o.json",
    "path": "f.txt",
    "patient_id": "P1",
    "permission_window": "10m",
    "policy_pack": "policy",
    "project": "dicom-src-test",
    "project_dir": ".",
    "query": "SELECT 1",
    "schema": "nested",
    "snapshot_grace": "2h",
    "stack": "dev",
    "store": STORE,
    "store_argument": STORE,
    "store_id": "dicom",
    "table": TABLE,
    "targets": "urn:pulumi:dev::dicom-bq::gcp:healthcare/dataset:Dataset::d",
    "timeout": "30m",
    "uids_csv": "u.csv",
    "universe_domain": "googleapis.com",
    "where": "TRUE",
    "write_disposition": "WRITE_EMPTY",
}


_ROOT = click_command()


def _commands() -> Iterator[tuple[list[str], Any]]:
    def walk(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, command

    yield from walk(_ROOT, [])


COMMANDS = list(_commands())


@pytest.fixture(autouse=True)
def _one_click_command(monkeypatch: pytest.MonkeyPatch) -> None:
    build_once(monkeypatch)


def _annotation(parameter: Any) -> Any:
    return parameter.type_descriptor.annotation


def _takes_text(parameter: Any) -> bool:
    """A value the command reads as text or a path: typer converts an int (int() strips
    whitespace, so "8\\n" is 8) or an enum choice itself, before the command runs."""
    annotation = _annotation(parameter)
    if getattr(parameter, "is_flag", False) or annotation is int:
        return False
    return not (isinstance(annotation, type) and issubclass(annotation, enum.Enum))


# (command words, parameter): every value-taking parameter of every command.
PARAMETERS = [
    (path, parameter)
    for path, command in COMMANDS
    for parameter in command.params
    if _takes_text(parameter)
]


def _spelled(parameter: Any) -> str:
    if parameter.param_type_name == "argument":
        return str(parameter.metavar or parameter.name.upper()).strip("[]")
    return str(max(parameter.opts, key=len))


def _arguments(path: list[str], fuzzed: Any, value: str) -> list[str]:
    """The command with `fuzzed` set to `value`, its other required parameters to samples."""
    command = dict((" ".join(p), c) for p, c in COMMANDS)[" ".join(path)]
    options: list[str] = []
    positionals: list[str] = []
    for parameter in command.params:
        chosen = value if parameter is fuzzed else None
        if chosen is None and parameter.required:
            chosen = SAMPLES[parameter.name]
        if chosen is None:
            continue
        if parameter.param_type_name == "argument":
            positionals.append(chosen)
        else:
            options.append(f"{max(parameter.opts, key=len)}={chosen}")
    # "--" ends the options: a positional value is never read as one.
    return [*path, *options, "--", *positionals]


def test_every_value_taking_parameter_has_a_sample() -> None:
    # A new option needs a valid sample here, so that it is fuzzed too.
    names = {parameter.name for _, parameter in PARAMETERS}
    required = {p.name for _, c in COMMANDS for p in c.params if p.required}
    assert (names | required) - SAMPLES.keys() == set()
    assert len(COMMANDS) >= 16
    assert len(PARAMETERS) >= 90


def _refused(result: Any, recorder: RequestRecorder, parameter: Any, shown: list[str]) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"traceback: {result.exception!r}"
    )
    assert result.exit_code == 2, result.output[-MAX_STDERR:]
    assert "Traceback" not in result.output
    assert len(result.stderr) <= MAX_STDERR, f"{len(result.stderr)} characters of stderr"
    assert result.stderr.startswith("Error: ") or "\nError: " in result.stderr, result.stderr
    # typer's own refusal of a path names an argument in lower case.
    assert _spelled(parameter).lower() in result.stderr.lower(), result.stderr
    for piece in shown:
        assert piece in result.stderr, (piece, result.stderr)
    # Nothing raw: the message escapes what it quotes.
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", result.stderr), result.stderr
    assert recorder.requests == []


# Characters no option value may hold; a free-text value (SQL, a message) may hold \n, \r, \t.
FORBIDDEN = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]] + ["\u2028", "\u2029"]
# What an environment variable can hold: all but NUL (execve(2) strings end at one).
IN_ENVIRONMENT = [char for char in FORBIDDEN if char != "\x00"]
LINE_CHARACTERS = "\n\r\t"
SAFE_TEXT = st.text(
    alphabet=st.sampled_from(string.ascii_letters + string.digits + "._/:@=é漢"), max_size=12
)


@pytest.fixture
def recorder(
    request_recorder: RequestRecorder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> RequestRecorder:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no Pulumi CLI
    return request_recorder


def _invoke(recorder: RequestRecorder, args: list[str]) -> Any:
    recorder.requests.clear()
    return runner.invoke(app, args)


@pytest.mark.parametrize(
    ("path", "parameter"),
    PARAMETERS,
    ids=[f"{' '.join(p)}:{_spelled(q)}" for p, q in PARAMETERS],
)
@FUZZ
@given(prefix=SAFE_TEXT, suffix=SAFE_TEXT, char=st.sampled_from(FORBIDDEN))
def test_a_control_character_in_any_option_is_refused_before_any_request(
    recorder: RequestRecorder, path: list[str], parameter: Any, prefix: str, suffix: str, char: str
) -> None:
    if parameter.name in FREE_TEXT_OPTIONS and char in LINE_CHARACTERS:
        char = "\x1b"
    sample = SAMPLES[parameter.name]
    # The deterministic cases first: a valid value with a line break after it, as `$(cmd)`
    # or a copied line gives, and a value past any length an option takes.
    if parameter.name not in FREE_TEXT_OPTIONS:
        newline = _invoke(recorder, _arguments(path, parameter, sample + "\n"))
        _refused(newline, recorder, parameter, ["\\n"])
        long = _invoke(recorder, _arguments(path, parameter, "x" * (MAX_OPTION_CHARS + 1)))
        _refused(long, recorder, parameter, [f"({MAX_OPTION_CHARS + 1} characters)"])
    value = prefix + sample + char + suffix
    result = _invoke(recorder, _arguments(path, parameter, value))
    if char == "\x00" and _annotation(parameter) in (Path, list[Path]):
        # typer converts a path before the command runs, and says "embedded null byte" itself.
        _refused(result, recorder, parameter, ["null byte"])
    else:
        _refused(result, recorder, parameter, [repr(char)[1:-1]])


# -- the environment -------------------------------------------------------------------------


EMULATOR_VARIABLES = sorted(
    {
        "HEALTHCARE_EMULATOR_HOST",
        "BIGQUERY_EMULATOR_HOST",
        "STORAGE_EMULATOR_HOST",
        "CLOUDSCHEDULER_EMULATOR_HOST",
        "IAM_EMULATOR_HOST",
    }
)
MALFORMED_HOSTS = st.one_of(
    st.builds(lambda p: f"http://127.0.0.1:{p}", st.text(string.ascii_letters, min_size=1)),
    st.builds(lambda p: f"127.0.0.1:{p}", st.integers(65536, 10**12)),
    st.builds(lambda c: f"http://127.0.0.1:8123{c}", st.sampled_from(IN_ENVIRONMENT)),
    st.sampled_from(["http://[::1", "ftp://127.0.0.1:21", "http://:80", "http://h:1/path"]),
)


@FUZZ
@given(variable=st.sampled_from(EMULATOR_VARIABLES), value=MALFORMED_HOSTS)
@example(variable="BIGQUERY_EMULATOR_HOST", value="http://127.0.0.1:notaport")
@example(variable="STORAGE_EMULATOR_HOST", value="127.0.0.1:99999")
def test_a_malformed_emulator_variable_is_refused_by_name(
    recorder: RequestRecorder, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    with monkeypatch.context() as patched:  # one example's variable, not the last one's too
        patched.setenv(variable, value)
        result = _invoke(recorder, ["query", "latest-studies", "--table", TABLE])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: {variable} "), result.stderr
    assert "Traceback" not in result.output
    assert recorder.requests == []


@FUZZ
@given(
    value=st.one_of(
        st.builds(lambda c: "dicom-bq-dev" + c, st.sampled_from(IN_ENVIRONMENT)),
        st.sampled_from(["../../../evil", "Dicom-BQ", "p", "x" * 31, "dicom bq", "a/b"]),
    ),
    variable=st.sampled_from(["GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT"]),
)
@example(value="../../../evil", variable="GOOGLE_CLOUD_PROJECT")
@example(value="dicom-bq-dev\n", variable="GOOGLE_CLOUD_PROJECT")
def test_the_billing_project_from_the_environment_is_checked_before_any_request(
    recorder: RequestRecorder, monkeypatch: pytest.MonkeyPatch, value: str, variable: str
) -> None:
    for args in (
        ["query", "latest-studies", "--table", TABLE],
        ["filter", "build", "--query", "SELECT 1"],
    ):
        with monkeypatch.context() as patched:
            for name in ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT"):
                patched.delenv(name, raising=False)
            patched.setenv(variable, value)
            result = _invoke(recorder, args)
        assert result.exit_code == 2, result.output
        assert f"Error: {variable} " in result.stderr
        assert "not a project ID" in result.stderr
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", result.stderr)
        assert recorder.requests == []


@pytest.mark.parametrize("device", ["/dev/zero", "fifo", "folder"])
def test_a_credentials_file_that_is_not_a_regular_file_is_refused(
    recorder: RequestRecorder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, device: str
) -> None:
    import os

    if device == "fifo":
        device = str(tmp_path / "key.json")
        os.mkfifo(device)
    elif device == "folder":
        device = str(tmp_path)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", device)
    result = _invoke(recorder, ["query", "latest-studies", "--table", TABLE])
    assert result.exit_code == 2, result.output
    assert "GOOGLE_APPLICATION_CREDENTIALS" in result.stderr
    assert "not a regular file" in result.stderr
    assert recorder.requests == []


# -- settings ----------------------------------------------------------------------------------


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


SETTING_SAMPLES: dict[str, Any] = {
    "agentIamDomain": "iam.gserviceaccount.com",
    "alertChannels": ["projects/dicom-src-test/notificationChannels/123"],
    "alertEmails": ["oncall@example.org"],
    "allowedBigqueryLocations": ["US"],
    "bigqueryDatasetId": "dicom_metadata",
    "bigqueryKmsKey": "projects/k-project/locations/us-central1/keyRings/r/cryptoKeys/k",
    "bigqueryLocation": "US",
    "dataEditorScope": "dataset",
    "destinationProject": "analytics-prj",
    "destinationProjectNumber": "444455556666",
    "dicomStoreId": "dicom",
    "dicomStores": [{"id": "dicom"}],
    "filterBucket": "bucket-x",
    "healthcareDatasetId": "imaging",
    "healthcareKmsKey": "projects/k-project/locations/us-central1/keyRings/r/cryptoKeys/k",
    "iamPropagationWait": "120s",
    "labels": {"team": "imaging"},
    "location": "us-central1",
    "notificationTopic": "projects/dicom-src-test/topics/dicom-events",
    "protected": "true",
    "requireCmek": "false",
    "retainOnDelete": "false",
    "snapshotRegion": "us-central1",
    "snapshotSchedule": "0 2 * * *",
    "snapshotTable": "dicom_snapshot",
    "snapshotTimeZone": "UTC",
    "sourceProject": "dicom-src-test",
    "sourceProjectNumber": "111122223333",
    "streamTables": ["instances"],
    "timeZone": "UTC",
    "universeDomain": "googleapis.com",
}
# Keys that need another to be set before their own value is looked at.
SETTING_CONTEXT: dict[str, dict[str, Any]] = {
    "snapshotTable": {"snapshotSchedule": "0 2 * * *"},
    "snapshotTimeZone": {"snapshotSchedule": "0 2 * * *"},
    "snapshotRegion": {"snapshotSchedule": "0 2 * * *"},
    "dicomStores": {"dicomStoreId": None},
}


def test_every_settings_key_has_a_sample() -> None:
    assert set(config_keys()) == SETTING_SAMPLES.keys()
    for key, sample in SETTING_SAMPLES.items():
        parse_settings(base_settings(**{**SETTING_CONTEXT.get(key, {}), key: sample}))


def _spoiled(sample: Any, char: str, where: int) -> Any:
    """`sample` with `char` in its text: in the value, in a list's item, in a map's key or value,
    in a store entry's id."""
    if isinstance(sample, str):
        cut = min(where, len(sample))
        return sample[:cut] + char + sample[cut:]
    if isinstance(sample, list):
        return [_spoiled(sample[0], char, where), *sample[1:]]
    if isinstance(sample, dict):
        key = next(iter(sample))
        if where % 2:
            return {key + char: sample[key]}
        return {key: _spoiled(sample[key], char, where)}
    raise AssertionError(sample)


def _problems(raw: dict[str, Any]) -> str | None:
    try:
        parse_settings(raw)
    except SettingsError as error:
        return str(error)
    return None


def _settings_refused(key: str, message: str | None) -> None:
    assert message is not None, f"accepted a bad {key}"
    assert f"dicom-bq:{key}" in message, message
    assert len(message) <= MAX_STDERR, len(message)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", message), message


@pytest.mark.parametrize("key", sorted(SETTING_SAMPLES))
@FUZZ
@given(char=st.sampled_from(FORBIDDEN), where=st.integers(0, 40))
def test_a_control_character_in_any_setting_is_refused_naming_the_key(
    key: str, char: str, where: int
) -> None:
    sample = SETTING_SAMPLES[key]
    context = SETTING_CONTEXT.get(key, {})
    if key in ("protected", "requireCmek", "retainOnDelete"):
        spoiled: Any = sample + char
    else:
        spoiled = _spoiled(sample, char, where)
    _settings_refused(key, _problems(base_settings(**{**context, key: spoiled})))
    # The trailing newline, always.
    if isinstance(sample, str):
        _settings_refused(key, _problems(base_settings(**{**context, key: sample + "\n"})))


@pytest.mark.parametrize("key", sorted(SETTING_SAMPLES))
@FUZZ
@given(depth=st.integers(2, 5000), as_json=st.booleans(), size=st.integers(64 * 1024, 1 << 20))
@example(depth=5000, as_json=True, size=1 << 20)
def test_deep_or_huge_setting_values_are_refused_without_a_crash(
    key: str, depth: int, as_json: bool, size: int
) -> None:
    """Nesting thousands deep (RecursionError in json.loads, in repr) and values past every
    Google limit: refused, with a short message naming the key."""
    context = SETTING_CONTEXT.get(key, {})
    # Built, not json.dumps'd: the encoder recurses too.
    value = "[" * depth + '"x"' + "]" * depth if as_json else _nested(depth)
    _settings_refused(key, _problems(base_settings(**{**context, key: value})))
    huge = "a" * size
    _settings_refused(key, _problems(base_settings(**{**context, key: huge})))


# -- each identifier rule, on its own ----------------------------------------------------------

CHECKS = {
    identifiers.check_project_id: "dicom-src-test",
    identifiers.check_project_number: "111122223333",
    identifiers.check_location: "us-central1",
    identifiers.check_bigquery_location: "US",
    identifiers.check_scheduler_region: "europe-west1",
    identifiers.check_healthcare_id: "imaging",
    identifiers.check_bigquery_dataset_id: "dicom_metadata",
    identifiers.check_table_id: "instances",
    identifiers.check_bucket: "bucket-x",
    identifiers.check_topic: "projects/dicom-src-test/topics/t-1",
    identifiers.check_kms_key: "projects/k-project/locations/us/keyRings/r/cryptoKeys/k",
    identifiers.check_label_key: "team",
    identifiers.check_label_value: "imaging",
    identifiers.check_hostname: "googleapis.com",
    identifiers.check_notification_channel: "projects/dicom-src-test/notificationChannels/1",
    identifiers.check_email: "oncall@example.org",
    identifiers.check_emulator_host: "http://127.0.0.1:8123",
    identifiers.check_stack_name: "org/dicom-bq/dev",
}


@pytest.mark.parametrize("check", list(CHECKS), ids=[c.__name__ for c in CHECKS])
@settings(max_examples=60, deadline=None, derandomize=True)
@given(text=st.text(max_size=80), char=st.sampled_from(FORBIDDEN), where=st.integers(0, 80))
def test_no_rule_accepts_a_control_character_or_a_final_newline(
    check: Any, text: str, char: str, where: int
) -> None:
    sample = CHECKS[check]
    assert check(sample) is None
    assert check(sample + "\n") is not None  # `$` matches before a final newline
    assert check(sample[:where] + char + sample[where:]) is not None
    if check(text) is None:
        assert not any(ch in FORBIDDEN for ch in text), text
    problem = check(text)
    assert problem is None or len(problem) <= 500
