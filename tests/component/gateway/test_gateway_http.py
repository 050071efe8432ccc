"""HTTP/1.1 on the gateway's own server side: pipelining, chunked bodies, HTTP/1.0, methods, HEAD, and the
limits (sizes, timeouts, the connection cap) that hostile clients meet (more: test_gateway_hostile.py)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from tests.component.gateway.gateway_helpers import (
    BODY,
    Proc,
    RouteFile,
    exchange,
    gateway,
    memory_kib,
    one_response,
    read_until,
    request,
    table,
)
from tests.component.gateway.gateway_helpers import INFER as INFER_PATH
from tests.support.waiting import wait_for

pytestmark = pytest.mark.component

INFER = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: gw\r\n"


def test_pipelined_requests_are_answered_in_order(routes: RouteFile, up_a: Proc) -> None:
    routes.write(table(1, up_a.url))
    with gateway(routes) as gw, socket.create_connection(("127.0.0.1", gw.port)) as sock:
        bodies = [json.dumps({"id": i}).encode() for i in range(5)]
        sock.sendall(b"".join(INFER + b"content-length: %d\r\n\r\n%s" % (len(b), b) for b in bodies))
        data = read_until(sock, lambda d: d.count(b"HTTP/1.1 200") == 5)
        assert data.count(b"HTTP/1.1 200 OK") == 5


def test_chunked_request_is_forwarded_with_a_length(routes: RouteFile, up_a: Proc) -> None:
    routes.write(table(1, up_a.url))
    with gateway(routes) as gw, socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.sendall(INFER + b'transfer-encoding: chunked\r\n\r\n5\r\n{"a":\r\n2\r\n1}\r\n0\r\n\r\n')
        data = read_until(sock, lambda d: b"\r\n\r\n" in d and d.rstrip().endswith(b"}"))
        assert data.startswith(b"HTTP/1.1 200 OK") and b"x-mlrollout-track: stable" in data


def test_http10_gets_an_answer_and_a_close(routes: RouteFile, up_a: Proc) -> None:
    routes.write(table(1, up_a.url))
    with gateway(routes) as gw, socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.sendall(b"GET /v2/health/ready HTTP/1.0\r\n\r\n")
        data = read_until(sock, lambda d: False)  # until the gateway closes
        assert data.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in data
        assert data.endswith(b'{"ready": true}')


def test_too_large_body_is_413_and_garbage_is_400(routes: RouteFile, up_a: Proc) -> None:
    routes.write(table(1, up_a.url))
    with gateway(routes, "--max-body-bytes", "1000") as gw:
        with socket.create_connection(("127.0.0.1", gw.port)) as sock:
            sock.sendall(INFER + b"content-length: 5000\r\n\r\n" + b"x" * 5000)
            data = read_until(sock, lambda d: False)
            assert data.startswith(b"HTTP/1.1 413") and b"larger than 1000 bytes" in data
        with socket.create_connection(("127.0.0.1", gw.port)) as sock:
            sock.sendall(b"GARBAGE\r\n\r\n")
            data = read_until(sock, lambda d: False)
            assert data.startswith(b"HTTP/1.1 400") and b"bad HTTP request" in data


def test_a_request_line_split_over_two_segments_is_routed_whole(routes: RouteFile, up_a: Proc) -> None:
    """The issue's 404: with the line in two TCP segments only the second piece of the target was kept."""
    routes.write(table(1, up_a.url))
    raw = b"POST /v2/models" + b"/iris/infer HTTP/1.1\r\nhost: gw\r\ncontent-length: 2\r\n\r\n{}"
    with gateway(routes) as gw, socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(raw[:15])
        time.sleep(0.2)  # let the gateway read the first piece on its own
        sock.sendall(raw[15:])
        data = read_until(sock, lambda d: d.endswith(b"}") and b"\r\n\r\n" in d)
        assert data.startswith(b"HTTP/1.1 200 OK") and b'"path": "/v2/models/iris/infer"' in data


