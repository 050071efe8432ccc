"""The paired statistics of the offline evaluation against scipy and scikit-learn on fixed data."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy import special, stats
from sklearn.metrics import accuracy_score, roc_auc_score

from mlrollout_serving.evaluation import stats as stats_module
from mlrollout_serving.evaluation.stats import (
    JACKKNIFE_GROUPS,
    MIN_TAIL_RESAMPLES,
    acceleration,
    betainc,
    binomial_cdf,
    bonferroni,
    bootstrap_scores,
    delong,
    delong_against,
    delong_auc,
    jackknife_effects,
    mcnemar_exact,
    midranks,
    paired_bootstrap,
    paired_proportions,
    resample_count,
    z_value,
)


@pytest.mark.parametrize(
    ("a", "b", "x"),
    [(1, 1, 0.3), (0.5, 0.5, 0.01), (3, 7, 0.5), (20, 30, 0.45), (250, 250, 0.5), (1e4, 2e4, 0.33),
     (2e6, 2e6 + 1, 0.5), (5, 1e6, 1e-6), (1e6, 3, 0.999999)],
)  # fmt: skip
def test_incomplete_beta_matches_scipy(a: float, b: float, x: float) -> None:
    # lgamma of millions carries ~1e-9 relative error into the front factor: p-values keep 7 digits there
    rel = 1e-11 if max(a, b) < 1e5 else 1e-7
    assert betainc(a, b, x) == pytest.approx(float(special.betainc(a, b, x)), rel=rel, abs=1e-300)


@pytest.mark.parametrize(
    ("k", "n", "p"), [(0, 1, 0.5), (3, 10, 0.5), (10, 10, 0.2), (499, 1000, 0.5), (40, 2000, 0.03)]
)
def test_binomial_cdf_matches_scipy(k: int, n: int, p: float) -> None:
    assert binomial_cdf(k, n, p) == pytest.approx(float(stats.binom.cdf(k, n, p)), rel=1e-10)


@pytest.mark.parametrize(("b", "c"), [(0, 0), (0, 1), (1, 0), (3, 3), (4, 0), (10, 2), (2, 10), (25, 40), (170, 230),
                                      (5000, 5150), (0, 60)])  # fmt: skip
def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_pairs(b: int, c: int) -> None:
    expected = 1.0 if b + c == 0 else float(stats.binomtest(min(b, c), b + c, 0.5).pvalue)
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-10)
    assert mcnemar_exact(b, c) == mcnemar_exact(c, b)


def test_mcnemar_exactness_by_enumeration() -> None:
    """The p-value is the probability, under the null, of a split at least as uneven: summed term by term."""
    for d in range(1, 31):
        for c in range(d + 1):
            pmf = [math.comb(d, k) / 2**d for k in range(d + 1)]
            extreme = abs(c - d / 2)
            brute = sum(p for k, p in enumerate(pmf) if abs(k - d / 2) >= extreme - 1e-12)
            assert mcnemar_exact(d - c, c) == pytest.approx(min(1.0, brute), rel=1e-12, abs=1e-15)


def _table(stable: np.ndarray, candidate: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int, int]:
    s, c = stable == truth, candidate == truth
    return len(truth), int(s.sum()), int(c.sum()), int((s & ~c).sum()), int((~s & c).sum())


def test_paired_accuracy_estimates_are_scikit_learns() -> None:
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, 500)
    stable = np.where(rng.random(500) < 0.8, truth, rng.integers(0, 3, 500))
    candidate = np.where(rng.random(500) < 0.86, truth, rng.integers(0, 3, 500))
    res = paired_proportions(*_table(stable, candidate, truth), alpha=0.05)
    assert res.reference == pytest.approx(accuracy_score(truth, stable))
    assert res.candidate == pytest.approx(accuracy_score(truth, candidate))
    assert res.effect == pytest.approx(accuracy_score(truth, candidate) - accuracy_score(truth, stable))
    assert res.low < res.effect < res.high
    _, _, _, b, c = _table(stable, candidate, truth)
    assert res.p_value == pytest.approx(float(stats.binomtest(min(b, c), b + c, 0.5).pvalue))


def test_bonett_price_interval_formula() -> None:
    """Bonett & Price (2012), eq. 3: one added to each discordant cell, n + 2 in the denominator."""
    n, b, c = 200, 12, 25
    res = paired_proportions(n, 150, 163, b, c, alpha=0.05)
    p10, p01 = (b + 1) / (n + 2), (c + 1) / (n + 2)
    se = math.sqrt((p10 + p01 - (p01 - p10) ** 2) / (n + 2))
    z = float(stats.norm.ppf(0.975))
    assert (res.low, res.high) == pytest.approx((p01 - p10 - z * se, p01 - p10 + z * se))


def test_identical_models_on_a_small_holdout_are_not_declared_equal_with_certainty() -> None:
    res = paired_proportions(10, 9, 9, 0, 0, alpha=0.05)
    assert res.effect == 0.0 and res.p_value == 1.0
    assert res.low < -0.1 and res.high > 0.1  # 10 rows cannot show the models agree everywhere


def test_paired_interval_covers_in_simulation() -> None:
    """A quick check (bench/evaluation_power.py runs the full simulation): 400 holdouts of 300 rows."""
    rng = np.random.default_rng(7)
    p = np.array([0.70, 0.08, 0.14, 0.08])  # both right, stable only, candidate only, both wrong
    true_effect = p[2] - p[1]
    covered = 0
    for _ in range(400):
        n11, n10, n01, _n00 = rng.multinomial(300, p)
        res = paired_proportions(300, n11 + n10, n11 + n01, int(n10), int(n01), alpha=0.05)
        covered += res.low <= true_effect <= res.high
    assert covered / 400 >= 0.92


def _mean_statistic(stable: np.ndarray, candidate: np.ndarray, root: bool = False):  # type: ignore[no-untyped-def]
    def statistic(idx: np.ndarray) -> np.ndarray:
        out = np.stack([stable[idx].mean(axis=1), candidate[idx].mean(axis=1)], axis=1)
        return np.sqrt(out) if root else out

    return statistic


def test_bootstrap_of_a_mean_difference_agrees_with_the_paired_t_interval() -> None:
    rng = np.random.default_rng(3)
    stable = rng.exponential(1.0, 2000)
    candidate = stable * 0.95 + rng.normal(0, 0.2, 2000)
    res = paired_bootstrap(_mean_statistic(stable, candidate), 2000, 0.05, 2000, seed=0, test="MAE")
    t = stats.ttest_rel(candidate, stable).confidence_interval(0.95)
    assert res.effect == pytest.approx(float(np.mean(candidate - stable)))
    assert res.low == pytest.approx(t.low, abs=0.004) and res.high == pytest.approx(t.high, abs=0.004)
    assert res.p_value < 0.01 and "2000 resamples, seed 0" in res.test


def test_bootstrap_interval_covers_in_simulation() -> None:
    """The issue's bar, >= 93% for a nominal 95%, on skewed paired losses (bench/evaluation_power.py measures
    93.3-95.3% over 600-1000 holdouts); here a quick check: 400 holdouts of 300 rows, 1000 resamples."""
    rng = np.random.default_rng(17)
    population = rng.exponential(1.0, 200_000)
    candidate = population * 1.02 + rng.exponential(0.1, 200_000) - 0.1
    true_effect = float(candidate.mean() - population.mean())
    covered = 0
    for _ in range(400):
        idx = rng.integers(0, 200_000, 300)
        res = paired_bootstrap(_mean_statistic(population[idx], candidate[idx]), 300, 0.05, 1000, seed=0, test="MAE")
        covered += res.low <= true_effect <= res.high
    assert covered / 400 >= 0.93


def test_bootstrap_is_seeded_and_identical_models_have_no_effect() -> None:
    x = np.random.default_rng(5).normal(size=300)
    stat = _mean_statistic(x, x)
    one = bootstrap_scores(stat, 300, 50, seed=11)
    assert np.array_equal(one, bootstrap_scores(stat, 300, 50, seed=11))
    assert not np.array_equal(one, bootstrap_scores(stat, 300, 50, seed=12))
    res = paired_bootstrap(stat, 300, 0.05, 200, seed=0, test="MAE")
    assert (res.effect, res.low, res.high, res.p_value) == (0.0, 0.0, 0.0, 1.0)


def _skewed_pair(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row losses of two correlated models, skewed as absolute errors and log losses are."""
    rng = np.random.default_rng(seed)
    stable = rng.exponential(1.0, rows)
    return stable, stable * 1.05 + rng.exponential(0.3, rows) - 0.3


