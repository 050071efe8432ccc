"""Graceful shutdown: SIGTERM under load loses no request and the process exits 0.

A request sent after ``kill()`` returned is read by the server only after the signal was delivered, and
the server's signal handler itself switches to draining, so its reply must say ``connection: close`` (or,
when the client was slower than the server's idle linger, the server has already closed the connection).
"""

from __future__ import annotations

import http.client
import signal
import threading
import time

import pytest
from tests.component.server.conftest import infer_body
from tests.support.models import BuiltModel
from tests.support.procs import start_server

pytestmark = pytest.mark.component


class Client(threading.Thread):
    """Sends requests back to back; a request counts as lost when it was sent but got no answer.

    After the server closed a connection (``connection: close``), opening a new one is refused: such a
    request was never accepted, so it is not lost - it stops the client.
    """

    def __init__(self, port: int, body: bytes) -> None:
        super().__init__(daemon=True)
        self.port, self.body = port, body
        self.ok = 0
        self.after_term = 0
        self.lost: list[str] = []
        self.bad: list[int] = []
        self.kept_open = 0
        """Replies without ``connection: close`` to requests sent after SIGTERM was delivered."""
        self.term_sent = threading.Event()
        self.term_delivered = threading.Event()

    def run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while True:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                try:
                    conn.connect()
                except OSError:
                    return  # refused: the server stopped accepting
            sent_after_term = self.term_delivered.is_set()
            try:
                conn.request("POST", "/v2/models/digits/infer", body=self.body)
            except OSError as e:
                self.lost.append(f"send: {e!r}")
                return
            try:
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException) as e:
                self.lost.append(f"answer: {e!r}")
                return
            if resp.status != 200:
                self.bad.append(resp.status)
            self.ok += 1
            self.after_term += self.term_sent.is_set()
            self.kept_open += sent_after_term and not resp.will_close
            if resp.will_close:
                conn.close()
                conn = None


def test_sigterm_under_load_loses_no_request(digits_model: BuiltModel) -> None:
    server = start_server(digits_model, name="digits", extra_args=["--shutdown-grace", "30"])
    clients: list[Client] = []
    try:
        body = infer_body(digits_model, digits_model.samples)  # 64 rows per request
        clients = [Client(server.port, body) for _ in range(8)]
        for c in clients:
            c.start()
        deadline = time.monotonic() + 60
        while sum(c.ok for c in clients) < 50 and time.monotonic() < deadline:
            time.sleep(0.02)
        for c in clients:
            c.term_sent.set()
        server.proc.send_signal(signal.SIGTERM)
        for c in clients:
            c.term_delivered.set()
        code = server.proc.wait(timeout=60)
        for c in clients:
            c.join(60)
    finally:
        server.stop()
    output = server.output()
    server.log_path.unlink(missing_ok=True)
    assert code == 0, output
    assert "SIGTERM: not ready, draining" in output
    assert [c.lost for c in clients if c.lost] == []
    assert [c.bad for c in clients if c.bad] == []
    assert [c.kept_open for c in clients] == [0] * len(clients)
    assert sum(c.ok for c in clients) >= 50
    assert all(not c.is_alive() for c in clients)


def _send_after_term(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes] | None:
    """Send on a keep-alive connection opened before SIGTERM: (status, body) of a reply that must say
    ``connection: close``, or None when the server had already closed the idle connection (its linger
    of 0.5 s ended before this client, slowed down by load, got to send)."""
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        data = resp.read()
    except ConnectionError:
        return None
    assert resp.will_close, f"{method} {path} sent after SIGTERM was answered with keep-alive"
    return resp.status, data


def test_not_ready_while_draining(wine_model: BuiltModel) -> None:
    """After SIGTERM, readiness fails and a request on an open connection is still answered, then closed."""
    server = start_server(wine_model, name="wine", extra_args=["--shutdown-grace", "30"])
    probe = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        for c in (probe, conn):
            c.request("GET", "/v2/health/ready")
            resp = c.getresponse()
            assert resp.read() == b'{"ready":true}' and not resp.will_close
        server.proc.send_signal(signal.SIGTERM)
        assert _send_after_term(probe, "GET", "/v2/health/ready") in (
            (503, b'{"ready":false,"reason":"draining"}'),
            None,
        )
        body = infer_body(wine_model, wine_model.samples[:1])
        answer = _send_after_term(conn, "POST", "/v2/models/wine/infer", body)
        assert answer is None or answer[0] == 200, answer
        assert server.proc.wait(timeout=60) == 0
    finally:
        probe.close()
        conn.close()
        server.stop()
        server.log_path.unlink(missing_ok=True)
