"""The real Pulumi engine, for the engine tier: its environment and throwaway workspaces.

`scripts/pulumi-engine env` builds the engine (cached) and prints the variables that use it; a
`Workspace` is a copy of the project (Pulumi.yaml, the program, the venv, the policy pack) with its
own file backend, where tests write stack files and run `pulumi` as a user would.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ENGINE_SCRIPT = ROOT / "scripts" / "pulumi-engine"
_EXPORT = re.compile(r'export ([A-Z_]+)="(.*)"')
# One engine command; the slowest (an `up` of the operations stack on 2 loaded cores) takes ~1 min.
COMMAND_TIMEOUT = 600


class EngineUnavailable(Exception):
    """No Go toolchain: the engine cannot be built on this machine."""


@functools.cache
def engine_env() -> dict[str, str]:
    """The environment of `scripts/pulumi-engine env`, on top of this process's."""
    if shutil.which("go") is None:
        raise EngineUnavailable("Go is not installed: the engine tier needs it to build Pulumi")
    done = subprocess.run(
        [str(ENGINE_SCRIPT), "env"], capture_output=True, text=True, check=False, timeout=3600
    )
    if done.returncode != 0:
        # Go is here, so a failed build is a failure, never a skip.
        raise RuntimeError(f"scripts/pulumi-engine env failed:\n{done.stderr[-4000:]}")
    env = dict(os.environ)
    for line in done.stdout.splitlines():
        match = _EXPORT.fullmatch(line.strip())
        if match:
            key, value = match.groups()
            env[key] = value.replace("$PATH", os.environ.get("PATH", ""))
    # The emulator variables of the fast tier never reach the engine's providers by accident.
    for key in list(env):
        if key.endswith("_EMULATOR_HOST"):
            del env[key]
    return env


@dataclass
class Workspace:
    """A project folder for the engine: the real program and Pulumi.yaml, its own state."""

    path: Path
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, where: Path, *, extra_env: Mapping[str, str] | None = None) -> Workspace:
        where.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "Pulumi.yaml", where / "Pulumi.yaml")
        for linked in ("infra", ".venv", ".venv-policy", "policy", "scripts"):
            (where / linked).symlink_to(ROOT / linked)
        state = where / ".state"
        state.mkdir()
        env = dict(engine_env())
        env["PULUMI_BACKEND_URL"] = f"file://{state}"
        env.update(extra_env or {})
        return cls(where, env)

    def write_stack(self, stack: str, config: Mapping[str, Any] | str) -> Path:
        """Pulumi.<stack>.yaml from a dict of namespaced keys, or raw YAML text."""
        path = self.path / f"Pulumi.{stack}.yaml"
        text = config if isinstance(config, str) else yaml.safe_dump({"config": dict(config)})
        path.write_text(text)
        return path

    def copy_stack(self, stack: str) -> Path:
        return Path(shutil.copy(ROOT / f"Pulumi.{stack}.yaml", self.path / f"Pulumi.{stack}.yaml"))

    def pulumi(
        self, *args: str, stack: str | None = None, check: bool = True, env: Mapping[str, str] = {}
    ) -> subprocess.CompletedProcess[str]:
        command = ["pulumi", *args, "--non-interactive"]
        if stack is not None:
            command += ["--stack", stack]
        done = subprocess.run(
            command,
            cwd=self.path,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            check=False,
            timeout=COMMAND_TIMEOUT,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"`{' '.join(command)}` exited {done.returncode}:\n{done.stdout[-6000:]}\n"
                f"{done.stderr[-6000:]}"
            )
        return done

    def init(self, stack: str) -> None:
        self.pulumi("stack", "init", stack)

    def preview(self, stack: str, *args: str) -> dict[str, Any]:
        done = self.pulumi("preview", "--json", *args, stack=stack)
        parsed: dict[str, Any] = json.loads(done.stdout)
        return parsed


# What the engine shows for a value not known until the provider creates something
# (pulumi sdk/go/common/resource/plugin: UnknownStringValue).
ENGINE_UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


@dataclass(frozen=True)
class EngineResource:
    """A resource as the engine registers it, in the offline plan's terms.

    Delete-before-replace is not here: the engine keeps it out of the state and the preview
    (pulumi sdk/go/common/apitype ResourceV3 has no such field); the deploy test sees it in the
    order of a replacement's steps instead.
    """

    type: str
    name: str
    parent: str | None
    protect: bool
    retain_on_delete: bool
    depends_on: tuple[str, ...] = ()
    inputs: Any = None

    def registration(self) -> tuple[str, str, str | None, bool, bool]:
        return (self.type, self.name, self.parent, self.protect, self.retain_on_delete)


