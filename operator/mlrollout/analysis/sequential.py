"""Anytime-valid building blocks: e-values and confidence sequences that survive any number of looks.

Every function here is pure and works on plain numbers. Each returns evidence that stays valid when it is
recomputed at every analysis interval and the rollout stops at the first look where it crosses a
threshold (Ville's inequality: a test supermartingale exceeds ``1/alpha`` with probability at most
``alpha``). The snapshot holds cumulative counts only, so each statistic is a function of the cumulative
counts, which the mixtures below are. See docs/analysis.md for the assumptions and references.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

__all__ = [
    "BETS_CS",
    "BETS_HARM",
    "HARM_LOG_RATIO_SD",
    "HARM_RATIO",
    "QUALITY_PAIRED",
    "QUALITY_UNPAIRED",
    "TWO_SAMPLE_LEVELS",
    "Interval",
    "OddsMixture",
    "beta_mixture_proportion_cs",
    "bounded_mean_cs",
    "bounded_mean_log_e",
    "bounded_two_sample_log_e",
    "gaussian_mixture_cs",
    "goodness_of_fit_log_e",
    "grid_harm_log_e",
    "harm_log_e",
    "harm_prior",
    "homogeneity_log_e",
    "log_to_e",
    "one_sided_normal_mixture_log_e",
]

_LOG_MAX = 700.0  # exp(700) is still a finite float; larger e-values are reported as this


@dataclass(frozen=True)
class Interval:
    """A two-sided interval ``[lo, hi]`` (either end may be infinite)."""

    lo: float
    hi: float

    def as_list(self) -> list[float]:
        return [self.lo, self.hi]


def log_to_e(log_e: float) -> float:
    """An e-value from its logarithm, clipped so it stays a finite JSON number."""
    return math.exp(min(log_e, _LOG_MAX)) if log_e > -_LOG_MAX else 0.0


def _trigamma(x: float) -> float:
    """``polygamma(1, x)`` via the Hurwitz zeta ufunc (scipy's polygamma is a slow Python wrapper)."""
    return float(special.zeta(2.0, x))


HARM_RATIO = 1.5
"""The event-rate ratio (candidate over stable) the harm mixture is centred on: a 50% increase.

Below the doubling the rollout must catch within a few looks, on purpose: the likelihood ratio that most
often crosses ``1/alpha`` by a given look is tilted about ``sqrt(2 log(1/alpha))`` standard errors from
the null, less than the effect itself (for a doubled 1% error rate at the third look of the default
traffic that is x1.7), and latency's exceedance ratios for a +30% slowdown are smaller still.
"""

HARM_LOG_RATIO_SD = math.log(2.0) / 2.0
"""Spread of the harm mixture on the log rate ratio: one standard deviation is a factor sqrt(2)."""


def harm_prior(share: float, ratio: float = HARM_RATIO, sd: float = HARM_LOG_RATIO_SD) -> tuple[float, float]:
    """Beta(a, b) on the candidate's share of events, centred on a ``ratio``-fold event rate, spread ``sd``.

    The candidate's share of events ``theta`` and its event-rate ratio ``r`` to stable are linked by
    ``odds(theta) = r * odds(share)``, so ``log r = logit(theta) - logit(share)``. Under Beta(a, b),
    ``logit(theta)`` has mean ``digamma(a) - digamma(b)`` and variance ``trigamma(a) + trigamma(b)``; this
    solves for the (a, b) that give ``log r`` mean ``log(ratio)`` and standard deviation ``sd``. The prior is
    thereby the same distribution of the log rate ratio at every traffic share (the null-centred prior it
    replaces put most of its mass on regressions too small to detect in a few looks).
    """
    target_mean = math.log(share / (1.0 - share)) + math.log(ratio)
    odds = math.exp(target_mean)
    # Start from the large-argument approximation (mean log(a/b), variance 1/a + 1/b; a >= 1/sd^2 > 8 here),
    # then Newton on (log a, log b): a few steps reach machine precision.
    b = (1.0 + 1.0 / odds) / sd**2
    a = odds * b
    for _ in range(20):
        f1 = float(special.digamma(a) - special.digamma(b)) - target_mean
        f2 = _trigamma(a) + _trigamma(b) - sd**2
        if abs(f1) < 1e-12 and abs(f2) < 1e-12:
            break
        # Jacobian with respect to (log a, log b)
        j11, j12 = a * _trigamma(a), -b * _trigamma(b)
        j21, j22 = -2.0 * a * float(special.zeta(3.0, a)), -2.0 * b * float(special.zeta(3.0, b))
        det = j11 * j22 - j12 * j21
        da, db = (f1 * j22 - f2 * j12) / det, (j11 * f2 - j21 * f1) / det
        a, b = a * math.exp(-da), b * math.exp(-db)
    return a, b


def harm_log_e(candidate_events: int, total_events: int, share: float) -> float:
    """Log e-value against "the candidate's event rate is no higher than stable's" (conditional binomial).

    Under the null each event (an error, a slow request) comes from the candidate with probability at most
    ``share``, the candidate's share of requests, whatever the (common, possibly time-varying) base rate:
    this is the conditioning argument of Lindon, Sanden & Shirikian (2022) for counting processes. The
    alternative mixes a Beta prior truncated to ``theta > share``; against any ``theta' <= share`` the
    likelihood ratio is a supermartingale, so the one-sided composite null is covered. The prior
    (``harm_prior``) depends on the request share only, never on which track the events came from, so
    validity holds for any prior; the prior only decides which regressions are caught fastest.
    """
    k, n = int(candidate_events), int(total_events)
    if n <= 0 or not 0.0 < share < 1.0:
        return 0.0
    a, b = harm_prior(share)
    tail_post = special.betaincc(a + k, b + n - k, share)
    tail_prior = special.betaincc(a, b, share)
    if tail_post <= 0.0 or tail_prior <= 0.0:
        return -math.inf
    log_marginal = special.betaln(a + k, b + n - k) - special.betaln(a, b) + math.log(tail_post / tail_prior)
    log_null = k * math.log(share) + (n - k) * math.log1p(-share)
    return float(log_marginal - log_null)


@dataclass(frozen=True)
class OddsMixture:
    """A fixed mixture for :func:`grid_harm_log_e`: likelihood ratios at log odds ratios ``log_ratios`` (the
    candidate's share of events at odds ``exp(l)`` times the null's) with ``weights``, scaled to sum to
    ``1 - beta_weight``, and :func:`harm_log_e`'s Beta mixture at ``beta_weight``. Fixed before any data, so
    any choice is valid; the choice only decides which regressions are caught fastest."""

    log_ratios: tuple[float, ...]
    weights: tuple[float, ...]
    beta_weight: float


QUALITY_PAIRED = OddsMixture(log_ratios=(0.31, 0.59, 1.9), weights=(0.39, 0.29, 0.27), beta_weight=0.05)
"""The accuracy harm mixture of a shadow step (sequential McNemar: a discordant pair favours stable at odds
``exp(l)``). Chosen in ``bench/quality_mixture_limit.py`` for the smallest worst ratio of labelled rows to
the oracle's on the issue's rows (1, 2 and 5 pp below 90 % accuracy, models disagreeing on 6 % of rows: odds
x1.4, x2 and x11, where the single ratio that needs fewest rows sits at about x1.3, x1.7 and x5.4). A
discordant pair is evidence about the effect in odds, so the paired and unpaired designs, whose odds for the
same accuracy drop differ, get a mixture each."""

QUALITY_UNPAIRED = OddsMixture(log_ratios=(0.08, 0.16, 0.31), weights=(0.14, 0.32, 0.49), beta_weight=0.05)
"""The accuracy harm mixture of a canary step (an incorrect labelled row is the candidate's at odds ``exp(l)``
times its share's): 1, 2 and 5 pp below 90 % accuracy are error-rate ratios x1.1, x1.2 and x1.5; at -2 and
-5 pp the single ratio that needs fewest rows sits at about x1.15 and x1.34 (at -1 pp not measured; the
evidence per row of a single ratio peaks at x1.1, normal approximation). The x1.17 and x1.36 points were fitted
to -2 and -5 pp as :data:`QUALITY_PAIRED` was; x1.08 at 0.14 (the others scaled down alike) was added in
``bench/quality_canary_mixture.py`` for -1 pp, which x1.17 learns at half the rate and x1.36 not at all: the
smallest -1 pp ratio to the oracle among mixtures costing -2 and -5 pp at most 0.03x on screening draws.
On fresh draws -1 pp needs 1.7 to 1.8x the oracle's labelled rows where the mixture before needed 2.5 to
2.7x; -2 pp 0.01x more, -5 pp 0.02 to 0.05x more (docs/analysis.md, "Canary -1 pp")."""


def grid_harm_log_e(candidate_events: int, total_events: int, share: float, mixture: OddsMixture) -> float:
    """Log e-value against "each event is the candidate's with probability at most ``share``" (conditional
    binomial, as :func:`harm_log_e`): the fixed ``mixture`` of likelihood ratios and, at its ``beta_weight``,
    of :func:`harm_log_e`'s Beta mixture, whose prior reaches every odds ratio above 1 (a ratio at ``l`` gains
    evidence only from effects above about ``l / 2`` in log odds: the Beta share catches every regression
    eventually, power one).

    Each ratio is that of ``theta_j`` (odds ``exp(l_j)`` times ``share``'s, ``l_j > 0``) against ``share``. For
    ``theta_j > share`` and any true ``p <= share`` one event's factor has expectation
    ``p theta_j / share + (1 - p)(1 - theta_j) / (1 - share) <= 1`` (linear in ``p``, 1 at ``share``), so each
    ratio is a test supermartingale for the whole one-sided null; so is the Beta mixture, and so is a fixed
    average of them: an e-process by construction, from the cumulative counts alone.
    """
    k, n = int(candidate_events), int(total_events)
    if n <= 0 or not 0.0 < share < 1.0:
        return 0.0
    beta_weight = mixture.beta_weight
    log_odds, scale = math.log(share / (1.0 - share)), (1.0 - beta_weight) / sum(mixture.weights)
    terms = []
    for l_j, w_j in zip(mixture.log_ratios, mixture.weights, strict=True):
        theta = float(special.expit(log_odds + l_j))
        terms.append(
            math.log(w_j * scale)
            + k * math.log(theta / share)
            + (n - k) * math.log1p(-theta)
            - (n - k) * math.log1p(-share)
        )
    if beta_weight > 0.0:
        terms.append(math.log(beta_weight) + harm_log_e(k, n, share))
    top = max(terms)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(t - top) for t in terms))


