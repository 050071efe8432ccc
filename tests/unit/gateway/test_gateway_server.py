"""The gateway's HTTP server side fed byte by byte: request-line pieces, size limits, timeouts, the
connection cap, pipelining order, HEAD. A recording transport stands in for the socket (real sockets
and processes: tests/component/gateway/test_gateway_hostile.py)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from mlrollout_serving.gateway.limits import Limits, stall_limit
from mlrollout_serving.gateway.server import (
    FALLBACK_NOTES,
    MAX_PIPELINED,
    NOTE_INTERVAL,
    HttpServerProtocol,
    Reply,
    Request,
    Response,
    ServerState,
)

INFER = b"POST /v2/models/wine/infer HTTP/1.1\r\nhost: gw\r\ncontent-length: 2\r\n\r\n{}"


class Transport:
    """The parts of asyncio.Transport the protocol uses; records what it writes. Closing it tells the
    protocol the connection is lost (a real transport does so on the next loop iteration)."""

    def __init__(self, protocol: HttpServerProtocol) -> None:
        self.protocol = protocol
        self.out = bytearray()
        self.closed = False
        self.aborted = False
        self.eof = False  # our side shut after a refusal (a lingering close)
        self.reading = True
        self.backlog = 0

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.out += data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.protocol.connection_lost(None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    @property
    def refused(self) -> bool:
        """Answered and closed, or answered and shut (lingering)."""
        return self.closed or self.eof

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_write_buffer_size(self) -> int:
        return self.backlog

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("10.1.2.3", 40000) if name == "peername" else default


class Server:
    """A ServerState whose handler records requests and answers them `now`, on the next event-loop turn
    (`soon`, as the proxy answers health and metrics), or when a test calls `replies[i]` (`later`)."""

    def __init__(self, limits: Limits | None = None, answer: str = "now") -> None:
        self.requests: list[Request] = []
        self.replies: list[Reply] = []
        self.answer = answer
        self.state = ServerState(self.handle, limits or Limits())

    def handle(self, request: Request, reply: Reply) -> None:
        self.requests.append(request)
        response = Response(200, b"", b'{"n": %d}' % len(self.requests))
        if self.answer == "now":
            reply(response)
        elif self.answer == "soon":
            asyncio.get_running_loop().call_soon(reply, response)
        else:
            self.replies.append(reply)

    def connect(self) -> tuple[HttpServerProtocol, Transport]:
        conn = HttpServerProtocol(self.state)
        transport = Transport(conn)
        conn.connection_made(transport)  # type: ignore[arg-type]
        return conn, transport

    def feed(self, *reads: bytes) -> Transport:
        """A new connection that receives `reads` (until it is closed); its transport, `.protocol` the
        connection."""
        conn, transport = self.connect()
        for data in reads:
            if transport.refused:
                break
            conn.data_received(data)
        return transport


def status_of(out: bytes | bytearray) -> int:
    return int(bytes(out).split(b" ", 2)[1])


def error_of(out: bytes | bytearray) -> str:
    message: str = json.loads(bytes(out).split(b"\r\n\r\n", 1)[1])["error"]
    return message


async def test_a_request_line_split_over_two_reads_keeps_its_whole_target() -> None:
    """The issue's 404: `on_url` kept only the last piece of a target that came in two TCP segments."""
    server = Server()
    server.feed(INFER[:15], INFER[15:])
    assert [r.target for r in server.requests] == [b"/v2/models/wine/infer"]
    server.feed(*[INFER[i : i + 1] for i in range(len(INFER))])  # one byte per read
    assert server.requests[-1].target == b"/v2/models/wine/infer" and server.requests[-1].body == b"{}"


async def test_the_clients_address_comes_with_the_request() -> None:
    server = Server()
    server.feed(INFER)
    assert server.requests[0].client == "10.1.2.3"


