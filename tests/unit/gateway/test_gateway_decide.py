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
    MAX_REMEMBERED,
    BreakerState,
    Failure,
    admit,
    counts,
    fallback_plan,
    low_confidence,
    on_failure,
    on_success,
    pick_track,
    status_blame,
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
DOWN = Failure("upstream", "10.0.0.1", b"")


def _fail(state: BreakerState, *failures: Failure, now: float = 1.0) -> BreakerState:
    for failure in failures:
        state = on_failure(state, CB, now, failure)
    return state


def answer(client: str, request: bytes) -> Failure:
    return Failure("answer", client, request)


def lost(client: str, request: bytes) -> Failure:
    return Failure("request", client, request)


def test_breaker_opens_after_consecutive_failures_only() -> None:
    state = CLOSED
    state = on_failure(state, CB, 1.0, DOWN)
    state = on_failure(state, CB, 2.0, DOWN)
    assert state.state == "closed" and state.failures == 2
    assert on_success(state) == CLOSED  # a success in between resets the count
    state = on_failure(state, CB, 3.0, DOWN)
    assert (state.state, state.failures, state.opened_at) == ("open", 3, 3.0)
    assert admit(state, CB, 12.9) == (False, state)


def test_breaker_half_open_lets_one_probe_through() -> None:
    opened = BreakerState("open", 3, 0.0)
    allowed, probing = admit(opened, CB, 10.0)
    assert allowed and probing.state == "half_open"
    assert admit(probing, CB, 10.1) == (False, probing)  # only one probe at a time
    assert on_success(probing) == CLOSED
    reopened = on_failure(probing, CB, 11.0, DOWN)
    assert reopened.state == "open" and reopened.opened_at == 11.0
    assert admit(reopened, CB, 20.9)[0] is False
    assert admit(reopened, CB, 21.0)[0] is True


def test_failures_while_open_do_not_extend_the_open_period() -> None:
    opened = BreakerState("open", 3, 5.0)
    assert on_failure(opened, CB, 9.0, DOWN) == opened


def test_status_blame_separates_cannot_serve_from_failed_on_this_request() -> None:
    assert [status_blame(s) for s in (502, 503, 504)] == ["upstream"] * 3
    assert [status_blame(s) for s in (500, 501, 505, 507, 599)] == ["answer"] * 5


def test_one_client_repeating_a_poison_request_never_opens_the_breaker() -> None:
    """The issue's attack: five 500s for the same request from one client opened the breaker for all."""
    state = _fail(CLOSED, *[answer("10.0.0.9", b"poison")] * 50)
    assert state.state == "closed" and state.failures == 1


def test_one_client_varying_its_poison_never_opens_the_breaker() -> None:
    state = _fail(CLOSED, *[answer("10.0.0.9", b"poison-%d" % i) for i in range(50)])
    assert state.state == "closed" and state.failures == 1


def test_one_poison_request_from_many_clients_never_opens_the_breaker() -> None:
    state = _fail(CLOSED, *[answer(f"10.0.1.{i}", b"poison") for i in range(50)])
    assert state.state == "closed" and state.failures == 1


def test_5xx_answers_to_different_requests_from_different_clients_open_it() -> None:
    state = _fail(CLOSED, *[answer(f"10.0.1.{i}", b"request-%d" % i) for i in range(3)])
    assert state.state == "open" and state.failures == 3


def test_lost_requests_count_once_per_distinct_request_even_from_one_client() -> None:
    """A timeout or a dropped connection: a hung upstream opens it even when one client calls it, but one
    request that is slow (or crashes a handler) sent again and again does not."""
    assert _fail(CLOSED, *[lost("10.0.0.9", b"slow")] * 20).state == "closed"
    assert _fail(CLOSED, *[lost("10.0.0.9", b"r%d" % i) for i in range(3)]).state == "open"


def test_unreachable_upstream_opens_it_whoever_asks() -> None:
    assert _fail(CLOSED, *[Failure("upstream", "10.0.0.9", b"")] * 3).state == "open"


def test_failures_that_do_not_count_do_not_break_a_streak_either() -> None:
    state = _fail(CLOSED, DOWN, answer("10.0.0.9", b"p"), answer("10.0.0.9", b"p"), DOWN)
    assert state.state == "open" and state.failures == 3


def test_a_probe_failing_again_for_a_known_client_and_request_lets_the_next_request_probe() -> None:
    """After a real outage, a poison request must not keep the breaker open by being the probe."""
    opened = _fail(CLOSED, answer("a", b"1"), answer("b", b"2"), answer("poisoner", b"poison"), now=0.0)
    assert opened.state == "open"
    allowed, probing = admit(opened, CB, 10.0)
    assert allowed
    after = on_failure(probing, CB, 10.5, answer("poisoner", b"poison"))
    assert after.state == "open" and admit(after, CB, 10.6)[0] is True  # the next request probes at once
    assert on_failure(probing, CB, 10.5, answer("c", b"3")).state == "open"  # new evidence: open again
    assert admit(on_failure(probing, CB, 10.5, answer("c", b"3")), CB, 10.6)[0] is False


@given(st.lists(st.tuples(st.sampled_from(["answer", "request"]), st.binary(max_size=3)), max_size=60))
def test_one_client_with_one_request_never_opens_it(kinds: list[tuple[str, bytes]]) -> None:
    """Whatever mix of 5xx answers and lost requests one client gets for one request, it never opens."""
    state = CLOSED
    for blame, _ in kinds:
        state = on_failure(state, CB, 1.0, Failure("answer" if blame == "answer" else "request", "c", b"same"))
    assert state.state == "closed"


@given(st.lists(st.binary(min_size=1, max_size=8), max_size=80))
def test_answers_to_one_client_never_open_it_whatever_it_sends(requests: list[bytes]) -> None:
    state = CLOSED
    for request in requests:
        state = on_failure(state, CB, 1.0, answer("10.0.0.9", request))
    assert state.state == "closed"


def test_what_a_streak_remembers_is_bounded() -> None:
    big = CircuitBreaker(consecutive_failures=10_000, open_seconds=1.0)
    state = CLOSED
    for i in range(MAX_REMEMBERED + 50):
        state = on_failure(state, big, 1.0, answer(f"c{i}", b"%d" % i))
    assert len(state.clients) == len(state.requests) == MAX_REMEMBERED
    assert counts(state, answer("new", b"new"))


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