def gaussian_mixture_cs(estimate: float, variance: float, alpha: float, tau2: float) -> Interval:
    """Asymptotic confidence sequence for a mean-like estimate (normal mixture boundary).

    The mixture sequential probability ratio test of Johari et al. (2017), inverted: the set of effects
    ``d`` whose mixture likelihood ratio ``sqrt(V/(V+tau2)) exp(tau2 (x-d)^2 / (2V(V+tau2)))`` is below
    ``1/alpha`` (Howard et al. 2021, normal mixture). ``tau2`` is the mixing variance: the width is
    smallest when the estimator's variance is near ``tau2``.
    """
    if variance <= 0.0 or not math.isfinite(variance):
        return Interval(-math.inf, math.inf)
    radius = math.sqrt(
        2.0
        * variance
        * (variance + tau2)
        / tau2
        * (math.log(1.0 / alpha) + 0.5 * math.log((variance + tau2) / variance))
    )
    return Interval(estimate - radius, estimate + radius)


def one_sided_normal_mixture_log_e(estimate: float, variance: float, tau2: float) -> float:
    """Log e-value against "the mean effect is <= 0" from an asymptotically normal estimate.

    The Gaussian likelihood ratio ``exp(theta x / V - theta^2 / (2V))`` mixed over a half-normal prior on
    ``theta > 0`` with variance ``tau2``:
    ``2 sqrt(V/(V+tau2)) exp(tau2 x^2 / (2V(V+tau2))) Phi(x sqrt(tau2 / (V(V+tau2))))``. Against any
    ``theta <= 0`` it is a supermartingale in the limit (the time-uniform central limit theory of
    Waudby-Smith et al. 2021), so large positive ``x`` is evidence of harm and negative ``x`` never is.
    """
    if variance <= 0.0 or not math.isfinite(variance) or not math.isfinite(estimate):
        return 0.0
    total = variance + tau2
    z = estimate * math.sqrt(tau2 / (variance * total))
    log_phi = float(special.log_ndtr(z))
    return (
        math.log(2.0)
        + 0.5 * math.log(variance / total)
        + tau2 * estimate * estimate / (2.0 * variance * total)
        + log_phi
    )


