"""The offline plan against the real engine, stack by stack: preview, up, and nothing left to do.

For every example stack and a generated set (one store, several stores, CMEK, streams, snapshot +
alerts), the engine runs the program against the stand-in providers:
- `pulumi preview` registers exactly the resources `dicom-bq plan` lists, each with the same type,
  name, parent, protect and retain-on-delete;
- after `pulumi up`, each resource depends on what the plan says and holds the inputs the plan
  shows (where the plan shows a placeholder, such as a project number it was not given, any value);
- `pulumi preview --expect-no-changes` then passes: the program registers the same thing each run.
The engine decides: where they differ, the plan is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from dicom_bq.stack.config import PROJECT_NAME, read_stack_config
from dicom_bq.stack.plan import Plan, plan_settings, plan_stack
from tests.engine.harness import (
    ROOT,
    EngineResource,
    Workspace,
    preview_resources,
    state_resources,
    value_mismatches,
)
from tests.stacks import generated_stacks, operations_stack, three_store_stack

pytestmark = pytest.mark.engine


def _generated() -> dict[str, dict[str, Any]]:
    chosen = dict(generated_stacks())
    # gen0: one plain store; gen7: CMEK on both sides, a stream and a topic; gen14: cross-project
    # without the numbers, five streams.
    picked = {name: chosen[name] for name in ("gen0", "gen7", "gen14")}
    picked["three-stores"] = three_store_stack()
    # Another universe: the program's own gcp provider, which the plan lists too.
    picked["sovereign"] = {**chosen["gen0"], "universeDomain": "s3nsapis.fr"}
    picked["operations"] = operations_stack()
    return picked


GENERATED = _generated()
STACKS = ["dev", "prod", *sorted(GENERATED)]


def _stack_yaml(raw: dict[str, Any]) -> str:
    config: dict[str, Any] = {"gcp:project": raw["sourceProject"]}
    config.update({f"{PROJECT_NAME}:{key}": value for key, value in raw.items()})
    return yaml.safe_dump({"config": config}, sort_keys=True)


def _plan(stack: str) -> Plan:
    if stack in GENERATED:
        return plan_settings(stack, GENERATED[stack])
    return plan_stack(read_stack_config(ROOT, stack, use_cli=False))


def _planned(plan: Plan) -> dict[str, EngineResource]:
    return {
        r.name: EngineResource(
            type=r.type,
            name=r.name,
            parent=r.parent,
            protect=r.protect,
            retain_on_delete=r.retain_on_delete,
            depends_on=tuple(sorted(r.depends_on)),
            inputs=r.inputs,
        )
        for r in plan.resources
    }


@pytest.mark.parametrize("stack", STACKS)
def test_plan_is_what_the_engine_deploys(stack: str, tmp_path: Path) -> None:
    workspace = Workspace.create(tmp_path / "project")
    if stack in GENERATED:
        workspace.write_stack(stack, _stack_yaml(GENERATED[stack]))
    else:
        workspace.copy_stack(stack)
    workspace.init(stack)
    planned = _planned(_plan(stack))

    previewed = preview_resources(workspace.preview(stack))
    assert sorted(planned) == sorted(previewed), (
        f"only in the plan: {sorted(set(planned) - set(previewed))}; "
        f"only in the engine's preview: {sorted(set(previewed) - set(planned))}"
    )
    registrations = [
        f"{name}: plan {planned[name].registration()} != engine {previewed[name].registration()}"
        for name in sorted(planned)
        if planned[name].registration() != previewed[name].registration()
    ]
    assert not registrations, "\n".join(registrations)

    workspace.pulumi("up", "--yes", "--skip-preview", stack=stack)
    deployed = state_resources(json.loads(workspace.pulumi("stack", "export", stack=stack).stdout))
    assert sorted(deployed) == sorted(planned)
    differences = [
        f"{name}: depends on {planned[name].depends_on} in the plan, "
        f"{deployed[name].depends_on} deployed"
        for name in sorted(planned)
        if planned[name].depends_on != deployed[name].depends_on
    ]
    for name in sorted(planned):
        if planned[name].type.startswith(("dicom-bq:", "pulumi:providers:")):
            # Components have no inputs of their own in the state; a provider's hold the
            # engine's "version" besides the program's.
            continue
        differences += value_mismatches(planned[name].inputs, deployed[name].inputs, name)
    assert not differences, "\n".join(differences)

    workspace.pulumi("preview", "--expect-no-changes", stack=stack)
