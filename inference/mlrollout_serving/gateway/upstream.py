"""Pooled keep-alive HTTP/1.1 client for upstream model servers: asyncio Protocol + httptools.

Lean on purpose (the gateway's cost per request is what the benchmark measures): the caller hands in the
complete request bytes, one connection carries one request at a time, and idle connections are reused.
Failures are mapped onto the three reasons the fallback logic distinguishes.

Two failures are retried here, because the usual cause (a pod being replaced) heals within milliseconds
and resending is safe: a connect refused, reset or aborted (nothing was sent yet) is tried again after
`CONNECT_RETRY_DELAYS`, and a reused keep-alive connection that the upstream closed before any byte of a
response arrived (it closed it while idle; or read the request and died, which is harmless for inference
requests, having no side effects) is replaced by a new connection once. Both stay inside the request's
timeout; nothing is retried after a timeout or after a response byte. The success path does no extra work.

An upstream that breaks HTTP's framing never gets a second chance on that connection: a response that
starts while none is expected (an extra response, bytes beyond a wrong content-length, anything on an
idle connection) closes the connection, failing the request it came with, and a connection is released
for reuse only after the read that completed its response was parsed to the end. Interim 1xx responses
are skipped, a response larger than `max_response` fails (502) instead of filling memory, and every
`x-mlrollout-*` header of the upstream's is dropped: the gateway sets its own (track, route version,
feedback and review ids), and an upstream's (another gateway's, or a model's) must never pass for them.
The one an upstream may send, the model server's predictions header (contract.predicted), is kept aside
for feedback, never passed on.

Each failure says whom it may be blamed on (`Blame`, for the circuit breaker): nothing of the request had
reached the upstream (`upstream`), or the request was sent and then lost (`request`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final, cast

import httptools

from ..contract.predicted import PREDICTED_HEADER
from .decide import Blame

__all__ = [
    "CONNECT_RETRY_DELAYS",
    "MAX_RESPONSE",
    "UpstreamBroken",
    "UpstreamFailure",
    "UpstreamPool",
    "UpstreamResponse",
    "UpstreamTimeout",
    "UpstreamTooLarge",
    "UpstreamUnavailable",
    "connect_retry_delay",
]

log = logging.getLogger("mlrollout.gateway")

_SKIP_HEADERS: Final = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"date"})
_OURS: Final = b"x-mlrollout-"  # every upstream header of this prefix is dropped (the module docstring)
_PREDICTED: Final = PREDICTED_HEADER.encode()
MAX_RESPONSE: Final = 64 * 1024 * 1024
"""Bytes of one upstream response (status line, headers, body) the gateway holds; beyond: 502."""
MAX_RESPONSE_HEAD: Final = 64 * 1024
"""Bytes of an upstream response's status line and headers (nginx: "upstream sent too big header")."""

# Waits before the 2nd, 3rd and 4th connection attempt: a replaced pod's successor (or kube-proxy's
# updated endpoints) is usually there within a few tens of milliseconds; longer outages are the fallback
# chain's and the circuit breaker's job.
CONNECT_RETRY_DELAYS: Final = (0.02, 0.05, 0.1)
# Connect errors that mean "nobody is accepting on that port right now" (a pod going or coming).
_RETRYABLE_CONNECT: Final = (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError)


def connect_retry_delay(
    error: OSError, retries_done: int, remaining: float, delays: Sequence[float] = CONNECT_RETRY_DELAYS
) -> float | None:
    """Seconds to wait before connecting again after a failed connect, or None to give up.

    Pure, so the rule is unit-tested. Only refused/reset/aborted connects qualify (they fail before any
    byte of the request is written); a connect that timed out is never retried (the budget is what ran
    out), nor other errors (unreachable network, unknown host) that a few milliseconds will not fix. The
    wait must end before the request's own budget (`remaining` seconds) does.
    """
    if retries_done >= len(delays) or not isinstance(error, _RETRYABLE_CONNECT):
        return None
    delay = delays[retries_done]
    return delay if delay < remaining else None


class UpstreamFailure(Exception):
    """Base of the failures that trigger the fallback chain; `reason` is the metrics label, `blame` whom the
    circuit breaker may blame (decide.py)."""

    reason = "error"
    blame: Blame = "request"


class UpstreamUnavailable(UpstreamFailure):
    """Could not connect (refused, unreachable): nothing of the request reached the upstream."""

    reason = "unavailable"
    blame: Blame = "upstream"


class UpstreamBroken(UpstreamFailure):
    """Connected, but the connection died or spoke broken HTTP before a full response."""

    reason = "error"


