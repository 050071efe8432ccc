"""Paired comparisons of two models scored on the same rows: pure functions, numpy and the standard library.

Why here and not in the operator's ``analysis`` package: the evaluation runs as a Job from the serving
image, which has numpy and onnxruntime but neither scipy nor the operator; ``mlrollout evaluate`` runs the
same code on a laptop (the umbrella command line dispatches to this package). One implementation, where
both can import it (docs/evaluation.md).

- :func:`paired_proportions`: accuracy-like outcomes (each row right or wrong for each model). The test is
  the **exact McNemar** test (a two-sided binomial test of the discordant pairs at 1/2); the effect is the
  difference of the two proportions with the **Bonett-Price** adjusted Wald interval for paired data (one
  added to each discordant cell, so it stays honest when the models never disagree on a small holdout).
- :func:`paired_bootstrap`: any statistic of resampled rows (balanced accuracy, log loss, MAE, RMSE):
  the **BCa** (bias-corrected and accelerated, the acceleration from a jackknife) interval of the paired
  difference over seeded resamples of rows, and the p-value of "no difference" by inverting it. The same
  resampled rows score both models, which is what pairs them. The plain percentile interval is kept as an
  option: its coverage was below nominal (bench/evaluation_power.py).
- :func:`delong`: ROC AUC of two scores on the same rows (DeLong, DeLong and Clarke-Pearson 1988, with the
  midrank algorithm of Sun and Xu 2014): both AUCs, their covariance, a normal interval and p-value.

The binomial tails use the regularised incomplete beta function (:func:`betainc`, a continued fraction as
in Numerical Recipes §6.4): within 1e-11 of scipy's for thousands of rows and 1e-7 (relative) for
millions, and fast for both; the tests hold every function to scipy and scikit-learn on fixed data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, NamedTuple

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from statistics import NormalDist

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]

_EPS: Final = 1e-15
_TINY: Final = 1e-300
_MAX_ITERATIONS: Final = 200_000
_BOOTSTRAP_BLOCK_ELEMENTS: Final = 1 << 22  # resampled row indices held at once (32 MiB of int64)
MIN_TAIL_RESAMPLES: Final = 10
"""The percentile interval reads each tail from at least this many resamples (more resamples are drawn
when a small alpha, e.g. a Bonferroni share, asks for it)."""


class Paired(NamedTuple):
    """One paired comparison: the reference (stable, or a baseline) against the candidate on ``rows`` rows.

    The records here are named tuples, not dataclasses: a dataclass costs about 0.5 ms of the evaluation Job's
    start-up to generate its methods (docs/evaluation.md, "Throughput and memory")."""

    rows: int
    reference: float
    candidate: float
    effect: float  # candidate - reference, in the metric's unit
    low: float
    high: float  # the (1 - alpha) interval of the effect
    p_value: float  # two-sided, for "no difference"
    test: str


def z_value(alpha: float) -> float:
    """The two-sided normal critical value: ``z`` with ``P(|Z| > z) = alpha``."""
    return _normal_quantile(1.0 - alpha / 2.0)


def _normal_quantile(p: float) -> float:
    """``statistics.NormalDist().inv_cdf(p)`` (0 < p < 1), by the C function it calls itself where CPython
    has it: importing ``statistics`` (with ``fractions``, ``decimal`` and ``random``) cost the evaluation
    Job about 1.5 ms of its start-up, for one quantile on the accuracy path (docs/evaluation.md)."""
    try:
        from _statistics import _normal_dist_inv_cdf  # type: ignore[import-not-found]
    except ImportError:  # another interpreter: the module's own Python version
        return _normal().inv_cdf(p)
    return float(_normal_dist_inv_cdf(p, 0.0, 1.0))


def _normal() -> NormalDist:
    """The standard normal distribution (imported for the bootstrap and DeLong, which take far longer than it)."""
    from statistics import NormalDist

    return NormalDist()


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITERATIONS):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)`` for ``a, b > 0``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def binomial_cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)``."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return betainc(n - k, k + 1, 1.0 - p)


def mcnemar_exact(reference_only: int, candidate_only: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs, a binomial test at 1/2 (doubling the smaller
    tail, which for a symmetric null is also the "as likely or less" p-value)."""
    discordant = reference_only + candidate_only
    if discordant == 0:
        return 1.0
    return min(1.0, 2.0 * binomial_cdf(min(reference_only, candidate_only), discordant, 0.5))


