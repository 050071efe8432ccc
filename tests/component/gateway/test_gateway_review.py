"""Human review as a fallback: a real gateway, a real wine model server and a real HTTP receiver.

Each `respond` mode, the body as documented (validated with `jsonschema`), every client getting its own
answer and every review holding its own request, and a webhook that hangs, answers 500 or is too slow for
the queue: clients are answered without waiting for it, and what happened to each review is counted.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from tests.component.gateway.gateway_helpers import (
    Answer,
    Proc,
    RouteFile,
    gateway,
    infer_body,
    metric_sum,
    request,
    table,
)
from tests.support.httpd import Received, Reply, recorder, serving, silent_listener
from tests.support.models import BuiltModel
from tests.support.procs import ServerProcess
from tests.support.waiting import wait_for

from mlrollout_serving.contract import metrics as contract
from mlrollout_serving.gateway.review_body import REVIEW_BODY_SCHEMA

pytestmark = pytest.mark.component

WINE = "/v2/models/wine/infer"
HOOK = "/reviews"
MARK = "x-high-stakes"
SENT = contract.GATEWAY_REVIEWS_SENT.name
FAILED = contract.GATEWAY_REVIEWS_FAILED.name
DROPPED = contract.GATEWAY_REVIEWS_DROPPED.name
DEFAULT = {"model_name": "wine", "outputs": [{"name": "label", "shape": [1], "datatype": "INT64", "data": [0]}]}


def _bodies(model: BuiltModel) -> list[dict[str, Any]]:
    """One request per sample row, each with its own OIP id (the marker of whose data is whose)."""
    return [{**infer_body(model.samples[i : i + 1]), "id": f"client-{i}"} for i in range(len(model.samples))]


def _accepting(received: Received, status: int = 202, delay: float = 0.0) -> type:
    def answer(_: str) -> Reply:
        time.sleep(delay)
        return status, {}, b"{}"

    return recorder(received, {HOOK: answer})


def _reviews(received: Received) -> list[dict[str, Any]]:
    documents = [json.loads(body) for body in received.to(HOOK)]
    for document in documents:
        jsonschema.validate(document, REVIEW_BODY_SCHEMA)
    return documents


@contextlib.contextmanager
def _reviewing(routes: RouteFile, stable: ServerProcess, hook: str, *flags: str, **review: Any) -> Iterator[Proc]:
    """A gateway in front of `stable` whose review webhook is `hook` (with these review settings)."""
    routes.write(table(1, stable.url, fallback={"review": {"url": hook + HOOK, **review}}))
    with gateway(routes, *flags) as gw:
        yield gw


def _settled(url: str, total: int) -> dict[str, float]:
    """Wait until each of `total` reviews was sent, failed or dropped; the three counts (by reason too)."""

    def counts() -> dict[str, float] | None:
        found = {"sent": metric_sum(url, SENT), "failed": metric_sum(url, FAILED), "dropped": metric_sum(url, DROPPED)}
        return found if sum(found.values()) == total else None

    found = wait_for(counts, timeout=60, what=f"each of {total} reviews sent, failed or dropped")
    for name, reason in ((FAILED, "timeout"), (FAILED, "error"), (DROPPED, "queue_full")):
        found[reason] = metric_sum(url, name, reason=reason)
    return found


def _pending(answer: Answer) -> bool:
    parameters = answer.body.get("parameters") or {}
    marked = parameters.get("pending_review") is True
    assert marked == ("x-mlrollout-review-id" in answer.headers)
    if marked:
        assert parameters["review_id"] == answer.headers["x-mlrollout-review-id"]
    return marked


def test_low_confidence_answers_are_reviewed_and_the_client_gets_its_answer_marked(
    routes: RouteFile, wine_model: BuiltModel, wine_stable: ServerProcess
) -> None:
    bodies = _bodies(wine_model)
    direct = [request(wine_stable.url + WINE, b).body for b in bodies]
    tops = [max(d["outputs"][1]["data"]) for d in direct]
    threshold = sorted(tops)[len(tops) // 2]  # about half the answers are below it
    low = {b["id"] for b, top in zip(bodies, tops, strict=True) if top < threshold}
    assert 0 < len(low) < len(bodies)
    received = Received()
    with serving(_accepting(received)) as hook:
        review = {"url": hook + HOOK}
        fallback = {"confidenceThreshold": threshold, "lowConfidenceAction": {"action": "review"}, "review": review}
        routes.write(table(1, wine_stable.url, fallback=fallback))
        with gateway(routes) as gw, ThreadPoolExecutor(8) as clients:
            answers = list(clients.map(lambda b: request(gw.url + WINE, b), bodies))  # eight clients at once
            wait_for(lambda: metric_sum(gw.url, SENT, track="stable", revision="rev-stable") == len(low),
                     what="every low-confidence answer reviewed")  # fmt: skip
            steps = metric_sum(gw.url, "mlrollout_gateway_fallbacks_total", reason="low_confidence", action="review")
            unserved = metric_sum(gw.url, "mlrollout_gateway_fallback_requests_total")
        reviews = _reviews(received)
    review_ids = {}
    for body, answer, own in zip(bodies, answers, direct, strict=True):
        assert answer.status == 200 and answer.track == "stable"
        assert answer.body["outputs"] == own["outputs"]  # its own answer, nobody else's
        assert _pending(answer) == (body["id"] in low)
        if body["id"] in low:
            review_ids[body["id"]] = answer.headers["x-mlrollout-review-id"]
    assert sorted(r["request_id"] for r in reviews) == sorted(low)  # each once
    by_id = {b["id"]: (b, own) for b, own in zip(bodies, direct, strict=True)}
    for review in reviews:
        body, own = by_id[review["request_id"]]
        assert review["inputs"] == body["inputs"] and review["outputs"] == own["outputs"]
        assert review["review_id"] == review_ids[review["request_id"]]
        assert review["confidence"] == pytest.approx(max(own["outputs"][1]["data"]))
        assert review["confidence"] < threshold and review["reason"] == "low_confidence"
        assert (review["model"], review["track"], review["revision"]) == ("wine", "stable", "rev-stable")
        assert (review["namespace"], review["model_deployment"]) == ("test-ns", "iris")
    assert steps == len(low)
    assert unserved == 0  # the model's own answer was served: not a fallback request


@pytest.mark.parametrize(
    ("respond", "marker"),
    [("default", {"header": MARK}), ("refuse", {"jsonField": "parameters.high_stakes"})],
)
def test_high_stakes_requests_are_reviewed_and_answered_as_the_policy_says(
    routes: RouteFile, wine_model: BuiltModel, wine_stable: ServerProcess, respond: str, marker: dict[str, str]
) -> None:
    bodies = _bodies(wine_model)[:10]
    marked = [i % 2 == 0 for i in range(len(bodies))]

    def send(url: str, body: dict[str, Any], high: bool) -> Answer:
        if "header" in marker:
            return request(url, body, headers={MARK: "true"} if high else None)
        return request(url, {**body, "parameters": {"high_stakes": high}})

    received = Received()
    with serving(_accepting(received)) as hook:
        payload = {"defaultResponse": DEFAULT} if respond == "default" else {"message": "a person will decide"}
        with _reviewing(routes, wine_stable, hook, respond=respond, highStakes=marker, maxBodyBytes=2048,
                        **payload) as gw:  # fmt: skip
            answers = [send(gw.url + WINE, b, high) for b, high in zip(bodies, marked, strict=True)]
            # a high-stakes request whose review body is over maxBodyBytes: answered the same, review dropped
            big = {**infer_body(wine_model.samples[:40]), "id": "big"}
            oversized = send(gw.url + WINE, big, True)
            wait_for(lambda: metric_sum(gw.url, SENT) == sum(marked), what="the high-stakes answers reviewed")
            too_large = metric_sum(gw.url, DROPPED, reason="too_large")
            unserved = metric_sum(gw.url, "mlrollout_gateway_fallback_requests_total", track="stable",
                                  reason="high_stakes", answered="review")  # fmt: skip
        reviews = _reviews(received)
    for answer, high in zip(answers, marked, strict=True):
        if not high:
            assert answer.status == 200 and answer.track == "stable" and "x-mlrollout-review-id" not in answer.headers
            assert "pending_review" not in (answer.body.get("parameters") or {})
        elif respond == "default":
            assert (answer.status, answer.track, answer.body) == (200, "default", DEFAULT)
        else:
            assert (answer.status, answer.track) == (503, "refuse")
            assert answer.body["reason"] == "high_stakes" and answer.body["track"] == "stable"
            assert answer.body["error"] == "a person will decide (answer held for human review (high stakes))"
            assert answer.body["review_id"] == answer.headers["x-mlrollout-review-id"]
        if high:
            assert "x-mlrollout-review-id" in answer.headers
    assert sorted(r["request_id"] for r in reviews) == sorted(b["id"] for b, h in zip(bodies, marked, strict=True) if h)
    assert all(r["reason"] == "high_stakes" and isinstance(r["confidence"], float) for r in reviews)
    assert oversized.status == (200 if respond == "default" else 503)
    assert "x-mlrollout-review-id" not in oversized.headers and too_large == 1
    assert unserved == sum(marked) + 1


def test_a_hanging_webhook_never_delays_a_client_and_a_full_queue_drops_and_counts(
    routes: RouteFile, wine_model: BuiltModel, wine_stable: ServerProcess
) -> None:
    bodies = _bodies(wine_model)[:20]
    attempt = 3.0  # one delivery attempt waits this long for the hanging webhook
    with silent_listener() as hook:
        settings = {"timeoutSeconds": attempt, "retries": 1, "backoffSeconds": 0.1, "queueSize": 2, "concurrency": 1}
        with _reviewing(routes, wine_stable, hook, highStakes={"header": MARK}, **settings) as gw:
            took, answers = [], []
            for body in bodies:
                started = time.monotonic()
                answers.append(request(gw.url + WINE, body, headers={MARK: "1"}))
                took.append(time.monotonic() - started)
            counts = _settled(gw.url, len(bodies))
    failed, dropped = counts["timeout"], counts["queue_full"]
    print(f"hanging webhook: client answers took at most {max(took) * 1000:.0f} ms; "
          f"reviews failed {failed:.0f}, dropped {dropped:.0f}")  # fmt: skip
    assert all(a.status == 200 and a.track == "stable" for a in answers)
    # no client waited for even one attempt (each takes `attempt` seconds, two per review)
    assert max(took) < attempt
    assert counts["sent"] == 0 and 1 <= failed <= 3 and dropped == len(bodies) - failed  # 1 in delivery + 2 queued
    assert sum(_pending(a) for a in answers) == failed  # a dropped review is not claimed as pending


def test_a_webhook_answering_500_is_retried_with_backoff_then_counted_as_failed(
    routes: RouteFile, wine_model: BuiltModel, wine_stable: ServerProcess
) -> None:
    bodies = _bodies(wine_model)[:5]
    received = Received()
    with serving(_accepting(received, status=500)) as hook:
        with _reviewing(routes, wine_stable, hook, highStakes={"header": MARK}, retries=2, backoffSeconds=0.05) as gw:
            answers = [request(gw.url + WINE, b, headers={MARK: "true"}) for b in bodies]
            counts = _settled(gw.url, len(bodies))
        posts = _reviews(received)
    assert all(a.status == 200 and _pending(a) for a in answers)
    assert counts["error"] == len(bodies) and len(posts) == 3 * len(bodies)  # the first attempt and two retries each
    assert sorted({p["request_id"] for p in posts}) == sorted(b["id"] for b in bodies)


def test_a_slow_webhook_fills_the_queue_and_the_rest_are_dropped_and_counted(
    routes: RouteFile, wine_model: BuiltModel, wine_stable: ServerProcess
) -> None:
    bodies = _bodies(wine_model)[:24]
    received = Received()
    with (
        serving(_accepting(received, delay=0.5)) as hook,
        _reviewing(routes, wine_stable, hook, highStakes={"header": MARK}, queueSize=3, concurrency=1) as gw,
        ThreadPoolExecutor(8) as clients,
    ):
        answers = list(clients.map(lambda b: request(gw.url + WINE, b, headers={MARK: "true"}), bodies))
        counts = _settled(gw.url, len(bodies))
    sent, dropped = counts["sent"], counts["queue_full"]
    print(f"slow webhook: sent {sent:.0f}, dropped {dropped:.0f}")
    assert all(a.status == 200 for a in answers)
    assert dropped > 0 and sent >= 1 and sent + dropped == len(bodies)
    assert len(received.to(HOOK)) == sent  # nothing sent twice
    assert sum(_pending(a) for a in answers) == sent  # exactly the queued ones are marked


def test_a_reviewed_answer_keeps_its_feedback_id_so_the_reviewers_verdict_can_come_back_as_a_label(
    routes: RouteFile, wine_model: BuiltModel, wine_stable: ServerProcess, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(json.dumps({"1": base64.b64encode(os.urandom(32)).decode()}))
    received = Received()
    body = _bodies(wine_model)[0]
    with (
        serving(_accepting(received)) as hook,
        _reviewing(routes, wine_stable, hook, "--feedback-keys", str(keys), highStakes={"header": MARK}) as gw,
    ):
        answer = request(gw.url + WINE, body, headers={MARK: "true"})
        _settled(gw.url, 1)
        (review,) = _reviews(received)
        verdict = request(gw.url + "/v2/models/wine/feedback",
                          {"feedback_id": answer.body["parameters"]["feedback_id"], "label": 0})  # fmt: skip
        counted = metric_sum(gw.url, "mlrollout_gateway_feedback_labels_total", track="stable")
    assert answer.status == 200 and _pending(answer)
    assert answer.body["parameters"]["feedback_id"] == answer.headers["x-mlrollout-feedback-id"]
    assert review["review_id"] == answer.body["parameters"]["review_id"]
    assert verdict.status == 202 and counted == 1


def test_reviews_queued_before_a_url_change_go_to_the_new_webhook_and_the_cancelled_one_is_counted(
    routes: RouteFile, wine_model: BuiltModel, wine_stable: ServerProcess
) -> None:
    bodies = _bodies(wine_model)[:4]
    received = Received()
    settings = {"highStakes": {"header": MARK}, "timeoutSeconds": 30.0, "concurrency": 1}
    with silent_listener() as old, serving(_accepting(received)) as new:
        with _reviewing(routes, wine_stable, old, **settings) as gw:
            answers = [request(gw.url + WINE, b, headers={MARK: "1"}) for b in bodies]  # one hangs, three wait
            routes.write(table(2, wine_stable.url, fallback={"review": {"url": new + HOOK, **settings}}))
            counts = _settled(gw.url, len(bodies))
            cancelled = metric_sum(gw.url, FAILED, reason="cancelled")
        posts = _reviews(received)
    assert all(a.status == 200 and _pending(a) for a in answers)
    assert counts["sent"] == 3 and cancelled == 1  # the one mid-delivery to the old host is counted, not lost
    assert sorted(p["request_id"] for p in posts) == sorted(b["id"] for b in bodies[1:])
