"""Stack settings refused with the whole message the user reads, and the limits Google documents
accepted up to the limit itself (issue 19, mutation testing: written to kill the mutants
scripts/mutation found surviving in vocabulary/settings.py). A refusal that drops the offending
value, the key or the count to remove leaves the user guessing, so each message is held whole."""

from __future__ import annotations

from typing import Any

import pytest

from dicom_bq.vocabulary.settings import (
    SettingsError,
    config_keys,
    near_miss_namespace,
    parse_settings,
    settings_from_config,
)
from tests.conftest import base_settings

NS = "dicom-bq"
TOPIC = "projects/dicom-src-test/topics/instances"
# A 3-byte lowercase letter (U+FF41): 43 of them are 129 UTF-8 bytes in 43 characters, under
# the 63-character limit, over Google's 128 bytes.
WIDE = "\uff41"
DURATION = "a duration is a number of seconds or minutes, such as '90s' or '2m'"
STREAM_NAME_ONLY = (
    "give the table name only; streams go to the stack's BigQuery dataset (bigqueryDatasetId)"
)


def problems(**overrides: Any) -> list[str]:
    """The problems of a refused stack; its message is them, one per line."""
    with pytest.raises(SettingsError) as refused:
        parse_settings(base_settings(**overrides), stack="dev")
    assert str(refused.value) == "\n".join(refused.value.problems)
    return refused.value.problems


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"iamPropagationWait": "61m"},
            f"{NS}:iamPropagationWait = '61m' is not valid: the IAM propagation wait is at most 60m",
        ),
        (
            {"iamPropagationWait": "2h"},
            f"{NS}:iamPropagationWait = '2h' is not valid: {DURATION}",
        ),
        (
            {"labels": {f"k{i}": "v" for i in range(65)}},
            "is not valid: at most 64 labels are allowed, not 65",
        ),
        (
            {"labels": {"team": WIDE * 43}},
            f"is not valid: label 'team' value '{WIDE * 43}': it is 129 UTF-8 bytes, Google "
            "allows 128: shorten it",
        ),
        (
            {"labels": {WIDE * 43: "v"}},
            f"is not valid: label key '{WIDE * 43}': it is 129 UTF-8 bytes, Google allows 128: "
            "shorten it",
        ),
        (
            {"streamTables": [f"t{i}" for i in range(7)]},
            "is not valid: a DICOM store streams to at most 5 BigQuery tables; 7 are listed: "
            "remove 2",
        ),
        ({"streamTables": ["ds.t"]}, f"is not valid: 'ds.t': {STREAM_NAME_ONLY}"),
        (
            {"streamTables": ["bad-table!"]},
            "is not valid: 'bad-table!': a BigQuery table name may not contain '!': use letters, "
            "marks, digits, underscores, dashes and spaces",
        ),
        ({"streamTables": ["bq://t"]}, f"is not valid: 'bq://t': {STREAM_NAME_ONLY}"),
        (
            {"streamTables": ["DICOM_BQ_Verification"]},
            "is not valid: 'DICOM_BQ_Verification' is the verification table, which `dicom-bq "
            "verify` replaces (WRITE_TRUNCATE) on every run: a stream there would lose its rows; "
            "name the stream table something else",
        ),
        (
            {"streamTables": ["a", "b", "a", "b"]},
            "is not valid: each stream needs its own table; 'a', 'b' is listed more than once",
        ),
        (
            {"alertEmails": ["not-an-email"]},
            "is not valid: 'not-an-email': an alert email is an address such as "
            "'oncall@example.org'",
        ),
        (
            {"alertEmails": ["b@example.com", "a@example.com", "b@example.com", "a@example.com"]},
            "is not valid: 'a@example.com', 'b@example.com' is listed more than once",
        ),
    ],
)
def test_a_bad_value_is_refused_naming_it_and_what_to_do(
    overrides: dict[str, Any], expected: str
) -> None:
    (problem,) = problems(**overrides)
    key = next(iter(overrides))
    assert problem.startswith(f"{NS}:{key} = ")
    assert problem.endswith(expected)


@pytest.mark.parametrize(
    "overrides",
    [
        {"iamPropagationWait": "60m"},
        {"iamPropagationWait": 3600},
        {"labels": {f"k{i}": "v" for i in range(64)}},
        {"labels": {"team": WIDE * 42 + "\u00e9"}},  # 128 bytes exactly
        {"streamTables": [f"t{i}" for i in range(5)]},
        {
            "dicomStoreId": None,
            "labels": {f"k{i}": "v" for i in range(40)},
            "dicomStores": [{"id": "a", "labels": {f"s{i}": "v" for i in range(24)}}],
        },
    ],
)
def test_a_value_at_googles_limit_is_accepted(overrides: dict[str, Any]) -> None:
    parse_settings(base_settings(**overrides), stack="dev")


