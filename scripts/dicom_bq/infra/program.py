"""Reading the stack's settings and exporting the component's outputs."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp as gcp
from pulumi.runtime import config as runtime_config

from dicom_bq.infra.components.export_path import (
    DicomExportPath,
    DicomExportPathArgs,
    DicomStoreArgs,
)
from dicom_bq.vocabulary import naming
from dicom_bq.vocabulary.contract import OutputNames, StoreOutputs
from dicom_bq.vocabulary.settings import (
    SettingsError,
    StackSettings,
    StoreSpec,
    settings_from_config,
)


def engine_config() -> dict[str, Any]:
    """Every config key the engine gave this run, namespaced ("dicom-bq:filterBucket").

    The Python language host hands the merged stack config (Pulumi.yaml defaults included) to the
    program as the JSON object in PULUMI_CONFIG (pulumi/pulumi sdk/python/lib/pulumi/runtime/
    config.py, get_config_env); mocks and the Automation API set it with set_all_config instead.
    `pulumi.Config` can only look keys up, so unknown ones are found here.
    """
    merged = dict(runtime_config.get_config_env())
    merged.update(runtime_config.CONFIG.get())
    return merged


def load_settings() -> StackSettings:
    """Settings from the engine's config; a bad stack fails before any resource is registered.

    Plain `pulumi up` never sees `dicom-bq plan`, so the program itself refuses unknown keys of
    its namespace (the engine lets them through) and warns about near-miss namespaces. It also
    refuses a gcp provider set to another universe than the stack's (universe_problem).
    """
    config = engine_config()
    try:
        settings, warnings = settings_from_config(config, pulumi.get_stack())
        problem = universe_problem(settings, config, pulumi.get_stack())
        if problem:
            raise SettingsError([problem])
    except SettingsError as error:
        # RunError: Pulumi prints the message without a Python traceback.
        raise pulumi.RunError(
            f"stack {pulumi.get_stack()!r} has settings that cannot be used:\n{error}"
        ) from None
    for warning in warnings:
        pulumi.log.warn(warning)
    return settings


# --- The universe the resources go to ------------------------------------------------------------

# The gcp provider's own key for its universe (pulumi-gcp config `gcp:universeDomain`, the
# Terraform provider's `universe_domain`: "Specify the GCP universe to deploy in", Optional, with
# no environment variable; hashicorp/terraform-provider-google google/provider/provider.go and
# website/docs/guides/provider_reference.html.markdown).
GCP_UNIVERSE_KEY = "gcp:universeDomain"
# The explicit provider's resource name, after the component's ("dicom-bq" -> "dicom-bq-gcp").
PROVIDER_SUFFIX = "-gcp"


@dataclass(frozen=True)
class GcpProviderChoice:
    """Which gcp provider the stack's resources go through, and to what universe.

    googleapis.com: the engine's default provider, as every stack before had, so a deployed
    stack's registrations stay exactly as they were. Any other universe: a provider of the
    program's own (`<component>-gcp`), configured with the stack's universe and the stack's other
    `gcp:` settings, passed to the component, whose every child and data source inherits it.
    """

    universe_domain: str
    explicit_name: str | None  # None: the engine's default gcp provider

    def as_dict(self) -> dict[str, Any]:
        return {
            "universeDomain": self.universe_domain,
            "gcpProvider": self.explicit_name or "default",
        }

    def describe(self) -> str:
        """Where `pulumi up` creates the resources, and through which provider."""
        if self.explicit_name:
            return (
                f"{self.universe_domain}, through the program's own gcp provider "
                f"'{self.explicit_name}', configured for it"
            )
        return f"{self.universe_domain}, through the stack's default gcp provider"


def configured_gcp_universe(config: Mapping[str, Any]) -> str | None:
    """`gcp:universeDomain` as the stack sets it; None when unset or empty (the provider's
    googleapis.com)."""
    value = config.get(GCP_UNIVERSE_KEY)
    return str(value) if value not in (None, "") else None


def universe_problem(settings: StackSettings, config: Mapping[str, Any], stack: str) -> str | None:
    """Why the stack cannot deploy: its gcp provider is set to another universe than the one
    dicom-bq's commands use. Both values are named, with the commands that make them agree."""
    provider = configured_gcp_universe(config)
    wanted = settings.universe_domain
    if provider is None or provider == wanted:
        return None
    shown = f"'{wanted}'" + (" (the default)" if wanted == naming.DEFAULT_UNIVERSE else "")
    return (
        f"dicom-bq:universeDomain is {shown} but {GCP_UNIVERSE_KEY} is '{provider}': "
        f"`pulumi up` would create the resources in {provider} while dicom-bq's commands "
        f"(preflight, export, verify, audit) go to {wanted}. Name one universe in both: "
        f"`pulumi config set dicom-bq:universeDomain {provider} --stack {stack}` (the universe "
        f"the provider deploys to) or `pulumi config set {GCP_UNIVERSE_KEY} {wanted} --stack "
        f"{stack}`"
    )


