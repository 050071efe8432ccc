"""Hostile input, in bulk: one gateway process takes hundreds of malformed or abusive requests and broken
upstream answers, then must answer good requests within 100 ms (median of five), with its peak memory bounded, no
descriptor leaked, every refusal a short 4xx (502/504 when the upstream is at fault), never a hang and
never another exchange's bytes. A good request after each case checks the gateway is still well.

Bound on memory asserted here: the peak resident size grows by less than `RSS_GROWTH_KIB` (48 MiB) over
the size after warm-up, with these limits (--max-response-bytes 4 MiB, --max-body-bytes 1 MiB, 32 KiB
heads, 100 slow connections held at once). docs/gateway.md has the general formula.
"""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from tests.component.gateway.gateway_helpers import (
    BODY,
    Proc,
    RouteFile,
    exchange,
    fallback,
    gateway,
    memory_kib,
    one_response,
    open_fds,
    read_until,
    request,
    table,
)
from tests.support.hostile import settled_fd_count
from tests.support.waiting import wait_for

from mlrollout_serving.gateway.server import BURST

pytestmark = pytest.mark.component

RSS_GROWTH_KIB = 48 * 1024
LIMITS = (
    "--header-timeout", "1", "--body-timeout", "1", "--idle-timeout", "2", "--max-body-bytes", str(1024 * 1024),
    "--max-response-bytes", str(4 * 1024 * 1024),
)  # fmt: skip
REFUSED = frozenset({400, 405, 408, 413, 414, 431})
CLOSING = frozenset({400, 408, 413, 414, 431})  # refusals after which the gateway closes the connection
UPSTREAM_AT_FAULT = frozenset({502, 504})
NOT_FOUND = frozenset({404})
OK = frozenset({200})


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    allowed: frozenset[int]
    answered: bool = True  # False: the client gives up first (a truncated request), no answer expected
    settle: float = 0.0  # seconds to wait after it (the upstream's late extra response must reach an idle
    # connection: one arriving after the connection was reused cannot be told from the next answer)