async def test_a_long_target_is_414_before_it_is_buffered() -> None:
    server = Server(Limits(max_url=1024))
    long_line = b"GET /v2/" + b"a" * 100_000
    transport = server.feed(*[long_line[i : i + 512] for i in range(0, len(long_line), 512)])
    assert status_of(transport.out) == 414 and transport.refused
    assert error_of(transport.out) == "request target longer than 1024 bytes"
    assert not server.requests


async def test_a_huge_header_is_431_after_at_most_the_limit_and_one_read() -> None:
    """The issue's 100 MB header was buffered whole; now reading stops at the limit (plus one read)."""
    server = Server(Limits(max_head=32 * 1024))
    head = b"GET /v2/health/live HTTP/1.1\r\nx-big: "
    reads = [head] + [b"a" * 65536] * 1600  # ~100 MiB if it were all read
    transport = server.feed(*reads)
    assert status_of(transport.out) == 431 and transport.refused
    assert error_of(transport.out) == "request line and headers larger than 32768 bytes"
    fed = sum(len(r) for r in reads[: 1 + (32 * 1024) // 65536 + 2])
    assert fed < 200_000  # the refusal came within the first few reads


@pytest.mark.parametrize("reads", [1, 7])
async def test_many_headers_over_the_limit_are_431_in_one_read_or_several(reads: int) -> None:
    server = Server(Limits(max_head=4096))
    request = b"GET /v2/health/live HTTP/1.1\r\n" + b"".join(b"x-h%d: v\r\n" % i for i in range(1000)) + b"\r\n"
    step = len(request) // reads + 1
    transport = server.feed(*[request[i : i + step] for i in range(0, len(request), step)])
    assert status_of(transport.out) == 431 and not server.requests


async def test_a_head_just_under_the_limit_is_served() -> None:
    server = Server(Limits(max_head=4096))
    request = b"GET /v2/health/live HTTP/1.1\r\nx-pad: " + b"a" * 3900 + b"\r\n\r\n"
    server.feed(request[:100], request[100:])
    assert len(server.requests) == 1


async def test_a_body_over_the_limit_is_413() -> None:
    server = Server(Limits(max_body=1000))
    transport = server.feed(b"POST /v2/x HTTP/1.1\r\ncontent-length: 5000\r\n\r\n", b"x" * 5000)
    assert status_of(transport.out) == 413 and error_of(transport.out) == "request body larger than 1000 bytes"


async def test_bodies_still_arriving_are_bounded_over_all_connections_and_released() -> None:
    """What slow clients can make the gateway hold: bodies that keep arriving over several reads."""
    server = Server(Limits(max_buffered=10_000), answer="later")
    head = b"POST /v2/x HTTP/1.1\r\ncontent-length: 9000\r\n\r\n"
    first = server.feed(head + b"x" * 3000, b"x" * 3000)  # 6000 of 9000 so far
    assert server.state.buffered == 6000
    second = server.feed(head + b"y" * 3000, b"y" * 2000)
    assert server.state.buffered == 6000 + 5000 - 5000  # over the limit: refused, its bytes released
    assert status_of(second.out) == 503 and "too many request bodies" in error_of(second.out)
    first.protocol.data_received(b"x" * 3000)  # complete: the request holds its body, the budget does not
    assert server.state.buffered == 0 and len(server.requests) == 1
    third = server.feed(head + b"z" * 3000, b"z" * 3000)
    third.protocol.connection_lost(None)  # a client that goes away releases what it sent
    assert server.state.buffered == 0


async def test_trailer_fields_are_not_forwarded_and_cannot_grow_unbounded() -> None:
    server = Server(Limits(max_head=1024))
    chunked = b"POST /v2/x HTTP/1.1\r\ntransfer-encoding: chunked\r\nx-a: 1\r\n\r\n2\r\n{}\r\n0\r\n"
    server.feed(chunked, b"x-injected: 1\r\n\r\n")
    assert server.requests[0].headers == [(b"transfer-encoding", b"chunked"), (b"x-a", b"1")]
    transport = server.feed(chunked, b"x-big: ", *[b"a" * 4096] * 100)
    assert status_of(transport.out) == 400 and error_of(transport.out) == "chunk extensions or trailer fields too large"


async def test_an_upgrade_request_is_answered_once_over_http_1_1_and_what_follows_is_parsed() -> None:
    """It used to reach the handler (a health check answered 200) and then get a 400 as well. An upgrade
    is now ignored, as RFC 9110 lets a server do; the bytes after it are the next request."""
    server = Server()
    ws = b"GET /v2/health/live HTTP/1.1\r\nhost: gw\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n"
    transport = server.feed(ws + b"GET /v2/health/ready HTTP/1.1\r\nhost: gw\r\n\r\n")
    assert [r.target for r in server.requests] == [b"/v2/health/live", b"/v2/health/ready"]
    assert bytes(transport.out).count(b"HTTP/1.1 200") == 2 and not transport.refused


async def test_connect_and_upgrades_with_a_body_are_refused_before_the_handler_sees_them() -> None:
    server = Server()
    transport = server.feed(b"CONNECT example.org:443 HTTP/1.1\r\nhost: example.org\r\n\r\n")
    assert status_of(transport.out) == 405 and b"allow: GET, HEAD, POST\r\n" in transport.out
    assert error_of(transport.out) == "CONNECT is not allowed: this is not a proxy"
    body = b"POST /v2/x HTTP/1.1\r\nconnection: upgrade\r\nupgrade: h2c\r\ncontent-length: 4\r\n\r\nGET "
    transport = server.feed(body)
    assert status_of(transport.out) == 400 and "this request has a body" in error_of(transport.out)
    assert not server.requests


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /v2/x HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /v2/x HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\nabc",
        b"POST /v2/x HTTP/1.1\r\nx-a: b\r\n folded\r\ncontent-length: 0\r\n\r\n",
        b"POST /v2/x HTTP/1.1\r\ntransfer-encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        b"GET /v2/\xff HTTP/1.1\r\n\r\n",
        b"BREW /v2/x HTTP/1.1\r\n\r\n",
        b"GET /v2/x HTTP/1.1\r\nx: a\x00b\r\n\r\n",
    ],
    ids=["cl+te", "duplicate-cl", "obs-fold", "te-not-chunked-last", "non-ascii-target", "bad-method", "nul"],
)
async def test_smuggling_shapes_are_400_and_never_reach_the_handler(raw: bytes) -> None:
    server = Server()
    transport = server.feed(raw)
    assert status_of(transport.out) == 400 and transport.refused and not server.requests
    assert error_of(transport.out).startswith("bad HTTP request: ")


