"""Stack settings: every `dicom-bq:*` config key, typed and validated once.

The program reads them from `pulumi.Config`; the CLI reads the same keys from `Pulumi.<stack>.yaml`.
Both go through `parse_settings`, so a bad value gets the same message wherever it is found.
"""

from __future__ import annotations

import datetime
import difflib
import json
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from dicom_bq import cron
from dicom_bq.errors import DicomBqError
from dicom_bq.files import loads_json
from dicom_bq.texts import EXCERPT, excerpt, printable
from dicom_bq.vocabulary import identifiers, naming

CONFIG_NAMESPACE = "dicom-bq"
MAX_STREAMS = 5
MAX_LABELS = 64
MAX_LABEL_BYTES = 128
MAX_WAIT_SECONDS = 3600
# Google: IAM changes "typically" propagate within 2 minutes, sometimes 7 or more
# (https://cloud.google.com/iam/docs/access-change-propagation).
DEFAULT_WAIT_SECONDS = 120
# Matched whole (re.fullmatch): "120s\n" is not a duration. Five digits are more than the
# longest wait allowed, and keep int() away from a number thousands of digits long.
_DURATION = re.compile(r"(?P<amount>[0-9]{1,5})(?P<unit>s|m)?")


class SettingsError(ValueError):
    """Stack settings that cannot be used; the message lists every problem, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _each(values: list[str], check: Callable[[str], str | None]) -> list[str]:
    for value in values:
        problem = check(value)
        if problem:
            raise ValueError(f"{excerpt(value)}: {problem}")
    duplicates = sorted({value for value in values if values.count(value) > 1})
    if duplicates:
        raise ValueError(f"{', '.join(map(excerpt, duplicates))} is listed more than once")
    return values


def _rule(check: Callable[[str], str | None]) -> Callable[[str | None], str | None]:
    def validate(value: str | None) -> str | None:
        if value is None:
            return None
        problem = check(value)
        if problem:
            raise ValueError(problem)
        return value

    return validate


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def parse_duration(value: str | int) -> int:
    """'90s', '2m' or a bare number of seconds, as seconds."""
    match = _DURATION.fullmatch(str(value))
    if not match:
        raise ValueError("a duration is a number of seconds or minutes, such as '90s' or '2m'")
    seconds = int(match.group("amount")) * (60 if match.group("unit") == "m" else 1)
    if seconds > MAX_WAIT_SECONDS:
        raise ValueError(f"the IAM propagation wait is at most {MAX_WAIT_SECONDS // 60}m")
    return seconds


def check_labels(value: dict[str, str]) -> dict[str, str]:
    """Labels as the DICOM store (the strictest of the labelled resources) accepts them:
    at most 64, keys and values of 1 to 63 characters and at most 128 UTF-8 bytes
    (https://cloud.google.com/healthcare-api/docs/reference/rest/v1/projects.locations.datasets.dicomStores,
    DicomStore.labels)."""
    if len(value) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels are allowed, not {len(value)}")
    for key, text in value.items():
        problem = identifiers.check_label_key(key) or _label_bytes(key)
        if problem:
            raise ValueError(f"label key {excerpt(key)}: {problem}")
        problem = identifiers.check_label_value(text) or _label_bytes(text)
        if problem:
            raise ValueError(f"label {excerpt(key)} value {excerpt(text)}: {problem}")
    return value


def _label_bytes(text: str) -> str | None:
    size = len(text.encode("utf-8"))
    if size > MAX_LABEL_BYTES:
        return f"it is {size} UTF-8 bytes, Google allows {MAX_LABEL_BYTES}: shorten it"
    return None


def check_stream_tables(value: list[str]) -> list[str]:
    """Stream tables: at most MAX_STREAMS, each a bare table name of the stack's dataset, none
    the table `verify` replaces (naming.VERIFICATION_TABLE): its WRITE_TRUNCATE would replace
    the streamed rows. Compared case-insensitively, as a case-insensitive dataset does."""
    if len(value) > MAX_STREAMS:
        raise ValueError(
            f"a DICOM store streams to at most {MAX_STREAMS} BigQuery tables; "
            f"{len(value)} are listed: remove {len(value) - MAX_STREAMS}"
        )
    for table in value:
        if table.startswith("bq://") or "." in table:
            raise ValueError(
                f"{excerpt(table)}: give the table name only; streams go to the stack's "
                "BigQuery dataset (bigqueryDatasetId)"
            )
        problem = identifiers.check_table_id(table)
        if problem:
            raise ValueError(f"{excerpt(table)}: {problem}")
        if table.casefold() == naming.VERIFICATION_TABLE.casefold():
            raise ValueError(
                f"{table!r} is the verification table, which `dicom-bq verify` replaces "
                "(WRITE_TRUNCATE) on every run: a stream there would lose its rows; name the "
                "stream table something else"
            )
    duplicates = sorted({table for table in value if value.count(table) > 1})
    if duplicates:
        raise ValueError(
            f"each stream needs its own table; {', '.join(map(excerpt, duplicates))} is listed "
            "more than once"
        )
    return value


_ENTRY_CONFIG = ConfigDict(
    alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
)


class StoreNotification(BaseModel):
    """A store's Pub/Sub notifications: Healthcare v1 NotificationConfig (pubsubTopic,
    sendForBulkImport; https://cloud.google.com/healthcare-api/docs/reference/rest/v1/NotificationConfig)."""

    model_config = _ENTRY_CONFIG

    pubsub_topic: str
    # None: not sent, and Google's default applies (no notifications on bulk import).
    send_for_bulk_import: bool | None = None

    _check_topic = field_validator("pubsub_topic")(_rule(identifiers.check_topic))