def _name_of(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def _resource(state: Mapping[str, Any]) -> EngineResource | None:
    kind = str(state.get("type", ""))
    # The stack and the engine's default providers are the engine's own; a provider the program
    # registers (another universe's, infra/program.py gcp_provider) is the plan's too.
    default_provider = kind.startswith("pulumi:providers:") and _name_of(state["urn"]).startswith(
        "default"
    )
    if kind == "pulumi:pulumi:Stack" or default_provider:
        return None
    parent = str(state.get("parent") or "")
    # urn:pulumi:STACK::PROJECT::[PARENT_TYPE$]TYPE::NAME; the root stack is no parent to the plan.
    top_level = not parent or parent.split("::")[2].split("$")[-1] == "pulumi:pulumi:Stack"
    return EngineResource(
        type=kind,
        name=_name_of(state["urn"]),
        parent=None if top_level else _name_of(parent),
        protect=bool(state.get("protect")),
        retain_on_delete=bool(state.get("retainOnDelete")),
        depends_on=tuple(sorted(_name_of(u) for u in state.get("dependencies") or [])),
        inputs=state.get("inputs") or {},
    )


def preview_resources(preview: Mapping[str, Any]) -> dict[str, EngineResource]:
    """The custom and component resources of a `pulumi preview --json`, by name (the stack and
    the default providers are the engine's own)."""
    found = {}
    for step in preview.get("steps", []):
        resource = _resource(step.get("newState") or {})
        if resource is not None:
            found[resource.name] = resource
    return found


def state_resources(export: Mapping[str, Any]) -> dict[str, EngineResource]:
    """The resources of a `pulumi stack export`, by name."""
    found = {}
    for state in export.get("deployment", {}).get("resources") or []:
        resource = _resource(state)
        if resource is not None:
            found[resource.name] = resource
    return found


def _number(value: Any) -> Any:
    return (
        float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    )


def value_mismatches(planned: Any, deployed: Any, where: str = "") -> list[str]:
    """Where the plan's value is not the deployed one. The plan's placeholders for what only the
    deployment knows (a project number it was not given, an ID Google assigns) match any text."""
    if isinstance(planned, dict) and isinstance(deployed, dict):
        planned = {k: v for k, v in planned.items() if not k.startswith("__")}
        deployed = {k: v for k, v in deployed.items() if not k.startswith("__")}
        if sorted(planned) != sorted(deployed):
            return [f"{where}: keys {sorted(planned)} != {sorted(deployed)}"]
        return [
            m for k in planned for m in value_mismatches(planned[k], deployed[k], f"{where}.{k}")
        ]
    if isinstance(planned, list) and isinstance(deployed, list):
        if len(planned) != len(deployed):
            return [f"{where}: {len(planned)} items != {len(deployed)}"]
        return [
            m
            for i, (p, d) in enumerate(zip(planned, deployed, strict=True))
            for m in value_mismatches(p, d, f"{where}[{i}]")
        ]
    if isinstance(planned, str) and isinstance(deployed, str) and PLACEHOLDER.search(planned):
        pattern = "".join(
            ".+" if PLACEHOLDER.fullmatch(part) else re.escape(part)
            for part in PLACEHOLDER.split(planned)
        )
        return [] if re.fullmatch(pattern, deployed) else [f"{where}: {planned!r} != {deployed!r}"]
    if _number(planned) != _number(deployed):
        return [f"{where}: {planned!r} != {deployed!r}"]
    return []


# The offline plan's placeholders (dicom_bq.stack.plan: UNRESOLVED_NUMBER, UNKNOWN_UNTIL_CREATED).
PLACEHOLDER = re.compile(r"(PROJECT_NUMBER_OF_[a-z0-9-]+|\(known after creation\))")


def fakes_workspace(where: Path, monkeypatch: Any, **settings: Any) -> Workspace:
    """A workspace whose stack `fakes` names what the fast tier's fakes serve (tests/conftest.py),
    with the engine's variables set in this process: `dicom-bq up` runs `pulumi` with its own
    environment. `monkeypatch` is pytest's; `settings` override the stack's dicom-bq keys."""
    from tests.conftest import FILTER_BUCKET, base_settings

    workspace = Workspace.create(where)
    for key, value in engine_env().items():
        if key.startswith("PULUMI_") or key == "PATH":
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("PULUMI_BACKEND_URL", workspace.env["PULUMI_BACKEND_URL"])
    # The stand-in's project numbers agree with the stack's (the program checks them with Google).
    monkeypatch.setenv("DICOM_BQ_STANDIN_PROJECTS", json.dumps({"dicom-src-test": "111122223333"}))
    raw = base_settings(filterBucket=FILTER_BUCKET, iamPropagationWait="5s", **settings)
    config: dict[str, Any] = {"gcp:project": "dicom-src-test"}
    config.update({f"dicom-bq:{key}": value for key, value in raw.items()})
    workspace.write_stack("fakes", yaml.safe_dump({"config": config}))
    workspace.init("fakes")
    return workspace


def up_fakes(workspace: Workspace, *extra: str) -> Any:
    """`dicom-bq up --json` on the `fakes` stack of `fakes_workspace`, in this process (preflight
    skipped: its one-server fake and verify's fakes cannot share the emulator variables)."""
    from typer.testing import CliRunner

    from dicom_bq.cli import app

    arguments = ["up", "--stack", "fakes", "--yes", "--skip-preflight", "--json"]
    return CliRunner().invoke(app, [*arguments, "--project-dir", str(workspace.path), *extra])