def _post(target: bytes, headers: bytes, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nhost: gw\r\n%scontent-length: %d\r\n\r\n%s" % (target, headers, len(body), body)


INFER = b"/v2/models/iris/infer"
JSON = json.dumps(BODY).encode()
CHUNKED = b"POST " + INFER + b" HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
SMUGGLING = {
    "CL+TE": b"content-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    "TE+CL": b"transfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n",
    "duplicate CL": b"content-length: 2\r\ncontent-length: 2\r\n\r\n{}",
    "two different CLs": b"content-length: 2\r\ncontent-length: 30\r\n\r\n{}",
    "CL list": b"content-length: 2, 2\r\n\r\n{}",
    "negative CL": b"content-length: -1\r\n\r\n",
    "CL with plus": b"content-length: +2\r\n\r\n{}",
    "CL overflow": b"content-length: 99999999999999999999999\r\n\r\n",
    "CL not a number": b"content-length: 2x\r\n\r\n{}",
    "TE chunked not last": b"transfer-encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "TE unknown": b"transfer-encoding: gzip\r\n\r\n{}",
    "TE xchunked": b"transfer-encoding: xchunked\r\n\r\n0\r\n\r\n",
    "two TEs": b"transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": b"x-a: b\r\n folded\r\ncontent-length: 0\r\n\r\n",
    "obs-fold TE": b"transfer-encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "space before colon": b"content-length : 2\r\n\r\n{}",
    "bare LF": b"content-length: 2\n\n{}",
    "bad chunk size": b"transfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "chunk size overflow": b"transfer-encoding: chunked\r\n\r\nfffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
    "chunk without CRLF": b"transfer-encoding: chunked\r\n\r\n2\r\n{}0\r\n\r\n",
    "NUL in value": b"x-a: a\x00b\r\ncontent-length: 0\r\n\r\n",
    "CTL in name": b"x-\x01a: b\r\ncontent-length: 0\r\n\r\n",
    "8-bit name": b"x-\xe9: b\r\ncontent-length: 0\r\n\r\n",
    "empty name": b": b\r\ncontent-length: 0\r\n\r\n",
    "no colon": b"x-a b\r\ncontent-length: 0\r\n\r\n",
}
BAD_LINES = (
    b"FOO / HTTP/1.1", b"BREW /v2/x HTTP/1.1", b"get /v2/health/live HTTP/1.1", b"G\x00T / HTTP/1.1",
    b"PRI * HTTP/2.0", b"CONNECT example.org:443 HTTP/1.1", b"GET /v2/health/live HTTP/1.2",
    b"GET /v2/health/live HTTP/9.9", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
)  # fmt: skip
UPGRADES = (
    b"connection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n",
    b"connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n",
)
MISBEHAVING = {  # the fake upstream does what x-misbehave says; what the client may get
    "extra": UPSTREAM_AT_FAULT, "extra-later": OK, "continue": OK, "early-hints": OK, "switch": UPSTREAM_AT_FAULT,
    "huge": UPSTREAM_AT_FAULT, "endless": UPSTREAM_AT_FAULT, "short-length": UPSTREAM_AT_FAULT,
    "long-length": UPSTREAM_AT_FAULT, "close-mid-body": UPSTREAM_AT_FAULT, "track-header": OK,
    "garbage": UPSTREAM_AT_FAULT, "huge-header": UPSTREAM_AT_FAULT, "stall": UPSTREAM_AT_FAULT,
    "unframed": UPSTREAM_AT_FAULT,
}  # fmt: skip


def _cases() -> list[Case]:
    cases = [Case(f"bad request line {line[:12]!r}", line + b"\r\nhost: gw\r\n\r\n", REFUSED) for line in BAD_LINES]
    for method in (b"TRACE", b"DELETE", b"PUT", b"PATCH", b"OPTIONS"):  # known methods the gateway does not serve
        for target in (b"/v2/health/live", b"/v2/health/ready", b"/metrics", INFER):
            raw = b"%s %s HTTP/1.1\r\nhost: gw\r\ncontent-length: 0\r\n\r\n" % (method, target)
            cases.append(Case(f"{method.decode()} {target.decode()}", raw, frozenset({405})))
    cases.append(Case("POST /metrics", _post(b"/metrics", b"", b"x"), frozenset({405})))
    for name, rest in SMUGGLING.items():
        raw = b"POST " + INFER + b" HTTP/1.1\r\nhost: gw\r\n" + rest
        cases.append(Case(f"smuggling: {name}", raw, REFUSED))
        cases.append(Case(f"smuggling then a second request: {name}", raw + _post(INFER, b"", JSON), REFUSED))
    for upgrade in UPGRADES:
        raw = b"GET /v2/health/live HTTP/1.1\r\nhost: gw\r\n" + upgrade + b"\r\n"
        cases.append(Case(f"upgrade {upgrade[30:45]!r} (ignored)", raw, OK))
        with_body = b"POST " + INFER + b" HTTP/1.1\r\nhost: gw\r\n" + upgrade + b"content-length: 4\r\n\r\nGET "
        cases.append(Case(f"upgrade {upgrade[30:45]!r} with a body", with_body, REFUSED))
    for size in (33 * 1024, 100 * 1024, 1024 * 1024):
        raw = b"GET /v2/health/live HTTP/1.1\r\nx-big: " + b"a" * size + b"\r\n\r\n"
        cases.append(Case(f"{size} byte header", raw, frozenset({431})))
    many = b"".join(b"x-h%d: %d\r\n" % (i, i) for i in range(4000))
    cases.append(Case("4000 headers", b"GET /v2/health/live HTTP/1.1\r\n" + many + b"\r\n", frozenset({431})))
    for size in (9 * 1024, 64 * 1024, 2 * 1024 * 1024):
        cases.append(Case(f"{size} byte URL", b"GET /v2/" + b"a" * size + b" HTTP/1.1\r\n\r\n", frozenset({414})))
    cases.append(Case("2 MiB body", _post(INFER, b"", b"x" * 2 * 1024 * 1024), frozenset({413})))
    chunks = b"".join(b"100000\r\n" + b"x" * 0x100000 + b"\r\n" for _ in range(2)) + b"0\r\n\r\n"
    cases.append(Case("2 MiB chunked body", CHUNKED + chunks, frozenset({413})))
    # chunk extensions and trailers: what httptools buffers of them stays within the head limit plus one
    # read, so one that fits in the read it arrives with is served (the trailer dropped), a longer one refused
    for size in (100_000, 5_000_000):
        ext = CHUNKED + b"1;" + b"e" * size + b"\r\nx\r\n0\r\n\r\n"
        cases.append(Case(f"{size} byte chunk extension", ext, REFUSED | OK))
        trailer = CHUNKED + b"2\r\n{}\r\n0\r\nx-t: " + b"a" * size + b"\r\n\r\n"
        cases.append(Case(f"{size} byte trailer", trailer, REFUSED | OK))
    cases.append(Case("8-bit target", b"GET /v2/\xff\xfe HTTP/1.1\r\nhost: gw\r\n\r\n", REFUSED))
    cases.append(Case("control char in target", b"GET /v2/\x7f HTTP/1.1\r\nhost: gw\r\n\r\n", REFUSED))
    cases.append(Case("absolute-form target", b"GET http://evil.example/v2/health/live HTTP/1.1\r\n\r\n", NOT_FOUND))
    cases.append(Case("asterisk target", b"OPTIONS * HTTP/1.1\r\nhost: gw\r\n\r\n", NOT_FOUND))
    cases.append(Case("8-bit header value", _post(INFER, b"x-name: \xff\xfe\xfd\r\n", JSON), OK))
    cases.append(Case("8-bit body", _post(INFER, b"", b'{"inputs": "\xff\xfe"}'), OK))
    # truncated requests: the client gives up; the gateway must simply let go
    cases.append(Case("truncated body", _post(INFER, b"", JSON)[:-10], frozenset(), answered=False))
    cases.append(Case("truncated chunked body", CHUNKED + b"5\r\nab", frozenset(), answered=False))
    cases.append(Case("truncated head", b"POST " + INFER + b" HTTP/1.1\r\nhost: g", frozenset(), answered=False))
    for mode, allowed in MISBEHAVING.items():
        raw = _post(INFER, b"x-misbehave: %s\r\n" % mode.encode(), JSON)
        cases += [Case(f"upstream {mode}", raw, allowed, settle=0.2 if mode == "extra-later" else 0.0)] * 3
    # a request the upstream fails on, sent again and again by one client
    cases += [Case("poison", _post(INFER, b"", b'{"note": "poison"}'), UPSTREAM_AT_FAULT)] * 10
    return cases


def _answer(port: int, case: Case) -> tuple[bytes, bool]:
    """Send a case; (what came back, whether the gateway then closed the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(case.raw)
        if not case.answered:
            return b"", False
        data = read_until(sock, one_response, timeout=10)
        refused = data.startswith(b"HTTP/1.1 ") and int(data[9:12]) in CLOSING
        return data, _closed(sock, 0.5 if refused else 0.01)


def _closed(sock: socket.socket, wait: float) -> bool:
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def _check(case: Case, data: bytes, closed: bool) -> None:
    assert data.startswith(b"HTTP/1.1 "), f"{case.name}: no answer ({data[:80]!r})"
    status = int(data[9:12])
    assert status in case.allowed, f"{case.name}: {status} not in {sorted(case.allowed)}: {data[:300]!r}"
    assert data.count(b"HTTP/1.1 ") == 1 and b"stale" not in data, f"{case.name}: {data[:300]!r}"
    head, _, body = data.partition(b"\r\n\r\n")
    if status >= 400:
        error = json.loads(body)["error"]
        assert len(error) < 200, f"{case.name}: error message too long: {error[:300]!r}"
        assert b"content-type: application/json" in head
    if status in CLOSING:
        assert closed, f"{case.name}: the gateway kept a refused connection open"


@contextlib.contextmanager
def _slow_clients(port: int, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections that send half a request head and then nothing (slowloris)."""
    socks = []
    try:
        for i in range(count):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nhost: gw\r\nx-slow-%d: " % i)
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _good(gw: Proc, n: int) -> float:
    """A good request naming its own path; the answer must be its own. Returns its duration."""
    path = f"/v2/models/good-{n}/infer"
    started = time.perf_counter()
    answer = request(gw.url + path, BODY, client="127.0.0.2", timeout=10)
    elapsed = time.perf_counter() - started
    assert (answer.status, answer.body.get("path")) == (200, path), f"good request {n}: {answer}"
    return elapsed


def test_the_gateway_survives_hostile_clients_and_upstreams(routes: RouteFile, up_a: Proc) -> None:
    routes.write(table(1, up_a.url, **fallback(timeout=2.0)))  # the silent upstreams cost 2 s each
    cases = _cases()
    with gateway(routes, *LIMITS) as gw:
        _good(gw, -1)  # warm-up: one idle upstream connection in the pool
        fds_before, rss_before = open_fds(gw), memory_kib(gw, "VmRSS")
        sent = 0
        with _slow_clients(gw.port, 100) as slow:
            for n, case in enumerate(cases):
                data, closed = _answer(gw.port, case)
                sent += 1
                if case.answered:
                    _check(case, data, closed)
                time.sleep(case.settle)
                _good(gw, n)
            slow_answers = [read_until(sock, lambda d: False, timeout=5) for sock in slow]
        assert all(a.startswith(b"HTTP/1.1 408") for a in slow_answers)  # each timed out with a 408
        sent += len(slow)
        # pipelining: 100 deep is served in order; 5000 deep gets the answers owed, then 429 and a close
        health = b"GET /v2/health/live HTTP/1.1\r\nhost: gw\r\n\r\n"
        for raw in (health * 100, _post(INFER, b"", JSON) * 100):
            data = exchange(gw.port, raw, until=lambda d: d.count(b"HTTP/1.1 200 OK") >= 100, timeout=30)
            assert data.count(b"HTTP/1.1 200 OK") == 100
            sent += 100
        data = exchange(gw.port, health * 5000, until=lambda d: False, timeout=30)
        answered = data.count(b"HTTP/1.1 200 OK")  # how many depends on how the 5000 were split into reads
        assert BURST <= answered < 5000 and data.count(b"HTTP/1.1 429") == 1
        assert data.rindex(b"HTTP/1.1 429") > data.rindex(b"HTTP/1.1 200") and data.endswith(b'their answers"}')
        sent += 5000
        # a client that pipelines and never reads its answers: it stops being served, then is dropped
        idle_fds = open_fds(gw)
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            with contextlib.suppress(TimeoutError, BrokenPipeError, ConnectionResetError):
                sock.settimeout(3)
                for _ in range(50):
                    sock.sendall(b"GET /metrics HTTP/1.1\r\nhost: gw\r\n\r\n" * 100)
                    sent += 100
            wait_for(lambda: open_fds(gw) <= idle_fds, timeout=10, what="the gateway to drop a client that never reads")
        assert sent >= 200
        # good requests right after: the median of five within 100 ms (one sample alone is at the mercy of
        # the scheduler on a loaded 2-core machine), none slower than a second
        times = [_good(gw, 10_000 + i) for i in range(5)]
        shown = ", ".join(f"{t * 1000:.1f}" for t in times)
        assert statistics.median(times) < 0.1 and max(times) < 1.0, f"good requests took {shown} ms"
        growth = memory_kib(gw, "VmHWM") - rss_before
        assert growth < RSS_GROWTH_KIB
        wait_for(lambda: open_fds(gw) <= fds_before, timeout=15, what=f"the gateway back to {fds_before} descriptors")
        print(f"good requests after: {shown} ms; hostile requests: {sent}; peak RSS growth {growth // 1024} MiB; "
              f"descriptors {fds_before} before, {open_fds(gw)} after")  # fmt: skip


def test_answers_left_unread_in_the_kernels_buffers_do_not_keep_a_connection_open(
    routes: RouteFile, up_a: Proc
) -> None:
    """120 pipelined /metrics requests, never an answer read, then silence: the answers owed (~230 KB) sit in
    the kernel's send buffer, so the transport never pauses and the connection looked idle until the idle
    timeout (60 s here); the kernel's TCP_USER_TIMEOUT (the body timeout, 1 s) now drops it."""
    routes.write(table(1, up_a.url))
    health = b"GET /v2/health/live HTTP/1.1\r\nhost: gw\r\n\r\n"
    metrics = b"GET /metrics HTTP/1.1\r\nhost: gw\r\n\r\n"
    with gateway(routes, "--body-timeout", "1", "--idle-timeout", "60") as gw:
        idle_fds = settled_fd_count(gw.proc.pid)
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(health)  # one answer read: the connection is accepted and counted
            assert read_until(sock, lambda d: b"\r\n\r\n" in d, timeout=5).startswith(b"HTTP/1.1 200")
            assert open_fds(gw) > idle_fds
            sock.sendall(metrics * 120)
            wait_for(lambda: open_fds(gw) <= idle_fds, timeout=15, what="the gateway to drop a client that never reads")
        assert exchange(gw.port, health, until=lambda d: b"\r\n\r\n" in d, timeout=5).startswith(b"HTTP/1.1 200")
