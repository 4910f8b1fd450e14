"""Reading the stack's settings and exporting the component's outputs."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from dicom_bq.infra.components.export_path import DicomExportPath, DicomExportPathArgs
from dicom_bq.infra.settings import SettingsError, StackSettings, settings_from_config
from dicom_bq.stack.contract import OutputNames


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
        dicom_store_id=settings.dicom_store_id,
        bigquery_dataset_id=settings.bigquery_dataset_id,
        bigquery_project=settings.bigquery_project,
        bigquery_location=settings.bigquery_dataset_location,
        time_zone=settings.time_zone,
        labels=settings.labels,
        stream_tables=settings.stream_tables,
        data_editor_scope=settings.data_editor_scope,
        iam_propagation_wait_seconds=settings.iam_propagation_wait,
        protected=settings.protected,
        retain_on_delete=settings.retain_on_delete,
        universe_domain=settings.universe_domain,
    )
    optional = {
        "source_project_number": settings.source_project_number,
        "notification_topic": settings.notification_topic,
        "healthcare_kms_key": settings.healthcare_kms_key,
        "bigquery_kms_key": settings.bigquery_kms_key,
        "filter_bucket": settings.filter_bucket,
        "agent_iam_domain": settings.agent_iam_domain,
    }
    args.update({key: value for key, value in optional.items() if value is not None})  # type: ignore[typeddict-item]
    return args


def stack_exports(path: DicomExportPath) -> dict[str, pulumi.Output[object]]:
    """The stack's outputs, named by the contract every command reads (dicom_bq.stack.contract)."""
    return {
        OutputNames.STORE: path.store_name,
        OutputNames.DICOMWEB: path.dicomweb_url,
        OutputNames.AGENT: path.agent_email,
        OutputNames.SOURCE_PROJECT: path.source_project,
        OutputNames.BIGQUERY_PROJECT: path.bigquery_project,
        OutputNames.BIGQUERY_DATASET: path.bigquery_dataset,
        OutputNames.VERIFICATION_TABLE: path.verification_table_uri,
        OutputNames.FILTER_BUCKET: path.filter_bucket,
        OutputNames.UNIVERSE: path.universe_domain,
        OutputNames.GRANTS: path.grants,
    }


def define_stack(
    settings: StackSettings, name: str = "dicom-bq"
) -> dict[str, pulumi.Output[object]]:
    path = DicomExportPath(name, component_args(settings))
    exports = stack_exports(path)
    for key, value in exports.items():
        pulumi.export(key, value)
    return exports
