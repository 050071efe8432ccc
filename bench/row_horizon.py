"""The boundaries of a group-sequential McNemar test with horizons in labelled rows (bench/quality_row_horizon.py).

At labelled-row horizon ``n_j`` the test sees ``D_j`` (discordant pairs so far) and ``K_j`` (those favouring
stable). Under the null (a discordant pair favours stable with probability 1/2, independently of which rows
are discordant and of the order labels arrive in), given the whole sequence ``D_1 <= ... <= D_J`` the counts
``K_j`` are a random walk with Binomial(D_j - D_{j-1}, 1/2) steps. :func:`spend` computes, from ``D_1..D_j``
only, the boundary at horizon ``j`` so that the *conditional* probability of having rejected by ``j`` is at
most ``allowance[j]`` (the cumulative alpha spent by then); the last allowance is the test's size alpha. So
its size is at most alpha given every ``D`` sequence, hence unconditionally (and for every discordance rate
and every label delay that does not depend on the outcome), and ``1{rejected by t} / alpha`` is an e-process:
it is dominated by the test martingale ``P(rejects eventually | F_t) / alpha`` (and is nondecreasing with
limit of expectation at most 1, so its value at any stopping time has expectation at most 1).

A boundary at horizon ``j`` is a whole count ``c_j`` (reject when ``K_j >= c_j``) and, in the randomised
variant, a probability ``gamma_j`` of rejecting at ``K_j = c_j - 1`` chosen so the allowance is spent
exactly (the oracle's randomised test does the same); unspent allowance (discreteness) rolls forward.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats
from scipy.special import gammaln

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Boundary:
    """Reject at the horizon when ``K >= at_least``, or when ``K == at_least - 1`` with probability ``gamma``."""

    at_least: int
    gamma: float
    spent: float  # the conditional probability, under the null, of having rejected by this horizon


def spend(discordant: Sequence[int], allowance: Sequence[float], randomise: bool = False) -> list[Boundary]:
    """The boundaries at each horizon given the discordant pairs at each (nondecreasing) and the cumulative
    allowances (nondecreasing, the last one the size): each boundary depends only on the counts up to its
    horizon, so it can be computed when the horizon is passed."""
    if len(discordant) != len(allowance):
        raise ValueError("one allowance per horizon")
    steps, before = [], 0
    for d in discordant:
        if d < before:
            raise ValueError("the discordant pairs cannot decrease")
        steps.append(_binomial_step(d - before, 0.5)[1])
        before = d
    return spend_steps(steps, allowance, randomise)


def spend_steps(steps: Sequence[Array], allowance: Sequence[float], randomise: bool = False) -> list[Boundary]:
    """:func:`spend` for any null law of the increments of the count between horizons, given what the test
    conditions on (``steps[j]``: the pmf of the increment up to horizon ``j``, from 0): in shadow
    Binomial(new discordant pairs, 1/2); in an unpaired canary step the candidate's share of the new wrong
    labelled rows, hypergeometric given each track's new labelled rows and the new wrong ones."""
    if any(later < earlier for earlier, later in itertools.pairwise(allowance)):
        raise ValueError("the allowances are cumulative: they must not decrease")
    dist: Array = np.array([1.0])  # P(count = k, not rejected yet)
    spent, out = 0.0, []
    for step, limit in zip(steps, allowance, strict=True):
        if step.size > 1:
            dist = np.convolve(dist, step)
        tail = np.concatenate([np.cumsum(dist[::-1])[::-1], [0.0]])  # tail[c] = P(count >= c, not rejected)
        c = int(np.nonzero(spent + tail <= limit + 1e-15)[0][0])
        gamma = 0.0
        if randomise and c > 0 and dist[c - 1] > 0:
            gamma = float(min(max((limit - spent - tail[c]) / dist[c - 1], 0.0), 1.0))
        spent += float(tail[c]) + gamma * float(dist[c - 1] if c > 0 else 0.0)
        dist[c:] = 0.0
        if c > 0:
            dist[c - 1] *= 1.0 - gamma
        out.append(Boundary(c, gamma, spent))
    return out


def rejects(boundaries: Sequence[Boundary], against: Sequence[int], uniforms: Sequence[float]) -> int | None:
    """The first horizon (0-based) at which the test rejects, given the pairs favouring stable at each horizon
    and one uniform draw per horizon (the randomised boundary); None if none does."""
    for j, (b, k, u) in enumerate(zip(boundaries, against, uniforms, strict=True)):
        if k >= b.at_least or (k == b.at_least - 1 and u < b.gamma):
            return j
    return None


def brute_force_size(discordant: Sequence[int], allowance: Sequence[float], randomise: bool = False) -> float:
    """The test's conditional size given ``discordant`` by enumerating every way the discordant pairs can go
    (2 ** D_J fair coins): an independent check of :func:`spend`'s bookkeeping (small ``D_J`` only)."""
    bounds = spend(discordant, allowance, randomise)
    total = 0.0
    for coins in itertools.product((0, 1), repeat=discordant[-1]):
        alive = 1.0
        for b, d in zip(bounds, discordant, strict=True):
            k = sum(coins[:d])
            if k >= b.at_least:
                alive = 0.0
                break
            if k == b.at_least - 1:
                alive *= 1.0 - b.gamma
        total += (1.0 - alive) / 2 ** discordant[-1]
    return total


