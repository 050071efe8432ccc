"""Upstream connections that fail before the request was sent: a pod being replaced, seen by a real gateway.

Three situations: an upstream that starts listening shortly after the request arrived (the connect is
retried and the request succeeds), one that never listens (the retries stop, the usual fallback or error
answers), and a kept-alive connection the upstream closed while idle (the next request succeeds on a new
connection, also when the close crosses the gateway's write).

"Not listening" is a socket the test binds and holds but does not `listen()` on: connects to it are
refused, and no other process can take the port meanwhile. The late listener is that same socket,
passed to a fake upstream process that waits; the test calls `listen()` itself the moment the gateway
logs its first retry, so the request provably arrived while nothing was listening.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.component.gateway.gateway_helpers import (
    BODY,
    FAKE_UPSTREAM,
    INFER,
    READY_TIMEOUT,
    Proc,
    RouteFile,
    fallback,
    gateway,
    metric_sum,
    request,
    table,
)
from tests.support.procs import free_port, running, terminate
from tests.support.waiting import wait_for

from mlrollout_serving.contract import metrics as contract

pytestmark = pytest.mark.component

DEBUG = ("--log-level", "DEBUG")
FALLBACKS = contract.GATEWAY_FALLBACKS.name
CONNECT_RETRIES = contract.GATEWAY_UPSTREAM_CONNECT_RETRIES.name
RETRIES = len((0.02, 0.05, 0.1))  # upstream.CONNECT_RETRY_DELAYS, as the docs promise it

# A fake upstream (fake_upstream.py's protocol) serving a socket inherited from the test, once it reads
# a line on stdin: by then the test has called listen() on that socket, so connects already succeed.
_LATE_UPSTREAM = """
import asyncio, socket, sys
sys.path.insert(0, sys.argv[1])
from tests.component.gateway.fake_upstream import _Proto

async def serve(sock, name):
    server = await asyncio.get_running_loop().create_server(lambda: _Proto(name), sock=sock)
    async with server:
        await server.serve_forever()

sock = socket.socket(fileno=int(sys.argv[2]))
print("waiting", flush=True)
sys.stdin.readline()
asyncio.run(serve(sock, sys.argv[3]))
"""


@contextlib.contextmanager
def _not_listening() -> Iterator[socket.socket]:
    """A bound loopback TCP socket nobody listens on (yet): connecting to its port is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


