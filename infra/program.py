"""Reading the stack's settings and exporting the component's outputs."""

from __future__ import annotations

import pulumi

from infra.components.export_path import DicomExportPath, DicomExportPathArgs
from infra.settings import CONFIG_NAMESPACE, StackSettings, config_keys, parse_settings


def load_settings() -> StackSettings:
    """Settings from `pulumi.Config`; a bad stack fails before any resource is registered."""
    config = pulumi.Config(CONFIG_NAMESPACE)
    raw = {key: config.get(key) for key in config_keys()}
    return parse_settings(
        {key: value for key, value in raw.items() if value is not None}, pulumi.get_stack()
    )


def define_stack(settings: StackSettings, name: str = "dicom-bq") -> DicomExportPath:
    path = DicomExportPath(name, DicomExportPathArgs(settings=settings))
    for key, value in path.outputs.items():
        pulumi.export(key, value)
    return path
