"""A small HTTP/1.1 server: an asyncio Protocol around httptools' parser.

Why not a framework: the model server's per-request budget is a few tens of microseconds, and a
framework's request objects, middleware and task per request cost more than the model itself (see
docs/serving.md, "Benchmark"). This module knows only what the server needs: keep-alive, pipelining
(answered in order), ``Expect: 100-continue``, limits on what one client may hold (:mod:`.limits`) and a
graceful drain.

Handlers return a :class:`Reply` directly, or a :class:`Deferred` one; no task and no future is created per
request, and a deferred reply is written in the same event-loop turn it resolves in.

Hostile clients: a request that breaks a limit gets a short JSON error (400 malformed, 408 too slow, 413
body, 414 target, 431 head) after any replies still owed on the connection; the connection then
*lingers* - the reply and a FIN go out, and the client's remaining input is read and dropped for a few
seconds, so the client reads the reply instead of a reset. A sweep (at most once a second) applies the
timeouts, and a full connection table closes the longest-waiting idle or incomplete connections first.
Nothing here costs the common request more than a few attribute updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, cast

import httptools

from mlrollout_serving.server.limits import (
    LINGER_SECONDS,
    Limits,
    Phase,
    eviction_rank,
    sweep_interval,
    timeout,
    victims,
)
from mlrollout_serving.sockets import bound_unread_replies

log = logging.getLogger(__name__)

REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Payload Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
PIPELINE_DEPTH = 64
"""Queued pipelined requests (or their bodies' worth of ``max_body``) above which reading pauses."""
REPORT_INTERVAL = 10.0
"""Seconds between log lines summing up refused and closed connections (one line, not one per client)."""


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


def error_reply(status: int, message: str) -> Reply:
    return Reply(status, json.dumps({"error": message}).encode())


_LENGTH = b"content-length: %d\r\n\r\n"  # the head's last line, formatted in place (no call on the hot path)


def _head(reply: Reply, close: bool) -> bytes:
    key = (reply.status, reply.content_type, close)
    prefix = _HEADS.get(key)
    if prefix is None:  # a handful of combinations: built once each
        prefix = _HEADS[key] = _head_prefix(reply.status, reply.content_type, (), close)
    if reply.headers:  # e.g. every inference answer's predictions header: after the cached lines
        extra = "".join([f"{k}: {v}\r\n" for k, v in reply.headers]).encode("latin-1")
        return b"".join((prefix, extra, _LENGTH % len(reply.body)))
    return prefix + _LENGTH % len(reply.body)


def _head_prefix(status: int, content_type: str, headers: tuple[tuple[str, str], ...], close: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}", f"content-type: {content_type}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if close:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


_HEADS: dict[tuple[int, str, bool], bytes] = {}


class _Refused(Exception):
    """Raised from a parser callback once the request is refused: httptools stops parsing at once."""


class HttpConnection(asyncio.Protocol):
    """One client connection; requests on it are answered strictly in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[tuple[Request | Reply, bool]] = deque()
        """Complete requests waiting for the ones before them (a refusal waits here as a ready reply)."""
        self.busy = False
        self.paused = False
        """Reading paused: too many pipelined requests wait."""
        self.in_message = False
        self.reading_head = False
        """Between a request's first byte and the end of its head."""
        self.proven = False
        """A request completed on this connection (so it is not a client that never sends one)."""
        self.refused = False
        """An error reply ends this connection: input is dropped, nothing more is parsed."""
        self.closed = False
        self.closed_at = 0.0
        self.write_paused_at: float | None = None
        """When the client stopped reading our replies (the transport's buffer is over its high-water mark)."""
        self._reading = True
        self._queued_bytes = 0
        self._discard_budget = 0
        self._read_len = 0
        self._head_seen = 0
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._big: bytearray | None = None
        """The body so far, once it came in more than 64 pieces."""
        self._size = 0
        self._started = 0.0
        self._method = b"GET"

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self._loop = asyncio.get_running_loop()
        self.opened = self.last_read = self.last_reply = self._loop.time()
        bound_unread_replies(self.transport, self.server.limits.send_timeout)
        self.server.accept(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, TimeoutError):  # the kernel's send timeout (see bound_unread_replies)
            self.server.note("send timeout")
        if self.closed:
            self.server.closing_count -= 1
        self.closed = True
        self.server.connections.discard(self)
        self.server.changed()

    def pause_writing(self) -> None:
        self.write_paused_at = self._loop.time()
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused_at = None
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            self._discard(len(data))
            return
        if self.closed:
            return
        self.last_read = self._loop.time()
        self._read_len = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._upgrade_ignored(memoryview(data)[e.args[0] :])
        except httptools.HttpParserError as e:
            self._parser_failed(e)
        else:
            if self.reading_head:
                self._head_unfinished(len(data))

    def _upgrade_ignored(self, rest: memoryview) -> None:
        """llhttp stops after a request asking to switch protocols (``Connection: upgrade``, e.g. h2c or
        WebSocket); it was answered over HTTP/1.1, which RFC 9110 lets a server do, and the bytes after it
        are parsed as the next requests. (A CONNECT, or an upgrade request with a body, was refused.)"""
        while rest and not self.refused and not self.closed:
            try:
                self.parser.feed_data(rest)
            except httptools.HttpParserUpgrade as e:
                rest = rest[e.args[0] :]
                continue
            except httptools.HttpParserError as e:
                self._parser_failed(e)
            return

    def _parser_failed(self, e: httptools.HttpParserError) -> None:
        if self.refused or self.closed:  # a callback refused the request and stopped the parser
            return
        # Only a callback's exception is the cause; anything else may carry an unrelated __context__.
        cause = e.__context__ if isinstance(e, httptools.HttpParserCallbackError) else None
        if cause is not None and not isinstance(cause, _Refused):
            log.error("HTTP callback failed", exc_info=cause)
            self._refuse(500, "internal server error")
        else:
            self._refuse(400, f"malformed HTTP request: {e}")

    def _head_unfinished(self, size: int) -> None:
        """A read ended inside a request head. The URL is measured as it arrives and the head once complete
        (``on_headers_complete``), but httptools buffers a header until its end: reads that lie wholly inside
        one head are counted here, so a header that never ends is cut off at most one read past the limit."""
        if len(self._url) > self.server.max_url_bytes:
            self._refuse(414, self._target_message())
            return
        if self._head_seen < 0:  # the head began inside this read: count from the next one
            self._head_seen = 0
            return
        self._head_seen += size
        if self._head_seen > self.server.max_header_bytes:
            self._refuse(431, self._head_message())

    def _head_message(self) -> str:
        return f"request line and headers are larger than the limit of {self.server.max_header_bytes} bytes"

    # --- httptools callbacks ---

    def on_message_begin(self) -> None:
        self.in_message = True
        self.reading_head = True
        self._url = b""
        self._headers = {}
        self._body = []
        self._big = None
        self._size = 0
        self._head_seen = -1
        self._started = time.perf_counter()

    def on_url(self, url: bytes) -> None:
        if not self._url:  # all of it, or its first piece (measured with the head in on_headers_complete)
            self._url = url
            return
        self._url += url  # the target arrives over several reads: measured as it grows
        if len(self._url) > self.server.max_url_bytes:
            self._refuse(414, self._target_message())
            raise _Refused

    def _target_message(self) -> str:
        return f"request target is longer than the limit of {self.server.max_url_bytes} bytes"

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.reading_head = False
        server = self.server
        self._method = method = self.parser.get_method()
        # A head that began in this read is no larger than the read: only a large read, or a head spread over
        # several, is measured.
        if self._head_seen >= 0 or self._read_len > server.small_read:
            self._measure_head(method)
        headers = self._headers
        length = headers.get("content-length")  # llhttp checked it: ASCII digits, no overflow
        if length is not None and (len(length) > 18 or int(length) > server.max_body):
            self._refuse_with(server.too_large(self._request()))
            raise _Refused
        if method == b"CONNECT" or "upgrade" in headers:
            self._upgrade_requested(method, headers, length)
        if "expect" in headers and headers["expect"].lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _measure_head(self, method: bytes) -> None:
        """Refuse a target over ``max_url_bytes`` (414) or a head over ``max_header_bytes`` (431). The head is
        counted as sent: request line, "Name: value" lines, blank line (to the byte unless the client spaced
        its headers unusually; a repeated header counts once, as only its last value is kept)."""
        server = self.server
        if len(self._url) > server.max_url_bytes:
            self._refuse(414, self._target_message())
            raise _Refused
        headers = sum(len(name) + len(value) + 4 for name, value in self._headers.items())
        if len(method) + len(self._url) + 14 + headers > server.max_header_bytes:
            self._refuse(431, self._head_message())
            raise _Refused

    def _upgrade_requested(self, method: bytes, headers: dict[str, str], length: str | None) -> None:
        """A CONNECT is refused. Any other request to switch protocols is answered over HTTP/1.1 (see
        ``_upgrade_ignored``) unless it has a body: llhttp would take the body for the new protocol's bytes."""
        if method == b"CONNECT":
            self._refuse(405, "CONNECT is not allowed: this is not a proxy")
            raise _Refused
        if self.parser.should_upgrade() and (length not in (None, "0") or "transfer-encoding" in headers):
            self._refuse(400, "protocol upgrades are not supported, and this request has a body")
            raise _Refused

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.server.max_body:
            self._refuse_with(self.server.too_large(self._request()))
            raise _Refused
        pieces = self._body
        pieces.append(body)
        if len(pieces) > 64:  # tiny chunks (chunked encoding) would cost ~40 bytes of overhead each
            self._gather()

    def _gather(self) -> None:
        """Move the body's pieces into one growing buffer."""
        if self._big is None:
            self._big = bytearray()
        self._big += b"".join(self._body)
        self._body = []

    def on_message_complete(self) -> None:
        self.in_message = False
        self.proven = True
        if self.closed:
            return
        req = self._request()
        if not self.busy and not self.queue:  # nothing ahead of it on this connection: answer at once
            self._dispatch(req, self.parser.should_keep_alive())
            return
        self.queue.append((req, self.parser.should_keep_alive()))
        self._queued_bytes += len(req.body)
        if len(self.queue) > PIPELINE_DEPTH or self._queued_bytes > self.server.max_body:
            self.paused = True  # a client pipelining without reading answers
            self._update_reading()
        if not self.busy:
            self._next()

    # --- dispatch ---

    def _request(self) -> Request:
        url = self._url.decode("latin-1")
        path, _, query = url.partition("?")
        pieces = self._body
        if self._big is not None:
            body = bytes(self._big) + b"".join(pieces)
        elif len(pieces) == 1:
            body = pieces[0]
        else:
            body = b"".join(pieces)
        return Request(self._method.decode("latin-1"), path, query, self._headers, body, self._started)

    def _next(self) -> None:
        while self.queue and not self.busy and not self.closed:
            item, keep = self.queue.popleft()
            if type(item) is Reply:
                self._write(item, keep)
            else:
                req = cast(Request, item)
                self._queued_bytes -= len(req.body)
                self._dispatch(req, keep)
        if self.paused and not self.queue and not self.closed:
            self.paused = False
            self._update_reading()

    def _dispatch(self, req: Request, keep: bool) -> None:
        try:
            result = self.server.handler(req)
        except Exception:
            log.exception("handler failed for %s %s", req.method, req.path[:200])
            result = error_reply(500, "internal server error")
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
        self.last_reply = self._loop.time()
        self.transport.write(_head(reply, close) + reply.body)
        if close:
            if self.refused:
                self._linger()
            else:
                self._close()

    # --- refusing and closing ---

    def _refuse(self, status: int, message: str) -> None:
        self._refuse_with(error_reply(status, message))

    def _refuse_with(self, reply: Reply) -> None:
        """Answer ``reply`` after the replies still owed on this connection, then close it, lingering."""
        if self.refused or self.closed:
            return
        self.refused = True
        self.in_message = self.reading_head = False
        self.parser = httptools.HttpRequestParser(self)  # drops what the old one buffered of a huge header
        # A client told 413 may still be sending the body it meant to (it reads the reply afterwards); any
        # other refused client has nothing legitimate left to send, so its input costs at most 1 MiB.
        self._discard_budget = 8 * self.server.max_body + (1 << 20) if reply.status == 413 else 1 << 20
        self.server.note(f"{reply.status} {REASONS.get(reply.status, '')}".lower())
        if self.busy or self.queue:
            self.queue.append((reply, False))
        else:
            self._write(reply, keep=False)
        self._update_reading()

    def _linger(self) -> None:
        """After the error reply: half-close, and drop input until the client closes, ``LINGER_SECONDS``
        pass (the sweep) or the discard budget is spent."""
        assert self.transport is not None
        try:
            self.transport.write_eof()
        except (OSError, RuntimeError):
            self._close()

    def _discard(self, size: int) -> None:
        self._discard_budget -= size
        if self._discard_budget < 0:
            self._close(abort=True)

    def _update_reading(self) -> None:
        """Read unless too many pipelined requests wait or the client leaves our replies unread; a refused
        connection reads on, to drop its input."""
        transport = self.transport
        if transport is None or self.closed:
            return
        want = self.refused or not (self.paused or self.write_paused_at is not None)
        if want != self._reading:
            self._reading = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def _close(self, abort: bool = False) -> None:
        """Close (or abort: drop unsent data, for a client that does not read); idempotent."""
        transport = self.transport
        if transport is None:
            return
        if not self.closed:
            self.closed = True
            self.closed_at = self._loop.time()
            self.server.closing_count += 1
            transport.close()
        if abort:
            transport.abort()

    # --- the sweep and the connection cap ---

    def phase(self) -> Phase:
        if self.busy or self.queue:
            return Phase.BUSY
        if self.refused:
            return Phase.LINGER
        if self.in_message:
            return Phase.HEAD if self.reading_head else Phase.BODY
        return Phase.IDLE if self.proven else Phase.NEW

    def age(self, phase: Phase, now: float, perf: float) -> float:
        """Seconds spent in ``phase`` (for BODY: since the last byte read)."""
        if phase is Phase.HEAD:
            return perf - self._started
        if phase is Phase.BODY:
            return now - self.last_read
        if phase is Phase.NEW:
            return now - self.opened
        return now - self.last_reply  # IDLE, LINGER (the refusal was the last reply), BUSY

    def expire(self, now: float, perf: float, limits: Limits) -> None:
        """Apply the timeouts (called by the sweep)."""
        if self.closed:  # closed, but the transport still waits to flush to a client that does not read
            if now - self.closed_at > LINGER_SECONDS:
                self._close(abort=True)
            return
        if self.write_paused_at is not None and 0 < limits.send_timeout < now - self.write_paused_at:
            self.server.note("send timeout")
            self._close(abort=True)
            return
        phase = self.phase()
        limit = timeout(phase, limits)
        if not limit or self.age(phase, now, perf) <= limit:
            return
        if phase is Phase.HEAD:
            self._refuse(408, f"the request head did not arrive in full within {limit:g} s")
        elif phase is Phase.BODY:
            self._refuse(408, f"no byte of the request body arrived for {limit:g} s")
        elif phase is Phase.NEW:
            self.server.note("closed silent")
            self._close()
        else:  # IDLE, LINGER
            self._close(abort=phase is Phase.LINGER)

    def evict(self, cap: int) -> None:
        """Close to make room at the connection cap (a request in progress is told why)."""
        if self.in_message:
            self.turn_away(cap)
        else:
            self._close(abort=self.refused or self.write_paused_at is not None)

    def turn_away(self, cap: int) -> None:
        """Answer 503 and close at once (no lingering: the point is to free the descriptor)."""
        if self.transport is not None and not self.closed:
            reply = error_reply(503, f"the server is at its limit of {cap} connections; retry")
            self.transport.write(_head(reply, True) + reply.body)
        self._close()

    @property
    def idle(self) -> bool:
        return not self.busy and not self.queue and not self.in_message

    def close_if_idle(self) -> None:
        if self.idle:
            self._close()


class HttpServer:
    """Listens, tracks connections, applies the connection limits, and drains gracefully."""

    def __init__(
        self,
        handler: Handler,
        too_large: Callable[[Request], Reply],
        max_body: int,
        limits: Limits | None = None,
    ) -> None:
        self.handler = handler
        self.too_large = too_large
        self.max_body = max_body
        self.limits = limits = limits or Limits()
        self.max_url_bytes = limits.max_url_bytes  # read on every request: plain attributes
        self.max_header_bytes = limits.max_header_bytes
        self.small_read = min(limits.max_url_bytes, limits.max_header_bytes)
        """A head that began in a read no longer than this is within both limits."""
        self.connections: set[HttpConnection] = set()
        self.closing_count = 0
        """Connections we closed whose transports have not reported the close yet (they still hold fds)."""
        self.closing = False
        """Every further reply says ``connection: close``. Set by the SIGTERM handler, before the drain runs."""
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._notes: Counter[str] = Counter()
        self._reported = 0.0
        self._cap_warned = -REPORT_INTERVAL

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpConnection(self), host, port, reuse_address=True, backlog=2048
        )
        self._reported = loop.time()
        self._timer = loop.call_later(sweep_interval(self.limits), self._sweep)

    def _sweep(self) -> None:
        """Apply every connection's timeouts; sum up what was refused in one log line now and then."""
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(sweep_interval(self.limits), self._sweep)  # first: a bug must not end it
        now, perf = loop.time(), time.perf_counter()
        for conn in list(self.connections):
            try:
                conn.expire(now, perf, self.limits)
            except Exception:
                log.exception("applying the timeouts to a connection failed")
                conn._close(abort=True)
        if self._notes and now - self._reported >= REPORT_INTERVAL:
            self._report(now)

    def note(self, what: str) -> None:
        """Count a refused or closed connection for the next summary line."""
        self._notes[what] += 1

    def _report(self, now: float) -> None:
        notes = ", ".join(f"{count} {what}" for what, count in sorted(self._notes.items()))
        level = logging.WARNING if "evicted at the connection limit" in self._notes else logging.INFO
        log.log(level, "connections refused or closed in the last %.0f s: %s", now - self._reported, notes)
        self._notes.clear()
        self._reported = now

    def accept(self, conn: HttpConnection) -> None:
        """Register a new connection; at the cap, first close the longest-waiting idle or incomplete ones."""
        cap = self.limits.max_connections
        if len(self.connections) - self.closing_count >= cap:
            self._make_room(conn, cap)
        if not conn.closed:
            self.connections.add(conn)

    def _make_room(self, new: HttpConnection, cap: int) -> None:
        loop = asyncio.get_running_loop()
        now, perf = loop.time(), time.perf_counter()
        if now - self._cap_warned >= REPORT_INTERVAL:
            self._cap_warned = now
            log.warning(
                "connection limit of %d reached: closing the longest-waiting idle or incomplete connections "
                "to make room (--max-connections, bounded by the open-files limit)",
                cap,
            )
        conns: list[HttpConnection] = []
        keys: list[tuple[int, float]] = []
        for conn in self.connections:
            if conn.closed:
                continue
            phase = conn.phase()
            rank = eviction_rank(phase, conn.proven)
            if rank is not None:
                conns.append(conn)
                keys.append((rank, conn.age(phase, now, perf)))
        chosen = victims(keys, cap)
        for i in chosen:
            conns[i].evict(cap)
        if chosen:
            self._notes["evicted at the connection limit"] += len(chosen)
        else:  # every connection is being answered: turn the new one away
            self._notes["turned away at the connection limit"] += 1
            new.turn_away(cap)

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
        if self._timer is not None:
            self._timer.cancel()
        return drained
