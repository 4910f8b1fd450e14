"""Google's naming rules, as pure checks.

Each check returns None when the value is valid, or one sentence saying what is wrong and how to
fix it. Settings validation and the CLI's input checks both use these, so a rule lives once.

Every pattern is matched against the whole value (re.fullmatch): `$` also matches before a final
newline, so `^...$` with re.match would let "dicom-bq-dev\n" through to a URL.
"""

from __future__ import annotations

import difflib
import re
import unicodedata

PROJECT_ID_RULE = re.compile(r"(?:[a-z][a-z0-9.-]{0,61}[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")
PROJECT_NUMBER_RULE = re.compile(r"[1-9][0-9]{5,19}")
# Regions (us-central1, northamerica-northeast1), multi-regions (us, eu), sovereign u-france-east1.
LOCATION_RULE = re.compile(r"[a-z]+|(?:u-)?[a-z]+-[a-z]+[0-9]{1,2}")
# Sovereign clouds (another universe than googleapis.com) name their own regions, u-france-east1
# for S3NS (s3nsapis.fr): not on Google's lists below, they are checked by their form only.
SOVEREIGN_REGION_RULE = re.compile(r"u-[a-z]+-[a-z]+[0-9]{1,2}")
BIGQUERY_DATASET_RULE = re.compile(r"[A-Za-z0-9_]{1,1024}")
BUCKET_RULE = re.compile(r"[a-z0-9][a-z0-9_.-]{1,220}[a-z0-9]")
TOPIC_RULE = re.compile(
    r"projects/(?P<project>[^/]+)/topics/(?P<topic>[A-Za-z][A-Za-z0-9\-_.~+%]{2,254})"
)
KMS_KEY_RULE = re.compile(
    r"projects/(?P<project>[^/]+)/locations/(?P<location>[a-z0-9-]+)"
    r"/keyRings/(?P<ring>[A-Za-z0-9_-]{1,63})/cryptoKeys/(?P<key>[A-Za-z0-9_-]{1,63})"
)
HOSTNAME_RULE = re.compile(r"(?=.{1,253}\Z)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
BIGQUERY_MULTI_REGIONS = {"US", "EU"}

# The Cloud Healthcare API's locations, from "Regions"
# (https://cloud.google.com/healthcare-api/docs/regions, also linked as
# https://cloud.google.com/healthcare-api/docs/concepts/regions): "The Cloud Healthcare API is
# available in the following regions", and the multi-regions us and eu.
HEALTHCARE_MULTI_REGIONS = frozenset({"us", "eu"})
HEALTHCARE_REGIONS = frozenset(
    {
        # Americas
        "northamerica-northeast1",
        "northamerica-northeast2",
        "us-central1",
        "us-east1",
        "us-east4",
        "us-west1",
        "us-west2",
        "us-west3",
        "southamerica-east1",
        # Asia Pacific
        "asia-east1",
        "asia-east2",
        "asia-northeast1",
        "asia-northeast2",
        "asia-northeast3",
        "asia-south1",
        "asia-southeast1",
        "asia-southeast2",
        "australia-southeast1",
        "australia-southeast2",
        # Europe
        "europe-north1",
        "europe-west2",
        "europe-west3",
        "europe-west4",
        "europe-west6",
        # Middle East
        "me-west1",
        "me-central1",
        "me-central2",
    }
)
HEALTHCARE_LOCATIONS = HEALTHCARE_REGIONS | HEALTHCARE_MULTI_REGIONS
# BigQuery's dataset locations, from "BigQuery locations"
# (https://cloud.google.com/bigquery/docs/locations, "Supported locations"): its regions, and
# its only two multi-regions, US and EU ("asia" is none). BigQuery Omni's AWS and Azure
# locations are left out: a Healthcare export cannot write there.
BIGQUERY_REGIONS = frozenset(
    {
        # Americas
        "us-east5",
        "us-south1",
        "us-central1",
        "us-west4",
        "us-west2",
        "northamerica-south1",
        "northamerica-northeast1",
        "us-east4",
        "us-west1",
        "us-west3",
        "southamerica-west1",
        "southamerica-east1",
        "us-east1",
        "northamerica-northeast2",
        # Asia Pacific
        "asia-south2",
        "asia-east2",
        "asia-southeast2",
        "australia-southeast2",
        "asia-south1",
        "asia-northeast2",
        "asia-northeast3",
        "asia-southeast1",
        "australia-southeast1",
        "asia-east1",
        "asia-northeast1",
        # Europe
        "europe-west1",
        "europe-west10",
        "europe-north1",
        "europe-west3",
        "europe-west2",
        "europe-southwest1",
        "europe-west8",
        "europe-west4",
        "europe-west9",
        "europe-north2",
        "europe-west12",
        "europe-central2",
        "europe-west6",
        # Middle East
        "me-central2",
        "me-central1",
        "me-west1",
        # Africa
        "africa-south1",
    }
)
# Every Google Cloud region named above: where a Cloud Scheduler job may be asked for. Cloud
# Scheduler runs in regions only, never a multi-region
# (https://cloud.google.com/scheduler/docs/locations).
KNOWN_REGIONS = HEALTHCARE_REGIONS | BIGQUERY_REGIONS


def _nearest(value: str, choices: frozenset[str] | set[str]) -> str:
    close = difflib.get_close_matches(value.lower()[:64], sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_project_id(value: str) -> str | None:
    if PROJECT_ID_RULE.fullmatch(value):
        return None
    return (
        "a project ID has 6 to 30 characters: lowercase letters, digits and hyphens, starting with "
        "a letter and not ending with a hyphen (a domain-scoped ID may start with 'example.com:'); "
        "use the ID shown by `gcloud projects list`, not the display name or number"
    )


def check_project_number(value: str) -> str | None:
    if PROJECT_NUMBER_RULE.fullmatch(value):
        return None
    return (
        "a project number is the all-digits number of the project (6 to 20 digits, no leading "
        "zero); find it with `gcloud projects describe PROJECT_ID --format='value(projectNumber)'`"
    )


def check_location(value: str) -> str | None:
    """A Cloud Healthcare API location: one of Google's (HEALTHCARE_LOCATIONS), or a sovereign
    cloud's u-REGION."""
    if value in HEALTHCARE_LOCATIONS or SOVEREIGN_REGION_RULE.fullmatch(value):
        return None
    if LOCATION_RULE.fullmatch(value):
        return (
            "the Cloud Healthcare API has no such location"
            f"{_nearest(value, HEALTHCARE_LOCATIONS)}: it runs in the multi-regions 'us' and "
            "'eu' and in the regions listed at https://cloud.google.com/healthcare-api/docs/"
            "regions; list them with `gcloud healthcare locations list`"
        )
    return (
        "a location is a lowercase region such as 'us-central1' or 'europe-west4', or a "
        "multi-region such as 'us'; list them with `gcloud healthcare locations list`"
        f"{_nearest(value, HEALTHCARE_LOCATIONS)}"
    )


def check_bigquery_location(value: str) -> str | None:
    """A BigQuery dataset location: the multi-region US or EU (any case), one of BigQuery's
    regions, or a sovereign cloud's u-REGION."""
    if (
        (value.isascii() and value.upper() in BIGQUERY_MULTI_REGIONS)
        or value in BIGQUERY_REGIONS
        or SOVEREIGN_REGION_RULE.fullmatch(value)
    ):
        return None
    return (
        "a BigQuery location is the multi-region 'US' or 'EU' (BigQuery has no other) or one of "
        f"its regions, such as 'us-central1'{_nearest(value, BIGQUERY_REGIONS | {'US', 'EU'})}: "
        "see https://cloud.google.com/bigquery/docs/locations"
    )


def check_scheduler_region(value: str) -> str | None:
    """Where a Cloud Scheduler job runs: a region, never a multi-region
    (https://cloud.google.com/scheduler/docs/locations)."""
    if value in KNOWN_REGIONS or SOVEREIGN_REGION_RULE.fullmatch(value):
        return None
    if value.lower() in HEALTHCARE_MULTI_REGIONS or value.upper() in BIGQUERY_MULTI_REGIONS:
        return (
            f"Cloud Scheduler has no multi-region such as '{value}': name a region inside it, "
            "such as 'us-central1' or 'europe-west1'"
        )
    return (
        "a Cloud Scheduler location is a Google Cloud region such as 'us-central1'"
        f"{_nearest(value, KNOWN_REGIONS)}: see https://cloud.google.com/scheduler/docs/locations"
    )


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
    if BIGQUERY_DATASET_RULE.fullmatch(value):
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
        BUCKET_RULE.fullmatch(value)
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
    match = TOPIC_RULE.fullmatch(value)
    if match and not match.group("topic").startswith("goog"):
        return check_project_id(match.group("project"))
    return (
        "a Pub/Sub topic is 'projects/PROJECT_ID/topics/TOPIC', the topic 3 to 255 characters "
        "starting with a letter and not with 'goog'"
    )


def check_kms_key(value: str) -> str | None:
    match = KMS_KEY_RULE.fullmatch(value)
    if match:
        return check_project_id(match.group("project"))
    return (
        "a Cloud KMS key is 'projects/P/locations/L/keyRings/R/cryptoKeys/K' (copy it with "
        "`gcloud kms keys describe K --keyring R --location L --format='value(name)'`)"
    )


def kms_key_location(value: str) -> str:
    match = KMS_KEY_RULE.fullmatch(value)
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
    if HOSTNAME_RULE.fullmatch(value):
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


NOTIFICATION_CHANNEL_RULE = re.compile(r"projects/(?P<project>[^/]+)/notificationChannels/[0-9]+")
# The local part: RFC 5322's dot-atom characters (section 3.2.3), printable ASCII only.
EMAIL_RULE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+"
)


def check_notification_channel(value: str) -> str | None:
    match = NOTIFICATION_CHANNEL_RULE.fullmatch(value)
    if match:
        return check_project_id(match.group("project"))
    return (
        "a notification channel is 'projects/PROJECT_ID/notificationChannels/ID' (copy it with "
        "`gcloud beta monitoring channels list --format='value(name)'`)"
    )


def check_email(value: str) -> str | None:
    if EMAIL_RULE.fullmatch(value) and len(value) <= 254:
        return None
    return "an alert email is an address such as 'oncall@example.org'"


def check_emulator_host(value: str) -> str | None:
    """An emulator variable (STORAGE_EMULATOR_HOST and the like): http(s)://HOST[:PORT][/] or
    HOST:PORT (Pub/Sub's form, https://cloud.google.com/pubsub/docs/emulator#env), nothing
    else: a malformed one would fail deep inside an HTTP library (http.client.InvalidURL)."""
    from urllib.parse import urlsplit

    form = "give http://HOST:PORT (or HOST:PORT), such as http://127.0.0.1:8123"
    if not value.isprintable() or any(ch.isspace() for ch in value) or len(value) > 2048:
        return f"it holds spaces or control characters: {form}"
    url = value if "://" in value else f"http://{value}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        return f"{error}: {form}"
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https"):
        return f"the scheme is {parts.scheme!r}, not http or https: {form}"
    if not host or parts.username is not None or parts.password is not None:
        return f"it names no host: {form}"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"a path, query or fragment is not part of it: {form}"
    if port == 0:
        return f"port 0 is not a port to connect to: {form}"
    ipv6 = parts.netloc.startswith("[")
    if not ipv6 and not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})", host):
        return f"{host!r} is not a host name or address: {form}"
    return None


# Pulumi stack references: [ORG/[PROJECT/]]NAME, each part letters, digits, '-', '_', '.'
# (pulumi/pulumi sdk/go/common/tokens, ValidateStackName), never "." or ".." alone.
_STACK_PART = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def check_stack_name(value: str) -> str | None:
    parts = value.split("/")
    if len(parts) <= 3 and all(
        _STACK_PART.fullmatch(part) and part not in (".", "..") and not part.startswith("-")
        for part in parts
    ):
        return None
    return (
        "a stack name is letters, digits, '-', '_' and '.' (optionally after ORG/PROJECT/), "
        "not starting with '-'"
    )
