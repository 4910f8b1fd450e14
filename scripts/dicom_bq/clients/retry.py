"""Backoff for polling and for retrying transient faults, on an injectable clock."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

from dicom_bq.texts import printable

T = TypeVar("T")

# Transient answers worth another try; 400, 401, 403, 404 and 409 are not.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class Backoff:
    """Exponential delays, capped, each shortened by up to `jitter` of itself.

    Jitter only shortens a delay, so the cap is also the longest a finished operation can go
    unnoticed.
    """

    initial: float = 1.0
    factor: float = 2.0
    cap: float = 20.0
    jitter: float = 0.05

    def delays(self, rand: Callable[[], float] = random.random) -> Iterator[float]:
        delay = self.initial
        while True:
            yield delay * (1 - self.jitter * rand())
            delay = min(self.cap, delay * self.factor)


POLL_BACKOFF = Backoff(initial=1.0, factor=2.0, cap=20.0, jitter=0.05)
FAULT_BACKOFF = Backoff(initial=0.5, factor=2.0, cap=8.0, jitter=0.5)
PERMISSION_BACKOFF = Backoff(initial=10.0, factor=1.5, cap=60.0, jitter=0.2)


class TransientError(Exception):
    """A fault that may pass: a 429 or 5xx answer, a reset connection, a read timeout."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass
class RetryPolicy:
    attempts: int = 6
    backoff: Backoff = FAULT_BACKOFF
    clock: Clock | None = None

    def run(self, call: Callable[[], T], on_retry: Callable[[str, float], None] | None = None) -> T:
        """`call()`, retried on TransientError up to `attempts` times in all."""
        clock = self.clock or SystemClock()
        delays = self.backoff.delays()
        for attempt in range(1, self.attempts + 1):
            try:
                return call()
            except TransientError as error:
                if attempt == self.attempts:
                    raise
                delay = next(delays)
                if on_retry:
                    on_retry(error.description, delay)
                clock.sleep(delay)
        raise AssertionError("unreachable")


def connection_failure(error: BaseException) -> str:
    """Why a connection of google-cloud-bigquery or -storage failed, shortly: urllib3's reason
    (a refused or timed-out connection) rather than requests' whole retry story, which names
    the URL again."""
    while isinstance(getattr(error, "cause", None), BaseException):  # a RetryError's last
        error = error.cause  # type: ignore[attr-defined]
    reason = getattr(error.args[0], "reason", None) if error.args else None
    shown = reason if isinstance(reason, BaseException) else error
    return f"{type(error).__name__}: {printable(str(shown), 300)}"