def _hypergeometric_window(rows: int, candidate: int, wrong: int, width: float) -> tuple[int, Array, float]:
    """The pmf of the candidate's share of ``wrong`` rows among ``rows``, ``candidate`` of them the candidate's
    (hypergeometric), on its mean +- ``width`` standard deviations only: (the lowest count kept, the pmf there,
    a bound on the mass left out). The pmf is log-concave, so each left-out tail is at most its first term over
    one minus the ratio of that term to the kept edge (the ratios of successive terms only shrink outwards)."""
    lo_full, hi_full = max(0, wrong - (rows - candidate)), min(candidate, wrong)
    if rows == 0 or wrong == 0:
        return 0, np.array([1.0]), 0.0
    p = candidate / rows
    mean = wrong * p
    sd = math.sqrt(wrong * p * (1 - p) * (rows - wrong) / max(rows - 1, 1))
    lo = max(lo_full, math.floor(mean - width * sd - 1))
    hi = min(hi_full, math.ceil(mean + width * sd + 1))
    ks = np.arange(lo - 1, hi + 2, dtype=np.float64)
    log_pmf = _log_choose(candidate, ks) + _log_choose(rows - candidate, wrong - ks) - float(_log_choose(rows, wrong))
    pmf: Array = np.exp(log_pmf)
    left_out = 0.0
    if lo > lo_full:  # the first term below, and the ratio of successive terms there (below 1)
        ratio = pmf[0] / pmf[1]
        left_out += float(pmf[0] / (1 - ratio)) if ratio < 1 else 1.0
    if hi < hi_full:
        ratio = pmf[-1] / pmf[-2]
        left_out += float(pmf[-1] / (1 - ratio)) if ratio < 1 else 1.0
    return lo, pmf[1:-1], left_out


def _log_choose(n: int, k: Array | int) -> Array:
    k_arr = np.asarray(k, dtype=np.float64)
    out: Array = np.where(
        (k_arr >= 0) & (k_arr <= n), gammaln(n + 1) - gammaln(k_arr + 1) - gammaln(n - k_arr + 1), -np.inf
    )
    return out


def spend_hypergeometric(
    rows: Sequence[int],
    candidate: Sequence[int],
    wrong: Sequence[int],
    allowance: Sequence[float],
    randomise: bool = False,
    width: float = 12.0,
) -> list[Boundary]:
    """:func:`spend_steps` for an unpaired canary given, at each horizon, the labelled rows, the candidate's
    labelled rows and the wrong labelled rows so far (each nondecreasing): the candidate's new wrong rows
    between horizons are hypergeometric under the null. Fast for large counts: each step's pmf is kept only
    within ``width`` standard deviations of its mean (the count is tracked with an offset), and a bound on
    the mass left out is counted as spent (as if every path through it rejected), so each ``spent`` is at
    least the conditional probability of having rejected by then, and within the allowance unless the mass
    left out alone exceeds it (then no count inside the window rejects; one in the right-hand tail left out
    still does, which the mass counted as spent covers; at 12 standard deviations it is below 1e-25)."""
    if not len(rows) == len(candidate) == len(wrong) == len(allowance):
        raise ValueError("one count of each kind and one allowance per horizon")
    dist: Array = np.array([1.0])  # P(count = offset + i, not rejected yet)
    offset, spent, out = 0, 0.0, []
    before = (0, 0, 0)
    for n, c, w, limit in zip(rows, candidate, wrong, allowance, strict=True):
        dn, dc, dw = n - before[0], c - before[1], w - before[2]
        if min(dn, dc, dw) < 0 or dc > dn or dw > dn:
            raise ValueError("the counts cannot decrease, nor the new candidate's or wrong rows exceed the new rows")
        before = (n, c, w)
        lo, step, left_out = _hypergeometric_window(dn, dc, dw, width)
        spent += left_out
        if step.size > 1:
            dist = np.convolve(dist, step)
        offset += lo
        tail = np.concatenate([np.cumsum(dist[::-1])[::-1], [0.0]])
        within = np.nonzero(spent + tail <= limit + 1e-15)[0]
        i = int(within[0]) if within.size else dist.size  # left-out mass over the allowance: no rejection
        gamma = 0.0
        if randomise and within.size and i > 0 and dist[i - 1] > 0:
            gamma = float(min(max((limit - spent - tail[i]) / dist[i - 1], 0.0), 1.0))
        spent += float(tail[i]) + gamma * float(dist[i - 1] if i > 0 else 0.0)
        dist[i:] = 0.0
        if i > 0:
            dist[i - 1] *= 1.0 - gamma
        out.append(Boundary(offset + i, gamma, spent))
    return out


