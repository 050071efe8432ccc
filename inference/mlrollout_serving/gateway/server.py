"""Minimal HTTP/1.1 server side: asyncio Protocol + httptools, keep-alive, pipelining-safe, drainable.

It parses a request, hands it to one async handler and writes the response; the gateway's logic lives in
proxy.py. Requests on one connection are answered strictly in order.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Final, cast

import httptools

__all__ = ["Handler", "HttpServerProtocol", "Reply", "Request", "Response", "ServerState"]

log = logging.getLogger("mlrollout.gateway")

_REASONS: Final = {
    200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
    413: b"Payload Too Large", 500: b"Internal Server Error", 502: b"Bad Gateway",
    503: b"Service Unavailable", 504: b"Gateway Timeout",
}  # fmt: skip
MAX_BODY: Final = 64 * 1024 * 1024  # bytes; larger request bodies get 413


class Request:
    """One parsed request: raw method, target, lower-cased header names, body."""

    __slots__ = ("body", "headers", "keep_alive", "method", "target")

    def __init__(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes, keep_alive: bool
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class Response:
    """Status, extra header block (serialised `name: value\\r\\n` lines) and body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: bytes, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


Reply = Callable[[Response], None]
Handler = Callable[[Request, Reply], None]
"""Called once per request; must call the reply callable exactly once (now or later)."""


class ServerState:
    """Shared by all connections: the handler, open connections, and the draining flag."""

    def __init__(self, handler: Handler, max_body: int = MAX_BODY) -> None:
        self.handler = handler
        self.max_body = max_body
        self.connections: set[HttpServerProtocol] = set()
        self.draining = False
        self.idle_event = asyncio.Event()

    def busy_connections(self) -> int:
        return sum(1 for c in self.connections if c.busy)

    def drain(self) -> None:
        """Stop reusing connections: idle ones close now, busy ones after their current response."""
        self.draining = True
        for conn in list(self.connections):
            if not conn.busy:
                conn.close()


def _status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))


_STATUS_LINES: Final = {code: _status_line(code) for code in _REASONS}


class HttpServerProtocol(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_headers",
        "_keep_alive",
        "_loop",
        "_parser",
        "_pending",
        "_size",
        "_state",
        "_target",
        "busy",
        "transport",
    )

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._target = b""
        self._pending: deque[Request] = deque()
        self._keep_alive = True
        self.busy = False
        self.transport: asyncio.Transport | None = None

    # -- asyncio.Protocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self._state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._state.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reply_and_close(400, b'{"error": "protocol upgrades are not supported"}')
        except httptools.HttpParserError as exc:
            if self._size > self._state.max_body:
                limit = f"request body larger than {self._state.max_body} bytes"
                self._reply_and_close(413, json.dumps({"error": limit}).encode())
                return
            self._reply_and_close(400, json.dumps({"error": f"bad HTTP request: {exc}"}).encode())

    # -- httptools callbacks --
    def on_url(self, url: bytes) -> None:
        self._target = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._size += len(body)
        if self._size > self._state.max_body:
            raise httptools.HttpParserError("request body too large")

    def on_message_complete(self) -> None:
        body = b"".join(self._body) if len(self._body) != 1 else self._body[0]
        request = Request(
            self._parser.get_method(), self._target, self._headers, body, self._parser.should_keep_alive()
        )
        self._headers = []  # reset here rather than in on_message_begin: one Python callback less
        self._body = []
        self._size = 0
        if self.busy:
            self._pending.append(request)
            if len(self._pending) > 32 and self.transport is not None:
                self.transport.pause_reading()
            return
        self._dispatch(request)

    # -- serving --
    def _dispatch(self, request: Request) -> None:
        self.busy = True
        self._keep_alive = request.keep_alive
        try:
            self._state.handler(request, self.respond)
        except Exception:
            log.exception("unhandled error answering %s", request.target.decode(errors="replace"))
            self.respond(Response(500, b"", b'{"error": "internal gateway error"}'))

    def respond(self, response: Response) -> None:
        """Write the answer to the request being served, then start on the next pipelined one."""
        transport = self.transport
        if not self.busy:
            return
        self.busy = False
        if transport is None:
            self._check_drained()
            return
        close = not self._keep_alive or self._state.draining
        status = response.status
        transport.write(
            b"".join(
                (
                    _STATUS_LINES.get(status) or _status_line(status),
                    response.headers,
                    b"connection: close\r\n" if close else b"",
                    b"content-length: %d\r\n\r\n" % len(response.body),
                    response.body,
                )
            )
        )
        if close:
            self.close()
        elif self._pending:
            request = self._pending.popleft()
            if len(self._pending) <= 8 and not transport.is_reading():
                transport.resume_reading()
            self._dispatch(request)
            return
        self._check_drained()

    def _check_drained(self) -> None:
        if self._state.draining and not self._state.busy_connections():
            self._state.idle_event.set()

    def _reply_and_close(self, status: int, body: bytes) -> None:
        if self.transport is not None:
            self.transport.write(
                _STATUS_LINES[status] + b"content-type: application/json\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n" % len(body) + body
            )
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
