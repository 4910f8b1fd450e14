"""Loopback IAM surfaces for the audit and the review: the policies of projects (Resource
Manager), buckets (Cloud Storage), topics (Pub/Sub), crypto keys (Cloud KMS), DICOM stores
(Cloud Healthcare) and service accounts (IAM), and IAM's predefined roles. Policies are plain data tests edit, conditions included.

Requests are routed by Google's discovery documents (HTTP verb and path template of each method
served) and their shape checked as the real API would: query parameters the method declares,
the request body against its schema, policy version 3 asked for. A request that fails a check
is a 400 and is recorded in `problems`, which the tests assert empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from tests.fakes.discovery import document, schema_problems
from tests.fakes.http import LoopbackFake, Request, Reset, Response

Bindings = list[dict[str, Any]]

# The methods served: (api, version, method id). tests/fakes/cloud_resources.py's match() cannot
# be reused here: its "([^/]+)" for a path variable also swallows a custom verb, so
# GET .../topics/T:getIamPolicy routes to topics.get with topic "T:getIamPolicy". A path
# variable never contains ":" before the verb (https://google.aip.dev/136), so "[^/:]+" here.
SERVED = [
    ("cloudresourcemanager", "v1", "cloudresourcemanager.projects.getIamPolicy"),
    ("storage", "v1", "storage.buckets.getIamPolicy"),
    ("pubsub", "v1", "pubsub.projects.topics.getIamPolicy"),
    ("cloudkms", "v1", "cloudkms.projects.locations.keyRings.cryptoKeys.getIamPolicy"),
    ("iam", "v1", "iam.roles.get"),
    ("healthcare", "v1", "healthcare.projects.locations.datasets.dicomStores.getIamPolicy"),
    # POST with no request body: the version is a query parameter (iam v1 discovery document).
    ("iam", "v1", "iam.projects.serviceAccounts.getIamPolicy"),
]
# Where each getIamPolicy method takes the requested policy version.
VERSION_PARAMETER = {
    "storage.buckets.getIamPolicy": "optionsRequestedPolicyVersion",
    "pubsub.projects.topics.getIamPolicy": "options.requestedPolicyVersion",
    "cloudkms.projects.locations.keyRings.cryptoKeys.getIamPolicy": (
        "options.requestedPolicyVersion"
    ),
    "healthcare.projects.locations.datasets.dicomStores.getIamPolicy": (
        "options.requestedPolicyVersion"
    ),
    "iam.projects.serviceAccounts.getIamPolicy": "options.requestedPolicyVersion",
}


@dataclass(frozen=True)
class Method:
    api: str
    version: str
    spec: dict[str, Any]
    pattern: re.Pattern[str]

    @property
    def id(self) -> str:
        return str(self.spec["id"])


def _find(resource: dict[str, Any], method_id: str) -> dict[str, Any] | None:
    for method in (resource.get("methods") or {}).values():
        if method["id"] == method_id:
            return dict(method)
    for child in (resource.get("resources") or {}).values():
        found = _find(child, method_id)
        if found:
            return found
    return None


@cache
def methods() -> list[Method]:
    table = []
    for api, version, method_id in SERVED:
        doc = document(api, version)
        spec = _find(doc, method_id)
        assert spec, f"{api} {version} documents no {method_id}"
        template = spec.get("flatPath") or spec["path"]
        parts = re.split(r"\{\+?[^}]+\}", template)
        regex = "([^/:]+)".join(re.escape(part) for part in parts)
        prefix = "/" + doc.get("servicePath", "")
        table.append(Method(api, version, spec, re.compile("^" + re.escape(prefix) + regex + "$")))
    return table


def route(http_method: str, path: str) -> tuple[Method, tuple[str, ...]] | None:
    for method in methods():
        found = method.pattern.match(path)
        if found and method.spec["httpMethod"] == http_method:
            return method, found.groups()
    return None


def request_problems(method: Method, request: Request) -> list[str]:
    """What the real API would refuse: unknown or malformed query parameters, a bad body."""
    doc = document(method.api, method.version)
    declared = {**doc.get("parameters", {}), **method.spec.get("parameters", {})}
    problems = []
    for name, values in request.query.items():
        spec = declared.get(name)
        if spec is None or spec.get("location") == "path":
            problems.append(f"{method.id}: unknown query parameter {name!r}")
        elif spec.get("type") == "integer" and not all(v.lstrip("-").isdigit() for v in values):
            problems.append(f"{method.id}: {name}={values} is not an integer")
    schema = (method.spec.get("request") or {}).get("$ref")
    if schema:
        problems += schema_problems(method.api, method.version, schema, request.json())
    elif request.body:
        problems.append(f"{method.id}: takes no body")
    return problems


def requested_version(method: Method, request: Request) -> int | None:
    if method.id == "cloudresourcemanager.projects.getIamPolicy":
        version = request.json().get("options", {}).get("requestedPolicyVersion")
        return version if isinstance(version, int) else None
    values = request.query.get(VERSION_PARAMETER[method.id], [])
    return int(values[0]) if values else None


@dataclass
class FakeIam(LoopbackFake):
    projects: dict[str, Bindings] = field(default_factory=dict)  # project id -> bindings
    buckets: dict[str, Bindings] = field(default_factory=dict)  # bucket name -> bindings
    topics: dict[str, Bindings] = field(default_factory=dict)  # projects/P/topics/T -> bindings
    keys: dict[str, Bindings] = field(default_factory=dict)  # full crypto key name -> bindings
    stores: dict[str, Bindings] = field(default_factory=dict)  # full DICOM store name -> bindings
    # projects/P/serviceAccounts/EMAIL -> bindings
    service_accounts: dict[str, Bindings] = field(default_factory=dict)
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Resource names ("projects/P", "buckets/B", a topic or key name) whose policy the caller
    # may not read (403), or whose request drops the connection (a network fault).
    denied: set[str] = field(default_factory=set)
    resets: set[str] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    url: str = ""

    def handle(self, request: Request) -> Response:
        self.requests.append(request)
        found = route(request.method, request.path)
        if found is None:
            if request.path.startswith("/v1/roles/") or ":getIamPolicy" in request.path:
                self.problems.append(f"no served method for {request.method} {request.path}")
                return Response.error(400, "INVALID_ARGUMENT", f"unknown route {request.path}")
            return Response.error(404, "NOT_FOUND", request.path)
        method, params = found
        problems = request_problems(method, request)
        if problems:
            self.problems += problems
            return Response.error(400, "INVALID_ARGUMENT", "; ".join(problems))
        if method.id == "iam.roles.get":
            name = f"roles/{params[0]}"
            if name not in self.roles:
                return Response.error(404, "NOT_FOUND", f"role {name}")
            return Response.json({"name": name, **self.roles[name]})
        if requested_version(method, request) != 3:
            # The real API answers, with conditional bindings renamed "<role>_withcond_<hash>";
            # the audit must ask for version 3, so asking for less is a fault of the caller.
            self.problems.append(f"{method.id}: asked for policy version below 3")
            return Response.error(400, "INVALID_ARGUMENT", "ask for policy version 3")
        return self._policy(method, params)

    def _policy(self, method: Method, params: tuple[str, ...]) -> Response:
        if method.id == "cloudresourcemanager.projects.getIamPolicy":
            name, table, key = f"projects/{params[0]}", self.projects, params[0]
            absent = Response.error(403, "PERMISSION_DENIED", f"project {params[0]}")
        elif method.id == "storage.buckets.getIamPolicy":
            name, table, key = f"buckets/{params[0]}", self.buckets, params[0]
            absent = Response.error(404, "notFound", "The specified bucket does not exist.")
        elif method.id == "pubsub.projects.topics.getIamPolicy":
            name = key = "projects/{}/topics/{}".format(*params)
            table = self.topics
            absent = Response.error(404, "NOT_FOUND", "Resource not found (resource=topic).")
        elif method.id == "healthcare.projects.locations.datasets.dicomStores.getIamPolicy":
            name = key = "projects/{}/locations/{}/datasets/{}/dicomStores/{}".format(*params)
            table = self.stores
            absent = Response.error(404, "NOT_FOUND", f"DICOM store {name} not found")
        elif method.id == "iam.projects.serviceAccounts.getIamPolicy":
            name = key = "projects/{}/serviceAccounts/{}".format(*params)
            table = self.service_accounts
            absent = Response.error(404, "NOT_FOUND", f"Unknown service account {params[1]}")
        else:
            name = key = "projects/{}/locations/{}/keyRings/{}/cryptoKeys/{}".format(*params)
            table = self.keys
            absent = Response.error(404, "NOT_FOUND", f"{name} not found.")
        if name in self.resets:
            raise Reset
        if name in self.denied:
            return Response.error(
                403, "PERMISSION_DENIED", f"Permission getIamPolicy denied on {name}"
            )
        if key not in table:
            return absent
        bindings = table[key]
        # Version 1 when no binding has a condition, as the real APIs answer.
        policy: dict[str, Any] = {
            "version": 3 if any("condition" in b for b in bindings) else 1,
            "etag": "BwX=",
            "bindings": bindings,
        }
        if method.api == "storage":
            policy = {"kind": "storage#policy", "resourceId": f"projects/_/{name}", **policy}
        response_schema = method.spec["response"]["$ref"]
        problems = schema_problems(method.api, method.version, response_schema, policy)
        if problems:  # a test seeded a binding the real API could never return
            self.problems += problems
            return Response.error(500, "INTERNAL", "; ".join(problems))
        return Response.json(policy)
