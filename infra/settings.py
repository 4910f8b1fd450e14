"""Stack settings: every `dicom-bq:*` config key, typed and validated once.

The program reads them from `pulumi.Config`; the CLI reads the same keys from `Pulumi.<stack>.yaml`.
Both go through `parse_settings`, so a bad value gets the same message wherever it is found.
"""

from __future__ import annotations

import difflib
import json
import re
import zoneinfo
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from infra import identifiers, naming

CONFIG_NAMESPACE = "dicom-bq"
MAX_STREAMS = 5
MAX_LABELS = 64
MAX_WAIT_SECONDS = 3600
_DURATION = re.compile(r"^(?P<amount>[0-9]+)(?P<unit>s|m)?$")


class SettingsError(ValueError):
    """Stack settings that cannot be used; the message lists every problem, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


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
    match = _DURATION.match(str(value).strip())
    if not match:
        raise ValueError("a duration is a number of seconds or minutes, such as '90s' or '2m'")
    seconds = int(match.group("amount")) * (60 if match.group("unit") == "m" else 1)
    if seconds > MAX_WAIT_SECONDS:
        raise ValueError(f"the IAM propagation wait is at most {MAX_WAIT_SECONDS // 60}m")
    return seconds


class StackSettings(BaseModel):
    """One environment's export path. Field names are the config keys in camelCase."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    source_project: str = Field(description="Project that holds the Healthcare dataset and store.")
    source_project_number: str | None = Field(
        None, description="Number of the source project; looked up at deploy time when absent."
    )
    destination_project: str | None = Field(
        None, description="Project of the BigQuery dataset; the source project when absent."
    )
    destination_project_number: str | None = Field(
        None, description="Number of the BigQuery project, for BigQuery's CMEK account."
    )
    location: str = Field(description="Healthcare dataset location, such as us-central1.")
    healthcare_dataset_id: str
    time_zone: str = "UTC"
    dicom_store_id: str
    labels: dict[str, str] = Field(default_factory=dict)
    notification_topic: str | None = None
    stream_tables: list[str] = Field(default_factory=list)
    bigquery_dataset_id: str
    bigquery_location: str | None = None
    healthcare_kms_key: str | None = None
    bigquery_kms_key: str | None = None
    filter_bucket: str | None = None
    protected: bool = False
    retain_on_delete: bool = False
    iam_propagation_wait: int = 120
    data_editor_scope: Literal["dataset", "project"] = "dataset"
    allowed_bigquery_locations: list[str] | None = None
    require_cmek: bool = False
    universe_domain: str = naming.DEFAULT_UNIVERSE
    agent_iam_domain: str | None = None

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

    @field_validator("source_project_number", "destination_project_number", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        # YAML reads an unquoted project number as an int.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("time_zone")
    @classmethod
    def _check_time_zone(cls, value: str) -> str:
        if value not in _time_zones():
            close = difflib.get_close_matches(value, sorted(_time_zones()), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"a time zone is an IANA name such as 'UTC' or 'Europe/Paris'{hint}")
        return value

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} labels are allowed, not {len(value)}")
        for key, text in value.items():
            problem = identifiers.check_label_key(key)
            if problem:
                raise ValueError(f"label key {key!r}: {problem}")
            problem = identifiers.check_label_value(text)
            if problem:
                raise ValueError(f"label {key!r} value {text!r}: {problem}")
        return value

    @field_validator("stream_tables")
    @classmethod
    def _check_streams(cls, value: list[str]) -> list[str]:
        if len(value) > MAX_STREAMS:
            raise ValueError(
                f"a DICOM store streams to at most {MAX_STREAMS} BigQuery tables; "
                f"{len(value)} are listed: remove {len(value) - MAX_STREAMS}"
            )
        for table in value:
            if table.startswith("bq://") or "." in table:
                raise ValueError(
                    f"{table!r}: give the table name only; streams go to the stack's "
                    "BigQuery dataset (bigqueryDatasetId)"
                )
            problem = identifiers.check_table_id(table)
            if problem:
                raise ValueError(f"{table!r}: {problem}")
        duplicates = sorted({table for table in value if value.count(table) > 1})
        if duplicates:
            raise ValueError(
                f"each stream needs its own table; {', '.join(map(repr, duplicates))} is listed "
                "more than once"
            )
        return value

    @field_validator("allowed_bigquery_locations")
    @classmethod
    def _check_allowed_locations(cls, value: list[str] | None) -> list[str] | None:
        for location in value or []:
            problem = identifiers.check_bigquery_location(location)
            if problem:
                raise ValueError(f"{location!r}: {problem}")
        return value

    @field_validator("iam_propagation_wait", mode="before")
    @classmethod
    def _wait_seconds(cls, value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("a duration is a number of seconds or minutes, such as '90s' or '2m'")
        return parse_duration(value)

    @model_validator(mode="after")
    def _cross_checks(self) -> StackSettings:
        problems: list[tuple[str, str]] = []
        if self.healthcare_kms_key:
            key_location = identifiers.kms_key_location(self.healthcare_kms_key)
            if key_location != self.location:
                problems.append(
                    (
                        "healthcareKmsKey",
                        f"the key is in '{key_location}' but the Healthcare dataset is in "
                        f"'{self.location}': use a key ring in '{self.location}'",
                    )
                )
        if self.bigquery_kms_key:
            key_location = identifiers.kms_key_location(self.bigquery_kms_key)
            if key_location.lower() != self.bigquery_dataset_location.lower():
                problems.append(
                    (
                        "bigqueryKmsKey",
                        f"the key is in '{key_location}' but the BigQuery dataset is in "
                        f"'{self.bigquery_dataset_location}': use a key ring in that location",
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
        if problems:
            raise SettingsError([f"{CONFIG_NAMESPACE}:{key}: {text}" for key, text in problems])
        return self

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
    def store_name(self) -> str:
        return naming.dicom_store_name(
            self.source_project, self.location, self.healthcare_dataset_id, self.dicom_store_id
        )

    @property
    def bigquery_project_number(self) -> str | None:
        if self.cross_project:
            return self.destination_project_number
        return self.destination_project_number or self.source_project_number

    @property
    def agent_member(self) -> str | None:
        if self.source_project_number is None:
            return None
        return naming.agent_member(
            self.source_project_number, self.universe_domain, self.agent_iam_domain
        )


def config_keys() -> list[str]:
    return sorted(field.alias or name for name, field in StackSettings.model_fields.items())


_STRUCTURED_KEYS = {"labels", "streamTables", "allowedBigqueryLocations"}


def parse_settings(raw: Mapping[str, Any], stack: str = "STACK") -> StackSettings:
    """Validate raw config values (keys without namespace) into settings, or raise SettingsError.

    Structured values may arrive as JSON text, as `pulumi.Config` holds them.
    """
    values = dict(raw)
    for key in _STRUCTURED_KEYS & values.keys():
        if isinstance(values[key], str):
            try:
                values[key] = json.loads(values[key])
            except json.JSONDecodeError:
                raise SettingsError(
                    [f"{CONFIG_NAMESPACE}:{key}: {values[key]!r} is not a list or map"]
                ) from None
    try:
        return StackSettings.model_validate(values)
    except SettingsError:
        raise
    except ValidationError as error:
        raise SettingsError(_explain(error, stack)) from None


def _explain(error: ValidationError, stack: str) -> list[str]:
    known = config_keys()
    problems = []
    for item in error.errors():
        key = str(item["loc"][0]) if item["loc"] else ""
        where = f"{CONFIG_NAMESPACE}:{key}"
        if item["type"] == "missing":
            problems.append(
                f"{where} is required: set it with "
                f"`pulumi config set {where} VALUE --stack {stack}`"
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
            problems.append(f"{where} = {item['input']!r} is not valid: {message}")
    return problems
