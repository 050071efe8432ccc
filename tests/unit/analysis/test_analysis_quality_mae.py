"""Regressor quality (MAE): finite-sample tests on absolute errors clipped at the policy's error bound."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from mlrollout.analysis import AnalysisTarget, Measurement, Sample, StaticProvider, collect_snapshot
from mlrollout.analysis.quality import NO_CLIPPED_SUMS, QualitySettings, quality_results, unpaired_mae_log_e
from mlrollout.analysis.sequential import (
    BETS_CS,
    TWO_SAMPLE_LEVELS,
    bounded_mean_cs,
    bounded_mean_log_e,
    bounded_two_sample_log_e,
)
from mlrollout.analysis.snapshot import Labels, Pairs
from mlrollout.api.analysis import QualityDesign
from mlrollout.api.rolloutpolicy import Margin, QualityMetric

Array = npt.NDArray[np.float64]
BOUND = 5.0
MAE = QualitySettings("mae", 0.0125, 0.05, Margin(relative=0.05), 100, error_bound=BOUND)


def by_name(results: list) -> dict:  # type: ignore[type-arg]
    return {r.name: r for r in results}


def labels_of(errors: Array, bound: float = BOUND) -> Labels:
    clipped = np.minimum(errors, bound)
    return Labels(labelled=len(errors), abs_error_sum=float(errors.sum()), abs_error_sumsq=float((errors**2).sum()),
                  clipped_sum=float(clipped.sum()), clipped_sumsq=float((clipped**2).sum()))  # fmt: skip


def pairs_of(e_s: Array, e_c: Array, bound: float = BOUND) -> Pairs:
    clip_s, clip_c = np.minimum(e_s, bound), np.minimum(e_c, bound)
    diff, clipped = e_c - e_s, clip_c - clip_s
    return Pairs(
        both_right=int((diff == 0).sum()), stable_only=int((diff > 0).sum()), candidate_only=int((diff < 0).sum()),
        stable_error_sum=float(e_s.sum()), candidate_error_sum=float(e_c.sum()), diff_sumsq=float((diff**2).sum()),
        stable_clipped_sum=float(clip_s.sum()), candidate_clipped_sum=float(clip_c.sum()),
        clipped_diff_sumsq=float((clipped**2).sum()),
    )  # fmt: skip


# --- the pure e-process and confidence sequence ---


def test_no_rows_or_sums_that_are_not_finite_are_no_evidence() -> None:
    assert bounded_mean_log_e(0, 0.0, 0.0, 0.0, -1.0) == 0.0
    for bad in (math.nan, math.inf, -math.inf):
        assert bounded_mean_log_e(10, bad, 1.0, 0.0, -1.0) == 0.0
        assert bounded_mean_log_e(10, 1.0, bad, 0.0, -1.0) == 0.0
        assert bounded_mean_cs(10, bad, 1.0, -1.0, 1.0, 0.05).as_list() == [-1.0, 1.0]
    assert bounded_mean_cs(0, 0.0, 0.0, 0.0, 2.0, 0.05).as_list() == [0.0, 2.0]
    assert bounded_mean_log_e(10, 1.0, 1.0, 0.0, 0.0) == 0.0  # no room below the null: no test


def test_all_zero_differences_are_no_evidence_and_pin_the_interval_to_zero() -> None:
    assert bounded_mean_log_e(5000, 0.0, 0.0, 0.0, -1.0) == 0.0
    cs = bounded_mean_cs(5000, 0.0, 0.0, -1.0, 1.0, 0.05)
    assert -0.01 < cs.lo <= 0.0 <= cs.hi < 0.01


def test_rows_at_the_bound_are_the_strongest_evidence_and_rows_below_the_null_none() -> None:
    # every row at +B (the candidate's clipped error B, stable's 0): a few dozen rows are enough
    assert bounded_mean_log_e(40, 40.0, 40.0, 0.0, -1.0) > math.log(1 / 0.0125)
    assert bounded_mean_log_e(1000, -1000.0, 1000.0, 0.0, -1.0) < 0.0  # every row at -B
    errors_at_bound = bounded_mean_cs(50, 50 * BOUND, 50 * BOUND**2, 0.0, BOUND, 0.05)
    assert errors_at_bound.hi == BOUND and errors_at_bound.lo > 0.6 * BOUND


def test_the_e_value_grows_with_the_effect_and_shrinks_with_the_spread() -> None:
    def log_e(mean: float, sd: float, n: int = 2000) -> float:
        return bounded_mean_log_e(n, n * mean, n * (sd * sd + mean * mean), 0.0, -1.0)

    assert log_e(0.02, 0.2) < log_e(0.05, 0.2) < log_e(0.1, 0.2)
    assert log_e(0.05, 0.4) < log_e(0.05, 0.2)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), lo=st.floats(-3, 0), width=st.floats(0.1, 5), n=st.integers(1, 3000))
def test_the_confidence_sequence_is_an_interval_around_the_mean(seed: int, lo: float, width: float, n: int) -> None:
    rng = np.random.default_rng(seed)
    x = lo + width * rng.beta(0.3, 0.7, n)
    cs = bounded_mean_cs(n, float(x.sum()), float((x * x).sum()), lo, lo + width, 0.05)
    assert lo <= cs.lo <= x.mean() + 1e-9 and x.mean() - 1e-9 <= cs.hi <= lo + width
    # monotone: every mean outside is rejected, every mean inside is not (checked on a grid)
    bar = math.log(20)
    for m in np.linspace(lo, lo + width, 41):
        below = bounded_mean_log_e(n, float(x.sum()), float((x * x).sum()), m, lo, width, BETS_CS)
        assert (below >= bar) == (m < cs.lo) or abs(m - cs.lo) < 1e-6


# --- anytime validity under adversarial bounded nulls ---

LOOKS, RUNS = 20, 400


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.sampled_from(["rare huge wins", "two-point", "constant shift", "uniform"]),
    per_look=st.sampled_from([50, 400]),
)
def test_paired_harm_stays_within_alpha_under_any_bounded_null(seed: int, shape: str, per_look: int) -> None:
    """Equal clipped MAEs (per-row differences in [-B, B] with mean exactly 0, the edge of the null), shapes
    the asymptotic test got wrong: 99.9 % of rows a hair worse, 0.1 % far better. Looks after every batch;
    the paired harm e-process must cross 1/alpha in at most about alpha of the rollouts."""
    rng = np.random.default_rng(seed)
    alpha = 0.05  # larger than the policy's so that 400 runs measure the rate
    size = (RUNS, LOOKS, per_look)
    u = rng.random(size)
    a = rng.uniform(0.05, 1.0)
    if shape == "rare huge wins":  # +0.001 B on 99.9 %, -0.999 B on 0.1 %
        d = np.where(u < 0.999, 0.001, -0.999)
    elif shape == "two-point":  # +a w.p. b/(a+b), -b otherwise: mean 0
        b = rng.uniform(0.05, 1.0)
        d = np.where(u < b / (a + b), a, -b)
    elif shape == "constant shift":
        d = np.zeros(size)
    else:
        d = rng.uniform(-a, a, size)
    d = d * BOUND
    s1, s2 = d.sum(axis=2).cumsum(axis=1), (d * d).sum(axis=2).cumsum(axis=1)
    n = per_look * np.arange(1, LOOKS + 1)
    crossed = sum(
        any(bounded_mean_log_e(int(n[t]), float(s1[r, t]), float(s2[r, t]), 0.0, -BOUND) >= math.log(1 / alpha)
            for t in range(LOOKS))
        for r in range(RUNS)
    )  # fmt: skip
    assert stats.binom.sf(crossed - 1, RUNS, alpha) > 1e-3, (shape, crossed)


@settings(max_examples=3, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    share=st.sampled_from([0.05, 0.1, 0.5, 0.9]),
    shape=st.sampled_from(["rare errors at the bound", "candidate spread", "stable spread"]),
)
def test_unpaired_harm_stays_within_alpha_when_the_shapes_differ(seed: int, share: float, shape: str) -> None:
    """Equal clipped MAEs, different shapes: stable's errors spread one way, the candidate's another (rare
    errors at B, the rest 0). Every labelled row is the candidate's with probability ``share`` (the test
    does not need to know it)."""
    rng = np.random.default_rng(seed)
    alpha, per_look, runs = 0.05, 200, 200  # the two-sample e-value takes a millisecond: fewer runs
    mae = rng.uniform(0.01, 0.5) * BOUND
    size = (runs, LOOKS, per_look)
    candidate = rng.random(size) < share
    e_s = rng.uniform(0, 2 * mae, size) if shape == "stable spread" else np.full(size, mae)
    if shape == "rare errors at the bound":
        e_c = np.where(rng.random(size) < mae / BOUND, BOUND, 0.0)
    else:
        e_c = rng.uniform(0, 2 * mae, size) if shape == "candidate spread" else np.full(size, mae)

    def sums(errors: Array, mask: npt.NDArray[np.bool_]) -> tuple[Array, Array, Array]:
        kept = np.where(mask, errors, 0.0)
        return mask.sum(axis=2).cumsum(axis=1), kept.sum(axis=2).cumsum(axis=1), (kept**2).sum(axis=2).cumsum(axis=1)

    (n_c, c1, c2), (n_s, s1, s2) = sums(e_c, candidate), sums(e_s, ~candidate)
    crossed = 0
    for r in range(runs):
        for t in range(LOOKS):
            stable = Labels(int(n_s[r, t]), 0, 0.0, 0.0, float(s1[r, t]), float(s2[r, t]))
            cand = Labels(int(n_c[r, t]), 0, 0.0, 0.0, float(c1[r, t]), float(c2[r, t]))
            if unpaired_mae_log_e(stable, cand, BOUND) >= math.log(1 / alpha):
                crossed += 1
                break
    assert stats.binom.sf(crossed - 1, runs, alpha) > 1e-3, (shape, share, crossed)


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), shape=st.sampled_from(["rare huge wins", "uniform"]))
def test_the_confidence_sequence_covers_the_mean_at_every_look(seed: int, shape: str) -> None:
    """Non-inferiority passes only when the upper end is below the margin: the end must stay above the
    true mean at every look in at least 1 - alpha of the rollouts, whatever the bounded shape."""
    rng = np.random.default_rng(seed)
    alpha, per_look, runs = 0.05, 200, 100
    u = rng.random((runs, LOOKS, per_look))
    d = np.where(u < 0.999, 0.001, -0.999) if shape == "rare huge wins" else 2 * u - 1.0
    true_mean = 0.0
    s1, s2 = d.sum(axis=2).cumsum(axis=1), (d * d).sum(axis=2).cumsum(axis=1)
    missed = 0
    for r in range(runs):
        for t in range(LOOKS):
            cs = bounded_mean_cs(per_look * (t + 1), float(s1[r, t]), float(s2[r, t]), -1.0, 1.0, alpha)
            if cs.hi < true_mean:
                missed += 1
                break
    assert stats.binom.sf(missed - 1, runs, alpha) > 1e-3, missed


# --- the quality results ---


def design_of(pairs: Pairs | None) -> QualityDesign:
    """The design of the step each case stands for: its pairs are given exactly when it mirrors."""
    return "unpaired" if pairs is None else "paired"


def test_a_worse_regressor_fails_harm_paired_and_unpaired() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(0, 1.0, 4000)
    e_s, e_c = np.abs(z), np.abs(1.4 * (0.9 * z + math.sqrt(0.19) * rng.normal(0, 1.0, 4000)))
    results = by_name(quality_results(labels_of(e_s), labels_of(e_c), None, MAE, design="unpaired"))
    assert results["quality.harm"].decision == "fail" and "MAE (errors clipped at 5) higher" in str(
        results["quality.harm"].reason
    )
    assert "two-sample" in str(results["quality.harm"].test)
    paired = by_name(quality_results(labels_of(e_s), Labels(), pairs_of(e_s, e_c), MAE, design="paired"))
    assert paired["quality.harm"].decision == "fail" and "paired clipped" in str(paired["quality.harm"].test)
    clipped = np.minimum(e_c, BOUND) - np.minimum(e_s, BOUND)
    assert paired["quality.nonInferiority"].effect == pytest.approx(clipped.mean(), rel=1e-5)


def test_the_reported_e_value_is_the_pure_e_process() -> None:
    rng = np.random.default_rng(9)
    e_s, e_c = np.abs(rng.normal(0, 1, 3000)), np.abs(rng.normal(0, 1.1, 300))
    harm = by_name(quality_results(labels_of(e_s), labels_of(e_c), None, MAE, design="unpaired"))["quality.harm"]
    log_e = unpaired_mae_log_e(labels_of(e_s), labels_of(e_c), BOUND)
    assert harm.e_value == pytest.approx(math.exp(log_e), rel=1e-5)


def test_the_two_sample_e_value_is_at_most_the_product_at_any_common_level() -> None:
    """The infimum over m is what makes it valid: at any level m (m* among them) the product of the two
    one-sample e-processes, with the scales of m's cell, bounds it."""
    rng = np.random.default_rng(4)
    c, s = np.minimum(np.abs(rng.normal(0, 1.2, 2000)), BOUND), np.minimum(np.abs(rng.normal(0, 1, 4000)), BOUND)
    log_e = bounded_two_sample_log_e(len(c), c.sum(), (c * c).sum(), len(s), s.sum(), (s * s).sum(), BOUND)
    assert log_e > math.log(80)  # a 20 % worse candidate on 2000 rows: caught
    levels = BOUND * TWO_SAMPLE_LEVELS
    for m in [*rng.uniform(0, BOUND, 300), *rng.uniform(s.mean(), c.mean(), 300), 0.0, BOUND]:
        k = min(int(np.searchsorted(levels, m, side="right")) - 1, len(levels) - 2)  # m's cell
        lo, hi = levels[k], levels[k + 1]
        product = bounded_mean_log_e(len(c), c.sum(), (c * c).sum(), m, 0.0, hi) + bounded_mean_log_e(
            len(s), -s.sum(), (s * s).sum(), -m, -BOUND, BOUND - lo
        )
        assert log_e <= product + 1e-9, m
    assert bounded_two_sample_log_e(0, 0.0, 0.0, 10, 5.0, 5.0, BOUND) == 0.0
    assert bounded_two_sample_log_e(10, math.nan, 0.0, 10, 5.0, 5.0, BOUND) == 0.0
    same = bounded_two_sample_log_e(1000, 800.0, 1000.0, 1000, 800.0, 1000.0, BOUND)
    assert same <= 0.0  # equal means: no evidence


