"""Each example stack's plan contains its golden inventory (tests/inventories/<stack>.yaml)."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import cached_plan
from tests.inventory import REGENERATE, inventory, inventory_path, subset_differences


@pytest.mark.parametrize("stack", ["dev", "prod", "three-stores", "operations"])
def test_plan_matches_inventory(stack: str) -> None:
    expected = yaml.safe_load(inventory_path(stack).read_text(encoding="utf-8"))
    actual = inventory(cached_plan(stack))
    problems = subset_differences(expected, actual)
    # Counts are exact: a new resource type or an extra grant must show up in review.
    if expected["counts"] != actual["counts"]:
        problems.append(f"counts: expected {expected['counts']}, got {actual['counts']}")
    assert not problems, (
        f"stack {stack} no longer matches its inventory:\n  "
        + "\n  ".join(problems)
        + f"\nIf intended, run `{REGENERATE.format(stacks=stack)}` and review the diff."
    )


def test_subset_comparison_reports_missing_and_changed_values() -> None:
    expected = {"a": {"b": 1, "c": [1, 2]}, "d": "x"}
    actual = {"a": {"b": 2, "c": [1, 2], "extra": True}}
    assert subset_differences(expected, actual) == [
        "a.b: expected 1, got 2",
        "d: missing (expected 'x')",
    ]
