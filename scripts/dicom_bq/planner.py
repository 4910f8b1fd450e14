"""An offline plan: the real Pulumi program run under a recording mock.

No credentials and no Pulumi CLI: the Python SDK's mock monitor stands in for the engine, and
records every registration (type, name, inputs, protect, dependencies) as the engine would see it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.config import set_all_config

from dicom_bq.errors import DicomBqError
from dicom_bq.stackfiles import PROJECT_NAME
from infra.program import define_stack, load_settings
from infra.settings import CONFIG_NAMESPACE, SettingsError, parse_settings

UNRESOLVED_NUMBER = "PROJECT_NUMBER_OF_{project}"


@dataclass
class PlannedResource:
    type: str
    name: str
    custom: bool
    parent: str | None
    protect: bool
    retain_on_delete: bool
    depends_on: list[str]
    inputs: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "name": self.name,
            "component": not self.custom,
            "parent": self.parent,
            "protect": self.protect,
            "retain_on_delete": self.retain_on_delete,
            "depends_on": self.depends_on,
            "inputs": self.inputs,
        }


@dataclass
class Plan:
    stack: str
    resources: list[PlannedResource]
    outputs: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def grants(self) -> list[dict[str, str]]:
        return list(self.outputs.get("grants") or [])

    def custom_resources(self) -> list[PlannedResource]:
        return [r for r in self.resources if r.custom]

    def as_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "resources": [r.as_dict() for r in self.resources],
            "grants": self.grants,
            "outputs": self.outputs,
            "notes": self.notes,
        }


# How the provider names what it creates, so that IDs flowing into other inputs read as in Google.
_ID_FORMATS = {
    "gcp:healthcare/dataset:Dataset": "projects/{project}/locations/{location}/datasets/{name}",
    "gcp:healthcare/dicomStore:DicomStore": "{dataset}/dicomStores/{name}",
    "gcp:bigquery/dataset:Dataset": "projects/{project}/datasets/{datasetId}",
    "gcp:projects/service:Service": "{project}/{service}",
}


class _RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.unresolved_projects: list[str] = []

    def new_resource(
        self, args: pulumi.runtime.MockResourceArgs
    ) -> tuple[str | None, dict[Any, Any]]:
        template = _ID_FORMATS.get(args.typ)
        try:
            resource_id = template.format(**args.inputs) if template else f"{args.name}-id"
        except KeyError:
            resource_id = f"{args.name}-id"
        return resource_id, dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[Any, Any]:  # type: ignore[override]
        if args.token == "gcp:organizations/getProject:getProject":  # noqa: S105
            project = str(args.args.get("projectId"))
            self.unresolved_projects.append(project)
            return {"projectId": project, "number": UNRESOLVED_NUMBER.format(project=project)}
        raise DicomBqError(f"the offline plan cannot answer the data source {args.token}")


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: _RecordingMocks) -> None:
        super().__init__(mocks)
        self.registrations: list[tuple[str, Any, dict[str, Any]]] = []

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - the gRPC method's name
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != "pulumi:pulumi:Stack":
            inputs = pulumi.runtime.rpc.deserialize_properties(request.object)
            self.registrations.append((response.urn, request, inputs))
        return response


def _config_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in sorted(value.items()) if not str(k).startswith("__")}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def plan_stack(stack: str, raw_config: dict[str, Any]) -> Plan:
    """Run the program for `stack` with `raw_config` (keys without namespace) and record it."""
    try:
        parse_settings(raw_config, stack)
    except SettingsError as error:
        raise DicomBqError(
            f"stack {stack!r} has settings that cannot be used:\n" + str(error)
        ) from None
    return record_program(stack, raw_config, lambda: define_stack(load_settings()).outputs)


def record_program(
    stack: str, raw_config: dict[str, Any], program: Callable[[], dict[str, Any]]
) -> Plan:
    """Run `program` (it registers resources, returns its outputs) under the recording mock."""
    mocks = _RecordingMocks()
    monitor = _RecordingMonitor(mocks)
    set_all_config(
        {f"{CONFIG_NAMESPACE}:{key}": _config_text(value) for key, value in raw_config.items()},
        [],
    )
    # Each plan gets its own root stack: several plans may run in one process.
    pulumi_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(
        mocks, project=PROJECT_NAME, stack=stack, preview=True, monitor=monitor
    )
    outputs: dict[str, Any] = {}

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def run() -> pulumi.Output[Any]:
        return pulumi.Output.all(**program()).apply(outputs.update)

    run()
    names = {urn: request.name for urn, request, _ in monitor.registrations}
    resources = [
        PlannedResource(
            type=request.type,
            name=request.name,
            custom=bool(request.custom),
            parent=names.get(request.parent),
            protect=bool(request.protect),
            retain_on_delete=bool(request.retainOnDelete),
            depends_on=sorted({names[urn] for urn in request.dependencies if urn in names}),
            inputs=_clean(inputs),
        )
        for _, request, inputs in monitor.registrations
    ]
    notes = [
        f"The number of project {project!r} is looked up at deploy time; set "
        f"dicom-bq:sourceProjectNumber to see the agent's real address here."
        for project in sorted(set(mocks.unresolved_projects))
    ]
    return Plan(stack=stack, resources=resources, outputs=_clean(outputs), notes=notes)
