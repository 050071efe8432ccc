"""Which fixed mixture should a canary step's accuracy harm test use? Issue #14's canary -1 pp row.

``QUALITY_UNPAIRED`` until 5 Dec (``CURRENT``, odds x1.17 and x1.36) was fitted to the canary -2 and -5 pp
rows (error-rate ratios x1.2 and x1.5 at 90 % base accuracy); at -1 pp (x1.1) it needed 2.5 to 2.8x the
oracle's labelled rows, the GLR bound 1.14 to 1.34x: its smallest ratio, x1.17, gains evidence on x1.1 at
about half the rate of one aimed there. This asks which mixture with a point near x1.08 to x1.1 lowers the
worst canary row, in three steps:

- ``drift``: the normal approximation: per wrong labelled row, the expected log likelihood ratio of a point
  at log odds ratio ``point`` under each row's true effect, over that of the point at the true effect (the
  fastest a single point can learn; ``l`` about half the true one gains nothing);
- ``screen``: short simulations on other draws (seed + 1; -1 pp on ``--runs`` / 5 rollouts, the others
  ``--runs`` / 2): every mixture of ``family`` (a point at log odds ratio 0.07 to 0.12 with 5 to 45 % of
  the weight, the rest on ``CURRENT``'s points or near them); picked: the smallest -1 pp ratio
  among those within 0.03 of ``CURRENT`` at -2 and -5 pp, and the smallest worst row;
- ``rows``: the best candidates and ``CURRENT`` (``current``; ``--candidates`` instead of the screen: named
  mixtures) on fresh draws (``--seed``: the
  streams of ``decision_quality.py``'s canary rows, ``accuracy_rng``; at 1 000 runs the -2 pp and -5 pp
  draws are its tables' exactly), -1 pp over 250 looks, -2 pp over 50, -5 pp over 20, labels at once (and
  5 looks late with ``--late``), the harm test alone at its alpha share (1.25 %), every mixture on the same
  draws. Each carries the Beta mixture at 0.05 (power one). The standard errors are a bootstrap over the
  rollouts (the oracle's power and each test's crossing resampled together), for each ratio and for each
  candidate's difference to ``current`` (paired: the same draws);
- ``null``: equal models in a canary, 60 looks, labels at once: the share of runs each mixture (and the
  fixed-sample binomial test repeated at every look, ``naive``) fires by look 20 and 60.

Usage: ``python bench/quality_canary_mixture.py [--runs N]`` (-1 pp: ``N`` / 2.5 rollouts, the null rows
``N``); writes ``bench/results/quality-canary-mixture.json`` and prints the tables docs/analysis.md shows.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import special, stats

from mlrollout.analysis.judge import split_alpha
from mlrollout.analysis.sequential import OddsMixture
from quality_power import (
    ALPHA,
    BASE,
    DEFAULT_TESTS,
    LABELLED,
    LOOK_SECONDS,
    RPS,
    SUB,
    Array,
    _binomial_log_lr,
    _odds_shift,
    accuracy_rng,
    beta_log_e,
    glr_log,
    rows_at_power,
    simulate,
)

RESULTS = Path(__file__).parent / "results" / "quality-canary-mixture.json"
ROWS = {0.01: 250, 0.02: 50, 0.05: 20}  # effect: looks simulated (past every candidate's 90 % crossing)
SMALL = (0.07, 0.08, 0.09, 0.1, 0.12)
SMALL_WEIGHTS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.45)
MIDDLE = (0.16, 0.2)
LARGE = (0.31,)
MIDDLE_SPLITS = (0.3, 0.4, 0.5)
BETA_WEIGHT = 0.05
CURRENT = OddsMixture(log_ratios=(0.16, 0.31), weights=(0.38, 0.57), beta_weight=BETA_WEIGHT)
"""``QUALITY_UNPAIRED`` before this bench (``current`` in the results): fitted to -2 and -5 pp only."""
SCREEN_SLACK = 0.03  # a candidate may cost -2 and -5 pp this much on the screening draws
SHARE = 0.1
BOOT = 200
NULL_LOOKS = (20, 60)


def true_log_odds(effect: float) -> float:
    """The log odds ratio of a wrong row being the candidate's, at the row's effect (the error-rate ratio's
    odds shift, whatever the share)."""
    return math.log((1 - BASE + effect) / (1 - BASE))


def drift(point: float, effect: float, share: float = SHARE) -> float:
    """Expected log likelihood ratio per wrong labelled row of the point at log odds ratio ``point`` under the
    row's effect."""
    theta_l = float(special.expit(special.logit(share) + point))
    theta = float(special.expit(special.logit(share) + true_log_odds(effect)))
    return theta * math.log(theta_l / share) + (1 - theta) * math.log((1 - theta_l) / (1 - share))


