"""A flood of labels shares the gateway's event loop with inference: it is taken a few labels per turn, so
what an inference request read in the same turn waits for stays bounded (docs/gateway.md, "What feedback
costs"), and every label still gets the answer it would have had."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import orjson

from mlrollout_serving.contract.feedback import FeedbackKeys, Token, mint
from mlrollout_serving.gateway.feedback import Feedback, FeedbackConfig
from mlrollout_serving.gateway.metrics import GatewayMetrics
from mlrollout_serving.gateway.proxy import FEEDBACK_PER_TURN, Gateway
from mlrollout_serving.gateway.server import Request, Response

KEY = b"k" * 32


def _label(nonce: int, now: int) -> bytes:
    token = Token(track="stable", revision="r1", issued=now, nonce=nonce, replica=0, predictions=("1",), classes=True)
    return orjson.dumps({"feedback_id": mint(FeedbackKeys({1: KEY}), token), "labels": [1]})


def test_a_label_flood_is_taken_a_few_per_turn_and_each_gets_its_answer(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(json.dumps({"1": base64.b64encode(KEY).decode()}))
    feedback = Feedback(FeedbackConfig(str(keys)))
    flood = 3 * FEEDBACK_PER_TURN + 1

    async def go() -> tuple[list[int], list[Response]]:
        now = int(time.time())
        gateway = Gateway(GatewayMetrics("ns", "wine"), feedback=feedback)
        answers: list[Response] = []
        bodies = [_label(n, now) for n in range(flood)]
        bodies.append(bodies[0])  # a replay, behind the rest: still refused as one
        for body in bodies:
            gateway.handle(Request(b"POST", b"/v2/models/wine/feedback", [], body, True), answers.append)
        assert answers == []  # none taken in the turn that read them
        answered = []
        while len(answers) < len(bodies):
            await asyncio.sleep(0)  # one event-loop turn
            answered.append(len(answers))
        gateway.close()
        return answered, answers

    answered, answers = asyncio.run(go())
    per_turn = [b - a for a, b in zip([0, *answered], answered, strict=False)]
    assert per_turn == [FEEDBACK_PER_TURN] * 3 + [2], per_turn
    assert [a.status for a in answers] == [202] * flood + [409]
    assert orjson.loads(answers[0].body) == {"counted": 1, "paired": False}
    assert sum(feedback.scores.labels.values()) == flood and feedback.scores.refused == {"replayed": 1}
