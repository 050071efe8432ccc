"""What one client may hold of a real server on loopback: the reproductions of issue #17.

Before the limits, a 100 MB header was buffered whole (peak RSS +210 MiB), four at once held good
requests up for ~10 s, a 100 MB URL peaked at 384 MiB, partial requests stayed open forever, and with a
256-descriptor limit 300 of them blocked every new client without a log line.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from tests.component.server.conftest import infer_body, post
from tests.support.hostile import (
    closed_by_peer,
    exchange,
    fd_count,
    flood,
    peak_rss_mib,
    read_reply,
    slowloris,
)
from tests.support.models import BuiltModel
from tests.support.procs import ServerProcess, serve_model
from tests.support.waiting import wait_for

pytestmark = pytest.mark.component

MIB = 1 << 20
INFER = "/v2/models/wine/infer"
LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
MEMORY_SLACK_MIB = 24
"""How much the server's peak RSS may grow while refusing a 100 MB head (it used to grow by 210 MiB)."""


@pytest.fixture(scope="module")
def server(wine_model: BuiltModel) -> Iterator[ServerProcess]:
    timeouts = ["--header-timeout", "1", "--body-timeout", "1", "--send-timeout", "2"]
    with serve_model(wine_model, name="wine", extra_args=timeouts) as s:
        yield s


def error_of(body: bytes) -> str:
    message: str = json.loads(body)["error"]
    return message


def test_a_100_mb_header_is_refused_with_431_without_being_buffered(server: ServerProcess) -> None:
    before = peak_rss_mib(server.proc.pid)
    reply, _ = flood(server.port, b"GET /v2/health/live HTTP/1.1\r\nX-Big: ", b"a" * 65536, 100 * MIB)
    assert reply is not None and reply.status == 431 and reply.closes
    assert error_of(reply.body) == "request line and headers are larger than the limit of 32768 bytes"
    assert peak_rss_mib(server.proc.pid) - before < MEMORY_SLACK_MIB


def test_a_100_mb_url_is_refused_with_414_without_being_buffered(server: ServerProcess) -> None:
    before = peak_rss_mib(server.proc.pid)
    reply, _ = flood(server.port, b"GET /", b"a" * 65536, 100 * MIB)
    assert reply is not None and reply.status == 414
    assert error_of(reply.body) == "request target is longer than the limit of 8192 bytes"
    assert peak_rss_mib(server.proc.pid) - before < MEMORY_SLACK_MIB


def test_four_100_mb_headers_at_once_do_not_hold_good_requests_up(
    server: ServerProcess, wine_model: BuiltModel
) -> None:
    """The flooders keep sending after the 431 (the server reads and drops it), all 400 MB of it."""
    before = peak_rss_mib(server.proc.pid)
    replies: list[int | None] = []

    def flooder() -> None:
        reply, _ = flood(server.port, b"GET / HTTP/1.1\r\nX-Big: ", b"a" * 65536, 100 * MIB, until_answered=False)
        replies.append(reply.status if reply else None)

    threads = [threading.Thread(target=flooder) for _ in range(4)]
    for t in threads:
        t.start()
    slowest = 0.0
    body = infer_body(wine_model, wine_model.samples[:1])
    while any(t.is_alive() for t in threads):
        start = time.monotonic()
        status, _, _ = post(server.port, INFER, body)
        slowest = max(slowest, time.monotonic() - start)
        assert status == 200
    for t in threads:
        t.join()
    assert slowest < 1.0, f"a good request took {slowest:.2f} s during the flood (it was ~10 s)"
    assert peak_rss_mib(server.proc.pid) - before < MEMORY_SLACK_MIB
    assert all(status in (431, None) for status in replies)  # None: reset once 129 MiB were dropped


def test_partial_requests_get_408_and_silent_connections_are_closed(server: ServerProcess) -> None:
    fds = fd_count(server.proc.pid)
    with (
        slowloris(server.port, "head", 100) as heads,
        slowloris(server.port, "body", 100) as bodies,
        slowloris(server.port, "silent", 20) as silent,
    ):
        for sock, message in [(s, "the request head did not arrive in full within 1 s") for s in heads] + [
            (s, "no byte of the request body arrived for 1 s") for s in bodies
        ]:
            reply = read_reply(sock, timeout=10)
            assert reply is not None and reply.status == 408 and error_of(reply.body) == message
            assert closed_by_peer(sock)
        assert all(closed_by_peer(sock) for sock in silent)
    wait_for(lambda: fd_count(server.proc.pid) <= fds, timeout=10, what="the slow clients' descriptors freed")


def test_a_client_that_never_reads_its_replies_is_dropped_after_the_send_timeout(server: ServerProcess) -> None:
    fds = fd_count(server.proc.pid)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        sent = 0
        try:
            while sent < 200 * MIB:  # pipelined requests, never a reply read: the server stops reading
                sock.sendall(LIVE * 1000)
                sent += len(LIVE) * 1000
        except (TimeoutError, ConnectionResetError):  # blocked by the server, or already dropped by it
            pass
        assert sent < 200 * MIB
        wait_for(lambda: fd_count(server.proc.pid) <= fds, timeout=15, what="the connection dropped")
    reply = exchange(server.port, LIVE)
    assert reply is not None and reply.status == 200


def test_unread_replies_that_fit_in_the_kernels_buffers_do_not_keep_a_connection_open(server: ServerProcess) -> None:
    """3,000 pipelined requests, never a reply read, then silence: the replies fit in the kernel's send buffer,
    so the transport never pauses and the connection looked idle until the keep-alive timeout (75 s); the
    kernel's TCP_USER_TIMEOUT (the send timeout, 2 s) now drops it. This is why the test above was flaky."""
    fds = fd_count(server.proc.pid)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(LIVE * 3000)
        wait_for(lambda: fd_count(server.proc.pid) > fds, timeout=5, what="the connection accepted")
        wait_for(lambda: fd_count(server.proc.pid) <= fds, timeout=15, what="the connection dropped")
    reply = exchange(server.port, LIVE)
    assert reply is not None and reply.status == 200


def test_at_the_open_files_limit_new_clients_still_get_in(wine_model: BuiltModel) -> None:
    """256 descriptors and 300 slow clients: the longest-waiting ones are closed to make room, with a log line."""
    with serve_model(
        wine_model, name="wine", wrapper=["prlimit", "--nofile=256:256"], extra_args=["--header-timeout", "60"]
    ) as server:
        assert "does not fit the open-files limit 256" in server.output()
        body = infer_body(wine_model, wine_model.samples[:1])
        with slowloris(server.port, "head", 300) as heads:
            assert fd_count(server.proc.pid) <= 256
            for _ in range(20):
                status, _, _ = post(server.port, INFER, body, timeout=10)
                assert status == 200
            evicted = [read_reply(sock, timeout=0.01) for sock in heads[:50]]
            assert {r.status for r in evicted if r is not None} == {503}
        wait_for(lambda: "connection limit of" in server.output(), timeout=5, what="the log line")
        assert "reached: closing the longest-waiting idle or incomplete connections" in server.output()
