"""A small loopback HTTP server for fakes: one handler function, a thread, a URL.

A handler may also end the exchange at the socket level, after it read (and processed) the
request, by raising a SocketFault: what a client library sees then is what it would see from a
real server or middlebox, so its own reaction (a hidden resend, a reused connection) is tested.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    body: bytes
    target: str = ""  # the request target as sent: path and query
    port: int = 0  # the client's TCP port: one per connection

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, document: Any, status: int = 200) -> Response:
        return cls(status, json.dumps(document).encode(), {"Content-Type": "application/json"})

    @classmethod
    def error(cls, status: int, reason: str, message: str) -> Response:
        return cls.json({"error": {"code": status, "status": reason, "message": message}}, status)


class SocketFault(Exception):
    """Raised by a handler to end the exchange at the socket level instead of answering.

    - "close": a graceful close (FIN) without a status line; http.client raises
      RemoteDisconnected, a BadStatusLine, which httplib2 sends again on its own.
    - "reset": a TCP reset (SO_LINGER 0); http.client raises ConnectionResetError.
    - "partial": the status line cut short (b"HTTP/1.1 20"), then a FIN: BadStatusLine.
    - "hang": no answer at all for `seconds` (the client's timeout fires first), then a FIN.
    """

    KINDS = ("close", "reset", "partial", "hang")

    def __init__(self, kind: str, seconds: float = 0.0) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"no socket fault {kind!r}: choose one of {self.KINDS}")
        super().__init__(kind)
        self.kind = kind
        self.seconds = seconds


class Reset(SocketFault):
    """Raised by a handler to drop the connection with a TCP reset, without an answer."""

    def __init__(self) -> None:
        super().__init__("reset")


Handler = Callable[[Request], Response]
FakeT = TypeVar("FakeT", bound="LoopbackFake")


class _RecordingServer(ThreadingHTTPServer):
    """socketserver prints a handler's exception to sys.stderr, which is the CLI's stderr while
    CliRunner runs a command; so failures are kept here instead and raised by LoopbackFake.stop().
    A client that drops its connection (a retried timeout, a reset) is not a failure of the fake."""

    errors: list[BaseException]

    def handle_error(self, request: Any, client_address: Any) -> None:

        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, ConnectionError):
            self.errors.append(error)


def serve(handler: Handler) -> tuple[_RecordingServer, str]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The headers and the body go out as two writes on a kept-alive connection: with Nagle's
        # algorithm the body waits for the client's delayed ACK of the headers, several ms per
        # request (socketserver.StreamRequestHandler sets TCP_NODELAY when this is true).
        disable_nagle_algorithm = True

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            request = Request(
                self.command,
                parts.path,
                parse_qs(parts.query),
                {k.lower(): v for k, v in self.headers.items()},
                body,
                self.path,
                int(self.client_address[1]),
            )
            try:
                response = handler(request)
            except SocketFault as fault:
                self._drop(fault)
                return
            self.send_response(response.status)
            for key, value in response.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)

        def _drop(self, fault: SocketFault) -> None:
            """End the exchange without a complete status line; the request was read whole, so
            closing sends a FIN (unread bytes in the receive buffer would turn it into a RST)."""
            self.close_connection = True
            if fault.kind == "reset":
                # struct linger {l_onoff=1, l_linger=0}: close() sends RST (socket(7)).
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
                return
            if fault.kind == "partial":
                self.wfile.write(b"HTTP/1.1 20")
                self.wfile.flush()
            elif fault.kind == "hang":
                time.sleep(fault.seconds)
            # "close", and the end of the others: StreamRequestHandler.finish() flushes, then
            # socketserver's shutdown_request() does shutdown(SHUT_WR) and close(): a FIN.

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = _RecordingServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.errors = []
    # A short poll interval: shutdown() waits up to one interval, and fakes stop after each test.
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class LoopbackFake:
    """start() serves `handle` on 127.0.0.1 and sets `url`; stop() shuts it down."""

    url: str

    def handle(self, request: Request) -> Response:
        raise NotImplementedError

    def start(self: FakeT) -> FakeT:
        self.server, self.url = serve(self.handle)
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.server.errors:
            raise AssertionError(f"{type(self).__name__} failed while serving") from (
                self.server.errors[0]
            )


@dataclass
class RequestRecorder(LoopbackFake):
    """Stands in for every Google API in a test that proves nothing is sent: it records each
    request and answers 500, so a request that should not have been made fails the command too
    (and the test's `requests == []` names what was sent)."""

    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def handle(self, request: Request) -> Response:
        self.requests.append(request)
        return Response.error(500, "INTERNAL", "this test expects no request at all")


@dataclass
class ProxyFault:
    """A socket fault for the first `times` requests whose method and path match; with `after`,
    the request reaches the upstream first and only its answer is lost."""

    method: str
    path_contains: str
    kind: str  # a SocketFault kind
    after: bool = True
    times: int = 1
    seconds: float = 0.0


@dataclass
class FaultProxy(LoopbackFake):
    """Forwards every request to a real peer (the storage emulator) and records it; a matching
    ProxyFault ends the exchange at the socket level instead of answering, before or after the
    peer acted on the request. What reached the peer is `forwarded`."""

    upstream: str
    faults: list[ProxyFault] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    forwarded: list[Request] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, request: Request) -> Response:
        import http.client

        with self.lock:
            self.requests.append(request)
            fault = next(
                (
                    f
                    for f in self.faults
                    if f.times > 0
                    and f.method == request.method
                    and f.path_contains in request.path
                ),
                None,
            )
            if fault is not None:
                fault.times -= 1
        if fault is not None and not fault.after:
            raise SocketFault(fault.kind, fault.seconds)
        parts = urlsplit(self.upstream)
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        skip = {"host", "content-length", "connection", "transfer-encoding"}
        headers = {k: v for k, v in request.headers.items() if k not in skip}
        try:
            connection.request(request.method, request.target, request.body or None, headers)
            answer = connection.getresponse()
            body = answer.read()
            status = answer.status
            # A resumable upload's session URI (Location) names the peer: keep it on the proxy.
            kept = {
                k: v.replace(self.upstream, self.url) if k.lower() == "location" else v
                for k, v in answer.getheaders()
                if k.lower() not in skip
            }
        finally:
            connection.close()
        with self.lock:
            self.forwarded.append(request)
        if fault is not None:
            raise SocketFault(fault.kind, fault.seconds)
        return Response(status, body, kept)
