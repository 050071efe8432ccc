"""Minimal HTTP/1.1 server side: asyncio Protocol + httptools, keep-alive, pipelining-safe, drainable, bounded.

It parses a request, hands it to one async handler and writes the response; the gateway's logic lives in
proxy.py. Requests on one connection are answered strictly in order, with at most `MAX_PIPELINED`
waiting; a handler that answers at once is answered inline, and pending requests at most `BURST` per
event-loop turn (the proxy answers what needs no upstream on the next turn, so a pipelined flood of
those is served one per turn).

Every client is held to `limits.Limits` (nginx's defaults or stricter): the request line and headers
are bounded (414, 431) before httptools buffers more than one read beyond them, bodies are bounded per
request (413) and, while still arriving, in total across connections (503), a request must arrive
within the header and body timeouts and an idle keep-alive connection is closed after the idle timeout
(a once-a-tick sweep compares progress counters, so the hot path reads no clock), and at the connection
cap the connection that has waited longest without a request in service is closed to admit the new
one. A refusal is written after the answers owed and closes as a lingering close. What the limits
closed is logged as one summary line at most every `NOTE_INTERVAL` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Final, cast

import httptools

from mlrollout_serving.sockets import bound_unread_replies

from .limits import BODY as _BODY
from .limits import HEAD as _HEAD
from .limits import IDLE as _IDLE
from .limits import REFUSED as _REFUSED
from .limits import Limits, stall_limit

__all__ = ["BURST", "MAX_PIPELINED", "Handler", "HttpServerProtocol", "Reply", "Request", "Response", "ServerState"]

log = logging.getLogger("mlrollout.gateway")

_REASONS: Final = {
    200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed", 408: b"Request Timeout",
    413: b"Payload Too Large", 414: b"URI Too Long", 429: b"Too Many Requests", 431: b"Request Header Fields Too Large",
    500: b"Internal Server Error", 502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout",
}  # fmt: skip
CHUNK_OVERHEAD: Final = 16
"""Bytes of chunk framing (size line, CRLFs) allowed per chunk of a chunked body, beyond `max_head`."""
MAX_PIPELINED: Final = 128
"""Requests one connection may have waiting behind the one in service (pipelining); beyond: 429."""
BURST: Final = 16
"""Requests one connection gets answered in one event-loop turn; the rest wait a turn, so a pipelined
flood of cheap-to-send, costly-to-answer requests (/metrics) cannot hold the loop for everyone else."""
NOTE_INTERVAL: Final = 10.0
"""Seconds between two summary lines (what the limits closed; requests a fallback answered or refused)."""
LIMITS_NOTES: Final = "client limits closed connections"
FALLBACK_NOTES: Final = "requests not answered by their track (track reason -> what answered)"
"""The summary of the proxy's fallbacks: a client's 503 `refuse` or a fallback's answer, with its cause."""


class Request:
    """One parsed request: raw method, target, lower-cased header names, body, and the client's address."""

    __slots__ = ("body", "client", "headers", "keep_alive", "method", "target")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool,
        client: str = "",
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.client = client

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


