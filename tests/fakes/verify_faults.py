"""Ctrl-C at the worst moments of `verify`, against the fake Healthcare API.

The interrupt is a real SIGINT sent to the main thread, where the test runs the CLI: Python
raises KeyboardInterrupt wherever the command is then, as it does at a terminal. It is sent by the
fake itself while it handles a chosen request, so it comes at a known point of the exchange: after
Google acted on the request (`processed=True`) or without it ever acting (`processed=False`), in
both cases before its answer is sent. The answer is held back for a while after that, so it is
still "on its way" when the command is interrupted: a client that read it later on a reused
connection would take it for the answer to its next request.

Faults at the HTTP level (500s, answers lost after processing) are FakeHealthcare's own `faults`.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.conftest import Cloud
from tests.fakes.healthcare import FakeHealthcare
from tests.fakes.http import Request, Response

# Longer than the command needs to notice the SIGINT; the client is gone when it ends.
ANSWER_HELD_BACK = 5.0


def interrupt_main_thread() -> None:
    """Ctrl-C: SIGINT to the main thread (pthread_kill), so its blocking read is interrupted and
    Python's default handler raises KeyboardInterrupt there."""
    main = threading.main_thread().ident
    assert main is not None
    signal.pthread_kill(main, signal.SIGINT)


@dataclass
class Interrupt:
    method: str
    path: str  # a regular expression for the whole request path ("/v1/projects/...")
    processed: bool = True  # Google acts on the request before Ctrl-C comes
    times: int = 1


@dataclass
class InterruptingHealthcare(FakeHealthcare):
    interrupts: list[Interrupt] = field(default_factory=list)
    interrupted: list[Request] = field(default_factory=list)  # the requests Ctrl-C cut short

    def handle(self, request: Request) -> Response:
        rule = self._take_interrupt(request)
        if rule is None:
            return super().handle(request)
        if rule.processed:
            response = super().handle(request)
        else:
            with self.lock:
                self.requests.append(request)  # it reached Google, which did nothing yet
            response = Response.error(503, "UNAVAILABLE", "Google had not acted on it")
        with self.lock:
            self.interrupted.append(request)
        interrupt_main_thread()
        time.sleep(ANSWER_HELD_BACK)
        return response

    def _take_interrupt(self, request: Request) -> Interrupt | None:
        with self.lock:
            for rule in self.interrupts:
                if (
                    rule.times > 0
                    and rule.method == request.method
                    and re.fullmatch(rule.path, request.path)
                ):
                    rule.times -= 1
                    return rule
        return None


def interrupting_healthcare(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> Iterator[InterruptingHealthcare]:
    """The cloud's fake Healthcare API, replaced by one that can interrupt: same stores, Orthanc,
    storage emulator, BigQuery fake and virtual clock (for a fixture: it yields, then stops it)."""
    # The SIGINT goes to the main thread, with Python's own handler: the test must run there.
    assert threading.current_thread() is threading.main_thread()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    old = cloud.healthcare
    fake = InterruptingHealthcare(
        bigquery=old.bigquery,
        orthanc_url=old.orthanc_url,
        storage_url=old.storage_url,
        clock=old.clock,
        stores=set(old.stores),
        store_configs=dict(old.store_configs),
    ).start()
    cloud.healthcare = fake
    monkeypatch.setenv("HEALTHCARE_EMULATOR_HOST", fake.url)
    try:
        yield fake
    finally:
        fake.stop()
