"""The HTTP transport under the discovery clients: each request sent as meant, once.

httplib2 (0.32.1, under googleapiclient and google-auth-httplib2) sends a request a second time
on its own, whatever its method, when the server closes the connection without a status line:
`Http._conn_request` catches BadStatusLine (http.client's RemoteDisconnected, or a status line cut
short) from `conn.getresponse()` and, on the first try, "retry[s] regardless of the number of
RETRIES set" (`i = 0; seen_bad_status_line = True; conn.close(); conn.connect(); continue`).
The module-wide `httplib2.RETRIES` cannot turn that off: the branch resets its counter. When the
server had read and processed the first request, that resend is a second export, a second store,
a second STOW-RS. RFC 9110 section 9.2.2: "A user agent SHOULD NOT automatically retry a request
with a non-idempotent method unless it has some means to know that the request semantics are
actually idempotent"; RFC 9112 section 9.3.1 says the same of retrying after a lost connection.

So, with the production path unchanged (googleapiclient -> google_auth_httplib2.AuthorizedHttp ->
httplib2 -> http.client):
- a request whose method is not idempotent (RFC 9110 9.2.2: all but GET, HEAD, OPTIONS, TRACE,
  PUT, DELETE) goes out on a new connection, so a closed connection can only mean the server
  dropped this request, never a stale kept-alive one; and its connection refuses to connect or
  send again until an answer was read: httplib2's resend ends in AnswerLostError instead;
- a connection that was in use when an exception came (an error, a timeout, a KeyboardInterrupt)
  is closed and forgotten, so the next request never reads the previous one's late answer
  (httplib2 itself only drops the connection on socket.timeout: `Http.request`, `is_timeout`).

Idempotent requests keep httplib2's behaviour, its one resend on a stale connection included.
"""

from __future__ import annotations

import http.client
import sys
from typing import Any

import httplib2

# RFC 9110 section 9.2.2 (Idempotent Methods).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class AnswerLostError(httplib2.HttpLib2Error):  # type: ignore[misc]
    """A non-idempotent request was sent and its answer never came; the transport would have sent
    it again (httplib2 on a BadStatusLine), and did not. The server may have acted on it."""


class _SendOnce:
    """Mixed into httplib2's connection classes: once a non-idempotent request is on the wire,
    the connection neither reconnects nor sends again before its answer has been read."""

    unanswered: str | None = None  # "POST /path" sent, answer not read yet

    def connect(self) -> None:
        self._refuse_resend()
        super().connect()  # type: ignore[misc]

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> None:
        self._refuse_resend()
        if method.upper() not in IDEMPOTENT_METHODS:
            self.unanswered = f"{method.upper()} {url.split('?', 1)[0]}"
        super().request(method, url, *args, **kwargs)  # type: ignore[misc]

    def getresponse(self) -> http.client.HTTPResponse:
        response: http.client.HTTPResponse = super().getresponse()  # type: ignore[misc]
        self.unanswered = None
        return response

    def _refuse_resend(self) -> None:
        if self.unanswered is None:
            return
        # Called by httplib2 inside its `except` for the lost answer: name what it was.
        lost = sys.exc_info()[1]
        why = f"{type(lost).__name__}: {lost}" if lost is not None else "no answer"
        raise AnswerLostError(
            f"{self.unanswered} was sent and the connection ended before its answer ({why}); "
            "it is not sent again, since the server may have acted on it"
        )


_GUARDED: dict[type, type] = {}


def _guard(connection: Any) -> None:
    """Give a connection httplib2 made (HTTPConnectionWithTimeout, HTTPSConnectionWithTimeout,
    or a caller's connection_type) the _SendOnce behaviour, in place: the class is chosen by
    httplib2 from the URL it is finally given, so it is adopted rather than replaced."""
    cls = type(connection)
    if issubclass(cls, _SendOnce):
        return
    if cls not in _GUARDED:
        _GUARDED[cls] = type(f"SendOnce{cls.__name__}", (_SendOnce, cls), {})
    connection.__class__ = _GUARDED[cls]


class SendOnceHttp(httplib2.Http):  # type: ignore[misc]
    """httplib2.Http that never resends a non-idempotent request and never reuses a connection
    that was in use when an exception came. Not shared between threads (neither is Http)."""

    connections: dict[str, Any]  # Http's kept-alive connections, by "scheme:authority"

    def request(
        self,
        uri: str,
        method: str = "GET",
        body: Any = None,
        headers: dict[str, str] | None = None,
        redirections: int = httplib2.DEFAULT_MAX_REDIRECTS,
        connection_type: Any = None,
    ) -> tuple[Any, bytes]:
        if method.upper() not in IDEMPOTENT_METHODS:
            self.drop_connections()
        try:
            response, content = super().request(
                uri, method, body, headers, redirections, connection_type
            )
        except BaseException:
            self.drop_connections()
            raise
        return response, content

    def _conn_request(
        self, conn: Any, request_uri: str, method: str, body: Any, headers: Any
    ) -> tuple[Any, bytes]:
        """httplib2's one exchange on `conn`, its resend loop included (Http._conn_request);
        the guarded connection turns a resend of a non-idempotent request into AnswerLostError."""
        _guard(conn)
        response, content = super()._conn_request(conn, request_uri, method, body, headers)
        return response, content

    def drop_connections(self) -> None:
        """Close and forget every kept-alive connection (Http.close() would also forget
        credentials and certificates)."""
        connections, self.connections = self.connections, {}
        for connection in connections.values():
            connection.close()
