"""Stateful e-processes for the paired accuracy harm test (sequential McNemar): candidates measured against
the fixed mixture ``quality.harm`` runs (issue #14's 1.5x goal), in ``quality_mixture_limit.py``.

Both act on the discordant pairs of a shadow step, ``k`` of ``n`` favouring stable, and both are test
supermartingales for the whole null "a discordant pair favours stable with probability at most 1/2", given
the order in which the pairs arrive in batches (the looks) is independent of which way each one goes (labels
arrive independently of the outcome, as the stateless test also assumes). Neither is a function of the
current counts alone: each keeps state from look to look (what, below).

- :func:`plugin_log_e`: the predictable plug-in likelihood ratio (Waudby-Smith & Ramdas 2023, betting, for a
  Bernoulli mean): the batch of pairs between two state updates is weighed with the likelihood ratio of a
  share ``theta`` fixed at the batch's start from the counts before it (shrunk towards ``theta0`` with
  ``prior`` pseudo-pairs, clipped to ``[1/2, cap]``). As a bet: wealth ``1 + lam (x - 1/2)`` per pair with
  ``lam = 4 (theta - 1/2)`` in ``[0, 4 (cap - 1/2)]``, the clipped bet. Each factor has expectation
  ``p theta / (1/2) + (1 - p)(1 - theta) / (1/2) <= 1`` for ``p <= 1/2`` since ``theta >= 1/2``, and
  ``theta`` is known before the batch: a test supermartingale. State: the log e-value and the counts at the
  last update (three numbers), or every look's counts to recompute it.
- :class:`GroupSequential`: the conditional rejection probability of a group-sequential binomial test with
  horizons fixed in advance in discordant pairs ``N_1 < ... < N_J`` (reject at ``N_j`` when ``K >= c_j``, the
  ``c_j`` at one nominal level chosen so the whole design's size under ``p = 1/2`` is at most alpha): ``M_n
  = P(the design rejects | K_n) / size``, a martingale at ``p = 1/2`` and a supermartingale below (rejection
  is monotone in the pairs favouring stable), reaching ``1/size >= 1/alpha`` exactly when the design
  rejects. A look whose batch of pairs crosses a horizon does not say ``K`` at the horizon: the process takes
  the expectation over the batch's order (uniform given its counts under the null: exchangeable), a
  conditional expectation of the fine martingale given coarser information, so still a supermartingale
  (tower property). State: the probability ``rho`` that a horizon already rejected (over the unseen
  orders), and the counts at the last look.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from scipy import optimize, stats

Array = npt.NDArray[np.float64]


def plugin_log_e(k: Array, n: Array, every: int, theta0: float, prior: float, cap: float) -> Array:
    """The predictable plug-in log e-process per run (rows) and sub-look (columns) of cumulative counts,
    its state updated every ``every`` sub-looks (1: every sub-look; ``quality_power.SUB``: once a look, as the
    operator would)."""
    runs, horizon = k.shape
    out = np.zeros((runs, horizon))
    log_e, k0, n0 = np.zeros(runs), np.zeros(runs), np.zeros(runs)
    theta = np.full(runs, theta0)
    for s in range(horizon):
        dk, dn = k[:, s] - k0, n[:, s] - n0
        out[:, s] = log_e + dk * np.log(2 * theta) + (dn - dk) * np.log(2 * (1 - theta))
        if (s + 1) % every == 0:
            log_e, k0, n0 = out[:, s].copy(), k[:, s].copy(), n[:, s].copy()
            theta = np.clip((k0 + prior * theta0) / (n0 + prior), 0.5, cap)
    return out


@lru_cache(maxsize=4096)
def _pmf(d: int) -> Array:
    out: Array = stats.binom.pmf(np.arange(d + 1), d, 0.5)
    return out


class GroupSequential:
    """The group-sequential binomial test at ``horizons`` (discordant pairs) and size at most ``alpha``, as
    an e-process (module docstring)."""

    def __init__(self, horizons: list[int], alpha: float) -> None:
        self.horizons = sorted({int(h) for h in horizons})
        nominal = float(optimize.brentq(lambda a: self._size(a) - alpha, alpha / len(self.horizons) / 3, alpha))
        while self._size(nominal) > alpha:  # the size is a step function: land below alpha, never above
            nominal *= 0.999
        self.nominal = nominal
        self.bounds = self._bounds(nominal)
        self.size = self._size(nominal)
        # G[j][k]: P(reject at horizon j or later | K at horizon j is k), the check at j included
        later: list[Array] = []
        for j in range(len(self.horizons) - 1, -1, -1):
            g = np.zeros(self.horizons[j] + 1)
            if later:
                step = _pmf(self.horizons[j + 1] - self.horizons[j])
                g = np.convolve(later[0], step[::-1], mode="valid")[: self.horizons[j] + 1]
            g[self.bounds[j] :] = 1.0
            later.insert(0, g)
        self.reject_from = later
        self._future: dict[tuple[int, int], float] = {}

    def _bounds(self, nominal: float) -> list[int]:
        return [int(stats.binom.isf(nominal, h, 0.5)) + 1 for h in self.horizons]

    def _size(self, nominal: float) -> float:
        dist, before, size = np.array([1.0]), 0, 0.0
        for h, c in zip(self.horizons, self._bounds(nominal), strict=True):
            dist, before = np.convolve(dist, _pmf(h - before)), h
            size += float(dist[c:].sum())
            dist[c:] = 0.0
        return size

    def future(self, n: int, k: int) -> float:
        """P(a horizon after ``n`` rejects | K_n = k)."""
        key = (n, k)
        if key not in self._future:
            j = next((i for i, h in enumerate(self.horizons) if h > n), None)
            if j is None:
                self._future[key] = 0.0
            else:
                p = _pmf(self.horizons[j] - n)
                self._future[key] = float(p @ self.reject_from[j][k : k + p.size])
        return self._future[key]

    def batch_rejects(self, n0: int, k0: int, n1: int, k1: int) -> float:
        """P, over the batch's order (uniform given its counts), that a horizon in ``(n0, n1]`` rejects."""
        inside = [(h, c) for h, c in zip(self.horizons, self.bounds, strict=True) if n0 < h <= n1]
        size, wins = n1 - n0, k1 - k0
        mass = np.zeros(wins + 1)  # over the batch's pairs favouring stable among those placed so far
        mass[0], at, rejected = 1.0, 0, 0.0
        u = np.arange(wins + 1)[:, None]
        for h, c in inside:
            draw = h - n0 - at
            m = np.arange(draw + 1)[None, :]
            q = mass[:, None] * stats.hypergeom.pmf(m, size - at, wins - u, draw)  # zero where impossible
            q = np.nan_to_num(q)
            fires = k0 + u + m >= c
            rejected += float(q[fires].sum())
            q[fires] = 0.0
            total = u + m
            mass = np.bincount(total.ravel(), weights=q.ravel(), minlength=wins + 1)[: wins + 1].astype(np.float64)
            at = h - n0
        return rejected

    def log_e(self, k: Array, n: Array, every: int) -> Array:
        """The log e-process per run and sub-look, its state updated every ``every`` sub-looks."""
        runs, horizon = k.shape
        out = np.zeros((runs, horizon))
        for r in range(runs):
            alive, n0, k0 = 1.0, 0, 0  # alive: P(no horizon rejected yet), over the unseen orders
            for s in range(horizon):
                n1, k1 = int(n[r, s]), int(k[r, s])
                now = alive * (1.0 - self.batch_rejects(n0, k0, n1, k1)) if n1 > n0 else alive
                out[r, s] = math.log(max((1.0 - now + now * self.future(n1, k1)) / self.size, 1e-300))
                if (s + 1) % every == 0:
                    alive, n0, k0 = now, n1, k1
        return out


def check_martingale(test: GroupSequential, rng: np.random.Generator, cases: int = 40) -> None:
    """:class:`GroupSequential`'s value at ``(n, k)`` equals its expectation after a batch of ``d`` pairs at
    ``p = 1/2`` (each pair's way a fair coin, the batch's horizons averaged over its order): the martingale
    property its validity rests on, checked exactly on random states and batches up to 150 pairs."""
    for _ in range(cases):
        n = int(rng.integers(0, test.horizons[-1]))
        k = int(rng.binomial(n, 0.5))
        d = int(rng.integers(1, 150))
        now = test.future(n, k)
        after = sum(
            p * (1.0 - (1.0 - test.batch_rejects(n, k, n + d, k + m)) * (1.0 - test.future(n + d, k + m)))
            for m, p in enumerate(_pmf(d))
        )
        assert math.isclose(now, after, rel_tol=1e-6, abs_tol=1e-9), (n, k, d, now, after)
