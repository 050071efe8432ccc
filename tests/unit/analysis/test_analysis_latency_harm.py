"""Latency harm in latency units: slower than stable by more than the margin is harm, by less is not."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from tests.unit.analysis.snapshots import BOUNDS, buckets, sampled_buckets

from mlrollout.analysis.histogram import parse_buckets
from mlrollout.analysis.latency import HarmPair, LatencySettings, harm_pairs, latency_results
from mlrollout.api.analysis import MetricResult
from mlrollout.api.rolloutpolicy import Margin

INF = float("inf")


def settings(
    relative: float | None = 0.1, absolute: float | None = None, floor: float | None = None
) -> LatencySettings:
    margin = Margin(absolute=absolute) if absolute is not None else Margin(relative=relative, floor=floor)
    return LatencySettings(0.99, None, True, margin, 0.0125, 0.0125, 0.05, 100)


def harm(stable: dict[str, int], candidate: dict[str, int], s: LatencySettings) -> MetricResult:
    results = latency_results(parse_buckets(stable)[0], parse_buckets(candidate)[0], s)
    return next(r for r in results if r.name == "latency.harm")


def test_pairs_hold_the_candidate_to_a_bound_at_least_one_margin_above_stable() -> None:
    bounds = (0.01, 0.0125, 0.015, 0.0175, 0.02, 0.025, INF)
    cdf = [0.2, 0.4, 0.55, 0.7, 0.8, 0.95, 1.0]
    pairs = harm_pairs(bounds, cdf, (0.5, 0.9), lambda t: t * 1.1)
    # median: 0.0125 -> 0.015 (x1.2) or 0.015 -> 0.0175 (x1.17); the tighter one wins
    # p90: 0.02 -> 0.025 (x1.25) or 0.025 -> nothing finite; only the first exists
    assert pairs == [HarmPair(0.015, 0.0175), HarmPair(0.02, 0.025)]
    for p in pairs:
        assert p.candidate_bound >= 1.1 * p.stable_bound


def test_absolute_margin_pairs_add_seconds() -> None:
    bounds = (0.01, 0.0125, 0.015, 0.0175, 0.02, 0.025, INF)
    cdf = [0.2, 0.4, 0.55, 0.7, 0.8, 0.95, 1.0]
    pairs = harm_pairs(bounds, cdf, (0.5,), lambda t: t + 0.005)
    # both 0.0125 -> 0.0175 and 0.015 -> 0.02 land exactly on the allowed latency; 0.015 is nearer the median
    assert pairs == [HarmPair(0.015, 0.02)]


def test_no_margin_compares_the_same_bound() -> None:
    bounds = (0.01, 0.02, INF)
    assert harm_pairs(bounds, [0.3, 0.9, 1.0], (0.5,), lambda t: t) == [HarmPair(0.01, 0.01)]  # nearer 50%


def test_a_floor_holds_fast_models_to_an_absolute_slowdown() -> None:
    """A 1 ms median (p99 3.2 ms) 20% slower is 0.64 ms slower at the p99: beyond 10%, within a 1 ms floor.
    Twice as slow is beyond both."""
    floor = settings(0.1, floor=0.001)
    within = harm(buckets(2_000_000, median=0.001), buckets(400_000, median=0.0012), floor)
    beyond = harm(buckets(108_000, median=0.001), buckets(12_000, median=0.002), floor)
    assert (within.decision, beyond.decision) == ("pass", "fail")
    assert harm(buckets(2_000_000, median=0.001), buckets(400_000, median=0.0012), settings(0.1)).decision == "fail"


def test_a_slowdown_within_the_margin_is_not_harm_however_much_data() -> None:
    # 5% slower with a 10% margin: a strict "any slowdown" test would fire at this sample size
    r = harm(buckets(2_000_000), buckets(400_000, median=0.021), settings())
    assert r.decision == "pass"
    assert r.e_value is not None and r.e_value < 1.0


def test_a_slowdown_beyond_the_margin_is_harm() -> None:
    r = harm(buckets(108_000), buckets(12_000, median=0.026), settings())
    assert r.decision == "fail"
    assert r.reason is not None and "beyond the margin" in r.reason and "stable:" in r.reason


def test_absolute_margin_in_seconds_for_harm() -> None:
    within = harm(buckets(2_000_000), buckets(400_000, median=0.021), settings(None, 0.005))
    beyond = harm(buckets(108_000), buckets(12_000, median=0.030), settings(None, 0.005))
    assert (within.decision, beyond.decision) == ("pass", "fail")


@pytest.mark.parametrize("slowdown", [1.0, 1.05, 1.1])
def test_harm_false_alarms_stay_below_alpha_up_to_the_margin(slowdown: float) -> None:
    """Sampled tracks, the candidate slower by at most the margin: harm fires in at most alpha of runs."""
    rng = np.random.default_rng(20261126)
    s = settings()
    fired = 0
    runs = 200
    for _ in range(runs):
        stable = sampled_buckets(rng, 20_000)
        candidate = sampled_buckets(rng, 2_000, median=0.02 * slowdown)
        fired += harm(stable, candidate, s).decision == "fail"
    assert fired / runs <= s.alpha_harm + 0.02


def test_contract_buckets_are_fine_enough_for_a_ten_percent_margin() -> None:
    """Adjacent bounds at most 25% apart, so a 10% margin costs at most one extra step."""
    ratios = [b / a for a, b in itertools.pairwise(BOUNDS)]
    assert max(ratios) <= 1.25 + 1e-9
