"""A label counts in the step that served its answer (contract.feedback.counts_in_step): each step's analysis
reads the label counters from the step's start, so a late label for an answer served under the step before
(another traffic split) is accepted, not scored, and counted as ``served_before_step`` - never silently."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.support.feedback_samples import NOW, WINE

from mlrollout_serving.contract import metrics as contract
from mlrollout_serving.contract.feedback import SERVED_BEFORE_STEP, counts_in_step
from mlrollout_serving.contract.routes import RouteTable, RouteTableError, Track
from mlrollout_serving.gateway.feedback import Answer, Feedback, FeedbackConfig, Minted, predictions_of
from mlrollout_serving.gateway.metrics import GatewayMetrics
from mlrollout_serving.gateway.proxy import Gateway
from mlrollout_serving.gateway.routes import parse_route_table


def test_a_token_counts_when_its_whole_issue_second_is_at_or_after_the_step_start() -> None:
    assert counts_in_step(NOW, None)  # no step runs (or an older operator's table): every label counts
    assert counts_in_step(NOW - 86_400, None)
    assert counts_in_step(NOW + 1, NOW) and counts_in_step(NOW + 3600, NOW)  # served after the start
    assert not counts_in_step(NOW - 1, NOW)  # served in the step before
    # same second: the token says [NOW, NOW + 1). A step started exactly on the second holds all of it...
    assert counts_in_step(NOW, float(NOW))
    # ...one started within it may have begun after the answer: the label goes with the step before
    assert not counts_in_step(NOW, NOW + 0.001) and not counts_in_step(NOW, NOW + 0.999)
    assert counts_in_step(NOW + 1, NOW + 0.999)


def _feedback(tmp_path: Path) -> Feedback:
    path = tmp_path / "keys"
    path.write_text(json.dumps({"3": base64.b64encode(b"s" * 32).decode()}))
    return Feedback(FeedbackConfig(str(path), replica=1))


def _mint(feedback: Feedback, issued: int, track: str = "candidate", mirrored: bool = False) -> Minted:
    predicted = predictions_of(WINE)
    assert feedback.minter is not None and predicted is not None
    return feedback.minter.mint(track, "r2", predicted, issued, mirrored)


def _label(feedback: Feedback, minted: Minted, now: int) -> Answer:
    answer = feedback.receive(orjson.dumps({"feedback_id": minted.token, "labels": [1, 0]}), now)
    assert isinstance(answer, Answer)
    return answer


def _scored(feedback: Feedback) -> int:
    return sum(feedback.scores.labels.values())


def test_a_label_for_an_answer_served_before_the_step_is_accepted_counted_as_such_and_not_scored(
    tmp_path: Path,
) -> None:
    feedback = _feedback(tmp_path)
    before, same, after = _mint(feedback, NOW - 1), _mint(feedback, NOW), _mint(feedback, NOW + 1)
    feedback.step_started_at = NOW + 0.5  # started within the second NOW
    for minted in (before, same):
        answer = _label(feedback, minted, NOW + 60)
        assert answer.status == 202
        assert answer.body == {"counted": 0, "paired": False, "uncounted": 2, "reason": SERVED_BEFORE_STEP}
    assert _scored(feedback) == 0 and feedback.scores.labels == {}
    assert feedback.scores.uncounted == {("candidate", "r2", SERVED_BEFORE_STEP): 4}  # rows, as the scores
    assert _label(feedback, after, NOW + 60).body == {"counted": 2, "paired": False}
    assert _scored(feedback) == 2
    # the id is consumed like any other: a copy is a replay, not a second uncounted label
    again = _label(feedback, before, NOW + 61)
    assert (again.status, again.body["reason"]) == (409, "replayed")
    assert feedback.scores.uncounted == {("candidate", "r2", SERVED_BEFORE_STEP): 4}


def test_without_a_step_start_every_label_counts_as_before(tmp_path: Path) -> None:
    feedback = _feedback(tmp_path)
    old = _mint(feedback, NOW - 86_400)
    assert feedback.step_started_at is None
    assert _label(feedback, old, NOW).body == {"counted": 2, "paired": False}
    assert feedback.scores.uncounted == {}


def test_a_mirrored_answer_served_before_the_step_releases_its_shadow_answer_unpaired_and_uncounted(
    tmp_path: Path,
) -> None:
    feedback = _feedback(tmp_path)
    minted = _mint(feedback, NOW - 5, track="stable", mirrored=True)
    feedback.shadow_answered(minted.nonce, "r2", WINE, NOW - 4)
    assert len(feedback.pending) == 1
    feedback.step_started_at = float(NOW)
    assert _label(feedback, minted, NOW + 30).body["counted"] == 0
    assert len(feedback.pending) == 0 and feedback.pending.bytes == 0  # released, not left to expire
    assert feedback.scores.pairs == {} and feedback.scores.unpaired == {}
    assert feedback.scores.uncounted == {("stable", "r2", SERVED_BEFORE_STEP): 2}


def _table(version: int, candidate: float, step_started_at: float | None) -> RouteTable:
    tracks = {"stable": Track(upstream="http://127.0.0.1:9001", revision="r1", weight=100 - candidate)}
    if candidate:
        tracks["candidate"] = Track(upstream="http://127.0.0.1:9002", revision="r2", weight=candidate)
    return RouteTable(version=version, tracks=tracks, step_started_at=step_started_at)


def test_a_table_applied_between_mint_and_label_decides_and_the_series_shows_it(tmp_path: Path) -> None:
    feedback = _feedback(tmp_path)
    metrics = GatewayMetrics("ns", "wine")

    async def go() -> None:
        gateway = Gateway(metrics, feedback=feedback)
        gateway.apply(_table(1, 10, NOW - 600.25), "test")  # the 10 % step
        served_in_10, also_in_10 = _mint(feedback, NOW - 10), _mint(feedback, NOW - 9)
        assert _label(feedback, served_in_10, NOW - 5).body["counted"] == 2  # labelled while its step runs
        gateway.apply(_table(2, 50, NOW + 0.25), "test")  # the 50 % step starts
        served_in_50 = _mint(feedback, NOW + 1)
        assert feedback.step_started_at == NOW + 0.25
        assert _label(feedback, also_in_10, NOW + 30).body["counted"] == 0  # late: the 10 % step is over
        assert _label(feedback, served_in_50, NOW + 30).body["counted"] == 2
        gateway.apply(_table(3, 0, None), "test")  # the rollout ended: no step, every label counts again
        assert feedback.step_started_at is None
        gateway.close()

    asyncio.run(go())
    name = contract.GATEWAY_FEEDBACK_UNCOUNTED.name
    found = {
        (tuple(sorted(sample.labels.items())), sample.value)
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for sample in family.samples
        if sample.name == name
    }
    labels = {"namespace": "ns", "model_deployment": "wine", "track": "candidate", "revision": "r2",
              "reason": SERVED_BEFORE_STEP}  # fmt: skip
    assert found == {(tuple(sorted(labels.items())), 2.0)}


def test_the_route_table_carries_the_step_start_on_the_wire_and_an_older_table_has_none() -> None:
    table = _table(7, 10, 1_796_400_000.125)
    wire = table.to_wire()
    assert wire["stepStartedAt"] == 1_796_400_000.125
    assert parse_route_table(json.dumps(wire)).step_started_at == 1_796_400_000.125
    older = {k: v for k, v in wire.items() if k != "stepStartedAt"}  # what an operator before it wrote
    assert parse_route_table(json.dumps(older)).step_started_at is None
    assert "stepStartedAt" not in _table(7, 0, None).to_wire()
    with pytest.raises(RouteTableError, match=r"stepStartedAt|step_started_at"):
        parse_route_table(json.dumps({**wire, "stepStartedAt": -1}))