async def test_head_answers_carry_the_length_but_no_body() -> None:
    server = Server()
    transport = server.feed(b"HEAD /v2/health/live HTTP/1.1\r\nhost: gw\r\n\r\n")
    assert bytes(transport.out).endswith(b"content-length: 8\r\n\r\n")


async def test_a_refusal_waits_for_the_answer_owed_to_the_request_before_it() -> None:
    server = Server(Limits(max_body=10), answer="later")
    transport = server.feed(INFER + b"POST /v2/x HTTP/1.1\r\ncontent-length: 50\r\n\r\n" + b"z" * 50)
    assert transport.out == b"" and not transport.closed  # the first request is still in service
    server.replies[0](Response(200, b"", b'{"first": true}'))
    out = bytes(transport.out)
    assert out.index(b'{"first": true}') < out.index(b"HTTP/1.1 413") and transport.refused


async def _turns(n: int = 50) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_pipelined_requests_answered_at_once_are_answered_in_order_without_recursion() -> None:
    server = Server()
    transport = server.feed(b"GET /v2/health/live HTTP/1.1\r\nhost: gw\r\n\r\n" * 5000)
    assert len(server.requests) == 5000 and bytes(transport.out).count(b"HTTP/1.1 200") == 5000
    assert transport.reading


async def test_a_pipelined_flood_is_answered_one_request_per_loop_turn_in_order() -> None:
    """The proxy answers what needs no upstream on the next turn: one request of a flood per turn, so a
    flood of /metrics in one read cannot hold the loop for everybody else."""
    server = Server(answer="soon")
    transport = server.feed(b"GET /v2/health/live HTTP/1.1\r\nhost: gw\r\n\r\n" * 100)
    assert len(server.requests) == 1 and not transport.reading
    await _turns(3)
    assert 1 < len(server.requests) <= 6  # a request or so per turn, not the whole flood at once
    await _turns(300)
    assert len(server.requests) == 100 and transport.reading
    assert [int(b) for b in re.findall(rb'"n": (\d+)', bytes(transport.out))] == list(range(1, 101))


