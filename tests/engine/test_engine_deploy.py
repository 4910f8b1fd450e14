"""`pulumi up` on the example stacks with the real engine, then nothing left to change.

The stand-in providers answer as pulumi-gcp does (ids, computed fields, replacements); the engine
decides ordering, outputs and whether a second preview sees changes. A program that registers
something different from run to run (an input computed from time, an unordered list) fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dicom_bq.stack.contract import OutputNames
from tests.engine.harness import Workspace

pytestmark = pytest.mark.engine


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_up_then_preview_expects_no_changes(stack: str, tmp_path: Path) -> None:
    workspace = Workspace.create(tmp_path / "project")
    workspace.copy_stack(stack)
    workspace.init(stack)
    workspace.pulumi("up", "--yes", "--skip-preview", stack=stack)
    workspace.pulumi("preview", "--expect-no-changes", stack=stack)
    outputs = json.loads(workspace.pulumi("stack", "output", "--json", stack=stack).stdout)
    # The agent's address comes from the engine's ServiceIdentity, with the project's number.
    number = {"dev": "123456789012", "prod": "987654321098"}[stack]
    grants = outputs[OutputNames.GRANTS]
    assert grants, outputs
    assert {g["member"] for g in grants if "gcp-sa-healthcare" in g["member"]} == {
        f"serviceAccount:service-{number}@gcp-sa-healthcare.iam.gserviceaccount.com"
    }
