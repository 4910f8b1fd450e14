"""A loopback Cloud Scheduler: the jobs `dicom-bq status` reads.

Every request is matched to a method of Google's cloudscheduler v1 discovery document (HTTP verb
and flatPath); an unknown route is a 400 recorded in `problems`, as is a job the test built with
a field the Job schema lacks (so tests cannot invent fields Google never sends). Only jobs.get
answers; the other methods change jobs, which `status` must never call, so they are problems too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from tests.fakes.discovery import document, schema_problems
from tests.fakes.http import LoopbackFake, Request, Response

API, VERSION = "cloudscheduler", "v1"


@cache
def routes() -> list[tuple[str, str, re.Pattern[str]]]:
    """(method id, HTTP verb, path pattern) of every jobs and locations method."""
    doc = document(API, VERSION)
    locations = doc["resources"]["projects"]["resources"]["locations"]
    methods = [
        *locations["methods"].values(),
        *locations["resources"]["jobs"]["methods"].values(),
    ]
    table = []
    for method in methods:
        parts = re.split(r"\{[^}]+\}", method["flatPath"])
        # ":" ends a segment: "jobs/{jobsId}:pause" is not "jobs/{jobsId}".
        regex = "([^/:]+)".join(re.escape(part) for part in parts)
        table.append((method["id"], method["httpMethod"], re.compile(f"^/{regex}$")))
    return table


def job_document(
    name: str,
    *,
    state: str = "ENABLED",
    user_update_time: str,
    last_attempt_time: str | None = None,
    schedule_time: str | None = None,
    status: dict[str, Any] | None = None,
    schedule: str = "0 2 * * *",
    time_zone: str = "Europe/Paris",
) -> dict[str, Any]:
    """A Job as jobs.get answers it (cloudscheduler v1 discovery, schemas.Job): output-only
    fields are left out until they exist; a last attempt that succeeded has a Status of code 0,
    which proto3 JSON writes as {} (code.proto: OK = 0)."""
    job: dict[str, Any] = {
        "name": name,
        "schedule": schedule,
        "timeZone": time_zone,
        "state": state,
        "userUpdateTime": user_update_time,
        "httpTarget": {"httpMethod": "POST", "uri": "https://healthcare.googleapis.com/v1/x"},
    }
    if last_attempt_time is not None:
        job["lastAttemptTime"] = last_attempt_time
        job["status"] = status if status is not None else {}
    if schedule_time is not None:
        job["scheduleTime"] = schedule_time
    return job


@dataclass
class FakeCloudScheduler(LoopbackFake):
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # job name -> Job
    # Job names the caller may not read: 403 PERMISSION_DENIED, as IAM refuses
    # cloudscheduler.jobs.get (roles/cloudscheduler.viewer holds it).
    denied: set[str] = field(default_factory=set)
    requests: list[tuple[str, Request]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    url: str = ""

    def handle(self, request: Request) -> Response:
        for method_id, verb, pattern in routes():
            found = pattern.match(request.path)
            if verb == request.method and found:
                self.requests.append((method_id, request))
                return self._answer(method_id, request.path.removeprefix("/v1/"))
        self.problems.append(f"no discovery method for {request.method} {request.path}")
        return Response.error(400, "INVALID_ARGUMENT", f"unknown route {request.path}")

    def _answer(self, method_id: str, name: str) -> Response:
        if method_id != "cloudscheduler.projects.locations.jobs.get":
            self.problems.append(f"status must only read jobs, it called {method_id}")
            return Response.error(400, "INVALID_ARGUMENT", f"{method_id} is not served here")
        if name in self.denied:
            return Response.error(
                403,
                "PERMISSION_DENIED",
                f"Permission 'cloudscheduler.jobs.get' denied on resource '{name}' (or it may "
                "not exist).",
            )
        job = self.jobs.get(name)
        if job is None:
            return Response.error(404, "NOT_FOUND", f"Job not found: {name}.")
        problems = schema_problems(API, VERSION, "Job", job)
        if problems:
            self.problems += problems
            return Response.error(500, "INTERNAL", "; ".join(problems))
        return Response.json(job)