async def test_more_pipelined_requests_than_the_limit_get_429_after_the_answers_owed() -> None:
    server = Server(answer="soon")
    transport = server.feed(b"GET /v2/health/live HTTP/1.1\r\nhost: gw\r\n\r\n" * 5000)
    await _turns(600)
    out = bytes(transport.out)
    assert len(server.requests) == out.count(b"HTTP/1.1 200") == 1 + MAX_PIPELINED
    assert out.count(b"HTTP/1.1 429") == 1 and out.index(b"HTTP/1.1 429") > out.rindex(b"HTTP/1.1 200")
    assert b"more than 128 pipelined requests wait for their answers" in out and transport.refused


async def test_pipelined_requests_wait_while_the_client_does_not_read_our_answers() -> None:
    server = Server()
    conn, transport = server.connect()
    conn.pause_writing()
    conn.data_received(b"GET /v2/health/live HTTP/1.1\r\n\r\n" * 3)
    await _turns()
    assert not server.requests and not transport.reading
    conn.resume_writing()
    assert len(server.requests) == 3 and transport.reading


def test_stall_limits_by_phase() -> None:
    limits = Limits(header_timeout=1.0, body_timeout=2.0, idle_timeout=3.0)
    assert stall_limit(limits, serving=True, write_paused=False, phase=0, messages=1) is None
    assert stall_limit(limits, serving=True, write_paused=True, phase=0, messages=1) == (2.0, "send timeout")
    assert stall_limit(limits, serving=False, write_paused=False, phase=0, messages=0) == (1.0, "header timeout")
    assert stall_limit(limits, serving=False, write_paused=False, phase=1, messages=3) == (1.0, "header timeout")
    assert stall_limit(limits, serving=False, write_paused=False, phase=2, messages=3) == (2.0, "body timeout")
    assert stall_limit(limits, serving=False, write_paused=False, phase=0, messages=3) == (3.0, "idle timeout")


async def test_the_sweep_closes_stalled_connections_and_spares_busy_and_progressing_ones() -> None:
    server = Server(Limits(header_timeout=1.0, body_timeout=2.0, idle_timeout=3.0), answer="later")
    t0 = 1000.0
    head_t = server.feed(b"POST /v2/x HTTP/1.1\r\nhost")
    body_t = server.feed(b"POST /v2/x HTTP/1.1\r\ncontent-length: 100\r\n\r\n" + b"x" * 10)
    busy_t = server.feed(INFER)
    server.state.sweep(t0)  # first look: every connection counts as progressing
    body_t.protocol.data_received(b"y" * 10)
    server.state.sweep(t0 + 1.5)
    assert head_t.closed and status_of(head_t.out) == 408 and "header timeout" in error_of(head_t.out)
    assert not body_t.closed and not busy_t.closed  # the body moved; the busy one waits for its upstream
    server.state.sweep(t0 + 3.6)
    assert body_t.closed and "body timeout" in error_of(body_t.out)
    server.state.sweep(t0 + 100.0)
    assert not busy_t.closed
    server.replies[0](Response(200, b"", b"{}"))  # now idle: the idle timeout applies, and closes silently
    server.state.sweep(t0 + 101.0)
    server.state.sweep(t0 + 104.1)
    assert busy_t.closed and bytes(busy_t.out).count(b"HTTP/1.1") == 1


