"""Two stacks sharing a BigQuery project, bucket and topic under the real engine: `pulumi destroy`
of one leaves every grant the other needs; and a wrong sourceProjectNumber is refused before any
grant.

The stand-in gcp provider records IAM bindings in a simulated cloud (DICOM_BQ_STANDIN_CLOUD) and
removes them when an IAM member resource is deleted, as Google's additive members do: one binding
per (scope, role, member), whoever added it. The engine decides what is deleted: a resource kept
on delete (retainOnDelete) is dropped from the state without the provider's Delete
(https://www.pulumi.com/docs/iac/concepts/options/retainondelete/).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dicom_bq.vocabulary.contract import OutputNames
from tests.engine.harness import Workspace
from tests.engine.standins.common import read_bindings

pytestmark = pytest.mark.engine

SOURCE, ANALYTICS = "imaging-nonprod", "analytics-nonprod"
NUMBERS = {SOURCE: "333344445555", ANALYTICS: "666677778888"}
AGENT = f"serviceAccount:service-{NUMBERS[SOURCE]}@gcp-sa-healthcare.iam.gserviceaccount.com"


def _stack(env: str, number: str = NUMBERS[SOURCE]) -> dict[str, object]:
    return {
        "gcp:project": SOURCE,
        "dicom-bq:sourceProject": SOURCE,
        "dicom-bq:sourceProjectNumber": number,
        "dicom-bq:destinationProject": ANALYTICS,
        "dicom-bq:destinationProjectNumber": NUMBERS[ANALYTICS],
        "dicom-bq:location": "us-central1",
        "dicom-bq:healthcareDatasetId": f"imaging-{env}",
        "dicom-bq:dicomStoreId": "dicom",
        "dicom-bq:bigqueryDatasetId": f"dicom_{env}",
        "dicom-bq:filterBucket": f"{SOURCE}-filters",
        "dicom-bq:notificationTopic": f"projects/{SOURCE}/topics/dicom-instances",
        "dicom-bq:iamPropagationWait": "1s",
    }


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace.create(
        tmp_path / "project",
        extra_env={
            "DICOM_BQ_STANDIN_CLOUD": str(tmp_path / "cloud.json"),
            "DICOM_BQ_STANDIN_PROJECTS": json.dumps(NUMBERS),
        },
    )


def _bindings(workspace: Workspace) -> set[tuple[str, str, str]]:
    return {tuple(b) for b in read_bindings(workspace.env["DICOM_BQ_STANDIN_CLOUD"])}  # type: ignore[misc]


def _grants(workspace: Workspace, stack: str) -> set[tuple[str, str, str]]:
    done = workspace.pulumi("stack", "output", "--json", stack=stack)
    return {
        (g["scope"], g["role"], g["member"]) for g in json.loads(done.stdout)[OutputNames.GRANTS]
    }


def test_destroying_one_stack_leaves_the_other_stacks_grants(workspace: Workspace) -> None:
    for env in ("dev", "staging"):
        workspace.write_stack(env, _stack(env))
        workspace.init(env)
        workspace.pulumi("up", "--yes", "--skip-preview", stack=env)
    staging = _grants(workspace, "staging")
    dev = _grants(workspace, "dev")
    shared = dev & staging
    assert {role for _, role, _ in shared} == {
        "roles/bigquery.jobUser",
        "roles/storage.objectViewer",
        "roles/pubsub.publisher",
    }
    assert {member for _, _, member in shared} == {AGENT}
    assert staging | dev <= _bindings(workspace)

    workspace.pulumi("destroy", "--yes", "--skip-preview", stack="dev")

    left = _bindings(workspace)
    assert staging - left == set()
    # What dev alone granted on what it created went with it; what it kept is the shared part.
    assert (dev - staging) & left == set()


def test_a_wrong_source_project_number_is_refused_before_any_grant(workspace: Workspace) -> None:
    workspace.write_stack("wrong", _stack("wrong", number="111111111111"))
    workspace.init("wrong")
    preview = workspace.pulumi("preview", stack="wrong", check=False)
    assert preview.returncode != 0
    said = preview.stdout + preview.stderr
    assert "111111111111 is not the number of project imaging-nonprod" in said
    assert f"its number is {NUMBERS[SOURCE]}" in said
    assert "Traceback" not in said
    up = workspace.pulumi("up", "--yes", "--skip-preview", stack="wrong", check=False)
    assert up.returncode != 0
    assert "111111111111 is not the number of project imaging-nonprod" in up.stdout + up.stderr
    assert _bindings(workspace) == set()
    state = json.loads(workspace.pulumi("stack", "export", stack="wrong").stdout)
    types = {r["type"] for r in state["deployment"].get("resources") or []}
    assert not [t for t in types if t.endswith(("IAMMember", "IamMember"))]
