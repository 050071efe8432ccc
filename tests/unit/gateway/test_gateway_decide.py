"""Pure routing decisions: track picking, sticky hashing, circuit breaker, fallback plan, confidence."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlrollout_serving.contract.routes import CircuitBreaker, FallbackStep, Sticky
from mlrollout_serving.gateway.decide import (
    CLOSED,
    BreakerState,
    admit,
    fallback_plan,
    low_confidence,
    on_failure,
    on_success,
    pick_track,
    sticky_bucket,
    sticky_key,
    top_probability,
)

W = (("stable", 95.0), ("candidate", 5.0))


def test_pick_track_boundaries() -> None:
    assert pick_track(W, 0.0) == "stable"
    assert pick_track(W, 0.9499) == "stable"
    assert pick_track(W, 0.95) == "candidate"
    assert pick_track(W, 0.999999) == "candidate"


@given(st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_zero_weight_is_never_and_hundred_is_always(draw: float) -> None:
    assert pick_track((("stable", 100.0), ("candidate", 0.0)), draw) == "stable"
    assert pick_track((("stable", 0.0), ("candidate", 100.0)), draw) == "candidate"


def test_pick_track_fraction_matches_weights_on_a_grid() -> None:
    picks = [pick_track((("stable", 75.0), ("candidate", 25.0)), i / 10_000) for i in range(10_000)]
    assert picks.count("candidate") == 2_500


def test_sticky_bucket_is_stable_across_processes() -> None:
    """blake2b, not the per-process salted hash(): another interpreter computes the same bucket."""
    keys = [b"user-1", b"user-2", b"\xff\x00"]
    code = (
        "import json, sys; from mlrollout_serving.gateway.decide import sticky_bucket; "
        f"print(json.dumps([sticky_bucket(k) for k in {keys!r}]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [sticky_bucket(k) for k in keys]
    assert len({sticky_bucket(k) for k in keys}) == 3


def test_sticky_buckets_are_uniform_enough() -> None:
    buckets = [sticky_bucket(f"user-{i}".encode()) for i in range(20_000)]
    assert all(0.0 <= b < 1.0 for b in buckets)
    share = sum(1 for b in buckets if b < 0.25) / len(buckets)
    assert abs(share - 0.25) < 0.015  # ~5 standard errors


def test_sticky_key_from_header_and_json() -> None:
    by_header = Sticky(header="X-User")
    assert sticky_key(by_header, {"x-user": "42"}, b"") == b"42"
    assert sticky_key(by_header, {"x-user": ""}, b"") is None
    assert sticky_key(by_header, {}, b"") is None
    by_field = Sticky(json_field="parameters.user")
    body = json.dumps({"parameters": {"user": 17}, "inputs": []}).encode()
    assert sticky_key(by_field, {}, body) == b"17"
    assert sticky_key(by_field, {}, b'{"parameters": {}}') is None
    assert sticky_key(by_field, {}, b"not json") is None
    assert sticky_key(by_field, {}, b'{"parameters": {"user": {"a": 1}}}') is None
    assert sticky_key(Sticky(json_field="ids.1"), {}, b'{"ids": ["a", "b"]}') == b"b"


CB = CircuitBreaker(consecutive_failures=3, open_seconds=10.0)


def test_breaker_opens_after_consecutive_failures_only() -> None:
    state = CLOSED
    state = on_failure(state, CB, 1.0)
    state = on_failure(state, CB, 2.0)
    assert state.state == "closed" and state.failures == 2
    assert on_success(state) == CLOSED  # a success in between resets the count
    state = on_failure(state, CB, 3.0)
    assert state == BreakerState("open", 3, 3.0)
    assert admit(state, CB, 12.9) == (False, state)


def test_breaker_half_open_lets_one_probe_through() -> None:
    opened = BreakerState("open", 3, 0.0)
    allowed, probing = admit(opened, CB, 10.0)
    assert allowed and probing.state == "half_open"
    assert admit(probing, CB, 10.1) == (False, probing)  # only one probe at a time
    assert on_success(probing) == CLOSED
    reopened = on_failure(probing, CB, 11.0)
    assert reopened.state == "open" and reopened.opened_at == 11.0
    assert admit(reopened, CB, 20.9)[0] is False
    assert admit(reopened, CB, 21.0)[0] is True


def test_failures_while_open_do_not_extend_the_open_period() -> None:
    opened = BreakerState("open", 3, 5.0)
    assert on_failure(opened, CB, 9.0) == opened


def test_fallback_plan_skips_retrying_stable_on_stable() -> None:
    chain = (FallbackStep(action="stable"), FallbackStep(action="refuse"))
    assert [s.action for s in fallback_plan(chain, "candidate")] == ["stable", "refuse"]
    assert [s.action for s in fallback_plan(chain, "stable")] == ["refuse"]
    assert fallback_plan((), "candidate") == ()


def _probs(rows: list[list[float]]) -> dict[str, object]:
    flat = [v for row in rows for v in row]
    return {
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [len(rows)], "data": [0] * len(rows)},
            {"name": "probabilities", "datatype": "FP32", "shape": [len(rows), len(rows[0])], "data": flat},
        ]
    }


def test_top_probability_takes_the_least_confident_row() -> None:
    assert top_probability(_probs([[0.9, 0.1], [0.4, 0.6]])) == pytest.approx(0.6)
    assert top_probability({"outputs": [{"name": "variable", "datatype": "FP32", "shape": [2, 1],
                                         "data": [1.0, 2.0]}]}) is None  # fmt: skip
    assert top_probability({}) is None


def test_low_confidence_threshold() -> None:
    assert low_confidence(_probs([[0.55, 0.45]]), 0.6)
    assert not low_confidence(_probs([[0.65, 0.35]]), 0.6)
    assert not low_confidence({"outputs": []}, 0.9)
    nested = {"outputs": [{"name": "p", "datatype": "FP64", "shape": [1, 3], "data": [[0.2, 0.3, 0.5]]}]}
    assert low_confidence(nested, 0.6)
