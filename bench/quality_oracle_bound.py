"""Is "within 1.5x the oracle's labelled rows" reachable by an anytime-valid test on issue #14's quality rows?

The question (issue #14): A/A at most alpha over any number of looks, and -1, -2 and -5 pp (90 % base
accuracy) caught with 90 % power within 1.5x the labelled rows of the best fixed-sample test run once (the
"oracle"), in a shadow step (paired: discordant pairs) and a 10 % canary (unpaired: wrong labelled rows).

A lower bound would settle it if it exceeded 1.5x. The known-effect likelihood ratio (an SPRT told the
effect) is *not* such a bound: it is log-optimal (fastest expected growth of the e-value), not the test
with the smallest 90 % quantile of rows, and a likelihood ratio tilted less than the effect crosses sooner.
The only general bound is the oracle itself: whatever a sequential test has rejected by ``m`` rows is a
fixed-sample test at ``m`` rows of size at most alpha, so by Neyman-Pearson its power at ``m`` is at most
the oracle's (1.0x). And that bound is attained, one row at a time, by an e-process: the oracle's
conditional rejection probability given the data so far, over alpha, is a test martingale that reaches
1/alpha exactly when the oracle rejects. For several rows at once, a group-sequential test with one horizon
per row (its size alpha split over the horizons, the boundaries at one nominal level) is an e-process the
same way (``quality_stateful.GroupSequential``): the rows cost it its nominal level instead of alpha, about
``((z_nominal + z_0.9) / (z_alpha + z_0.9))^2``. So no proof of impossibility exists; the bench measures
what is reachable instead:

- **exact** (``exact_rows``, no simulation): per row in the events the test counts (discordant pairs in
  shadow, null share 1/2; wrong labelled rows in the canary, null share 0.1, the configured weight), the
  oracle's events at 90 % power (randomised one-sided binomial test, interpolated), the known-effect
  likelihood ratio's 90 % quantile of events (its first passage, by dynamic programming), the best single
  likelihood ratio at any tilt, and the group-sequential test with one horizon per row of its design
  (``horizons``), each as a ratio to the oracle; and the same group-sequential test on effects between
  the rows (0.25 pp apart), which it was not fitted to;
- **simulated** (``simulated_rows``, shadow): the group-sequential test with the exact design's horizons on
  ``quality_power.py``'s draws (labelled rows at a tenth of a look, labels at once and 5 looks late, the
  same streams as its table and ``decision_quality.py``'s), its state updated once a look, every tenth of
  a look, and with the counts at each horizon known (``_ordered``: what a gateway recording them would
  give), alone and averaged with ``quality.harm``'s
  mixture (the group-sequential part at ``GS_WEIGHT`` of alpha: the average fires when either part would
  at its share, and the mixture keeps power one beyond the last horizon), with A/A over 60 looks (labels
  at once, 5 looks late, and each 0 to 5 looks late at random).

Usage: ``python bench/quality_oracle_bound.py [--runs N]``; writes ``bench/results/quality-oracle-bound.json``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import signal, stats

from mlrollout.analysis.judge import split_alpha
from quality_mixture_limit import _random_delays
from quality_power import (
    ALPHA,
    BASE,
    CANARY_SHARE,
    DEFAULT_TESTS,
    DISAGREE,
    accuracy_rng,
    beta_log_e,
    by_sub_look,
    grid_log_e,
    mixture_of,
    rows_at_power,
    simulate,
    umpu_power,
)
from quality_stateful import GroupSequential
from sim_cli import simulation_main

RESULTS = Path(__file__).parent / "results" / "quality-oracle-bound.json"
EFFECTS = (0.01, 0.02, 0.05)
BETWEEN = tuple(round(0.01 + 0.0025 * i, 4) for i in range(17) if round(0.01 + 0.0025 * i, 4) not in EFFECTS)
POWER = 0.9
HORIZON_POWER = 0.92
"""The power the group-sequential design is given at each row's horizon: above 0.9, since it stops learning
after its last horizon and a simulated power of exactly 0.9 would miss 90 % in half the draws."""
GS_WEIGHT = 0.8
"""The group-sequential part's share of alpha when averaged with the mixture (the rest: the mixture)."""
Array = npt.NDArray[np.float64]


def null_share(design: str) -> float:
    return 0.5 if design == "shadow" else CANARY_SHARE


