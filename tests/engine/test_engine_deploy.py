"""Replacements as the real engine runs them: IAM members go delete-before-replace.

A create-before-delete replacement of an additive IAM member removes the binding its replacement
shares (pulumi-gcp #442, #2463), so the program asks for delete-before-replace on every grant. The
engine does not keep that option in its state or preview; the order of a real replacement's steps
(`pulumi up --json` events) shows it. Renaming the BigQuery dataset replaces the dataset, its
IAM member and the wait that covers the member.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dicom_bq.stack.config import read_stack_config
from dicom_bq.stack.plan import plan_stack
from dicom_bq.vocabulary.contract import OutputNames
from tests.engine.harness import ROOT, Workspace

pytestmark = pytest.mark.engine


def _step_order(events: str) -> dict[str, list[str]]:
    """resource name -> the replacement ops the engine started for it, in order."""
    order: dict[str, list[str]] = {}
    for line in events.splitlines():
        event = json.loads(line).get("resourcePreEvent")
        if event and event["metadata"]["op"] in ("create-replacement", "delete-replaced"):
            name = event["metadata"]["urn"].rsplit("::", 1)[-1]
            order.setdefault(name, []).append(event["metadata"]["op"])
    return order


def test_replacements_follow_the_plans_delete_before_replace(tmp_path: Path) -> None:
    workspace = Workspace.create(tmp_path / "project")
    workspace.copy_stack("dev")
    workspace.init("dev")
    workspace.pulumi("up", "--yes", "--skip-preview", stack="dev")
    outputs = json.loads(workspace.pulumi("stack", "output", "--json", stack="dev").stdout)
    assert {g["member"] for g in outputs[OutputNames.GRANTS]} == {
        "serviceAccount:service-123456789012@gcp-sa-healthcare.iam.gserviceaccount.com"
    }

    workspace.pulumi(
        "config", "set", "dicom-bq:bigqueryDatasetId", "dicom_metadata_v2", stack="dev"
    )
    done = workspace.pulumi("up", "--yes", "--skip-preview", "--json", stack="dev")
    order = _step_order(done.stdout)
    plan = {r.name: r for r in plan_stack(read_stack_config(ROOT, "dev", use_cli=False)).resources}
    member = "dicom-bq-agent-bigquery-data-editor-dataset"
    assert plan[member].delete_before_replace
    assert {member, "dicom-bq-bigquery-dataset", "dicom-bq-agent-iam-propagation"} <= set(order)
    for name, ops in order.items():
        expected = ["create-replacement", "delete-replaced"]
        if plan[name].delete_before_replace:
            expected.reverse()
        assert ops == expected, f"{name}: {ops}"
