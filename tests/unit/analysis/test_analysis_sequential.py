"""The anytime-valid primitives: exactness checks against closed forms and time-uniform error control."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import integrate, special, stats

from mlrollout.analysis import sequential as sq


def test_harm_e_value_matches_numerical_integration() -> None:
    k, n, share = 30, 200, 0.1
    a, b = sq.harm_prior(share)
    prior_tail = stats.beta(a, b).sf(share)

    def integrand(t: float) -> float:
        lr = (t / share) ** k * ((1 - t) / (1 - share)) ** (n - k)
        return float(lr * stats.beta(a, b).pdf(t) / prior_tail)

    expected, _ = integrate.quad(integrand, share, 1.0, limit=200)
    assert math.exp(sq.harm_log_e(k, n, share)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("share", [1e-6, 0.02, 0.1, 0.5, 0.9, 0.999])
def test_harm_prior_is_the_same_log_rate_ratio_law_at_every_share(share: float) -> None:
    """log(rate ratio) = logit(theta) - logit(share): mean log 1.5 and sd log(2)/2 whatever the share."""
    a, b = sq.harm_prior(share)
    mean = special.digamma(a) - special.digamma(b) - math.log(share / (1 - share))
    sd = math.sqrt(special.polygamma(1, a) + special.polygamma(1, b))
    assert mean == pytest.approx(math.log(sq.HARM_RATIO), abs=1e-9)
    assert sd == pytest.approx(sq.HARM_LOG_RATIO_SD, abs=1e-9)
    # ratios within a factor sqrt(2) of the centre (one sd either side) carry about 68% of the mass
    odds = share / (1 - share)

    def theta(ratio: float) -> float:
        return ratio * odds / (1 + ratio * odds)

    dist = stats.beta(a, b)
    centre = sq.HARM_RATIO
    assert dist.cdf(theta(centre * math.sqrt(2))) - dist.cdf(theta(centre / math.sqrt(2))) == pytest.approx(
        0.68, abs=0.02
    )


@pytest.mark.parametrize(("ratio", "sd"), [(1.1, 0.1), (5.0, 1.0), (2.0, 0.05)])
def test_harm_prior_other_centres_and_widths(ratio: float, sd: float) -> None:
    a, b = sq.harm_prior(0.1, ratio, sd)
    assert special.digamma(a) - special.digamma(b) - math.log(0.1 / 0.9) == pytest.approx(math.log(ratio), abs=1e-9)
    assert math.sqrt(special.polygamma(1, a) + special.polygamma(1, b)) == pytest.approx(sd, abs=1e-9)


@pytest.mark.parametrize("share", [0.02, 0.5])
def test_harm_e_process_is_valid_at_small_and_large_shares(share: float) -> None:
    """The prior is centred away from the null; Ville's inequality still caps crossings at alpha."""
    rng = np.random.default_rng(7)
    alpha, runs, events = 0.05, 300, 600
    cum = np.cumsum(rng.random((runs, events)) < share, axis=1)
    crossed = sum(
        any(sq.harm_log_e(int(cum[r, t]), t + 1, share) >= math.log(1 / alpha) for t in range(0, events, 10))
        for r in range(runs)
    )
    assert crossed / runs <= alpha


def test_harm_e_value_separates_a_small_increase_from_a_doubling() -> None:
    """Expected counts of 200 events at share 0.1: the e-value for a doubled rate beats the same
    number of events at a 1.2-fold rate, and a tenfold rate is overwhelming."""
    share, n = 0.1, 200

    def expected_k(ratio: float) -> int:
        return round(n * ratio * share / (ratio * share + 1 - share))

    small, double, huge = (sq.harm_log_e(expected_k(r), n, share) for r in (1.2, 2.0, 10.0))
    assert small < math.log(20) < math.log(80) < double < huge


def test_harm_e_value_direction() -> None:
    assert sq.harm_log_e(0, 0, 0.1) == 0.0
    more = sq.harm_log_e(60, 200, 0.1)
    fewer = sq.harm_log_e(5, 200, 0.1)
    assert more > math.log(1000)
    assert fewer < 0.0


def test_harm_e_process_is_time_uniformly_valid_under_the_null() -> None:
    """Bernoulli(share) event labels, checked after every event: crossings of 1/alpha stay below alpha."""
    rng = np.random.default_rng(1)
    alpha, runs, events, share = 0.05, 400, 400, 0.2
    labels = rng.random((runs, events)) < share
    cum = np.cumsum(labels, axis=1)
    crossed = 0
    for r in range(runs):
        if any(sq.harm_log_e(int(cum[r, t]), t + 1, share) >= math.log(1 / alpha) for t in range(0, events, 5)):
            crossed += 1
    assert crossed / runs <= alpha


