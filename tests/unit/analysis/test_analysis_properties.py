"""Property tests: identical tracks rarely roll back (at most alpha), and nothing promotes without data."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.analysis.snapshots import judged, sampled_buckets

from mlrollout.analysis import MIN_SAMPLES, SnapshotError, judge, parse_snapshot
from mlrollout.analysis.errors import ErrorRateSettings, error_rate_results
from mlrollout.analysis.histogram import parse_buckets
from mlrollout.analysis.latency import LatencySettings, latency_results
from mlrollout.analysis.sequential import harm_log_e
from mlrollout.analysis.snapshot import TrackCounts
from mlrollout.api.rolloutpolicy import Margins


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


@settings(max_examples=6, deadline=None)
@given(
    base_rate=st.floats(0.0005, 0.3),
    share=st.sampled_from([0.05, 0.1, 0.5]),
    per_look=st.integers(2000, 20_000),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_candidate_at_the_relative_margin_is_promoted_in_at_most_alpha_of_runs(
    base_rate: float, share: float, per_look: int, seed: int
) -> None:
    """The default margin is max(30% of stable's rate, 0.25 pp), and stable's rate is only ever estimated.
    A candidate exactly at the margin of stable's true rate, looked at 30 times: the error rate's
    non-inferiority passes in at most alpha of runs (at a low base rate that is the floor, above it the
    relative part), because the check never plugs stable's estimate into the margin (result.within_margin,
    errors.ratio_interval)."""
    margin = Margins().error_rate
    candidate_rate = margin.limit(base_rate)
    settings_ = ErrorRateSettings(0.05, 0.05, 0.05, margin, None, 100)
    rng = np.random.default_rng(seed)
    runs, looks, alpha = 150, 30, 0.05
    n_c = np.cumsum(rng.poisson(per_look * share, (runs, looks)), axis=1)
    n_s = np.cumsum(rng.poisson(per_look * (1 - share), (runs, looks)), axis=1)
    k_c = np.cumsum(rng.binomial(np.diff(n_c, prepend=0, axis=1), candidate_rate), axis=1)
    k_s = np.cumsum(rng.binomial(np.diff(n_s, prepend=0, axis=1), base_rate), axis=1)
    promoted = 0
    for r in range(runs):
        for t in range(looks):
            stable = TrackCounts(int(n_s[r, t]), int(k_s[r, t]), None, None, None)
            candidate = TrackCounts(int(n_c[r, t]), int(k_c[r, t]), None, None, None)
            results = error_rate_results(stable, candidate, settings_)
            if next(m for m in results if m.name == "errorRate.nonInferiority").decision == "pass":
                promoted += 1
                break
    assert promoted / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


@settings(max_examples=4, deadline=None)
@given(median=st.sampled_from([0.0005, 0.002, 0.02, 0.2]), seed=st.integers(0, 2**32 - 1))
def test_a_candidate_at_the_latency_margin_is_promoted_in_at_most_alpha_of_runs(median: float, seed: int) -> None:
    """Log-normal latencies, the candidate's p99 exactly at max(110% of stable's, stable's + 1 ms): 20 looks
    of a 10% canary at 100 requests/s; latency non-inferiority passes in at most alpha of runs."""
    margin = Margins().latency
    p99 = median * math.exp(0.5 * 2.3263)
    factor = margin.limit(p99) / p99
    spec = LatencySettings(0.99, None, True, margin, 0.05, 0.05, 0.05, 100)
    rng = np.random.default_rng(seed)
    runs, looks, alpha = 60, 20, 0.05
    promoted = 0
    for _ in range(runs):
        cum: dict[str, dict[str, int] | None] = {"stable": None, "candidate": None}
        for _look in range(looks):
            for name, n, m in (("stable", 5400, median), ("candidate", 600, median * factor)):
                new = sampled_buckets(rng, int(rng.poisson(n)), median=m)
                old = cum[name]
                cum[name] = new if old is None else {k: old[k] + v for k, v in new.items()}
            stable, candidate = (parse_buckets(cum[t] or {})[0] for t in ("stable", "candidate"))
            ni = next(m for m in latency_results(stable, candidate, spec) if m.name == "latency.nonInferiority")
            if ni.decision == "pass":
                promoted += 1
                break
    assert promoted / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stable=st.tuples(st.integers(0, 10**7), st.floats(0, 1)),
    candidate=st.tuples(st.integers(0, 10**7), st.floats(0, 1)),
    elapsed=st.none() | st.floats(0, 10**6),
    weight=st.sampled_from([0.0, 0.05, 0.1, 0.5, 1.0]),
    routed=st.floats(0, 1),
    mirror=st.sampled_from([0.0, 0.5, 1.0]),
    sticky=st.booleans(),
)
def test_any_well_formed_snapshot_with_a_split_is_judged_without_raising(
    stable: tuple[int, float], candidate: tuple[int, float], elapsed: float | None, weight: float, routed: float,
    mirror: float, sticky: bool,
) -> None:  # fmt: skip
    """Counts from nothing to millions, any elapsed time, any configured and realised split: a judgement
    (forecast included), never an exception; a realised split far off the configured one never promotes."""
    snap: dict[str, Any] = {"elapsed_seconds": elapsed}
    for name, (n, rate) in (("stable", stable), ("candidate", candidate)):
        snap[name] = {"requests": n, "errors": round(n * rate), "latency_buckets": {"0.01": n // 2, "+Inf": n}}
    total = stable[0] + candidate[0]
    snap["split"] = {
        "configured": {"stable": 1 - weight, "candidate": weight, "mirror": mirror, "sticky": sticky},
        "observed": {"stable": total - round(total * routed), "candidate": round(total * routed),
                     "mirrored": round(stable[0] * mirror), "mirror_eligible": stable[0]},
    }  # fmt: skip
    result = judge(parse_snapshot(snap))
    if not sticky and total > 10_000 and abs(routed - weight) > 0.2:
        assert result.verdict != "promote"
