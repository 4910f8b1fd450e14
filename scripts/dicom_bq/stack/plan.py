"""An offline plan: the real Pulumi program run under a recording mock.

No credentials and no Pulumi CLI: the Python SDK's mock monitor stands in for the engine, and
records every registration (type, name, inputs, protect, dependencies) as the engine would see it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.config import set_all_config

from dicom_bq.errors import DicomBqError
from dicom_bq.infra.program import (
    GcpProviderChoice,
    define_stack,
    load_settings,
    provider_choice,
    universe_problem,
)
from dicom_bq.stack.config import PROJECT_NAME, StackConfig
from dicom_bq.vocabulary import naming
from dicom_bq.vocabulary.contract import OutputNames
from dicom_bq.vocabulary.settings import SettingsError, StackSettings, settings_from_config

UNRESOLVED_NUMBER = "PROJECT_NUMBER_OF_{project}"


def _close_event_loop() -> None:
    """Pulumi's mocks run the program on an asyncio loop they create and never close
    (pulumi/runtime/sync_await.py, _ensure_event_loop); left to the garbage collector at
    interpreter exit, its __del__ may run after the selector's descriptor is gone and print
    "Exception ignored in BaseEventLoop.__del__ ... Invalid file descriptor". Close it first."""
    with contextlib.suppress(Exception):
        loop = asyncio.get_event_loop_policy().get_event_loop()
        if not loop.is_running() and not loop.is_closed():
            loop.close()


atexit.register(_close_event_loop)


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
    delete_before_replace: bool = False
    aliases: list[str] = field(default_factory=list)
    urn: str = ""
    # The explicit provider it goes through (its name); None: the engine's default provider.
    provider: str | None = None

    def as_dict(self) -> dict[str, Any]:
        shown = {"provider": self.provider} if self.provider else {}
        return shown | {
            "type": self.type,
            "name": self.name,
            "component": not self.custom,
            "parent": self.parent,
            "protect": self.protect,
            "retain_on_delete": self.retain_on_delete,
            "depends_on": self.depends_on,
            "delete_before_replace": self.delete_before_replace,
            "aliases": self.aliases,
            "inputs": self.inputs,
        }


@dataclass(frozen=True)
class PlannedInvoke:
    """A data source the program called (`pulumi up` calls it for real, before what uses it)."""

    token: str
    args: dict[str, Any]
    result: dict[str, Any]


@dataclass
class Plan:
    stack: str
    resources: list[PlannedResource]
    outputs: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    invokes: list[PlannedInvoke] = field(default_factory=list)
    # Project ID -> number, as the deployment will know them (settings, or a placeholder).
    project_numbers: dict[str, str] = field(default_factory=dict)
    settings: StackSettings | None = None
    # The universe the deployment goes to, and through which gcp provider.
    gcp_provider: GcpProviderChoice | None = None

    @property
    def grants(self) -> list[dict[str, str]]:
        return list(self.outputs.get(OutputNames.GRANTS) or [])

    def custom_resources(self) -> list[PlannedResource]:
        return [r for r in self.resources if r.custom]

    def as_dict(self) -> dict[str, Any]:
        universe = {"universe": self.gcp_provider.as_dict()} if self.gcp_provider else {}
        return {
            "stack": self.stack,
            **universe,
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


GET_PROJECT = "gcp:organizations/getProject:getProject"
GET_BIGQUERY_ACCOUNT = "gcp:bigquery/getDefaultServiceAccount:getDefaultServiceAccount"


class _RecordingMocks(pulumi.runtime.Mocks):
    def __init__(
        self,
        known_numbers: dict[str, str] | None = None,
        universe_domain: str = naming.DEFAULT_UNIVERSE,
        agent_iam_domain: str | None = None,
    ) -> None:
        self.known_numbers = dict(known_numbers or {})
        self.universe_domain = universe_domain
        self.agent_iam_domain = agent_iam_domain
        self.unresolved_projects: list[str] = []
        self.invokes: list[PlannedInvoke] = []

    def number(self, project: str) -> str:
        if project not in self.known_numbers:
            self.unresolved_projects.append(project)
            return UNRESOLVED_NUMBER.format(project=project)
        return self.known_numbers[project]

    def new_resource(
        self, args: pulumi.runtime.MockResourceArgs
    ) -> tuple[str | None, dict[Any, Any]]:
        template = _ID_FORMATS.get(args.typ)
        try:
            resource_id = template.format(**args.inputs) if template else f"{args.name}-id"
        except KeyError:
            resource_id = f"{args.name}-id"
        outputs = dict(args.inputs)
        if args.typ == "gcp:organizations/project:Project":
            # Google assigns a new project's number; a program may pass it on as an Output.
            outputs["number"] = self.number(str(args.inputs.get("projectId")))
        if args.typ == "gcp:projects/serviceIdentity:ServiceIdentity":
            # The agent's address as services.generateServiceIdentity answers it:
            # service-NUMBER@gcp-sa-SERVICE.<agent domain>
            # (https://cloud.google.com/iam/docs/service-agents); the provider sets email and
            # member = "serviceAccount:" + email (pulumi_gcp projects/service_identity.py).
            email = self.service_agent_email(
                str(args.inputs.get("service")), self.number(str(args.inputs.get("project")))
            )
            outputs.setdefault("email", email)
            outputs.setdefault("member", f"serviceAccount:{email}")
        if args.typ == "gcp:serviceaccount/account:Account":
            # The provider's computed email and member: ACCOUNT_ID@PROJECT.iam.gserviceaccount.com
            # in googleapis.com (https://cloud.google.com/iam/docs/service-account-overview);
            # elsewhere no documented form, so unknown, as `pulumi preview` shows it. Left out, a
            # grant to the account would blank the whole grants output of the plan.
            email = UNKNOWN_UNTIL_CREATED
            if self.universe_domain == naming.DEFAULT_UNIVERSE:
                email = naming.service_account_email(
                    str(args.inputs.get("accountId")), str(args.inputs.get("project"))
                )
            outputs.setdefault("email", email)
            outputs.setdefault("member", f"serviceAccount:{email}")
        return resource_id, outputs

    def service_agent_email(self, service: str, number: str) -> str:
        try:
            healthcare = naming.agent_email(number, self.universe_domain, self.agent_iam_domain)
        except KeyError:  # a universe whose agent domain neither dicom-bq nor the stack names
            return UNKNOWN_UNTIL_CREATED
        domain = healthcare.split("@gcp-sa-healthcare.", 1)[1]
        return f"service-{number}@gcp-sa-{service.split('.', 1)[0]}.{domain}"

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[Any, Any]:  # type: ignore[override]
        result = self._answer(args.token, dict(args.args))
        self.invokes.append(PlannedInvoke(args.token, _clean(dict(args.args)), result))
        return result

    def _answer(self, token: str, call_args: dict[str, Any]) -> dict[str, Any]:
        if token == GET_PROJECT:
            project = str(call_args.get("projectId"))
            return {"projectId": project, "number": self.number(project)}
        if token == GET_BIGQUERY_ACCOUNT:
            # BigQuery's projects.getServiceAccount answers bq-NUMBER@bigquery-encryption...
            # (https://cloud.google.com/bigquery/docs/reference/rest/v2/projects/getServiceAccount)
            project = str(call_args.get("project"))
            # Outside googleapis.com the address has no documented form: shown as unknown, as
            # `pulumi preview` shows what is known only once deployed (naming.py says why).
            member = UNKNOWN_UNTIL_CREATED
            if self.universe_domain == naming.DEFAULT_UNIVERSE:
                member = naming.bigquery_encryption_member(self.number(project)) or member
            email = member.removeprefix("serviceAccount:")
            return {"email": email, "member": member, "project": project, "id": email}
        raise DicomBqError(f"the offline plan cannot answer the data source {token}")


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


def _alias_text(alias: Any) -> str:
    """An alias as the engine receives it: a whole URN, or a spec (name, parent...)."""
    if isinstance(alias, str):
        return alias
    if alias.WhichOneof("alias") == "urn":
        return str(alias.urn)
    spec = alias.spec
    return f"name={spec.name}" + (f" parentUrn={spec.parentUrn}" if spec.parentUrn else "")


def _is_provider(request: Any) -> bool:
    return str(request.type).startswith("pulumi:providers:")


def _config_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


# What an input shows when it is another resource's output that Google assigns at creation (a
# notification channel's projects/P/notificationChannels/ID), as `pulumi preview` shows it.
UNKNOWN_UNTIL_CREATED = "(known after creation)"


def _clean(value: Any) -> Any:
    if isinstance(value, pulumi.output.Unknown):
        return UNKNOWN_UNTIL_CREATED
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in sorted(value.items()) if not str(k).startswith("__")}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def known_project_numbers(settings: StackSettings) -> dict[str, str]:
    numbers = {}
    if settings.source_project_number:
        numbers[settings.source_project] = settings.source_project_number
    if settings.bigquery_project_number:
        numbers[settings.bigquery_project] = settings.bigquery_project_number
    return numbers


def stack_settings(config: StackConfig) -> tuple[StackSettings, list[str]]:
    """A stack's validated settings and warnings, or the error every command shows (the program
    refuses the same, infra/program.py load_settings)."""
    try:
        settings, warnings = settings_from_config(config.values, config.stack)
        problem = universe_problem(settings, config.values, config.stack)
        if problem:
            raise SettingsError([problem])
        return settings, warnings
    except SettingsError as error:
        unresolved = "".join(f"\nNote: {note}" for note in config.notes)
        raise DicomBqError(
            f"stack {config.stack!r} has settings that cannot be used:\n{error}{unresolved}"
        ) from None


def plan_stack(config: StackConfig) -> Plan:
    """Run the program on a stack's merged config and record what it registers."""
    settings, warnings = stack_settings(config)
    plan = record_program(
        config.stack,
        config.values,
        lambda: define_stack(load_settings()),
        known_numbers=known_project_numbers(settings),
        universe_domain=settings.universe_domain,
        agent_iam_domain=settings.agent_iam_domain,
    )
    plan.notes[:0] = [*config.notes, *warnings, *unverified_number_notes(settings)]
    plan.settings = settings
    plan.gcp_provider = provider_choice(settings)
    return plan