def drift_table() -> list[dict[str, Any]]:
    points = sorted({*SMALL, *MIDDLE, *LARGE, *CURRENT.log_ratios})
    return [{"log_ratio": p, **{f"{-e * 100:+.0f}pp": drift(p, e) / drift(true_log_odds(e), e) for e in ROWS}}
            for p in points]  # fmt: skip


def log_e(draw: dict[str, Any], mixture: OddsMixture) -> Array:
    """``grid_log_e`` (``quality_power``) from the draw's cached likelihood ratios and Beta share."""
    k, n, share, cache = draw["k"], draw["n"], draw["share"], draw["lr"]
    scale = (1 - mixture.beta_weight) / sum(mixture.weights)
    terms = []
    for point, w in zip(mixture.log_ratios, mixture.weights, strict=True):
        if point not in cache:
            cache[point] = _binomial_log_lr(k, n, share, _odds_shift(share, point))
        terms.append(math.log(w * scale) + cache[point])
    terms.append(math.log(mixture.beta_weight) + draw["beta"])
    out: Array = np.where(n > 0, special.logsumexp(np.stack(terms), axis=0), 0.0)
    return out


def umpu_by_run(k: Array, n: Array, share: Array, alpha: float) -> Array:
    """Per run and sub-look, the randomised one-sided binomial test's rejection probability (``umpu_power``
    before the mean over runs, kept per run for the bootstrap)."""
    c = stats.binom.isf(alpha, n, share)
    above, at = stats.binom.sf(c, n, share), stats.binom.pmf(c, n, share)
    gamma = np.where(at > 0, (alpha - above) / np.where(at > 0, at, 1.0), 0.0)
    power = np.where(k > c, 1.0, np.where(k == c, gamma, 0.0))
    out: Array = np.where(n > 0, power, 0.0).astype(np.float32)
    return out


def first_cross(x: Array, bar: float) -> Array:
    """Per run, the first sub-look at or above ``bar`` (the number of sub-looks when never)."""
    hit = x >= bar
    out: Array = np.where(hit.any(axis=1), hit.argmax(axis=1), x.shape[1])
    return out


def curve(first: Array, horizon: int) -> Array:
    """The share of runs fired by each sub-look from their first crossings."""
    out: Array = np.cumsum(np.bincount(first.astype(int), minlength=horizon + 1)[:horizon]) / first.size
    return out


def draw_row(effect: float, delay: int, runs: int, seed: int, alpha: float) -> dict[str, Any]:
    looks = ROWS[effect] + delay
    k, n, share = simulate("canary", effect, delay, runs, accuracy_rng(seed, "canary", delay, effect), looks)
    return {"effect": effect, "delay": delay, "k": k, "n": n, "share": share, "lr": {},
            "beta": beta_log_e(k, n, share), "oracle": umpu_by_run(k, n, share, alpha)}  # fmt: skip


def ratio_of(draw: dict[str, Any], first: Array, oracle_rows: float) -> float:
    rows = rows_at_power(curve(first, draw["k"].shape[1]), draw["delay"] * SUB)
    return rows / oracle_rows if rows is not None else math.inf


def family() -> list[OddsMixture]:
    """The screened mixtures: a point at ``SMALL`` with a share ``SMALL_WEIGHTS`` of the 0.95, the rest on a
    point of ``MIDDLE`` and one of ``LARGE`` split ``MIDDLE_SPLITS`` (``CURRENT``'s is 0.4), or on
    one of them alone."""
    out = []
    for s, f in itertools.product(SMALL, SMALL_WEIGHTS):
        rest = (1 - BETA_WEIGHT) * (1 - f)
        w_s = round((1 - BETA_WEIGHT) * f, 4)
        for m, lg, split in itertools.product(MIDDLE, LARGE, MIDDLE_SPLITS):
            weights = (w_s, round(rest * split, 4), round(rest * (1 - split), 4))
            out.append(OddsMixture((s, m, lg), weights, BETA_WEIGHT))
        for other in (*MIDDLE, *LARGE):
            out.append(OddsMixture((s, other), (w_s, round(rest, 4)), BETA_WEIGHT))
    return out


