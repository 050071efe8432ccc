"""Fallback chain against upstreams that fail, slow down or disappear (the breaker: test_gateway_breaker.py)."""

from __future__ import annotations

import pytest
from tests.component.gateway.gateway_helpers import (
    BODY,
    INFER,
    Proc,
    RouteFile,
    control,
    fallback,
    gateway,
    metric_sum,
    request,
    table,
)
from tests.support.waiting import wait_for

from mlrollout_serving.contract import metrics as contract

pytestmark = pytest.mark.component

FALLBACKS = contract.GATEWAY_FALLBACKS.name
ANSWERED = contract.GATEWAY_FALLBACK_REQUESTS.name  # once per request, by routed track and what answered


def test_error_on_candidate_retries_on_stable(routes: RouteFile, up_a: Proc, up_b: Proc) -> None:
    routes.write(table(1, up_a.url, up_b.url, 100, **fallback({"action": "stable"}, {"action": "refuse"})))
    control(up_b, status=500)
    with gateway(routes) as gw:
        answers = [request(gw.url + INFER, BODY) for _ in range(5)]
        assert {(a.status, a.track, a.body["model_name"]) for a in answers} == {(200, "stable", "up-a")}
        assert metric_sum(gw.url, FALLBACKS, track="candidate", reason="error", action="stable") == 5
        assert metric_sum(gw.url, "mlrollout_gateway_requests_total", track="stable", code="200") == 5
        # the failures stay the candidate's, though every client got stable's 200
        assert metric_sum(gw.url, ANSWERED, track="candidate", revision="rev-candidate", reason="error",
                          answered="stable") == metric_sum(gw.url, ANSWERED) == 5  # fmt: skip


def test_timeout_goes_to_the_backup_model_with_its_name(routes: RouteFile, up_a: Proc, up_b: Proc, up_c: Proc) -> None:
    backup = {"action": "backup", "backup": {"name": "tiny", "upstream": up_c.url}}
    routes.write(table(1, up_a.url, up_b.url, 100, **fallback(backup, timeout=0.3)))
    control(up_b, delay=3.0)
    with gateway(routes) as gw:
        answer = request(gw.url + "/v2/models/iris/versions/3/infer", BODY)
        assert (answer.status, answer.track, answer.body["model_name"]) == (200, "backup", "up-c")
        assert answer.body["path"] == "/v2/models/tiny/infer"  # model name rewritten, version dropped
        assert metric_sum(gw.url, FALLBACKS, track="candidate", reason="timeout", action="backup") == 1
        assert metric_sum(gw.url, ANSWERED, track="candidate", reason="timeout", answered="backup") == 1


def test_default_response_when_stable_itself_fails(routes: RouteFile, up_a: Proc) -> None:
    default = {"model_name": "iris", "outputs": [{"name": "label", "shape": [1], "datatype": "INT64", "data": [0]}]}
    steps = ({"action": "stable"}, {"action": "default", "defaultResponse": default})
    routes.write(table(1, up_a.url, **fallback(*steps)))
    control(up_a, status=503)
    with gateway(routes) as gw:
        answer = request(gw.url + INFER, BODY)
        assert (answer.status, answer.track, answer.body) == (200, "default", default)
        # retrying stable on stable is skipped: the only fallback counted is the default
        assert metric_sum(gw.url, FALLBACKS, track="stable", reason="error", action="default") == 1
        assert metric_sum(gw.url, FALLBACKS, action="stable") == 0
        assert metric_sum(gw.url, ANSWERED, track="stable", reason="error", answered="default") == 1


def test_refuse_says_why(routes: RouteFile, up_a: Proc, up_b: Proc) -> None:
    refuse = {"action": "refuse", "message": "model temporarily unavailable"}
    routes.write(table(1, up_a.url, up_b.url, 100, **fallback({"action": "stable"}, refuse)))
    control(up_a, status=500)
    control(up_b, status=500)
    with gateway(routes) as gw:
        answer = request(gw.url + INFER, BODY)
        assert answer.status == 503 and answer.track == "refuse"
        assert answer.body["reason"] == "error"
        assert answer.body["error"].startswith("model temporarily unavailable (track candidate failed")
        assert metric_sum(gw.url, FALLBACKS, track="candidate", reason="error", action="stable") == 1
        # the stable retry failed too: its failure is the reason for the refusal
        assert metric_sum(gw.url, FALLBACKS, track="candidate", reason="error", action="refuse") == 1
        assert metric_sum(gw.url, "mlrollout_gateway_requests_total", track="candidate", code="503") == 1
        # two steps taken, one request: counted once, with the candidate's own failure
        assert metric_sum(gw.url, ANSWERED, track="candidate", reason="error", answered="refuse") == 1
        assert metric_sum(gw.url, ANSWERED) == 1
        # and the log says so (one summary line per interval, not one per request): a client's 503 has a cause
        # an operator can read without Prometheus
        wait_for(lambda: "requests not answered by their track" in gw.output(), what="the fallback summary line")
        assert "1 candidate error -> refuse" in gw.output()


def test_no_chain_means_the_failure_reaches_the_client(routes: RouteFile, up_a: Proc) -> None:
    routes.write(table(1, up_a.url, **fallback(timeout=0.2)))
    control(up_a, delay=2.0)
    with gateway(routes) as gw:
        answer = request(gw.url + INFER, BODY)
        assert answer.status == 504 and answer.body["reason"] == "timeout"
        assert metric_sum(gw.url, ANSWERED, track="stable", reason="timeout", answered="none") == 1


def test_killed_upstream_is_unavailable_and_falls_back(routes: RouteFile, up_a: Proc, up_b: Proc) -> None:
    routes.write(table(1, up_a.url, up_b.url, 100, **fallback({"action": "stable"})))
    with gateway(routes) as gw:
        assert request(gw.url + INFER, BODY).track == "candidate"
        up_b.kill()
        answers = [request(gw.url + INFER, BODY) for _ in range(3)]
        assert {(a.status, a.track) for a in answers} == {(200, "stable")}
        # the pooled keep-alive connection dies with the process; new connects are refused
        assert metric_sum(gw.url, FALLBACKS, track="candidate", action="stable") == 3
        assert metric_sum(gw.url, FALLBACKS, track="candidate", reason="unavailable", action="stable") >= 2