def test_rare_huge_wins_are_a_better_mae_not_a_rollback() -> None:
    # a hair worse on 99.9 % of rows, far better on 0.1 %: equal MAE; 10x better on the rare rows: lower MAE
    e_s = np.full(100_000, 4.0)
    e_c = np.where(np.arange(100_000) % 1000 == 0, 0.0, 4.0035)
    results = by_name(quality_results(labels_of(e_s), Labels(), pairs_of(e_s, e_c), MAE, design="paired"))
    assert results["quality.harm"].decision == "pass", results["quality.harm"].reason


def test_the_candidate_closer_less_often_but_with_the_lower_mae_passes() -> None:
    e_s = np.array([1.0] * 1800 + [2.0] * 1200)
    e_c = np.array([1.05] * 1800 + [0.5] * 1200)
    results = by_name(quality_results(labels_of(e_s), Labels(), pairs_of(e_s, e_c), MAE, design="paired"))
    assert results["quality.harm"].decision == "pass", results["quality.harm"].reason
    assert results["quality.nonInferiority"].decision == "pass"
    assert str(results["quality.nonInferiority"].reason).startswith("better")


def test_equal_models_unpaired_become_no_worse_than_the_margin() -> None:
    rng = np.random.default_rng(5)
    e_s, e_c = np.abs(rng.normal(0, 1, 40_000)), np.abs(rng.normal(0, 1, 40_000))
    results = by_name(quality_results(labels_of(e_s), labels_of(e_c), None, MAE, design="unpaired"))
    assert results["quality.harm"].decision == "pass"
    ni = results["quality.nonInferiority"]
    assert ni.decision == "pass" and ni.interval is not None and ni.interval[0] < 0 < ni.interval[1], ni.reason