def _url(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _retry_lines(gw: Proc, sock: socket.socket) -> list[str]:
    pattern = re.compile(rf"connecting to upstream 127\.0\.0\.1:{sock.getsockname()[1]} failed .*; retry (\d+) in")
    return [m.group(1) for m in pattern.finditer(gw.output())]


@contextlib.contextmanager
def _late_upstream(sock: socket.socket, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """A fake upstream process holding `sock`, started and waiting when yielded, serving `sock` after a
    line on its stdin; always stopped."""
    with tempfile.NamedTemporaryFile(prefix="late-upstream-", suffix=".log") as out:
        cmd = [sys.executable, "-c", _LATE_UPSTREAM, str(FAKE_UPSTREAM.parent), str(sock.fileno()), name]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=out, pass_fds=(sock.fileno(),))
        try:
            log = Path(out.name)
            wait_for(lambda: b"waiting" in log.read_bytes() or proc.poll() is not None, timeout=READY_TIMEOUT,
                     what="the late upstream to start")  # fmt: skip
            assert proc.poll() is None, log.read_text(errors="replace")
            yield proc
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            terminate(proc)


@contextlib.contextmanager
def _listen_on_first_retry(gw: Proc, sock: socket.socket, upstream: subprocess.Popen[bytes]) -> Iterator[None]:
    """For the block: listen as soon as the gateway logs a retry for `sock`'s port (its log polled in a
    thread), then let the upstream serve."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if _retry_lines(gw, sock):
                sock.listen(16)
                assert upstream.stdin is not None
                upstream.stdin.write(b"go\n")
                upstream.stdin.flush()
                return
            stop.wait(0.002)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def _table_active(gw: Proc, version: int) -> None:
    wait_for(lambda: metric_sum(gw.url, "mlrollout_gateway_route_table_version") == version, what=f"table {version}")


def test_upstream_that_starts_listening_late_gets_the_request(routes: RouteFile, up_a: Proc) -> None:
    """The candidate refuses the first connect and listens a moment later: the request is answered by it.

    The listen() follows the gateway's first retry log line within milliseconds, well inside the
    20 + 50 + 100 ms of retries. Should a heavily loaded machine still delay it past the last retry, the
    request falls back to stable as it must, and the scenario is run again with a new port (at most 3).
    """
    routes.write(table(1, up_a.url))
    proved = False
    with gateway(routes, *DEBUG) as gw:
        for version in (2, 3, 4):
            with _not_listening() as sock, _late_upstream(sock, "late") as upstream:
                routes.write(table(version, up_a.url, _url(sock), 100, **fallback({"action": "stable"}, timeout=20.0)))
                _table_active(gw, version)
                with _listen_on_first_retry(gw, sock, upstream):
                    answer = request(gw.url + INFER, BODY, timeout=60)
                retries = _retry_lines(gw, sock)
                assert retries, "the request reached the gateway before the listen(), so a connect was refused"
                if answer.track == "candidate":
                    assert (answer.status, answer.body["model_name"]) == (200, "late")
                    assert retries[0] == "1" and len(retries) <= RETRIES
                    proved = True
                    print(f"late listener answered after {len(retries)} refused retries, try {version - 1}")
                    break
                # listen() came after the last retry: the retries stopped and stable answered
                assert (answer.status, answer.track, answer.body["model_name"]) == (200, "stable", "up-a")
                assert retries == [str(n) for n in range(1, RETRIES + 1)]
        assert proved, "in 3 tries, the late listener never got the request"
        assert metric_sum(gw.url, "mlrollout_gateway_requests_total", track="candidate", code="200") == 1


def test_upstream_that_never_listens_falls_back_after_the_retries(routes: RouteFile, up_a: Proc) -> None:
    with _not_listening() as dead:
        routes.write(table(1, up_a.url, _url(dead), 100, **fallback({"action": "stable"}, timeout=20.0)))
        with gateway(routes, *DEBUG) as gw:
            answer = request(gw.url + INFER, BODY)
            assert (answer.status, answer.track, answer.body["model_name"]) == (200, "stable", "up-a")
            assert _retry_lines(gw, dead) == ["1", "2", "3"]  # and then no more
            assert metric_sum(gw.url, FALLBACKS, track="candidate", reason="unavailable", action="stable") == 1
            assert metric_sum(gw.url, FALLBACKS) == 1
            upstream = _url(dead).removeprefix("http://")
            assert metric_sum(gw.url, CONNECT_RETRIES, track="candidate", upstream=upstream) == RETRIES
            assert metric_sum(gw.url, CONNECT_RETRIES, track="stable") == 0


def test_upstream_that_never_listens_without_a_chain_is_a_502(routes: RouteFile) -> None:
    with _not_listening() as dead:
        routes.write(table(1, _url(dead), **fallback(timeout=20.0)))
        with gateway(routes, *DEBUG) as gw:
            answer = request(gw.url + INFER, BODY)
            assert (answer.status, answer.track, answer.body["reason"]) == (502, "stable", "unavailable")
            assert answer.body["error"].endswith(f"({RETRIES + 1} attempts)")
            assert _retry_lines(gw, dead) == ["1", "2", "3"]


def test_retries_never_outlast_the_request_timeout(routes: RouteFile) -> None:
    """With a 10 ms budget not even the first 20 ms wait fits: one attempt, no retry."""
    with _not_listening() as dead:
        routes.write(table(1, _url(dead), **fallback(timeout=0.01)))
        with gateway(routes, *DEBUG) as gw:
            answer = request(gw.url + INFER, BODY)
            # refused (502), or on a loaded machine the connect itself may outlast 10 ms (504)
            assert (answer.status, answer.body["reason"]) in {(502, "unavailable"), (504, "timeout")}
            assert "attempts" not in answer.body["error"]
            assert _retry_lines(gw, dead) == []


@contextlib.contextmanager
def _upstream_on(port: int, name: str) -> Iterator[Proc]:
    with running([sys.executable, str(FAKE_UPSTREAM), str(port), name], port, "/count", prefix="fake-upstream-",
                 timeout=READY_TIMEOUT) as proc:  # fmt: skip
        yield proc


def _post(conn: http.client.HTTPConnection) -> None:
    conn.request("POST", INFER, body=json.dumps(BODY), headers={"content-type": "application/json"})


def _answer(conn: http.client.HTTPConnection) -> tuple[int, str, str]:
    resp = conn.getresponse()
    body = json.loads(resp.read())
    return resp.status, resp.getheader("x-mlrollout-track", ""), body.get("model_name", "")


def test_idle_connection_closed_by_the_upstream_between_requests(routes: RouteFile) -> None:
    """The upstream is replaced on the same address between two requests: the second one succeeds."""
    port = free_port()
    routes.write(table(1, f"http://127.0.0.1:{port}", **fallback(timeout=20.0)))
    with _upstream_on(port, "old") as old, gateway(routes, *DEBUG) as gw:
        assert request(gw.url + INFER, BODY).body["model_name"] == "old"  # a kept-alive upstream connection
        old.kill()  # closes that connection (FIN) while it is idle in the gateway's pool
        with _upstream_on(port, "new"):
            answers = [request(gw.url + INFER, BODY) for _ in range(3)]
            assert {(a.status, a.track, a.body["model_name"]) for a in answers} == {(200, "stable", "new")}
            assert metric_sum(gw.url, FALLBACKS) == 0


def _process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


@contextlib.contextmanager
def _frozen(proc: Proc) -> Iterator[None]:
    """SIGSTOP the process for the block (confirmed stopped before it runs), SIGCONT after."""
    proc.proc.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: _process_state(proc.proc.pid) == "T", what="the gateway to stop")
        yield
    finally:
        proc.proc.send_signal(signal.SIGCONT)


def test_idle_connection_closed_as_the_request_is_written_is_resent(routes: RouteFile) -> None:
    """The race of a draining pod: the upstream's FIN arrives just after the gateway picked the idle connection.

    Made deterministic by freezing the gateway: the client's next request is queued first, then the
    upstream dies (its FIN queued behind it) and a new one starts on the same port. When the gateway
    resumes it reads the request before the FIN, writes it on the dead connection, gets no response byte,
    and sends it again on a new connection, which the new upstream answers.
    """
    port = free_port()
    routes.write(table(1, f"http://127.0.0.1:{port}", **fallback(timeout=20.0)))
    with _upstream_on(port, "old") as old, gateway(routes, *DEBUG) as gw, contextlib.ExitStack() as stack:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
        stack.callback(conn.close)
        _post(conn)
        assert _answer(conn) == (200, "stable", "old")  # the gateway keeps its upstream connection idle
        with _frozen(gw):
            _post(conn)  # on the same client connection, which the gateway then reads before the FIN
            old.kill()
            stack.enter_context(_upstream_on(port, "new"))
        assert _answer(conn) == (200, "stable", "new")
        assert "closed an idle keep-alive connection under a request; resending it" in gw.output()
        assert metric_sum(gw.url, FALLBACKS) == 0