def beta_mixture_proportion_cs(k: int, n: int, alpha: float, a: float = 0.5, b: float = 0.5) -> Interval:
    """Exact confidence sequence for a proportion from ``k`` successes in ``n`` Bernoulli trials.

    The conjugate Beta mixture of Robbins (1970) and Howard et al. (2021, section 3): every ``p`` whose
    mixture likelihood ratio ``B(a+k, b+n-k) / B(a, b) / (p^k (1-p)^(n-k))`` is below ``1/alpha``. Valid
    for every ``n``, small counts included. The set is an interval because the ratio is convex in ``p``.
    """
    if n <= 0:
        return Interval(0.0, 1.0)
    k = min(max(int(k), 0), int(n))
    excess_at_mle = float(special.betaln(a + k, b + n - k) - special.betaln(a, b)) - math.log(1.0 / alpha)
    log, log1p = math.log, math.log1p

    def excess(p: float) -> float:
        return excess_at_mle - (k * log(p) if k else 0.0) - ((n - k) * log1p(-p) if k < n else 0.0)

    p_hat = min(max(k / n, 1e-12), 1.0 - 1e-12)
    lo, hi = 0.0, 1.0
    if k > 0:
        eps = 1e-15
        lo = 0.0 if excess(eps) < 0 else float(optimize.brentq(excess, eps, p_hat, xtol=1e-10))
    if k < n:
        eps = 1.0 - 1e-15
        hi = 1.0 if excess(eps) < 0 else float(optimize.brentq(excess, p_hat, eps, xtol=1e-10))
    return Interval(lo, hi)


