"""Delivering one body to one URL: the `Poster` interface and its standard-library implementation.

`UrllibPoster` runs `urllib` in a worker thread (the operator has no asynchronous HTTP client at run time,
and urllib honours the cluster's HTTPS_PROXY / NO_PROXY). urllib's timeout bounds each socket operation, not
the exchange: an endpoint that trickles a byte just in time would hold the thread for ever, and a thread
cannot be stopped from outside. So every exchange (`OPENER` with a `Deadline`) has a total deadline inside
the thread: when it passes its sockets are shut down and the thread returns at once.

Every outcome is a value (`Attempt`), never an exception: the notifier counts and reports it. Redirects
are not followed blindly: a 307 or 308 to the
same scheme, host and port is followed (at most three times, the body sent again); any other redirect is
refused, a cross-host one because it would hand the body (and whatever the URL's path carries) to a host
the Secret never named, and 301/302/303 because they turn a POST into a GET.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Protocol

Result = Literal["delivered", "timeout", "http_error", "redirect_refused", "unreachable", "bad_url", "secret_error"]
"""How a delivery ended (the `result` label of the operator's notification counter, with `dropped` for a full
queue); `secret_error` is the notifier's: the URL could not be read."""
MAX_REDIRECTS: Final = 3
USER_AGENT: Final = "mlrollout-operator (notifications)"


@dataclass(frozen=True)
class Attempt:
    """The outcome of one attempt: what happened, in words for an Event, and whether another may help."""

    result: Result
    detail: str
    retry: bool


class Poster(Protocol):
    """POST a JSON body to a URL within a time limit."""

    async def post(self, url: str, body: bytes, timeout: float) -> Attempt: ...


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be a sink's URL (None: it can). Never echoes the URL: it may carry a token."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        return f"the URL's scheme is {parts.scheme or 'missing'!r}, not http or https"
    if not parts.hostname:
        return "the URL has no host"
    return None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hand every 3xx back to the caller as an HTTPError (which then decides, see the module)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Deadline:
    """A total time limit on one exchange, connection to last byte (a context manager: the clock runs inside
    the ``with``). When it passes, every socket it watches is shut down, so the thread reading it wakes at once
    with an error; ``expired`` then says the error is the deadline's."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.expired = seconds, False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    # the plain socket's shutdown (not SSLSocket's, which would drop its TLS state under the reading thread);
    # a socket closed meanwhile has no descriptor any more (OSError), never another's
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class DeadlineRequest(urllib.request.Request):
    """A POST of JSON whose exchange is bounded by ``deadline`` (through `OPENER`)."""

    def __init__(self, url: str, body: bytes, user_agent: str, deadline: Deadline) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": user_agent}
        super().__init__(url, data=body, method="POST", headers=headers)
        self.deadline = deadline


class _HTTPConnection(http.client.HTTPConnection):
    deadline: Deadline | None = None

    def connect(self) -> None:
        super().connect()
        if self.deadline is not None:
            self.deadline.watch(self.sock)


class _HTTPSConnection(http.client.HTTPSConnection):
    deadline: Deadline | None = None

    def connect(self) -> None:
        """`HTTPSConnection.connect` with the socket watched before the TLS handshake (which can trickle too)."""
        http.client.HTTPConnection.connect(self)
        host = self._tunnel_host or self.host  # type: ignore[attr-defined]
        context = self._context  # type: ignore[attr-defined]
        self.sock = context.wrap_socket(self.sock, server_hostname=host, do_handshake_on_connect=False)
        if self.deadline is not None:
            self.deadline.watch(self.sock)
        self.sock.do_handshake()


def _factory(cls: type[_HTTPConnection] | type[_HTTPSConnection], req: urllib.request.Request) -> Any:
    """The connection class urllib's `do_open` calls, given the request's deadline."""

    def connection(host: str, **kwargs: Any) -> http.client.HTTPConnection:
        conn = cls(host, **kwargs)
        conn.deadline = getattr(req, "deadline", None)
        return conn

    return connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_factory(_HTTPConnection, req), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_factory(_HTTPSConnection, req), req, context=self._context)  # type: ignore[attr-defined]


OPENER = urllib.request.build_opener(_NoRedirect, _HTTPHandler, _HTTPSHandler)
"""urllib's opener that follows no redirect and honours a `DeadlineRequest`'s deadline."""


def error_detail(exc: Exception) -> str:
    """An exception in words for a log, a status or an Event. Never the message of an InvalidURL or a ValueError:
    they quote the URL's path (and a token it may carry)."""
    if isinstance(exc, (ValueError, http.client.InvalidURL)):
        return f"{type(exc).__name__}: the URL or the answer is malformed (details withheld: they quote the URL)"
    return f"{type(exc).__name__}: {exc}"