class DicomStoreEntry(BaseModel):
    """One entry of dicom-bq:dicomStores."""

    model_config = _ENTRY_CONFIG

    id: str
    labels: dict[str, str] = Field(default_factory=dict)
    notification: StoreNotification | None = None
    stream_tables: list[str] = Field(default_factory=list)

    _check_id = field_validator("id")(_rule(identifiers.check_healthcare_id))
    _check_labels = field_validator("labels")(check_labels)
    _check_streams = field_validator("stream_tables")(check_stream_tables)


@dataclass(frozen=True)
class StoreSpec:
    """A DICOM store the stack holds, whichever form declared it."""

    store_id: str
    labels: dict[str, str]
    notification_topic: str | None
    send_for_bulk_import: bool | None
    stream_tables: list[str]


def missing_store_problem(stack: str) -> str:
    ns = CONFIG_NAMESPACE
    return (
        f"{ns}:dicomStoreId is required (or {ns}:dicomStores, a list, for several stores): set "
        f"it with `pulumi config set {ns}:dicomStoreId VALUE --stack {stack}`"
    )


class StackSettings(BaseModel):
    """One environment's export path. Field names are the config keys in camelCase."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    # Descriptions are the `description:` of each key in Pulumi.yaml, which is generated from
    # this model (python -m infra.project_config); a key without a default is required there too.
    source_project: str = Field(
        description="Project ID that holds the Healthcare dataset and the DICOM store (the "
        "agent's project)."
    )
    location: str = Field(description="Location of the Healthcare dataset, such as us-central1.")
    healthcare_dataset_id: str = Field(
        description="Healthcare dataset ID (letters, digits, _ - .; up to 256)."
    )
    dicom_store_id: str | None = Field(
        None,
        description="DICOM store ID (letters, digits, _ - .; up to 256). Required unless "
        "dicomStores lists the stores.",
    )
    dicom_stores: list[DicomStoreEntry] | None = Field(
        None,
        description="DICOM stores of the Healthcare dataset, instead of dicomStoreId: each "
        "{id, labels, notification: {pubsubTopic, sendForBulkImport}, streamTables}.",
    )
    bigquery_dataset_id: str = Field(
        description="BigQuery dataset ID receiving exports (letters, digits, underscores)."
    )
    source_project_number: str | None = Field(
        None,
        description="Number of the source project. Makes the agent's address known offline; "
        "looked up at deploy time when empty.",
    )
    destination_project: str | None = Field(
        None,
        description="Project ID of the BigQuery dataset; empty: the source project.",
    )
    destination_project_number: str | None = Field(
        None,
        description="Number of the BigQuery project; shows BigQuery's CMEK account offline "
        "(at deploy time it comes from BigQuery).",
    )
    time_zone: str = Field("UTC", description="IANA time zone of the Healthcare dataset.")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels (key: value) on every store and both datasets.",
    )
    notification_topic: str | None = Field(
        None,
        description="Pub/Sub topic projects/P/topics/T notified of new instances; the agent is "
        "granted publisher on it. Empty: no notifications.",
    )
    stream_tables: list[str] = Field(
        default_factory=list,
        description="Up to 5 table names in the stack's BigQuery dataset that the store streams "
        "metadata to.",
    )
    bigquery_location: str | None = Field(
        None,
        description="BigQuery dataset location (US, EU or a region); empty: the Healthcare "
        "location.",
    )
    healthcare_kms_key: str | None = Field(
        None,
        description="Cloud KMS key for the Healthcare dataset (CMEK), in the matching KMS "
        "location (eu -> europe). Empty: Google-managed keys.",
    )
    bigquery_kms_key: str | None = Field(
        None,
        description="Cloud KMS key for the BigQuery dataset's tables (CMEK), in the matching KMS "
        "location (EU -> europe, US -> us). Empty: Google-managed keys.",
    )
    filter_bucket: str | None = Field(
        None,
        description="Bucket holding export filter files; the agent is granted objectViewer on "
        "it. Empty: no filtered exports.",
    )
    protected: bool = Field(
        False,
        description="Protect the PHI resources (Healthcare dataset, DICOM store, BigQuery "
        "dataset) from deletion.",
    )
    retain_on_delete: bool = Field(
        False, description="Keep the PHI resources in Google Cloud when they leave the stack."
    )
    iam_propagation_wait: int = Field(
        DEFAULT_WAIT_SECONDS,
        description="Wait after the grants before creating what needs them, such as 120s or 3m.",
    )
    data_editor_scope: Literal["dataset", "project"] = Field(
        "dataset",
        description="Where roles/bigquery.dataEditor is granted: dataset or project.",
    )
    allowed_bigquery_locations: list[str] | None = Field(
        None,
        description="BigQuery locations this stack may use; the policy checks enforce it. "
        "Empty: any location.",
    )
    require_cmek: bool = Field(
        False,
        description="Require customer-managed keys on both datasets; the policy checks enforce it.",
    )
    universe_domain: str = Field(
        naming.DEFAULT_UNIVERSE,
        description="API universe, googleapis.com unless in a sovereign cloud.",
    )
    agent_iam_domain: str | None = Field(
        None,
        description="Service-agent domain for a universe dicom-bq does not know; empty: the "
        "known one.",
    )
    alert_emails: list[str] = Field(
        default_factory=list,
        description="Email addresses alerted on the Healthcare API's export and streaming "
        "errors for the stack's stores (one email notification channel each).",
    )
    alert_channels: list[str] = Field(
        default_factory=list,
        description="Existing Cloud Monitoring notification channels "
        "(projects/P/notificationChannels/ID) alerted on the same errors.",
    )
    snapshot_schedule: str | None = Field(
        None,
        description="Unix-cron schedule of a nightly WRITE_TRUNCATE export of each store to "
        "the tool's snapshot table, such as '0 2 * * *'. Empty: no snapshot.",
    )
    snapshot_time_zone: str | None = Field(
        None, description="IANA time zone of snapshotSchedule; empty: timeZone."
    )
    snapshot_table: str | None = Field(
        None,
        description="Table the snapshot replaces every night, in the stack's BigQuery dataset; "
        "must start with dicom_snapshot (the tool's own). Empty: dicom_snapshot.",
    )
    snapshot_region: str | None = Field(
        None,
        description="Cloud Scheduler region of the snapshot job; empty: the Healthcare "
        "location (us -> us-central1, eu -> europe-west1).",
    )

    _check_project = field_validator("source_project", "destination_project")(
        _rule(identifiers.check_project_id)
    )
    _check_number = field_validator("source_project_number", "destination_project_number")(
        _rule(identifiers.check_project_number)
    )
    _check_location = field_validator("location")(_rule(identifiers.check_location))
    _check_bq_location = field_validator("bigquery_location")(
        _rule(identifiers.check_bigquery_location)
    )
    _check_hc_ids = field_validator("healthcare_dataset_id", "dicom_store_id")(
        _rule(identifiers.check_healthcare_id)
    )
    _check_bq_dataset = field_validator("bigquery_dataset_id")(
        _rule(identifiers.check_bigquery_dataset_id)
    )
    _check_topic = field_validator("notification_topic")(_rule(identifiers.check_topic))
    _check_keys = field_validator("healthcare_kms_key", "bigquery_kms_key")(
        _rule(identifiers.check_kms_key)
    )
    _check_bucket = field_validator("filter_bucket")(_rule(identifiers.check_bucket))
    _check_domains = field_validator("universe_domain", "agent_iam_domain")(
        _rule(identifiers.check_hostname)
    )
    _check_cron = field_validator("snapshot_schedule")(_rule(identifiers.check_cron))
    _check_region = field_validator("snapshot_region")(_rule(identifiers.check_scheduler_region))

    @field_validator("alert_emails")
    @classmethod
    def _check_emails(cls, value: list[str]) -> list[str]:
        return _each(value, identifiers.check_email)

    @field_validator("alert_channels")
    @classmethod
    def _check_channels(cls, value: list[str]) -> list[str]:
        return _each(value, identifiers.check_notification_channel)

    @field_validator("snapshot_table")
    @classmethod
    def _check_snapshot_table(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = identifiers.check_table_id(value)
        if problem:
            raise ValueError(problem)
        if value != naming.DEFAULT_SNAPSHOT_TABLE and not value.startswith(
            f"{naming.DEFAULT_SNAPSHOT_TABLE}_"
        ):
            # WRITE_TRUNCATE replaces the table every night: only a name that is visibly the
            # tool's may be given, never one of the user's tables.
            raise ValueError(
                "the snapshot replaces this table every night (WRITE_TRUNCATE), so it must be "
                f"the tool's own: name it '{naming.DEFAULT_SNAPSHOT_TABLE}' or "
                f"'{naming.DEFAULT_SNAPSHOT_TABLE}_SOMETHING'"
            )
        return value

    @field_validator("source_project_number", "destination_project_number", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        # YAML reads an unquoted project number as an int.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("time_zone", "snapshot_time_zone")
    @classmethod
    def _check_time_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value not in _time_zones():
            close = difflib.get_close_matches(value[:EXCERPT], sorted(_time_zones()), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"a time zone is an IANA name such as 'UTC' or 'Europe/Paris'{hint}")
        return value

    _check_labels = field_validator("labels")(check_labels)
    _check_streams = field_validator("stream_tables")(check_stream_tables)

    @field_validator("allowed_bigquery_locations", mode="before")
    @classmethod
    def _empty_means_any(cls, value: Any) -> Any:
        return None if value == [] else value

    @field_validator("allowed_bigquery_locations")
    @classmethod
    def _check_allowed_locations(cls, value: list[str] | None) -> list[str] | None:
        for location in value or []:
            problem = identifiers.check_bigquery_location(location)
            if problem:
                raise ValueError(f"{excerpt(location)}: {problem}")
        return value

    @field_validator("iam_propagation_wait", mode="before")
    @classmethod
    def _wait_seconds(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError("a duration is a number of seconds or minutes, such as '90s' or '2m'")
        return parse_duration(value)

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> StackSettings:
        store_problems = self._store_problems((info.context or {}).get("stack", "STACK"))
        problems: list[tuple[str, str]] = []
        if self.healthcare_kms_key:
            key_location = identifiers.kms_key_location(self.healthcare_kms_key)
            allowed = identifiers.healthcare_kms_locations(self.location)
            if key_location not in allowed:
                problems.append(
                    (
                        "healthcareKmsKey",
                        f"the key is in Cloud KMS location '{key_location}' but a Healthcare "
                        f"dataset in '{self.location}' needs a key ring in '{allowed[0]}'",
                    )
                )
        if self.bigquery_kms_key:
            key_location = identifiers.kms_key_location(self.bigquery_kms_key)
            allowed = identifiers.bigquery_kms_locations(self.bigquery_dataset_location)
            if key_location not in allowed:
                problems.append(
                    (
                        "bigqueryKmsKey",
                        f"the key is in Cloud KMS location '{key_location}' but a BigQuery "
                        f"dataset in '{self.bigquery_dataset_location}' needs a key ring in "
                        f"{' or '.join(repr(a) for a in allowed)}",
                    )
                )
        if not naming.known_universe(self.universe_domain) and not self.agent_iam_domain:
            problems.append(
                (
                    "agentIamDomain",
                    f"universe '{self.universe_domain}' has no known service-agent domain: set "
                    "dicom-bq:agentIamDomain to the part after 'gcp-sa-healthcare.' in the "
                    "agent's address",
                )
            )
        problems += self._snapshot_problems()
        if problems or store_problems:
            raise SettingsError(
                store_problems + [f"{CONFIG_NAMESPACE}:{key}: {text}" for key, text in problems]
            )
        return self

    def _store_problems(self, stack: str) -> list[str]:
        """One form or the other, and each listed store valid as a whole (its fields are
        checked one by one already). Whole sentences, each naming its key."""
        ns = CONFIG_NAMESPACE
        if self.dicom_stores is None:
            return [] if self.dicom_store_id is not None else [missing_store_problem(stack)]
        problems = []
        if self.dicom_store_id is not None:
            problems.append(
                f"{ns}:dicomStoreId and {ns}:dicomStores are both set: keep one. dicomStoreId "
                "names a single store, dicomStores lists them all: put the dicomStoreId store "
                f"first in dicomStores, then `pulumi config rm {ns}:dicomStoreId --stack {stack}`"
            )
        for key, value in (
            ("notificationTopic", self.notification_topic),
            ("streamTables", self.stream_tables),
        ):
            if value:
                problems.append(
                    f"{ns}:{key} is a setting of each store when {ns}:dicomStores lists them: "
                    "move it into the entries that need it (notification: {pubsubTopic: ...} "
                    f"or streamTables: [...]), then `pulumi config rm {ns}:{key} --stack {stack}`"
                )
        if not self.dicom_stores:
            problems.append(
                f"{ns}:dicomStores lists no store: give at least one entry, such as "
                "[{id: dicom}], or set dicomStoreId instead"
            )
        first_index: dict[str, int] = {}
        for index, entry in enumerate(self.dicom_stores):
            where = f"{ns}:dicomStores[{index}]"
            if entry.id in first_index:
                problems.append(
                    f"{where}.id '{entry.id}' is also the ID of dicomStores"
                    f"[{first_index[entry.id]}]: each store of the Healthcare dataset needs its "
                    "own ID"
                )
            first_index.setdefault(entry.id, index)
            merged = {**self.labels, **entry.labels}
            if len(merged) > MAX_LABELS:
                problems.append(
                    f"{where}.labels: with the stack's labels the store would carry "
                    f"{len(merged)}; Google allows at most {MAX_LABELS} per store: remove "
                    f"{len(merged) - MAX_LABELS}"
                )
        return problems + self._shared_name_problems()

    def _shared_name_problems(self) -> list[str]:
        """Listed stores whose snapshot table or job would be one (names made from the store ID).
        Only with a schedule: without one, no name is made from a store ID but the store's own."""
        if self.dicom_stores is None or self.snapshot_schedule is None:
            return []
        ids = [entry.id for entry in self.dicom_stores]
        account = naming.snapshot_account_id(
            naming.healthcare_dataset_name(
                self.source_project, self.location, self.healthcare_dataset_id
            )
        )
        table = self.snapshot_table or naming.DEFAULT_SNAPSHOT_TABLE
        return [
            f"{CONFIG_NAMESPACE}:dicomStores[{pair.second}].id '{ids[pair.second]}' and "
            f"dicomStores[{pair.first}].id '{ids[pair.first]}' would share "
            f"{' and '.join(pair.shared)}: one store's nightly export would replace the other's "
            "snapshot; rename one"
            for pair in naming.shared_snapshot_names(ids, table=table, account_id=account)
            if ids[pair.first] != ids[pair.second]  # refused above as a repeated ID
        ]

    def _snapshot_problems(self) -> list[tuple[str, str]]:
        problems = []
        if self.snapshot_schedule is None:
            for key, value in (
                ("snapshotTable", self.snapshot_table),
                ("snapshotTimeZone", self.snapshot_time_zone),
                ("snapshotRegion", self.snapshot_region),
            ):
                if value is not None:
                    problems.append(
                        (key, "is set but snapshotSchedule is not: set the schedule, or remove it")
                    )
        else:
            schedule = cron.parse_schedule(
                self.snapshot_schedule, self.snapshot_time_zone or self.time_zone
            )
            problem = cron.snapshot_schedule_problem(
                schedule, now=datetime.datetime.now(datetime.UTC)
            )
            if problem:
                problems.append(("snapshotSchedule", problem))
        for table in self.snapshot_tables.values():
            if table in self.all_stream_tables:
                problems.append(
                    (
                        "snapshotTable",
                        f"'{table}' is a stream table: the nightly WRITE_TRUNCATE would replace "
                        "the streamed rows; the snapshot needs a table of its own",
                    )
                )
        return problems

    @property
    def bigquery_project(self) -> str:
        return self.destination_project or self.source_project

    @property
    def cross_project(self) -> bool:
        return self.bigquery_project != self.source_project

    @property
    def bigquery_dataset_location(self) -> str:
        return self.bigquery_location or self.location

    @property
    def listed_stores(self) -> bool:
        """True when dicomStores declares the stores (the single dicomStoreId form otherwise)."""
        return self.dicom_stores is not None

    @property
    def stores(self) -> list[StoreSpec]:
        """Every DICOM store, in the order given; the single form is a list of one."""
        if self.dicom_stores is None:
            if self.dicom_store_id is None:
                return []  # refused by _store_problems; seen only while validating
            return [
                StoreSpec(
                    store_id=self.dicom_store_id,
                    labels=dict(self.labels),
                    notification_topic=self.notification_topic,
                    send_for_bulk_import=None,
                    stream_tables=list(self.stream_tables),
                )
            ]
        return [
            StoreSpec(
                store_id=entry.id,
                # The stack's labels are on every store; a store's own win on a shared key.
                labels={**self.labels, **entry.labels},
                notification_topic=entry.notification.pubsub_topic if entry.notification else None,
                send_for_bulk_import=(
                    entry.notification.send_for_bulk_import if entry.notification else None
                ),
                stream_tables=list(entry.stream_tables),
            )
            for entry in self.dicom_stores
        ]

    @property
    def all_stream_tables(self) -> list[str]:
        return [table for store in self.stores for table in store.stream_tables]

    @property
    def notification_topics(self) -> list[str]:
        """Each topic a store notifies, once, in the order first named."""
        topics = (store.notification_topic for store in self.stores)
        return list(dict.fromkeys(topic for topic in topics if topic))

    def store_name_of(self, store_id: str) -> str:
        return naming.dicom_store_name(
            self.source_project, self.location, self.healthcare_dataset_id, store_id
        )

    @property
    def store_name(self) -> str:
        """The first store's full name (the only one in the dicomStoreId form)."""
        return self.store_name_of(self.stores[0].store_id)

    @property
    def bigquery_project_number(self) -> str | None:
        if self.cross_project:
            return self.destination_project_number
        return self.destination_project_number or self.source_project_number

    @property
    def alerting(self) -> bool:
        return bool(self.alert_emails or self.alert_channels)

    @property
    def snapshot_tables(self) -> dict[str, str]:
        """Store ID -> the table its nightly snapshot replaces; empty without a schedule."""
        if self.snapshot_schedule is None:
            return {}
        return naming.snapshot_tables(
            [store.store_id for store in self.stores],
            self.snapshot_table or naming.DEFAULT_SNAPSHOT_TABLE,
        )

    @property
    def agent_member(self) -> str | None:
        if self.source_project_number is None:
            return None
        return naming.agent_member(
            self.source_project_number, self.universe_domain, self.agent_iam_domain
        )


