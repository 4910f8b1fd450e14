"""A stack's config as Pulumi's engine merges it, offline: Pulumi.yaml, then Pulumi.<stack>.yaml.

Every rule here is the engine's, from pulumi/pulumi `sdk/go/common/workspace/config.go`
(mergeConfig, validateStackConfigValue), `project.go` (Project.Validate, ValidateConfigValue,
RewriteShorthandConfigValues) and `sdk/go/common/resource/config/value.go` (unmarshalValue):

- a project key without a namespace belongs to the project (`sourceProject` is
  `dicom-bq:sourceProject`); a key of another namespace must give `value`, and no type/default;
- a scalar or list instead of a map is shorthand for `default` (`value` in another namespace);
- `default` and `value` together are refused; the stack file wins over both;
- a project-namespace key with neither, absent from the stack, stops the run with
  "Stack 'dev' is missing configuration values 'a' and 'b'";
- values are read as strings first, so YAML `123` and `"123"` are both "123"; a declared type is
  checked on that text (integer: Atoi; boolean: exactly "true"/"false") with "Stack 'dev' with
  configuration key 'k' must be of type 't'";
- stack-file keys must be namespaced; undeclared keys pass untouched;
- `environment:` imports Pulumi ESC environments: only the CLI, logged in, can open them. Offline
  we say what could not be resolved; with a `pulumi` CLI on PATH we ask it (Automation API
  `Stack.get_all_config`, which runs `pulumi config --json`).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dicom_bq.errors import DicomBqError
from dicom_bq.texts import excerpt

PROJECT_NAME = "dicom-bq"
# Pulumi stack references: [ORG/[PROJECT/]]NAME, each part letters, digits, '-', '_', '.'
# (pulumi/pulumi sdk/go/common/tokens, ValidateStackName), never "." or ".." alone.
_STACK_PART = re.compile(r"[A-Za-z0-9_.-]{1,100}")
# Pulumi config files are small; these bound what a hostile or broken file can cost us.
MAX_CONFIG_BYTES = 1024 * 1024
MAX_YAML_ALIASES = 100
_INTEGER = re.compile(r"^[+-]?[0-9]+$")


@dataclass(frozen=True)
class StackConfig:
    """A stack's merged config: namespaced keys, values as the engine hands them to a program."""

    stack: str
    values: dict[str, Any]
    environments: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    resolved_by_cli: bool = False

    def own(self) -> dict[str, Any]:
        """This project's keys, without the namespace."""
        prefix = f"{PROJECT_NAME}:"
        return {k[len(prefix) :]: v for k, v in self.values.items() if k.startswith(prefix)}


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


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DicomBqError(f"{path} does not exist") from None
    except OSError as error:
        raise DicomBqError(f"{path} cannot be read: {error.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise DicomBqError(
            f"{path.name} is {len(data)} bytes; a Pulumi config file is at most "
            f"{MAX_CONFIG_BYTES} bytes here: is it the right file?"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DicomBqError(
            f"{path.name} is not UTF-8 text (Pulumi reads YAML as UTF-8): re-save it as UTF-8"
        ) from None


def _read_yaml(path: Path) -> Any:
    """YAML with every scalar kept as text, as the engine first reads config values."""
    text = _read_text(path)
    try:
        aliases = sum(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text))
        if aliases > MAX_YAML_ALIASES:
            raise DicomBqError(
                f"{path.name} uses {aliases} YAML aliases; a config file needs none: write the "
                "values out"
            )
        return yaml.load(text, Loader=yaml.BaseLoader)  # noqa: S506 - BaseLoader builds no objects
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise DicomBqError(
            f"{path.name} is not valid YAML{where}: {getattr(error, 'problem', None) or 'syntax'}"
            "; fix the file (or regenerate it with `pulumi config set`)"
        ) from None


def read_project(project_dir: Path) -> dict[str, Any]:
    project = _read_yaml(project_dir / "Pulumi.yaml")
    if not isinstance(project, dict) or not isinstance(project.get("name"), str):
        raise DicomBqError("Pulumi.yaml must be a map with at least `name:` and `runtime:`")
    if project["name"] != PROJECT_NAME:
        raise DicomBqError(
            f"Pulumi.yaml names project {project['name']!r}; dicom-bq reads the {PROJECT_NAME!r} "
            "project: pass --project-dir to its folder"
        )
    return project


def stack_config_dir(project_dir: Path) -> Path:
    return project_dir / str(read_project(project_dir).get("stackConfigDir", "."))


