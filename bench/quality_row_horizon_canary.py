"""The labelled-row horizon test (``quality_row_horizon.py``) in a 10 % canary: issue #14's canary rows.

In an unpaired canary step the test sees, when the labelled-row count passes a horizon ``n_j``, each track's
labelled rows, the wrong ones and the candidate's wrong ones ``K_j``; under the null (equal accuracy) the
candidate's share of the wrong rows new between horizons is hypergeometric given the new rows of each track
and the new wrong ones, so ``row_horizon.spend_hypergeometric`` (conditional error spending on those steps,
each step's pmf kept within 12 standard deviations and the bound on the rest counted as spent) gives
boundaries whose size is at most alpha given every sequence of counts.

Measured on ``quality_canary_mixture.py``'s draws (seed 20261126: the same streams, looks and rollouts: -1 pp
400 rollouts over 250 looks, -2 pp 1000 over 50, -5 pp 1000 over 20, labels at once), so the oracle's and
ours' (``QUALITY_UNPAIRED``, its ``candidate_1``) figures are its numbers; the labelled rows at 90 % power
interpolated between tenths of a look, over the oracle's, with a bootstrap standard error over the rollouts.
The order of the labels within a tenth of a look is drawn uniformly (each horizon inside a tenth sees a
multivariate hypergeometric draw of its rows by track and result).

- designs chosen on other draws (``--design-seed``, fewer rollouts: ``search``) by the worst ratio of the
  three rows at ``SEARCH_POWER``, one per kind (``quality_row_horizon.KINDS``: deterministic, randomised,
  deterministic at ``GS_WEIGHT`` of alpha with the mixture at the rest), each then measured every way;
- A/A: equal models in a canary, labels at once and each label 0 to 5 looks late at random, over
  ``NULL_LOOKS`` looks (past every design's last horizon): the share of runs fired by look 20, 60 and the end.

Usage: ``python bench/quality_row_horizon_canary.py [--scale F] [--design-runs N] [--null-runs N]``
(``--scale`` multiplies the bench's rollouts); writes ``bench/results/quality-row-horizon-canary.json``;
``--more-null N`` adds N more A/A rollouts (other streams) for the designs saved there; ``--aa-check N``
N x 2 000 more, labels 0 to 5 looks late, for the deterministic design alone; ``--design
'h1,h2,...:s1,s2,...'`` skips the search and measures that design, with each row's power by each horizon
(``..._power_by_horizon``).
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
from quality_canary_mixture import umpu_by_run
from quality_power import (
    ALPHA,
    DEFAULT_TESTS,
    SUB,
    accuracy_rng,
    beta_log_e,
    grid_log_e,
    mixture_of,
    rows_at_power,
    simulate_counts,
)
from quality_row_horizon import GS_WEIGHT, KINDS, SEARCH_POWER, Design, parse_design
from row_horizon import best_per_kind, spend_hypergeometric

RESULTS = Path(__file__).parent / "results" / "quality-row-horizon-canary.json"
LOOKS_FOR = {0.01: 250, 0.02: 50, 0.05: 20}  # quality_canary_mixture.ROWS: the same draws
RUNS_FOR = {0.01: 400, 0.02: 1000, 0.05: 1000}
NULL_LOOKS = 130
BOOT = 200
Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]
CATEGORIES = ("candidate_wrong", "candidate_right", "stable_wrong", "stable_right")


def arrivals(counts: dict[str, Array]) -> IntArray:
    """Per category (``CATEGORIES``), run and tenth of a look, the labelled rows arriving in it."""
    cw, cl = counts["candidate_incorrect"], counts["candidate_labelled"]
    sw, sl = counts["stable_incorrect"], counts["stable_labelled"]
    cum = np.stack([cw, cl - cw, sw, sl - sw])
    out: IntArray = np.diff(cum, axis=2, prepend=0.0).round().astype(np.int64)
    return out


def at_horizons(per: IntArray, horizons: Sequence[int], rng: np.random.Generator) -> tuple[IntArray, IntArray]:
    """Per run and horizon: the tenth of a look in which the labelled-row count passes it (the number of
    tenths if never) and the cumulative rows by category there (shape (4, runs, horizons)), the rows of that
    tenth in a uniformly random order (a chain of hypergeometric draws, consistent between horizons in the
    same tenth)."""
    _, runs, subs = per.shape
    cum = np.cumsum(per, axis=2)
    cum_rows = cum.sum(axis=0)
    idx = np.arange(runs)
    where = np.zeros((runs, len(horizons)), dtype=np.int64)
    counts = np.zeros((4, runs, len(horizons)), dtype=np.int64)
    prev_s = np.full(runs, -1)
    used = np.zeros((4, runs), dtype=np.int64)
    for j, h in enumerate(horizons):
        never = cum_rows[:, -1] < h
        s = np.where(never, subs - 1, np.argmax(cum_rows >= h, axis=1))
        before = np.where(s > 0, cum[:, idx, s - 1], 0)
        used = np.where(s == prev_s, used, 0)
        left = per[:, idx, s] - used
        draw = np.clip(h - before.sum(axis=0) - used.sum(axis=0), 0, left.sum(axis=0))
        for c in range(3):  # category c among the draw, then the rest among the later categories
            rest = left[c + 1 :].sum(axis=0)
            got = rng.hypergeometric(left[c], rest, draw)
            used[c] += got
            draw = draw - got
        used[3] += draw
        where[:, j] = np.where(never, subs, s)
        counts[:, :, j] = before + used
        prev_s = s
    return where, counts


def fired(
    where: IntArray, counts: IntArray, subs: int, allowance: Sequence[float], randomise: bool,
    rng: np.random.Generator, first: IntArray | None = None,
) -> Bool:  # fmt: skip
    """Per run and tenth of a look, whether the canary row-horizon test has rejected by then (and in
    ``first``, if given, per run the horizon it rejected at, the number of horizons if none)."""
    runs, horizons = where.shape
    out = np.zeros((runs, subs), dtype=bool)
    if first is not None:
        first[:] = horizons
    uniforms = rng.random((runs, horizons))
    cw, cr, sw, sr = counts
    rows, cand, wrong = cw + cr + sw + sr, cw + cr, cw + sw
    for r in range(runs):
        passed = int(np.sum(where[r] < subs))
        if not passed:
            continue
        bounds = spend_hypergeometric(
            [int(x) for x in rows[r, :passed]], [int(x) for x in cand[r, :passed]],
            [int(x) for x in wrong[r, :passed]], allowance[:passed], randomise,
        )  # fmt: skip
        for j, b in enumerate(bounds):
            k = int(cw[r, j])
            if k >= b.at_least or (k == b.at_least - 1 and uniforms[r, j] < b.gamma):
                out[r, where[r, j] :] = True
                if first is not None:
                    first[r] = j
                break
    return out


def first_fired(x: Bool) -> IntArray:
    out: IntArray = np.where(x.any(axis=1), x.argmax(axis=1), x.shape[1])
    return out


def ratios_with_se(
    firsts: dict[str, IntArray], power: Array, seed: int, effect: float
) -> tuple[float | None, dict[str, Any]]:
    """The oracle's labelled rows at 90 % power and each test's over them, with bootstrap standard errors
    over the rollouts (the oracle's power and the crossings resampled together)."""
    runs, subs = power.shape

    def at(idx: IntArray) -> tuple[float | None, dict[str, float]]:
        oracle = rows_at_power(power[idx].mean(axis=0), 0)
        out = {}
        for name, first in firsts.items():
            curve = np.cumsum(np.bincount(first[idx], minlength=subs + 1)[:subs]) / idx.size
            rows = rows_at_power(curve, 0)
            out[name] = rows / oracle if rows is not None and oracle else math.inf
        return oracle, out

    oracle, point = at(np.arange(runs))
    rng = np.random.default_rng([seed, 61, int(effect * 1e4)])
    boots = [at(np.asarray(rng.integers(0, runs, runs), dtype=np.int64))[1] for _ in range(BOOT)]
    row: dict[str, Any] = {}
    for name, value in point.items():
        samples = np.array([b[name] for b in boots])
        finite = samples[np.isfinite(samples)]
        row[name] = value if math.isfinite(value) else None
        row[f"{name}_se"] = float(np.std(finite)) if finite.size else None
        row[f"{name}_reached"] = float(finite.size / samples.size)
    return oracle, row


def tests_on(
    per: IntArray, subs: int, designs: dict[str, Design], alpha: float, ours: Bool, rng: np.random.Generator,
    by_horizon: dict[str, list[float]] | None = None,
) -> dict[str, Bool]:  # fmt: skip
    """Per test name, per run and tenth of a look: fired by then (and in ``by_horizon``, if given, per test
    alone the share of runs rejected by each of its horizons)."""
    out: dict[str, Bool] = {"ours": ours}
    for name, (horizons, shares) in designs.items():
        where, counts = at_horizons(per, horizons, rng)
        for randomise in (False, True):
            suffix = "_randomised" if randomise else ""
            first = np.zeros(where.shape[0], dtype=np.int64)
            out[f"{name}{suffix}"] = fired(where, counts, subs, [alpha * s for s in shares], randomise, rng, first)
            if by_horizon is not None:
                by_horizon[f"{name}{suffix}"] = [float(np.mean(first <= j)) for j in range(len(horizons))]
            part = fired(where, counts, subs, [GS_WEIGHT * alpha * s for s in shares], randomise, rng)
            out[f"{name}{suffix}_and_ours"] = part | ours  # ours here is at (1 - GS_WEIGHT) alpha
    return out


def _ours(counts: dict[str, Array], alpha: float) -> tuple[Bool, Bool]:
    """Per run and tenth of a look, ``quality.harm``'s mixture fired by then at alpha and at (1 - GS_WEIGHT)
    alpha."""
    k, n, share = counts["against"], counts["events"], counts["share"]
    log_e = grid_log_e(k, n, share, beta_log_e(k, n, share), mixture_of("canary"))
    full = np.maximum.accumulate(log_e >= math.log(1 / alpha), axis=1)
    part = np.maximum.accumulate(log_e >= math.log(1 / ((1 - GS_WEIGHT) * alpha)), axis=1)
    return full, part


def power_rows(scale: float, seed: int, alpha: float, designs: dict[str, Design]) -> list[dict[str, Any]]:
    order = np.random.default_rng([seed, 63])
    rows = []
    for effect, looks in LOOKS_FOR.items():
        runs = max(int(RUNS_FOR[effect] * scale), 20)
        counts = simulate_counts("canary", effect, 0, runs, accuracy_rng(seed, "canary", 0, effect), looks)
        power = umpu_by_run(counts["against"], counts["events"], counts["share"], alpha).astype(np.float64)
        full, part = _ours(counts, alpha)
        per = arrivals(counts)
        del counts
        subs = per.shape[2]
        by_horizon: dict[str, list[float]] = {}
        tests = tests_on(per, subs, designs, alpha, part, order, by_horizon)
        tests["ours"] = full
        firsts = {name: first_fired(x) for name, x in tests.items()}
        oracle, row = ratios_with_se(firsts, power, seed, effect)
        rows.append({"design": "canary", "delay_looks": 0, "effect_pp": -effect * 100, "runs": runs,
                     "looks_simulated": looks, "oracle_rows_90": oracle, **row,
                     **{f"{k}_power_by_horizon": v for k, v in by_horizon.items()}})  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def random_delay_counts(runs: int, rng: np.random.Generator, looks: int) -> dict[str, Array]:
    """Equal models in a canary, each labelled row 0 to 5 looks late (uniform over tenths of a look, each
    track's rows independently): cumulative arrived counts as ``simulate_counts`` returns them."""
    base = simulate_counts("canary", 0.0, 0, runs, rng, looks)
    lags = 5 * SUB + 1
    per = arrivals(base)
    horizon = per.shape[2]
    arrived = np.zeros((4, runs, horizon + lags), dtype=np.int64)
    left = per.copy()
    for lag in range(lags):  # a multinomial over the lags as a chain of binomials
        x = left if lag == lags - 1 else rng.binomial(left, 1 / (lags - lag))
        arrived[:, :, lag : lag + horizon] += x
        left = left - x
    cw, cr, sw, sr = np.cumsum(arrived[:, :, :horizon], axis=2).astype(float)
    out = {"candidate_incorrect": cw, "candidate_labelled": cw + cr, "stable_incorrect": sw,
           "stable_labelled": sw + sr, "against": cw, "events": cw + sw}  # fmt: skip
    out["share"] = np.where(cw + cr + sw + sr > 0, (cw + cr) / np.maximum(cw + cr + sw + sr, 1), 0.5)
    return out


def null_rows(runs: int, seed: int, alpha: float, designs: dict[str, Design]) -> list[dict[str, Any]]:
    order = np.random.default_rng([seed, 64])
    rows = []
    for delay in (0, "0-5"):
        if isinstance(delay, str):
            counts = random_delay_counts(runs, np.random.default_rng([seed, 65]), NULL_LOOKS)
        else:
            counts = simulate_counts("canary", 0.0, 0, runs, np.random.default_rng([seed, 66]), NULL_LOOKS)
        full, part = _ours(counts, alpha)
        per = arrivals(counts)
        del counts
        subs = per.shape[2]
        tests = tests_on(per, subs, designs, alpha, part, order)
        tests["ours"] = full
        row: dict[str, Any] = {"design": "canary", "null": True, "delay_looks": delay, "runs": runs,
                               "looks": NULL_LOOKS, "alpha": alpha}  # fmt: skip
        for name, x in tests.items():
            for looks in (20, 60, NULL_LOOKS):
                row[f"{name}_by_{looks}"] = float(x[:, looks * SUB - 1].mean())
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def aa_check(chunks: int, seed: int, alpha: float, design: Design) -> dict[str, Any]:
    """One design alone (deterministic), labels 0 to 5 looks late at random: the share of ``chunks`` x 2 000
    A/A rollouts it fires by ``NULL_LOOKS`` (other streams than ``null_rows``'; cheaper, one test only)."""
    horizons, shares = design
    fired_total, runs_total, per_chunk = 0, 0, []
    for c in range(chunks):
        counts = random_delay_counts(2000, np.random.default_rng([seed, 3000, c]), NULL_LOOKS)
        per = arrivals(counts)
        del counts
        order = np.random.default_rng([seed, 3001, c])
        where, by_kind = at_horizons(per, horizons, order)
        x = fired(where, by_kind, per.shape[2], [alpha * s for s in shares], False, order)
        per_chunk.append(int(x[:, -1].sum()))
        fired_total, runs_total = fired_total + per_chunk[-1], runs_total + x.shape[0]
    return {"design": design, "delay_looks": "0-5", "runs": runs_total, "fired_per_2000": per_chunk,
            "rate": fired_total / runs_total}  # fmt: skip


def search(runs: int, seed: int, alpha: float, grid: list[Design]) -> tuple[dict[str, Design], list[dict[str, Any]]]:
    """Each design's ratios at ``SEARCH_POWER`` on the design seed's draws (-1 pp on ``runs`` / 2 rollouts over
    125 looks, -2 pp over 40, -5 pp over 12, labels at once); the best of each of ``KINDS`` by its worst row."""
    order = np.random.default_rng([seed, 67])
    looks_for = {0.01: 125, 0.02: 40, 0.05: 12}
    data = {}
    for effect, looks in looks_for.items():
        n = max(runs // 2 if effect == 0.01 else runs, 20)
        counts = simulate_counts("canary", effect, 0, n, accuracy_rng(seed, "canary", 0, effect), looks)
        power = umpu_by_run(counts["against"], counts["events"], counts["share"], alpha).astype(np.float64)
        oracle = rows_at_power(power.mean(axis=0), 0)
        _, part = _ours(counts, alpha)
        data[effect] = (arrivals(counts), oracle, part)
    tried = []
    for horizons, shares in grid:
        entry: dict[str, Any] = {"horizons": horizons, "shares": shares}
        for kind, (randomise, averaged) in KINDS.items():
            ratios = {}
            for effect, (per, oracle, part) in data.items():
                where, by_kind = at_horizons(per, horizons, order)
                level = GS_WEIGHT * alpha if averaged else alpha
                x = fired(where, by_kind, per.shape[2], [level * s for s in shares], randomise, order)
                got = rows_at_power((x | part if averaged else x).mean(axis=0), 0, SEARCH_POWER)
                ratios[f"{-effect * 100:+.0f}"] = got / oracle if got is not None and oracle else math.inf
            entry[f"{kind}_ratios"], entry[f"{kind}_worst"] = ratios, max(ratios.values())
        tried.append(entry)
    return best_per_kind(tried, list(KINDS), 5)


def design_grid() -> list[Design]:
    """The horizons near the shadow design's multiples of the oracle's rows (about 1.05x at -5 pp, 1.3x at
    -2 pp, 1.4x at -1 pp), scaled to the canary's oracle (6 300, 35 700 and 140 000 labelled rows), with and
    without an extra early horizon, and the shadow's splits of alpha."""
    out: list[Design] = []
    for h1, h2, h3, (f1, f2), extra in itertools.product(
        (6600, 7200), (44000, 48000), (185000, 200000), ((0.3, 0.4), (0.4, 0.3), (0.4, 0.4), (0.5, 0.3)), (False, True)
    ):
        if extra:
            out.append(((h1, 10000, h2, h3), (0.8 * f1, f1, f1 + f2, 1.0)))
        else:
            out.append(((h1, h2, h3), (f1, f1 + f2, 1.0)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--scale", type=float, default=1.0, help="times the bench's rollouts (400 / 1000 / 1000)")
    p.add_argument("--seed", type=int, default=20261126)
    p.add_argument("--design-seed", type=int, default=20261127)
    p.add_argument("--design-runs", type=int, default=200)
    p.add_argument("--null-runs", type=int, default=1000)
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument(
        "--more-null", type=int, default=0, help="only: A/A for the designs in the results file, this many runs more"
    )
    p.add_argument("--aa-check", type=int, default=0, help="only: this many x 2000 A/A, 0-5 looks late, one design")
    p.add_argument("--design", type=str, default=None, help="no search: this design, 'h1,h2,..:s1,s2,...'")
    args = p.parse_args(argv)
    started, cpu0, load0 = datetime.now(UTC), time.process_time(), os.getloadavg()
    alpha = split_alpha(ALPHA, DEFAULT_TESTS)["quality.harm"]
    if args.aa_check:
        saved = json.loads(args.output.read_text())
        h, sh = saved["designs"]["row_horizon"]
        saved["aa_check"] = {**aa_check(args.aa_check, args.seed, alpha, (tuple(h), tuple(sh))),
                             "started_utc": started.isoformat(timespec="seconds"),
                             "cpu_seconds": round(time.process_time() - cpu0, 1)}  # fmt: skip
        args.output.write_text(json.dumps(saved, indent=2) + "\n")
        print(json.dumps(saved["aa_check"]))
        return 0
    if args.more_null:  # other streams (seed + 1000) than the first A/A rows
        saved = json.loads(args.output.read_text())
        chosen = {name: (tuple(h), tuple(s)) for name, (h, s) in saved["designs"].items()}
        more = null_rows(args.more_null, args.seed + 1000, alpha, chosen)
        saved["more_null_rows"] = {"runs": args.more_null, "seed": args.seed + 1000, "rows": more,
                                   "started_utc": started.isoformat(timespec="seconds"),
                                   "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                                   "cpu_seconds": round(time.process_time() - cpu0, 1),
                                   "load_before": load0, "load_after": os.getloadavg()}  # fmt: skip
        args.output.write_text(json.dumps(saved, indent=2) + "\n")
        return 0
    designs: dict[str, Design]
    tried: list[dict[str, Any]] = []
    if args.design:
        designs = {"row_horizon": parse_design(args.design)}
    else:
        designs, tried = search(args.design_runs, args.design_seed, alpha, design_grid())
    print(
        json.dumps({"designs": designs, "search_cpu": round(time.process_time() - cpu0, 1)}),
        file=sys.stderr,
        flush=True,
    )
    rows = power_rows(args.scale, args.seed, alpha, designs)
    nulls = null_rows(args.null_runs, args.seed, alpha, designs)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    meta = {"scale": args.scale, "seed": args.seed, "design_seed": args.design_seed, "design_runs": args.design_runs,
            "null_runs": args.null_runs, "null_looks": NULL_LOOKS, "alpha": alpha,
            "started_utc": started.isoformat(timespec="seconds"),
            "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "cpu_seconds": round(time.process_time() - cpu0, 1), "user_cpu": usage.ru_utime,
            "load_before": load0, "load_after": os.getloadavg(), "designs": designs}  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({**meta, "search_top": tried, "rows": rows, "null_rows": nulls}, indent=2) + "\n")
    print(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