@pytest.mark.parametrize("root", [False, True], ids=["mae", "rmse"])
def test_bca_interval_matches_scipys_on_the_same_rows(root: bool) -> None:
    """Our BCa against ``scipy.stats.bootstrap(method='BCa', paired=True)`` on the same 200 rows. With other
    seeds each draws 20,000 resamples of its own, so the ends agree within Monte Carlo error (2% of the width
    here); with the same seed scipy draws the same resamples (``integers(0, n, (B, n))``) and the interval is
    the same to rounding. The percentile interval of the same resamples is off by more on these skewed losses."""
    stable, candidate = _skewed_pair(200, 7)
    if root:
        stable, candidate = stable**2, candidate**2

    def effect(s: np.ndarray, c: np.ndarray, axis: int = -1) -> np.ndarray:
        level = np.mean(c, axis=axis), np.mean(s, axis=axis)
        out: np.ndarray = (np.sqrt(level[0]) - np.sqrt(level[1])) if root else (level[0] - level[1])
        return out

    ref = stats.bootstrap((stable, candidate), effect, paired=True, vectorized=True, n_resamples=20_000,
                          method="BCa", random_state=np.random.default_rng(1)).confidence_interval  # fmt: skip
    ours = paired_bootstrap(_mean_statistic(stable, candidate, root), 200, 0.05, 20_000, seed=0, test="MAE")
    width = ref.high - ref.low
    assert ours.low == pytest.approx(ref.low, abs=0.02 * width)
    assert ours.high == pytest.approx(ref.high, abs=0.02 * width)
    assert "paired BCa bootstrap (20000 resamples, seed 0)" in ours.test
    same = stats.bootstrap((stable, candidate), effect, paired=True, vectorized=True, n_resamples=20_000,
                           method="BCa", random_state=np.random.default_rng(0)).confidence_interval  # fmt: skip
    assert (ours.low, ours.high) == pytest.approx((same.low, same.high), rel=1e-9)
    plain = paired_bootstrap(_mean_statistic(stable, candidate, root), 200, 0.05, 20_000, 0, "MAE", "percentile")
    assert max(abs(plain.low - ref.low), abs(plain.high - ref.high)) > 0.02 * width


