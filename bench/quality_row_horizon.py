"""Can a group-sequential McNemar test with horizons in LABELLED ROWS meet issue #14's 1.5x goal in shadow?

``quality_oracle_bound.py`` measured a group-sequential test with horizons in discordant pairs, even told
the order of the labels ("ordered"): 1.27-1.45x the oracle's labelled rows at -1 and -2 pp, 1.55-1.58x at
-5 pp, because the goal counts labelled rows and the pairs among a given number of labelled rows vary
(Poisson) while the oracle's test is taken at the realised pair count. Here the horizons are in labelled
rows, ``n_1 < ... < n_J``: at ``n_j`` the test sees ``D_j`` (discordant pairs so far) and ``K_j`` (those
favouring stable) and rejects when ``K_j`` reaches a boundary computed from ``D_1..D_j`` by conditional
error spending (``row_horizon.spend``): its size is at most alpha given every ``D`` sequence, so
``1{rejected} / alpha`` is a valid e-process (``row_horizon``'s docstring). At one horizon it *is* the oracle
at ``n_1`` rows (the randomised variant exactly); the horizons cost it the split of alpha only.

Measured on ``quality_power.py``'s shadow draws (the same streams, seeds and looks as
``quality_oracle_bound.py``'s simulated rows, so the oracle's and ours' figures are the same numbers), by
the bench's method: every test's state at the end of each tenth of a look (180 labelled rows), the labelled
rows at 90 % power interpolated between them, over the oracle's. The order of the labels within a tenth of a
look is drawn uniformly (what a gateway recording ``D`` and ``K`` when its labelled-row count passes a
horizon would give): the pairs at a horizon inside a tenth are a hypergeometric draw of its rows.

- ``row_horizon``: deterministic boundaries; ``row_horizon_randomised``: the boundary randomised at one count
  so each allowance is spent exactly (as the oracle's test is);
- ``row_horizon_and_ours``: the row-horizon test at ``GS_WEIGHT`` of alpha averaged with ``quality.harm``'s
  fixed mixture (fires when the row-horizon part rejects or the mixture reaches ``1 / ((1 - GS_WEIGHT)
  alpha)``);
- A/A over 60 looks: labels at once, 5 looks late, and each label 0 to 5 looks late at random (tenths of a
  look, uniform; the order within each tenth uniform), at the operator's looks;
- ``--design-seed``: the horizons and spending are chosen on other draws (``search``: the rows with labels
  at once, designs compared at ``SEARCH_POWER``), one design per kind (``KINDS``), then measured on the
  bench's; ``row_horizon_r`` and ``row_horizon_avg`` name the designs chosen for the randomised and the
  averaged test, each measured every way (``_randomised``, ``_and_ours`` suffixes).

Only the shadow rows here: the canary's are simulated by ``quality_row_horizon_canary.py``
(``row_horizon.spend_hypergeometric``).

Usage: ``python bench/quality_row_horizon.py [--runs N] [--design-runs N] [--null-runs N]``; writes
``bench/results/quality-row-horizon.json``; ``--more-null N`` adds N more A/A rollouts (other streams) for
the designs saved there; ``--design 'h1,h2,...:s1,s2,...'`` skips the search and measures that design
(deterministic, randomised, averaged), with each row's power by each horizon (``..._power_by_horizon``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import resource
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mlrollout.analysis.judge import split_alpha
from quality_power import (
    ALPHA,
    DEFAULT_TESTS,
    DISAGREE,
    LABELLED,
    LOOK_SECONDS,
    RPS,
    SUB,
    accuracy_rng,
    beta_log_e,
    by_sub_look,
    grid_log_e,
    mixture_of,
    rows_at_power,
    simulate_counts,
    umpu_power,
)
from row_horizon import best_per_kind, brute_force_size, spend

RESULTS = Path(__file__).parent / "results" / "quality-row-horizon.json"
ORACLE_BOUND = Path(__file__).parent / "results" / "quality-oracle-bound.json"
EFFECTS = (0.01, 0.02, 0.05)
LOOKS_FOR = {0.01: 12, 0.02: 5, 0.05: 2}  # as quality_oracle_bound.simulated_rows (the same draws)
GS_WEIGHT = 0.8
NULL_LOOKS = 60
ROWS_PER_SUB = RPS * LOOK_SECONDS * LABELLED / SUB
Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def arrivals(counts: dict[str, Array]) -> tuple[IntArray, IntArray, IntArray]:
    """Per run and tenth of a look, the labelled rows, the pairs favouring stable and those favouring the
    candidate that arrive in it (from ``simulate_counts``' cumulative arrived counts)."""
    rows = counts["both_right"] + counts["both_wrong"] + counts["stable_only"] + counts["candidate_only"]

    def per_sub(x: Array) -> IntArray:
        out: IntArray = np.diff(x, axis=1, prepend=0.0).round().astype(np.int64)
        return out

    return per_sub(rows), per_sub(counts["stable_only"]), per_sub(counts["candidate_only"])


def at_horizons(
    rows: IntArray, a: IntArray, b: IntArray, horizons: Sequence[int], rng: np.random.Generator
) -> tuple[IntArray, IntArray, IntArray]:
    """Per run and horizon (labelled rows): the tenth of a look in which the labelled-row count passes it
    (the number of tenths if never), and ``D`` and ``K`` there, the rows of that tenth in a uniformly random
    order (hypergeometric draws, consistent between horizons in the same tenth)."""
    runs, subs = rows.shape
    cum_rows, cum_a, cum_b = np.cumsum(rows, axis=1), np.cumsum(a, axis=1), np.cumsum(b, axis=1)
    where = np.zeros((runs, len(horizons)), dtype=np.int64)
    d_out, k_out = np.zeros_like(where), np.zeros_like(where)
    idx = np.arange(runs)
    prev_s = np.full(runs, -1)
    used_rows, used_a, used_b = np.zeros(runs, np.int64), np.zeros(runs, np.int64), np.zeros(runs, np.int64)
    for j, h in enumerate(horizons):
        s = np.argmax(cum_rows >= h, axis=1)
        never = cum_rows[:, -1] < h
        s = np.where(never, subs - 1, s)
        before_rows = np.where(s > 0, cum_rows[idx, s - 1], 0)
        before_a = np.where(s > 0, cum_a[idx, s - 1], 0)
        before_b = np.where(s > 0, cum_b[idx, s - 1], 0)
        same = s == prev_s
        used_rows, used_a, used_b = (np.where(same, used_rows, 0), np.where(same, used_a, 0),
                                     np.where(same, used_b, 0))  # fmt: skip
        left_rows, left_a, left_b = rows[idx, s] - used_rows, a[idx, s] - used_a, b[idx, s] - used_b
        draw = np.clip(h - before_rows - used_rows, 0, left_rows)
        got_a = rng.hypergeometric(left_a, left_rows - left_a, np.maximum(draw, 0)) if runs else draw
        rest = left_rows - left_a
        got_b = rng.hypergeometric(left_b, np.maximum(rest - left_b, 0), np.minimum(draw - got_a, rest))
        got_b = np.where(rest > 0, got_b, 0)
        used_rows, used_a, used_b = used_rows + draw, used_a + got_a, used_b + got_b
        where[:, j] = np.where(never, subs, s)
        d_out[:, j] = before_a + before_b + used_a + used_b
        k_out[:, j] = before_a + used_a
        prev_s = s
    return where, d_out, k_out


def fired_row_horizon(
    where: IntArray, d: IntArray, k: IntArray, subs: int, allowance: Sequence[float], randomise: bool,
    rng: np.random.Generator, first: IntArray | None = None,
) -> npt.NDArray[np.bool_]:  # fmt: skip
    """Per run and tenth of a look, whether the row-horizon test has rejected by then (and in ``first``, if
    given, per run the horizon it rejected at, the number of horizons if none)."""
    runs, horizons = d.shape
    fired = np.zeros((runs, subs), dtype=bool)
    if first is not None:
        first[:] = horizons
    uniforms = rng.random((runs, horizons))
    for r in range(runs):
        passed = int(np.sum(where[r] < subs))
        if not passed:
            continue
        bounds = spend([int(x) for x in d[r, :passed]], allowance[:passed], randomise)
        for j, bound in enumerate(bounds):
            kk = int(k[r, j])
            if kk >= bound.at_least or (kk == bound.at_least - 1 and uniforms[r, j] < bound.gamma):
                fired[r, where[r, j] :] = True
                if first is not None:
                    first[r] = j
                break
    return fired


def _ratio(curve: Array, lag: int, oracle: float | None) -> float | None:
    rows = rows_at_power(curve, lag)
    return rows / oracle if rows is not None and oracle else None


Design = tuple[tuple[int, ...], tuple[float, ...]]  # horizons (labelled rows), cumulative shares of alpha


def power_rows(
    runs: int, seed: int, alpha: float, designs: dict[str, Design], delays: Sequence[int] = (0, 5)
) -> list[dict[str, Any]]:
    bar = math.log(1 / alpha)
    order = np.random.default_rng([seed, 53])
    rows = []
    for delay in delays:
        for effect in EFFECTS:
            looks = delay + LOOKS_FOR[effect]
            counts = simulate_counts("shadow", effect, delay, runs, accuracy_rng(seed, "shadow", delay, effect), looks)
            k, n, share = counts["against"], counts["events"], counts["share"]
            lag = delay * SUB
            oracle = rows_at_power(umpu_power(k, n, share, alpha), lag)
            ours = grid_log_e(k, n, share, beta_log_e(k, n, share), mixture_of("shadow"))
            subs = k.shape[1]
            row: dict[str, Any] = {"design": "shadow", "delay_looks": delay, "effect_pp": -effect * 100,
                                   "runs": runs, "looks_simulated": looks, "oracle_rows_90": oracle,
                                   "ours": _ratio(by_sub_look(ours, bar), lag, oracle)}  # fmt: skip
            arrived = arrivals(counts)
            for name, (horizons, shares) in designs.items():
                where, d, kk = at_horizons(*arrived, horizons, order)
                for randomise in (False, True):
                    suffix = "_randomised" if randomise else ""
                    first = np.zeros(runs, dtype=np.int64)
                    alone = fired_row_horizon(where, d, kk, subs, [alpha * s for s in shares], randomise, order, first)
                    row[f"{name}{suffix}_power_by_horizon"] = [float(np.mean(first <= j)) for j in range(len(horizons))]
                    part = fired_row_horizon(
                        where, d, kk, subs, [GS_WEIGHT * alpha * s for s in shares], randomise, order
                    )
                    both = part | (ours + math.log(1 - GS_WEIGHT) >= bar)
                    row[f"{name}{suffix}"] = _ratio(alone.mean(axis=0), lag, oracle)
                    row[f"{name}{suffix}_and_ours"] = _ratio(both.mean(axis=0), lag, oracle)
                    row[f"{name}{suffix}_power_at_last_sub_look"] = float(alone[:, -1].mean())
            rows.append(row)
    return rows


def random_delay_arrivals(runs: int, rng: np.random.Generator, looks: int) -> dict[str, Array]:
    """Equal models in shadow, each labelled row arriving 0 to 5 looks late (uniform over tenths of a look):
    cumulative arrived counts by kind, as ``simulate_counts`` returns them."""
    base = simulate_counts("shadow", 0.0, 0, runs, rng, looks)
    lags = 5 * SUB + 1
    out = {}
    for key in ("both_right", "both_wrong", "stable_only", "candidate_only"):
        per_sub = np.diff(base[key], axis=1, prepend=0.0).round().astype(np.int64)
        horizon = per_sub.shape[1]
        arrived = np.zeros((runs, horizon + lags), dtype=np.int64)
        left = per_sub.copy()
        for lag in range(lags):  # a multinomial over the lags as a chain of binomials
            x = left if lag == lags - 1 else rng.binomial(left, 1 / (lags - lag))
            arrived[:, lag : lag + horizon] += x
            left = left - x
        out[key] = np.cumsum(arrived[:, :horizon], axis=1).astype(float)
    out["against"], out["events"] = out["stable_only"], out["stable_only"] + out["candidate_only"]
    out["share"] = np.full_like(out["against"], 0.5)
    return out


def null_rows(runs: int, seed: int, alpha: float, designs: dict[str, Design]) -> list[dict[str, Any]]:
    bar = math.log(1 / alpha)
    order = np.random.default_rng([seed, 54])
    rows = []
    null_delays: tuple[int | str, ...] = (0, 5, "0-5")
    at_looks = slice(SUB - 1, None, SUB)
    for delay in null_delays:
        if isinstance(delay, str):
            counts = random_delay_arrivals(runs, np.random.default_rng([seed, 44]), NULL_LOOKS)
        else:
            counts = simulate_counts("shadow", 0.0, delay, runs, np.random.default_rng([seed, 42, delay]), NULL_LOOKS)
        k, n, share = counts["against"], counts["events"], counts["share"]
        ours = grid_log_e(k, n, share, beta_log_e(k, n, share), mixture_of("shadow"))
        subs = k.shape[1]
        row: dict[str, Any] = {"design": "shadow", "delay_looks": delay, "effect_pp": 0.0, "runs": runs,
                               "null": True, "alpha": alpha,
                               "ours_by_60": float((ours[:, at_looks] >= bar).any(axis=1).mean())}  # fmt: skip
        arrived = arrivals(counts)
        for name, (horizons, shares) in designs.items():
            where, d, kk = at_horizons(*arrived, horizons, order)
            for randomise in (False, True):
                suffix = "_randomised" if randomise else ""
                alone = fired_row_horizon(where, d, kk, subs, [alpha * s for s in shares], randomise, order)
                part = fired_row_horizon(where, d, kk, subs, [GS_WEIGHT * alpha * s for s in shares], randomise, order)
                both = part | (ours + math.log(1 - GS_WEIGHT) >= bar)
                row[f"{name}{suffix}_by_60"] = float(alone[:, at_looks].any(axis=1).mean())
                row[f"{name}{suffix}_and_ours_by_60"] = float(both[:, at_looks].any(axis=1).mean())
        rows.append(row)
    return rows


def exact_sizes(alpha: float, designs: dict[str, Design], seed: int) -> list[dict[str, Any]]:
    """The conditional size of each design given a few ``D`` sequences (drawn at the null's discordance
    rate at its horizons), computed exactly (``row_horizon.spend``'s bookkeeping; for small ``D``, also by
    enumerating every way the pairs can go)."""
    rng = np.random.default_rng([seed, 55])
    out = []
    for name, (horizons, shares) in designs.items():
        allowance = [alpha * s for s in shares]
        for _ in range(4):
            steps = rng.binomial(np.diff(np.array(horizons), prepend=0), DISAGREE)
            d = [int(x) for x in np.cumsum(steps)]
            for randomise in (False, True):
                bounds = spend(d, allowance, randomise)
                out.append({"design": name, "discordant": d, "randomised": randomise,
                            "bounds": [b.at_least for b in bounds], "gammas": [b.gamma for b in bounds],
                            "conditional_size": bounds[-1].spent})  # fmt: skip
        small = [3, 9, 16]
        for randomise in (False, True):
            size = brute_force_size(small, [*allowance[:2], allowance[-1]], randomise)
            out.append({"design": name, "discordant": small, "randomised": randomise,
                        "conditional_size_enumerated": size})  # fmt: skip
    return out


SEARCH_POWER = 0.93
"""The power at which designs are compared in the search (over the oracle's rows at 90 %): a design fitted to
reach exactly 90 % at a horizon on the design draws reaches it on other draws in only half of them (a first
search at 90 % chose such designs, and on the bench's draws they never reached 90 % on some rows)."""
KINDS = {"row_horizon": (False, False), "row_horizon_r": (True, False), "row_horizon_avg": (False, True)}
"""The designs searched for: deterministic alone, randomised alone, deterministic at ``GS_WEIGHT`` of alpha
averaged with the mixture (randomised, averaged: each measured on the bench's draws both ways)."""


def search(runs: int, seed: int, alpha: float) -> tuple[dict[str, Design], list[dict[str, Any]]]:
    """Designs tried on the design seed's draws (labels at once): the worst ratio over the three rows of each
    at ``SEARCH_POWER``, for each of ``KINDS``; the best of each kind is measured on the bench's draws."""
    bar = math.log(1 / alpha)
    order = np.random.default_rng([seed, 56])
    data = {}
    for effect in EFFECTS:
        looks = LOOKS_FOR[effect]
        counts = simulate_counts("shadow", effect, 0, runs, accuracy_rng(seed, "shadow", 0, effect), looks)
        k, n, share = counts["against"], counts["events"], counts["share"]
        oracle = rows_at_power(umpu_power(k, n, share, alpha), 0)
        ours = grid_log_e(k, n, share, beta_log_e(k, n, share), mixture_of("shadow")) + math.log(1 - GS_WEIGHT) >= bar
        data[effect] = (arrivals(counts), oracle, k.shape[1], ours)
    # a tenth of a look is 180 labelled rows: horizons a little below its multiples are passed by then
    firsts, seconds, thirds = (290, 310, 330), (2150, 2300, 2450, 2600), (9500, 10300, 11000, 11500)
    splits = [(f1, f2) for f1 in (0.3, 0.4, 0.5) for f2 in (0.2, 0.3, 0.4)]
    tried = []
    for h1, h2, h3, (f1, f2), extra in itertools.product(firsts, seconds, thirds, splits, (False, True)):
        horizons = (h1, 500, h2, h3) if extra else (h1, h2, h3)
        shares = (0.8 * f1, f1, f1 + f2, 1.0) if extra else (f1, f1 + f2, 1.0)
        entry: dict[str, Any] = {"horizons": horizons, "shares": shares}
        for kind, (randomise, averaged) in KINDS.items():
            ratios = {}
            for effect, ((rows, a, b), oracle, subs, ours) in data.items():
                where, d, kk = at_horizons(rows, a, b, horizons, order)
                level = GS_WEIGHT * alpha if averaged else alpha
                fired = fired_row_horizon(where, d, kk, subs, [level * s for s in shares], randomise, order)
                curve = (fired | ours if averaged else fired).mean(axis=0)
                got = rows_at_power(curve, 0, SEARCH_POWER)
                ratios[f"{-effect * 100:+.0f}"] = got / oracle if got is not None and oracle else math.inf
            entry[f"{kind}_ratios"], entry[f"{kind}_worst"] = ratios, max(ratios.values())
        tried.append(entry)
    return best_per_kind(tried, list(KINDS), 10)


def parse_design(text: str) -> Design:
    """``'h1,h2,...:s1,s2,...'``: horizons in labelled rows and cumulative shares of alpha."""
    horizons, shares = text.split(":")
    out = (tuple(int(h) for h in horizons.split(",")), tuple(float(x) for x in shares.split(",")))
    if len(out[0]) != len(out[1]) or list(out[0]) != sorted(out[0]) or out[1][-1] != 1.0:
        raise ValueError(f"not a design: {text}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--seed", type=int, default=20261126)
    p.add_argument("--design-seed", type=int, default=20261127)
    p.add_argument("--design-runs", type=int, default=400)
    p.add_argument("--null-runs", type=int, default=2000)
    p.add_argument("--output", type=Path, default=None)
    p.add_argument(
        "--more-null", type=int, default=0, help="only: A/A for the designs in the results file, this many runs more"
    )
    p.add_argument("--design", type=str, default=None, help="no search: this design, 'h1,h2,..:s1,s2,...'")
    args = p.parse_args(argv)
    started, cpu0, load0 = datetime.now(UTC), time.process_time(), os.getloadavg()
    alpha = split_alpha(ALPHA, DEFAULT_TESTS)["quality.harm"]
    output = args.output or RESULTS
    if args.more_null:  # other streams (seed + 1000) than the first A/A rows
        saved = json.loads(output.read_text())
        chosen = {name: (tuple(h), tuple(s)) for name, (h, s) in saved["designs"].items()}
        more = null_rows(args.more_null, args.seed + 1000, alpha, chosen)
        saved["more_null_rows"] = {"runs": args.more_null, "seed": args.seed + 1000, "rows": more,
                                   "started_utc": started.isoformat(timespec="seconds"),
                                   "cpu_seconds": round(time.process_time() - cpu0, 1),
                                   "load_before": load0, "load_after": os.getloadavg()}  # fmt: skip
        output.write_text(json.dumps(saved, indent=2) + "\n")
        for r in more:
            print(r)
        return 0
    designs: dict[str, Design]
    tried: list[dict[str, Any]] = []
    if args.design:
        designs = {"row_horizon": parse_design(args.design)}
    else:
        designs, tried = search(args.design_runs, args.design_seed, alpha)
    rows = power_rows(args.runs, args.seed, alpha, designs)
    nulls = null_rows(args.null_runs, args.seed, alpha, designs)
    sizes = exact_sizes(alpha, designs, args.seed)
    pair = {}
    if ORACLE_BOUND.exists():  # the pair-horizon test on the same draws (500 runs, the same seed)
        old = json.loads(ORACLE_BOUND.read_text())
        simulated = [r for r in old["rows"] if r.get("design") == "shadow" and ("looks_simulated" in r or "null" in r)]
        pair = {"runs": old["runs"], "seed": old["seed"], "rows": simulated}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    meta = {"runs": args.runs, "seed": args.seed, "design_seed": args.design_seed, "design_runs": args.design_runs,
            "null_runs": args.null_runs, "alpha": alpha, "started_utc": started.isoformat(timespec="seconds"),
            "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "cpu_seconds": round(time.process_time() - cpu0, 1), "user_cpu": usage.ru_utime,
            "load_before": load0, "load_after": os.getloadavg(), "designs": designs}  # fmt: skip
    output.parent.mkdir(parents=True, exist_ok=True)
    out = {**meta, "search_top": tried, "rows": rows, "null_rows": nulls, "exact_sizes": sizes,
           "pair_horizon_same_draws": pair}  # fmt: skip
    output.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(meta, indent=1))
    for r in rows + nulls:
        print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
