"""Labels are checked and counted on the label worker's thread, behind a bounded queue (feedback_queue.py):
the event loop only hands them over and writes the answers, every label gets the answer it would have had,
and a label beyond the bound is refused at once (503, counted, retry-after) without consuming its id."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from pathlib import Path

import orjson

from mlrollout_serving.contract.feedback import FeedbackKeys, Token, mint
from mlrollout_serving.gateway.feedback import Answer, Feedback, FeedbackConfig, Forward
from mlrollout_serving.gateway.metrics import GatewayMetrics
from mlrollout_serving.gateway.proxy import Gateway
from mlrollout_serving.gateway.server import Request, Response

KEY = b"k" * 32


def _label(nonce: int, now: int) -> bytes:
    token = Token(track="stable", revision="r1", issued=now, nonce=nonce, replica=0, predictions=("1",), classes=True)
    return orjson.dumps({"feedback_id": mint(FeedbackKeys({1: KEY}), token), "labels": [1]})


def _feedback(tmp_path: Path) -> Feedback:
    keys = tmp_path / "keys"
    keys.write_text(json.dumps({"1": base64.b64encode(KEY).decode()}))
    return Feedback(FeedbackConfig(str(keys)))


def _post(gateway: Gateway, body: bytes, answers: list[Response]) -> None:
    gateway.handle(Request(b"POST", b"/v2/models/wine/feedback", [], body, True), answers.append)


async def _answered(answers: list[Response], n: int) -> None:
    deadline = time.monotonic() + 10
    while len(answers) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.001)


def test_labels_are_counted_off_the_event_loop_and_each_gets_its_answer(tmp_path: Path) -> None:
    feedback = _feedback(tmp_path)
    flood = 40
    counted_on: set[str] = set()
    receive = feedback.receive

    def spy(body: bytes, now: float, forwarded: bytes | None = None) -> Answer | Forward:
        counted_on.add(threading.current_thread().name)
        return receive(body, now, forwarded)

    feedback.receive = spy  # type: ignore[method-assign]

    async def go() -> list[Response]:
        now = int(time.time())
        gateway = Gateway(GatewayMetrics("ns", "wine"), feedback=feedback)
        answers: list[Response] = []
        bodies = [_label(n, now) for n in range(flood)]
        for body in bodies:
            _post(gateway, body, answers)
        assert answers == []  # answered from the worker's results, on a later turn
        await _answered(answers, flood)
        _post(gateway, bodies[0], answers)  # a replay after the rest: still refused as one
        await _answered(answers, flood + 1)
        gateway.close()
        return answers

    answers = asyncio.run(go())
    assert counted_on == {"feedback-labels"}
    assert [a.status for a in answers] == [202] * flood + [409]
    assert orjson.loads(answers[0].body) == {"counted": 1, "paired": False}
    assert sum(feedback.scores.labels.values()) == flood and feedback.scores.refused == {"replayed": 1}


def test_a_full_queue_refuses_at_once_counted_and_a_retry_counts(tmp_path: Path) -> None:
    feedback = _feedback(tmp_path)

    async def go() -> tuple[list[Response], list[Response]]:
        now = int(time.time())
        gateway = Gateway(GatewayMetrics("ns", "wine"), feedback=feedback, feedback_queue=3)
        answers: list[Response] = []
        bodies = [_label(n, now) for n in range(5)]
        for body in bodies:  # one turn: the worker's answers come back on a later one, so 3 are waiting
            _post(gateway, body, answers)
        await _answered(answers, 5)
        retries: list[Response] = []
        for body in bodies[3:]:
            _post(gateway, body, retries)
        await _answered(retries, 2)
        gateway.close()
        return answers, retries

    answers, retries = asyncio.run(go())
    busy = [a for a in answers if a.status == 503]
    assert sorted(a.status for a in answers) == [202, 202, 202, 503, 503]
    assert b"retry-after: 1\r\n" in busy[0].headers
    assert orjson.loads(busy[0].body) == {
        "error": "3 labels are waiting to be counted; retry later", "reason": "busy"
    }  # fmt: skip
    assert [r.status for r in retries] == [202, 202]  # the refused ids were not consumed
    assert sum(feedback.scores.labels.values()) == 5 and feedback.scores.refused == {"busy": 2}