def unverified_number_notes(settings: StackSettings) -> list[str]:
    """A configured project number is the stack file's word: the plan shows addresses made from
    it, and only Google can say it is the project's."""
    notes = []
    if settings.source_project_number:
        notes.append(
            f"dicom-bq:sourceProjectNumber {settings.source_project_number} is unverified here: "
            f"the plan's addresses take it as the number of project {settings.source_project}; "
            "`dicom-bq preflight` and the program check it against Resource Manager, and "
            "`pulumi up` refuses a mismatch before any grant."
        )
    if settings.destination_project_number:
        notes.append(
            f"dicom-bq:destinationProjectNumber {settings.destination_project_number} is "
            f"unverified here: the plan's addresses take it as the number of project "
            f"{settings.bigquery_project}; `dicom-bq preflight` checks it against "
            "Resource Manager (the program takes BigQuery's encryption account from Google)."
        )
    return notes


def plan_settings(stack: str, raw: dict[str, Any]) -> Plan:
    """Plan from `dicom-bq:` values given without namespace (tests, generated stacks)."""
    return plan_stack(
        StackConfig(stack=stack, values={f"{PROJECT_NAME}:{k}": v for k, v in raw.items()})
    )


_Registration = tuple[str, Any, dict[str, Any]]


def _dependencies_first(registrations: list[_Registration]) -> list[_Registration]:
    """The registrations in a stable topological order: by depth (a resource comes one step
    after the deepest of its parent and the resources it depends on), ties by type then name
    (then URN). Two plans of the same settings then read and diff the same, and resources of a
    kind stand together. The order they arrive in is not stable: the Python SDK registers each
    resource once its inputs resolve, calling the monitor's RegisterResource from a thread pool
    (pulumi/runtime/resource.py, register_resource: run_in_executor)."""
    requests = {urn: request for urn, request, _ in registrations}
    depths: dict[str, int] = {}

    def depth(urn: str, seen: frozenset[str] = frozenset()) -> int:
        if urn not in depths:
            request = requests[urn]
            # The engine only resolves a dependency or parent already registered, so there is
            # no cycle; `seen` keeps a malformed one from recursing forever all the same.
            before = [
                u
                for u in [*request.dependencies, request.parent]
                if u in requests and u not in seen and u != urn
            ]
            depths[urn] = 1 + max((depth(u, seen | {urn}) for u in before), default=-1)
        return depths[urn]

    def position(entry: _Registration) -> tuple[int, str, str, str]:
        urn, request, _ = entry
        return (depth(urn), str(request.type), str(request.name), urn)

    return sorted(registrations, key=position)


