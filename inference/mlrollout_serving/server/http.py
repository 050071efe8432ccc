"""A small HTTP/1.1 server: an asyncio Protocol around httptools' parser.

Why not a framework: the model server's per-request budget is a few tens of microseconds, and a
framework's request objects, middleware and task per request cost more than the model itself (see
docs/serving.md, "Benchmark"). This module knows only what the server needs: keep-alive, pipelining
(answered in order), ``Expect: 100-continue``, a body size limit (413) and a graceful drain.

Handlers return a :class:`Reply` directly, or a :class:`Deferred` one; no task and no future is created per
request, and a deferred reply is written in the same event-loop turn it resolves in.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, cast

import httptools

log = logging.getLogger(__name__)

REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    """Header names in lower case."""
    body: bytes
    started: float
    """``time.perf_counter()`` when the request began to arrive."""


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


class Deferred:
    """A reply computed later. Unlike an asyncio future, it calls its callback synchronously when resolved
    (a future defers callbacks to the next event-loop turn: one more hop per request). Awaitable, for
    callers outside the HTTP layer."""

    __slots__ = ("_callbacks", "_reply")

    def __init__(self) -> None:
        self._reply: Reply | None = None
        self._callbacks: list[Callable[[Reply], object]] = []

    def resolve(self, reply: Reply) -> None:
        """Set the reply (only the first call counts) and run the callbacks."""
        if self._reply is not None:
            return
        self._reply = reply
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(reply)

    def then(self, callback: Callable[[Reply], object]) -> None:
        """Call ``callback(reply)`` once resolved (at once if it already is)."""
        if self._reply is not None:
            callback(self._reply)
        else:
            self._callbacks.append(callback)

    def __await__(self) -> Generator[Any, None, Reply]:
        if self._reply is None:
            future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
            self.then(future.set_result)
            return (yield from future.__await__())
        return self._reply


Handler = Callable[[Request], "Reply | Deferred"]


_LENGTH = b"content-length: %d\r\n\r\n"  # the head's last line, formatted in place (no call on the hot path)


def _head(reply: Reply, close: bool) -> bytes:
    if reply.headers:
        return _head_prefix(reply.status, reply.content_type, reply.headers, close) + _LENGTH % len(reply.body)
    key = (reply.status, reply.content_type, close)
    prefix = _HEADS.get(key)
    if prefix is None:  # a handful of combinations: built once each
        prefix = _HEADS[key] = _head_prefix(reply.status, reply.content_type, (), close)
    return prefix + _LENGTH % len(reply.body)


def _head_prefix(status: int, content_type: str, headers: tuple[tuple[str, str], ...], close: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}", f"content-type: {content_type}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if close:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


_HEADS: dict[tuple[int, str, bool], bytes] = {}


class HttpConnection(asyncio.Protocol):
    """One client connection; requests on it are answered strictly in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[tuple[Request, bool]] = deque()
        self.busy = False
        self.paused = False
        self.in_message = False
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._started = 0.0
        self._rejected = False

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self._loop = asyncio.get_running_loop()
        self.last_active = self._loop.time()
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self.server.changed()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_active = self._loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as e:
            if not self.closed:
                self._fail(400, f"malformed HTTP request: {e}")

    # --- httptools callbacks ---

    def on_message_begin(self) -> None:
        self.in_message = True
        self._url = b""  # what _reset() does, inline: this runs for every request
        self._headers = {}
        self._body = []
        self._size = 0
        self._rejected = False
        self._started = time.perf_counter()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.server.max_body:
            self._too_large()
        elif self._headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.closed:
            return
        self._size += len(body)
        if self._rejected:
            if self._size > 8 * self.server.max_body + (1 << 20):
                self._close()  # stop swallowing a body that will not end
        elif self._size > self.server.max_body:
            self._too_large()
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        if self.closed or self._rejected:
            self._close()
            return
        req = self._request()
        if not self.busy and not self.queue:  # nothing ahead of it on this connection: answer at once
            self._dispatch(req, self.parser.should_keep_alive())
            return
        self.queue.append((req, self.parser.should_keep_alive()))
        if len(self.queue) > 64 and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()  # a client pipelining without reading answers
        if not self.busy:
            self._next()

    # --- dispatch ---

    def _request(self) -> Request:
        url = self._url.decode("latin-1")
        path, _, query = url.partition("?")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        method = self.parser.get_method().decode("latin-1")
        return Request(method, path, query, self._headers, body, self._started)

    def _next(self) -> None:
        while self.queue and not self.busy and not self.closed:
            self._dispatch(*self.queue.popleft())
        if self.paused and not self.queue and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def _dispatch(self, req: Request, keep: bool) -> None:
        try:
            result = self.server.handler(req)
        except Exception:
            log.exception("handler failed for %s %s", req.method, req.path)
            result = Reply(500, b'{"error": "internal server error"}')
        if type(result) is Reply:
            self._write(result, keep)
        else:
            self.busy = True
            cast(Deferred, result).then(functools.partial(self._finished, keep=keep))

    def _finished(self, reply: Reply, keep: bool) -> None:
        self.busy = False
        self._write(reply, keep)
        self._next()
        if self.server.closing:
            self.server.changed()

    def _write(self, reply: Reply, keep: bool) -> None:
        if self.closed or self.transport is None:
            return
        close = not keep or self.server.closing
        if self.server.closing:
            # Stop listening before the first drain reply goes out: a client that reconnects after
            # ``connection: close`` is then refused, never queued in the backlog and reset.
            self.server.stop_accepting()
        self.last_active = self._loop.time()
        self.transport.write(_head(reply, close) + reply.body)
        if close:
            self._close()

    def _too_large(self) -> None:
        """Answer 413 at once, then swallow the rest of the body before closing.

        Closing with unread data would make the kernel reset the connection, and a client still
        sending its body would see the reset instead of the 413.
        """
        if self._rejected:
            return
        self._rejected = True
        self._body = []
        if self.transport is not None:
            reply = self.server.too_large(self._request())
            self.transport.write(_head(reply, close=True) + reply.body)

    def _fail(self, status: int, message: str) -> None:
        import json

        self._write(Reply(status, json.dumps({"error": message}).encode()), keep=False)
        self._close()

    def _close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    @property
    def idle(self) -> bool:
        return not self.busy and not self.queue and not self.in_message

    def close_if_idle(self) -> None:
        if self.idle:
            self._close()


