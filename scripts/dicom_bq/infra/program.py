"""Reading the stack's settings and exporting the component's outputs."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from dicom_bq.infra.components.export_path import (
    DicomExportPath,
    DicomExportPathArgs,
    DicomStoreArgs,
)
from dicom_bq.infra.settings import SettingsError, StackSettings, StoreSpec, settings_from_config
from dicom_bq.stack.contract import OutputNames, StoreOutputs


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
    its namespace (the engine lets them through) and warns about near-miss namespaces.
    """
    try:
        settings, warnings = settings_from_config(engine_config(), pulumi.get_stack())
    except SettingsError as error:
        # RunError: Pulumi prints the message without a Python traceback.
        raise pulumi.RunError(
            f"stack {pulumi.get_stack()!r} has settings that cannot be used:\n{error}"
        ) from None
    for warning in warnings:
        pulumi.log.warn(warning)
    return settings


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
    made from _store_inputs in order, `snapshot_tables` follows store_ids, made from the same
    list, and `snapshot_jobs` follows the NightlySnapshot's jobs, made from targets zipped on
    those tables (components/export_path.py, components/snapshot.py); without a schedule there
    are no tables or jobs at all.
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
    """The stack's outputs, named by the contract every command reads (dicom_bq.stack.contract)."""
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
    path = DicomExportPath(name, component_args(settings))
    exports = stack_exports(path)
    for key, value in exports.items():
        pulumi.export(key, value)
    return exports
