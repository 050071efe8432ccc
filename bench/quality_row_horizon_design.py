"""Does a row-horizon design meet issue #14's 1.5x goal with a margin of power? (``row_horizon``'s test.)

At fixed labelled-row horizons the row-horizon test sees only the counts there: in shadow the discordant
pairs ``D_j`` and those favouring stable ``K_j``; in a 10 % canary each track's labelled rows, the wrong
ones and the candidate's wrong ones. So its power at a horizon is computed here without the benches'
looks and label arrival: draws of the counts the test conditions on (shadow: ``D_j``, the discordant rows
among ``n_j`` labelled rows, Binomial(new rows, ``DISAGREE``) between horizons; canary: the candidate's new
labelled rows Binomial(new rows, 0.1), each track's new wrong ones binomial at its error rate), and given
them the exact probability, under the row's effect, that the test (its boundaries from ``row_horizon.spend``
/ ``spend_hypergeometric``, deterministic) has rejected by each horizon (``row_horizon.paired_power_given`` /
``unpaired_power_given``: the steps of ``K`` Binomial(new pairs, ``alt_share``) in shadow, Fisher's
noncentral hypergeometric in the canary). Averaging that over the draws is the power with far less noise
than counting rejections (Rao-Blackwellised); the shadow's first horizon, where the pairs are few, is
summed exactly over ``D_1`` (``paired_first_power``).
The per-row rates are the benches' (``quality_power.simulate_counts``; ``quality_oracle_bound.alt_share``).

The designs: three horizons, each row's at the same multiple ``R`` of its exact oracle's labelled rows
(``quality_oracle_bound.oracle_events`` over the events a labelled row gives, the oracle the benches'
"oracle" with its events at their expectation), cumulative shares of alpha ``(s1, s2, 1)``; per ``R``,
every split on a grid. A design's *worst power* is the least, over the three rows, of its power at that
row's horizon. For each ``R`` the best split and its worst power; the frontier: the least ``R`` at which
some split reaches 90, 92, 93 and 95 % at every row. A fourth horizon between two rows' only spends alpha
where no row is judged, and a row's horizon earlier than ``R`` times its oracle only loses it power, so
within this family (deterministic boundaries) the frontier at ``R`` should be close to the best there is, up
to the grid (which matters where pairs are few: shadow -5 pp's boundary steps at 85.1 % of alpha; an
argument, not a proof).

Usage: ``python bench/quality_row_horizon_design.py [--only shadow|canary] [--paths N] [--canary-paths N]``;
writes ``bench/results/quality-row-horizon-design[-shadow|-canary].json``; ``--probe
'shadow:h1,h2,..:s1,s2,..;canary:...'`` only computes those designs' power by each horizon for each row
(``...-design-probes.json``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from mlrollout.analysis.judge import split_alpha
from quality_oracle_bound import alt_share, events_per_labelled_row, null_share, oracle_events, randomised_power
from quality_power import ALPHA, BASE, CANARY_SHARE, DEFAULT_TESTS, DISAGREE
from row_horizon import paired_first_power, paired_power_given, unpaired_power_given

RESULTS = Path(__file__).parent / "results" / "quality-row-horizon-design.json"
EFFECTS = (0.05, 0.02, 0.01)  # in the order of their horizons
TARGETS = (0.90, 0.92, 0.93, 0.95)
Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def oracle_rows(design: str, effect: float, alpha: float) -> float:
    """The exact oracle's labelled rows at 90 % power (its events at their expectation)."""
    events = oracle_events(null_share(design), alt_share(design, effect), alpha)
    return events / events_per_labelled_row(design, effect)


def shadow_draws(horizons: Sequence[int], paths: int, rng: np.random.Generator) -> IntArray:
    """Per draw and horizon, the discordant pairs among that many labelled rows (cumulative)."""
    steps = rng.binomial(np.diff(np.asarray(horizons), prepend=0), DISAGREE, (paths, len(horizons)))
    out: IntArray = np.cumsum(steps, axis=1)
    return out


def fixed_rows_oracle(design: str, effect: float, alpha: float) -> float:
    """The oracle run once at a fixed number of *labelled rows* (its events drawn, not at their
    expectation): the labelled rows at which the randomised one-sided binomial test, conditional on the
    realised events, has 90 % power averaged over them (linear between whole rows of a grid of 1 %)."""
    p0, p1, rate = null_share(design), alt_share(design, effect), events_per_labelled_row(design, effect)

    def power(rows: int) -> float:
        lo = int(stats.binom.ppf(1e-12, rows, rate))
        hi = int(stats.binom.isf(1e-12, rows, rate)) + 1
        m = np.arange(max(lo, 1), hi + 1)
        return float(np.sum(stats.binom.pmf(m, rows, rate) * randomised_power(m, p0, p1, alpha)))

    rows = oracle_rows(design, effect, alpha)
    step = max(int(rows / 100), 1)
    n = int(rows)
    while power(n) < 0.9:
        n += step
    before, after = power(n - step), power(n)
    return n - step + step * (0.9 - before) / (after - before)