def provider_choice(settings: StackSettings, name: str = "dicom-bq") -> GcpProviderChoice:
    universe = settings.universe_domain
    explicit = None if universe == naming.DEFAULT_UNIVERSE else name + PROVIDER_SUFFIX
    return GcpProviderChoice(universe_domain=universe, explicit_name=explicit)


@functools.cache
def _provider_arguments() -> dict[str, tuple[str, bool]]:
    """gcp config key (camelCase, as `gcp:KEY`) -> (gcp.Provider argument, value is plain text),
    from the SDK's own ProviderArgs getters (pulumi.getter(name=...))."""
    arguments = {}
    for python_name, member in vars(gcp.ProviderArgs).items():
        getter = getattr(member, "fget", None)
        wire = getattr(getter, "_pulumi_name", None)
        if wire:
            hints = str(getattr(getter, "__annotations__", {}).get("return", ""))
            arguments[wire] = (
                python_name,
                re.search(r"\bbool\b|Sequence|Mapping|Args\b", hints) is None,
            )
    return arguments


def stack_gcp_arguments(config: Mapping[str, Any]) -> dict[str, Any]:
    """The stack's `gcp:` settings as gcp.Provider arguments: an explicit provider reads no stack
    config (only the default provider does), so the program hands them on; secrets stay secret.
    Keys the provider does not have are left out, as the default provider ignores them."""
    known = _provider_arguments()
    arguments: dict[str, Any] = {}
    for full_key, raw in config.items():
        namespace, _, key = str(full_key).partition(":")
        if namespace != "gcp" or key not in known or raw in (None, ""):
            continue
        python_name, plain = known[key]
        value: Any = raw
        if not plain and isinstance(raw, str):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
        if runtime_config.is_config_secret(str(full_key)):
            value = pulumi.Output.secret(value)
        arguments[python_name] = value
    return arguments


def gcp_provider(choice: GcpProviderChoice, config: Mapping[str, Any]) -> gcp.Provider | None:
    """The program's gcp provider for a universe other than googleapis.com (None: the default
    provider, which the stack's `gcp:` config sets up, universe included)."""
    if choice.explicit_name is None:
        return None
    arguments = stack_gcp_arguments(config)
    arguments["universe_domain"] = choice.universe_domain
    return gcp.Provider(choice.explicit_name, **arguments)


def component_args(settings: StackSettings) -> DicomExportPathArgs:
    """The stack's validated settings as the component's arguments."""
    args = DicomExportPathArgs(
        source_project=settings.source_project,
        location=settings.location,
        healthcare_dataset_id=settings.healthcare_dataset_id,
        bigquery_dataset_id=settings.bigquery_dataset_id,
        bigquery_project=settings.bigquery_project,
        bigquery_location=settings.bigquery_dataset_location,
        time_zone=settings.time_zone,
        labels=settings.labels,
        data_editor_scope=settings.data_editor_scope,
        iam_propagation_wait_seconds=settings.iam_propagation_wait,
        protected=settings.protected,
        retain_on_delete=settings.retain_on_delete,
        universe_domain=settings.universe_domain,
    )
    if settings.listed_stores:
        args["dicom_stores"] = [listed_store_args(store) for store in settings.stores]
    else:
        args["dicom_store_id"] = settings.stores[0].store_id
        args["stream_tables"] = settings.stream_tables
    optional = {
        "source_project_number": settings.source_project_number,
        "notification_topic": settings.notification_topic,
        "healthcare_kms_key": settings.healthcare_kms_key,
        "bigquery_kms_key": settings.bigquery_kms_key,
        "filter_bucket": settings.filter_bucket,
        "agent_iam_domain": settings.agent_iam_domain,
        "snapshot_schedule": settings.snapshot_schedule,
        "snapshot_time_zone": settings.snapshot_time_zone,
        "snapshot_table": settings.snapshot_table,
        "snapshot_region": settings.snapshot_region,
        "alert_emails": settings.alert_emails or None,
        "alert_channels": settings.alert_channels or None,
    }
    args.update({key: value for key, value in optional.items() if value is not None})  # type: ignore[typeddict-item]
    return args


