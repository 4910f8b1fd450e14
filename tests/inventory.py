"""Plan inventories: what each example stack creates, as golden YAML compared by subset.

Regenerate after an intended change with:  python -m tests.inventory dev prod three-stores operations
(three-stores, operations: generated stacks, tests/stacks.py INVENTORIED), then review the diff of tests/inventories/*.yaml like any other code change: it is the IAM review.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from dicom_bq.stack.config import read_stack_config
from dicom_bq.stack.plan import Plan, plan_settings, plan_stack

ROOT = Path(__file__).resolve().parent.parent
INVENTORIES = ROOT / "tests" / "inventories"
REGENERATE = "python -m tests.inventory {stacks}"


def plan_example(stack: str) -> Plan:
    """An example stack's plan (Pulumi.<stack>.yaml), or a generated one's (tests/stacks.py)."""
    from tests.stacks import INVENTORIED

    if stack in INVENTORIED:
        return plan_settings(stack, INVENTORIED[stack]())
    return plan_stack(read_stack_config(ROOT, stack, use_cli=False))


def inventory(plan: Plan) -> dict[str, Any]:
    resources = plan.custom_resources()
    return {
        "counts": dict(sorted(Counter(r.type for r in resources).items())),
        "resources": {
            r.name: {
                "type": r.type,
                "protect": r.protect,
                "retain_on_delete": r.retain_on_delete,
                "depends_on": r.depends_on,
                "delete_before_replace": r.delete_before_replace,
                "inputs": r.inputs,
            }
            # Registration order varies between runs; names do not.
            for r in sorted(resources, key=lambda resource: resource.name)
        },
        "invokes": sorted(
            ({"token": i.token, "args": i.args} for i in plan.invokes), key=lambda i: str(i)
        ),
        "grants": plan.grants,
        "outputs": {key: value for key, value in plan.outputs.items() if key != "grants"},
    }


def subset_differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where `expected` is not contained in `actual`: maps by key, everything else by equality."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path or '.'}: expected a map, got {actual!r}"]
        problems = []
        for key, value in expected.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in actual:
                problems.append(f"{where}: missing (expected {value!r})")
            else:
                problems.extend(subset_differences(value, actual[key], where))
        return problems
    if expected != actual:
        return [f"{path}: expected {expected!r}, got {actual!r}"]
    return []


def inventory_path(stack: str) -> Path:
    return INVENTORIES / f"{stack}.yaml"


def write(stack: str) -> Path:
    path = inventory_path(stack)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Plan inventory of stack {stack}. Regenerate: {REGENERATE.format(stacks=stack)}\n"
    body = yaml.safe_dump(inventory(plan_example(stack)), sort_keys=False, width=100)
    path.write_text(header + body, encoding="utf-8")
    return path


if __name__ == "__main__":
    from tests.stacks import INVENTORIED

    for name in sys.argv[1:] or ["dev", "prod", *INVENTORIED]:
        print(f"wrote {write(name).relative_to(ROOT)}")