async def test_at_the_connection_cap_the_longest_waiting_idle_or_partial_connection_makes_room() -> None:
    server = Server(Limits(max_connections=3), answer="later")
    slow_t = server.feed(b"GET /v2/x HTTP/1.1\r\nx-slow")  # a slowloris
    busy_t = server.feed(INFER)  # in service: never closed for room
    server.state.sweep(10.0)
    fresh, fresh_t = server.connect()
    server.state.sweep(11.0)
    newcomer, newcomer_t = server.connect()  # at the cap: the slowloris (seen first, at 10.0) goes
    assert slow_t.closed and status_of(slow_t.out) == 503 and not busy_t.closed and not fresh_t.closed
    assert not newcomer_t.closed and len(server.state.connections) == 3
    fresh.data_received(INFER)  # all three in service now
    newcomer.data_received(INFER)
    last_t = server.connect()[1]
    assert last_t.closed and status_of(last_t.out) == 503
    assert error_of(last_t.out) == "the gateway's connection limit (3) is reached; retry"


async def test_a_client_that_stops_taking_our_answers_is_dropped_after_the_send_timeout() -> None:
    server = Server(Limits(body_timeout=2.0))
    conn, transport = server.connect()
    conn.data_received(b"GET /v2/health/live HTTP/1.1\r\n\r\n")
    conn.pause_writing()  # what asyncio does when our answers pile up unread
    transport.backlog = 70_000
    server.state.sweep(0.0)
    transport.backlog = 60_000  # it took some of our answer: progress, the clock restarts
    server.state.sweep(1.0)
    server.state.sweep(2.5)
    assert not transport.closed
    server.state.sweep(3.1)
    assert transport.closed and transport.aborted  # nothing can be delivered: dropped, not closed politely


async def test_after_a_refusal_the_connection_lingers_dropping_input_until_the_client_closes() -> None:
    """Closing a socket with unread input resets it, and the reset can destroy our answer before the client
    read it: so our side is shut after the answer and the rest is read and dropped (nginx's lingering close)."""
    server = Server(Limits(max_body=10, body_timeout=2.0))
    transport = server.feed(b"POST /v2/x HTTP/1.1\r\ncontent-length: 5000\r\n\r\n" + b"x" * 100)
    conn = transport.protocol
    assert status_of(transport.out) == 413 and transport.eof and not transport.closed and transport.reading
    written = len(transport.out)
    conn.data_received(b"x" * 4900 + INFER)  # the rest of the body, and a request behind it: dropped
    assert len(transport.out) == written and not server.requests
    server.state.sweep(0.0)
    server.state.sweep(2.1)  # a client that never closes is closed after the body timeout
    assert transport.closed


def test_notes_summarise_each_title_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    """The limits' closes and the proxy's fallbacks each get one summary line with their counts, at most
    every NOTE_INTERVAL seconds; nothing is written while nothing happened."""

    def handler(request: Request, reply: Reply) -> None:  # never called
        raise AssertionError(request)

    state = ServerState(handler)
    state.flush_notes(0.0)
    assert not caplog.records
    state.note("header timeout")
    state.note("header timeout")
    state.note("candidate error -> refuse", title=FALLBACK_NOTES)
    with caplog.at_level("WARNING", logger="mlrollout.gateway"):
        state.flush_notes(100.0)
        lines = [r.getMessage() for r in caplog.records]
        assert lines == [
            f"client limits closed connections in the last {NOTE_INTERVAL:g} s: 2 header timeout",
            f"{FALLBACK_NOTES} in the last {NOTE_INTERVAL:g} s: 1 candidate error -> refuse",
        ]
        state.note("body timeout")
        state.flush_notes(100.0 + NOTE_INTERVAL / 2)  # too soon: kept for the next line
        assert len(caplog.records) == 2
        state.flush_notes(100.0 + NOTE_INTERVAL)
        assert caplog.records[-1].getMessage().endswith("s: 1 body timeout") and len(caplog.records) == 3