def _send_until_closed(port: int, start: bytes, filler: bytes, total: int) -> tuple[bytes, int]:
    """Send `start`, then `filler` until `total` bytes or the gateway closes; (its answer, bytes sent)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(start)
        sock.settimeout(5)
        try:
            while sent < total:
                sent += sock.send(filler)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_until(sock, lambda d: False, timeout=10), sent


@pytest.mark.parametrize(
    ("start", "status", "message"),
    [
        (b"GET /v2/health/live HTTP/1.1\r\nx-big: ", 431, b"request line and headers larger than 32768 bytes"),
        (b"GET /v2/", 414, b"request target longer than 8192 bytes"),
    ],
    ids=["100MB-header", "100MB-url"],
)
def test_a_100_mb_header_or_url_is_refused_without_being_buffered(
    routes: RouteFile, up_a: Proc, start: bytes, status: int, message: bytes
) -> None:
    """The issue: one 100 MB header was buffered (peak RSS 379 MiB), its pieces joined on the event loop."""
    routes.write(table(1, up_a.url))
    with gateway(routes) as gw:
        before = memory_kib(gw)
        answer, _ = _send_until_closed(gw.port, start, b"a" * 65536, 100 * 1024 * 1024)
        assert answer.startswith(b"HTTP/1.1 %d" % status) and message in answer
        # the rest is read and dropped (a lingering close, so the client gets the answer), never held
        assert memory_kib(gw) - before < 16 * 1024  # the peak grew by less than 16 MiB
        assert request(gw.url + "/v2/health/live").status == 200


def test_methods_head_and_upgrades(routes: RouteFile, up_a: Proc) -> None:
    routes.write(table(1, up_a.url))
    with gateway(routes) as gw:
        trace = exchange(gw.port, b"TRACE /v2/health/ready HTTP/1.1\r\nhost: gw\r\n\r\n")
        assert trace.startswith(b"HTTP/1.1 405") and b"allow: GET, HEAD\r\n" in trace
        post = exchange(gw.port, b"POST /metrics HTTP/1.1\r\nhost: gw\r\ncontent-length: 0\r\n\r\n")
        assert post.startswith(b"HTTP/1.1 405") and b"allow: GET, HEAD\r\n" in post
        delete = exchange(gw.port, b"DELETE /v2/models/iris HTTP/1.1\r\nhost: gw\r\n\r\n")
        assert delete.startswith(b"HTTP/1.1 405") and b"allow: GET, HEAD, POST\r\n" in delete
        head = exchange(gw.port, b"HEAD /v2/models/iris HTTP/1.1\r\nhost: gw\r\n\r\n", until=lambda d: False,
                        timeout=2)  # fmt: skip
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")  # no body after the head
        assert b"x-mlrollout-track: stable" in head and b"content-length: " in head
        ws = b"GET /v2/health/live HTTP/1.1\r\nhost: gw\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"
        ws += b"sec-websocket-version: 13\r\nsec-websocket-key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n\r\n"
        answer = exchange(gw.port, ws, until=lambda d: False, timeout=2)  # answered once, over HTTP/1.1
        assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1") == 1
        connect = exchange(gw.port, b"CONNECT example.org:443 HTTP/1.1\r\nhost: example.org\r\n\r\n")
        assert connect.startswith(b"HTTP/1.1 405") and b"allow: GET, HEAD, POST\r\n" in connect


@contextlib.contextmanager
def _connections(port: int, count: int, first: bytes) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port))
            if first:
                sock.sendall(first)
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def test_stalled_requests_and_idle_connections_time_out(routes: RouteFile, up_a: Proc) -> None:
    """The issue's slowloris: partial headers or bodies held connections open indefinitely."""
    routes.write(table(1, up_a.url))
    flags = ("--header-timeout", "1", "--body-timeout", "1", "--idle-timeout", "2")
    with gateway(routes, *flags) as gw:
        partial_head = socket.create_connection(("127.0.0.1", gw.port))
        partial_head.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nhost: gw\r\n")
        partial_body = socket.create_connection(("127.0.0.1", gw.port))
        partial_body.sendall(INFER + b"content-length: 100\r\n\r\n{")
        idle = socket.create_connection(("127.0.0.1", gw.port))
        idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: gw\r\n\r\n")
        with partial_head, partial_body, idle:
            head_answer = read_until(partial_head, lambda d: False, timeout=10)
            body_answer = read_until(partial_body, lambda d: False, timeout=10)
            idle_answer = read_until(idle, lambda d: False, timeout=10)
        assert head_answer.startswith(b"HTTP/1.1 408") and b"header timeout, 1 s" in head_answer
        assert body_answer.startswith(b"HTTP/1.1 408") and b"body timeout, 1 s" in body_answer
        assert idle_answer.startswith(b"HTTP/1.1 200") and idle_answer.count(b"HTTP/1.1") == 1  # then closed
        wait_for(lambda: "client limits closed connections" in gw.output(), what="the summary log line")
        assert "1 body timeout, 1 header timeout" in gw.output()