def config_keys() -> list[str]:
    return sorted(field.alias or name for name, field in StackSettings.model_fields.items())


def required_keys() -> list[str]:
    """Keys a stack cannot do without: the only ones Pulumi.yaml declares with no default."""
    return sorted(
        field.alias or name
        for name, field in StackSettings.model_fields.items()
        if field.is_required()
    )


# Read by the program but not declared in Pulumi.yaml, with why (Pulumi.yaml's header repeats
# it). Undeclared keys pass the engine untouched (pulumi/pulumi
# sdk/go/common/workspace/config.go, mergeConfig loops over the project's keys only), and the
# program validates them itself.
UNDECLARED_KEYS = {
    # Pulumi's project schema gained the `object` type only in 2025 (pulumi/pulumi#20129,
    # #20132); older CLIs refuse it.
    "labels": "Pulumi's project schema has no map type before 2025 (pulumi/pulumi#20129)",
    # A declared type is string, integer, boolean or array, and an array's items one of those
    # (pulumi/pulumi sdk/go/common/workspace/project.json, $defs simpleConfigType and
    # configItemsType): a list of objects cannot be declared.
    "dicomStores": "Pulumi's project schema declares no list of objects (pulumi/pulumi "
    "sdk/go/common/workspace/project.json, simpleConfigType)",
}


