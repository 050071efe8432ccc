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
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

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
        steps.append(stats.binom.pmf(np.arange(d - before + 1), d - before, 0.5))
        before = d
    return spend_steps(steps, allowance, randomise)


def spend_steps(steps: Sequence[Array], allowance: Sequence[float], randomise: bool = False) -> list[Boundary]:
    """:func:`spend` for any null law of the increments of the count between horizons, given what the test
    conditions on (``steps[j]``: the pmf of the increment up to horizon ``j``, from 0): in shadow
    Binomial(new discordant pairs, 1/2); in an unpaired canary step the candidate's share of the new wrong
    labelled rows, hypergeometric given each track's new labelled rows and the new wrong ones."""
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