def screen(runs: int, seed: int, alpha: float) -> tuple[list[dict[str, Any]], list[float]]:
    """Every candidate's ratios on screening draws (``seed + 1``; -1 pp on ``runs`` / 5 rollouts, the others
    ``runs`` / 2), and ``CURRENT``'s."""
    bar = math.log(1 / alpha)
    draws = [draw_row(e, 0, max(runs // (5 if e == 0.01 else 2), 40), seed + 1, alpha) for e in ROWS]
    oracle = [rows_at_power(d["oracle"].mean(axis=0), 0) or math.nan for d in draws]

    def ratios(mixture: OddsMixture) -> list[float]:
        return [ratio_of(d, first_cross(log_e(d, mixture), bar), o) for d, o in zip(draws, oracle, strict=True)]

    out = [{"log_ratios": m.log_ratios, "weights": m.weights, "ratios": ratios(m)} for m in family()]
    current = ratios(CURRENT)
    print(f"screen: oracle {oracle}, current {current}", file=sys.stderr, flush=True)
    return out, current


def pick(screened: list[dict[str, Any]], current: list[float], top: int) -> list[dict[str, Any]]:
    """The ``top`` - 1 candidates with the smallest -1 pp ratio among those within ``SCREEN_SLACK`` of
    ``current`` at -2 and -5 pp (the best for each weight of the small point), and the one with the smallest
    worst row (unconstrained)."""
    allowed = [r for r in screened if all(r["ratios"][i] <= current[i] + SCREEN_SLACK for i in (1, 2))]
    allowed.sort(key=lambda r: (r["ratios"][0], sum(r["ratios"])))
    chosen: list[dict[str, Any]] = []
    for r in allowed:  # one per weight of the small point: the neighbours of a pick differ by noise
        if len(chosen) < top - 1 and all(c["weights"][0] != r["weights"][0] for c in chosen):
            chosen.append(r)
    best_worst = min(screened, key=lambda r: (max(r["ratios"]), sum(r["ratios"])))
    return [*chosen, best_worst] if best_worst not in chosen else chosen


def evaluate(draw: dict[str, Any], mixtures: dict[str, OddsMixture], alpha: float, seed: int) -> dict[str, Any]:
    """Ratios to the oracle for each mixture and the GLR bound, with bootstrap standard errors (paired
    differences to ``current``)."""
    bar = math.log(1 / alpha)
    k, n, share, power = draw["k"], draw["n"], draw["share"], draw["oracle"]
    lag, horizon, runs = draw["delay"] * SUB, k.shape[1], k.shape[0]
    firsts = {name: first_cross(log_e(draw, m), bar) for name, m in mixtures.items()}
    firsts["any_mixture"] = first_cross(glr_log(k, n, share), bar)

    def ratios(idx: Array) -> dict[str, float]:
        o = rows_at_power(power[idx].mean(axis=0), lag)
        out = {}
        for name, first in firsts.items():
            rows = rows_at_power(curve(first[idx], horizon), lag)
            out[name] = rows / o if rows is not None and o else math.inf
        return out

    point = ratios(np.arange(runs))
    rng = np.random.default_rng([seed, 41, int(draw["effect"] * 1e4), draw["delay"]])
    boots = [ratios(rng.integers(0, runs, runs)) for _ in range(BOOT)]
    oracle_rows = rows_at_power(power.mean(axis=0), lag)
    row: dict[str, Any] = {"design": "canary", "effect_pp": -draw["effect"] * 100, "delay_looks": draw["delay"],
                           "runs": runs, "looks": horizon // SUB, "alpha": alpha, "oracle_rows_90": oracle_rows,
                           "oracle_look_90": None if oracle_rows is None else
                           math.ceil(oracle_rows / (RPS * LOOK_SECONDS * LABELLED)) + draw["delay"]}  # fmt: skip
    for name, value in point.items():
        samples = np.array([b[name] for b in boots])
        row[name] = value
        row[f"{name}_se"] = float(np.std(samples[np.isfinite(samples)])) if np.isfinite(samples).any() else None
        row[f"{name}_reached"] = float(np.isfinite(samples).mean())
        if name not in ("current", "any_mixture"):
            diff = samples - np.array([b["current"] for b in boots])
            finite = diff[np.isfinite(diff)]
            row[f"{name}_minus_current_se"] = float(np.std(finite)) if finite.size else None
    return row


def null_rows(runs: int, seed: int, alpha: float, mixtures: dict[str, OddsMixture]) -> list[dict[str, Any]]:
    """Equal models in a 10 % canary, labels at once: the share of runs each test fires by look 20 and 60."""
    bar = math.log(1 / alpha)
    k, n, share = simulate("canary", 0.0, 0, runs, accuracy_rng(seed, "canary", 0, 0.0), max(NULL_LOOKS))
    draw = {"k": k, "n": n, "share": share, "lr": {}, "beta": beta_log_e(k, n, share)}
    at_looks = slice(SUB - 1, None, SUB)
    tests = {name: log_e(draw, m)[:, at_looks] >= bar for name, m in mixtures.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        tests["naive"] = (stats.binom.sf(k[:, at_looks] - 1, n[:, at_looks], share[:, at_looks]) <= alpha) & (
            n[:, at_looks] > 0
        )
    row: dict[str, Any] = {"design": "canary", "effect_pp": 0.0, "delay_looks": 0, "runs": runs, "alpha": alpha,
                           "null": True}  # fmt: skip
    for name, fired in tests.items():
        for looks in NULL_LOOKS:
            row[f"{name}_by_{looks}"] = float(fired[:, :looks].any(axis=1).mean())
    return [row]


def parse_mixture(text: str) -> OddsMixture:
    """``0.09:2,0.16:1,0.31:2`` (log odds ratio: weight, ...) with the Beta share at ``BETA_WEIGHT``."""
    pairs = [p.split(":") for p in text.split(",")]
    return OddsMixture(tuple(float(a) for a, _ in pairs), tuple(float(b) for _, b in pairs), BETA_WEIGHT)


def table(doc: dict[str, Any]) -> str:
    names = list(doc["mixtures"])
    lines = ["| row | runs | oracle's labelled rows | " + " | ".join(names) + " | any mixture (GLR) |",
             "| --- |" + " --- |" * (len(names) + 3)]  # fmt: skip
    for r in doc["rows"]:
        cells = []
        for name in [*names, "any_mixture"]:
            cell = f"{r[name]:.2f}x (±{r[f'{name}_se'] or math.nan:.2f})"
            if f"{name}_minus_current_se" in r:
                cell += f" [{r[name] - r['current']:+.2f} ±{r[f'{name}_minus_current_se'] or math.nan:.2f}]"
            cells.append(cell)
        lines.append(f"| {r['effect_pp']:+.0f} pp, labels {r['delay_looks']} late, {r['looks']} looks | {r['runs']} | "
                     f"{r['oracle_rows_90']:.0f} | " + " | ".join(cells) + " |")  # fmt: skip
    for r in doc["null"]:
        cells = [f"{r[f'{t}_by_20']:.2%} / {r[f'{t}_by_60']:.2%}" for t in [*names, "naive"]]
        lines.append(f"| A/A, fired by look 20 / 60 | {r['runs']} | - | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--seed", type=int, default=20261126)
    p.add_argument("--candidates", nargs="*", default=None, help="mixtures to simulate, no screen: 0.09:0.2,0.31:0.75")
    p.add_argument("--top", type=int, default=3, help="screened candidates simulated on fresh draws")
    p.add_argument("--late", action="store_true", help="also the rows with labels 5 looks late")
    p.add_argument("--null-runs", type=int, default=None)
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    started = time.monotonic()
    alpha = split_alpha(ALPHA, DEFAULT_TESTS)["quality.harm"]
    doc: dict[str, Any] = {"runs": args.runs, "seed": args.seed, "drift": drift_table()}
    mixtures = {"current": CURRENT}
    if args.candidates is None:
        screened, current = screen(args.runs, args.seed, alpha)
        doc["screen"] = {"current": current, "candidates": screened}
        for i, s in enumerate(pick(screened, current, args.top)):
            mixtures[f"candidate_{i + 1}"] = OddsMixture(tuple(s["log_ratios"]), tuple(s["weights"]), BETA_WEIGHT)
    else:
        for i, text in enumerate(args.candidates):
            mixtures[f"candidate_{i + 1}"] = parse_mixture(text)
    doc["mixtures"] = {name: {"log_ratios": m.log_ratios, "weights": m.weights, "beta_weight": m.beta_weight}
                       for name, m in mixtures.items()}  # fmt: skip
    print(json.dumps(doc["mixtures"]), file=sys.stderr, flush=True)
    rows = []
    for delay in (0, 5) if args.late else (0,):
        for effect in ROWS:
            runs = int(args.runs / 2.5) if effect == 0.01 else args.runs
            draw = draw_row(effect, delay, runs, args.seed, alpha)
            rows.append(evaluate(draw, mixtures, alpha, args.seed))
            del draw
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    doc["rows"] = rows
    doc["null"] = null_rows(args.null_runs or args.runs, args.seed, alpha, mixtures)
    doc["seconds"] = round(time.monotonic() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=2) + "\n")
    print(table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