def paired_proportions(
    rows: int, reference_right: int, candidate_right: int, reference_only: int, candidate_only: int, alpha: float
) -> Paired:
    """Accuracy-like outcomes of two models on the same rows.

    ``reference_only``: rows only the reference gets right; ``candidate_only``: rows only the candidate gets
    right. The interval is Bonett and Price's adjusted Wald interval for a paired difference of proportions
    (Bonett & Price 2012, "Adjusted Wald confidence interval for a difference of binomial proportions based
    on paired data"); the test is the exact McNemar test.
    """
    if rows <= 0:
        raise ValueError("a paired comparison needs at least one row")
    effect = (candidate_only - reference_only) / rows
    p10 = (reference_only + 1.0) / (rows + 2.0)
    p01 = (candidate_only + 1.0) / (rows + 2.0)
    centre = p01 - p10
    se = math.sqrt(max(p10 + p01 - centre * centre, 0.0) / (rows + 2.0))
    z = z_value(alpha)
    return Paired(
        rows=rows,
        reference=reference_right / rows,
        candidate=candidate_right / rows,
        effect=effect,
        low=max(-1.0, centre - z * se),
        high=min(1.0, centre + z * se),
        p_value=mcnemar_exact(reference_only, candidate_only),
        test="exact McNemar (discordant pairs), Bonett-Price interval",
    )


# -- the paired bootstrap ---------------------------------------------------------------------------------

Statistic = Callable[[IndexArray], FloatArray]
"""Rows in, scores out: given a ``(k, n)`` array of row indices (k resamples), the ``(k, 2)`` scores of the
reference (column 0) and the candidate (column 1) on each resample. The identity resample is
``np.arange(n)[None, :]``."""


def resample_count(resamples: int, alpha: float) -> int:
    """Resamples to draw: at least ``resamples``, and enough that each tail of the (1 - alpha) percentile
    interval rests on :data:`MIN_TAIL_RESAMPLES` resamples."""
    return max(resamples, math.ceil(MIN_TAIL_RESAMPLES / (alpha / 2.0)))