def _schema_type(annotation: Any) -> dict[str, Any]:
    text = str(annotation)
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        # A duration such as 120s or 3m: declared as a string, parsed by the program.
        return {"type": "string"}
    if "list[str]" in text:
        return {"type": "array", "items": {"type": "string"}}
    return {"type": "string"}


def _schema_default(name: str, field: Any) -> Any:
    if name == "iam_propagation_wait":
        return f"{field.default}s"
    value = field.get_default(call_default_factory=True)
    if value is None:
        # Pulumi needs a default for a key to be optional; empty means "not set" to the program.
        return [] if "list[" in str(field.annotation) else ""
    return value


def project_config_schema() -> dict[str, dict[str, Any]]:
    """The `config:` block of Pulumi.yaml, generated from this model so the two cannot drift.

    Pulumi's engine refuses a stack that lacks a declared key with neither `default` nor `value`
    ("Stack 'dev' is missing configuration values ...": pulumi/pulumi
    sdk/go/common/workspace/config.go, mergeConfig). So only required settings go without one.
    """
    schema: dict[str, dict[str, Any]] = {}
    for name, field in StackSettings.model_fields.items():
        key = field.alias or name
        if key in UNDECLARED_KEYS:
            continue
        entry = _schema_type(field.annotation)
        if not field.is_required():
            entry["default"] = _schema_default(name, field)
        entry["description"] = field.description or ""
        schema[key] = entry
    return schema


