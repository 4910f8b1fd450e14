"""Stack settings: good ones parse, bad ones are refused with a message naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from dicom_bq.vocabulary.settings import SettingsError, parse_settings
from tests.conftest import base_settings

BAD_SETTINGS: list[tuple[str, dict[str, Any], str]] = [
    ("missing source project", {"sourceProject": None}, "dicom-bq:sourceProject is required"),
    ("missing store", {"dicomStoreId": None}, "dicom-bq:dicomStoreId is required"),
    ("missing location", {"location": None}, "dicom-bq:location is required"),
    ("missing bq dataset", {"bigqueryDatasetId": None}, "dicom-bq:bigqueryDatasetId is required"),
    ("project uppercase", {"sourceProject": "My-Project"}, "dicom-bq:sourceProject"),
    ("project too short", {"sourceProject": "abc"}, "dicom-bq:sourceProject"),
    ("project trailing hyphen", {"sourceProject": "my-project-"}, "dicom-bq:sourceProject"),
    ("project number given as id", {"sourceProject": "123456789012"}, "dicom-bq:sourceProject"),
    (
        "destination with underscore",
        {"destinationProject": "bq_project"},
        "dicom-bq:destinationProject",
    ),
    (
        "project number with letters",
        {"sourceProjectNumber": "12345abc"},
        "dicom-bq:sourceProjectNumber",
    ),
    (
        "destination number not digits",
        {"destinationProjectNumber": "analytics"},
        "dicom-bq:destinationProjectNumber",
    ),
    (
        "project number leading zero",
        {"sourceProjectNumber": "0123456789"},
        "dicom-bq:sourceProjectNumber",
    ),
    ("location uppercase", {"location": "US-CENTRAL1"}, "dicom-bq:location"),
    ("location zone", {"location": "us-central1-a"}, "dicom-bq:location"),
    ("dataset id slash", {"healthcareDatasetId": "a/b"}, "dicom-bq:healthcareDatasetId"),
    ("dataset id too long", {"healthcareDatasetId": "d" * 257}, "dicom-bq:healthcareDatasetId"),
    ("store id space", {"dicomStoreId": "my store"}, "dicom-bq:dicomStoreId"),
    ("store id empty", {"dicomStoreId": ""}, "dicom-bq:dicomStoreId"),
    ("bq dataset hyphen", {"bigqueryDatasetId": "dicom-metadata"}, "dicom-bq:bigqueryDatasetId"),
    ("bq dataset too long", {"bigqueryDatasetId": "d" * 1025}, "dicom-bq:bigqueryDatasetId"),
    ("bq location bad", {"bigqueryLocation": "Mars"}, "dicom-bq:bigqueryLocation"),
    ("time zone unknown", {"timeZone": "Europe/Pariss"}, "dicom-bq:timeZone"),
    ("label key uppercase", {"labels": {"Env": "dev"}}, "dicom-bq:labels"),
    ("label key digit first", {"labels": {"1env": "dev"}}, "dicom-bq:labels"),
    ("label value dot", {"labels": {"env": "dev.1"}}, "dicom-bq:labels"),
    ("label value too long", {"labels": {"env": "v" * 64}}, "dicom-bq:labels"),
    ("too many labels", {"labels": {f"k{i}": "v" for i in range(65)}}, "dicom-bq:labels"),
    ("topic not a path", {"notificationTopic": "dicom-instances"}, "dicom-bq:notificationTopic"),
    (
        "topic goog prefix",
        {"notificationTopic": "projects/dicom-src-test/topics/goog-x"},
        "dicom-bq:notificationTopic",
    ),
    ("six streams", {"streamTables": [f"t{i}" for i in range(6)]}, "at most 5"),
    ("duplicate stream", {"streamTables": ["a", "b", "a"]}, "more than once"),
    ("stream as uri", {"streamTables": ["bq://p.d.t"]}, "dicom-bq:streamTables"),
    ("stream bad char", {"streamTables": ["inst$"]}, "dicom-bq:streamTables"),
    ("kms key not a path", {"healthcareKmsKey": "my-key"}, "dicom-bq:healthcareKmsKey"),
    (
        "kms key wrong location",
        {"healthcareKmsKey": "projects/kms-project/locations/europe-west4/keyRings/r/cryptoKeys/k"},
        "dicom-bq:healthcareKmsKey",
    ),
    (
        "bq kms key wrong location",
        {"bigqueryKmsKey": "projects/kms-project/locations/us-east1/keyRings/r/cryptoKeys/k"},
        "dicom-bq:bigqueryKmsKey",
    ),
    ("bucket with gs scheme", {"filterBucket": "gs://filters"}, "dicom-bq:filterBucket"),
    ("bucket uppercase", {"filterBucket": "Filters"}, "dicom-bq:filterBucket"),
    ("bucket goog prefix", {"filterBucket": "goog-filters"}, "dicom-bq:filterBucket"),
    ("protected not boolean", {"protected": "maybe"}, "dicom-bq:protected"),
    ("wait not a duration", {"iamPropagationWait": "two minutes"}, "dicom-bq:iamPropagationWait"),
    ("wait too long", {"iamPropagationWait": "2h"}, "dicom-bq:iamPropagationWait"),
    ("wait over an hour", {"iamPropagationWait": "61m"}, "dicom-bq:iamPropagationWait"),
    ("scope unknown", {"dataEditorScope": "table"}, "dicom-bq:dataEditorScope"),
    ("universe not a domain", {"universeDomain": "not a domain"}, "dicom-bq:universeDomain"),
    (
        "unknown universe without agent domain",
        {"universeDomain": "example.org"},
        "dicom-bq:agentIamDomain",
    ),
    ("typo in a key", {"sourceProjet": "x"}, "did you mean 'sourceProject'"),
    ("labels not json", {"labels": "{env: dev"}, "dicom-bq:labels"),
    # A run exports the whole store (a long-running operation): cron.snapshot_schedule_problem.
    (
        "snapshot every minute",
        {"snapshotSchedule": "* * * * *"},
        "dicom-bq:snapshotSchedule: '* * * * *' fires 1 minute apart",
    ),
    (
        "snapshot twice an hour in its own time zone",
        {"snapshotSchedule": "15,45 2 * * *", "snapshotTimeZone": "Europe/Paris"},
        "dicom-bq:snapshotSchedule: '15,45 2 * * *' fires 30 minutes apart",
    ),
    (
        "snapshot on 31 February",
        {"snapshotSchedule": "0 2 31 2 *"},
        "dicom-bq:snapshotSchedule: '0 2 31 2 *' does not fire in the year after",
    ),
    # Issue 17: a final newline passes a `^...$` pattern (re.match); every rule matches whole.
    ("project trailing newline", {"sourceProject": "dicom-src-test\n"}, "dicom-bq:sourceProject"),
    ("location trailing newline", {"location": "us-central1\n"}, "dicom-bq:location"),
    ("bucket trailing newline", {"filterBucket": "bucket-x\n"}, "dicom-bq:filterBucket"),
    (
        "topic trailing newline",
        {"notificationTopic": "projects/dicom-src-test/topics/t-1\n"},
        "dicom-bq:notificationTopic",
    ),
    (
        "kms key trailing newline",
        {
            "healthcareKmsKey": "projects/kms-project/locations/us-central1/keyRings/r/"
            "cryptoKeys/k\n"
        },
        "dicom-bq:healthcareKmsKey",
    ),
    ("email trailing newline", {"alertEmails": ["oncall@example.org\n"]}, "dicom-bq:alertEmails"),
    ("email with escape", {"alertEmails": ["on\x1bcall@example.org"]}, "dicom-bq:alertEmails"),
    (
        "universe trailing newline",
        {"universeDomain": "googleapis.com\n"},
        "dicom-bq:universeDomain",
    ),
    ("wait trailing newline", {"iamPropagationWait": "120s\n"}, "dicom-bq:iamPropagationWait"),
    ("wait of 5000 digits", {"iamPropagationWait": "9" * 5000}, "dicom-bq:iamPropagationWait"),
    ("schedule trailing newline", {"snapshotSchedule": "0 2 * * *\n"}, "dicom-bq:snapshotSchedule"),
    ("schedule other digits", {"snapshotSchedule": "\u0663 2 * * *"}, "printable ASCII"),
    # Locations that do not exist: Google's lists, with the nearest one.
    ("location on mars", {"location": "mars"}, "no such location"),
    ("location not healthcare", {"location": "us-central2"}, "did you mean 'us-central1'"),
    ("bq location asia", {"bigqueryLocation": "asia"}, "BigQuery has no other"),
    ("bq location unknown region", {"bigqueryLocation": "europe-west99"}, "did you mean"),
    ("bq location trailing newline", {"bigqueryLocation": "US\n"}, "dicom-bq:bigqueryLocation"),
    ("allowed locations asia", {"allowedBigqueryLocations": ["asia"]}, "BigQuery has no other"),
    (
        "snapshot region multi-region",
        {"snapshotSchedule": "0 2 * * *", "snapshotRegion": "us"},
        "Cloud Scheduler has no multi-region",
    ),
    (
        "snapshot region unknown",
        {"snapshotSchedule": "0 2 * * *", "snapshotRegion": "mars-west1"},
        "dicom-bq:snapshotRegion",
    ),
    # `verify` replaces the verification table: a stream there would lose its rows.
    ("stream is the verification table", {"streamTables": ["dicom_bq_verification"]}, "verify"),
    (
        "stream is the verification table in capitals",
        {"streamTables": ["DICOM_BQ_VERIFICATION"]},
        "the verification table",
    ),
    (
        "listed store streams to the verification table",
        {
            "dicomStoreId": None,
            "dicomStores": [{"id": "a", "streamTables": ["dicom_bq_verification"]}],
        },
        "dicom-bq:dicomStores[0].streamTables",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [pytest.param(o, e, id=name) for name, o, e in BAD_SETTINGS],
)
def test_bad_setting_is_refused_with_its_key(overrides: dict[str, Any], expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(base_settings(**overrides), "dev")
    assert expected in str(caught.value)


def test_there_are_at_least_25_bad_settings() -> None:
    assert len(BAD_SETTINGS) >= 25


def test_missing_key_message_says_how_to_set_it() -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(base_settings(sourceProject=None), "prod")
    assert "pulumi config set dicom-bq:sourceProject VALUE --stack prod" in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "attribute", "expected"),
    [
        ({"location": "eu"}, "location", "eu"),
        ({"location": "me-central2"}, "location", "me-central2"),
        # A sovereign cloud's region, checked by its form only.
        (
            {"location": "u-france-east1", "universeDomain": "s3nsapis.fr"},
            "location",
            "u-france-east1",
        ),
        # BigQuery regions the Healthcare API has not, and its multi-regions in any case.
        ({"bigqueryLocation": "europe-west1"}, "bigquery_location", "europe-west1"),
        ({"bigqueryLocation": "eu"}, "bigquery_location", "eu"),
        ({"bigqueryLocation": "africa-south1"}, "bigquery_location", "africa-south1"),
        (
            {"snapshotSchedule": "0 2 * * *", "snapshotRegion": "europe-west1"},
            "snapshot_region",
            "europe-west1",
        ),
    ],
)
def test_real_locations_are_accepted(
    overrides: dict[str, Any], attribute: str, expected: str
) -> None:
    assert getattr(parse_settings(base_settings(**overrides)), attribute) == expected


def test_a_refused_value_is_quoted_short_and_escaped() -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(base_settings(streamTables=["t\x1b]0;title\x07" + "x" * 5000]))
    message = str(caught.value)
    assert "\\x1b" in message
    assert "\x1b" not in message
    assert len(message) < 600


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(base_settings(location="X", dicomStoreId="a b"), "dev")
    assert len(caught.value.problems) == 2


def test_defaults_and_derived_values() -> None:
    settings = parse_settings(base_settings(), "dev")
    assert settings.time_zone == "UTC"
    assert settings.iam_propagation_wait == 120
    assert settings.bigquery_project == "dicom-src-test"
    assert not settings.cross_project
    assert settings.bigquery_dataset_location == "us-central1"
    assert settings.agent_member == (
        "serviceAccount:service-111122223333@gcp-sa-healthcare.iam.gserviceaccount.com"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"iamPropagationWait": "2m"}, 120),
        ({"iamPropagationWait": 45}, 45),
        ({"iamPropagationWait": "0s"}, 0),
    ],
)
def test_wait_durations(raw: dict[str, Any], expected: int) -> None:
    assert parse_settings(base_settings(**raw)).iam_propagation_wait == expected


def test_values_as_pulumi_config_holds_them() -> None:
    settings = parse_settings(
        base_settings(
            protected="true",
            labels='{"env": "prod"}',
            streamTables='["a", "b"]',
            sourceProjectNumber=123456789012,
            destinationProject="example.com:analytics-prj",
            healthcareDatasetId="données-ü_1.0",
        )
    )
    assert settings.protected is True
    assert settings.labels == {"env": "prod"}
    assert settings.stream_tables == ["a", "b"]
    assert settings.source_project_number == "123456789012"
    assert settings.cross_project


# Google's CMEK pages: Healthcare https://cloud.google.com/healthcare-api/docs/cmek ("a dataset in
# region eu must be protected with a key ring from region europe ... You can't use the global
# region"); BigQuery https://cloud.google.com/bigquery/docs/customer-managed-encryption ("a dataset
# in region US should be protected with a key ring from region us, and a dataset in region EU ...
# from region europe"; `global` works through the API and bq). Cloud KMS has no `eu` location.
KEY = "projects/kms-project/locations/{}/keyRings/r/cryptoKeys/k"
KMS_LOCATIONS: list[tuple[str, str, str, bool]] = [
    # (setting, dataset location, key location, accepted)
    ("healthcare", "us-central1", "us-central1", True),
    ("healthcare", "us-central1", "us-east1", False),
    ("healthcare", "us", "us", True),
    ("healthcare", "eu", "europe", True),
    ("healthcare", "eu", "eu", False),
    ("healthcare", "europe-west4", "europe", False),
    ("healthcare", "us-central1", "global", False),
    ("bigquery", "EU", "europe", True),
    ("bigquery", "EU", "eu", False),
    ("bigquery", "US", "us", True),
    ("bigquery", "US", "us-central1", False),
    ("bigquery", "europe-west4", "europe-west4", True),
    ("bigquery", "europe-west4", "europe", False),
    ("bigquery", "EU", "global", True),
    ("bigquery", "asia-northeast1", "global", True),
]


@pytest.mark.parametrize(("side", "dataset_location", "key_location", "accepted"), KMS_LOCATIONS)
def test_cmek_key_locations_follow_googles_pages(
    side: str, dataset_location: str, key_location: str, accepted: bool
) -> None:
    if side == "healthcare":
        raw = base_settings(location=dataset_location, healthcareKmsKey=KEY.format(key_location))
    else:
        raw = base_settings(
            bigqueryLocation=dataset_location, bigqueryKmsKey=KEY.format(key_location)
        )
    if accepted:
        parse_settings(raw)
    else:
        with pytest.raises(SettingsError, match=f"dicom-bq:{side}KmsKey"):
            parse_settings(raw)


def test_a_short_wait_before_google_checked_creations_is_warned() -> None:
    from dicom_bq.vocabulary.settings import settings_from_config

    config = {f"dicom-bq:{k}": v for k, v in base_settings(iamPropagationWait="30s").items()}
    assert settings_from_config(config)[1] == []  # nothing waits on the grants
    config["dicom-bq:streamTables"] = '["instances"]'
    (warning,) = settings_from_config(config)[1]
    assert "iamPropagationWait is 30s" in warning


@pytest.mark.parametrize("schedule", ["0 2 * * *", "0 * * * *", "30 1 * * 1-5"])
def test_an_hourly_or_rarer_snapshot_schedule_is_accepted(schedule: str) -> None:
    settings = parse_settings(base_settings(snapshotSchedule=schedule), "dev")
    assert settings.snapshot_schedule == schedule


def test_a_refused_schedule_says_what_to_write() -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(base_settings(snapshotSchedule="* * * * *"), "dev")
    assert '"0 2 * * *" for nightly at 02:00' in str(caught.value)


def test_a_stack_with_no_store_hears_of_it_once() -> None:
    # Alone, the store check runs and says it; with other problems, it is added to them.
    with pytest.raises(SettingsError) as alone:
        parse_settings(base_settings(dicomStoreId=None))
    assert len([p for p in alone.value.problems if "dicomStoreId is required" in p]) == 1
    with pytest.raises(SettingsError) as among:
        parse_settings(base_settings(dicomStoreId=None, location="X" * 300))
    assert len([p for p in among.value.problems if "dicomStoreId is required" in p]) == 1
    assert len(among.value.problems) == 2
