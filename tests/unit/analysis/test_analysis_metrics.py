"""Each metric's test on its own: error rate, latency, prediction and input drift, custom thresholds."""

from __future__ import annotations

import math

import pytest
from scipy import stats
from tests.unit.analysis.snapshots import buckets

from mlrollout.analysis.custom import custom_result
from mlrollout.analysis.drift import DriftSettings, g_test, input_drift_result, prediction_drift_result, psi
from mlrollout.analysis.errors import ErrorRateSettings, error_rate_results
from mlrollout.analysis.histogram import parse_buckets
from mlrollout.analysis.latency import LatencySettings, latency_results, quantile_bounds
from mlrollout.analysis.snapshot import CustomValue, TrackCounts
from mlrollout.api.analysis import TrackPair
from mlrollout.api.rolloutpolicy import CustomMetric, Margin
from mlrollout_serving.contract.profile import from_dict

ERR = ErrorRateSettings(0.0125, 0.0125, 0.05, Margin(relative=0.3, floor=0.0025), 0.05, 100)  # the default


def counts(requests: int, errors: int) -> TrackCounts:
    return TrackCounts(requests, errors, None, None, None)


def by_name(results: list) -> dict:  # type: ignore[type-arg]
    return {r.name: r for r in results}


def test_error_rate_equal_tracks_pass_everything() -> None:
    r = by_name(error_rate_results(counts(216_000, 2_160), counts(24_000, 240), ERR))
    assert r["errorRate.harm"].decision == "pass"
    assert r["errorRate.nonInferiority"].decision == "pass"
    assert r["errorRate.slo"].decision == "pass"
    ni = r["errorRate.nonInferiority"]
    lo, hi = ni.interval
    assert lo < 0 < hi < 0.3 == ni.threshold
    assert ni.effect == pytest.approx(0.0) and "relative to stable's: within 30% of stable's" in ni.reason


def test_error_rate_relative_margin_is_too_tight_to_show_on_few_errors() -> None:
    """60 candidate errors cannot show a rate within 30% of stable's: collecting evidence, not a pass."""
    r = by_name(error_rate_results(counts(54_000, 540), counts(6_000, 60), ERR))
    assert r["errorRate.nonInferiority"].decision == "inconclusive"
    assert r["errorRate.nonInferiority"].interval[1] > 0.3


def test_error_rate_floor_is_a_ratio_at_low_rates_and_a_bound_without_errors() -> None:
    """At 0.1% the 0.25 pp floor is worth more than 30%: the ratio is held to 1 + floor / stable's upper
    bound. Without any error the candidate's own bound shows it below the floor."""
    low = by_name(error_rate_results(counts(540_000, 540), counts(60_000, 60), ERR))["errorRate.nonInferiority"]
    assert low.decision == "pass" and low.threshold > 1.0
    none = by_name(error_rate_results(counts(108_000, 0), counts(12_000, 0), ERR))["errorRate.nonInferiority"]
    assert none.decision == "pass" and "candidate error rate at most" in none.reason
    relative_only = ErrorRateSettings(0.0125, 0.0125, 0.05, Margin(relative=0.3), None, 100)
    bare = by_name(error_rate_results(counts(108_000, 0), counts(12_000, 0), relative_only))
    assert bare["errorRate.nonInferiority"].decision == "inconclusive"  # nothing to compare a ratio on


def test_error_rate_absolute_margin() -> None:
    absolute = ErrorRateSettings(0.0125, 0.0125, 0.05, Margin(absolute=0.01), None, 100)
    ni = by_name(error_rate_results(counts(54_000, 540), counts(6_000, 60), absolute))["errorRate.nonInferiority"]
    assert ni.decision == "pass" and ni.threshold > 0.8  # 1 pp at a ~1% rate: almost x2


def test_error_rate_doubling_fails_harm_with_e_value_above_threshold() -> None:
    r = by_name(error_rate_results(counts(54_000, 540), counts(6_000, 120), ERR))
    harm = r["errorRate.harm"]
    assert harm.decision == "fail"
    assert harm.e_value >= harm.threshold == pytest.approx(80.0)
    assert harm.p_value == pytest.approx(1 / harm.e_value, rel=1e-4)
    assert harm.estimate == TrackPair(stable=0.01, candidate=0.02)
    assert harm.effect == pytest.approx(0.01)


def test_error_rate_better_candidate_never_fails() -> None:
    r = by_name(error_rate_results(counts(54_000, 1080), counts(6_000, 30), ERR))
    assert {x.decision for x in r.values()} == {"pass"}


def test_error_rate_non_inferiority_needs_samples() -> None:
    r = by_name(error_rate_results(counts(900, 9), counts(50, 0), ERR))
    assert r["errorRate.nonInferiority"].decision == "inconclusive"
    assert "fewer than 100" in r["errorRate.nonInferiority"].reason


