"""Delivering one body to one URL: the `Poster` interface and its standard-library implementation.

`UrllibPoster` runs `urllib` in a worker thread (the operator has no asynchronous HTTP client at run time,
and urllib honours the cluster's HTTPS_PROXY / NO_PROXY). Every outcome is a value (`Attempt`), never an
exception: the notifier counts and reports it. Redirects are not followed blindly: a 307 or 308 to the
same scheme, host and port is followed (at most three times, the body sent again); any other redirect is
refused, a cross-host one because it would hand the body (and whatever the URL's path carries) to a host
the Secret never named, and 301/302/303 because they turn a POST into a GET.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
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


OPENER = urllib.request.build_opener(_NoRedirect)


def post_once(url: str, body: bytes, timeout: float) -> tuple[int, str | None]:
    """The status and Location of one POST (urllib raises HTTPError for >= 300, caught by the caller)."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": USER_AGENT}
    )
    with OPENER.open(request, timeout=timeout) as response:
        response.read(65536)
        return int(response.status), None


def post_sync(url: str, body: bytes, timeout: float) -> Attempt:
    """One delivery attempt, following same-origin 307/308 redirects only."""
    bad = check_url(url)
    if bad is not None:
        return Attempt("bad_url", bad, retry=False)
    target = url.strip()
    for _ in range(MAX_REDIRECTS + 1):
        try:
            status, _location = post_once(target, body, timeout)
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
        except (OSError, ValueError) as exc:  # connection reset, malformed answer, invalid URL parts
            return Attempt("unreachable", f"{type(exc).__name__}: {exc}", retry=True)
    return Attempt("redirect_refused", f"more than {MAX_REDIRECTS} redirects", retry=False)


class UrllibPoster:
    """`Poster` on urllib in a thread; the attempt's time limit bounds it from outside too, so an endpoint
    that trickles bytes cannot hold a worker longer than about twice the limit."""

    async def post(self, url: str, body: bytes, timeout: float) -> Attempt:
        try:
            return await asyncio.wait_for(asyncio.to_thread(post_sync, url, body, timeout), timeout * 2 + 1)
        except TimeoutError:
            return Attempt("timeout", f"no complete answer within {timeout * 2 + 1:g}s", retry=True)