def test_snapshot_settings_without_a_schedule_are_each_refused() -> None:
    found = problems(
        snapshotTable="dicom_snapshot_x",
        snapshotTimeZone="Europe/Paris",
        snapshotRegion="us-central1",
    )
    why = "is set but snapshotSchedule is not: set the schedule, or remove it"
    assert found == [
        f"{NS}:snapshotTable: {why}",
        f"{NS}:snapshotTimeZone: {why}",
        f"{NS}:snapshotRegion: {why}",
    ]


def test_the_snapshot_table_cannot_be_a_stream_table() -> None:
    assert problems(
        snapshotSchedule="0 2 * * *",
        snapshotTable="dicom_snapshot",
        streamTables=["dicom_snapshot"],
    ) == [
        f"{NS}:snapshotTable: 'dicom_snapshot' is a stream table: the nightly WRITE_TRUNCATE "
        "would replace the streamed rows; the snapshot needs a table of its own"
    ]


def test_the_single_store_settings_are_refused_beside_a_store_list() -> None:
    found = problems(
        dicomStoreId=None, dicomStores=[{"id": "a"}], notificationTopic=TOPIC, streamTables=["s"]
    )
    assert found == [
        f"{NS}:{key} is a setting of each store when {NS}:dicomStores lists them: move it into "
        "the entries that need it (notification: {pubsubTopic: ...} or streamTables: [...]), "
        f"then `pulumi config rm {NS}:{key} --stack dev`"
        for key in ("notificationTopic", "streamTables")
    ]


def test_a_store_list_is_refused_beside_dicom_store_id_empty_or_repeating_an_id() -> None:
    assert problems(dicomStores=[{"id": "a"}]) == [
        f"{NS}:dicomStoreId and {NS}:dicomStores are both set: keep one. dicomStoreId names a "
        "single store, dicomStores lists them all: put the dicomStoreId store first in "
        f"dicomStores, then `pulumi config rm {NS}:dicomStoreId --stack dev`"
    ]
    assert problems(dicomStoreId=None, dicomStores=[]) == [
        f"{NS}:dicomStores lists no store: give at least one entry, such as [{{id: dicom}}], or "
        "set dicomStoreId instead"
    ]
    assert problems(dicomStoreId=None, dicomStores=[{"id": "a"}, {"id": "a"}]) == [
        f"{NS}:dicomStores[1].id 'a' is also the ID of dicomStores[0]: each store of the "
        "Healthcare dataset needs its own ID"
    ]


def test_a_store_over_the_label_limit_with_the_stacks_labels_is_refused() -> None:
    found = problems(
        dicomStoreId=None,
        labels={f"k{i}": "v" for i in range(40)},
        dicomStores=[{"id": "a", "labels": {f"s{i}": "v" for i in range(27)}}],
    )
    assert found == [
        f"{NS}:dicomStores[0].labels: with the stack's labels the store would carry 67; Google "
        "allows at most 64 per store: remove 3"
    ]


def test_an_unknown_key_is_refused_with_the_nearest_setting_and_the_list() -> None:
    settings = ", ".join(config_keys())
    assert problems(sourceProjekt="x") == [
        f"{NS}:sourceProjekt is not a dicom-bq setting: did you mean 'sourceProject'? the "
        f"settings are {settings}"
    ]
    assert problems(zzzzzz="x") == [
        f"{NS}:zzzzzz is not a dicom-bq setting: the settings are {settings}"
    ]


def test_an_unknown_key_is_shown_printable_and_short() -> None:
    (control,) = problems(**{"bad\x00key": "x"})
    assert control.startswith(f"{NS}:bad\\x00key is not a dicom-bq setting: ")
    (long,) = problems(**{"k" * 100: "x"})
    assert long.startswith(f"{NS}:{'k' * 60}... is not a dicom-bq setting: ")


def test_an_unknown_field_of_a_store_entry_is_refused_with_the_fields_an_entry_has() -> None:
    assert problems(dicomStoreId=None, dicomStores=[{"id": "a", "foo": 1}]) == [
        f"{NS}:dicomStores[0].foo is not a field of a store: an entry of {NS}:dicomStores has id, "
        "labels, notification (pubsubTopic, sendForBulkImport) and streamTables"
    ]


