"""One loopback server for what `dicom-bq preflight` reads: Service Usage, Resource Manager,
Cloud Storage, Pub/Sub, Cloud KMS, the Healthcare and BigQuery datasets.

Every request is matched to a method of Google's discovery documents (HTTP verb and path
template) and its body checked against the method's request schema, as the real API would
refuse it; an unknown route or a bad body is a 400 and is recorded in `problems`. State is plain
data the tests edit: what exists, which APIs are on, which permissions the caller holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from tests.fakes.discovery import document, schema_problems
from tests.fakes.http import LoopbackFake, Request, Response

# (api, version) served, the storage one under its servicePath.
APIS = [
    ("serviceusage", "v1"),
    ("cloudresourcemanager", "v1"),
    ("storage", "v1"),
    ("pubsub", "v1"),
    ("cloudkms", "v1"),
    ("healthcare", "v1"),
    ("bigquery", "v2"),
]


@dataclass(frozen=True)
class Route:
    api: str
    version: str
    method_id: str
    http_method: str
    pattern: re.Pattern[str]
    request_schema: str | None


def _methods(resource: dict[str, Any]) -> list[dict[str, Any]]:
    found = list((resource.get("methods") or {}).values())
    for child in (resource.get("resources") or {}).values():
        found += _methods(child)
    return found


@cache
def routes() -> list[Route]:
    table = []
    for api, version in APIS:
        doc = document(api, version)
        prefix = "/" + doc.get("servicePath", "")
        for method in _methods(doc):
            template = method.get("flatPath") or method["path"]
            parts = re.split(r"\{\+?[^}]+\}", template)
            # ":" ends a segment: "topics/{t}:getIamPolicy" is not "topics/{t}".
            regex = "([^/:]+)".join(re.escape(part) for part in parts)
            table.append(
                Route(
                    api,
                    version,
                    method["id"],
                    method["httpMethod"],
                    re.compile("^" + re.escape(prefix) + regex + "$"),
                    (method.get("request") or {}).get("$ref"),
                )
            )
    return table


def match(http_method: str, path: str) -> tuple[Route, tuple[str, ...]] | None:
    for route in routes():
        if route.http_method == http_method:
            found = route.pattern.match(path)
            if found:
                return route, found.groups()
    return None


@dataclass
class FakeCloudResources(LoopbackFake):
    # "project/service" -> "ENABLED" | "DISABLED"
    services: dict[str, str] = field(default_factory=dict)
    # Resource name -> the caller's permissions there ("projects/P", "buckets/B", topic, key).
    permissions: dict[str, set[str]] = field(default_factory=dict)
    buckets: dict[str, dict[str, Any]] = field(default_factory=dict)
    topics: set[str] = field(default_factory=set)
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    healthcare_datasets: set[str] = field(default_factory=set)
    dicom_stores: set[str] = field(default_factory=set)
    bigquery_datasets: set[str] = field(default_factory=set)  # "project.dataset"
    requests: list[tuple[str, Request]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    url: str = ""

    def handle(self, request: Request) -> Response:
        found = match(request.method, request.path)
        if found is None:
            self.problems.append(f"no discovery method for {request.method} {request.path}")
            return Response.error(400, "INVALID_ARGUMENT", f"unknown route {request.path}")
        route, params = found
        self.requests.append((route.method_id, request))
        if route.request_schema:
            problems = schema_problems(
                route.api, route.version, route.request_schema, request.json()
            )
            if problems:
                self.problems += problems
                return Response.error(400, "INVALID_ARGUMENT", "; ".join(problems))
        try:
            return self._answer(route.method_id, params, request)
        except Exception as error:  # a fake's own bug must show, not look like a network fault
            self.problems.append(f"{route.method_id}: {type(error).__name__}: {error}")
            return Response.error(500, "INTERNAL", str(error))

    def _test(self, resource: str, asked: list[str]) -> Response:
        held = self.permissions.get(resource, set())
        return Response.json({"permissions": [p for p in asked if p in held]})

    def _answer(self, method: str, params: tuple[str, ...], request: Request) -> Response:
        if method == "serviceusage.services.get":
            # flatPath v1/{v1Id}/{v1Id1}/services/{servicesId}: ("projects", P, S)
            _, project, service = params
            state = self.services.get(f"{project}/{service}", "DISABLED")
            return Response.json({"name": f"projects/{project}/services/{service}", "state": state})
        if method == "cloudresourcemanager.projects.testIamPermissions":
            return self._test(f"projects/{params[0]}", request.json().get("permissions", []))
        if method == "storage.buckets.get":
            bucket = self.buckets.get(params[0])
            if bucket is None:
                return Response.error(404, "notFound", "The specified bucket does not exist.")
            return Response.json({"kind": "storage#bucket", "name": params[0], **bucket})
        if method == "storage.buckets.testIamPermissions":
            if params[0] not in self.buckets:
                return Response.error(404, "notFound", "The specified bucket does not exist.")
            asked = request.query.get("permissions", [])
            held = self.permissions.get(f"buckets/{params[0]}", set())
            return Response.json(
                {
                    "kind": "storage#testIamPermissionsResponse",
                    "permissions": [p for p in asked if p in held],
                }
            )
        if method == "pubsub.projects.topics.get":
            name = f"projects/{params[0]}/topics/{params[1]}"
            if name not in self.topics:
                return Response.error(404, "NOT_FOUND", "Resource not found (resource=topic).")
            return Response.json({"name": name})
        if method == "pubsub.projects.topics.testIamPermissions":
            name = f"projects/{params[0]}/topics/{params[1]}"
            return self._test(name, request.json().get("permissions", []))
        if method == "cloudkms.projects.locations.keyRings.cryptoKeys.get":
            name = "projects/{}/locations/{}/keyRings/{}/cryptoKeys/{}".format(*params)
            if name not in self.keys:
                return Response.error(404, "NOT_FOUND", f"{name} not found.")
            return Response.json({"name": name, **self.keys[name]})
        if method == "cloudkms.projects.locations.keyRings.cryptoKeys.testIamPermissions":
            name = "projects/{}/locations/{}/keyRings/{}/cryptoKeys/{}".format(*params)
            return self._test(name, request.json().get("permissions", []))
        if method == "healthcare.projects.locations.datasets.get":
            name = "projects/{}/locations/{}/datasets/{}".format(*params)
            if name not in self.healthcare_datasets:
                return Response.error(404, "NOT_FOUND", f"dataset {name} not found")
            return Response.json({"name": name})
        if method == "healthcare.projects.locations.datasets.dicomStores.get":
            name = "projects/{}/locations/{}/datasets/{}/dicomStores/{}".format(*params)
            if name not in self.dicom_stores:
                return Response.error(404, "NOT_FOUND", f"DICOM store {name} not found")
            return Response.json({"name": name})
        if method == "bigquery.datasets.get":
            key = f"{params[0]}.{params[1]}"
            if key not in self.bigquery_datasets:
                return Response.error(
                    404, "notFound", f"Not found: Dataset {params[0]}:{params[1]}"
                )
            return Response.json(
                {
                    "id": f"{params[0]}:{params[1]}",
                    "datasetReference": {"projectId": params[0], "datasetId": params[1]},
                }
            )
        self.problems.append(f"the fake does not answer {method}")
        return Response.error(501, "UNIMPLEMENTED", method)