def listed_store_args(store: StoreSpec) -> DicomStoreArgs:
    """A dicomStores entry as the component takes it (labels: the stack's, the store's over)."""
    args = DicomStoreArgs(store_id=store.store_id, labels=store.labels)
    if store.notification_topic is not None:
        args["notification_topic"] = store.notification_topic
        if store.send_for_bulk_import is not None:
            args["send_for_bulk_import"] = store.send_for_bulk_import
    if store.stream_tables:
        args["stream_tables"] = store.stream_tables
    return args


def store_entries(
    stores: list[Any], snapshot_tables: list[str], snapshot_jobs: list[str]
) -> list[dict[str, object]]:
    """The dicomStores output: each store, with its snapshot table and job when there is a
    schedule.

    DicomExportPath lists all three in its stores' order: `stores` follows storage.store_names,
    made from path_inputs.store_inputs in order, `snapshot_tables` follows store_ids, made from
    the same list, and `snapshot_jobs` follows the NightlySnapshot's jobs, made from targets
    zipped on those tables (components/path_parts.py, components/snapshot.py); without a
    schedule there are no tables or jobs at all.
    """
    tables: list[str | None] = list(snapshot_tables) if snapshot_tables else [None] * len(stores)
    jobs: list[str | None] = list(snapshot_jobs) if snapshot_jobs else [None] * len(stores)
    return [
        StoreOutputs(
            store_id=store["store_id"],
            name=store["name"],
            dicomweb_url=store["dicomweb_url"],
            snapshot_table=table,
            snapshot_job=job,
        ).as_entry()
        for store, table, job in zip(stores, tables, jobs, strict=True)
    ]


def stack_exports(path: DicomExportPath) -> dict[str, pulumi.Output[object]]:
    """The stack's outputs, named by the contract every command reads (vocabulary/contract.py)."""
    return {
        OutputNames.STORE: path.store_name,
        OutputNames.DICOMWEB: path.dicomweb_url,
        OutputNames.STORES: pulumi.Output.all(
            path.stores, path.snapshot_tables, path.snapshot_jobs
        ).apply(lambda values: store_entries(values[0], values[1], values[2])),
        OutputNames.AGENT: path.agent_email,
        OutputNames.SOURCE_PROJECT: path.source_project,
        OutputNames.BIGQUERY_PROJECT: path.bigquery_project,
        OutputNames.BIGQUERY_DATASET: path.bigquery_dataset,
        OutputNames.VERIFICATION_TABLE: path.verification_table_uri,
        OutputNames.FILTER_BUCKET: path.filter_bucket,
        OutputNames.UNIVERSE: path.universe_domain,
        OutputNames.GRANTS: path.grants,
        # The first store's, as before each store had its own (see OutputNames.SNAPSHOT_TABLE).
        OutputNames.SNAPSHOT_TABLE: path.snapshot_tables.apply(
            lambda uris: uris[0] if uris else None
        ),
        OutputNames.SNAPSHOT_SCHEDULE: pulumi.Output.all(
            path.snapshot_schedule, path.snapshot_time_zone
        ).apply(
            lambda values: {"schedule": values[0], "timeZone": values[1]} if values[0] else None
        ),
        OutputNames.ALERT_POLICIES: path.alert_policies,
    }


def define_stack(
    settings: StackSettings, name: str = "dicom-bq"
) -> dict[str, pulumi.Output[object]]:
    provider = gcp_provider(provider_choice(settings, name), engine_config())
    path = DicomExportPath(
        name,
        component_args(settings),
        opts=pulumi.ResourceOptions(providers=[provider]) if provider is not None else None,
    )
    exports = stack_exports(path)
    for key, value in exports.items():
        pulumi.export(key, value)
    return exports