def test_error_rate_relative_margin() -> None:
    relative = ErrorRateSettings(0.0125, 0.0125, 0.05, Margin(relative=0.1), None, 100)
    r = by_name(error_rate_results(counts(500_000, 10_000), counts(100_000, 2_000), relative))
    assert r["errorRate.nonInferiority"].threshold == pytest.approx(0.1)
    assert r["errorRate.nonInferiority"].decision == "pass"
    assert "errorRate.slo" not in r


def test_error_rate_slo_breach_fails_even_when_equal_to_stable() -> None:
    r = by_name(error_rate_results(counts(54_000, 5_400), counts(6_000, 600), ERR))
    assert r["errorRate.slo"].decision == "fail"
    assert r["errorRate.harm"].decision == "pass"


def test_error_rate_without_requests_is_inconclusive() -> None:
    r = error_rate_results(counts(1000, 10), counts(0, 0), ERR)
    assert {x.decision for x in r} == {"inconclusive"}
    assert all("candidate" in (x.reason or "") for x in r)


def lat(relative: float | None = 0.1, max_seconds: float | None = None) -> LatencySettings:
    margin = Margin(relative=relative) if relative is not None else Margin(absolute=0.01)
    return LatencySettings(0.99, max_seconds, True, margin, 0.0125, 0.0125, 0.05, 100)


def hist(n: int, median: float = 0.02):  # type: ignore[no-untyped-def]
    return parse_buckets(buckets(n, median))[0]


def test_quantile_bounds_bracket_the_true_quantile() -> None:
    true_p99 = stats.lognorm(0.5, scale=0.02).ppf(0.99)
    lo, point, hi = quantile_bounds(hist(20_000), 0.99, 0.05)
    assert lo < point < hi
    assert lo < true_p99 * 1.15 and hi > true_p99 * 0.95  # interpolation inside a 1.5x-wide bucket is coarse
    lo_small, _, hi_small = quantile_bounds(hist(500), 0.99, 0.05)
    assert lo_small < lo and hi_small > hi


def test_latency_equal_tracks_pass() -> None:
    # p99 within 10% takes about 12k candidate observations at alpha 0.05: 20 minutes of a 10% canary at 100/s
    r = by_name(latency_results(hist(108_000), hist(12_000), lat(max_seconds=0.2)))
    assert [r[k].decision for k in ("latency.harm", "latency.nonInferiority", "latency.slo")] == ["pass"] * 3


def test_latency_thirty_percent_slower_fails_harm() -> None:
    r = by_name(latency_results(hist(54_000), hist(6_000, median=0.026), lat()))
    assert r["latency.harm"].decision == "fail"
    assert r["latency.harm"].effect > 0.1
    assert r["latency.nonInferiority"].decision == "inconclusive"


def test_latency_faster_candidate_does_not_fail() -> None:
    r = by_name(latency_results(hist(54_000), hist(6_000, median=0.014), lat()))
    assert r["latency.harm"].decision == "pass"
    assert r["latency.nonInferiority"].decision == "pass"


def test_latency_absolute_margin_in_seconds() -> None:
    r = by_name(latency_results(hist(54_000), hist(6_000), lat(relative=None)))
    ni = r["latency.nonInferiority"]
    assert ni.threshold == 0.01 and ni.decision == "pass"
    assert ni.interval[0] < 0 < ni.interval[1] <= 0.01


def test_latency_slo_fail_and_inconclusive() -> None:
    slow = by_name(latency_results(hist(54_000), hist(6_000), lat(max_seconds=0.03)))
    assert slow["latency.slo"].decision == "fail"  # p99 is ~0.064s
    few = by_name(latency_results(hist(54_000), hist(40), lat(max_seconds=0.2)))
    assert few["latency.slo"].decision == "inconclusive"


def test_latency_empty_histogram_is_inconclusive() -> None:
    empty, _ = parse_buckets({"0.1": 0, "+Inf": 0})
    r = latency_results(hist(1000), empty, lat())
    assert {x.decision for x in r} == {"inconclusive"}


def test_psi_and_g_test() -> None:
    assert psi([100, 100], [50, 50]) == pytest.approx(0.0)
    assert psi([90, 10], [50, 50]) > 0.5
    g, p = g_test([[10, 20, 30], [5, 15, 40]])
    expected = stats.chi2_contingency([[10, 20, 30], [5, 15, 40]], correction=False, lambda_="log-likelihood")
    assert g == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)
    assert g_test([[10, 0], [5, 0]]) == (0.0, 1.0)


DRIFT = DriftSettings(0.2, 0.0125, 100)