_STRUCTURED_KEYS = {
    "labels",
    "dicomStores",
    "streamTables",
    "allowedBigqueryLocations",
    "alertEmails",
    "alertChannels",
}


def parse_settings(raw: Mapping[str, Any], stack: str = "STACK") -> StackSettings:
    """Validate raw config values (keys without namespace) into settings, or raise SettingsError.

    Structured values may arrive as JSON text, as `pulumi.Config` holds them. An empty value is
    an unset one: it is how Pulumi.yaml's defaults say "none".
    """
    values = {key: value for key, value in raw.items() if value != "" and value is not None}
    for key in _STRUCTURED_KEYS & values.keys():
        if isinstance(values[key], str):
            try:
                values[key] = loads_json(values[key], what=f"{CONFIG_NAMESPACE}:{key}")
            except DicomBqError as error:
                raise SettingsError([error.message]) from None
            except json.JSONDecodeError:
                raise SettingsError(
                    [f"{CONFIG_NAMESPACE}:{key}: {excerpt(values[key])} is not a list or map"]
                ) from None
    try:
        return StackSettings.model_validate(values, context={"stack": stack})
    except SettingsError:
        raise
    except ValidationError as error:
        # The store check runs once the fields are valid; a stack without any store hears of
        # it now, with the other problems, as it does of the other required keys.
        problems = _explain(error, stack)
        neither = not {"dicomStoreId", "dicomStores"} & values.keys()
        # When it is the only problem, the store check itself ran and said it: once is enough.
        if neither and missing_store_problem(stack) not in problems:
            problems.append(missing_store_problem(stack))
        raise SettingsError(problems) from None