def test_harm_e_process_below_the_null_is_even_safer() -> None:
    """The composite null: a candidate that errs less than stable crosses even more rarely."""
    rng = np.random.default_rng(2)
    labels = rng.random((300, 300)) < 0.07  # true share of events below the request share 0.1
    cum = np.cumsum(labels, axis=1)
    crossed = sum(
        any(sq.harm_log_e(int(cum[r, t]), t + 1, 0.1) >= math.log(20) for t in range(0, 299, 3)) for r in range(300)
    )
    assert crossed / 300 <= 0.02


@pytest.mark.parametrize("p", [0.005, 0.3, 0.97])
def test_beta_mixture_cs_covers_at_every_look(p: float) -> None:
    rng = np.random.default_rng(3)
    runs, n, alpha = 200, 2000, 0.05
    cum = np.cumsum(rng.random((runs, n)) < p, axis=1)
    missed = 0
    for r in range(runs):
        for t in range(9, n, 100):
            cs = sq.beta_mixture_proportion_cs(int(cum[r, t]), t + 1, alpha)
            if not cs.lo <= p <= cs.hi:
                missed += 1
                break
    assert missed / runs <= alpha


def test_beta_mixture_cs_shapes() -> None:
    assert sq.beta_mixture_proportion_cs(0, 0, 0.05).as_list() == [0.0, 1.0]
    zero = sq.beta_mixture_proportion_cs(0, 1000, 0.05)
    assert zero.lo == 0.0 and 0.0 < zero.hi < 0.01
    full = sq.beta_mixture_proportion_cs(1000, 1000, 0.05)
    assert full.hi == 1.0 and 0.99 < full.lo < 1.0
    small, large = sq.beta_mixture_proportion_cs(10, 100, 0.05), sq.beta_mixture_proportion_cs(100, 1000, 0.05)
    assert small.lo < large.lo < 0.1 < large.hi < small.hi
    # a confidence sequence is wider than the fixed-sample Clopper-Pearson interval
    cp = stats.binomtest(100, 1000).proportion_ci(0.95)
    assert large.lo < cp.low and large.hi > cp.high


def test_gaussian_mixture_cs_covers_a_running_mean() -> None:
    rng = np.random.default_rng(4)
    runs, n, alpha, tau2 = 300, 3000, 0.05, 0.01
    x = rng.normal(0.3, 1.0, size=(runs, n))
    means = np.cumsum(x, axis=1) / np.arange(1, n + 1)
    missed = 0
    for r in range(runs):
        for t in range(4, n, 50):
            cs = sq.gaussian_mixture_cs(float(means[r, t]), 1.0 / (t + 1), alpha, tau2)
            if not cs.lo <= 0.3 <= cs.hi:
                missed += 1
                break
    assert missed / runs <= alpha


def test_gaussian_mixture_cs_degenerate_variance_is_uninformative() -> None:
    cs = sq.gaussian_mixture_cs(0.1, 0.0, 0.05, 1e-4)
    assert math.isinf(cs.lo) and math.isinf(cs.hi)


def test_homogeneity_e_value_is_valid_and_powerful() -> None:
    rng = np.random.default_rng(5)
    p = np.array([0.2, 0.5, 0.3])
    crossed = 0
    for _ in range(300):
        a = np.zeros(3, dtype=int)
        b = np.zeros(3, dtype=int)
        for _look in range(20):
            a += rng.multinomial(90, p)
            b += rng.multinomial(10, p)
            if sq.homogeneity_log_e([a.tolist(), b.tolist()]) >= math.log(20):
                crossed += 1
                break
    assert crossed / 300 <= 0.05
    small = sq.homogeneity_log_e([[300, 400, 300], [10, 30, 60]])
    large = sq.homogeneity_log_e([[3000, 4000, 3000], [100, 300, 600]])
    assert math.log(20) < small < large
    assert large > math.log(1e6)


def test_goodness_of_fit_e_value() -> None:
    p = [0.25, 0.25, 0.5]
    assert sq.goodness_of_fit_log_e([0, 0, 0], p) == 0.0
    assert sq.goodness_of_fit_log_e([250, 250, 500], p) < 0.0
    assert sq.goodness_of_fit_log_e([600, 200, 200], p) > math.log(1e6)
    rng = np.random.default_rng(6)
    crossed = 0
    for _ in range(300):
        counts = np.zeros(3, dtype=int)
        for _look in range(20):
            counts += rng.multinomial(50, p)
            if sq.goodness_of_fit_log_e(counts.tolist(), p) >= math.log(20):
                crossed += 1
                break
    assert crossed / 300 <= 0.05


