"""Which deployment a read-only command looks at: a stack's outputs (through the Pulumi CLI) or
a saved copy of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dicom_bq.errors import DicomBqError


def stack_outputs_document(
    *, stack: str | None, outputs: Path | None, project_dir: Path | None
) -> dict[str, Any]:
    from dicom_bq.stack import outputs as stack_outputs

    if (stack is None) == (outputs is None):
        raise DicomBqError("say which stack with exactly one of --stack NAME or --outputs FILE")
    if outputs is not None:
        return stack_outputs.read_outputs_file(outputs)
    from dicom_bq.stack.config import find_project_dir

    assert stack is not None
    return stack_outputs.read_stack_outputs(stack, project_dir or find_project_dir())
