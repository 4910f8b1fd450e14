"""DicomExportPath is composed of parts (components/path_parts.py); its outputs part publishes
exactly the outputs the class declares for the component schema, with the same types."""

from __future__ import annotations

from typing import Any

import pulumi

from dicom_bq.infra.components.export_path import DicomExportPath, PathOutputs
from dicom_bq.stack.plan import record_program


def test_the_outputs_part_declares_the_components_outputs() -> None:
    """Pulumi's analyzer reads DicomExportPath's annotations; the constructor sets them from
    PathOutputs' fields: one list of names and types, or a declared output never set."""
    assert PathOutputs.__annotations__ == DicomExportPath.__annotations__


def test_every_declared_output_is_set_and_registered() -> None:
    seen: dict[str, Any] = {}

    def program() -> dict[str, Any]:
        path = DicomExportPath(
            "dicom",
            {
                "source_project": "team-project-1",
                "location": "us-central1",
                "healthcare_dataset_id": "imaging",
                "dicom_store_id": "studies",
                "bigquery_dataset_id": "dicom",
            },
        )
        seen.update({key: getattr(path, key) for key in DicomExportPath.__annotations__})
        return {}

    record_program("parts", {}, program)
    assert set(seen) == set(DicomExportPath.__annotations__)
    assert all(isinstance(value, pulumi.Output) for value in seen.values())