def canary_odds(effect: float) -> float:
    """The candidate's odds of a wrong labelled row over stable's under the row's effect."""
    pc, ps = 1 - BASE + effect, 1 - BASE
    return (pc / (1 - pc)) / (ps / (1 - ps))


def canary_draws(horizons: Sequence[int], effect: float, paths: int, rng: np.random.Generator) -> IntArray:
    """Per draw and horizon (shape (3, paths, horizons)): the labelled rows, the candidate's and the wrong
    ones (cumulative; ``quality_power.simulate_counts``' rates)."""
    new = np.broadcast_to(np.diff(np.asarray(horizons), prepend=0), (paths, len(horizons)))
    cand = rng.binomial(new, CANARY_SHARE)
    wrong = rng.binomial(cand, 1 - BASE + effect) + rng.binomial(new - cand, 1 - BASE)
    out: IntArray = np.cumsum(np.stack([new, cand, wrong]), axis=2)
    return out


def power_at(
    design: str, horizons: Sequence[int], shares: Sequence[float], alpha: float, effect: float, upto: int,
    draws: IntArray,
) -> tuple[float, float]:  # fmt: skip
    """The power by horizon ``upto`` (0-based) and its Monte-Carlo standard error (0 when exact)."""
    allowance = [alpha * s for s in shares[: upto + 1]]
    if design == "shadow" and upto == 0:
        return paired_first_power(horizons[0], DISAGREE, allowance[0], alt_share(design, effect)), 0.0
    if design == "shadow":
        p1 = alt_share(design, effect)
        got = [paired_power_given([int(x) for x in d[: upto + 1]], allowance, p1)[-1] for d in draws]
    else:
        n, c, w = draws
        got = [
            unpaired_power_given(
                [int(x) for x in n[i, : upto + 1]], [int(x) for x in c[i, : upto + 1]],
                [int(x) for x in w[i, : upto + 1]], allowance, canary_odds(effect),
            )[-1]
            for i in range(n.shape[0])
        ]  # fmt: skip
    return float(np.mean(got)), float(np.std(got) / math.sqrt(len(got)))


def splits(step: float) -> list[tuple[float, float, float]]:
    """Cumulative shares (s1, s2, 1) on a grid: s1 from 0.1 to 0.9, s2 at least s1 + step, at most 0.95."""
    k = round(1 / step)
    grid = [round(i / k, 4) for i in range(1, k)]
    return [(a, b, 1.0) for a, b in itertools.product(grid, grid) if 0.1 <= a <= 0.9 and a + step - 1e-9 <= b <= 0.95]


def search(
    design: str, ratios: Sequence[float], step: float, paths: int, seed: int, alpha: float
) -> list[dict[str, Any]]:
    """Per multiple ``R`` of the oracles' rows: every split's power at each row's horizon, best first."""
    oracles = [oracle_rows(design, e, alpha) for e in EFFECTS]
    out: list[dict[str, Any]] = []
    for r in ratios:
        horizons = tuple(round(r * o) for o in oracles)
        rng = np.random.default_rng([seed, round(r * 1000), design == "shadow"])
        draws = {
            e: shadow_draws(horizons, paths, rng) if design == "shadow" else canary_draws(horizons, e, paths, rng)
            for e in EFFECTS
        }
        cache: dict[tuple[float, tuple[float, ...]], tuple[float, float]] = {}
        tried: list[dict[str, Any]] = []
        for shares in splits(step):
            powers, ses = [], []
            for j, e in enumerate(EFFECTS):
                key = (e, shares[: j + 1])
                if key not in cache:
                    cache[key] = power_at(design, horizons, shares, alpha, e, j, draws[e])
                powers.append(cache[key][0])
                ses.append(cache[key][1])
            tried.append({"shares": shares, "power": dict(zip(_names(), powers, strict=True)),
                          "se": dict(zip(_names(), ses, strict=True)), "worst_power": min(powers)})  # fmt: skip
        tried.sort(key=lambda t: -float(t["worst_power"]))
        out.append({"design": design, "ratio": r, "horizons": horizons, "paths": paths, "best": tried[0],
                    "top": tried[:5]})  # fmt: skip
        print(json.dumps(out[-1]["best"] | {"ratio": r, "horizons": horizons}), file=sys.stderr, flush=True)
    return out