def noncentral_step(rows: int, candidate: int, wrong: int, odds: float, width: float = 12.0) -> tuple[int, Array]:
    """The law of the candidate's share of ``wrong`` new rows among ``rows`` (``candidate`` of them the
    candidate's) when its odds of a wrong row are ``odds`` times stable's (Fisher's noncentral
    hypergeometric: the central pmf tilted by ``odds ** k``), on the central pmf's window (``width`` standard
    deviations of the null, renormalised): (the lowest count kept, the pmf there). The power of a canary
    design given each track's counts (``reject_by``); the tilt must stay well inside the window, which is not
    checked: a large effect in a late block leaves it (a review: canary -5 pp in the third block keeps 7.4e-7
    of the true mass), so the law is truncated there; the search's rows only use blocks up to their own
    horizon (a shift of 3.6-4.4 standard deviations), only the probes' -5 pp entries at later horizons (1.0
    either way) do not."""
    lo, pmf, _ = _hypergeometric_window(rows, candidate, wrong, width)
    if pmf.size == 1:
        return lo, pmf
    log_w = np.log(pmf) + math.log(odds) * np.arange(pmf.size)
    w: Array = np.exp(log_w - log_w.max())
    out: Array = w / w.sum()
    return lo, out


def reject_by(boundaries: Sequence[Boundary], steps: Sequence[tuple[int, Array]]) -> list[float]:
    """The probability of having rejected by each horizon when the count's increments between horizons have
    the laws ``steps`` (``(lowest value, pmf)`` each, independent given what the test conditions on), for the
    boundaries the test computed from those counts: the power given the counts (Rao-Blackwellised: averaged
    over draws of the counts it is the power at fixed labelled-row horizons). With the null's steps it is the
    test's conditional size by each horizon (``Boundary.spent``, up to the mass a window leaves out)."""
    dist: Array = np.array([1.0])  # P(count = offset + i, not rejected yet)
    offset, gone, out = 0, 0.0, []
    for b, (lo, step) in zip(boundaries, steps, strict=True):
        dist = np.convolve(dist, step) if step.size > 1 else dist * float(step[0])
        offset += lo
        i = min(max(b.at_least - offset, 0), dist.size)
        gone += float(dist[i:].sum())
        dist[i:] = 0.0
        if b.gamma and i > 0:
            gone += b.gamma * float(dist[i - 1])
            dist[i - 1] *= 1.0 - b.gamma
        out.append(gone)
    return out


@lru_cache(maxsize=65536)
def _binomial_step(trials: int, p: float) -> tuple[int, Array]:
    """Binomial(trials, p) from 0: cached, as the simulations ask for the same few step sizes millions of times
    (never mutated: :func:`spend_steps` and :func:`reject_by` convolve into new arrays)."""
    out: Array = stats.binom.pmf(np.arange(trials + 1), trials, p)
    return 0, out


def paired_power_given(discordant: Sequence[int], allowance: Sequence[float], against: float) -> list[float]:
    """The shadow test's probability of having rejected by each horizon given the discordant pairs there,
    when a discordant pair favours stable with probability ``against`` (the null: 1/2)."""
    before, steps = 0, []
    for d in discordant:
        steps.append(_binomial_step(d - before, against))
        before = d
    return reject_by(spend(discordant, allowance), steps)


def paired_first_power(rows: int, discordance: float, level: float, against: float) -> float:
    """The shadow test's power at its first horizon (``rows`` labelled rows, each discordant with probability
    ``discordance``), summed exactly over the discordant pairs there."""
    top = int(stats.binom.isf(1e-15, rows, discordance)) + 1
    d = np.arange(top + 1)
    at_least = np.array([spend([int(x)], [level])[0].at_least for x in d])
    return float(np.sum(stats.binom.pmf(d, rows, discordance) * stats.binom.sf(at_least - 1, d, against)))


def unpaired_power_given(
    rows: Sequence[int], candidate: Sequence[int], wrong: Sequence[int], allowance: Sequence[float], odds: float
) -> list[float]:
    """The canary test's probability of having rejected by each horizon given each track's labelled rows and
    the wrong ones there, when the candidate's odds of a wrong row are ``odds`` times stable's."""
    before, steps = (0, 0, 0), []
    for n, c, w in zip(rows, candidate, wrong, strict=True):
        steps.append(noncentral_step(n - before[0], c - before[1], w - before[2], odds))
        before = (n, c, w)
    return reject_by(spend_hypergeometric(rows, candidate, wrong, allowance), steps)


def best_per_kind(
    tried: list[dict[str, Any]], kinds: Sequence[str], keep: int
) -> tuple[dict[str, tuple[tuple[int, ...], tuple[float, ...]]], list[dict[str, Any]]]:
    """The design search's tail (``quality_row_horizon.search`` and the canary's): per kind, the tried design
    with the least ``{kind}_worst`` (its horizons and shares), and the ``keep`` best of each kind, labelled.
    ``tried`` is sorted in place kind after kind, as the benches did, so a tie keeps the previous kind's order
    (and the benches' chosen designs are unchanged)."""
    designs, top = {}, []
    for kind in kinds:
        tried.sort(key=lambda t: float(t[f"{kind}_worst"]))
        designs[kind] = (tuple(tried[0]["horizons"]), tuple(tried[0]["shares"]))
        top += [{"objective": kind, **t} for t in tried[:keep]]
    return designs, top