def test_errors_beyond_the_bound_count_as_the_bound() -> None:
    # stable's errors far beyond B on a tenth of rows: clipped, its MAE is at most B, the candidate's
    # errors of 0.9 B everywhere are worse than that clipped MAE
    e_s = np.where(np.arange(5000) % 10 == 0, 1e6, 0.0)
    e_c = np.full(5000, 0.9 * BOUND)
    results = by_name(quality_results(labels_of(e_s), Labels(), pairs_of(e_s, e_c), MAE, design="paired"))
    assert results["quality.harm"].decision == "fail"
    estimate = results["quality.harm"].estimate
    assert estimate is not None and (estimate.stable, estimate.candidate) == pytest.approx((0.1 * BOUND, 0.9 * BOUND))


def test_without_clipped_sums_from_the_gateway_there_is_no_evidence() -> None:
    old = Labels(labelled=4000, abs_error_sum=4000.0, abs_error_sumsq=6000.0)
    for pairs in (None, Pairs(both_right=4000, stable_error_sum=4000.0, candidate_error_sum=4000.0)):
        results = by_name(quality_results(old, old if pairs is None else Labels(), pairs, MAE, design=design_of(pairs)))
        assert {r.decision for r in results.values()} == {"inconclusive"}
        assert results["quality.harm"].reason == NO_CLIPPED_SUMS
    no_labels = by_name(quality_results(Labels(), Labels(), None, MAE, design="unpaired"))
    assert "no labelled rows" in str(no_labels["quality.harm"].reason)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_mae_sums_that_are_not_finite_are_no_evidence_never_a_pass(bad: float) -> None:
    good = labels_of(np.ones(4000))
    broken_pairs = pairs_of(np.ones(4000), np.ones(4000))
    broken = [
        (good, Labels(4000, 0, 4000.0, 6000.0, clipped_sum=bad, clipped_sumsq=bad), None),
        (Labels(4000, 0, 4000.0, 6000.0, clipped_sum=4000.0, clipped_sumsq=bad), good, None),
        (good, good, Pairs(3980, 0, 10, 10, 4000.0, 4000.0, 0.0, 4000.0, bad, 0.0)),
        (good, good, Pairs(**{**broken_pairs.__dict__, "clipped_diff_sumsq": bad})),
    ]
    for stable, candidate, pairs in broken:
        results = by_name(quality_results(stable, candidate, pairs, MAE, design=design_of(pairs)))
        assert {r.decision for r in results.values()} == {"inconclusive"}, (stable, candidate, pairs)
        assert "not finite" in str(results["quality.harm"].reason)


