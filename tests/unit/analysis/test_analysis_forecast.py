"""The time-to-decision forecast: its model's shape, and its median against simulations of the judge."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from tests.unit.analysis.snapshots import PROMOTABLE, healthy, judged, sampled_buckets

from mlrollout.analysis import judge, parse_snapshot
from mlrollout.analysis.forecast import (
    REGRESSIONS,
    LatencyShape,
    StepTraffic,
    forecast_step,
    promotion_checks,
    requests_to_promote,
)
from mlrollout.analysis.judge import alpha_shares
from mlrollout.api.rolloutpolicy import RolloutPolicySpec

NO_SLO = RolloutPolicySpec.model_validate({"analysis": {"metrics": {"errorRate": {"maxRate": None}}}})
SHAPE = LatencyShape(0.02, 0.5)  # the benchmark's log-normal latency


def shares(spec: RolloutPolicySpec) -> dict[str, float]:
    snap = parse_snapshot({"stable": {"requests": 1, "latency_buckets": {"+Inf": 1}},
                           "candidate": {"requests": 1, "latency_buckets": {"+Inf": 1}}})  # fmt: skip
    return alpha_shares(snap, spec)


def seconds(rps: float, weight: float, error_rate: float, spec: RolloutPolicySpec = NO_SLO) -> float:
    t = StepTraffic(rps * (1 - weight), rps * weight, error_rate, SHAPE)
    return forecast_step(spec, t, shares(spec), 3600.0).seconds


def test_more_traffic_a_larger_weight_and_a_higher_base_rate_each_decide_sooner() -> None:
    assert seconds(1000, 0.1, 0.01) < seconds(100, 0.1, 0.01) < seconds(10, 0.1, 0.01)
    assert seconds(100, 0.5, 0.01) < seconds(100, 0.25, 0.01) < seconds(100, 0.05, 0.01)
    assert seconds(100, 0.1, 0.2) <= seconds(100, 0.1, 0.03) < seconds(100, 0.1, 0.01)


def test_a_looser_margin_decides_sooner_and_no_traffic_never() -> None:
    loose = RolloutPolicySpec.model_validate(
        {"analysis": {"metrics": {"errorRate": {"maxRate": None}}},
         "significance": {"margins": {"errorRate": {"relative": 0.6}}}}
    )  # fmt: skip
    assert seconds(100, 0.1, 0.01, loose) < seconds(100, 0.1, 0.01)
    t = StepTraffic(100, 0.0, 0.01, SHAPE)
    assert math.isinf(requests_to_promote(promotion_checks(NO_SLO, t, shares(NO_SLO)))[0])


def test_a_candidate_at_the_error_slo_never_passes_it() -> None:
    spec = RolloutPolicySpec()
    t = StepTraffic(90, 10, 0.05, SHAPE)
    needed, slowest = requests_to_promote(promotion_checks(spec, t, shares(spec)))
    assert math.isinf(needed) and slowest == "errorRate.slo"


def test_regressions_are_caught_more_often_with_more_time() -> None:
    t = StepTraffic(90, 10, 0.01, SHAPE)
    short = forecast_step(NO_SLO, t, shares(NO_SLO), 300.0).rollback
    long = forecast_step(NO_SLO, t, shares(NO_SLO), 1800.0).rollback
    assert set(short) == {r.label for r in REGRESSIONS}
    assert all(short[k] <= long[k] for k in short)
    assert long["errors x2"] > long["errors x1.5"] > 0.5


def test_every_look_carries_a_forecast_at_the_traffic_seen() -> None:
    snap = healthy(**{k: v // 4 for k, v in PROMOTABLE.items()})
    snap["elapsed_seconds"] = 600.0
    f = judged(snap).forecast
    assert f is not None and f.candidate_rate == pytest.approx(10.0)
    assert f.seconds is not None and f.seconds > 600 and f.slowest == "errorRate.nonInferiority"
    assert judged({"stable": {"requests": 0}, "candidate": {"requests": 0}}).forecast is None


def simulate_median_looks(error_rate: float, spec: RolloutPolicySpec, runs: int, looks: int, seed: int) -> float:
    """The judge on sampled counts at 100 requests/s, 10% to the candidate, one look a minute: the median
    look of promotion over all runs (a run not promoted by the last look counts as later)."""
    rng = np.random.default_rng(seed)
    promoted = []
    for _ in range(runs):
        tracks: dict[str, dict[str, Any]] = {
            t: {"requests": 0, "errors": 0, "lat": None} for t in ("stable", "candidate")
        }
        at = looks + 1
        for look in range(1, looks + 1):
            snap: dict[str, Any] = {"elapsed_seconds": 60.0 * look}
            for name, per_minute in (("stable", 5400), ("candidate", 600)):
                n = int(rng.poisson(per_minute))
                tr = tracks[name]
                tr["requests"] += n
                tr["errors"] += int(rng.binomial(n, error_rate))
                new = sampled_buckets(rng, n)
                tr["lat"] = new if tr["lat"] is None else {k: tr["lat"][k] + v for k, v in new.items()}
                snap[name] = {"requests": tr["requests"], "errors": tr["errors"], "latency_buckets": tr["lat"]}
            if judge(parse_snapshot(snap), spec).verdict == "promote":
                at = look
                break
        promoted.append(at)
    return float(np.median(promoted))


@pytest.mark.parametrize(("error_rate", "spec"), [(0.01, NO_SLO), (0.03, RolloutPolicySpec())])
def test_the_forecast_median_is_within_a_third_of_the_simulated_one(error_rate: float, spec: RolloutPolicySpec) -> None:
    """Stated tolerance: the forecast's median looks to promotion within 35% of the judge's simulated median
    (60 runs; bench/forecast_check.py compares more scenarios with more runs)."""
    predicted = seconds(100, 0.1, error_rate, spec) / 60.0
    simulated = simulate_median_looks(error_rate, spec, runs=60, looks=40, seed=20261126)
    assert simulated <= 40, "the simulation must reach a median to compare with"
    assert abs(predicted - simulated) <= 0.35 * simulated, (predicted, simulated)