def test_prediction_drift_same_distribution_passes() -> None:
    r = prediction_drift_result({"0": 3000, "1": 4000, "2": 3000}, {"0": 300, "1": 400, "2": 300}, DRIFT)
    assert r.decision == "pass" and r.effect == pytest.approx(0.0, abs=1e-3)


def test_prediction_drift_large_shift_fails() -> None:
    r = prediction_drift_result({"0": 3000, "1": 4000, "2": 3000}, {"0": 50, "1": 150, "2": 800}, DRIFT)
    assert r.decision == "fail"
    assert (r.effect or 0) > 0.2 and (r.e_value or 0) > 80 and (r.statistic or 0) > 100


def test_prediction_drift_small_significant_shift_is_allowed() -> None:
    r = prediction_drift_result({"0": 30000, "1": 40000, "2": 30000}, {"0": 2500, "1": 4000, "2": 3500}, DRIFT)
    assert (r.e_value or 0) > 80 and (r.effect or 1) < 0.2
    assert r.decision == "pass"


def test_prediction_drift_large_but_unproven_shift_waits() -> None:
    r = prediction_drift_result({"0": 30, "1": 40, "2": 30}, {"0": 1, "1": 1, "2": 8}, DRIFT)
    assert r.decision == "inconclusive"


def test_prediction_drift_new_class_and_no_data() -> None:
    r = prediction_drift_result({"0": 500, "1": 500}, {"0": 100, "1": 100, "7": 800}, DRIFT)
    assert r.decision == "fail"
    assert prediction_drift_result({"0": 5}, {}, DRIFT).decision == "inconclusive"


REFERENCE = from_dict(
    {
        "version": 1,
        "features": [
            {"name": "f0", "edges": [0.0, 1.0], "proportions": [0.25, 0.5, 0.25]},
            {"name": "f1", "edges": [0.5], "proportions": [0.5, 0.5]},
        ],
    }
)


def test_input_drift_matching_traffic_passes() -> None:
    r = input_drift_result({"f0": [250, 500, 250], "f1": [500, 500]}, REFERENCE, DRIFT)
    assert r.decision == "pass"


def test_input_drift_shifted_feature_fails_and_is_named() -> None:
    r = input_drift_result({"f0": [50, 150, 800], "f1": [500, 500]}, REFERENCE, DRIFT)
    assert r.decision == "fail" and "f0" in (r.reason or "")


def test_input_drift_mismatched_bins_and_missing_counts() -> None:
    r = input_drift_result({"f0": [1, 2]}, REFERENCE, DRIFT)
    assert r.decision == "inconclusive" and "bin count differs" in (r.reason or "")
    assert input_drift_result(None, REFERENCE, DRIFT).decision == "inconclusive"
    assert input_drift_result({"f1": [0, 0]}, REFERENCE, DRIFT).decision == "inconclusive"


def test_custom_thresholds() -> None:
    m = CustomMetric(name="gpu", query="up", min=0.5, max=2.0)
    assert custom_result(m, CustomValue(1.0, 1.0)).decision == "pass"
    assert custom_result(m, CustomValue(1.0, 0.1)).decision == "fail"
    assert custom_result(m, CustomValue(1.0, 3.0)).decision == "fail"
    missing = custom_result(m, CustomValue(1.0, None, error="boom"))
    assert missing.decision == "inconclusive" and missing.reason == "boom"
    assert custom_result(m, None).decision == "inconclusive"
    assert math.isclose(custom_result(m, CustomValue(None, 3.0)).effect or 0.0, 1.0)


def test_rows_routed_together_count_as_one_observation() -> None:
    """Four rows per request share a route: the evidence must equal that of the per-request counts."""
    stable, candidate = {"0": 300, "1": 400, "2": 300}, {"0": 20, "1": 45, "2": 35}
    per_request = prediction_drift_result(stable, candidate, DRIFT)
    per_row = prediction_drift_result(
        {k: 4 * v for k, v in stable.items()}, {k: 4 * v for k, v in candidate.items()}, DRIFT, rows_per_request=4
    )
    assert per_row.e_value == pytest.approx(per_request.e_value)
    assert per_row.effect == pytest.approx(per_request.effect, rel=0.05)  # PSI smoothing differs a little
    inflated = prediction_drift_result(
        {k: 4 * v for k, v in stable.items()}, {k: 4 * v for k, v in candidate.items()}, DRIFT
    )
    assert (inflated.e_value or 0) > (per_row.e_value or 0)
    features = input_drift_result({"f0": [1000, 2000, 1000], "f1": [2000, 2000]}, REFERENCE, DRIFT, rows_per_request=4)
    assert features.e_value == pytest.approx(
        input_drift_result({"f0": [250, 500, 250], "f1": [500, 500]}, REFERENCE, DRIFT).e_value
    )