def test_hostile_connections_at_a_256_file_limit_do_not_lock_good_clients_out(routes: RouteFile, up_a: Proc) -> None:
    """The issue: with 256 descriptors, 300 partial-header connections blocked every good request and
    nothing was logged. Now the cap (64 here) closes the longest-waiting of them for each newcomer."""
    routes.write(table(1, up_a.url))
    with gateway(routes, nofile=256) as gw:
        assert "at most 64 client connections (open-file limit 256)" in gw.output()
        with _connections(gw.port, 300, b"POST /v2/models/iris/infer HTTP/1.1\r\nx-slow: ") as socks:
            for _ in range(20):
                answer = request(gw.url + INFER_PATH, BODY, timeout=10)
                assert (answer.status, answer.track) == (200, "stable")
            assert "connection limit 64 reached" in gw.output()
            closed = [s for s in socks[:200] if read_until(s, lambda d: False, timeout=0.5)]
            assert len(closed) >= 200 - 64  # the early ones were closed for newcomers, with a 503 each


def test_expect_100_continue_is_answered_before_the_body(routes: RouteFile, up_a: Proc) -> None:
    """The issue's open item: a client that sends `Expect: 100-continue` (curl does for bodies over 1 KiB)
    waited for a `100 Continue` the gateway never sent (curl gives up after 1 s and sends the body anyway).
    Now: `100 Continue` right after the head, then the answer; a declared body over the limit is refused
    at once (413) instead; HTTP/1.0 clients get no interim answer (RFC 9110 15.2.1)."""
    routes.write(table(1, up_a.url))
    body = json.dumps({"x": "a" * 2000}).encode()
    with gateway(routes, "--max-body-bytes", "10000") as gw:
        with socket.create_connection(("127.0.0.1", gw.port)) as sock:
            sock.sendall(INFER + b"expect: 100-continue\r\ncontent-length: %d\r\n\r\n" % len(body))
            interim = read_until(sock, lambda d: d.endswith(b"\r\n\r\n"), timeout=0.9)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(body)
            data = read_until(sock, one_response)
            assert data.startswith(b"HTTP/1.1 200 OK") and b"x-mlrollout-track: stable" in data

        with socket.create_connection(("127.0.0.1", gw.port)) as sock:
            sock.sendall(INFER + b"Expect: 100-continue\r\ncontent-length: 20000\r\n\r\n")
            data = read_until(sock, lambda d: False, timeout=5)  # refused and closed, no body sent
            assert data.startswith(b"HTTP/1.1 413") and b"larger than 10000 bytes" in data

        with socket.create_connection(("127.0.0.1", gw.port)) as sock:
            sock.sendall(
                INFER.replace(b"HTTP/1.1", b"HTTP/1.0") + b"expect: 100-continue\r\ncontent-length: 2\r\n\r\n{}"
            )
            data = read_until(sock, lambda d: False)
            assert data.startswith(b"HTTP/1.1 200 OK"), data[:80]

        # a real client: curl waits for the interim answer (up to its 1 s default) before sending the body
        started = time.monotonic()
        curl = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--expect100-timeout", "30"]
        headers = ["-H", "content-type: application/json", "-H", "expect: 100-continue"]
        out = subprocess.run(
            [*curl, *headers, "--data-binary", "@-", gw.url + INFER_PATH],
            input=body, capture_output=True, timeout=60, check=True,
        )  # fmt: skip
        assert out.stdout == b"200" and time.monotonic() - started < 20


def test_an_expect_trailer_field_changes_nothing_for_the_next_request(routes: RouteFile, up_a: Proc) -> None:
    """A chunked request whose trailer carries `Expect` must not leave the next request on the connection
    a 400 (the flag is set by the field, after the head it would belong to)."""
    routes.write(table(1, up_a.url))
    chunked = INFER + b"transfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nexpect: 100-continue\r\n\r\n"
    plain = INFER + b"content-length: 2\r\n\r\n{}"
    with gateway(routes) as gw, socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.sendall(chunked)
        first = read_until(sock, one_response)
        sock.sendall(plain)
        second = read_until(sock, one_response)
    assert first.startswith(b"HTTP/1.1 200 OK"), first[:120]
    assert second.startswith(b"HTTP/1.1 200 OK"), second[:120]
