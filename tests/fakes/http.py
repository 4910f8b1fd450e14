"""A small loopback HTTP server for fakes: one handler function, a thread, a URL."""

from __future__ import annotations

import json
import socket
import sys
import threading
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


class Reset(Exception):
    """Raised by a handler to drop the connection without an answer."""


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
            )
            try:
                response = handler(request)
            except Reset:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                self.connection.close()
                self.close_connection = True
                return
            self.send_response(response.status)
            for key, value in response.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)

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