def alt_share(design: str, effect: float) -> float:
    """The share of events against the candidate under the row's effect (``quality_power.true_share``, with
    the canary's share at its configured weight)."""
    if design == "shadow":
        return (DISAGREE + effect) / 2 / DISAGREE
    c, s = CANARY_SHARE * (1 - BASE + effect), (1 - CANARY_SHARE) * (1 - BASE)
    return c / (c + s)


def events_per_labelled_row(design: str, effect: float) -> float:
    if design == "shadow":
        return DISAGREE
    return CANARY_SHARE * (1 - BASE + effect) + (1 - CANARY_SHARE) * (1 - BASE)


def randomised_power(m: npt.ArrayLike, p0: float, p1: float, alpha: float) -> npt.NDArray[np.float64]:
    """The power under ``p1`` of the randomised one-sided binomial test of ``p0`` at level alpha (exact size)
    on ``m`` events (an array of event counts, or one)."""
    m = np.asarray(m)
    c = stats.binom.isf(alpha, m, p0)
    above, at = stats.binom.sf(c, m, p0), stats.binom.pmf(c, m, p0)
    gamma = np.where(at > 0, (alpha - above) / np.where(at > 0, at, 1.0), 0.0)
    out: npt.NDArray[np.float64] = stats.binom.sf(c, m, p1) + gamma * stats.binom.pmf(c, m, p1)
    return out


def oracle_events(p0: float, p1: float, alpha: float) -> float:
    """Events at which the randomised one-sided binomial test of ``p0`` at level alpha first has power
    ``POWER`` under ``p1``, linear between whole counts."""

    def power(m: int) -> float:
        return float(randomised_power(m, p0, p1, alpha))

    lo, hi = 1, 2
    while power(hi) < POWER:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if power(mid) < POWER else (lo, mid)
    # power is not monotone in m for a discrete test; take the first crossing from below, interpolated
    m = hi
    while m > 1 and power(m - 1) >= POWER:
        m -= 1
    before, after = power(m - 1), power(m)
    return m - 1 + (POWER - before) / (after - before)


def lr_quantile_events(p0: float, p1: float, theta: float, alpha: float, limit: int) -> float | None:
    """The events by which the likelihood ratio of ``theta`` against ``p0`` has crossed 1/alpha with
    probability ``POWER`` under ``p1`` (exact first passage over whole events; the paths' distribution is kept
    on a window of counts, dropping tails below 1e-14), None beyond ``limit``."""
    a, b = math.log(theta / p0), math.log((1 - theta) / (1 - p0))
    bar = math.log(1 / alpha)
    alive, low = np.array([1.0]), 0  # alive[i]: P(not crossed, k = low + i)
    stopped = 0.0
    for m in range(1, limit + 1):
        alive = np.concatenate([alive * (1 - p1), [0.0]]) + np.concatenate([[0.0], alive * p1])
        k = low + np.arange(alive.size)
        crossed = k * a + (m - k) * b >= bar
        gained = float(alive[crossed].sum())
        alive[crossed] = 0.0
        if stopped + gained >= POWER:
            return m - 1 + (POWER - stopped) / gained if gained > 0 else float(m)
        stopped += gained
        keep = np.nonzero(alive > 1e-14)[0]
        if keep.size:
            alive, low = alive[keep[0] : keep[-1] + 1], low + int(keep[0])
    return None


def best_single_lr(p0: float, p1: float, alpha: float, limit: int) -> tuple[float, float]:
    """The smallest 90 % quantile of events of one likelihood ratio over its alternative share (golden
    section over the share between p0 and 1.3 times the effect), and that share."""

    def cost(theta: float) -> float:
        return lr_quantile_events(p0, p1, theta, alpha, limit) or math.inf

    lo, hi = p0 + (p1 - p0) * 0.25, min(p0 + (p1 - p0) * 1.3, 0.999)
    g = (math.sqrt(5) - 1) / 2
    x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
    f1, f2 = cost(x1), cost(x2)
    for _ in range(12):
        if f1 <= f2:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - g * (hi - lo)
            f1 = cost(x1)
        else:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + g * (hi - lo)
            f2 = cost(x2)
    return (f1, x1) if f1 <= f2 else (f2, x2)


def _pmf(d: int, p: float) -> Array:
    out: Array = stats.binom.pmf(np.arange(d + 1), d, p)
    return out


def gs_reject_by(horizons: list[int], bounds: list[int], p: float) -> list[float]:
    """P(the group-sequential design has rejected by each horizon) when each event is against w.p. ``p``."""
    dist, before, total, out = np.array([1.0]), 0, 0.0, []
    for h, c in zip(horizons, bounds, strict=True):
        dist, before = signal.fftconvolve(dist, _pmf(h - before, p)).clip(0.0), h
        total += float(dist[c:].sum())
        dist[c:] = 0.0
        out.append(total)
    return out


