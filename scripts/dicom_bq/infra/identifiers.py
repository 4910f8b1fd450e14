"""Google's naming rules, as pure checks.

Each check returns None when the value is valid, or one sentence saying what is wrong and how to
fix it. Settings validation and the CLI's input checks both use these, so a rule lives once.
"""

from __future__ import annotations

import re
import unicodedata

PROJECT_ID_RULE = re.compile(r"^(?:[a-z][a-z0-9.-]{0,61}[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
PROJECT_NUMBER_RULE = re.compile(r"^[1-9][0-9]{5,19}$")
# Regions (us-central1, northamerica-northeast1), multi-regions (us, eu), sovereign u-france-east1.
LOCATION_RULE = re.compile(r"^(?:[a-z]+|(?:u-)?[a-z]+-[a-z]+[0-9]{1,2})$")
BIGQUERY_DATASET_RULE = re.compile(r"^[A-Za-z0-9_]{1,1024}$")
BUCKET_RULE = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,220}[a-z0-9]$")
TOPIC_RULE = re.compile(
    r"^projects/(?P<project>[^/]+)/topics/(?P<topic>[A-Za-z][A-Za-z0-9\-_.~+%]{2,254})$"
)
KMS_KEY_RULE = re.compile(
    r"^projects/(?P<project>[^/]+)/locations/(?P<location>[a-z0-9-]+)"
    r"/keyRings/(?P<ring>[A-Za-z0-9_-]{1,63})/cryptoKeys/(?P<key>[A-Za-z0-9_-]{1,63})$"
)
HOSTNAME_RULE = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
BIGQUERY_MULTI_REGIONS = {"US", "EU"}


def check_project_id(value: str) -> str | None:
    if PROJECT_ID_RULE.match(value):
        return None
    return (
        "a project ID has 6 to 30 characters: lowercase letters, digits and hyphens, starting with "
        "a letter and not ending with a hyphen (a domain-scoped ID may start with 'example.com:'); "
        "use the ID shown by `gcloud projects list`, not the display name or number"
    )


def check_project_number(value: str) -> str | None:
    if PROJECT_NUMBER_RULE.match(value):
        return None
    return (
        "a project number is the all-digits number of the project (6 to 20 digits, no leading "
        "zero); find it with `gcloud projects describe PROJECT_ID --format='value(projectNumber)'`"
    )


def check_location(value: str) -> str | None:
    if LOCATION_RULE.match(value):
        return None
    return (
        "a location is a lowercase region such as 'us-central1' or 'europe-west4', or a "
        "multi-region such as 'us'; list them with `gcloud healthcare locations list`"
    )


def check_bigquery_location(value: str) -> str | None:
    if value.upper() in BIGQUERY_MULTI_REGIONS or LOCATION_RULE.match(value):
        return None
    return "a BigQuery location is a multi-region 'US' or 'EU', or a region such as 'us-central1'"


def _only_categories(value: str, categories: str, extra: str) -> bool:
    return all(unicodedata.category(ch)[0] in categories or ch in extra for ch in value)


def check_healthcare_id(value: str) -> str | None:
    """Healthcare dataset and store IDs: [\\p{L}\\p{N}_\\-\\.]{1,256}."""
    if value in (".", ".."):
        # Valid by the pattern, but a URL path segment "." or ".." is resolved away by HTTP
        # clients (RFC 3986 section 5.2.4): the request would reach another resource.
        return "'.' and '..' are not usable as IDs: they name the folder above in a URL"
    if 1 <= len(value) <= 256 and _only_categories(value, "LN", "_-."):
        return None
    return (
        "a Healthcare dataset or DICOM store ID has 1 to 256 characters: letters, digits, "
        "'_', '-' and '.' only (no '/' or spaces)"
    )


def check_bigquery_dataset_id(value: str) -> str | None:
    if BIGQUERY_DATASET_RULE.match(value):
        return None
    return (
        "a BigQuery dataset ID has 1 to 1024 characters: ASCII letters, digits and underscores "
        "only (use '_' where you would write '-')"
    )


def check_table_id(value: str) -> str | None:
    """BigQuery table names: Unicode L, M, N, Pc (underscore), Pd (dash) and Zs, 1 to 1024 bytes."""
    size = len(value.encode("utf-8"))
    if not 1 <= size <= 1024:
        return f"a BigQuery table name has 1 to 1024 UTF-8 bytes (this one has {size})"
    for ch in value:
        category = unicodedata.category(ch)
        if category[0] in "LMN" or category in ("Pc", "Pd", "Zs"):
            continue
        return (
            f"a BigQuery table name may not contain {ch!r}: use letters, marks, digits, "
            "underscores, dashes and spaces"
        )
    return None


