"""What both stand-in providers share: the wire format, the diff, the simulated Google, faults,
and the gRPC ResourceProvider server.

Why not `pulumi.provider` (the SDK's provider server): its classic `Provider` serves only
Construct/Call/Invoke (pulumi/provider/server.py has no Check, Diff, Create...), and the
experimental one (pulumi/provider/experimental/server.py, SDK 3.272) cannot send an unknown value
(PropertyValue.marshal has no branch for Computed and raises) and appends a Python traceback to
every error, where the engine must show Google's error text as pulumi-gcp shows it. So the
servicer below implements pulumirpc.ResourceProvider directly on the SDK's generated stubs
(pulumi.runtime.proto), served the way pulumi.provider.server.main serves: a grpc.aio server on
127.0.0.1:0 whose port is the first line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.resources
import json
import os
import re
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import grpc  # type: ignore[import-untyped]
from google.protobuf import empty_pb2, json_format, struct_pb2  # type: ignore[import-untyped]
from pulumi.runtime._grpc_settings import _GRPC_CHANNEL_OPTIONS
from pulumi.runtime.proto import plugin_pb2, provider_pb2, provider_pb2_grpc

from tests.engine.standins.sdkschema import ResourceSchema, resource_schema

# The engine's marker for a value not known yet (pulumi/sdk/go/common/resource/plugin/rpc.go,
# UnknownStringValue; pulumi.runtime.rpc.UNKNOWN in the Python SDK).
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

PROJECTS_ENV = "DICOM_BQ_STANDIN_PROJECTS"
CLOUD_ENV = "DICOM_BQ_STANDIN_CLOUD"
FAULTS_ENV = "DICOM_BQ_STANDIN_FAULTS"
STATE_DIR_ENV = "DICOM_BQ_STANDIN_STATE_DIR"
SLEEP_ENV = "DICOM_BQ_STANDIN_SLEEP"

JsonMap = dict[str, Any]


class StandinError(Exception):
    """An error the real provider would report; its text is what the engine shows."""


# --- The SDKs' plugin versions -----------------------------------------------------------------


def sdk_plugin(package: str) -> tuple[str, str]:
    """(name, version) of the resource plugin the installed SDK `package` asks the engine for.

    The language host reads the package's pulumi-plugin.json; pulumiverse_time's names no version,
    and then the host takes the distribution's own (PEP 440 -> semver; the SDK registers its
    resources with the same, pulumiverse_time/_utilities.py get_version)."""
    meta = json.loads(importlib.resources.files(package).joinpath("pulumi-plugin.json").read_text())
    version = meta.get("version") or importlib.metadata.version(package)
    return str(meta["name"]), str(version).removeprefix("v")


# --- Wire format -------------------------------------------------------------------------------


def to_plain(struct: struct_pb2.Struct) -> JsonMap:
    """A protobuf Struct as plain Python (numbers are floats, as on the wire)."""
    plain: JsonMap = json_format.MessageToDict(struct)
    return plain


def to_struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(dict(values))
    return struct


def is_unknown(value: Any) -> bool:
    return isinstance(value, str) and value == UNKNOWN


def contains_unknown(value: Any) -> bool:
    if is_unknown(value):
        return True
    if isinstance(value, Mapping):
        return any(contains_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_unknown(v) for v in value)
    return False


def urn_name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def urn_type(urn: str) -> str:
    """The resource's type: the URN's qualified type (parents' types joined by "$") ends with it."""
    return urn.split("::")[-2].rsplit("$", 1)[-1] if urn.count("::") >= 3 else ""


def stable_digits(seed: str, digits: int) -> str:
    """A number of `digits` digits (no leading zero) derived from `seed`."""
    value = int(hashlib.sha256(seed.encode()).hexdigest(), 16)
    low = 10 ** (digits - 1)
    return str(low + value % (9 * low))


# --- Projects ----------------------------------------------------------------------------------

# The example stacks name their projects' numbers (Pulumi.dev.yaml, Pulumi.prod.yaml,
# sourceProjectNumber/destinationProjectNumber): the same here, so that what Google would compute
# from a number (the agent's address) matches what the program derives from the stack file.
EXAMPLE_PROJECT_NUMBERS = {
    "dicom-bq-dev": "123456789012",
    "clinical-imaging-prod": "987654321098",
    "imaging-analytics-prod": "555566667777",
    # The fast tier's test project (tests/conftest.py base_settings), used by generated stacks.
    "dicom-src-test": "111122223333",
}


def project_numbers() -> dict[str, str]:
    numbers = dict(EXAMPLE_PROJECT_NUMBERS)
    raw = os.environ.get(PROJECTS_ENV, "").strip()
    if raw:
        given = json.loads(raw)
        if not isinstance(given, dict):
            raise StandinError(f"{PROJECTS_ENV} must be a JSON object of project ID -> number")
        for project, number in given.items():
            text = str(int(number)) if isinstance(number, int | float) else str(number)
            if not re.fullmatch(r"[1-9][0-9]{0,18}", text):
                raise StandinError(f"{PROJECTS_ENV}: {project!r} has no valid number: {number!r}")
            numbers[str(project)] = text
    return numbers


def project_number(project: str) -> str:
    """Google's number for `project`: the table's, else a fixed 12-digit one from its ID."""
    return project_numbers().get(project) or stable_digits(f"project:{project}", 12)


# Google-operated accounts' domain per API universe, as the program's naming module records it
# (dicom_bq/vocabulary/naming.py, _AGENT_IAM_DOMAINS): googleapis.com documents
# service-NUMBER@gcp-sa-healthcare.iam.gserviceaccount.com
# (https://cloud.google.com/healthcare-api/docs/permissions-healthcare-api-gcp-products).
AGENT_IAM_DOMAINS = {
    "googleapis.com": "iam.gserviceaccount.com",
    "s3nsapis.fr": "s3ns-system.iam.gserviceaccount.com",
    "apis-berlin-build0.goog": "eu0-system.iam.gserviceaccount.com",
}


# --- The simulated Google: IAM bindings shared by every provider process ----------------------


class Binding(NamedTuple):
    """One member in one role on one scope (its full resource name,
    https://cloud.google.com/iam/docs/full-resource-names)."""

    scope: str
    role: str
    member: str


_FILE_LOCK = threading.Lock()


@contextlib.contextmanager
def _locked_json(path: Path) -> Iterator[JsonMap]:
    """The JSON object in `path`, under an exclusive lock shared by threads and processes
    (flock on a side file), written back atomically when the block ends without error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    with _FILE_LOCK, open(lock_path, "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            doc: JsonMap = json.loads(path.read_text()) if path.exists() else {}
            before = json.dumps(doc, sort_keys=True)
            yield doc
            after = json.dumps(doc, sort_keys=True, indent=1)
            if json.dumps(doc, sort_keys=True) != before:
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
                with os.fdopen(fd, "w") as out:
                    out.write(after + "\n")
                os.replace(tmp, path)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


class CloudStore:
    """IAM as Google keeps it: one binding per (scope, role, member), whoever added it.

    pulumi-gcp's IAM member resources read-modify-write the scope's policy: create merges the
    member into the role's binding, delete removes it from there
    (magic-modules mmv1/third_party/terraform/tpgiamresource/resource_iam_member.go,
    resourceIamMemberCreate/Delete). So two stacks that create the same member share one binding
    and destroying either removes it for both (pulumi-gcp #442, #2463)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def from_env(cls) -> CloudStore | None:
        raw = os.environ.get(CLOUD_ENV, "").strip()
        return cls(Path(raw)) if raw else None

    def add(self, binding: Binding) -> None:
        with _locked_json(self.path) as doc:
            bindings = {Binding(*b) for b in doc.get("iamBindings", [])}
            bindings.add(binding)
            doc["iamBindings"] = [list(b) for b in sorted(bindings)]

    def remove(self, binding: Binding) -> None:
        with _locked_json(self.path) as doc:
            bindings = {Binding(*b) for b in doc.get("iamBindings", [])}
            bindings.discard(binding)
            doc["iamBindings"] = [list(b) for b in sorted(bindings)]

    def bindings(self) -> set[Binding]:
        with _locked_json(self.path) as doc:
            return {Binding(*b) for b in doc.get("iamBindings", [])}

    def record_universe(self, what: str, universe: str) -> None:
        """Which universe a resource was created in, or a function answered from: the
        universeDomain of the provider configuration that did it (pulumi-gcp sends each request
        to https://SERVICE.<universe_domain>/, terraform-provider-google transport/config.go)."""
        with _locked_json(self.path) as doc:
            doc.setdefault("universes", {})[what] = universe

    def universes(self) -> dict[str, str]:
        with _locked_json(self.path) as doc:
            return dict(doc.get("universes", {}))


def read_universes(path: Path | str) -> dict[str, str]:
    """URN of each resource created (or `invoke:TOKEN` of each function called) -> the universe
    of the provider that did it, from the cloud file `path`: for tests."""
    path = Path(path)
    return CloudStore(path).universes() if path.exists() else {}


def read_bindings(path: Path | str) -> set[Binding]:
    """The IAM bindings recorded in the cloud file `path` (empty when there is none): for tests."""
    path = Path(path)
    if not path.exists():
        return set()
    return CloudStore(path).bindings()


# --- Faults ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """The first `times` creates of resource `name` fail.

    Without `type`, only resources with a Google error modelled for them match (a DICOM store
    with streamConfigs, an alert policy), so that a fault on "x" never trips another type's
    resource of the same name (the alerts' log metrics and policies share names). With `type`
    (the token, or its last part: "AlertPolicy"), that type matches; `message` replaces the
    error text."""

    name: str
    times: int
    type: str | None = None
    message: str | None = None

    def matches(self, token: str, name: str) -> bool:
        if name != self.name:
            return False
        return self.type is None or self.type in (token, token.rsplit(":", 1)[-1])


def load_faults() -> list[Fault]:
    raw = os.environ.get(FAULTS_ENV, "").strip()
    if not raw:
        return []
    entries = json.loads(raw)
    if not isinstance(entries, list):
        raise StandinError(f"{FAULTS_ENV} must be a JSON list of {{name, times}} objects")
    faults = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise StandinError(f"{FAULTS_ENV}: each entry needs a name: {entry!r}")
        faults.append(
            Fault(
                name=entry["name"],
                times=int(entry.get("times", 1)),
                type=entry.get("type"),
                message=entry.get("message"),
            )
        )
    return faults


def fault_state_dir() -> Path:
    raw = os.environ.get(STATE_DIR_ENV, "").strip()
    if raw:
        return Path(raw)
    cloud = os.environ.get(CLOUD_ENV, "").strip()
    if cloud:
        return Path(cloud).parent
    raise StandinError(
        f"{FAULTS_ENV} is set: name a directory for the attempt counts in {STATE_DIR_ENV} "
        f"(or set {CLOUD_ENV}; they are kept beside it)"
    )


def count_attempt(key: str, state_dir: Path | None = None) -> int:
    """Records one more create attempt of `key` (a URN), across processes; returns its number."""
    path = (state_dir or fault_state_dir()) / "standin-fault-attempts.json"
    with _locked_json(path) as doc:
        doc[key] = int(doc.get(key, 0)) + 1
        return int(doc[key])


def attempts(state_dir: Path | str) -> dict[str, int]:
    """The create attempts counted so far, by URN: for tests."""
    path = Path(state_dir) / "standin-fault-attempts.json"
    return {k: int(v) for k, v in json.loads(path.read_text()).items()} if path.exists() else {}


# --- Diff --------------------------------------------------------------------------------------

PathPart = str | int
ADD, DELETE, UPDATE = "add", "delete", "update"
_KINDS = {
    (ADD, False): provider_pb2.PropertyDiff.ADD,
    (ADD, True): provider_pb2.PropertyDiff.ADD_REPLACE,
    (DELETE, False): provider_pb2.PropertyDiff.DELETE,
    (DELETE, True): provider_pb2.PropertyDiff.DELETE_REPLACE,
    (UPDATE, False): provider_pb2.PropertyDiff.UPDATE,
    (UPDATE, True): provider_pb2.PropertyDiff.UPDATE_REPLACE,
}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def format_path(path: Sequence[PathPart]) -> str:
    """A property path as the engine parses them (resource.ParsePropertyPath): a.b[0]["k-1"]."""
    out = ""
    for i, part in enumerate(path):
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            out += part if i == 0 else f".{part}"
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _parse_pattern(pattern: str) -> list[str | None]:
    """Splits "a.b[*].c" into ["a", "b", None, "c"] (None: any list index)."""
    parts: list[str | None] = []
    for piece in pattern.split("."):
        name, _, rest = piece.partition("[")
        parts.append(name)
        if rest:
            parts.append(None)
    return parts


def replaces_at(path: Sequence[PathPart], patterns: Iterable[str]) -> bool:
    """Whether a change at `path` changes a ForceNew field: the path is at or below one, or is
    an ancestor of one (a whole object holding an immutable field added, removed or changed)."""
    for pattern in patterns:
        parts = _parse_pattern(pattern)
        if all(
            (want is None and isinstance(have, int)) or want == have
            for want, have in zip(parts, path, strict=False)
        ):
            return True
    return False


def is_empty(value: Any) -> bool:
    # Terraform's SDKv2 treats an unset optional value and its zero value alike ("", [], {}).
    return value is None or value == "" or value == [] or value == {}


def _walk(old: Any, new: Any, path: tuple[PathPart, ...], out: list[Change]) -> None:
    if is_unknown(new):
        out.append(Change(path, UPDATE))
    elif is_empty(old) and is_empty(new):
        return
    elif is_empty(old):
        out.append(Change(path, ADD))
    elif is_empty(new):
        out.append(Change(path, DELETE))
    elif isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new)):
            _walk(old.get(key), new.get(key), (*path, key), out)
    elif isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            _walk(
                old[i] if i < len(old) else None,
                new[i] if i < len(new) else None,
                (*path, i),
                out,
            )
    elif old != new:
        out.append(Change(path, UPDATE))


@dataclass(frozen=True)
class Change:
    path: tuple[PathPart, ...]
    kind: str
    replace: bool = False


@dataclass(frozen=True)
class DiffResult:
    changes: tuple[Change, ...]

    @property
    def replaces(self) -> list[str]:
        return sorted({str(c.path[0]) for c in self.changes if c.replace})

    @property
    def diffs(self) -> list[str]:
        return sorted({str(c.path[0]) for c in self.changes})

    @property
    def detailed(self) -> dict[str, tuple[str, bool]]:
        return {format_path(c.path): (c.kind, c.replace) for c in self.changes}

    def to_proto(self) -> provider_pb2.DiffResponse:
        return provider_pb2.DiffResponse(
            changes=(
                provider_pb2.DiffResponse.DIFF_SOME
                if self.changes
                else provider_pb2.DiffResponse.DIFF_NONE
            ),
            replaces=self.replaces,
            diffs=self.diffs,
            detailedDiff={
                path: provider_pb2.PropertyDiff(kind=_KINDS[kind, replace], inputDiff=True)
                for path, (kind, replace) in self.detailed.items()
            },
            hasDetailedDiff=True,
            # Left to the engine (and the program's delete_before_replace option), as pulumi-gcp
            # does for these types.
            deleteBeforeReplace=False,
        )


def diff_inputs(
    *,
    olds: Mapping[str, Any],
    old_inputs: Mapping[str, Any],
    news: Mapping[str, Any],
    input_names: Iterable[str],
    force_new: Iterable[str],
    computed: Iterable[str] = (),
    ignore_changes: Iterable[str] = (),
) -> DiffResult:
    """The program's new inputs against the resource's state, as the bridge plans it.

    Only inputs are compared (outputs such as an email are the provider's); an input that is
    Optional+Computed (`computed`: project, location...) and no longer set keeps its value, as a
    Terraform plan does; an unknown new value is a change; a change under a ForceNew field is a
    replacement."""
    names = set(input_names)
    computed = set(computed)
    ignored = list(ignore_changes)
    previous = old_inputs or {k: v for k, v in olds.items() if k in names}
    found: list[Change] = []
    for key in sorted((set(news) | set(previous)) & names | (set(news) - names)):
        if key not in news and key in computed:
            continue
        old = olds[key] if key in olds else previous.get(key)
        _walk(old, news.get(key), (key,), found)
    patterns = list(force_new)
    changes = tuple(
        Change(c.path, c.kind, replaces_at(c.path, patterns))
        for c in found
        if not any(
            format_path(c.path) == i or format_path(c.path).startswith((i + ".", i + "["))
            for i in ignored
        )
    )
    return DiffResult(changes)


# --- Resource kinds ----------------------------------------------------------------------------


@dataclass
class ProviderConfig:
    """The provider's configuration, as Configure gives it (pulumi:providers:<pkg> inputs)."""

    values: JsonMap = field(default_factory=dict)

    def get(self, key: str, *env: str) -> str | None:
        value = self.values.get(key)
        if isinstance(value, str) and value and not is_unknown(value):
            return value
        # The provider's environment fallbacks (terraform-provider-google, provider.go:
        # GOOGLE_PROJECT, GOOGLE_CLOUD_PROJECT, GCLOUD_PROJECT, CLOUDSDK_CORE_PROJECT; region
        # GOOGLE_REGION, GCLOUD_REGION, CLOUDSDK_COMPUTE_REGION).
        for name in env:
            if os.environ.get(name):
                return os.environ[name]
        return None

    @property
    def project(self) -> str | None:
        return self.get(
            "project",
            "GOOGLE_PROJECT",
            "GOOGLE_CLOUD_PROJECT",
            "GCLOUD_PROJECT",
            "CLOUDSDK_CORE_PROJECT",
        )

    @property
    def region(self) -> str | None:
        return self.get("region", "GOOGLE_REGION", "GCLOUD_REGION", "CLOUDSDK_COMPUTE_REGION")

    @property
    def universe_domain(self) -> str:
        return self.get("universeDomain") or "googleapis.com"

    @property
    def default_labels(self) -> dict[str, str]:
        raw = self.values.get("defaultLabels")
        if isinstance(raw, str) and raw and not is_unknown(raw):
            raw = json.loads(raw)
        return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


@dataclass
class Context:
    config: ProviderConfig
    cloud: CloudStore | None


class Kind:
    """One resource type: table-driven behaviour with hooks for what is particular to it.

    Subclasses set `token`, `force_new` (ForceNew fields besides those the SDK docstrings name,
    each cited), `defaults` (Optional+Computed inputs with the value the API gives them) and
    override the hooks."""

    token: str = ""
    force_new: frozenset[str] = frozenset()
    defaults: ClassVar[Mapping[str, Any]] = {}
    # Optional+Computed inputs whose value the API chooses (`default_from_api`).
    also_computed: frozenset[str] = frozenset()
    # The bridge names a resource whose Terraform name is required but the SDK makes optional:
    # "<URN name>-<7 random hex>" (pulumi-terraform-bridge, AutoName / resource.NewUniqueHex).
    autoname: str | None = None

    @cached_property
    def schema(self) -> ResourceSchema:
        return resource_schema(self.token)

    @cached_property
    def replace_on(self) -> frozenset[str]:
        return self.force_new | self.schema.doc_forces_new

    @cached_property
    def computed_inputs(self) -> frozenset[str]:
        names = set(self.defaults) | self.also_computed
        if "project" in self.schema.inputs and not self.schema.inputs["project"].required:
            names.add("project")
        # Every mmv1 resource with deletion_policy has it Optional+Computed, "DELETE" when unset
        # (magic-modules tpgresource/utils.go, DeletionPolicySchemaEntry/ReadDefault).
        if "deletionPolicy" in self.schema.inputs:
            names.add("deletionPolicy")
        return frozenset(names)

    @property
    def short(self) -> str:
        return self.token.rsplit(":", 1)[-1]

    def check(self, urn: str, news: JsonMap, random_seed: bytes) -> tuple[JsonMap, list[str]]:
        """The inputs to keep, and failures as `property: reason` pairs joined by ': '."""
        inputs = dict(news)
        if self.autoname and is_empty(inputs.get(self.autoname)):
            suffix = hashlib.sha256(random_seed + urn.encode()).hexdigest()[:7]
            inputs[self.autoname] = f"{urn_name(urn)}-{suffix}"
        failures = [
            f"{name}: Missing required argument. The argument {name!r} is required, "
            "but no definition was found."
            for name, prop in self.schema.inputs.items()
            if prop.required and name != self.autoname and is_empty(inputs.get(name))
        ]
        unknown = sorted(set(inputs) - set(self.schema.inputs) - {"__defaults"})
        failures += [
            f"{name}: An argument named {name!r} is not expected here." for name in unknown
        ]
        failures += self.validate(inputs)
        return inputs, failures

    def validate(self, inputs: JsonMap) -> list[str]:
        return []

    def with_defaults(self, ctx: Context, inputs: Mapping[str, Any], preview: bool) -> JsonMap:
        state = dict(inputs)
        for name, value in self.defaults.items():
            if is_empty(state.get(name)):
                state[name] = value
        if "deletionPolicy" in self.computed_inputs and is_empty(state.get("deletionPolicy")):
            state["deletionPolicy"] = "DELETE"
        if "project" in self.computed_inputs and is_empty(state.get("project")):
            project = ctx.config.project
            if project is None and not preview:
                # terraform-provider-google tpgresource.GetProject's error.
                raise StandinError("project: required field is not set")
            state["project"] = project or UNKNOWN
        return state

    def derived(self, ctx: Context, state: JsonMap) -> JsonMap:
        """Outputs that follow from the inputs alone (known at plan time in Terraform)."""
        out: JsonMap = {}
        if "effectiveLabels" in self.schema.state:
            labels = state.get("labels") or {}
            if contains_unknown(labels):
                out["effectiveLabels"] = out["pulumiLabels"] = UNKNOWN
            else:
                # terraform-provider-google's labels model (tpgresource/labels.go,
                # SetLabelsDiff): effective_labels = provider default_labels + labels;
                # terraform_labels (pulumiLabels) the same without labels set outside.
                out["effectiveLabels"] = {**ctx.config.default_labels, **labels}
                out["pulumiLabels"] = {**ctx.config.default_labels, **labels}
        return out

    def computed(self, ctx: Context, state: JsonMap) -> JsonMap:
        """Outputs the API gives when the resource is created."""
        return {}

    def resource_id(self, ctx: Context, state: JsonMap) -> str:
        raise NotImplementedError

    def binding(self, state: Mapping[str, Any]) -> Binding | None:
        """The IAM binding the resource adds, for the simulated Google."""
        return None

    def fault_error(self, state: Mapping[str, Any]) -> str | None:
        """Google's error for this resource while IAM propagates; None: no modelled fault."""
        return None

    def on_create(self, state: Mapping[str, Any]) -> None:
        pass

    def on_delete(self, state: Mapping[str, Any]) -> None:
        pass


class DeclaredOnly(Kind):
    """A type with only the SDK's declaration behind it: its inputs checked, its id its URN's
    name (no Google behaviour modelled)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def resource_id(self, ctx: Context, state: JsonMap) -> str:
        return str(state.get("name") or "declared-only")


class Provider:
    """A provider's behaviour, without gRPC: what the servicer calls (and the tests)."""

    def __init__(
        self,
        name: str,
        version: str,
        kinds: Iterable[Kind],
        invokes: Mapping[str, Callable[[Context, JsonMap], JsonMap]] | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.kinds = {kind.token: kind for kind in kinds}
        self.invokes = dict(invokes or {})
        self.ctx = Context(ProviderConfig(), CloudStore.from_env())

    def kind(self, urn: str) -> Kind:
        token = urn_type(urn)
        if token not in self.kinds:
            # A type the program never creates (a policy test's bypass, a consumer's project):
            # checked against the SDK's own declaration and created as declared, no more.
            try:
                resource_schema(token)
            except Exception:
                raise StandinError(
                    f"the stand-in {self.name} provider does not model {token} "
                    "(tests/engine/standins): add it there"
                ) from None
            self.kinds[token] = DeclaredOnly(token)
        return self.kinds[token]

    # Provider configuration.

    def configure(self, args: JsonMap, variables: Mapping[str, str]) -> None:
        values = dict(args)
        prefix = f"{self.name}:config:"
        for key, value in variables.items():
            short = key.removeprefix(prefix)
            values.setdefault(short, value)
        self.ctx.config = ProviderConfig(values)

    def diff_config(self, olds: JsonMap, news: JsonMap) -> DiffResult:
        # A provider configuration change updates the provider, never replaces it: pulumi-gcp
        # has no ForceNew provider argument. "version" is the engine's.
        names = (set(olds) | set(news)) - {"version"}
        return diff_inputs(olds=olds, old_inputs=olds, news=news, input_names=names, force_new=())

    # Resources.

    def check(
        self, urn: str, olds: JsonMap, news: JsonMap, random_seed: bytes
    ) -> tuple[JsonMap, list[str]]:
        kind = self.kind(urn)
        if kind.autoname and is_empty(news.get(kind.autoname)) and olds.get(kind.autoname):
            # An autonamed resource keeps its name across updates (the bridge reuses the old one).
            news = {**news, kind.autoname: olds[kind.autoname]}
        return kind.check(urn, news, random_seed)

    def diff(
        self,
        urn: str,
        olds: JsonMap,
        old_inputs: JsonMap,
        news: JsonMap,
        ignore_changes: Iterable[str] = (),
    ) -> DiffResult:
        kind = self.kind(urn)
        return diff_inputs(
            olds=olds,
            old_inputs=old_inputs,
            news=news,
            input_names=kind.schema.inputs,
            force_new=kind.replace_on,
            computed=kind.computed_inputs,
            ignore_changes=ignore_changes,
        )

    def create(self, urn: str, news: JsonMap, preview: bool) -> tuple[str, JsonMap]:
        kind = self.kind(urn)
        state = kind.with_defaults(self.ctx, news, preview)
        state.update(kind.derived(self.ctx, state))
        if preview:
            # Outputs the API computes are unknown until the create, as in the bridge's plan.
            for name in kind.schema.outputs_only:
                state.setdefault(name, UNKNOWN)
            return "", state
        self._maybe_fail(kind, urn, state)
        state.update(kind.computed(self.ctx, state))
        identifier = kind.resource_id(self.ctx, state)
        kind.on_create(state)
        binding = kind.binding(state)
        if self.ctx.cloud is not None:
            self.ctx.cloud.record_universe(urn, self.ctx.config.universe_domain)
            if binding is not None:
                self.ctx.cloud.add(binding)
        return identifier, state

    def _maybe_fail(self, kind: Kind, urn: str, state: Mapping[str, Any]) -> None:
        name = urn_name(urn)
        for fault in load_faults():
            if not fault.matches(kind.token, name):
                continue
            error = fault.message or kind.fault_error(state)
            if error is None and fault.type is None:
                continue  # no Google error modelled for this resource: not the one meant
            if count_attempt(urn) <= fault.times:
                raise StandinError(
                    error
                    or f"Error creating {kind.short}: googleapi: Error 503: The service is "
                    "currently unavailable., backendError"
                )
            return

    def update(
        self, urn: str, olds: JsonMap, old_inputs: JsonMap, news: JsonMap, preview: bool
    ) -> JsonMap:
        kind = self.kind(urn)
        state = dict(olds)
        for name in kind.schema.inputs:
            if name in news:
                state[name] = news[name]
            elif name not in kind.computed_inputs:
                state.pop(name, None)
        state = kind.with_defaults(self.ctx, state, preview)
        state.update(kind.derived(self.ctx, state))
        return state

    def delete(self, urn: str, resource_id: str, olds: JsonMap) -> None:
        kind = self.kind(urn)
        policy = olds.get("deletionPolicy")
        if policy == "PREVENT":
            # magic-modules tpgresource/utils.go, DeletionPolicyPreDelete.
            raise StandinError(
                f'cannot destroy "{resource_id}" without setting deletion_policy="DELETE" '
                "and running `terraform apply`"
            )
        if policy == "ABANDON":
            return
        kind.on_delete(olds)
        binding = kind.binding(olds)
        if binding is not None and self.ctx.cloud is not None:
            self.ctx.cloud.remove(binding)

    def read(self, urn: str, resource_id: str, olds: JsonMap) -> str:
        """The resource's ID as Google has it now: "" when it is gone (a binding removed by
        another stack, say)."""
        kind = self.kind(urn)
        binding = kind.binding(olds)
        if binding is not None and self.ctx.cloud is not None:
            return resource_id if binding in self.ctx.cloud.bindings() else ""
        return resource_id

    def invoke(self, token: str, args: JsonMap) -> JsonMap:
        try:
            function = self.invokes[token]
        except KeyError:
            raise StandinError(
                f"the stand-in {self.name} provider does not model function {token}"
            ) from None
        if self.ctx.cloud is not None:
            self.ctx.cloud.record_universe(f"invoke:{token}", self.ctx.config.universe_domain)
        return function(self.ctx, args)

    def schema(self) -> str:
        """A minimal package schema: the engine asks only in some flows (import, convert)."""
        return json.dumps(
            {
                "name": self.name,
                "version": self.version,
                "resources": {token: {} for token in sorted(self.kinds)},
                "functions": {token: {} for token in sorted(self.invokes)},
            }
        )


# --- gRPC --------------------------------------------------------------------------------------


def _failures(failures: Iterable[str]) -> list[provider_pb2.CheckFailure]:
    out = []
    for failure in failures:
        prop, _, reason = failure.partition(": ")
        out.append(provider_pb2.CheckFailure(property=prop, reason=reason))
    return out


class Servicer(provider_pb2_grpc.ResourceProviderServicer):
    """pulumirpc.ResourceProvider over a `Provider`. Work runs in a thread (file locks, a real
    sleep) so that the engine's parallel steps proceed in parallel."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    async def _run(self, context: Any, work: Callable[[], Any]) -> Any:
        try:
            return await asyncio.to_thread(work)
        except StandinError as error:
            await context.abort(grpc.StatusCode.UNKNOWN, str(error))
        except Exception as error:
            # A bug in the stand-in: say where.
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"stand-in {self.provider.name}: {error!r}\n" + traceback.format_exc(),
            )

    async def Handshake(self, request: Any, context: Any) -> Any:
        # The engine falls back to Configure's answers when Handshake is unimplemented
        # (pulumi sdk/go/common/resource/plugin/provider_plugin.go), as for the SDK's providers.
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Handshake is not implemented")

    async def GetPluginInfo(self, request: Any, context: Any) -> plugin_pb2.PluginInfo:
        return plugin_pb2.PluginInfo(version=self.provider.version)

    async def GetSchema(self, request: Any, context: Any) -> provider_pb2.GetSchemaResponse:
        return provider_pb2.GetSchemaResponse(schema=self.provider.schema())

    async def CheckConfig(self, request: Any, context: Any) -> provider_pb2.CheckResponse:
        return provider_pb2.CheckResponse(inputs=request.news)

    async def DiffConfig(self, request: Any, context: Any) -> provider_pb2.DiffResponse:
        result = self.provider.diff_config(to_plain(request.olds), to_plain(request.news))
        return result.to_proto()

    async def Configure(self, request: Any, context: Any) -> provider_pb2.ConfigureResponse:
        self.provider.configure(to_plain(request.args), dict(request.variables))
        # Plain values only (the engine unwraps secrets and resource references for us), and
        # Create/Update are called during previews, as pulumi-gcp is.
        return provider_pb2.ConfigureResponse(
            acceptSecrets=False, acceptResources=False, acceptOutputs=False, supportsPreview=True
        )

    async def Check(self, request: Any, context: Any) -> provider_pb2.CheckResponse:
        def work() -> provider_pb2.CheckResponse:
            inputs, failures = self.provider.check(
                request.urn, to_plain(request.olds), to_plain(request.news), request.randomSeed
            )
            return provider_pb2.CheckResponse(
                inputs=to_struct(inputs), failures=_failures(failures)
            )

        result: provider_pb2.CheckResponse = await self._run(context, work)
        return result

    async def Diff(self, request: Any, context: Any) -> provider_pb2.DiffResponse:
        def work() -> provider_pb2.DiffResponse:
            return self.provider.diff(
                request.urn,
                to_plain(request.olds),
                to_plain(request.old_inputs),
                to_plain(request.news),
                list(request.ignoreChanges),
            ).to_proto()

        result: provider_pb2.DiffResponse = await self._run(context, work)
        return result

    async def Create(self, request: Any, context: Any) -> provider_pb2.CreateResponse:
        def work() -> provider_pb2.CreateResponse:
            identifier, state = self.provider.create(
                request.urn, to_plain(request.properties), request.preview
            )
            return provider_pb2.CreateResponse(id=identifier, properties=to_struct(state))

        result: provider_pb2.CreateResponse = await self._run(context, work)
        return result

    async def Read(self, request: Any, context: Any) -> provider_pb2.ReadResponse:
        def work() -> provider_pb2.ReadResponse:
            olds = to_plain(request.properties)
            identifier = self.provider.read(request.urn, request.id, olds)
            if not identifier:
                return provider_pb2.ReadResponse(id="")
            return provider_pb2.ReadResponse(
                id=identifier, properties=request.properties, inputs=request.inputs
            )

        result: provider_pb2.ReadResponse = await self._run(context, work)
        return result

    async def Update(self, request: Any, context: Any) -> provider_pb2.UpdateResponse:
        def work() -> provider_pb2.UpdateResponse:
            state = self.provider.update(
                request.urn,
                to_plain(request.olds),
                to_plain(request.old_inputs),
                to_plain(request.news),
                request.preview,
            )
            return provider_pb2.UpdateResponse(properties=to_struct(state))

        result: provider_pb2.UpdateResponse = await self._run(context, work)
        return result

    async def Delete(self, request: Any, context: Any) -> Any:
        def work() -> Any:
            self.provider.delete(request.urn, request.id, to_plain(request.properties))
            return empty_pb2.Empty()

        return await self._run(context, work)

    async def Invoke(self, request: Any, context: Any) -> provider_pb2.InvokeResponse:
        def work() -> provider_pb2.InvokeResponse:
            returned = self.provider.invoke(request.tok, to_plain(request.args))
            return provider_pb2.InvokeResponse(**{"return": to_struct(returned)})

        result: provider_pb2.InvokeResponse = await self._run(context, work)
        return result

    async def Cancel(self, request: Any, context: Any) -> Any:
        return empty_pb2.Empty()


def serve(provider: Provider, argv: Sequence[str] | None = None) -> None:
    """Runs the plugin: `pulumi-resource-<name> <engine address> [engine flags]`."""
    parser = argparse.ArgumentParser(description=f"stand-in {provider.name} resource provider")
    parser.add_argument("engine", nargs="?", help="the engine's address (unused)")
    parser.parse_known_args(argv)

    async def run() -> None:
        server = grpc.aio.server(options=_GRPC_CHANNEL_OPTIONS)
        provider_pb2_grpc.add_ResourceProviderServicer_to_server(Servicer(provider), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(port, flush=True)
        await server.wait_for_termination()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