def gs_design(horizons: list[int], p0: float, alpha: float) -> tuple[list[int], float]:
    """The boundaries at the one nominal level that keeps the design's size at most alpha, and that level."""

    def bounds(nominal: float) -> list[int]:
        return [int(stats.binom.isf(nominal, h, p0)) + 1 for h in horizons]

    lo, hi = alpha / len(horizons) / 2, alpha
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if gs_reject_by(horizons, bounds(mid), p0)[-1] <= alpha else (lo, mid)
    return bounds(lo), lo


def fixed_events(p0: float, p1: float, level: float, power: float = POWER) -> int:
    """The fewest events at which the non-randomised one-sided binomial test at ``level`` has ``power``."""
    m = 1
    while stats.binom.sf(int(stats.binom.isf(level, m, p0)), m, p1) < power:
        m = int(m * 1.02) + 1
    while m > 1 and stats.binom.sf(int(stats.binom.isf(level, m - 1, p0)), m - 1, p1) >= power:
        m -= 1
    return m


def horizons_for(design: str, alpha: float) -> tuple[list[int], list[int], float]:
    """One horizon per row of the design: each where a fixed test at the design's nominal level reaches
    ``HORIZON_POWER`` on its row (iterated until the horizons and the nominal level agree), then each moved up
    until the design itself has that power there (a discrete test's power is not monotone in the events)."""
    p0, level = null_share(design), alpha
    horizons: list[int] = []
    for _ in range(20):
        new = sorted({fixed_events(p0, alt_share(design, e), level, HORIZON_POWER) for e in EFFECTS})
        if new == horizons:
            break
        horizons = new
        _, level = gs_design(horizons, p0, alpha)
    bounds, level = gs_design(horizons, p0, alpha)
    for _ in range(200):
        short = [
            j for j, e in enumerate(sorted(EFFECTS, reverse=True))
            if gs_reject_by(horizons, bounds, alt_share(design, e))[j] < HORIZON_POWER
        ]  # fmt: skip
        if not short:
            break
        for j in short:
            horizons[j] = int(horizons[j] * 1.01) + 1
        bounds, level = gs_design(horizons, p0, alpha)
    return horizons, bounds, level


def geometric_designs(design: str, alpha: float, effects: tuple[float, ...]) -> list[dict[str, Any]]:
    """Group-sequential designs with ``j`` horizons a constant factor apart, from the -5 pp row's horizon to
    the -1 pp row's, at the nominal level that keeps the size at most alpha: the worst ratio to the oracle
    over ``effects``, fitted and between (no design is fitted to an effect here)."""
    p0 = null_share(design)
    oracle = {e: oracle_events(p0, alt_share(design, e), alpha) for e in effects}
    first, last = (fixed_events(p0, alt_share(design, e), alpha / 4) for e in (max(EFFECTS), min(EFFECTS)))
    out = []
    for j in range(3, 17):
        horizons = sorted({round(float(h)) for h in np.geomspace(first, last, j)})
        bounds, level = gs_design(horizons, p0, alpha)
        for _ in range(3):  # the last horizon where the -1 pp row reaches 90 % at the design's level
            end = fixed_events(p0, alt_share(design, min(EFFECTS)), level)
            horizons = sorted({round(float(h)) for h in np.geomspace(first, end, j)})
            bounds, level = gs_design(horizons, p0, alpha)
        ratios = {e: (gs_events(horizons, bounds, alt_share(design, e)) or math.inf) / oracle[e] for e in effects}
        out.append({"design": design, "geometric_horizons": len(horizons), "horizons": horizons, "nominal": level,
                    "worst_ratio": max(ratios.values()),
                    "worst_fitted_row_ratio": max(r for e, r in ratios.items() if e in EFFECTS),
                    "ratios": {f"{-e * 100:+.2f}": r for e, r in ratios.items()}})  # fmt: skip
    return out


def gs_events(horizons: list[int], bounds: list[int], p1: float) -> float | None:
    """The events at which the design's power by then first reaches POWER (a horizon: it rejects nowhere
    else); None if it never does."""
    for h, by in zip(horizons, gs_reject_by(horizons, bounds, p1), strict=True):
        if by >= POWER:
            return float(h)
    return None