def _names() -> list[str]:
    return [f"{-e * 100:+.0f}" for e in EFFECTS]


def frontier(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per target power, the least multiple of the oracles' rows at which some split reaches it at every row,
    with that split (None when none on the grid does)."""
    out: dict[str, Any] = {}
    for target in TARGETS:
        ok = [r for r in sorted(rows, key=lambda r: float(r["ratio"])) if r["best"]["worst_power"] >= target]
        out[f"{target:.2f}"] = (
            {"ratio": ok[0]["ratio"], "horizons": ok[0]["horizons"], "shares": ok[0]["best"]["shares"],
             "power": ok[0]["best"]["power"]} if ok else None
        )  # fmt: skip
    return out


def probe(
    design: str, horizons: Sequence[int], shares: Sequence[float], paths: int, seed: int, alpha: float
) -> dict[str, Any]:
    """One design's power by each of its horizons for each row, and each horizon over each row's oracle."""
    rng = np.random.default_rng([seed, 7, len(horizons)])
    out: dict[str, Any] = {"design": design, "horizons": list(horizons), "shares": list(shares), "paths": paths}
    for e, name in zip(EFFECTS, _names(), strict=True):
        draws = shadow_draws(horizons, paths, rng) if design == "shadow" else canary_draws(horizons, e, paths, rng)
        got = [power_at(design, horizons, shares, alpha, e, j, draws) for j in range(len(horizons))]
        out[name] = {"power_by_horizon": [g[0] for g in got], "se": [g[1] for g in got],
                     "horizon_over_oracle": [h / oracle_rows(design, e, alpha) for h in horizons]}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--paths", type=int, default=1500, help="draws of the shadow's counts per multiple and row")
    p.add_argument("--canary-paths", type=int, default=300)
    p.add_argument("--seed", type=int, default=20261206)
    p.add_argument("--ratios", type=str, default="1.35,1.4,1.45,1.5,1.55,1.6")
    p.add_argument("--canary-ratios", type=str, default="1.1,1.15,1.2,1.25,1.3,1.4,1.5")
    p.add_argument("--only", choices=("shadow", "canary"), default=None)
    p.add_argument("--output", type=Path, default=None)
    p.add_argument(
        "--probe", type=str, default=None, help="only: these designs' power, 'shadow|canary:h1,h2,..:s1,s2,..;...'"
    )
    args = p.parse_args(argv)
    started, cpu0, load0 = datetime.now(UTC), time.process_time(), os.getloadavg()
    alpha = split_alpha(ALPHA, DEFAULT_TESTS)["quality.harm"]
    out: dict[str, Any] = {"seed": args.seed, "alpha": alpha, "started_utc": started.isoformat(timespec="seconds"),
                           "load_before": load0}  # fmt: skip
    if args.probe:
        probes = []
        for item in args.probe.split(";"):
            design, h, sh = item.split(":")
            horizons, shares = [int(x) for x in h.split(",")], [float(x) for x in sh.split(",")]
            paths = args.paths if design == "shadow" else args.canary_paths
            probes.append(probe(design, horizons, shares, paths, args.seed, alpha))
            print(json.dumps(probes[-1]), flush=True)
        out |= {"probes": probes, "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                "cpu_seconds": round(time.process_time() - cpu0, 1), "load_after": os.getloadavg()}  # fmt: skip
        output = args.output or RESULTS.with_name(f"{RESULTS.stem}-probes.json")
        output.write_text(json.dumps(out, indent=2) + "\n")
        return 0
    for design in ("shadow", "canary"):
        if args.only and design != args.only:
            continue
        shadow = design == "shadow"
        ratios = [float(x) for x in (args.ratios if shadow else args.canary_ratios).split(",")]
        paths = args.paths if shadow else args.canary_paths
        rows = search(design, ratios, 0.05, paths, args.seed, alpha)
        out[design] = {"oracle_rows": dict(zip(_names(), [oracle_rows(design, e, alpha) for e in EFFECTS],
                                                strict=True)),
                       "fixed_rows_oracle": dict(zip(_names(), [fixed_rows_oracle(design, e, alpha)
                                                               for e in EFFECTS], strict=True)),
                       "by_ratio": rows, "frontier": frontier(rows)}  # fmt: skip
    out |= {"finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "cpu_seconds": round(time.process_time() - cpu0, 1), "load_after": os.getloadavg()}  # fmt: skip
    output = args.output or RESULTS.with_name(f"{RESULTS.stem}{'-' + args.only if args.only else ''}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v["frontier"] for k, v in out.items() if isinstance(v, dict) and "frontier" in v}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
