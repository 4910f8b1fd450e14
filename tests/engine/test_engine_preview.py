"""The offline plan lists exactly what the real engine's `pulumi preview` registers.

For every example stack and a generated set (one store, several stores, CMEK, streams, snapshot +
alerts), the engine runs the program against the stand-in providers; each resource's type, name,
parent, dependencies, protect, retain-on-delete and delete-before-replace must be what
`dicom-bq plan` shows. The engine decides: where they differ, the plan is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dicom_bq.stack.config import PROJECT_NAME, read_stack_config
from dicom_bq.stack.plan import Plan, plan_settings, plan_stack
from tests.engine.harness import ROOT, EngineResource, Workspace, preview_resources
from tests.stacks import generated_stacks, operations_stack, three_store_stack

pytestmark = pytest.mark.engine


def _generated() -> dict[str, dict[str, Any]]:
    chosen = dict(generated_stacks())
    # One store plain, CMEK on both sides with streams and a topic, cross-project without numbers.
    picked = {name: chosen[name] for name in ("gen0", "gen7", "gen14")}
    picked["three-stores"] = three_store_stack()
    picked["operations"] = operations_stack()
    return picked


GENERATED = _generated()


def _stack_yaml(raw: dict[str, Any]) -> str:
    config: dict[str, Any] = {"gcp:project": raw["sourceProject"]}
    config.update({f"{PROJECT_NAME}:{key}": value for key, value in raw.items()})
    return yaml.safe_dump({"config": config}, sort_keys=True)


def _planned(plan: Plan) -> dict[str, EngineResource]:
    return {
        r.name: EngineResource(
            type=r.type,
            name=r.name,
            parent=r.parent,
            protect=r.protect,
            retain_on_delete=r.retain_on_delete,
            delete_before_replace=r.delete_before_replace,
            depends_on=tuple(sorted(r.depends_on)),
        )
        for r in plan.resources
    }


def _assert_same(planned: dict[str, EngineResource], engine: dict[str, EngineResource]) -> None:
    assert sorted(planned) == sorted(engine), (
        f"only in the plan: {sorted(set(planned) - set(engine))}; "
        f"only in the engine's preview: {sorted(set(engine) - set(planned))}"
    )
    differences = [
        f"{name}:\n  plan   {planned[name]}\n  engine {engine[name]}"
        for name in sorted(planned)
        if planned[name] != engine[name]
    ]
    assert not differences, "\n".join(differences)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_example_stack_previews_as_planned(stack: str, tmp_path: Path) -> None:
    workspace = Workspace.create(tmp_path / "project")
    workspace.copy_stack(stack)
    workspace.init(stack)
    engine = preview_resources(workspace.preview(stack))
    planned = _planned(plan_stack(read_stack_config(ROOT, stack, use_cli=False)))
    _assert_same(planned, engine)


@pytest.mark.parametrize("stack", sorted(GENERATED))
def test_generated_stack_previews_as_planned(stack: str, tmp_path: Path) -> None:
    raw = GENERATED[stack]
    workspace = Workspace.create(tmp_path / "project")
    workspace.write_stack(stack, _stack_yaml(raw))
    workspace.init(stack)
    engine = preview_resources(workspace.preview(stack))
    _assert_same(_planned(plan_settings(stack, raw)), engine)
