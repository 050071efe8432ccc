"""Connection handling: idle keep-alive connections are closed, busy ones are not."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest
from tests.support.models import BuiltModel
from tests.support.procs import serve_model

pytestmark = pytest.mark.component

GET_READY = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"


def test_idle_keepalive_connections_are_closed(wine_model: BuiltModel) -> None:
    with serve_model(wine_model, name="wine", extra_args=["--keepalive-timeout", "1"]) as server:
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        busy = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        try:
            for s in (idle, busy):
                s.sendall(GET_READY)
                assert s.recv(4096).startswith(b"HTTP/1.1 200")
            deadline = time.monotonic() + 30
            closed = False
            while time.monotonic() < deadline and not closed:
                busy.sendall(GET_READY)  # keeps talking, so it stays open
                assert busy.recv(4096).startswith(b"HTTP/1.1 200")
                idle.settimeout(0.2)
                with contextlib.suppress(TimeoutError):
                    closed = idle.recv(1) == b""
            assert closed, "the idle connection was not closed"
            busy.sendall(GET_READY)
            assert busy.recv(4096).startswith(b"HTTP/1.1 200")
        finally:
            idle.close()
            busy.close()