def test_the_jackknife_leaves_out_each_row_up_to_its_group_limit_then_groups() -> None:
    stable, candidate = _skewed_pair(300, 3)
    loo = [np.mean(np.delete(candidate - stable, i)) for i in range(300)]
    assert np.allclose(jackknife_effects(_mean_statistic(stable, candidate), 300, seed=0), loo)
    rows = 3 * JACKKNIFE_GROUPS + 7  # 7 groups of 4 rows, the rest of 3: every row left out exactly once
    stable, candidate = _skewed_pair(rows, 4)
    diff = candidate - stable
    grouped = jackknife_effects(_mean_statistic(stable, candidate), rows, seed=0)
    assert len(grouped) == JACKKNIFE_GROUPS
    left_out = diff.sum() - grouped * np.r_[np.full(7, rows - 4), np.full(JACKKNIFE_GROUPS - 7, rows - 3)]
    assert left_out.sum() == pytest.approx(diff.sum())
    exact = acceleration(np.array([(diff.sum() - d) / (rows - 1) for d in diff]))
    assert acceleration(grouped) == pytest.approx(exact, rel=0.25)


def test_bca_p_value_agrees_with_its_interval() -> None:
    """The p-value inverts the interval: below alpha exactly when the interval leaves out 0."""
    for shift in (0.0, 0.06, 0.1, 0.15, 0.3):
        stable, candidate = _skewed_pair(400, 11)
        res = paired_bootstrap(_mean_statistic(stable, candidate + shift - 0.05), 400, 0.05, 4000, 0, "MAE")
        excludes_zero = res.low > 0 or res.high < 0
        assert (res.p_value < 0.05) == excludes_zero, (shift, res)


def test_an_unknown_bootstrap_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown bootstrap interval 'studentized'"):
        paired_bootstrap(_mean_statistic(np.ones(5), np.ones(5)), 5, 0.05, 100, 0, "MAE", "studentized")


def test_small_alphas_draw_enough_resamples_for_their_tails() -> None:
    assert resample_count(2000, 0.05) == 2000
    many = resample_count(2000, bonferroni(0.05, 20))
    assert many * bonferroni(0.05, 20) / 2 >= MIN_TAIL_RESAMPLES


