"""Route-table hot reload: applies quickly, invalid tables are refused, in-flight requests keep their table,
and SIGTERM drains."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time

import pytest
from tests.component.gateway.gateway_helpers import (
    BODY,
    INFER,
    Answer,
    Proc,
    RouteFile,
    control,
    gateway,
    metric_sum,
    request,
    table,
    upstream_count,
)
from tests.support.waiting import wait_for

from mlrollout_serving.contract import metrics as contract

pytestmark = pytest.mark.component

VERSION = contract.GATEWAY_ROUTE_VERSION.name


def test_new_table_applies_and_is_visible(routes: RouteFile, up_a: Proc, up_b: Proc) -> None:
    routes.write(table(1, up_a.url, up_b.url, 0))
    with gateway(routes) as gw:
        first = request(gw.url + INFER, BODY)
        assert (first.version, first.track, first.body["model_name"]) == (1, "stable", "up-a")
        assert metric_sum(gw.url, VERSION, track="gateway", revision="", namespace="test-ns") == 1
        routes.write(table(2, up_a.url, up_b.url, 100))
        written = time.monotonic()
        wait_for(lambda: request(gw.url + INFER, BODY).version == 2, what="version 2")
        print(f"route table v2 visible after {time.monotonic() - written:.3f}s")
        answer = request(gw.url + INFER, BODY)
        assert (answer.track, answer.body["model_name"]) == ("candidate", "up-b")
        assert metric_sum(gw.url, VERSION) == 2
        assert "route table version 2 active" in gw.output()


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("version: 3\ntracks: {stable: {upstream: 'http://127.0.0.1:1', weight: 50}}\n", "must add up to 100"),
        ("version: [3\n", "not valid YAML"),
        ("version: 3\nmode: ab\ntracks: {stable: {upstream: 'http://127.0.0.1:1', weight: 100}}\n", "sticky"),
    ],
)
def test_invalid_table_is_rejected_and_previous_stays(
    routes: RouteFile, up_a: Proc, up_b: Proc, bad: str, reason: str
) -> None:
    routes.write(table(1, up_a.url, up_b.url, 0))
    with gateway(routes) as gw:
        routes.write(bad)
        wait_for(lambda: "rejected, keeping" in gw.output(), what="the rejection log line")
        line = next(x for x in gw.output().splitlines() if "rejected, keeping" in x)
        assert "keeping version 1" in line and reason in line, line
        answer = request(gw.url + INFER, BODY)
        assert (answer.status, answer.version, answer.track) == (200, 1, "stable")
        assert metric_sum(gw.url, VERSION) == 1
        routes.write(table(4, up_a.url, up_b.url, 100))  # a valid table afterwards still applies
        wait_for(lambda: request(gw.url + INFER, BODY).version == 4, what="version 4")


def test_in_flight_request_finishes_on_its_table(routes: RouteFile, up_a: Proc, up_b: Proc) -> None:
    routes.write(table(1, up_a.url, up_b.url, 0))
    control(up_a, delay=1.5)
    with gateway(routes) as gw:
        slow: list[Answer] = []
        thread = threading.Thread(target=lambda: slow.append(request(gw.url + INFER, BODY)))
        thread.start()
        wait_for(lambda: metric_sum(gw.url, VERSION) == 1 and _count(up_a) == 1, what="request in flight")
        routes.write(table(2, up_b.url))  # up-a is no longer named at all: its pool is dropped
        wait_for(lambda: request(gw.url + INFER, BODY).version == 2, what="version 2")
        assert request(gw.url + INFER, BODY).body["model_name"] == "up-b"
        thread.join(30)
        assert (slow[0].status, slow[0].version, slow[0].body["model_name"]) == (200, 1, "up-a")
        routes.write(table(3, up_a.url))  # named again: a fresh pool, and it works
        control(up_a, delay=0.0)
        wait_for(lambda: request(gw.url + INFER, BODY).version == 3, what="version 3")
        assert request(gw.url + INFER, BODY).body["model_name"] == "up-a"


def _count(up: Proc) -> int:
    return upstream_count(up)


def test_sigterm_finishes_in_flight_then_exits_zero(routes: RouteFile, up_a: Proc) -> None:
    routes.write(table(1, up_a.url))
    control(up_a, delay=1.0)
    with gateway(routes) as gw:
        answers: list[Answer] = []
        threads = [threading.Thread(target=lambda: answers.append(request(gw.url + INFER, BODY))) for _ in range(3)]
        for t in threads:
            t.start()
        wait_for(lambda: _count(up_a) == 3, what="three requests in flight")
        started = time.monotonic()
        gw.proc.send_signal(15)
        code = gw.proc.wait(timeout=30)
        for t in threads:
            t.join(30)
        assert code == 0, gw.output()
        assert [a.status for a in answers] == [200, 200, 200]
        assert time.monotonic() - started < 25  # drained, not killed by the drain timeout
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", gw.port), timeout=2).close()


def _send_after_term(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None) -> int | None:
    """Send on a keep-alive connection opened before SIGTERM: the status of a reply that must say
    ``connection: close``, or None when the gateway had already closed the idle connection."""
    try:
        conn.request(method, path, body=body, headers={"content-type": "application/json"})
        resp = conn.getresponse()
        resp.read()
    except ConnectionError:
        return None
    assert resp.will_close, f"{method} {path} sent after SIGTERM was answered with keep-alive"
    return resp.status


def test_sigterm_fails_readiness_and_closes_open_connections(routes: RouteFile, up_a: Proc) -> None:
    """The signal handler itself switches to draining: a request the gateway reads after the signal was
    delivered, even in the same loop turn, gets no keep-alive reply, and readiness fails."""
    routes.write(table(1, up_a.url))
    body = json.dumps(BODY).encode()
    with gateway(routes) as gw:
        conns = [http.client.HTTPConnection("127.0.0.1", gw.port, timeout=60) for _ in range(3)]
        probe, idle, busy = conns
        try:
            for c, path, data in ((probe, "/v2/health/ready", None), (idle, INFER, body), (busy, INFER, body)):
                c.request("POST" if data else "GET", path, body=data, headers={"content-type": "application/json"})
                resp = c.getresponse()
                resp.read()
                assert resp.status == 200 and not resp.will_close
            control(up_a, delay=1.0)
            busy.request("POST", INFER, body=body, headers={"content-type": "application/json"})
            wait_for(lambda: _count(up_a) == 3, what="the request in flight")
            gw.proc.send_signal(signal.SIGTERM)
            assert _send_after_term(probe, "GET", "/v2/health/ready") in (503, None)
            assert _send_after_term(idle, "POST", INFER, body) in (200, None)
            in_flight = busy.getresponse()
            in_flight.read()
            assert in_flight.status == 200 and in_flight.will_close
            assert gw.proc.wait(timeout=60) == 0, gw.output()
        finally:
            for c in conns:
                c.close()


def test_sigterm_leaves_idle_keep_alive_connections_open_for_one_more_request(routes: RouteFile, up_a: Proc) -> None:
    """Given clients holding idle keep-alive connections (an evicted pod's clients keep theirs: kube-proxy only
    sends new ones elsewhere), When SIGTERM arrives, Then the gateway does not close them under a client that
    may be writing its next request (a broken pipe, never retried for a POST: two failed requests per gateway
    pod in the node-drain e2e), but answers that request with `connection: close`; the connections nobody
    uses again are closed after `--drain-idle-seconds` (3 s) and the gateway exits 0."""
    routes.write(table(1, up_a.url))
    body = json.dumps(BODY).encode()
    with gateway(routes) as gw:
        conns = [http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30) for _ in range(3)]
        try:
            for c in conns:
                c.request("POST", INFER, body=body, headers={"content-type": "application/json"})
                resp = c.getresponse()
                resp.read()
                assert resp.status == 200 and not resp.will_close
            started = time.monotonic()
            gw.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)  # the client's next request comes while the gateway drains
            for c in conns[:2]:
                c.request("POST", INFER, body=body, headers={"content-type": "application/json"})
                resp = c.getresponse()
                resp.read()
                assert resp.status == 200 and resp.will_close
            assert gw.proc.wait(timeout=30) == 0, gw.output()
            assert 2.5 < time.monotonic() - started < 15  # the unused third was given the idle grace, then closed
        finally:
            for c in conns:
                c.close()
