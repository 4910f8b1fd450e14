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

from dicom_bq.infra import identifiers, naming
from dicom_bq.texts import EXCERPT, excerpt, printable

CONFIG_NAMESPACE = "dicom-bq"
MAX_STREAMS = 5
MAX_LABELS = 64
MAX_WAIT_SECONDS = 3600
# Google: IAM changes "typically" propagate within 2 minutes, sometimes 7 or more
# (https://cloud.google.com/iam/docs/access-change-propagation).
DEFAULT_WAIT_SECONDS = 120
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
    dicom_store_id: str = Field(description="DICOM store ID (letters, digits, _ - .; up to 256).")
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
        description="Labels (key: value) on the store and both datasets.",
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


def required_keys() -> list[str]:
    """Keys a stack cannot do without: the only ones Pulumi.yaml declares with no default."""
    return sorted(
        field.alias or name
        for name, field in StackSettings.model_fields.items()
        if field.is_required()
    )


# Read by the program but not declared in Pulumi.yaml: Pulumi's project schema gained the
# `object` type only in 2025 (pulumi/pulumi#20129, #20132); older CLIs refuse it. Undeclared keys
# pass the engine untouched (pulumi/pulumi sdk/go/common/workspace/config.go, mergeConfig loops
# over the project's keys only), and the program validates them itself.
UNDECLARED_KEYS = frozenset({"labels"})


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


_STRUCTURED_KEYS = {"labels", "streamTables", "allowedBigqueryLocations"}


def parse_settings(raw: Mapping[str, Any], stack: str = "STACK") -> StackSettings:
    """Validate raw config values (keys without namespace) into settings, or raise SettingsError.

    Structured values may arrive as JSON text, as `pulumi.Config` holds them. An empty value is
    an unset one: it is how Pulumi.yaml's defaults say "none".
    """
    values = {key: value for key, value in raw.items() if value != "" and value is not None}
    for key in _STRUCTURED_KEYS & values.keys():
        if isinstance(values[key], str):
            try:
                values[key] = json.loads(values[key])
            except json.JSONDecodeError:
                raise SettingsError(
                    [f"{CONFIG_NAMESPACE}:{key}: {excerpt(values[key])} is not a list or map"]
                ) from None
    try:
        return StackSettings.model_validate(values)
    except SettingsError:
        raise
    except ValidationError as error:
        raise SettingsError(_explain(error, stack)) from None


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
        settings.stream_tables
        or settings.notification_topic
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
            problems.append(f"{where} = {excerpt(item['input'])} is not valid: {message}")
    return problems
