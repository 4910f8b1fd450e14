"""Reading the stack's settings and exporting the component's outputs."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from dicom_bq.infra.components.export_path import DicomExportPath, DicomExportPathArgs
from dicom_bq.infra.settings import SettingsError, StackSettings, settings_from_config


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


def define_stack(settings: StackSettings, name: str = "dicom-bq") -> DicomExportPath:
    path = DicomExportPath(name, DicomExportPathArgs(settings=settings))
    for key, value in path.outputs.items():
        pulumi.export(key, value)
    return path