class UpstreamTooLarge(UpstreamFailure):
    """The upstream answered more than `max_response` bytes; like a 5xx answer, it may be the request's doing."""

    reason = "error"
    blame: Blame = "answer"


class UpstreamTimeout(UpstreamFailure):
    """No complete response within the request timeout (`connecting`: not even a connection)."""

    reason = "timeout"

    def __init__(self, message: str, connecting: bool = False) -> None:
        super().__init__(message)
        self.blame = "upstream" if connecting else "request"


class _Unsolicited(Exception):
    """A response began while none was expected."""


class _Switched(Exception):
    """The upstream answered 101 Switching Protocols, which the gateway never asks for."""


class UpstreamResponse:
    """Status, passthrough headers (already serialised) and body of one upstream response; ``predicted``: the
    value of its predictions header (contract.predicted), which is never among the passthrough headers."""

    __slots__ = ("body", "headers", "predicted", "status")

    def __init__(self, status: int, headers: bytes, body: bytes, predicted: bytes | None = None) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.predicted = predicted


Callback = Callable[["UpstreamResponse | UpstreamFailure"], None]


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_budget",
        "_callback",
        "_data",
        "_got",
        "_headers",
        "_keep_alive",
        "_parser",
        "_pool",
        "_predicted",
        "_received",
        "_response",
        "_timeout",
        "_timer",
        "closed",
        "reused",
        "transport",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self._callback: Callback | None = None
        self._data = b""
        self._timeout = 0.0
        self._budget = 0.0
        self.reused = False
        self._headers: list[bytes] = []
        self._predicted: bytes | None = None
        self._body: list[bytes] = []
        self._got = 0  # bytes of the current exchange's response so far
        self._response: UpstreamResponse | None = None  # complete, delivered once the read is parsed to its end
        self._keep_alive = False  # of that response (llhttp forgets it once the message is complete)
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
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._broken(exc)
            return
        response = self._response
        if response is None:
            if self._callback is not None:  # a response still unfinished after this read: is it too big?
                self._got += len(data)
                if self._got > MAX_RESPONSE_HEAD:
                    self._oversized()
            return
        # The read is parsed to its end with no second response in it: hand the answer over, and reuse the
        # connection only now (a release inside the parser callback let the rest of the read reach whoever
        # got the connection next).
        callback = self._callback
        self._callback = None
        self._response = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._data = b""
        if self._keep_alive and not self.closed:
            self._pool._release(self)
        else:
            self.close()
        if callback is not None:
            callback(response)

    def _oversized(self) -> None:
        """Fail a response that outgrows what the gateway holds (counted for reads that leave it unfinished,
        so never for the usual answer in one read): the whole response beyond `max_response`, or a head
        still unfinished after `MAX_RESPONSE_HEAD` bytes (either plus at most one read)."""
        name, limit = self._pool.name, self._pool.max_response
        if self._got > limit:
            self._fail(UpstreamTooLarge(f"upstream {name} answered more than {limit} bytes"))
        elif not self._body:
            self._fail(UpstreamBroken(f"upstream {name} sent a response head larger than {MAX_RESPONSE_HEAD} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(UpstreamBroken(f"upstream {self._pool.name} closed the connection"))

    # -- httptools callbacks --
    def on_message_begin(self) -> None:
        if self._callback is None or self._response is not None:
            raise _Unsolicited

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower.startswith(_OURS):
            if lower == _PREDICTED:
                self._predicted = value
        elif lower not in _SKIP_HEADERS:
            self._headers.append(b"%s: %s\r\n" % (name, value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # interim (100 Continue, 103 Early Hints): the final response follows
            if status == 101:
                raise _Switched
            self._headers = []
            self._body = []
            self._predicted = None
            return
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._response = UpstreamResponse(status, b"".join(self._headers), body, self._predicted)
        self._keep_alive = self._parser.should_keep_alive()
        self._headers = []  # reset here rather than in on_message_begin: one Python callback less
        self._body = []
        self._predicted = None

    def _broken(self, exc: Exception) -> None:
        name = self._pool.name
        cause = exc.__context__
        if isinstance(cause, _Unsolicited):
            if self._callback is None:
                log.warning("upstream %s sent data on an idle connection; closed it", name)
                self.close()
                return
            message = f"upstream {name} sent more than one response (or a wrong content-length); connection closed"
        elif isinstance(cause, _Switched) or isinstance(exc, httptools.HttpParserUpgrade):
            message = f"upstream {name} answered 101 Switching Protocols, which the gateway never asks for"
        else:
            message = f"bad HTTP from upstream {name}: {exc}"
        self._response = None
        self._fail(UpstreamBroken(message))

    # -- used by the pool --
    def send(self, data: bytes, timeout: float, callback: Callback, budget: float = 0.0) -> None:
        """Write one request; `callback` gets the response or an UpstreamFailure, exactly once. `timeout` is
        what is left of the request's `budget` (the timeout its error message names; 0: all of it)."""
        assert self.transport is not None
        self._callback = callback
        self._data = data
        self._timeout = timeout
        self._received = False
        self._got = 0
        self._budget = budget
        self._timer = self._pool.loop.call_later(timeout, self._on_timeout)
        self.transport.write(data)

    def _on_timeout(self) -> None:
        self._timer = None
        budget = self._budget or self._timeout
        self._fail(UpstreamTimeout(f"upstream {self._pool.name} did not answer within {budget:g}s"))

    def _fail(self, exc: UpstreamFailure) -> None:
        callback = self._callback
        self._callback = None
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
        self.close()  # a connection with an unfinished exchange can never be reused
        if callback is not None:
            if isinstance(exc, UpstreamBroken) and self.reused and not self._received:
                loop = self._pool.loop
                deadline = timer.when() if timer is not None else loop.time() + self._timeout
                # A kept-alive connection the upstream closed while idle (typically a draining pod, its FIN
                # crossing our write): no response byte came, so the request is sent once more, on a new
                # connection (never reused, so this happens at most once), within what is left of its budget.
                log.debug("upstream %s closed an idle keep-alive connection under a request; resending it on "
                          "a new connection", self._pool.name)  # fmt: skip
                budget = self._budget or self._timeout
                loop.create_task(self._pool._connect_and_send(self._data, deadline, callback, budget))
                return
            callback(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class UpstreamPool:
    """Keep-alive connections to one upstream `host:port`, shared by every route table that names it."""

    def __init__(self, host: str, port: int, max_idle: int = 512, max_response: int = MAX_RESPONSE) -> None:
        self.host = host
        self.port = port
        self.name = f"{host}:{port}"
        self.host_header = b"host: %s\r\n" % self.name.encode()
        self.loop = asyncio.get_running_loop()
        self._idle: deque[_Connection] = deque()
        self._max_idle = max_idle
        self.max_response = max_response
        self.closed_pool = False  # set when no route table names this upstream any more
        self.connect_retries = 0
        """Refused or reset connects retried so far (exported as a counter at scrape time)."""

    def send(self, data: bytes, timeout: float, callback: Callback) -> None:
        """Send complete request bytes; `callback` gets an UpstreamResponse or an UpstreamFailure.

        The common case (an idle keep-alive connection) runs synchronously with no task or future.
        """
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                conn.send(data, timeout, callback)
                return
        self.loop.create_task(self._connect_and_send(data, self.loop.time() + timeout, callback, timeout))

    async def request(self, data: bytes, timeout: float) -> UpstreamResponse:
        """Awaitable form of `send` for the slow paths; raises an UpstreamFailure subclass."""
        future: asyncio.Future[UpstreamResponse] = self.loop.create_future()

        def done(result: UpstreamResponse | UpstreamFailure) -> None:
            if future.done():
                return
            if isinstance(result, UpstreamFailure):
                future.set_exception(result)
            else:
                future.set_result(result)

        self.send(data, timeout, done)
        return await future

    async def _connect_and_send(self, data: bytes, deadline: float, callback: Callback, budget: float) -> None:
        """Connect (retrying as `connect_retry_delay` allows) and send; everything ends by `deadline`, the end
        of the request's `budget` seconds."""
        loop = self.loop
        retries = 0
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    _, conn = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
                break
            except TimeoutError:  # also an OS-level ETIMEDOUT: never retried
                callback(UpstreamTimeout(f"connecting to upstream {self.name} timed out", connecting=True))
                return
            except OSError as exc:
                delay = connect_retry_delay(exc, retries, deadline - loop.time())
                if delay is None:
                    attempts = f" ({retries + 1} attempts)" if retries else ""
                    callback(UpstreamUnavailable(
                        f"cannot connect to upstream {self.name}: {exc.strerror or exc}{attempts}"
                    ))  # fmt: skip
                    return
                retries += 1
                self.connect_retries += 1
                log.debug("connecting to upstream %s failed (%s); retry %d in %g ms", self.name,
                          exc.strerror or exc, retries, delay * 1000)  # fmt: skip
                await asyncio.sleep(delay)
        conn.send(data, max(deadline - loop.time(), 0.001), callback, budget)

    def _release(self, conn: _Connection) -> None:
        if len(self._idle) < self._max_idle and not self.closed_pool:
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Drop idle connections (busy ones close when their response arrives)."""
        self.closed_pool = True
        while self._idle:
            self._idle.pop().close()