def available_stacks(project_dir: Path) -> list[str]:
    config_dir = stack_config_dir(project_dir)
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in config_dir.glob("Pulumi.*.yaml"))


@dataclass(frozen=True)
class DeclaredKey:
    key: str  # namespaced
    written: str  # as in Pulumi.yaml, for the engine's messages
    type: str | None
    items: str | None
    default: Any = None
    value: Any = None


def declared_keys(project: Mapping[str, Any]) -> list[DeclaredKey]:
    """Pulumi.yaml's `config:` block, checked as Project.Validate checks it."""
    name = str(project["name"])
    block = project.get("config") or {}
    if not isinstance(block, dict):
        raise DicomBqError("Pulumi.yaml: `config:` must be a map of key: declaration")
    keys = []
    for written, declaration in block.items():
        namespaced = ":" in written and not written.startswith(f"{name}:")
        if not isinstance(declaration, dict):
            # RewriteShorthandConfigValues: a bare scalar or list is a default (a value elsewhere).
            declaration = {"value" if namespaced else "default": declaration}
        if "default" in declaration and "value" in declaration:
            raise DicomBqError(
                f"Pulumi.yaml: project config '{written}' cannot have both a 'default' and "
                "'value' attribute"
            )
        if namespaced and "type" in declaration:
            raise DicomBqError(
                f"Pulumi.yaml: Configuration key '{written}' is not namespaced by the project "
                "and should not define a type"
            )
        if namespaced and "default" in declaration:
            raise DicomBqError(
                f"Pulumi.yaml: Configuration key '{written}' is not namespaced by the project "
                "and should not define a default value. Did you mean to use the 'value' "
                "attribute instead of 'default'?"
            )
        if namespaced and "value" not in declaration:
            raise DicomBqError(
                f"Pulumi.yaml: Configuration key '{written}' is namespaced and must provide an "
                "attribute 'value'"
            )
        kind = declaration.get("type")
        items = (declaration.get("items") or {}).get("type") if kind == "array" else None
        if kind == "array" and not items:
            raise DicomBqError(
                f"Pulumi.yaml: The configuration key '{written}' declares an array but does not "
                "specify the underlying type via the 'items' attribute"
            )
        key = written if ":" in written else f"{name}:{written}"
        declared = DeclaredKey(
            key, written, kind, items, declaration.get("default"), declaration.get("value")
        )
        if declared.default is not None and not _type_ok(declared.default, kind, items):
            raise DicomBqError(
                f"Pulumi.yaml: The default value specified for configuration key '{written}' is "
                f"not of the expected type '{_type_name(kind, items)}'"
            )
        keys.append(declared)
    return keys


def _type_name(kind: str | None, items: str | None) -> str:
    return f"array<{items}>" if kind == "array" else str(kind)


def _type_ok(value: Any, kind: str | None, items: str | None) -> bool:
    """ValidateConfigValue on a value read as text."""
    if kind is None:
        return True
    if kind == "array":
        return isinstance(value, list) and all(_type_ok(item, items, None) for item in value)
    if kind == "object":
        return isinstance(value, dict)
    if not isinstance(value, str):
        return False
    if kind == "integer":
        return bool(_INTEGER.match(value))
    if kind == "boolean":
        return value in ("true", "false")
    return kind == "string"


def _enumerate(keys: list[str]) -> str:
    """formatMissingKeys: 'a', 'a' and 'b', 'a', 'b' and 'c'."""
    quoted = [f"'{key}'" for key in sorted(keys)]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _stack_file(project_dir: Path, stack: str) -> Path:
    parts = stack.split("/")
    short = parts[-1]
    if len(parts) > 3 or not all(
        _STACK_PART.fullmatch(part) and part not in (".", "..") for part in parts
    ):
        raise DicomBqError(
            f"stack name {excerpt(stack)} is not valid: use letters, digits, '-', '_' and '.' "
            "(optionally after ORG/PROJECT/)"
        )
    path = stack_config_dir(project_dir) / f"Pulumi.{short}.yaml"
    if not path.is_file():
        known = ", ".join(available_stacks(project_dir)) or "none"
        raise DicomBqError(
            f"stack {short!r} has no config file {path.name} in {path.parent}: the stacks here are "
            f"{known}; create one with `pulumi stack init {short}` and `pulumi config set`"
        )
    return path


