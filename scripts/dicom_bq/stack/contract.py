"""The stack's outputs: their names, written once by the program, read by every command.

The program exports `OutputNames` from the component's typed outputs (`stack_exports`); `plan`,
`verify`, `audit` and `review` read them back with `StackOutputs.parse`, so an output renamed here
is renamed everywhere, and a missing one is reported the same way everywhere. No Pulumi import:
the CLI reads saved outputs without the SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dicom_bq.errors import DicomBqError

DEFAULT_UNIVERSE = "googleapis.com"


class OutputNames:
    STORE = "dicomStoreName"
    DICOMWEB = "dicomwebUrl"
    AGENT = "agentEmail"
    SOURCE_PROJECT = "sourceProject"
    BIGQUERY_PROJECT = "bigqueryProject"
    BIGQUERY_DATASET = "bigqueryDataset"  # "PROJECT.DATASET"
    VERIFICATION_TABLE = "verificationTableUri"
    FILTER_BUCKET = "filterBucket"
    UNIVERSE = "universeDomain"
    GRANTS = "grants"  # [{role, member, scope, reason}]


ALL_OUTPUTS = tuple(value for key, value in vars(OutputNames).items() if not key.startswith("_"))


@dataclass(frozen=True)
class StackOutputs:
    """A stack's outputs, typed; `missing` says which were absent or empty."""

    store_name: str | None = None
    dicomweb_url: str | None = None
    agent_email: str | None = None
    source_project: str | None = None
    bigquery_project: str | None = None
    bigquery_dataset_id: str | None = None
    verification_table_uri: str | None = None
    filter_bucket: str | None = None
    universe_domain: str = DEFAULT_UNIVERSE
    grants: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, document: Mapping[str, Any]) -> StackOutputs:
        def text(name: str) -> str | None:
            value = document.get(name)
            if value is None or value == "":
                return None
            if not isinstance(value, str):
                raise DicomBqError(
                    f"the stack output {name} is {type(value).__name__}, not text: are these "
                    "the outputs of a dicom-bq stack?"
                )
            return value

        grants = document.get(OutputNames.GRANTS) or []
        if not isinstance(grants, list) or not all(
            isinstance(g, dict) and {"role", "member", "scope"} <= g.keys() for g in grants
        ):
            raise DicomBqError(
                f"the stack output {OutputNames.GRANTS} is not a list of grants (role, member, "
                "scope): are these the outputs of a dicom-bq stack?"
            )
        dataset = text(OutputNames.BIGQUERY_DATASET)
        return cls(
            store_name=text(OutputNames.STORE),
            dicomweb_url=text(OutputNames.DICOMWEB),
            agent_email=text(OutputNames.AGENT),
            source_project=text(OutputNames.SOURCE_PROJECT),
            bigquery_project=text(OutputNames.BIGQUERY_PROJECT),
            bigquery_dataset_id=dataset.rsplit(".", 1)[-1] if dataset else None,
            verification_table_uri=text(OutputNames.VERIFICATION_TABLE),
            filter_bucket=text(OutputNames.FILTER_BUCKET),
            universe_domain=text(OutputNames.UNIVERSE) or DEFAULT_UNIVERSE,
            grants=[{str(k): str(v) for k, v in g.items()} for g in grants],
        )

    def require(self, *names: str) -> None:
        """Raise, naming every missing output, when one of `names` is absent."""
        values = {
            OutputNames.STORE: self.store_name,
            OutputNames.AGENT: self.agent_email,
            OutputNames.SOURCE_PROJECT: self.source_project,
            OutputNames.BIGQUERY_PROJECT: self.bigquery_project,
            OutputNames.BIGQUERY_DATASET: self.bigquery_dataset_id,
            OutputNames.VERIFICATION_TABLE: self.verification_table_uri,
            OutputNames.GRANTS: self.grants,
        }
        missing = [name for name in names if not values.get(name)]
        if missing:
            raise DicomBqError(
                f"the stack outputs lack {', '.join(missing)}: is this a dicom-bq stack, and has "
                "`pulumi up` completed on it?"
            )
