"""HTTP/1.1 edge cases on the gateway's own server side: pipelining, chunked bodies, HTTP/1.0, limits."""

from __future__ import annotations

import json
import socket

import pytest
from gateway_helpers import Proc, RouteFile, gateway, read_until, table

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