def homogeneity_log_e(table: list[list[float]], concentration: float = 0.5) -> float:
    """Log e-value against "every row has the same category distribution" for a rows x categories table.

    Universal inference (Wasserman, Ramdas & Balakrishnan 2020) with a Dirichlet mixture alternative over
    all cells (the multinomial mixture of Lindon & Malek 2022): the mixture likelihood divided by the
    *maximised* likelihood under independence. For every distribution in the null, the mixture over that
    distribution's likelihood is a test martingale; dividing by the maximum only makes it smaller, so the
    result is an e-process for the composite null that depends on the cumulative counts alone.
    """
    cells = [float(x) for row in table for x in row]
    n = sum(cells)
    if n <= 0:
        return 0.0
    m = len(cells)
    log_mix = special.gammaln(m * concentration) - special.gammaln(n + m * concentration)
    log_mix += sum(special.gammaln(c + concentration) - special.gammaln(concentration) for c in cells)
    rows = [sum(float(x) for x in row) for row in table]
    cols = [sum(float(row[j]) for row in table) for j in range(len(table[0]))]
    log_null = 0.0
    for i, row in enumerate(table):
        for j, x in enumerate(row):
            if x > 0:
                log_null += float(x) * math.log(rows[i] * cols[j] / (n * n))
    return float(log_mix - log_null)


def goodness_of_fit_log_e(counts: list[float], proportions: list[float], concentration: float = 0.5) -> float:
    """Log e-value against "the counts are multinomial with these proportions" (Lindon & Malek 2022)."""
    n = sum(float(c) for c in counts)
    if n <= 0:
        return 0.0
    k = len(counts)
    log_mix = special.gammaln(k * concentration) - special.gammaln(n + k * concentration)
    log_mix += sum(special.gammaln(float(c) + concentration) - special.gammaln(concentration) for c in counts)
    log_null = sum(float(c) * math.log(max(p, 1e-9)) for c, p in zip(counts, proportions, strict=True) if c > 0)
    return float(log_mix - log_null)


BETS_HARM: tuple[float, ...] = tuple(0.9 * 0.5**j for j in range(24))
"""The bets ``lambda`` the bounded-mean harm e-process mixes, with equal weights: 0.9 down to 1e-7, a factor
2 apart, so the bet that grows fastest for any effect-to-spread ratio is within sqrt(2) of one of them."""

BETS_CS: tuple[float, ...] = tuple(0.5 * 0.5**j for j in range(24))
"""The bets of the bounded-mean confidence sequences: at most 1/2, which makes each bet's e-value monotone in
the hypothesised mean, so the set of means not rejected is an interval found by bisection (bounded_mean_cs)."""


