"""pytest plugin of scripts/mutation (tests/mutation_run.py): a mutant's tests run fastest first,
by the durations mutmut measured on the clean run, so the first failure, which ends the run (-x),
comes as early as it can. Loaded with `-p tests.mutation_plugin` in the work directory only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    stats = Path("mutmut-stats.json")  # mutmut runs the tests in its mutants/ directory
    if not stats.exists():
        return
    durations: dict[str, float] = json.loads(stats.read_text(encoding="utf-8"))["duration_by_test"]
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))
