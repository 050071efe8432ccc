"""Upstreams that break HTTP: the client gets a 502/504 that says what the upstream did (or the right
answer, for a 1xx), never another exchange's bytes, and the gateway's memory stays bounded."""

from __future__ import annotations

import time

import pytest
from tests.component.gateway.gateway_helpers import (
    BODY,
    INFER,
    Proc,
    RouteFile,
    exchange,
    fallback,
    gateway,
    memory_kib,
    request,
    table,
)

pytestmark = pytest.mark.component

ATTACKER = "127.0.0.9"
BYSTANDER = "127.0.0.2"


def _misbehave(mode: str) -> dict[str, str]:
    return {"x-misbehave": mode}


def test_an_extra_response_never_reaches_another_client(routes: RouteFile, up_a: Proc) -> None:
    """The issue's desync: after an extra response, the next request on that upstream connection, even
    from another client, got `{"stale": ...}` glued to its own body."""
    routes.write(table(1, up_a.url))
    with gateway(routes) as gw:
        bad = request(gw.url + INFER, BODY, _misbehave("extra"), client=ATTACKER)
        assert bad.status == 502
        assert bad.body["error"] == (
            f"upstream 127.0.0.1:{up_a.port} sent more than one response (or a wrong content-length); connection closed"
        )
        for _ in range(5):
            good = request(gw.url + INFER, BODY, client=BYSTANDER)
            assert good.status == 200 and good.body["model_name"] == "up-a" and "stale" not in good.body


def test_an_extra_response_on_an_idle_connection_closes_it(routes: RouteFile, up_a: Proc) -> None:
    routes.write(table(1, up_a.url))
    with gateway(routes) as gw:
        first = request(gw.url + INFER, BODY, _misbehave("extra-later"), client=ATTACKER)
        assert first.status == 200 and first.body["model_name"] == "up-a"
        time.sleep(0.3)  # the fake sends its extra response 50 ms after the real one
        for _ in range(5):
            good = request(gw.url + INFER, BODY, client=BYSTANDER)
            assert good.status == 200 and "stale" not in good.body
        assert f"upstream 127.0.0.1:{up_a.port} sent data on an idle connection; closed it" in gw.output()


@pytest.mark.parametrize("mode", ["continue", "early-hints"])
def test_interim_responses_are_skipped(routes: RouteFile, up_a: Proc, mode: str) -> None:
    """The issue: an upstream `100 Continue` reached the client as `HTTP/1.1 100 Unknown`, which then hung."""
    routes.write(table(1, up_a.url))
    raw = b"POST %s HTTP/1.1\r\nhost: gw\r\nx-misbehave: %s\r\ncontent-length: 2\r\n\r\n{}" % (
        INFER.encode(),
        mode.encode(),
    )
    with gateway(routes) as gw:
        answer = exchange(gw.port, raw, timeout=10)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.count(b"HTTP/1.1 ") == 1
        assert answer.endswith(b"}") and b'"model_name": "up-a"' in answer


def test_the_upstreams_own_mlrollout_headers_are_not_passed_through(routes: RouteFile, up_a: Proc) -> None:
    """The issue: the upstream's x-mlrollout-track header was forwarded, so clients saw it twice; and any other
    x-mlrollout-* an upstream sent (a feedback or review id the gateway never issued) reached the client."""
    routes.write(table(1, up_a.url))
    raw = b"POST %s HTTP/1.1\r\nhost: gw\r\nx-misbehave: track-header\r\ncontent-length: 2\r\n\r\n{}" % INFER.encode()
    with gateway(routes) as gw:
        answer = exchange(gw.port, raw)
        head = answer.split(b"\r\n\r\n")[0].lower()
        assert head.count(b"x-mlrollout-track:") == 1 and b"x-mlrollout-track: stable" in head
        assert head.count(b"x-mlrollout-route-version:") == 1 and b"x-mlrollout-route-version: 1" in head
        assert head.count(b"x-mlrollout-") == 2 and b"forged" not in head and b"evil" not in head, head
        assert b"x-model-note: kept" in head  # the upstream's other headers pass


def test_a_300_mb_upstream_body_is_cut_off_at_the_limit(routes: RouteFile, up_a: Proc) -> None:
    """The issue: a 300 MB upstream body was forwarded whole, in memory."""
    routes.write(table(1, up_a.url, **fallback(timeout=30.0)))
    with gateway(routes, "--max-response-bytes", str(8 * 1024 * 1024)) as gw:
        before = memory_kib(gw)
        answer = request(gw.url + INFER, BODY, _misbehave("huge"), timeout=30)
        assert answer.status == 502
        assert answer.body["error"] == f"upstream 127.0.0.1:{up_a.port} answered more than 8388608 bytes"
        assert memory_kib(gw) - before < 32 * 1024  # peak growth: the 8 MiB limit plus reading slack
        assert request(gw.url + INFER, BODY).status == 200


@pytest.mark.parametrize(
    ("mode", "status", "error"),
    [
        ("short-length", 502, "sent more than one response (or a wrong content-length); connection closed"),
        ("close-mid-body", 502, "closed the connection"),
        ("unframed", 502, "closed the connection"),
        ("garbage", 502, "bad HTTP from upstream"),
        ("switch", 502, "answered 101 Switching Protocols, which the gateway never asks for"),
        ("endless", 502, "answered more than 67108864 bytes"),
        ("huge-header", 502, "sent a response head larger than 65536 bytes"),
        ("long-length", 504, "did not answer within 1s"),
        ("stall", 504, "did not answer within 1s"),
    ],
)
def test_broken_upstream_answers_are_502_or_504_with_what_went_wrong(
    routes: RouteFile, up_a: Proc, mode: str, status: int, error: str
) -> None:
    silent = status == 504  # only the upstreams that fall silent need a short request timeout
    routes.write(table(1, up_a.url, **fallback(timeout=1.0 if silent else 20.0)))
    with gateway(routes) as gw:
        answer = request(gw.url + INFER, BODY, _misbehave(mode), client=ATTACKER)
        assert answer.status == status and error in answer.body["error"]
        good = request(gw.url + INFER, BODY, client=BYSTANDER)
        assert good.status == 200 and good.body["model_name"] == "up-a"
