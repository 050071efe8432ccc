"""How close can a mixture e-process come to the oracle on the accuracy rows? The limit behind issue #14's 1.5x.

The rows of ``quality_power.py`` where the best fixed-sample test (the oracle) reaches 90 % power within 20
looks: shadow (paired) -1, -2 and -5 pp, canary (unpaired, 10 %) -2 pp (the oracle at look 20, so simulated
here for 40 looks) and -5 pp, labels at once (a label delay
shifts every test's rows alike: the same draws, later). Per row, the labelled rows each test needs for 90 %
power over the oracle's, at the resolution of ``quality_power.py`` (a tenth of a look, 180 labelled rows),
each test at the alpha share ``quality.harm`` gets (1.25 %):

- ``any mixture``: the likelihood ratio maximised over every alternative (the GLR) crossing the bar. A
  mixture e-value is an average of likelihood ratios, so it is at most their maximum: no prior, however
  chosen, fires sooner. A bound, not a test (it is not an e-process);
- ``tuned LR``: the likelihood ratio of the row's exact effect (an SPRT that knows the effect in advance),
  one test per row;
- ``best Beta``: the one Beta prior (``harm_prior``'s family: centre x1.2 to x4, spread 0.2 to 1.4 on the
  log odds ratio) with the smallest worst row, the same prior for every row (a test does not know the
  effect);
- ``best discrete``: weights on 12 likelihood ratios at log odds ratios 0.1 to 3.2 (a factor 1.37 apart),
  fitted to these draws for the smallest worst row (in sample, so optimistic on fresh draws), by a local
  search from a few starts (ours moved to the grid among them): the best found, not a proven optimum;
- ``ours``: ``grid_harm_log_e``, the mixture ``quality.harm`` reports (five ratios and a Beta share).

Usage: ``python bench/quality_mixture_limit.py [--runs N]``; writes
``bench/results/quality-mixture-limit.json`` and prints the table docs/analysis.md ("Quality") shows.
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special

from mlrollout.analysis.judge import split_alpha
from mlrollout.analysis.sequential import QUALITY_BETA_WEIGHT, QUALITY_LOG_ODDS_RATIOS, QUALITY_WEIGHTS, harm_prior
from quality_power import (
    ALPHA,
    DEFAULT_TESTS,
    _binomial_log_lr,
    _odds_shift,
    beta_log_e,
    by_sub_look,
    glr_log,
    grid_log_e,
    rows_at_power,
    simulate,
    true_share,
    umpu_power,
)
from sim_cli import simulation_main

RESULTS = Path(__file__).parent / "results" / "quality-mixture-limit.json"
ROWS = (("shadow", 0.01), ("shadow", 0.02), ("shadow", 0.05), ("canary", 0.02), ("canary", 0.05))
# looks simulated: past where every test reaches 90 % (canary -2 pp: the oracle needs 20, the most simulated)
LOOKS_NEEDED = {
    ("shadow", 0.01): 10,
    ("shadow", 0.02): 4,
    ("shadow", 0.05): 2,
    ("canary", 0.02): 40,
    ("canary", 0.05): 10,
}
GRID = np.geomspace(0.1, 3.2, 12)
BETA_CENTRES = (1.2, 1.35, 1.5, 1.7, 2.0, 2.5, 3.0, 4.0)
BETA_SPREADS = (0.2, 0.35, 0.5, 0.7, 1.0, 1.4)
CAP = 50.0  # log e-values are capped here before averaging: far past the bar, so crossings do not change

Array = npt.NDArray[np.float64]


def _beta_log_e(k: Array, n: Array, share: Array, prior_share: float, centre: float, spread: float) -> Array:
    """The Beta mixture e-process of ``harm_log_e`` with one fixed prior (``harm_prior`` at ``prior_share``)."""
    a, b = harm_prior(prior_share, centre, spread)
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = np.log(special.betaincc(a + k, b + n - k, share) / special.betaincc(a, b, share))
        out = special.betaln(a + k, b + n - k) - special.betaln(a, b) + tail
        out -= k * np.log(share) + (n - k) * np.log1p(-share)
    result: Array = np.where(n > 0, np.nan_to_num(out, nan=0.0), 0.0)
    return result


def _fit_weights(lrs: list[Array], oracle: list[float], bar: float, rng: np.random.Generator) -> tuple[Array, float]:
    """Weights on ``GRID`` minimising the worst row's ratio: random restarts, then multiplicative coordinate
    steps (the objective is a step function of the weights: no gradient)."""

    def worst(w: Array) -> float:
        ratios = []
        for x, o in zip(lrs, oracle, strict=True):
            log_e = np.log(np.maximum(np.tensordot(w / w.sum(), x, axes=1), 1e-300))
            rows = rows_at_power(by_sub_look(log_e, bar), 0)
            ratios.append(rows / o if rows is not None else math.inf)
        return max(ratios)

    near_ours = np.full(GRID.size, 1e-3)  # ours' ratios at the nearest grid points (its Beta share spread evenly)
    for lr, weight in zip(QUALITY_LOG_ODDS_RATIOS, QUALITY_WEIGHTS, strict=True):
        near_ours[np.argmin(np.abs(np.log(GRID / lr)))] += weight
    near_ours += QUALITY_BETA_WEIGHT / GRID.size
    starts = [near_ours, np.ones(GRID.size), 1 / np.arange(1, GRID.size + 1)]
    starts += [rng.dirichlet(np.ones(GRID.size)) for _ in range(4)]
    best_w, best = starts[0], worst(starts[0])
    for w in starts[1:]:
        v = worst(w)
        if v < best:
            best_w, best = w, v
    step = 2.0
    while step > 1.05:
        improved = False
        for j, factor in itertools.product(range(GRID.size), (step, 1 / step)):
            w = best_w.copy()
            w[j] *= factor
            v = worst(w)
            if v < best - 1e-9:
                best_w, best, improved = w, v, True
        if not improved:
            step = math.sqrt(step)
    return best_w / best_w.sum(), best


def run(runs: int, seed: int) -> list[dict[str, Any]]:
    alpha = split_alpha(ALPHA, DEFAULT_TESTS)["quality.harm"]
    bar = math.log(1 / alpha)
    draws = []
    for design, effect in ROWS:
        rng = np.random.default_rng([seed, 31, len(design), int(effect * 1e4)])
        k, n, share = simulate(design, effect, 0, runs, rng, LOOKS_NEEDED[design, effect])
        draws.append((design, effect, k, n, share))
    rows: list[dict[str, Any]] = []
    oracle, lrs = [], []
    for design, effect, k, n, share in draws:
        o = rows_at_power(umpu_power(k, n, share, alpha), 0)
        assert o is not None, (design, effect)
        oracle.append(o)
        lrs.append(np.stack([np.exp(np.minimum(_binomial_log_lr(k, n, share, _odds_shift(share, lr)), CAP))
                             for lr in GRID]))  # fmt: skip
        tuned = rows_at_power(by_sub_look(_binomial_log_lr(k, n, share, true_share(design, effect, share)), bar), 0)
        ours = grid_log_e(k, n, share, beta_log_e(k, n, share))
        rows.append({
            "design": design, "effect_pp": -effect * 100, "alpha": alpha, "runs": runs, "oracle_rows_90": o,
            "any_mixture": (rows_at_power(by_sub_look(glr_log(k, n, share), bar), 0) or math.inf) / o,
            "tuned_lr": (tuned or math.inf) / o,
            "ours": (rows_at_power(by_sub_look(ours, bar), 0) or math.inf) / o,
        })  # fmt: skip
    best_beta: tuple[float, float, float, list[float]] = (math.inf, 0.0, 0.0, [])
    for centre, spread in itertools.product(BETA_CENTRES, BETA_SPREADS):
        ratios = []
        for (design, _, k, n, share), o in zip(draws, oracle, strict=True):
            log_e = _beta_log_e(k, n, share, 0.5 if design == "shadow" else 0.1, centre, spread)
            ratios.append((rows_at_power(by_sub_look(log_e, bar), 0) or math.inf) / o)
        if max(ratios) < best_beta[0] or not best_beta[3]:
            best_beta = (max(ratios), centre, spread, ratios)
    weights, _ = _fit_weights(lrs, oracle, bar, np.random.default_rng([seed, 32]))
    for row, x, o, beta in zip(rows, lrs, oracle, best_beta[3], strict=True):
        log_e = np.log(np.maximum(np.tensordot(weights, x, axes=1), 1e-300))
        row["best_beta"] = beta
        row["best_beta_prior"] = {"centre": best_beta[1], "spread": best_beta[2]}
        row["best_discrete"] = (rows_at_power(by_sub_look(log_e, bar), 0) or math.inf) / o
        row["best_discrete_weights"] = dict(zip((f"{g:.3g}" for g in GRID), weights.round(4).tolist(), strict=True))
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| row | oracle's labelled rows | any mixture (GLR bound) | tuned LR (knows the effect) | best Beta prior | "
        "best discrete prior (fitted) | ours |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['design']} {r['effect_pp']:+.0f} pp | {r['oracle_rows_90']:.0f} | {r['any_mixture']:.2f}x | "
            f"{r['tuned_lr']:.2f}x | {r['best_beta']:.2f}x | {r['best_discrete']:.2f}x | {r['ours']:.2f}x |"
        )
    worst = {f: max(r[f] for r in rows) for f in ("any_mixture", "tuned_lr", "best_beta", "best_discrete", "ours")}
    lines.append("| worst row | | " + " | ".join(f"{v:.2f}x" for v in worst.values()) + " |")
    prior = rows[0]["best_beta_prior"]
    lines.append(f"\nbest Beta prior: centre x{prior['centre']}, spread {prior['spread']}; "
                 f"best discrete weights: {rows[0]['best_discrete_weights']}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return simulation_main(__doc__, run, table, RESULTS, 1000, argv)


if __name__ == "__main__":
    sys.exit(main())
