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


@dataclass(frozen=True)
class EngineResource:
    """A resource as the engine's preview registers it, in the offline plan's terms."""

    type: str
    name: str
    parent: str | None
    protect: bool
    retain_on_delete: bool
    delete_before_replace: bool
    depends_on: tuple[str, ...]


def _name_of(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def preview_resources(preview: Mapping[str, Any]) -> dict[str, EngineResource]:
    """The custom and component resources of a `pulumi preview --json`, by name (the stack and
    the provider resources are the engine's own)."""
    found = {}
    for step in preview.get("steps", []):
        state = step.get("newState") or {}
        kind = state.get("type", "")
        if kind == "pulumi:pulumi:Stack" or kind.startswith("pulumi:providers:"):
            continue
        parent = state.get("parent") or ""
        parent_type = parent.split("::")[-2] if parent.count("::") >= 3 else ""
        found[_name_of(state["urn"])] = EngineResource(
            type=kind,
            name=_name_of(state["urn"]),
            parent=None if parent_type.endswith("pulumi:pulumi:Stack") else _name_of(parent),
            protect=bool(state.get("protect")),
            retain_on_delete=bool(state.get("retainOnDelete")),
            delete_before_replace=bool(state.get("deleteBeforeReplace")),
            depends_on=tuple(sorted(_name_of(u) for u in state.get("dependencies") or [])),
        )
    return found