@contextlib.contextmanager
def _no_source_positions() -> Iterator[None]:
    """The SDK walks and renders the whole Python stack at each registration to tell the engine
    where the resource was declared (pulumi/runtime/resource.py, _get_stack_trace); the recording
    mock never reads it, and it was a tenth of a plan's time. An SDK without that hook is run as
    it is."""
    from pulumi.runtime import resource as sdk_resource
    from pulumi.runtime.proto import source_pb2

    original = getattr(sdk_resource, "_get_stack_trace", None)
    if original is None:
        yield
        return
    sdk_resource._get_stack_trace = source_pb2.StackTrace
    try:
        yield
    finally:
        sdk_resource._get_stack_trace = original


def record_program(
    stack: str,
    config: dict[str, Any],
    program: Callable[[], dict[str, Any]],
    known_numbers: dict[str, str] | None = None,
    universe_domain: str = naming.DEFAULT_UNIVERSE,
    agent_iam_domain: str | None = None,
) -> Plan:
    """Run `program` (it registers resources, returns its outputs) under the recording mock.

    `config` has namespaced keys; values reach the program as the engine passes them (text).
    `universe_domain` is the program's: the data sources answer as Google does there, and
    service agents get addresses in `agent_iam_domain` when the stack names one.
    """
    mocks = _RecordingMocks(known_numbers, universe_domain, agent_iam_domain)
    monitor = _RecordingMonitor(mocks)
    set_all_config({key: _config_text(value) for key, value in config.items()}, [])
    # Each plan gets its own root stack: several plans may run in one process.
    pulumi_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(
        mocks, project=PROJECT_NAME, stack=stack, preview=True, monitor=monitor
    )
    outputs: dict[str, Any] = {}

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def run() -> pulumi.Output[Any]:
        return pulumi.Output.all(**program()).apply(outputs.update)

    with _no_source_positions():
        try:
            run()
        except pulumi.RunError as error:
            if isinstance(error, DicomBqError):
                raise
            # The program's refusal: the engine shows a RunError's message without a traceback
            # (infra/program.py load_settings), and so does the plan.
            raise DicomBqError(f"the program refused stack {stack!r}: {error}") from None
    registrations = _dependencies_first(monitor.registrations)
    names = {urn: request.name for urn, request, _ in registrations}
    # A provider reference is URN::ID (pulumi sdk/go/common/resource/providers, Reference).
    providers = {urn: request.name for urn, request, _ in registrations if _is_provider(request)}
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
            delete_before_replace=bool(request.deleteBeforeReplace),
            aliases=sorted(_alias_text(alias) for alias in request.aliases),
            urn=urn,
            provider=providers.get(str(request.provider).rsplit("::", 1)[0]),
        )
        for urn, request, inputs in registrations
    ]
    notes = [
        f"The number of project {project!r} is looked up at deploy time; set "
        f"dicom-bq:sourceProjectNumber or destinationProjectNumber to see the real addresses "
        "here."
        for project in sorted(set(mocks.unresolved_projects))
    ]
    numbers = dict(mocks.known_numbers)
    numbers.update({p: UNRESOLVED_NUMBER.format(project=p) for p in mocks.unresolved_projects})
    return Plan(
        stack=stack,
        resources=resources,
        outputs=_clean(outputs),
        notes=notes,
        invokes=mocks.invokes,
        project_numbers=numbers,
    )
