"""The HTTP layer's limits, driven in-process: bytes in, replies out, however the bytes are split into reads.

The transport is an in-memory stand-in that records what the protocol writes and asks of it; the parser
is the real httptools, so these are tests of our parsing decisions (sizes, ordering, lingering), not of
sockets. Real sockets and processes: tests/component/server/test_server_limits.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence

import httptools
import pytest

from mlrollout_serving.server.http import Deferred, HttpConnection, HttpServer, Reply, Request, error_reply
from mlrollout_serving.server.limits import Limits

MAX_BODY = 100_000
LIMITS = Limits(max_url_bytes=200, max_header_bytes=1000)


class MemoryTransport:
    """What the protocol wrote and asked for, in memory."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.eof = False
        self.closed = False
        self.aborted = False
        self.reading = True

    def write(self, data: bytes) -> None:
        assert not self.eof and not self.closed, "write after close"
        self.out += data

    def write_eof(self) -> None:
        self.eof = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default  # no socket: nothing for the kernel to time out

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def echo(req: Request) -> Reply:
    return Reply(200, json.dumps({"path": req.path, "size": len(req.body), "body": req.body[:20].decode()}).encode())


def too_large(req: Request) -> Reply:
    return error_reply(413, "too large")


class Client:
    """One connection of an in-process server; ``send`` feeds bytes as one read."""

    def __init__(self, handler: Callable[[Request], Reply | Deferred] = echo, limits: Limits = LIMITS) -> None:
        self.server = HttpServer(handler, too_large, MAX_BODY, limits)
        self.transport = MemoryTransport()
        self.conn = HttpConnection(self.server)
        self.conn.connection_made(self.transport)  # type: ignore[arg-type]

    def send(self, *reads: bytes) -> None:
        for data in reads:
            self.conn.data_received(data)

    def replies(self) -> list[tuple[int, dict[str, object]]]:
        return parse_replies(bytes(self.transport.out))


def parse_replies(raw: bytes) -> list[tuple[int, dict[str, object]]]:
    found: list[tuple[int, dict[str, object]]] = []

    class Collect:
        body = b""

        def on_body(self, body: bytes) -> None:
            self.body += body

        def on_message_complete(self) -> None:
            found.append((parser.get_status_code(), json.loads(self.body) if self.body else {}))
            self.body = b""

    parser = httptools.HttpResponseParser(Collect())
    parser.feed_data(raw)
    return found


def in_loop(test: Callable[[], None]) -> None:
    async def go() -> None:
        test()

    asyncio.run(go())


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def request(path: str = "/x", headers: Sequence[tuple[str, str]] = (), body: bytes = b"") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: h", *[f"{k}: {v}" for k, v in headers], f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def padded(total: int) -> bytes:
    """A request whose head (request line, header lines, blank line) is ``total`` bytes."""
    base = request("/x", [("X-Pad", "")])
    head = base.index(b"\r\n\r\n") + 4
    return base.replace(b"X-Pad: ", b"X-Pad: " + b"p" * (total - head))


@pytest.mark.parametrize("read_size", [1, 7, 100, 1 << 20])
def test_the_head_limit_is_exact_however_the_reads_fall(read_size: int) -> None:
    def test() -> None:
        at_limit, over = Client(), Client()
        at_limit.send(*split(padded(1000), read_size))
        over.send(*split(padded(1001), read_size))
        assert [s for s, _ in at_limit.replies()] == [200]
        assert over.replies() == [(431, {"error": "request line and headers are larger than the limit of 1000 bytes"})]
        assert over.transport.eof and not at_limit.transport.eof

    in_loop(test)


def test_a_pipelined_head_after_a_large_body_is_measured_on_its_own() -> None:
    """Reads that begin inside another message's body do not count towards the next head."""

    def test() -> None:
        client = Client()
        stream = request(body=b"b" * 5000) + padded(1000) + request("/last")
        client.send(stream[:5500], stream[5500:5900], stream[5900:])
        assert [s for s, _ in client.replies()] == [200, 200, 200]

    in_loop(test)


def test_a_header_that_never_ends_is_cut_off_after_one_read_past_the_limit() -> None:
    def test() -> None:
        client = Client()
        client.send(b"GET /x HTTP/1.1\r\nX-Endless: ")
        reads = 0
        while not client.transport.out:
            client.send(b"a" * 256)
            reads += 1
        assert client.replies()[0][0] == 431
        assert reads * 256 <= 1000 + 2 * 256
        client.send(b"a" * 10_000)  # dropped, not parsed
        assert len(client.replies()) == 1

    in_loop(test)


@pytest.mark.parametrize("read_size", [3, 1 << 20])
def test_a_long_target_is_414(read_size: int) -> None:
    def test() -> None:
        client = Client()
        client.send(*split(b"GET /" + b"u" * 300 + b" HTTP/1.1\r\n\r\n", read_size))
        assert client.replies() == [(414, {"error": "request target is longer than the limit of 200 bytes"})]

    in_loop(test)