def _bets_log_e(sum_y: float, sum_y2: float, bets: tuple[float, ...]) -> float:
    """``log(mean_k exp(l_k * sum_y + (log(1 - l_k) + l_k) * sum_y2))`` over the fixed bets ``l_k``."""
    terms = [lam * sum_y + (math.log1p(-lam) + lam) * sum_y2 for lam in bets]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms) / len(terms))


def bounded_mean_log_e(
    n: float, total: float, total_sq: float, null: float, floor: float, scale: float | None = None,
    bets: tuple[float, ...] = BETS_HARM,
) -> float:  # fmt: skip
    """Log e-value against "the mean of x is <= ``null``" for observations ``x >= floor``, finite-sample.

    From the running sums only: ``n`` rows, ``total = sum x``, ``total_sq = sum x^2``. With
    ``y = (x - null) / scale >= -1`` (``scale >= null - floor``, by default equal) and a bet ``l`` in [0, 1),
    ``log(1 + l y) >= l y + (log(1 - l) + l) y^2`` (Fan, Grama & Liu 2015, Lemma 4.1; the empirical-Bernstein
    supermartingale of Howard et al. 2021 and Waudby-Smith & Ramdas 2023), so
    ``exp(l sum y + (log(1 - l) + l) sum y^2)`` is at most the wealth of betting ``l`` on every row, a
    nonnegative supermartingale when each row's conditional mean is at most ``null``. A fixed average over
    ``bets`` is one too: an e-process valid at every ``n`` (no central limit), for any bounded distribution,
    heavy-tailed within its bound included. Non-finite sums or no rows: 0 (no evidence).
    """
    c = (null - floor) if scale is None else scale
    if n <= 0 or c <= 0 or not all(math.isfinite(v) for v in (n, total, total_sq, null, c)):
        return 0.0
    sum_y = (total - n * null) / c
    # sum (x - null)^2, never below what the mean alone implies (the sums' rounding must not shrink it)
    sum_y2 = max((total_sq - 2.0 * null * total + n * null * null) / (c * c), sum_y * sum_y / n, 0.0)
    return _bets_log_e(sum_y, sum_y2, bets)


def bounded_mean_cs(
    n: float, total: float, total_sq: float, lo: float, hi: float, alpha: float,
    means: tuple[float, float] | None = None,
) -> Interval:  # fmt: skip
    """Finite-sample confidence sequence for the mean of observations in ``[lo, hi]``, from running sums.

    Each end is a one-sided bound at level ``alpha``, valid at every ``n`` at once: the lower end is the
    smallest mean ``m`` not rejected by :func:`bounded_mean_log_e` against "mean <= m" (rows above ``lo``),
    the upper end the largest not rejected against "mean >= m". ``means`` is the range the true mean lies
    in (default ``[lo, hi]``): the scale of each test is the largest ``m - lo`` (``hi - m``) over it, so a
    narrower range gives tighter ends. With bets at most 1/2 (``BETS_CS``) each test's e-value is monotone
    in ``m`` over that range (``3 l + 2 log(1 - l) > 0``), so the not-rejected means form an interval and
    bisection finds its ends exactly. No rows or non-finite sums: the whole range.
    """
    m_lo, m_hi = (lo, hi) if means is None else means
    if n <= 0 or not all(math.isfinite(v) for v in (n, total, total_sq)):
        return Interval(m_lo, m_hi)
    bar = math.log(1.0 / alpha)
    centre = min(max(total / n, m_lo), m_hi)
    below_scale, above_scale = m_hi - lo, hi - m_lo

    def rejects_below(m: float) -> bool:  # evidence the mean is above m
        return bounded_mean_log_e(n, total, total_sq, m, lo, below_scale, BETS_CS) >= bar

    def rejects_above(m: float) -> bool:  # evidence the mean is below m (the mirror image: x -> -x)
        return bounded_mean_log_e(n, -total, total_sq, -m, -hi, above_scale, BETS_CS) >= bar

    return Interval(_edge(rejects_below, m_lo, centre), _edge(rejects_above, m_hi, centre))


def _edge(rejects: Callable[[float], bool], outer: float, inner: float) -> float:
    """The point between ``outer`` (rejected, unless nothing is) and ``inner`` (not rejected) where
    rejection stops (to 1e-9), on its not-rejected side; the end of the confidence set on the ``outer`` side."""
    if not rejects(outer):
        return outer
    for _ in range(60):
        mid = (outer + inner) / 2.0
        if rejects(mid):
            outer = mid
        else:
            inner = mid
        if abs(inner - outer) <= 1e-9 * max(1.0, abs(outer)):
            break
    return inner