def exact_rows(alpha: float) -> list[dict[str, Any]]:
    rows = []
    for design in ("shadow", "canary"):
        p0 = null_share(design)
        horizons, bounds, level = horizons_for(design, alpha)
        for effect in EFFECTS + BETWEEN:
            p1 = alt_share(design, effect)
            oracle = oracle_events(p0, p1, alpha)
            limit = int(oracle * 4) + 10
            fitted = effect in EFFECTS
            known = lr_quantile_events(p0, p1, p1, alpha, limit) if fitted else None
            best_tilt = best_single_lr(p0, p1, alpha, limit) if fitted else None
            gs = gs_events(horizons, bounds, p1)
            row: dict[str, Any] = {
                "design": design, "effect_pp": -effect * 100, "fitted_row": fitted, "alpha": alpha,
                "null_share": p0, "alt_share": p1, "events_per_labelled_row": events_per_labelled_row(design, effect),
                "oracle_events_90": oracle,
                "oracle_labelled_rows_90": oracle / events_per_labelled_row(design, effect),
                "known_effect_lr_ratio": known / oracle if known else None,
                "group_sequential_ratio": gs / oracle if gs else None,
                "group_sequential": {"horizons": horizons, "bounds": bounds, "nominal": level},
            }  # fmt: skip
            if best_tilt is not None:
                row["best_single_lr_ratio"] = best_tilt[0] / oracle
                row["best_single_lr_share"] = best_tilt[1]
            rows.append(row)
        rows += geometric_designs(design, alpha, EFFECTS + BETWEEN)
    return rows


def ordered_log_e(gs: GroupSequential, k: Array, n: Array, rng: np.random.Generator) -> Array:
    """The group-sequential e-process when the pairs favouring stable are known at the moment the pair count
    passes each horizon (what a gateway recording them would give): per run and sub-look, 1/size once a
    horizon rejected, else ``P(a later horizon rejects | K_n) / size``. The count at a horizon inside a
    sub-look is drawn from the sub-look's counts in a uniformly random order (hypergeometric): the order in
    which the simulated pairs of a sub-look arrive, which are independent and alike given the counts."""
    runs, horizon = k.shape
    out = np.zeros((runs, horizon))
    top = math.log(1 / gs.size)
    for r in range(runs):
        n0, k0, rejected = 0, 0, False
        for s in range(horizon):
            n1, k1 = int(n[r, s]), int(k[r, s])
            if not rejected:
                for h, c in zip(gs.horizons, gs.bounds, strict=True):
                    if n0 < h <= n1:
                        k_h = k0 + int(rng.hypergeometric(k1 - k0, (n1 - n0) - (k1 - k0), h - n0))
                        n0, k0 = h, k_h
                        if k_h >= c:
                            rejected = True
                            break
                n0, k0 = (n1, k1) if not rejected else (n0, k0)
            out[r, s] = top if rejected else math.log(max(gs.future(n1, k1) / gs.size, 1e-300))
    return out


def _stateful(
    k: Array, n: Array, ours: Array, alone: GroupSequential, part: GroupSequential, rng: np.random.Generator
) -> dict[str, Array]:
    """The group-sequential test alone and averaged with ours, its state updated once a look (the operator's
    cadence), every tenth of a look (``_sub_look``), and with the counts at each horizon known
    (``_ordered``: :func:`ordered_log_e`)."""
    out = {}
    for suffix, every in (("", 10), ("_sub_look", 1)):
        out[f"group_sequential{suffix}"] = alone.log_e(k, n, every)
        out[f"group_sequential_and_ours{suffix}"] = np.logaddexp(
            math.log(GS_WEIGHT) + part.log_e(k, n, every), math.log(1 - GS_WEIGHT) + ours
        )
    out["group_sequential_ordered"] = ordered_log_e(alone, k, n, rng)
    out["group_sequential_and_ours_ordered"] = np.logaddexp(
        math.log(GS_WEIGHT) + ordered_log_e(part, k, n, rng), math.log(1 - GS_WEIGHT) + ours
    )
    return out