def near_miss_namespace(namespace: str) -> bool:
    """`dicombq`, `dicom_bq`, `dicom-bq-`, `Dicom-BQ`: keys there are silently ignored by Pulumi."""
    if namespace == CONFIG_NAMESPACE:
        return False
    folded = re.sub(r"[^a-z0-9]", "", namespace.lower())
    ratio = difflib.SequenceMatcher(None, namespace.lower(), CONFIG_NAMESPACE).ratio()
    return folded == "dicombq" or ratio >= 0.8


def namespace_warnings(config: Mapping[str, Any]) -> list[str]:
    warnings = []
    for full_key in sorted(config):
        namespace, _, key = str(full_key).rpartition(":")
        if near_miss_namespace(namespace):
            warnings.append(
                f"config key '{full_key}' is in namespace '{namespace}', which dicom-bq does not "
                f"read: did you mean '{CONFIG_NAMESPACE}:{key}'? Rename it with `pulumi config "
                f"rm {full_key}` and `pulumi config set {CONFIG_NAMESPACE}:{key} VALUE`"
            )
    return warnings


def settings_from_config(
    config: Mapping[str, Any], stack: str = "STACK"
) -> tuple[StackSettings, list[str]]:
    """Settings from a whole stack config (namespaced keys, as the engine hands it to the
    program), and warnings. Unknown `dicom-bq:` keys are refused: the engine lets them through.
    """
    own = {}
    for full_key, value in config.items():
        namespace, _, key = str(full_key).rpartition(":")
        if namespace == CONFIG_NAMESPACE:
            own[key] = value
    settings = parse_settings(own, stack)
    return settings, namespace_warnings(config) + wait_warnings(settings)


