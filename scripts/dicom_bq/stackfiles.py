"""Reading the Pulumi project and a stack's config file, offline, without the Pulumi CLI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from dicom_bq.errors import DicomBqError

PROJECT_NAME = "dicom-bq"
_STACK_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def find_project_dir(start: Path | None = None) -> Path:
    """The nearest folder upwards holding this project's Pulumi.yaml."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "Pulumi.yaml").is_file():
            return folder
    raise DicomBqError(
        f"no Pulumi.yaml in {here} or above it: run dicom-bq from the dicom-bq project folder, "
        "or pass --project-dir PATH"
    )


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise DicomBqError(
            f"{path.name} is not valid YAML{where}: {getattr(error, 'problem', error)}; fix the "
            "file (or regenerate it with `pulumi config set`)"
        ) from None


def available_stacks(project_dir: Path) -> list[str]:
    config_dir = stack_config_dir(project_dir)
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in config_dir.glob("Pulumi.*.yaml"))


def stack_config_dir(project_dir: Path) -> Path:
    project = _read_yaml(project_dir / "Pulumi.yaml") or {}
    return project_dir / str(project.get("stackConfigDir", "."))


def read_stack_config(project_dir: Path, stack: str) -> dict[str, Any]:
    """The stack's `dicom-bq:*` values, keys without the namespace."""
    short = stack.rsplit("/", 1)[-1]
    if not _STACK_NAME.match(short):
        raise DicomBqError(
            f"stack name {stack!r} is not valid: use letters, digits, '-', '_' and '.' "
            "(optionally after ORG/PROJECT/)"
        )
    path = stack_config_dir(project_dir) / f"Pulumi.{short}.yaml"
    if not path.is_file():
        known = ", ".join(available_stacks(project_dir)) or "none"
        raise DicomBqError(
            f"stack {short!r} has no config file {path.name} in {path.parent}: the stacks here are "
            f"{known}; create one with `pulumi stack init {short}` and `pulumi config set`"
        )
    document = _read_yaml(path) or {}
    if not isinstance(document, dict) or not isinstance(document.get("config", {}), dict):
        raise DicomBqError(f"{path.name} must hold a 'config:' map of key: value")
    values: dict[str, Any] = {}
    for full_key, value in (document.get("config") or {}).items():
        namespace, _, key = str(full_key).rpartition(":")
        if namespace not in ("", PROJECT_NAME):
            continue
        if isinstance(value, dict) and "secure" in value:
            raise DicomBqError(
                f"{PROJECT_NAME}:{key} in {path.name} is a secret, which cannot be read offline: "
                "dicom-bq settings hold no secrets, store it in plain text"
            )
        values[key] = value
    return values