def test_log_to_e_is_finite() -> None:
    assert sq.log_to_e(10_000.0) < math.inf
    assert sq.log_to_e(-10_000.0) == 0.0
    assert sq.log_to_e(0.0) == 1.0


@pytest.mark.parametrize(("mixture", "share"), [(sq.QUALITY_UNPAIRED, 0.1), (sq.QUALITY_PAIRED, 0.5)])
def test_grid_harm_e_value_is_the_weighted_average_of_its_likelihood_ratios_and_the_beta_mixture(
    mixture: sq.OddsMixture, share: float
) -> None:
    k, n = 30, 200
    expected = mixture.beta_weight * math.exp(sq.harm_log_e(k, n, share))
    for l_j, w_j in zip(mixture.log_ratios, mixture.weights, strict=True):
        theta = share * math.exp(l_j) / (share * math.exp(l_j) + 1 - share)
        expected += w_j * (theta / share) ** k * ((1 - theta) / (1 - share)) ** (n - k)
    assert sum(mixture.weights) + mixture.beta_weight == pytest.approx(1.0)
    assert math.exp(sq.grid_harm_log_e(k, n, share, mixture)) == pytest.approx(expected, rel=1e-9)
    assert sq.grid_harm_log_e(0, 0, 0.5, mixture) == 0.0 and sq.grid_harm_log_e(3, 5, 1.0, mixture) == 0.0


def test_grid_harm_e_value_direction() -> None:
    """At the null's share of events the evidence is below 1 (each ratio's log is -n KL); far above it, large."""
    unpaired = sq.QUALITY_UNPAIRED
    assert sq.grid_harm_log_e(50, 500, 0.1, unpaired) < 0.0 < sq.grid_harm_log_e(80, 500, 0.1, unpaired)
    assert sq.grid_harm_log_e(250, 500, 0.5, sq.QUALITY_PAIRED) < 0.0
    assert sq.grid_harm_log_e(330, 500, 0.5, sq.QUALITY_PAIRED) > math.log(1000)


@pytest.mark.parametrize(
    ("share", "truth", "mixture"),
    [(0.5, 0.5, sq.QUALITY_PAIRED), (0.1, 0.1, sq.QUALITY_UNPAIRED), (0.5, 0.45, sq.QUALITY_PAIRED),
     (0.1, 0.1, sq.QUALITY_PAIRED), (0.5, 0.5, sq.QUALITY_UNPAIRED)],
)  # fmt: skip
def test_grid_harm_e_process_is_time_uniformly_valid_under_the_null(
    share: float, truth: float, mixture: sq.OddsMixture
) -> None:
    """Events the candidate's with probability ``truth <= share``, checked after every 5th event: crossings
    of 1/alpha stay below alpha (Ville), at the boundary of the null and inside it."""
    rng = np.random.default_rng(3)
    alpha, runs, events = 0.05, 400, 600
    cum = np.cumsum(rng.random((runs, events)) < truth, axis=1)
    bar = math.log(1 / alpha)
    crossed = sum(
        any(sq.grid_harm_log_e(int(cum[r, t]), t + 1, share, mixture) >= bar for t in range(0, events, 5))
        for r in range(runs)
    )
    assert stats.binom.sf(crossed - 1, runs, alpha) > 1e-3, crossed


def test_grid_harm_e_process_catches_a_regression_below_its_smallest_ratio() -> None:
    """Power one: at odds x1.05 (below every ratio's reach, l / 2 >= 0.155) the Beta share still grows."""
    share, n = 0.5, 200_000
    k = round(n * 1.05 / 2.05)
    assert sq.grid_harm_log_e(k, n, share, sq.QUALITY_PAIRED) > math.log(1000)
    assert sq.grid_harm_log_e(k, n, share, dataclasses.replace(sq.QUALITY_PAIRED, beta_weight=0.0)) < 0.0


def test_canary_mixture_reaches_a_ten_percent_higher_error_rate() -> None:
    """Canary -1 pp at 90 % accuracy (error rate x1.1, share 0.1) at its expected counts: the x1.08 point
    crosses 1/alpha (quality.harm's 1.25 %) by 15 000 wrong rows; the mixture without it (x1.17 and x1.36,
    weights as before) is far from the bar there, its x1.36 point losing evidence."""
    share, bar = 0.1, math.log(80)
    theta = share * 1.1 / (share * 1.1 + 1 - share)
    k, n = round(15_000 * theta), 15_000
    without = sq.OddsMixture(log_ratios=(0.16, 0.31), weights=(0.38, 0.57), beta_weight=0.05)
    assert min(sq.QUALITY_UNPAIRED.log_ratios) < math.log(1.1)
    assert sq.grid_harm_log_e(k, n, share, sq.QUALITY_UNPAIRED) >= bar > sq.grid_harm_log_e(k, n, share, without) + 1