def test_midranks_match_scipy() -> None:
    values = np.array([3.0, 1.0, 3.0, 2.0, 2.0, 2.0, 5.0, 1.0])
    assert np.array_equal(midranks(values), stats.rankdata(values))


def _delong_brute(pos: np.ndarray, neg: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return float(psi.mean()), psi.mean(axis=1), psi.mean(axis=0)


def test_delong_auc_and_variance_match_scikit_learn_and_the_definition() -> None:
    rng = np.random.default_rng(2)
    y = rng.random(400) < 0.35
    stable = np.round(y * 0.8 + rng.normal(0, 0.6, 400), 1)  # rounded: ties on purpose
    candidate = np.round(y * 1.1 + rng.normal(0, 0.6, 400), 1)
    a = delong_auc(y, stable, candidate)
    assert a.reference == pytest.approx(roc_auc_score(y, stable))
    assert a.candidate == pytest.approx(roc_auc_score(y, candidate))
    _, v10s, v01s = _delong_brute(stable[y], stable[~y])
    _, v10c, v01c = _delong_brute(candidate[y], candidate[~y])
    m, n = int(y.sum()), int((~y).sum())
    cov = np.cov(np.vstack([v10s, v10c])) / m + np.cov(np.vstack([v01s, v01c])) / n
    assert (a.var_reference, a.var_candidate, a.covariance) == pytest.approx((cov[0, 0], cov[1, 1], cov[0, 1]))
    res = delong(y, stable, candidate, 0.05)
    se = math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert res.effect == pytest.approx(a.candidate - a.reference)
    assert (res.low, res.high) == pytest.approx((res.effect - 1.959964 * se, res.effect + 1.959964 * se), rel=1e-5)
    assert res.p_value == pytest.approx(2 * float(stats.norm.sf(abs(res.effect) / se)))


def test_delong_against_a_constant_score() -> None:
    rng = np.random.default_rng(4)
    y = rng.random(300) < 0.5
    score = y + rng.normal(0, 0.5, 300)
    res = delong_against(y, score, 0.5, 0.05)
    assert res.reference == 0.5 and res.candidate == pytest.approx(roc_auc_score(y, score))
    assert res.low > 0.3 and res.p_value < 1e-6
    with pytest.raises(ValueError, match="both classes"):
        delong_auc(np.ones(5, dtype=bool), score[:5], score[:5])


def test_z_and_bonferroni() -> None:
    assert z_value(0.05) == pytest.approx(float(stats.norm.ppf(0.975)))
    assert bonferroni(0.05, 5) == pytest.approx(0.01) and bonferroni(0.05, 0) == 0.05


@pytest.mark.parametrize("rows", [1, 2, 5, 300, 3 * JACKKNIFE_GROUPS + 7, 50_000])
def test_the_jackknife_leaves_out_the_same_rows_as_the_position_arithmetic(rows: int) -> None:
    """The left-out groups are built by copying the two sides of each group; the rows each jackknife
    resample holds are exactly those of the former position arithmetic (so BCa intervals are unchanged)."""
    seen: list[np.ndarray] = []

    def record(idx: np.ndarray) -> np.ndarray:
        seen.append(idx.copy())
        return np.zeros((idx.shape[0], 2))

    jackknife_effects(record, rows, seed=3)
    if rows <= 1:
        assert seen == []
        return
    groups = min(rows, JACKKNIFE_GROUPS)
    order = np.arange(rows) if groups == rows else np.random.default_rng(3).permutation(rows)
    size, extra = divmod(rows, groups)
    expected: list[np.ndarray] = []
    for first, count, width in ((0, extra, size + 1), (extra, groups - extra, size)):
        if count:
            starts = first * (size + 1) + np.arange(count) * width
            pos = np.arange(rows - width)[None, :]
            expected.extend(order[pos + width * (pos >= starts[:, None])])
    got = [row for block in seen for row in block]
    assert len(got) == groups and all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True))


def test_z_value_is_statistics_own_normal_quantile() -> None:
    """The quantile without importing ``statistics`` is the very float ``NormalDist().inv_cdf`` gives."""
    for p in np.linspace(1e-9, 1.0 - 1e-9, 2001):
        assert stats_module._normal_quantile(float(p)) == NormalDist().inv_cdf(float(p))
    for alpha in (0.05, 0.01, 0.05 / 3, 1e-6, 0.5):
        assert z_value(alpha) == NormalDist().inv_cdf(1.0 - alpha / 2.0)
