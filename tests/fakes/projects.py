"""Resource Manager's projects.get, and IAM policies where preflight reads them, on top of the
loopback fakes of tests/fakes/cloud_resources.py (preflight) and tests/fakes/iam.py (audit).

projects.get (cloudresourcemanager v1, GET v1/projects/{projectId}) answers a Project with its
`projectNumber`; a project that does not exist, or that the caller may not see, answers 403
(https://cloud.google.com/resource-manager/reference/rest/v1/projects/get).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tests.fakes.cloud_resources import FakeCloudResources, match
from tests.fakes.discovery import schema_problems
from tests.fakes.http import Request, Response
from tests.fakes.iam import FakeIam

PROJECTS_GET = "cloudresourcemanager.projects.get"


def project_answer(numbers: dict[str, str], denied: set[str], project: str) -> Response:
    if project in denied or project not in numbers:
        return Response.error(
            403,
            "PERMISSION_DENIED",
            f"The caller does not have permission (projects/{project}), or it does not exist",
        )
    return Response.json(
        {
            "projectNumber": numbers[project],
            "projectId": project,
            "lifecycleState": "ACTIVE",
            "name": project,
        }
    )


def _projects_get(request: Request) -> str | None:
    """The project a request reads with projects.get, as Google's discovery document routes it;
    None for any other request."""
    found = match(request.method, request.path)
    if found is None or found[0].method_id != PROJECTS_GET:
        return None
    return found[1][0]


@dataclass
class FakeIamWithProjects(FakeIam):
    """FakeIam (policies and roles) that also answers projects.get."""

    # Project ID -> number.
    numbers: dict[str, str] = field(default_factory=dict)
    # Projects whose projects.get answers 403 though they have a number.
    hidden: set[str] = field(default_factory=set)

    def handle(self, request: Request) -> Response:
        project = _projects_get(request)
        if project is None:
            return super().handle(request)
        self.requests.append(request)
        return _checked(project_answer(self.numbers, self.hidden, project), self.problems)


@dataclass
class FakePreflightCloud(FakeCloudResources):
    """FakeCloudResources (what preflight reads) that also answers projects.get, and the IAM
    policies of projects, buckets, topics and keys through a FakeIam's tables (`iam`)."""

    numbers: dict[str, str] = field(default_factory=dict)
    hidden: set[str] = field(default_factory=set)
    iam: FakeIam = field(default_factory=FakeIam)

    def handle(self, request: Request) -> Response:
        project = _projects_get(request)
        if project is not None:
            self.requests.append((PROJECTS_GET, request))
            return _checked(project_answer(self.numbers, self.hidden, project), self.problems)
        if ":getIamPolicy" in request.path or request.path.endswith("/iam"):
            # Routed, checked (version 3, the request's shape) and answered by the IAM fake.
            answer = self.iam.handle(request)
            self.requests.append(("getIamPolicy", request))
            self.problems += self.iam.problems
            self.iam.problems.clear()
            return answer
        return super().handle(request)


def _checked(response: Response, problems: list[str]) -> Response:
    """A Project answer must be one the real API could give (cloudresourcemanager v1 Project)."""
    if response.status == 200:
        problems += schema_problems(
            "cloudresourcemanager", "v1", "Project", json.loads(response.body)
        )
    return response