def wait_warnings(settings: StackSettings) -> list[str]:
    needs_wait = (
        settings.all_stream_tables
        or settings.notification_topics
        or settings.healthcare_kms_key
        or settings.bigquery_kms_key
    )
    if needs_wait and settings.iam_propagation_wait < DEFAULT_WAIT_SECONDS:
        return [
            f"{CONFIG_NAMESPACE}:iamPropagationWait is {settings.iam_propagation_wait}s; Google "
            "says IAM changes typically take 2 minutes to propagate, and this stack creates "
            "resources that Google checks against its grants: use at least 120s"
        ]
    return []


def _explain(error: ValidationError, stack: str) -> list[str]:
    known = config_keys()
    problems = []
    for item in error.errors():
        key = str(item["loc"][0]) if item["loc"] else ""
        key = key if len(key) <= EXCERPT and key.isprintable() else printable(key)
        if key == "dicomStores":
            # Which entry and field: dicomStores[2].id, dicomStores[0].notification.pubsubTopic.
            key += "".join(
                f"[{part}]" if isinstance(part, int) else f".{part}" for part in item["loc"][1:]
            )
        where = f"{CONFIG_NAMESPACE}:{key}"
        if item["type"] == "missing":
            problems.append(
                f"{where} is required: set it with "
                f"`pulumi config set {where} VALUE --stack {stack}`"
            )
        elif item["type"] == "extra_forbidden" and len(item["loc"]) > 1:
            problems.append(
                f"{where} is not a field of a store: an entry of {CONFIG_NAMESPACE}:dicomStores "
                "has id, labels, notification (pubsubTopic, sendForBulkImport) and streamTables"
            )
        elif item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            problems.append(
                f"{where} is not a dicom-bq setting: {hint}the settings are {', '.join(known)}"
            )
        elif (
            item["type"] == "value_error"
            and "ctx" in item
            and isinstance(item["ctx"].get("error"), SettingsError)
        ):
            problems.extend(item["ctx"]["error"].problems)
        else:
            message = str(item["msg"]).removeprefix("Value error, ")
            problems.append(f"{where} = {excerpt(item['input'])} is not valid: {message}")
    return problems