def check_bucket(value: str) -> str | None:
    dotted = "." in value
    limit = 222 if dotted else 63
    if (
        BUCKET_RULE.match(value)
        and len(value) <= limit
        and not value.startswith("goog")
        and "google" not in value
        and ".." not in value
        and not re.fullmatch(r"[0-9.]+", value)
        and all(len(part) <= 63 for part in value.split("."))
    ):
        return None
    return (
        "a bucket name has 3 to 63 characters (222 with dots): lowercase letters, digits, '-', '_' "
        "and '.', starts and ends with a letter or digit, and does not start with 'goog'; give "
        "the bare name, without 'gs://'"
    )


def check_topic(value: str) -> str | None:
    match = TOPIC_RULE.match(value)
    if match and not match.group("topic").startswith("goog"):
        return check_project_id(match.group("project"))
    return (
        "a Pub/Sub topic is 'projects/PROJECT_ID/topics/TOPIC', the topic 3 to 255 characters "
        "starting with a letter and not with 'goog'"
    )


def check_kms_key(value: str) -> str | None:
    match = KMS_KEY_RULE.match(value)
    if match:
        return check_project_id(match.group("project"))
    return (
        "a Cloud KMS key is 'projects/P/locations/L/keyRings/R/cryptoKeys/K' (copy it with "
        "`gcloud kms keys describe K --keyring R --location L --format='value(name)'`)"
    )


def kms_key_location(value: str) -> str:
    match = KMS_KEY_RULE.match(value)
    assert match, value
    return match.group("location")


# Cloud KMS key locations that may protect a dataset in a given location. Both pages say the
# same: a regional dataset takes a key in the same region, a multi-region one the matching KMS
# multi-region, and Cloud KMS has no `eu` location (its Europe multi-region is `europe`).
# - Healthcare, https://cloud.google.com/healthcare-api/docs/cmek: "a Cloud Healthcare API dataset
#   in region us must be protected with a key ring from region us, and a Cloud Healthcare API
#   dataset in region eu must be protected with a key ring from region europe ... You can't use
#   the global region."
# - BigQuery, https://cloud.google.com/bigquery/docs/customer-managed-encryption: "a dataset in
#   region US should be protected with a key ring from region us, and a dataset in region EU
#   should be protected with a key ring from region europe. Regional datasets should use matching
#   regional keys." The same page allows `global` through the API and bq, not the console.
HEALTHCARE_KMS_MULTI_REGIONS = {"us": "us", "eu": "europe"}
BIGQUERY_KMS_MULTI_REGIONS = {"US": "us", "EU": "europe"}


def healthcare_kms_locations(dataset_location: str) -> tuple[str, ...]:
    """The Cloud KMS locations whose keys may protect a Healthcare dataset in this location."""
    return (HEALTHCARE_KMS_MULTI_REGIONS.get(dataset_location, dataset_location),)


def bigquery_kms_locations(dataset_location: str) -> tuple[str, ...]:
    """The Cloud KMS locations whose keys may protect a BigQuery dataset in this location."""
    upper = dataset_location.upper()
    if upper in BIGQUERY_KMS_MULTI_REGIONS:
        return (BIGQUERY_KMS_MULTI_REGIONS[upper], "global")
    return (dataset_location.lower(), "global")


def check_label_key(value: str) -> str | None:
    if (
        1 <= len(value) <= 63
        and unicodedata.category(value[0]) in ("Ll", "Lo")
        and _label_chars(value)
    ):
        return None
    return (
        "a label key has 1 to 63 characters, starts with a lowercase letter, and holds only "
        "lowercase letters, digits, '_' and '-'"
    )


def check_label_value(value: str) -> str | None:
    if len(value) <= 63 and _label_chars(value):
        return None
    return (
        "a label value has at most 63 characters: lowercase letters, digits, '_' and '-' "
        "(no spaces, dots or capitals)"
    )


def _label_chars(value: str) -> bool:
    return all(unicodedata.category(ch) in ("Ll", "Lo", "Nd") or ch in "_-" for ch in value)


def check_hostname(value: str) -> str | None:
    if HOSTNAME_RULE.match(value):
        return None
    return "a universe domain is a DNS name such as 'googleapis.com'"


def check_cron(value: str) -> str | None:
    """Cloud Scheduler's unix-cron, by the one parser dicom-bq has (dicom_bq/cron.py)."""
    from dicom_bq.cron import parse_schedule
    from dicom_bq.errors import DicomBqError

    try:
        parse_schedule(value, what="the schedule")
    except DicomBqError as error:
        return str(error)
    return None


NOTIFICATION_CHANNEL_RULE = re.compile(r"^projects/(?P<project>[^/]+)/notificationChannels/[0-9]+$")
EMAIL_RULE = re.compile(r"^[^@\s]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")


def check_notification_channel(value: str) -> str | None:
    match = NOTIFICATION_CHANNEL_RULE.match(value)
    if match:
        return check_project_id(match.group("project"))
    return (
        "a notification channel is 'projects/PROJECT_ID/notificationChannels/ID' (copy it with "
        "`gcloud beta monitoring channels list --format='value(name)'`)"
    )


def check_email(value: str) -> str | None:
    if EMAIL_RULE.match(value) and len(value) <= 254:
        return None
    return "an alert email is an address such as 'oncall@example.org'"