Floats = npt.NDArray[np.float64]


TWO_SAMPLE_LEVELS: Floats = np.concatenate([[0.0], np.geomspace(1e-4, 1.0, 927)])
"""The common levels ``m`` of :func:`bounded_two_sample_log_e`, as fractions of the bound, fixed in advance:
0, then 1e-4 to 1 a factor 1.01 apart (a cell is 1 % of its level, a tenth of a 10 % effect). Starting at
1e-4 keeps a candidate row's term ``(x - m) / m`` below 1e4, where the smallest bets still read it; errors
far below 1e-4 of the bound are beyond any test anyway (stable's side needs the bound's scale)."""


def _cell_lower_log_e(
    n: float, total: float, total_sq: float, ends: tuple[Floats, Floats], scales: tuple[Floats, ...]
) -> Floats:
    """A lower bound, per cell ``[a_k, b_k]``, of the e-process against "mean <= m" for every ``m`` of the
    cell: the equal mixture, over the harm bets and the cell's ``scales`` (each fixed per cell and valid for
    every level of it), of :func:`bounded_mean_log_e`'s terms. For one bet and scale the exponent
    ``l sum y + (log(1 - l) + l) sum y^2`` is concave in ``m`` (its ``m^2`` coefficient is negative), so on
    the cell it is least at an end: the mixture of each term's smaller end is at most the mixture anywhere
    in the cell."""
    bets = np.asarray(BETS_HARM)
    psi = np.log1p(-bets) + bets
    terms = []
    for scale in scales:
        per_end = []
        for nulls in ends:
            sum_y = (total - n * nulls) / scale
            sum_y2 = np.maximum((total_sq - 2.0 * nulls * total + n * nulls * nulls) / (scale * scale), sum_y**2 / n)
            per_end.append(bets[None, :] * sum_y[:, None] + psi[None, :] * sum_y2[:, None])
        terms.append(np.minimum(per_end[0], per_end[1]))
    every = np.concatenate(terms, axis=1)
    top = every.max(axis=1)
    result: Floats = top + np.log(np.exp(every - top[:, None]).mean(axis=1))
    return result


def bounded_two_sample_log_e(
    n_c: float, total_c: float, total_sq_c: float, n_s: float, total_s: float, total_sq_s: float, bound: float,
) -> float:  # fmt: skip
    """Log e-value against "the candidate's mean is at most stable's", each track's rows in ``[0, bound]``.

    For a fixed level ``m``, the candidate's :func:`bounded_mean_log_e` against "mean <= m" and stable's
    against "mean >= m" are test supermartingales when the candidate's mean is at most ``m`` and stable's at
    least ``m``; so is their product (each row belongs to one track). Under the null some ``m*`` (any value
    between the two means) makes both hold, so ``inf_m E_c(m) E_s(m) <= E_c(m*) E_s(m*)``: an e-process that
    needs no share of traffic and pays each track's own spread (an inverse-share-weighted sum would pay the
    errors' second moment). The infimum runs over the cells of a grid fixed in advance
    (``TWO_SAMPLE_LEVELS`` times the bound); in a cell each factor uses the smallest scale valid for every
    level of it (the candidate's rows are at least 0: the cell's top ``m``, which bets on the spread of the
    errors rather than the width of the bound; stable's at most the bound: ``bound - m``), and is bounded
    below by :func:`_cell_lower_log_e`. A loose bound still costs on stable's side: with rows up to the
    bound, a few unseen huge errors could hide a higher stable MAE. No rows on a side, or non-finite sums: 0.
    """
    values = (n_c, total_c, total_sq_c, n_s, total_s, total_sq_s, bound)
    if n_c <= 0 or n_s <= 0 or bound <= 0 or not all(math.isfinite(v) for v in values):
        return 0.0
    levels = bound * TWO_SAMPLE_LEVELS
    lo, hi = levels[:-1], levels[1:]
    candidate = _cell_lower_log_e(n_c, total_c, total_sq_c, (lo, hi), (hi,))  # evidence its mean is above m
    stable = _cell_lower_log_e(n_s, -total_s, total_sq_s, (-lo, -hi), (bound - lo,))  # its mean below m
    return float(np.min(candidate + stable))