def test_a_structured_value_that_is_not_json_is_refused_naming_its_key() -> None:
    assert problems(labels="not json") == [f"{NS}:labels: 'not json' is not a list or map"]


def test_the_fix_names_the_stack_or_stands_for_it() -> None:
    raw = {key: value for key, value in base_settings().items() if key != "dicomStoreId"}
    with pytest.raises(SettingsError) as refused:
        parse_settings(raw)
    assert refused.value.problems[0].endswith(
        f"`pulumi config set {NS}:dicomStoreId VALUE --stack STACK`"
    )


@pytest.mark.parametrize(
    ("namespace", "near"),
    [
        ("dicom-bq", False),  # ours
        ("dicombq", True),
        ("Dicom-BQ", True),
        ("D.I.C.O.M.B.Q", True),  # the same letters, however far apart
        ("dicom-bx", True),
        ("dicomqq", True),  # similarity 0.8 exactly
        ("dicom", False),  # 0.77
        ("gcp", False),
        ("aws", False),
    ],
)
def test_a_namespace_near_ours_is_a_near_miss(namespace: str, near: bool) -> None:
    assert near_miss_namespace(namespace) is near


def config(**overrides: Any) -> dict[str, Any]:
    return {f"{NS}:{key}": value for key, value in base_settings(**overrides).items()}


def test_a_key_in_a_near_miss_namespace_is_warned_with_the_rename() -> None:
    _, warnings = settings_from_config({**config(), "dicombq:labels": "{}", "gcp:project": "p"})
    assert warnings == [
        "config key 'dicombq:labels' is in namespace 'dicombq', which dicom-bq does not read: did "
        "you mean 'dicom-bq:labels'? Rename it with `pulumi config rm dicombq:labels` and "
        "`pulumi config set dicom-bq:labels VALUE`"
    ]


SHORT_WAIT = (
    f"{NS}:iamPropagationWait is 60s; Google says IAM changes typically take 2 minutes to "
    "propagate, and this stack creates resources that Google checks against its grants: use at "
    "least 120s"
)


@pytest.mark.parametrize(
    "needs_the_wait",
    [
        {"streamTables": '["s"]'},
        {"notificationTopic": TOPIC},
        {"healthcareKmsKey": "projects/kms-prj/locations/us-central1/keyRings/r/cryptoKeys/c"},
        {"bigqueryKmsKey": "projects/kms-prj/locations/us-central1/keyRings/r/cryptoKeys/c"},
    ],
)
def test_a_wait_shorter_than_googles_typical_propagation_is_warned(
    needs_the_wait: dict[str, Any],
) -> None:
    _, warnings = settings_from_config(config(iamPropagationWait="60s", **needs_the_wait), "dev")
    assert warnings == [SHORT_WAIT]
    _, enough = settings_from_config(config(iamPropagationWait="120s", **needs_the_wait), "dev")
    assert enough == []


def test_a_short_wait_is_fine_when_nothing_waits_for_a_grant() -> None:
    assert settings_from_config(config(iamPropagationWait="60s"), "dev")[1] == []


def test_a_store_name_is_the_full_name_in_the_stacks_dataset() -> None:
    settings = parse_settings(base_settings(), stack="dev")
    assert settings.store_name_of("other") == (
        "projects/dicom-src-test/locations/us-central1/datasets/imaging/dicomStores/other"
    )


MISSING_STORE = (
    f"{NS}:dicomStoreId is required (or {NS}:dicomStores, a list, for several stores): set it "
    f"with `pulumi config set {NS}:dicomStoreId VALUE --stack dev`"
)


def test_a_stack_without_a_store_hears_of_it_with_its_other_problems() -> None:
    found = problems(dicomStoreId=None, location="Mars")
    assert len(found) == 2
    assert found[0].startswith(f"{NS}:location = 'Mars' is not valid: ")
    assert found[1] == MISSING_STORE


def test_settings_from_a_stack_config_name_the_stack_in_the_fix() -> None:
    without_store = {k: v for k, v in config().items() if k != f"{NS}:dicomStoreId"}
    with pytest.raises(SettingsError) as refused:
        settings_from_config({**without_store, f"{NS}:location": "Mars"}, "dev")
    assert refused.value.problems[-1] == MISSING_STORE
    with pytest.raises(SettingsError) as unnamed:
        settings_from_config({**without_store, f"{NS}:location": "Mars"})
    assert unnamed.value.problems[-1].endswith("--stack STACK`")
