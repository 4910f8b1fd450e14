"""Which deployment a command acts on: one value, built once by the command line from the options
every such command spells the same way (--stack, --outputs, --project-dir, --store-id; verify's
--store, --table and --filter-bucket), checked here and read here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicom_bq.errors import DicomBqError

if TYPE_CHECKING:
    from dicom_bq.stack.config import StackConfig
    from dicom_bq.vocabulary.settings import StackSettings


@dataclass(frozen=True)
class Target:
    """A deployment as the user named it: a stack (its config, or its outputs through the Pulumi
    CLI, in `project_dir` or the nearest project folder above here) or a saved copy of its
    outputs, and optionally one of its stores (`store_id`); or, for verify, a store named
    directly (`store`, with `table` and `filter_bucket`). `table` is also verify's own table
    instead of the stack's.

    Built without a check, so that a command's other options are refused in its own order:
    the flow calls `check` (or a reader, which checks) where it first needs the deployment."""

    stack: str | None = None
    outputs: Path | None = None
    project_dir: Path | None = None
    store_id: str | None = None
    store: str | None = None
    table: str | None = None
    filter_bucket: str | None = None

    def check(self, purpose: str = "which stack", *, direct_store: bool = False) -> None:
        """The one place the ways of naming a deployment are refused: exactly one of --stack
        and --outputs (or, with `direct_store`, --store), and a named store's companions.
        `purpose` completes "say ... with exactly one of"."""
        named = [self.stack is not None, self.outputs is not None]
        if direct_store:
            named.append(self.store is not None)
        if sum(named) != 1:
            choices = (
                "--stack NAME, --outputs FILE or --store NAME (with --table)"
                if direct_store
                else "--stack NAME or --outputs FILE"
            )
            raise DicomBqError(f"say {purpose} with exactly one of {choices}")
        if self.store is None or not direct_store:
            return
        if self.store_id is not None:
            raise DicomBqError(
                "--store-id picks one of a stack's stores: use it with --stack or --outputs; "
                "--store already names the store"
            )
        if self.table is None:
            raise DicomBqError(
                "--store needs --table bq://PROJECT.DATASET.TABLE for the verification export"
            )
        from dicom_bq.vocabulary import identifiers

        problem = identifiers.check_bucket(self.filter_bucket) if self.filter_bucket else None
        if problem:
            raise DicomBqError(f"--filter-bucket {self.filter_bucket!r} is not valid: {problem}")

    def folder(self) -> Path:
        """The project folder: --project-dir, else the nearest one above the current folder."""
        from dicom_bq.stack.config import find_project_dir

        return self.project_dir or find_project_dir()

    def named_stack(self) -> str:
        """The stack of a command that needs one (its --stack is required)."""
        if self.stack is None:
            raise DicomBqError("say which stack with --stack NAME")
        return self.stack

    def config(self) -> StackConfig:
        """The stack's config, read as Pulumi merges it (offline)."""
        from dicom_bq.stack.config import read_stack_config

        return read_stack_config(self.folder(), self.named_stack())

    def settings(self) -> StackSettings:
        """The stack's validated settings."""
        from dicom_bq.stack.plan import stack_settings

        return stack_settings(self.config())[0]

    def outputs_document(self, purpose: str = "which stack") -> dict[str, Any]:
        """The deployment's outputs: the stack's, through the Pulumi CLI, or the saved copy."""
        from dicom_bq.stack import outputs as stack_outputs

        self.check(purpose)
        if self.outputs is not None:
            return stack_outputs.read_outputs_file(self.outputs)
        return stack_outputs.read_stack_outputs(self.named_stack(), self.folder())
