"""Long-running operations: reading their state and following them to the end."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from dicom_bq.clients.retry import POLL_BACKOFF, Backoff, Clock, SystemClock
from dicom_bq.errors import EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT

PERMISSION_DENIED = 7  # google.rpc.Code
# OperationMetadata.apiMethodName of dicomStores.export ends with this ("google.cloud.healthcare.
# v1.dicom.DicomService.ExportDicomData").
EXPORT_METHOD = "DicomService.ExportDicomData"
# Google keeps an operation about 30 days after it ends
# (https://cloud.google.com/healthcare-api/docs/how-tos/long-running-operations): 20 pages of 100
# is more than a dataset's exports in that time.
LISTING_PAGES = 20


class OperationLister(Protocol):
    def list_operations(self, dataset: str, page_token: str | None = None) -> dict[str, Any]: ...


def export_operations(lister: OperationLister, dataset: str) -> list[dict[str, Any]]:
    """The export operations operations.list gives for the dataset, page after page."""
    return list_exports(lister, dataset)[0]


def list_exports(lister: OperationLister, dataset: str) -> tuple[list[dict[str, Any]], bool]:
    """The dataset's export operations, and whether that is all of them (False when more than
    LISTING_PAGES pages are listed: the rest is not read)."""
    found: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(LISTING_PAGES):
        page = lister.list_operations(dataset, token)
        for operation in page.get("operations") or []:
            method = str((operation.get("metadata") or {}).get("apiMethodName") or "")
            if method.endswith(EXPORT_METHOD):
                found.append(operation)
        token = page.get("nextPageToken")
        if not token:
            return found, True
    return found, False


def rfc3339(text: object) -> datetime.datetime | None:
    """A timestamp as Google writes them (RFC 3339: Z, optional fraction), or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class OperationSource(Protocol):
    def get_operation(self, name: str) -> dict[str, Any]: ...


def _count(counter: dict[str, Any], key: str) -> int:
    # int64 fields travel as JSON strings.
    return int(counter.get(key) or 0)


@dataclass(frozen=True)
class OperationState:
    name: str
    done: bool
    success: int
    failure: int
    pending: int
    logs_url: str | None
    error_code: int | None
    error_message: str | None
    response: dict[str, Any] | None
    # OperationMetadata.createTime and endTime (RFC 3339), as Google writes them (healthcare v1
    # discovery document, schemas.OperationMetadata); endTime only once the operation is done.
    create_time: str | None = None
    end_time: str | None = None

    @classmethod
    def from_api(cls, operation: dict[str, Any]) -> OperationState:
        metadata = operation.get("metadata") or {}
        counter = metadata.get("counter") or {}
        error = operation.get("error")
        return cls(
            name=str(operation.get("name", "")),
            done=bool(operation.get("done", False)),
            success=_count(counter, "success"),
            failure=_count(counter, "failure"),
            pending=_count(counter, "pending"),
            logs_url=metadata.get("logsUrl"),
            error_code=int(error.get("code", 2)) if error else None,
            error_message=str(error.get("message", "")) if error else None,
            response=operation.get("response"),
            create_time=metadata.get("createTime"),
            end_time=metadata.get("endTime"),
        )

    @property
    def state(self) -> str:
        if not self.done:
            return "RUNNING"
        if self.error_code is not None:
            return "FAILED"
        return "DONE_WITH_FAILURES" if self.failure else "SUCCEEDED"

    @property
    def exit_code(self) -> int:
        if not self.done:
            return EXIT_TIMEOUT
        return EXIT_FAILED if self.error_code is not None or self.failure else EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        return {
            "operation": self.name,
            "done": self.done,
            "state": self.state,
            "success": self.success,
            "failure": self.failure,
            "pending": self.pending,
            "logs_url": self.logs_url,
            "create_time": self.create_time,
            "end_time": self.end_time,
            "error": (
                {"code": self.error_code, "message": self.error_message}
                if self.error_code is not None
                else None
            ),
        }


@dataclass
class Follower:
    """Polls an operation with capped exponential backoff until it is done or time runs out."""

    source: OperationSource
    backoff: Backoff = POLL_BACKOFF
    clock: Clock | None = None
    polls: int = 0

    def follow(
        self,
        name: str,
        timeout: float | None,
        on_update: Callable[[OperationState, float], None] | None = None,
    ) -> OperationState:
        clock = self.clock or SystemClock()
        started = clock.monotonic()
        delays = self.backoff.delays()
        while True:
            state = OperationState.from_api(self.source.get_operation(name))
            self.polls += 1
            elapsed = clock.monotonic() - started
            if on_update:
                on_update(state, elapsed)
            if state.done:
                return state
            delay = next(delays)
            if timeout is not None:
                remaining = timeout - elapsed
                if remaining <= 0:
                    return state
                delay = min(delay, remaining)
            clock.sleep(delay)