def bootstrap_scores(statistic: Statistic, rows: int, resamples: int, seed: int) -> FloatArray:
    """``(resamples, 2)`` scores of both models on resampled rows (with replacement), drawn in blocks so
    memory stays bounded; a given seed always gives the same resamples."""
    rng = np.random.default_rng(seed)
    block = max(1, min(resamples, _BOOTSTRAP_BLOCK_ELEMENTS // max(rows, 1)))
    out = np.empty((resamples, 2), dtype=np.float64)
    done = 0
    while done < resamples:
        k = min(block, resamples - done)
        idx = rng.integers(0, rows, size=(k, rows), dtype=np.intp)
        out[done : done + k] = statistic(idx)
        done += k
    return out


BOOTSTRAP_INTERVALS: Final = ("bca", "percentile")
JACKKNIFE_GROUPS: Final = 1000
"""The BCa acceleration's jackknife leaves out one row at a time up to this many rows; above it, one of this
many groups of rows at a time (the rows seeded-shuffled first, so a holdout sorted by label still mixes), which
keeps its cost at ``JACKKNIFE_GROUPS x rows``, half of the 2000 resamples' (the delete-d jackknife)."""


def jackknife_effects(statistic: Statistic, rows: int, seed: int) -> FloatArray:
    """``candidate - reference`` with one row (or one group of rows, see :data:`JACKKNIFE_GROUPS`) left out
    each time: what the BCa acceleration is estimated from. Vectorised in blocks like the resamples."""
    if rows <= 1:
        return np.zeros(1)
    groups = min(rows, JACKKNIFE_GROUPS)
    order = np.arange(rows, dtype=np.intp) if groups == rows else np.random.default_rng(seed).permutation(rows)
    size, extra = divmod(rows, groups)  # ``extra`` groups of ``size + 1`` rows first, then ``size`` rows
    out = np.empty(groups, dtype=np.float64)
    for first, count, width in ((0, extra, size + 1), (extra, groups - extra, size)):
        if count == 0:
            continue
        start = first * (size + 1)
        kept = rows - width
        block = max(1, min(count, _BOOTSTRAP_BLOCK_ELEMENTS // max(kept, 1)))
        for b in range(0, count, block):
            k = min(block, count - b)
            idx = np.empty((k, kept), dtype=np.intp)
            for j in range(k):  # ``order`` without the group that begins at ``left``: two copies, no arithmetic
                left = start + (b + j) * width
                idx[j, :left] = order[:left]
                idx[j, left:] = order[left + width :]
            scores = statistic(idx)
            out[first + b : first + b + k] = scores[:, 1] - scores[:, 0]
    return out


def acceleration(jackknife: FloatArray) -> float:
    """The BCa acceleration from jackknife values (Efron and Tibshirani 1993, eq. 14.15); 0 when they are all
    equal."""
    d = jackknife.mean() - jackknife
    denominator = 6.0 * float(np.sum(d * d)) ** 1.5
    return float(np.sum(d**3)) / denominator if denominator > 0 else 0.0


def bca_levels(effects: FloatArray, point: float, accel: float, probabilities: FloatArray) -> FloatArray:
    """The BCa's adjusted quantile levels of the resampled effects for the nominal ``probabilities``.

    The bias correction ``z0`` is the normal quantile of the share of resamples below the point estimate (ties
    count half, as scipy's), kept within half a resample of 0 and 1 so that it stays finite."""
    count = len(effects)
    share = (np.sum(effects < point) + 0.5 * np.sum(effects == point)) / count
    share = min(max(share, 0.5 / count), 1.0 - 0.5 / count)
    normal = _normal()
    z0 = normal.inv_cdf(share)
    z = np.array([normal.inv_cdf(float(p)) for p in probabilities]) + z0
    return np.array([normal.cdf(float(v)) for v in z0 + z / (1.0 - accel * z)])


def bca_p_value(effects: FloatArray, point: float, accel: float) -> float:
    """Two-sided p-value of "no difference" by inverting the BCa interval: the nominal tail at which one of
    its ends reaches 0."""
    count = len(effects)
    normal = _normal()
    share = (np.sum(effects < point) + 0.5 * np.sum(effects == point)) / count
    z0 = normal.inv_cdf(min(max(share, 0.5 / count), 1.0 - 0.5 / count))
    below = (np.sum(effects < 0.0) + 0.5 * np.sum(effects == 0.0)) / count
    w = normal.inv_cdf(min(max(below, 0.5 / count), 1.0 - 0.5 / count)) - z0
    tail = normal.cdf(w / (1.0 + accel * w) - z0) if 1.0 + accel * w > 0 else (0.0 if w < 0 else 1.0)
    return min(1.0, max(2.0 / (count + 1), 2.0 * min(tail, 1.0 - tail)))


def paired_bootstrap(
    statistic: Statistic, rows: int, alpha: float, resamples: int, seed: int, test: str, interval: str = "bca"
) -> Paired:
    """The bootstrap interval of ``candidate - reference``, paired by resampling rows (docs/evaluation.md).

    ``interval="bca"`` (the default) is the bias-corrected and accelerated interval, its acceleration from a
    jackknife (:func:`jackknife_effects`): the percentile interval's quantiles moved for the skew and bias
    of the effect's distribution, which the percentile interval's coverage suffers from (93.3-95.3% measured
    for a nominal 95%, bench/evaluation_power.py). ``interval="percentile"`` is the plain percentile
    interval, kept for that comparison."""
    if rows <= 0:
        raise ValueError("a paired comparison needs at least one row")
    if interval not in BOOTSTRAP_INTERVALS:
        raise ValueError(f"unknown bootstrap interval {interval!r}: one of {', '.join(BOOTSTRAP_INTERVALS)}")
    point = statistic(np.arange(rows, dtype=np.intp)[None, :])[0]
    effect = float(point[1] - point[0])
    count = resample_count(resamples, alpha)
    scores = bootstrap_scores(statistic, rows, count, seed)
    effects = scores[:, 1] - scores[:, 0]
    nominal = np.array([alpha / 2.0, 1.0 - alpha / 2.0])
    if interval == "bca":
        accel = acceleration(jackknife_effects(statistic, rows, seed))
        low, high = np.quantile(effects, bca_levels(effects, effect, accel, nominal))
        p_value = bca_p_value(effects, effect, accel)
        words = "paired BCa bootstrap"
    else:
        low, high = np.quantile(effects, nominal)
        below, above = int(np.sum(effects <= 0.0)), int(np.sum(effects >= 0.0))
        p_value = min(1.0, 2.0 * (1 + min(below, above)) / (count + 1))
        words = "paired percentile bootstrap"
    return Paired(
        rows=rows,
        reference=float(point[0]),
        candidate=float(point[1]),
        effect=effect,
        low=float(low),
        high=float(high),
        p_value=p_value,
        test=f"{test}, {words} ({count} resamples, seed {seed})",
    )


# -- ROC AUC: DeLong --------------------------------------------------------------------------------------


def midranks(values: FloatArray) -> FloatArray:
    """Ranks 1..n with ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    n = len(values)
    ranks_sorted = np.empty(n, dtype=np.float64)
    # starts of runs of equal values
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], n]
    average = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks_sorted[:] = np.repeat(average, ends - starts)
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = ranks_sorted
    return ranks


def _delong_components(positive: FloatArray, negative: FloatArray) -> tuple[float, FloatArray, FloatArray]:
    """AUC and the structural components V10 (per positive) and V01 (per negative), Sun and Xu's way."""
    m, n = len(positive), len(negative)
    both = np.concatenate([positive, negative])
    ranks = midranks(both)
    ranks_pos, ranks_neg = midranks(positive), midranks(negative)
    auc = (ranks[:m].sum() - m * (m + 1) / 2.0) / (m * n)
    v10 = (ranks[:m] - ranks_pos) / n
    v01 = 1.0 - (ranks[m:] - ranks_neg) / m
    return float(auc), v10, v01


class Auc(NamedTuple):
    """Two AUCs on the same rows and their DeLong covariance."""

    reference: float
    candidate: float
    var_reference: float
    var_candidate: float
    covariance: float


def delong_auc(positive: npt.NDArray[np.bool_], reference: FloatArray, candidate: FloatArray) -> Auc:
    """AUCs of two scores for the same rows (``positive`` says which rows are of the positive class)."""
    m, n = int(positive.sum()), int((~positive).sum())
    if m == 0 or n == 0:
        raise ValueError("ROC AUC needs rows of both classes")
    auc_r, v10_r, v01_r = _delong_components(reference[positive], reference[~positive])
    auc_c, v10_c, v01_c = _delong_components(candidate[positive], candidate[~positive])
    s10 = np.cov(np.vstack([v10_r, v10_c])) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.vstack([v01_r, v01_c])) if n > 1 else np.zeros((2, 2))
    cov = s10 / m + s01 / n
    return Auc(auc_r, auc_c, float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1]))


def delong(positive: npt.NDArray[np.bool_], reference: FloatArray, candidate: FloatArray, alpha: float) -> Paired:
    """The paired DeLong test of two AUCs: the difference with its normal interval and two-sided p-value."""
    a = delong_auc(positive, reference, candidate)
    return _normal_paired(
        len(positive), a.reference, a.candidate, a.var_reference + a.var_candidate - 2.0 * a.covariance, alpha,
        "DeLong (paired ROC AUC)",
    )  # fmt: skip


def delong_against(positive: npt.NDArray[np.bool_], candidate: FloatArray, level: float, alpha: float) -> Paired:
    """The candidate's AUC against a fixed level (0.5: a constant score), with DeLong's variance."""
    a = delong_auc(positive, candidate, candidate)
    return _normal_paired(len(positive), level, a.candidate, a.var_candidate, alpha, "DeLong (ROC AUC)")


def _normal_paired(rows: int, reference: float, candidate: float, variance: float, alpha: float, test: str) -> Paired:
    effect = candidate - reference
    se = math.sqrt(max(variance, 0.0))
    z = z_value(alpha)
    p_value = 2.0 * (1.0 - _normal().cdf(abs(effect) / se)) if se > 0.0 else float(effect == 0.0)
    return Paired(rows, reference, candidate, effect, effect - z * se, effect + z * se, min(1.0, p_value), test)


def bonferroni(alpha: float, comparisons: int) -> float:
    """Each of ``comparisons`` tests at ``alpha / comparisons``: together they err with at most ``alpha``."""
    return alpha / max(comparisons, 1)