def _environments(document: Mapping[str, Any]) -> list[str]:
    environment = document.get("environment")
    if environment is None:
        return []
    if isinstance(environment, list):
        return [str(name) for name in environment]
    if isinstance(environment, dict):
        imports = environment.get("imports") or []
        return [str(name) for name in imports] or ["(inline environment)"]
    return [str(environment)]


def merge_stack_config(
    project: Mapping[str, Any], document: Mapping[str, Any], stack: str, file_name: str
) -> StackConfig:
    """mergeConfig + validateStackConfigValues, for a stack file read offline."""
    short = stack.rsplit("/", 1)[-1]
    config = document.get("config") or {}
    if not isinstance(config, dict):
        raise DicomBqError(f"{file_name} must hold a 'config:' map of key: value")
    values: dict[str, Any] = {}
    for key, value in config.items():
        if ":" not in key:
            raise DicomBqError(
                f"{file_name}: could not parse {key[:60]!r} as a configuration key "
                "(configuration keys should be of the form `<namespace>:<name>`)"
            )
        if isinstance(value, dict) and "secure" in value:
            if key.startswith(f"{PROJECT_NAME}:"):
                raise DicomBqError(
                    f"{key} in {file_name} is a secret, which cannot be read offline: dicom-bq "
                    "settings hold no secrets, store it in plain text"
                )
            continue  # another namespace's secret: not ours to read
        values[key] = value
    environments = _environments(document)
    missing = []
    for declared in declared_keys(project):
        if declared.key in values:
            if not _type_ok(values[declared.key], declared.type, declared.items):
                raise DicomBqError(
                    f"Stack '{short}' with configuration key '{declared.written}' must be of "
                    f"type '{_type_name(declared.type, declared.items)}'"
                )
        elif declared.value is not None:
            values[declared.key] = declared.value
        elif declared.default is not None:
            values[declared.key] = declared.default
        elif declared.key.startswith(f"{project['name']}:"):
            missing.append(declared.written)
    notes = []
    if environments:
        notes.append(
            f"stack {short!r} imports Pulumi ESC environment(s) {', '.join(environments)}, which "
            "only a logged-in `pulumi` CLI can open: values they set are not shown here"
            + (f", and {_enumerate(missing)} may come from them" if missing else "")
        )
    elif missing:
        word = "value" if len(missing) == 1 else "values"
        raise DicomBqError(
            f"Stack '{short}' is missing configuration {word} {_enumerate(missing)} (Pulumi "
            f"stops here too): set each with `pulumi config set {PROJECT_NAME}:KEY VALUE "
            f"--stack {short}`"
        )
    return StackConfig(stack=short, values=values, environments=environments, notes=notes)


def read_stack_config(project_dir: Path, stack: str, use_cli: bool = True) -> StackConfig:
    """The stack's config as the engine would give it to the program."""
    project = read_project(project_dir)
    path = _stack_file(project_dir, stack)
    document = _read_yaml(path) or {}
    if not isinstance(document, dict):
        raise DicomBqError(f"{path.name} must hold a 'config:' map of key: value")
    offline = merge_stack_config(project, document, stack, path.name)
    if offline.environments and use_cli and shutil.which("pulumi"):
        return _resolve_with_cli(project_dir, project, offline)
    return offline


def _resolve_with_cli(
    project_dir: Path, project: Mapping[str, Any], offline: StackConfig
) -> StackConfig:
    """The real merged config, ESC environments included, from the Pulumi CLI."""
    from pulumi import automation

    try:
        stack = automation.select_stack(offline.stack, work_dir=str(project_dir))
        config = stack.get_all_config()
    except Exception as error:
        said = [
            line.strip()
            for line in str(error).splitlines()
            if line.strip() and not line.strip().endswith(":")
        ]
        first_line = said[-1:] or [type(error).__name__]
        return StackConfig(
            stack=offline.stack,
            values=offline.values,
            environments=offline.environments,
            notes=[
                *offline.notes,
                f"`pulumi config` could not open them ({first_line[0][:200]}); run "
                "`pulumi login` to see the whole config",
            ],
        )
    arrays = {d.key for d in declared_keys(project) if d.type in ("array", "object")}
    values: dict[str, Any] = {}
    for key, item in config.items():
        value: Any = item.value
        if key in arrays or key == f"{PROJECT_NAME}:labels":
            with contextlib.suppress(ValueError):
                value = json.loads(item.value)
        values[key] = value
    return StackConfig(
        stack=offline.stack,
        values=values,
        environments=offline.environments,
        notes=[f"config read with `pulumi config`, environments {', '.join(offline.environments)}"],
        resolved_by_cli=True,
    )