def test_bodies_over_the_limit_are_413_declared_or_chunked() -> None:
    def test() -> None:
        declared, chunked = Client(), Client()
        declared.send(b"POST /x HTTP/1.1\r\nContent-Length: 100001\r\n\r\n")
        assert declared.replies()[0][0] == 413
        chunk = b"%x\r\n%s\r\n" % (50_000, b"c" * 50_000)
        chunked.send(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk + chunk)
        assert chunked.replies() == []
        chunked.send(b"1\r\nc\r\n")
        assert [s for s, _ in chunked.replies()] == [413]

    in_loop(test)


def test_a_body_of_tiny_chunks_is_assembled_without_an_object_per_chunk() -> None:
    def test() -> None:
        client = Client()
        chunks = b"".join(b"1\r\n%c\r\n" % (48 + i % 10) for i in range(20_000))
        client.send(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", chunks, b"0\r\n\r\n")
        assert client.replies() == [(200, {"path": "/x", "size": 20_000, "body": "01234567890123456789"})]

    in_loop(test)


def test_a_refusal_waits_for_the_replies_owed_before_it() -> None:
    """Pipelined: a deferred reply, then a malformed request; the 400 goes out second, then the FIN."""

    def test() -> None:
        pending: list[Deferred] = []

        def handler(req: Request) -> Reply | Deferred:
            pending.append(Deferred())
            return pending[-1]

        client = Client(handler)
        client.send(request("/slow") + b"BREW /pot HTCPCP/1.0\r\n\r\n")
        assert client.replies() == [] and not client.transport.eof
        pending[0].resolve(Reply(200, b'{"ok": 1}'))
        assert [s for s, _ in client.replies()] == [200, 400]
        assert client.transport.eof and not client.transport.closed

    in_loop(test)


def test_a_refused_connection_drops_input_and_aborts_past_its_budget() -> None:
    """1 MiB after any refusal; after a 413, eight times the body limit more (the body the client meant)."""

    def test() -> None:
        client, too_large = Client(), Client()
        client.send(b"GET /" + b"u" * 300)
        assert client.replies()[0][0] == 414 and client.transport.eof and not client.transport.closed
        client.send(b"x" * (1 << 20))
        assert not client.transport.aborted
        client.send(b"x")
        assert client.transport.aborted
        too_large.send(request(body=b"b" * (MAX_BODY + 1)))
        assert too_large.replies()[0][0] == 413
        too_large.send(b"x" * (8 * MAX_BODY))
        assert not too_large.transport.aborted
        too_large.send(b"x" * (2 << 20))
        assert too_large.transport.aborted

    in_loop(test)


def test_reading_pauses_while_the_client_leaves_replies_unread() -> None:
    def test() -> None:
        client = Client()
        client.conn.pause_writing()
        assert not client.transport.reading
        client.conn.resume_writing()
        assert client.transport.reading

    in_loop(test)


def test_reading_pauses_when_pipelined_requests_pile_up_behind_a_slow_one() -> None:
    def test() -> None:
        pending: list[Deferred] = []

        def handler(req: Request) -> Reply | Deferred:
            if req.path == "/slow":
                pending.append(Deferred())
                return pending[-1]
            return echo(req)

        client = Client(handler)
        client.send(request("/slow") + request("/fast") * 70)
        assert not client.transport.reading
        pending[0].resolve(Reply(200, b"{}"))
        assert client.transport.reading and len(client.replies()) == 71

    in_loop(test)


def test_a_callback_bug_is_a_logged_500_not_a_400(caplog: pytest.LogCaptureFixture) -> None:
    def test() -> None:
        def broken(req: Request) -> Reply:
            raise RuntimeError("bug")

        client = Client()
        client.server.too_large = broken
        client.send(b"POST /x HTTP/1.1\r\nContent-Length: 999999\r\n\r\n")
        assert client.replies() == [(500, {"error": "internal server error"})]

    in_loop(test)
    assert "HTTP callback failed" in caplog.text


def test_an_upgrade_request_is_answered_over_http_1_1_and_the_connection_goes_on() -> None:
    def test() -> None:
        client = Client()
        upgrade = b"GET /a HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        client.send(upgrade + upgrade + request("/b") + b"BREW /pot HTCPCP/1.0\r\n\r\n")
        statuses = [s for s, _ in client.replies()]
        assert statuses == [200, 200, 200, 400]
        assert str(client.replies()[3][1]["error"]).startswith("malformed HTTP request")
        with_body = Client()
        with_body.send(b"POST /a HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\n{}")
        assert with_body.replies()[0][0] == 400

    in_loop(test)