def simulated_rows(runs: int, seed: int, alpha: float, horizons: list[int]) -> list[dict[str, Any]]:
    """The group-sequential test (the exact shadow design's horizons, its size calibrated again by
    ``GroupSequential`` at alpha, state updated once a look) on ``quality_power.py``'s shadow draws."""
    bar = math.log(1 / alpha)
    alone, part = GroupSequential(horizons, alpha), GroupSequential(horizons, GS_WEIGHT * alpha)
    order = np.random.default_rng([seed, 43])  # the orders within sub-looks, for the ``_ordered`` tests
    rows = []
    for delay in (0, 5):
        for effect in EFFECTS:
            looks = delay + {0.01: 12, 0.02: 5, 0.05: 2}[effect]
            k, n, share = simulate("shadow", effect, delay, runs, accuracy_rng(seed, "shadow", delay, effect), looks)
            lag = delay * 10
            oracle = rows_at_power(umpu_power(k, n, share, alpha), lag)
            ours = grid_log_e(k, n, share, beta_log_e(k, n, share), mixture_of("shadow"))
            row: dict[str, Any] = {"design": "shadow", "delay_looks": delay, "effect_pp": -effect * 100,
                                   "runs": runs, "looks_simulated": looks, "oracle_rows_90": oracle}  # fmt: skip
            for name, log_e in {"ours": ours, **_stateful(k, n, ours, alone, part, order)}.items():
                r = rows_at_power(by_sub_look(log_e, bar), lag)
                row[name] = r / oracle if r is not None and oracle else None
            rows.append(row)
    null_delays: tuple[int | str, ...] = (0, 5, "0-5")
    for null_delay in null_delays:
        looks = 60
        if isinstance(null_delay, str):
            k, n, share = _random_delays(runs, np.random.default_rng([seed, 41]), looks)
        else:
            k, n, share = simulate(
                "shadow", 0.0, int(null_delay), runs, np.random.default_rng([seed, 42, int(null_delay)]), looks
            )
        ours = grid_log_e(k, n, share, beta_log_e(k, n, share), mixture_of("shadow"))
        tests = {"ours": ours, **_stateful(k, n, ours, alone, part, order)}
        row = {
            "design": "shadow",
            "delay_looks": null_delay,
            "effect_pp": 0.0,
            "runs": runs,
            "null": True,
            "alpha": alpha,
        }
        at_looks = slice(9, None, 10)
        for name, log_e in tests.items():
            fired = log_e[:, at_looks] >= bar
            row[f"{name}_by_20"] = float(fired[:, :20].any(axis=1).mean())
            row[f"{name}_by_60"] = float(fired.any(axis=1).mean())
        rows.append(row)
    return rows


def run(runs: int, seed: int) -> list[dict[str, Any]]:
    alpha = split_alpha(ALPHA, DEFAULT_TESTS)["quality.harm"]
    exact = exact_rows(alpha)
    horizons = next(r["group_sequential"]["horizons"] for r in exact if r["design"] == "shadow")
    return exact + simulated_rows(runs, seed, alpha, horizons)


def _x(v: float | None) -> str:
    return f"{v:.2f}x" if v is not None else "-"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| design | effect | oracle's events (labelled rows) | known-effect LR | best single LR | group-sequential |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "oracle_events_90" not in r:
            continue
        fitted = "" if r["fitted_row"] else " (between)"
        lines.append(
            f"| {r['design']} | {r['effect_pp']:+.2f} pp{fitted} | {r['oracle_events_90']:.0f} "
            f"({r['oracle_labelled_rows_90']:.0f}) | {_x(r['known_effect_lr_ratio'])} | "
            f"{_x(r.get('best_single_lr_ratio'))} | {_x(r['group_sequential_ratio'])} |"
        )
    lines += [
        "",
        "| shadow, simulated | delay | effect | ours | group-sequential: once a look / every tenth / ordered | "
        "group-sequential and ours: once a look / every tenth / ordered |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r.get("null"):
            lines.append(
                f"| A/A by look 20, 60 | {r['delay_looks']} | 0 | {r['ours_by_20']:.1%}, {r['ours_by_60']:.1%} | "
                + " | ".join(
                    " / ".join(
                        f"{r[f'{t}{s}_by_20']:.1%}, {r[f'{t}{s}_by_60']:.1%}" for s in ("", "_sub_look", "_ordered")
                    )
                    for t in ("group_sequential", "group_sequential_and_ours")
                )
                + " |"
            )
        elif "looks_simulated" in r:
            lines.append(
                f"| labelled rows over the oracle's | {r['delay_looks']} | {r['effect_pp']:+.0f} pp | "
                f"{_x(r['ours'])} | "
                + " | ".join(
                    " / ".join(_x(r[f"{t}{s}"]) for s in ("", "_sub_look", "_ordered"))
                    for t in ("group_sequential", "group_sequential_and_ours")
                )
                + " |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return simulation_main(__doc__, run, table, RESULTS, 1000, argv)


if __name__ == "__main__":
    sys.exit(main())
