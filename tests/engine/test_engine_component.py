"""The component package as another team loads it: through the real engine, from a YAML program.

`pulumi package add scripts/dicom_bq/provider` runs the component provider (PulumiPlugin.yaml,
Python) and generates an SDK from the schema it serves; a Pulumi YAML program naming the package
in `packages:` then previews the whole export path. Its last step, linking the package into a YAML
project, needs a Pulumi YAML host newer than the proxy serves (v1.25.0 has no `Link`, which engine
v3.274.0 calls), so the test writes the `packages:` entry that step would write.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.engine.harness import ROOT, Workspace

pytestmark = pytest.mark.engine

PROVIDER = ROOT / "scripts" / "dicom_bq" / "provider"


def _provider_copy(where: Path) -> Path:
    """The provider folder where its PulumiPlugin.yaml finds the venv (../../../.venv): the engine
    writes schema-dicom-bq.json beside a local package's folder, which must not land in the
    source tree."""
    copy = where / "scripts" / "dicom_bq" / "provider"
    shutil.copytree(PROVIDER, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (where / ".venv").symlink_to(ROOT / ".venv")
    return copy


def test_a_yaml_program_previews_the_component(tmp_path: Path) -> None:
    provider = _provider_copy(tmp_path / "package")
    workspace = Workspace.create(
        tmp_path / "project",
        extra_env={"DICOM_BQ_STANDIN_PROJECTS": json.dumps({"yaml-team": "222233334444"})},
    )
    schema = json.loads(workspace.pulumi("package", "get-schema", str(provider)).stdout)
    component = schema["resources"]["dicom-bq:index:DicomExportPath"]
    assert component["isComponent"] is True
    assert set(component["requiredInputs"]) == {
        "sourceProject",
        "location",
        "healthcareDatasetId",
        "bigqueryDatasetId",
    }
    (workspace.path / "Pulumi.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "dicom-bq-yaml-consumer",
                "runtime": "yaml",
                "packages": {"dicom-bq": str(provider)},
                "resources": {
                    "path": {
                        "type": "dicom-bq:index:DicomExportPath",
                        "properties": {
                            "sourceProject": "yaml-team",
                            "sourceProjectNumber": "222233334444",
                            "location": "us-central1",
                            "healthcareDatasetId": "imaging",
                            "dicomStoreId": "dicom",
                            "bigqueryDatasetId": "dicom_metadata",
                        },
                    }
                },
                "outputs": {"store": "${path.storeName}", "grants": "${path.grants}"},
            }
        )
    )
    added = workspace.pulumi("package", "add", str(provider), check=False)
    assert "Successfully generated an SDK for the dicom-bq package" in added.stdout + added.stderr

    workspace.init("dev")
    steps = workspace.preview("dev")["steps"]
    created = {step["newState"]["type"] for step in steps}
    assert {
        "dicom-bq:index:DicomExportPath",
        "gcp:healthcare/dicomStore:DicomStore",
        "gcp:bigquery/datasetIamMember:DatasetIamMember",
        "time:index/sleep:Sleep",
    } <= created
    workspace.pulumi("up", "--yes", "--skip-preview", stack="dev")
    outputs = json.loads(workspace.pulumi("stack", "output", "--json", stack="dev").stdout)
    assert outputs["store"] == (
        "projects/yaml-team/locations/us-central1/datasets/imaging/dicomStores/dicom"
    )
    assert {g["member"] for g in outputs["grants"]} == {
        "serviceAccount:service-222233334444@gcp-sa-healthcare.iam.gserviceaccount.com"
    }
