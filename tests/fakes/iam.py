"""Loopback IAM surfaces for the audit and the review: Resource Manager project policies,
Cloud Storage bucket policies and IAM predefined roles. Policies are plain data tests edit."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.http import LoopbackFake, Request, Response

Bindings = list[dict[str, Any]]


@dataclass
class FakeIam(LoopbackFake):
    projects: dict[str, Bindings] = field(default_factory=dict)
    buckets: dict[str, Bindings] = field(default_factory=dict)
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def handle(self, request: Request) -> Response:
        self.requests.append(request)
        if m := re.fullmatch(r"/v1/projects/([^/:]+):getIamPolicy", request.path):
            if request.method != "POST":
                return Response.error(405, "INVALID_ARGUMENT", "POST only")
            if request.json().get("options", {}).get("requestedPolicyVersion") != 3:
                return Response.error(400, "INVALID_ARGUMENT", "ask for policy version 3")
            if m.group(1) not in self.projects:
                return Response.error(403, "PERMISSION_DENIED", f"project {m.group(1)}")
            return Response.json(
                {"version": 3, "etag": "BwX=", "bindings": self.projects[m.group(1)]}
            )
        if m := re.fullmatch(r"/storage/v1/b/([^/]+)/iam", request.path):
            if m.group(1) not in self.buckets:
                return Response.error(404, "notFound", f"bucket {m.group(1)}")
            return Response.json(
                {
                    "kind": "storage#policy",
                    "resourceId": f"projects/_/buckets/{m.group(1)}",
                    "version": 3,
                    "etag": "CAE=",
                    "bindings": self.buckets[m.group(1)],
                }
            )
        if m := re.fullmatch(r"/v1/(roles/[^/]+)", request.path):
            if m.group(1) not in self.roles:
                return Response.error(404, "NOT_FOUND", f"role {m.group(1)}")
            return Response.json({"name": m.group(1), **self.roles[m.group(1)]})
        return Response.error(404, "NOT_FOUND", request.path)