class _Refuse(Exception):
    """Raised in a parser callback to answer the request with a 4xx/5xx and close the connection."""

    def __init__(self, status: int, message: str, headers: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class ServerState:
    """Shared by all connections: the handler, the limits, open connections, the draining flag."""

    def __init__(self, handler: Handler, limits: Limits | None = None) -> None:
        self.handler = handler
        self.limits = limits or Limits()
        self.connections: set[HttpServerProtocol] = set()
        self.draining = False
        self.idle_event = asyncio.Event()
        self.buffered = 0
        """Request body bytes held over all connections (see `Limits.max_buffered`)."""
        self._notes: dict[str, dict[str, int]] = {}  # a summary line's title -> what happened -> how often
        self._noted_at = -math.inf
        self._cap_logged = False
        self._sweeper: asyncio.TimerHandle | None = None

    def busy_connections(self) -> int:
        return sum(1 for c in self.connections if c.busy)

    def drain(self) -> None:
        """Stop reusing connections: every further reply says `connection: close` and closes its connection.

        Idle keep-alive connections are not closed here (`settle` gives them time): a close races a client
        that is writing its next request on the connection at that moment, and that request fails (a reset
        or a broken pipe, which a client does not retry for a POST). The clients of an evicted pod keep their
        connections to it (kube-proxy only sends new ones elsewhere), so this race is every drain's: seen in
        e2e as two failed requests per gateway pod evicted under load."""
        self.draining = True

    async def settle(self, seconds: float) -> None:
        """Wait, at most `seconds`, for the open connections to close themselves (each after the reply to its
        next request, which tells the client); the caller closes what is left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)

    # -- timeouts --
    def start(self) -> None:
        """Sweep the connections every `Limits.tick()` seconds (closes stalled ones, writes the notes)."""
        loop = asyncio.get_running_loop()

        def tick() -> None:
            self.sweep(loop.time())
            self._sweeper = loop.call_later(self.limits.tick(), tick)

        self._sweeper = loop.call_later(self.limits.tick(), tick)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def sweep(self, now: float) -> None:
        """Close every connection that made no progress for longer than its phase allows."""
        limits = self.limits
        for conn in list(self.connections):
            if conn.observe(now):
                continue
            limit = stall_limit(limits, conn.busy, conn.write_paused, conn.reading(), conn.messages, conn.lingering)
            if limit is not None and now - conn.since >= limit[0]:
                conn.expire(limit[1], limit[0])
        self.flush_notes(now)

    # -- the connection cap --
    def make_room(self, newcomer: HttpServerProtocol) -> bool:
        """At the cap: close the connection waiting longest without a request in service; False if none."""
        if not self._cap_logged:
            self._cap_logged = True
            log.warning("connection limit %d reached: closing the longest-waiting idle or incomplete connections "
                        "to admit new ones (--max-connections; counts follow every %g s while it lasts)",
                        self.limits.max_connections, NOTE_INTERVAL)  # fmt: skip
        victims = [c for c in self.connections if c is not newcomer and c.evictable()]
        if not victims:
            self.note("refused at the connection limit")
            return False
        min(victims, key=HttpServerProtocol.waiting_since).evict()
        self.note("closed at the connection limit")
        return True

    # -- what the limits did, summarised --
    def note(self, what: str, title: str = LIMITS_NOTES) -> None:
        """Count `what` under the summary line `title` (written at most every `NOTE_INTERVAL` seconds)."""
        counts = self._notes.setdefault(title, {})
        counts[what] = counts.get(what, 0) + 1

    def flush_notes(self, now: float) -> None:
        if not self._notes or now - self._noted_at < NOTE_INTERVAL:
            return
        for title, notes in sorted(self._notes.items()):
            counts = ", ".join(f"{n} {what}" for what, n in sorted(notes.items()))
            log.warning("%s in the last %g s: %s", title, NOTE_INTERVAL, counts)
        self._notes.clear()
        self._noted_at = now


def _status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))


_STATUS_LINES: Final = {code: _status_line(code) for code in _REASONS}


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


class HttpServerProtocol(asyncio.Protocol):
    """One client connection. The common request (head and body in one read of at most `max_url` bytes)
    costs the callbacks httptools makes anyway and a few attribute updates; everything the limits need
    beyond that happens in `_receive_carefully`, for reads that continue a request or are large."""

    __slots__ = (
        "_body",
        "_careful",
        "_chunks",
        "_client",
        "_expect",
        "_head_fed",
        "_headers",
        "_keep_alive",
        "_limits",
        "_lingering",
        "_looping",
        "_max_body",
        "_max_url",
        "_n_headers",
        "_omit_body",
        "_overhead",
        "_parser",
        "_pending",
        "_reading_paused",
        "_receiving",
        "_refusal",
        "_size",
        "_state",
        "_swept",
        "_target",
        "_unusual",
        "busy",
        "messages",
        "phase",
        "since",
        "started",
        "transport",
        "write_paused",
    )

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._limits = limits = state.limits
        self._max_url, self._max_body = limits.max_url, limits.max_body
        self._parser = httptools.HttpRequestParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0  # body bytes of the request being read
        self._target = b""
        self._pending: deque[Request] = deque()
        self._keep_alive = True
        self._omit_body = False
        self._client = ""
        self._careful = False  # inside _receive_carefully's feed
        self._expect = False  # the request being read has an Expect header
        self._unusual = False  # the request being read needs the checks of _unusual_request
        self._head_fed = 0
        self._chunks = 0
        self._overhead = 0
        self._n_headers = 0
        self._receiving = 0  # body bytes of the request being read, as counted in state.buffered
        self._looping = False
        self._reading_paused = False  # also True while requests are pending, our answers wait, or a refusal
        self._refusal: bytes | None = None  # a refusal waiting for the answers before it; b"" once written
        self._lingering = False
        self._swept: tuple[bool, bool, int, int, int, int] | None = None
        self.busy = False
        self.write_paused = False
        self.phase = _IDLE  # IDLE, HEAD (a request is being read; its body too once _size > 0), REFUSED
        self.messages = 0
        self.since = self.started = asyncio.get_running_loop().time()
        """`since`: last progress seen by a sweep (the stall clock); `started`: when the current request (or
        idle period) was first seen, the age by which the connection cap picks whom to close."""
        self.transport: asyncio.Transport | None = None

    # -- asyncio.Protocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        peer = transport.get_extra_info("peername")
        self._client = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        bound_unread_replies(transport, self._limits.body_timeout)  # the gateway's send timeout
        state = self._state
        if len(state.connections) >= self._limits.max_connections and not state.make_room(self):
            limit = self._limits.max_connections
            self._reply_and_close(503, _error(f"the gateway's connection limit ({limit}) is reached; retry"), False)
            return
        state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, TimeoutError):  # the kernel's send timeout (see bound_unread_replies)
            self._state.note("send timeout")
        self._state.connections.discard(self)
        self._count_receiving(0)
        self.transport = None
        self._pending.clear()

    def pause_writing(self) -> None:
        """The client is not taking our answers fast enough: serve and read nothing more until it does."""
        self.write_paused = True
        self._sync_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._next()

    def data_received(self, data: bytes) -> None:
        if self.phase or len(data) > self._max_url:  # a request spans reads, a large read, or refused
            self._receive_carefully(data)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade_ignored(data, exc.args[0])
        except httptools.HttpParserError as exc:
            self._refuse(exc)

    def _upgrade_ignored(self, data: bytes, offset: int) -> None:
        """llhttp stops after a request asking to switch protocols (`Connection: upgrade`: WebSocket, h2c).
        It is answered over HTTP/1.1, as RFC 9110 lets a server do (so `curl --http2` on http:// still
        works), and the bytes after it are parsed as the next requests. (One with a body was refused.)"""
        while offset < len(data) and self._refusal is None and self.transport is not None:
            try:
                self._parser.feed_data(memoryview(data)[offset:])
            except httptools.HttpParserUpgrade as exc:
                offset += exc.args[0]
                continue
            except httptools.HttpParserError as exc:
                self._refuse(exc)
            return

    def _receive_carefully(self, data: bytes) -> None:
        """Feed a read that continues a request (or is large), keeping what httptools and we hold bounded:
        a head still unfinished after `max_head` bytes (plus one read) is refused, so is chunk framing
        beyond its allowance, and the bodies being received count against `max_buffered`."""
        if self._refusal is not None:  # refused: what follows is not parsed (see _reply_and_close)
            return
        continuing, size, limits = self.phase == _HEAD, self._size, self._limits
        self._careful = self._unusual = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._careful = False
            self._upgrade_ignored(data, exc.args[0])
            return
        except httptools.HttpParserError as exc:
            self._refuse(exc)
            return
        finally:
            self._careful = False
        if self.phase != _HEAD:
            self._count_receiving(0)
            return
        if continuing and not self._size:  # the whole read belongs to a head still not complete
            self._head_fed += len(data)
            if self._head_fed > limits.max_head:
                self._refuse_head()
                return
        elif continuing and self._chunks:  # chunk framing and trailers are buffered (by httptools)
            self._overhead += len(data) - (self._size - size)
            if self._overhead > limits.max_head + CHUNK_OVERHEAD * self._chunks:
                self._reply_and_close(400, _error("chunk extensions or trailer fields too large"))
                return
        if self._count_receiving(self._size) and self._state.buffered > limits.max_buffered:
            self._reply_and_close(503, _error("the gateway holds too many request bodies at once; retry"))

    def _count_receiving(self, size: int) -> bool:
        """Make the request being read count `size` body bytes in state.buffered; True if that grew."""
        delta = size - self._receiving
        if delta:
            self._receiving = size
            self._state.buffered += delta
        return delta > 0

    def _refuse_head(self) -> None:
        limits = self._limits
        if len(self._target) > limits.max_url:
            self._reply_and_close(414, _error(f"request target longer than {limits.max_url} bytes"))
        else:
            self._reply_and_close(431, _error(f"request line and headers larger than {limits.max_head} bytes"))

    def _refuse(self, exc: Exception) -> None:
        cause = exc.__context__
        if isinstance(cause, _Refuse):
            self._reply_and_close(cause.status, _error(cause.message), headers=cause.headers)
        else:
            self._reply_and_close(400, _error(f"bad HTTP request: {exc}"))

    # -- httptools callbacks (a request costs on_url, on_header each, on_headers_complete, on_body and
    # on_message_complete) --
    def on_url(self, url: bytes) -> None:
        self._target += url  # a request line split over two reads arrives in pieces
        self.phase = _HEAD

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self._headers.append((name, value))
        if name == b"expect":
            self._expect = True

    def on_headers_complete(self) -> None:
        if self._expect:
            self._expect = False
            self._answer_expectation()

    def _answer_expectation(self) -> None:
        """``Expect: 100-continue`` (curl sends it before large bodies): refuse a declared body over the limit
        now (413, before it is sent), else say ``100 Continue`` so the client sends it without waiting out its
        own timer. Not to HTTP/1.0 clients (RFC 9110 15.2.1), nor while answers to earlier pipelined requests
        are due (they come first; the client's timer then sends the body). Other expectations are ignored."""
        headers = self._headers
        # (a trailer field named Expect sets the flag after this request's head: the next head finds none)
        expectation = next((value for name, value in reversed(headers) if name == b"expect"), b"")
        if expectation.strip().lower() != b"100-continue" or self._parser.get_http_version() != "1.1":
            return
        length = next((value for name, value in headers if name == b"content-length"), None)
        if length is not None and (len(length) > 18 or int(length) > self._max_body):  # llhttp checked: digits
            raise _Refuse(413, f"request body larger than {self._max_body} bytes")
        if not self.busy and not self._pending and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_chunk_header(self) -> None:
        if not self._chunks:
            self._n_headers = len(self._headers)  # what follows the last chunk are trailer fields
            self._unusual = True
        self._chunks += 1

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._size += len(body)
        if self._size > self._max_body:
            raise _Refuse(413, f"request body larger than {self._max_body} bytes")

    def on_message_complete(self) -> None:
        parser = self._parser
        headers = self._headers
        if parser.should_upgrade():  # CONNECT, or Connection: upgrade with Upgrade
            self._upgrade_requested(headers)
        if self._unusual:
            self._unusual_request(headers)
        body = b"".join(self._body) if len(self._body) != 1 else self._body[0]
        request = Request(parser.get_method(), self._target, headers, body, parser.should_keep_alive(), self._client)
        self.phase = _IDLE
        self.messages += 1
        self._target = b""
        self._headers = []
        self._body = []
        self._size = 0
        if self.busy or self._reading_paused:
            if len(self._pending) >= MAX_PIPELINED:
                raise _Refuse(429, f"more than {MAX_PIPELINED} pipelined requests wait for their answers")
            self._pending.append(request)  # answered in order; nothing more is read until it is
            self._sync_reading()
            if not self.busy and len(self._pending) == 1:
                asyncio.get_running_loop().call_soon(self._next)
            return
        self._dispatch(request)

    def _unusual_request(self, headers: list[tuple[bytes, bytes]]) -> None:
        """A request that came in several or large reads is measured exactly; a chunked one loses its
        trailer fields (as nginx does)."""
        if self._careful:
            limits = self._limits
            if len(self._target) > limits.max_url:
                raise _Refuse(414, f"request target longer than {limits.max_url} bytes")
            if len(self._target) + sum(len(k) + len(v) + 4 for k, v in headers) + 16 > limits.max_head:
                raise _Refuse(431, f"request line and headers larger than {limits.max_head} bytes")
        if self._chunks:
            del headers[self._n_headers :]
            self._chunks = self._overhead = 0
        self._head_fed = 0
        self._unusual = self._careful  # the next request in this read is read carefully too

    def _upgrade_requested(self, headers: list[tuple[bytes, bytes]]) -> None:
        """CONNECT is refused; another upgrade is ignored (see `_upgrade_ignored`) unless the request has a
        body, which llhttp would hand over as the new protocol's bytes."""
        if self._parser.get_method() == b"CONNECT":
            raise _Refuse(405, "CONNECT is not allowed: this is not a proxy", b"allow: GET, HEAD, POST\r\n")
        for name, value in headers:
            if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
                raise _Refuse(400, "protocol upgrades are not supported, and this request has a body")

    # -- serving --
    def _dispatch(self, request: Request) -> None:
        self.busy = True
        self._keep_alive = request.keep_alive
        self._omit_body = request.method == b"HEAD"
        try:
            self._state.handler(request, self.respond)
        except Exception:
            log.exception("unhandled error answering %s", request.target[:200].decode(errors="replace"))
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
        body = response.body
        transport.write(
            b"".join(
                (
                    _STATUS_LINES.get(status) or _status_line(status),
                    response.headers,
                    b"connection: close\r\n" if close else b"",
                    b"content-length: %d\r\n\r\n" % len(body),
                    b"" if self._omit_body else body,
                )
            )
        )
        if close:
            self.close()
        elif self._reading_paused:  # requests pending, our answers waiting, or a refusal owed
            self._next()
            return
        self._check_drained()

    def _next(self) -> None:
        """Serve pending pipelined requests in order: a loop, not recursion, for handlers that answer at once,
        and at most `BURST` of them per event-loop turn."""
        if self._looping:
            return
        self._looping = True
        try:
            served = 0
            while self._pending and not self.busy and not self.write_paused:
                transport = self.transport
                if transport is None or transport.is_closing():
                    return
                if served == BURST:
                    asyncio.get_running_loop().call_soon(self._next)
                    return
                served += 1
                self._dispatch(self._pending.popleft())
        finally:
            self._looping = False
        if self._refusal is not None and not self.busy and not self._pending:
            self._write_refusal()
            return
        self._sync_reading()
        self._check_drained()

    def _sync_reading(self) -> None:
        """Read while there is nothing queued to answer and the client takes our answers."""
        transport = self.transport
        if transport is None:
            return
        # lingering after a refusal: read, to drop
        paused = not self.lingering and (self.write_paused or bool(self._pending) or self._refusal is not None)
        if paused != self._reading_paused:
            self._reading_paused = paused
            if paused:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def _check_drained(self) -> None:
        if self._state.draining and not self._state.busy_connections():
            self._state.idle_event.set()

    def _reply_and_close(self, status: int, body: bytes, linger: bool = True, headers: bytes = b"") -> None:
        """Refuse: answer `status` and close, after the answers still owed to earlier pipelined requests.

        With `linger` (a client that may still be sending) the close is a lingering one, as nginx's: our
        side is shut after the answer and whatever the client still sends is read and dropped until it
        closes (at most the body timeout), because closing a socket with unread input resets the
        connection, and the reset can destroy the answer before the client has read it."""
        self._lingering = linger
        self.phase = _REFUSED
        self._count_receiving(0)  # the refused request's body so far is dropped
        self._body = []
        self._size = 0
        self._refusal = (
            _STATUS_LINES[status] + headers + b"content-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n" % len(body) + body
        )
        if self.busy or self._pending:
            self._sync_reading()
            return
        self._write_refusal()

    def _write_refusal(self) -> None:
        transport = self.transport
        if transport is None or self._refusal is None:
            return
        transport.write(self._refusal)
        if not self._lingering or not transport.can_write_eof():
            self.close()
            return
        self._refusal = b""  # written: from now on, reads are dropped
        transport.write_eof()
        self._sync_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- limits (called by ServerState) --
    def reading(self) -> int:
        """Where the connection is in reading a request, for the timeouts: IDLE, HEAD, BODY or REFUSED."""
        return _BODY if self.phase == _HEAD and self._size else self.phase

    def observe(self, now: float) -> bool:
        """Record progress since the last sweep; True when there was some (the stall clock restarts)."""
        transport = self.transport
        backlog = transport.get_write_buffer_size() if self.write_paused and transport is not None else 0
        seen = (self.busy, self.write_paused, self.reading(), self.messages, self._size, backlog)
        last = self._swept
        if seen == last:
            return False
        if last is None or last[2:4] != seen[2:4]:
            self.started = now
        self._swept = seen
        self.since = now
        return True

    def evictable(self) -> bool:
        """No request in service and no answer on its way: closing it loses nothing already accepted."""
        transport = self.transport
        return (
            not self.busy
            and not self._pending
            and not self.write_paused
            and not self._refusal
            and transport is not None
            and not transport.is_closing()
        )

    @property
    def lingering(self) -> bool:
        """The refusal is written; what the client still sends is dropped until it closes."""
        return self._refusal == b""

    def waiting_since(self) -> float:
        return self.started

    def expire(self, why: str, seconds: float) -> None:
        """Close a connection that stalled: a request half-received gets 408 first; between requests it just
        closes (a client that never sent one is counted with the header timeouts)."""
        if why == "lingering close":
            self.close()
            return
        if why == "send timeout":  # our answers cannot be delivered: drop them
            self._state.note(why)
            if self.transport is not None:
                self.transport.abort()
            return
        if self.phase == _IDLE:
            if self.messages == 0:
                self._state.note(why)
            self.close()
            return
        self._state.note(why)
        self._reply_and_close(408, _error(f"request not received in time ({why}, {seconds:g} s)"), False)

    def evict(self) -> None:
        if self.phase == _IDLE or self.lingering:
            self.close()
        else:
            self._reply_and_close(503, _error("connection closed at the gateway's connection limit; retry"), False)