class HttpServer:
    """Listens, tracks connections, and drains them gracefully."""

    def __init__(
        self,
        handler: Handler,
        too_large: Callable[[Request], Reply],
        max_body: int,
        keepalive_timeout: float = 75.0,
    ) -> None:
        self.handler = handler
        self.too_large = too_large
        self.max_body = max_body
        self.keepalive_timeout = keepalive_timeout
        self.connections: set[HttpConnection] = set()
        self.closing = False
        """Every further reply says ``connection: close``. Set by the SIGTERM handler, before the drain runs."""
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Event()

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpConnection(self), host, port, reuse_address=True, backlog=2048
        )
        if self.keepalive_timeout > 0:
            loop.call_later(self.keepalive_timeout / 4, self._reap_idle)

    def _reap_idle(self) -> None:
        """Close keep-alive connections idle for longer than ``keepalive_timeout`` (file descriptors are
        finite; clients reconnect). The timeout is longer than common load-balancer idle timeouts (60 s)
        so the client side normally closes first."""
        if self.closing:
            return
        loop = asyncio.get_running_loop()
        cutoff = loop.time() - self.keepalive_timeout
        for conn in list(self.connections):
            if conn.idle and conn.last_active < cutoff:
                conn._close()
        loop.call_later(self.keepalive_timeout / 4, self._reap_idle)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def stop_accepting(self) -> None:
        """Close the listening socket (idempotent); open connections stay."""
        if self._server is not None:
            self._server.close()

    def changed(self) -> None:
        self._changed.set()

    async def shutdown(self, grace: float, idle_linger: float = 0.5) -> bool:
        """Stop accepting, let in-flight requests finish (answered with ``connection: close``).

        Idle keep-alive connections get ``idle_linger`` seconds to send one last request (a client may
        have written it already) before they are closed. Returns True when everything drained in time.
        """
        self.closing = True
        self.stop_accepting()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        linger_end = loop.time() + min(idle_linger, grace)
        while self.connections and loop.time() < deadline:
            if loop.time() >= linger_end:
                for conn in list(self.connections):
                    conn.close_if_idle()
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=0.05)
        drained = not self.connections
        for conn in list(self.connections):
            conn._close()
        return drained