def test_the_policy_bound_is_one_of_the_gateways_clip_bounds() -> None:
    assert QualityMetric.model_validate({"errorBound": 2.5}).error_bound == 2.5
    with pytest.raises(ValueError, match="clip bounds"):
        QualityMetric.model_validate({"errorBound": 3.0})


def test_mae_needs_a_bound_of_its_own_accuracy_none() -> None:
    """No default bound means the same for every target's unit: 10,000 on errors near 1 has no power."""
    with pytest.raises(ValueError, match="errorBound is required with metric mae"):
        QualityMetric.model_validate({"metric": "mae"})
    assert QualityMetric.model_validate({"metric": "mae", "errorBound": 2.5}).clip_bound == 2.5
    accuracy = QualityMetric()
    assert accuracy.error_bound is None and accuracy.clip_bound == 10000.0


def test_clipped_series_at_the_policys_bound_become_the_snapshots_sums() -> None:
    def answers(promql: str) -> Measurement:
        if "feedback_labels_total" in promql:
            return Measurement((Sample({"outcome": "scored"}, 100.0),))
        if 'bound="2.5"' not in promql:
            return Measurement()
        if "feedback_clipped_abs_error_total" in promql:
            return Measurement((Sample({}, 70.0),))
        if "feedback_clipped_squared_error_total" in promql:
            return Measurement((Sample({}, 90.0),))
        if "pair_clipped_abs_error_total" in promql:
            return Measurement((Sample({"side": "stable"}, 60.0), Sample({"side": "candidate"}, 65.0)))
        if "pair_clipped_difference_squares_total" in promql:
            return Measurement((Sample({}, 12.0),))
        return Measurement()

    def with_pairs(promql: str) -> Measurement:
        if "feedback_pairs_total" in promql:
            return Measurement((Sample({"result": "both_right"}, 100.0),))
        return answers(promql)

    target = AnalysisTarget("ns", "wine", "s1", "c1", "model", error_bound=2.5)
    snap = collect_snapshot(StaticProvider(with_pairs), target, 60, quality=True)
    assert snap.stable.labels is not None
    assert (snap.stable.labels.clipped_sum, snap.stable.labels.clipped_sumsq) == (70.0, 90.0)
    assert snap.pairs is not None
    assert (snap.pairs.stable_clipped_sum, snap.pairs.candidate_clipped_sum, snap.pairs.clipped_diff_sumsq) == (
        60.0, 65.0, 12.0,
    )  # fmt: skip
    # a gateway without the series (or another bound): None, never a silent 0
    other = AnalysisTarget("ns", "wine", "s1", "c1", "model", error_bound=5.0)
    snap = collect_snapshot(StaticProvider(with_pairs), other, 60, quality=True)
    assert snap.stable.labels is not None and snap.stable.labels.clipped_sum is None
    assert snap.pairs is not None and snap.pairs.stable_clipped_sum is None
