"""Property tests: identical tracks rarely roll back (at most alpha), and nothing promotes without data."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.analysis.snapshots import judged, sampled_buckets

from mlrollout.analysis import MIN_SAMPLES, SnapshotError, judge, parse_snapshot
from mlrollout.analysis.sequential import harm_log_e


@settings(max_examples=8, deadline=None)
@given(
    base_rate=st.floats(0.001, 0.2),
    share=st.floats(0.02, 0.5),
    per_look=st.integers(50, 3000),
    seed=st.integers(0, 2**32 - 1),
)
def test_identical_error_rates_cross_the_harm_threshold_at_most_alpha(
    base_rate: float, share: float, per_look: int, seed: int
) -> None:
    """Simulated A/A rollouts with 30 looks each: the error harm test fires in at most alpha of them."""
    rng = np.random.default_rng(seed)
    runs, looks, alpha = 200, 30, 0.05
    nc = np.cumsum(rng.poisson(per_look * share, (runs, looks)), axis=1)
    ns = np.cumsum(rng.poisson(per_look * (1 - share), (runs, looks)), axis=1)
    ec = np.cumsum(rng.binomial(np.diff(nc, prepend=0, axis=1), base_rate), axis=1)
    es = np.cumsum(rng.binomial(np.diff(ns, prepend=0, axis=1), base_rate), axis=1)
    fired = 0
    for r in range(runs):
        for t in range(looks):
            if nc[r, t] and ns[r, t]:
                share_t = nc[r, t] / (nc[r, t] + ns[r, t])
                if harm_log_e(int(ec[r, t]), int(ec[r, t] + es[r, t]), share_t) >= math.log(1 / alpha):
                    fired += 1
                    break
    # alpha plus three binomial standard errors of the simulation itself
    assert fired / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def test_identical_tracks_through_the_whole_judge_rarely_roll_back() -> None:
    """A/A through judged() with the default policy, 10 looks of 1 minute at 100 rps, 10% to the candidate."""
    rng = np.random.default_rng(11)
    runs, rollbacks = 60, 0
    for _ in range(runs):
        cum: dict[str, list[int]] = {"stable": [0, 0], "candidate": [0, 0]}
        for _look in range(10):
            for name, n in (("stable", 5400), ("candidate", 600)):
                req = int(rng.poisson(n))
                cum[name][0] += req
                cum[name][1] += int(rng.binomial(req, 0.01))
            snap = {
                name: {"requests": c[0], "errors": c[1], "latency_buckets": sampled_buckets(rng, c[0])}
                for name, c in cum.items()
            }
            verdict = judged(snap).verdict
            if verdict in ("rollback", "promote"):
                rollbacks += verdict == "rollback"
                break
    assert rollbacks / runs <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / runs)


def _track(draw: Any, max_requests: int) -> dict[str, Any]:
    requests = draw(st.integers(0, max_requests))
    errors = draw(st.integers(0, requests))
    out: dict[str, Any] = {"requests": requests, "errors": errors}
    if draw(st.booleans()):
        out["latency_buckets"] = {"0.01": draw(st.integers(0, requests)), "+Inf": requests}
    if draw(st.booleans()):
        out["predictions"] = {"a": draw(st.integers(0, requests)), "b": draw(st.integers(0, requests))}
    return out


@st.composite
def sparse_snapshots(draw: Any) -> dict[str, Any]:
    """Snapshots where at least one track has fewer than MIN_SAMPLES requests, or evidence is missing."""
    kind = draw(st.sampled_from(["few", "no_latency", "error"]))
    if kind == "error":
        return {"error": draw(st.text(min_size=1, max_size=30))}
    small = draw(st.sampled_from(["stable", "candidate"]))
    snap = {
        small: _track(draw, MIN_SAMPLES - 1 if kind == "few" else 100_000),
        ("candidate" if small == "stable" else "stable"): _track(draw, 100_000),
    }
    if kind == "no_latency":
        snap[small].pop("latency_buckets", None)
    return snap


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sparse_snapshots())
def test_never_promotes_without_data(snapshot: dict[str, Any]) -> None:
    result = judged(snapshot)
    assert result.verdict != "promote"
    assert result.verdict in ("continue", "rollback", "inconclusive")


@settings(max_examples=100, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=12))  # fmt: skip
def test_reading_arbitrary_json_refuses_or_yields_a_snapshot_never_a_promotion(snapshot: Any) -> None:
    """The JSON edge either names the problem or yields a snapshot the judge answers without raising."""
    try:
        parsed = parse_snapshot(snapshot)
    except SnapshotError as exc:
        assert str(exc)
        return
    assert judge(parsed).verdict in ("inconclusive", "continue", "rollback")
