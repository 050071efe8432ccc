"""Pooled keep-alive HTTP/1.1 client for upstream model servers: asyncio Protocol + httptools.

Lean on purpose (the gateway's cost per request is what the benchmark measures): the caller hands in the
complete request bytes, one connection carries one request at a time, and idle connections are reused.
Failures are mapped onto the three reasons the fallback logic distinguishes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final, cast

import httptools

__all__ = [
    "UpstreamBroken",
    "UpstreamFailure",
    "UpstreamPool",
    "UpstreamResponse",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]

_SKIP_HEADERS: Final = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"date"})


class UpstreamFailure(Exception):
    """Base of the failures that trigger the fallback chain; `reason` is the metrics label."""

    reason = "error"


class UpstreamUnavailable(UpstreamFailure):
    """Could not connect (refused, unreachable)."""

    reason = "unavailable"


class UpstreamBroken(UpstreamFailure):
    """Connected, but the connection died or spoke broken HTTP before a full response."""

    reason = "error"


class UpstreamTimeout(UpstreamFailure):
    """No complete response within the request timeout."""

    reason = "timeout"


class UpstreamResponse:
    """Status, passthrough headers (already serialised) and body of one upstream response."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: bytes, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_headers",
        "_parser",
        "_pool",
        "_received",
        "_timer",
        "_waiter",
        "closed",
        "transport",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[UpstreamResponse] | None = None
        self._headers: list[bytes] = []
        self._body: list[bytes] = []
        self._received = False
        self._timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False

    # -- asyncio.Protocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamBroken(f"bad HTTP from upstream {self._pool.name}: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(UpstreamBroken(f"upstream {self._pool.name} closed the connection"))

    # -- httptools callbacks --
    def on_message_begin(self) -> None:
        self._headers = []
        self._body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in _SKIP_HEADERS:
            self._headers.append(b"%s: %s\r\n" % (name, value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiter = None
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        response = UpstreamResponse(self._parser.get_status_code(), b"".join(self._headers), body)
        if self._parser.should_keep_alive():
            self._pool._release(self)
        else:
            self.close()
        waiter.set_result(response)

    # -- used by the pool --
    def send(self, data: bytes, timeout: float) -> asyncio.Future[UpstreamResponse]:
        assert self.transport is not None
        waiter: asyncio.Future[UpstreamResponse] = self._pool.loop.create_future()
        self._waiter = waiter
        self._received = False
        self._timer = self._pool.loop.call_later(timeout, self._on_timeout, timeout)
        self.transport.write(data)
        return waiter

    def _on_timeout(self, timeout: float) -> None:
        self._timer = None
        self._fail(UpstreamTimeout(f"upstream {self._pool.name} did not answer within {timeout:g}s"))
        self.close()

    def _fail(self, exc: UpstreamFailure) -> None:
        waiter = self._waiter
        self._waiter = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.closed or not isinstance(exc, UpstreamTimeout):
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class UpstreamPool:
    """Keep-alive connections to one upstream `host:port`, shared by every route table that names it."""

    def __init__(self, host: str, port: int, max_idle: int = 512) -> None:
        self.host = host
        self.port = port
        self.name = f"{host}:{port}"
        self.host_header = b"host: %s\r\n" % self.name.encode()
        self.loop = asyncio.get_running_loop()
        self._idle: deque[_Connection] = deque()
        self._max_idle = max_idle

    async def request(self, data: bytes, timeout: float) -> UpstreamResponse:
        """Send complete request bytes and return the response; raise an UpstreamFailure subclass."""
        deadline = self.loop.time() + timeout
        while self._idle:
            conn = self._idle.pop()
            if conn.closed:
                continue
            try:
                return await conn.send(data, timeout)
            except UpstreamBroken:
                # A reused connection the upstream closed while idle: safe to retry on a fresh one,
                # because the upstream never answered (conn._received is False).
                if conn._received:
                    raise
        remaining = deadline - self.loop.time()
        conn = await self._connect(remaining)
        return await conn.send(data, max(deadline - self.loop.time(), 0.001))

    async def _connect(self, timeout: float) -> _Connection:
        try:
            async with asyncio.timeout(max(timeout, 0.001)):
                _, protocol = await self.loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"connecting to upstream {self.name} timed out") from exc
        except OSError as exc:
            raise UpstreamUnavailable(f"cannot connect to upstream {self.name}: {exc.strerror or exc}") from exc
        return protocol

    def _release(self, conn: _Connection) -> None:
        if len(self._idle) < self._max_idle and not self.closed_pool:
            self._idle.append(conn)
        else:
            conn.close()

    closed_pool = False

    def close(self) -> None:
        """Drop idle connections (busy ones close when their response arrives)."""
        self.closed_pool = True
        while self._idle:
            self._idle.pop().close()