def post_once(url: str, body: bytes, timeout: float, deadline: Deadline) -> tuple[int, str | None]:
    """The status and Location of one POST (urllib raises HTTPError for >= 300, caught by the caller)."""
    with OPENER.open(DeadlineRequest(url, body, USER_AGENT, deadline), timeout=timeout) as response:
        response.read(65536)
        return int(response.status), None


def post_sync(url: str, body: bytes, timeout: float) -> Attempt:
    """One delivery attempt, following same-origin 307/308 redirects only, all within ``timeout``."""
    bad = check_url(url)
    if bad is not None:
        return Attempt("bad_url", bad, retry=False)
    with Deadline(timeout) as deadline:
        attempt = _post(url.strip(), body, timeout, deadline)
    if deadline.expired:  # whatever the cut read raised, or an answer cut short
        return Attempt("timeout", f"no answer within {timeout:g}s", retry=True)
    return attempt


def _post(target: str, body: bytes, timeout: float, deadline: Deadline) -> Attempt:
    for _ in range(MAX_REDIRECTS + 1):
        try:
            status, _location = post_once(target, body, timeout, deadline)
            return Attempt("delivered", f"HTTP {status}", retry=False)
        except urllib.error.HTTPError as exc:
            code = exc.code
            location = exc.headers.get("Location") if exc.headers else None
            exc.close()
            if 300 <= code < 400:
                if not location:
                    return Attempt("redirect_refused", f"HTTP {code} without a Location", retry=False)
                following = urllib.parse.urljoin(target, location)
                if _origin(following) != _origin(target):
                    host = urllib.parse.urlsplit(following).hostname or "?"
                    return Attempt(
                        "redirect_refused",
                        f"HTTP {code} redirects to another host ({host}); cross-host redirects are not followed",
                        retry=False,
                    )
                if code not in (307, 308):
                    return Attempt(
                        "redirect_refused", f"HTTP {code} would turn the POST into a GET; not followed", retry=False
                    )
                target = following
                continue
            return Attempt("http_error", f"HTTP {code} {exc.reason}", retry=code == 429 or code >= 500)
        except TimeoutError:
            return Attempt("timeout", f"no answer within {timeout:g}s", retry=True)
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                return Attempt("timeout", f"no answer within {timeout:g}s", retry=True)
            return Attempt("unreachable", f"cannot connect: {exc.reason}", retry=True)
        except (OSError, ValueError, http.client.HTTPException) as exc:  # reset, malformed answer, invalid URL
            return Attempt("unreachable", error_detail(exc), retry=True)
    return Attempt("redirect_refused", f"more than {MAX_REDIRECTS} redirects", retry=False)


class UrllibPoster:
    """`Poster` on urllib in a thread of the loop's default executor. No outer time limit: `post_sync` returns
    by its deadline, and the notifier's workers bound how many threads post at once."""

    async def post(self, url: str, body: bytes, timeout: float) -> Attempt:
        return await asyncio.to_thread(post_sync, url, body, timeout)
