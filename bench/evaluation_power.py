"""How often does ``mlrollout evaluate`` pass, fail or call "better" the wrong candidate, and how often the right one?

The offline gate's decision rule as implemented (``metrics.Accuracy`` -> ``compare.versus_stable`` and
``compare.versus_baseline`` -> ``compare.verdict``, the CLI's defaults: alpha 0.05, relative margin 1% of
stable's accuracy, the majority-class baseline), on simulated holdouts of 200, 1000 and 5000 rows at stable
accuracies of 0.8 and 0.95. The two models' answers are *correlated* as real candidates' are: they disagree
on 40% of their errors' worth of rows (at 0.95, on 4% of the rows; at 0.8, on 16%) and agree on the rest.
Candidates: exactly at the margin (``-m``), equivalent (0), better by 1 and 2 pp, worse by 1 and 2 pp.

For each: the share of holdouts the rule **passes** (the verdict), calls **better** (the interval above 0)
and **fails** (worse beyond the margin shown), side by side with two naive rules on the same rows:

- ``unpaired``: the two-proportion Wald interval (the models as if scored on different rows), the same
  pass / fail / better rule on it;
- ``point``: pass when the candidate's accuracy is >= stable's, fail otherwise (no interval at all).

The interval is two-sided at 1 - alpha, so each one-sided error (passing a candidate at the margin, calling
an equivalent one better, failing one at the margin) has nominal rate alpha / 2 = 2.5%.

Second part: the paired bootstrap's coverage (what the gate decides MAE, RMSE, log loss and balanced
accuracy with), through ``metrics.Mae`` and ``metrics.LogLoss`` (2000 resamples, seed 0, as the CLI), the
BCa interval (the CLI's) and the percentile interval (the CLI's before it) side by side on the same
holdouts and resamples. Rows are drawn from a fixed population of a million rows whose true difference is
known: for MAE, Student-t(5) errors correlated 0.9 with the candidate exactly at the margin (1% worse), so
a miss below is a false pass; for log loss, a binary classifier pair on the same latent score. Reported:
coverage (nominal 95%, the issue asks >= 93%), each tail's miss rate (nominal 2.5%), and the mean width
against the unpaired normal interval of the two means.

Usage: ``python bench/evaluation_power.py [--runs N]`` (runs per accuracy cell; the bootstrap part runs
N / 2 holdouts, fewer at 5000 rows); writes ``bench/results/evaluation-power.json`` and prints Markdown
tables (docs/evaluation.md, "Measured").
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mlrollout_serving.contract.evaluation import MarginSpec
from mlrollout_serving.evaluation import compare
from mlrollout_serving.evaluation.metrics import Accuracy, LogLoss, Mae, Rows, Settings
from mlrollout_serving.evaluation.stats import z_value
from sim_cli import simulation_main

RESULTS = Path(__file__).parent / "results" / "evaluation-power.json"
ALPHA = 0.05
MARGIN = MarginSpec(relative=0.01)  # the CLI's default
SIZES = (200, 1000, 5000)
BASES = (0.8, 0.95)
UNSHARED = 0.4  # the share of the two models' errors on which they disagree
SHIFTS: tuple[tuple[str, float | None], ...] = (
    ("at margin", None), ("equivalent", 0.0), ("better 1pp", 0.01), ("better 2pp", 0.02),
    ("worse 1pp", -0.01), ("worse 2pp", -0.02),
)  # fmt: skip
POPULATION = 1_000_000
BOOTSTRAP_ROW_BUDGET = 3_000_000  # holdouts x rows per bootstrap cell: keeps the run to a few minutes
SETTINGS = Settings(alpha=ALPHA, resamples=2000, seed=0)  # the CLI's defaults
INTERVALS = ("percentile", "bca")  # the bootstrap interval before issue #16's follow-up, and the CLI's now

Bools = npt.NDArray[np.bool_]
Column = npt.NDArray[Any]


# -- accuracy: the gate ----------------------------------------------------------------------------------


def cells(base: float, delta: float) -> tuple[float, float, float, float]:
    """P(both right), P(stable only), P(candidate only), P(both wrong) for accuracies base, base + delta."""
    cand = base + delta
    disagree = max(UNSHARED * ((1 - base) + (1 - cand)), abs(delta))
    p01, p10 = (disagree + delta) / 2, (disagree - delta) / 2
    p11 = cand - p01
    return p11, p10, p01, 1.0 - p11 - p10 - p01


def holdout(n: int, probs: tuple[float, ...], rng: np.random.Generator) -> tuple[Bools, Bools, Bools]:
    """One holdout: the label (binary, 60/40), and whether each model got each row right."""
    kind = rng.choice(4, size=n, p=probs)
    stable = (kind == 0) | (kind == 1)
    candidate = (kind == 0) | (kind == 2)
    truth = rng.random(n) < 0.4
    return truth, stable, candidate


def ours(truth: Bools, stable: Bools, candidate: Bools) -> tuple[str, bool]:
    """The CLI's verdict and whether its stable check says "better" (run._checks without the I/O)."""
    rows = Rows(truth, stable, candidate)
    metric = Accuracy("i")
    versus = compare.versus_stable("accuracy", metric.versus_stable(rows, SETTINGS), MARGIN, ALPHA)
    paired = metric.versus_baseline(rows, SETTINGS)
    base = compare.versus_baseline("accuracy", paired, ALPHA, "majority", metric.describe_baseline(rows))
    verdict, _ = compare.verdict([versus, base])
    return verdict, versus.decision == "pass" and (versus.interval or (0.0, 0.0))[0] > 0


def unpaired(stable: Bools, candidate: Bools) -> tuple[str, bool]:
    """The same rule on the two-proportion Wald interval, as if the models had been scored on different rows."""
    n = len(stable)
    ps, pc = float(stable.mean()), float(candidate.mean())
    se = math.sqrt(ps * (1 - ps) / n + pc * (1 - pc) / n)
    low, high = pc - ps - z_value(ALPHA) * se, pc - ps + z_value(ALPHA) * se
    allowed = MARGIN.allowed(ps)
    decision = "pass" if low >= -allowed else "fail" if high < -allowed else "inconclusive"
    return decision, low > 0


def point(stable: Bools, candidate: Bools) -> tuple[str, bool]:
    better = int(candidate.sum()) >= int(stable.sum())
    return ("pass" if better else "fail"), int(candidate.sum()) > int(stable.sum())


def gate(runs: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    for base in BASES:
        for n in SIZES:
            for name, shift in SHIFTS:
                delta = -MARGIN.allowed(base) if shift is None else shift
                rng = np.random.default_rng([seed, int(base * 100), n, round(delta * 1e4) + 1000])
                probs = cells(base, delta)
                counts = {rule: {"pass": 0, "fail": 0, "better": 0} for rule in ("ours", "unpaired", "point")}
                for _ in range(runs):
                    truth, stable, candidate = holdout(n, probs, rng)
                    for rule, (decision, better) in (
                        ("ours", ours(truth, stable, candidate)),
                        ("unpaired", unpaired(stable, candidate)),
                        ("point", point(stable, candidate)),
                    ):
                        if decision in ("pass", "fail"):
                            counts[rule][decision] += 1
                        counts[rule]["better"] += better
                row: dict[str, Any] = {"part": "accuracy", "base": base, "rows": n, "candidate": name,
                                       "delta": round(delta, 6), "margin": MARGIN.allowed(base)}  # fmt: skip
                for rule, c in counts.items():
                    for what, k in c.items():
                        row[f"{rule}_{what}"] = k / runs
                rows.append(row)
    return rows


# -- the paired bootstrap's coverage ----------------------------------------------------------------------


def mae_population(rng: np.random.Generator) -> tuple[Column, Column, Column]:
    """Per-row absolute errors of two regressors (t(5) errors, correlation 0.9), the candidate scaled so its
    population MAE is exactly 1% above stable's: at the CLI's default margin."""
    z1, z2 = rng.standard_t(5, POPULATION), rng.standard_t(5, POPULATION)
    stable = np.abs(z1)
    candidate = np.abs(0.9 * z1 + math.sqrt(1 - 0.81) * z2)
    candidate *= 1.01 * stable.mean() / candidate.mean()
    return np.zeros(POPULATION), stable.astype(np.float32), candidate.astype(np.float32)


def log_loss_population(rng: np.random.Generator) -> tuple[Column, Column, Column]:
    """Per-row log losses of two classifiers of the same latent score, the candidate with a little more noise."""
    latent = rng.normal(0.0, 2.0, POPULATION)
    truth = rng.random(POPULATION) < 1 / (1 + np.exp(-latent))
    shared = rng.normal(0.0, 0.7, POPULATION)
    losses = []
    for noise in (0.3, 0.35):
        score = latent + shared + rng.normal(0.0, noise, POPULATION)
        p_true = 1 / (1 + np.exp(-np.where(truth, score, -score)))
        losses.append((-np.log(np.clip(p_true, 1e-15, 1.0))).astype(np.float32))
    return truth.astype(np.int32), losses[0], losses[1]


def coverage(runs: int, seed: int) -> list[dict[str, Any]]:
    """Both bootstrap intervals on the same holdouts and the same resamples (the seed is the CLI's), beside
    the unpaired normal interval: one row per metric, size and interval."""
    rows = []
    for name, metric, make in (("mae", Mae("i"), mae_population), ("logLoss", LogLoss("i"), log_loss_population)):
        truth, stable, candidate = make(np.random.default_rng([seed, len(name)]))
        true_effect = float(candidate.mean(dtype=np.float64) - stable.mean(dtype=np.float64))
        true_level = float(stable.mean(dtype=np.float64))
        for n in SIZES:
            holdouts = max(50, min(runs // 2, BOOTSTRAP_ROW_BUDGET // n))
            rng = np.random.default_rng([seed, n, len(name)])
            counts = {interval: {"below": 0, "above": 0, "passed": 0} for interval in INTERVALS}
            widths: dict[str, list[float]] = {interval: [] for interval in INTERVALS}
            naive_widths, naive_cover = [], 0
            for _ in range(holdouts):
                idx = rng.integers(0, POPULATION, n)
                sample = Rows(truth[idx], stable[idx], candidate[idx])
                for interval, c in counts.items():
                    paired = metric.versus_stable(sample, SETTINGS._replace(interval=interval))
                    c["below"] += true_effect < paired.low
                    c["above"] += true_effect > paired.high
                    c["passed"] += compare.versus_stable(name, paired, MARGIN, ALPHA).decision == "pass"
                    widths[interval].append(paired.high - paired.low)
                s, c2 = sample.stable.astype(np.float64), sample.candidate.astype(np.float64)
                half = z_value(ALPHA) * math.sqrt(s.var(ddof=1) / n + c2.var(ddof=1) / n)
                naive_widths.append(2 * half)
                naive_cover += abs(c2.mean() - s.mean() - true_effect) <= half
            for interval, c in counts.items():
                rows.append({
                    "part": "bootstrap", "metric": name, "interval": interval, "rows": n, "holdouts": holdouts,
                    "true_effect": true_effect, "true_stable": true_level,
                    "true_margin": MARGIN.allowed(true_level), "at_margin": name == "mae",
                    "coverage": 1 - (c["below"] + c["above"]) / holdouts,
                    "too_low": c["above"] / holdouts,  # the true difference above the interval
                    "too_high": c["below"] / holdouts,
                    "passed": c["passed"] / holdouts,
                    "mean_width": float(np.mean(widths[interval])),
                    "unpaired_coverage": naive_cover / holdouts,
                    "unpaired_mean_width": float(np.mean(naive_widths)),
                })  # fmt: skip
    return rows


def run(runs: int, seed: int) -> list[dict[str, Any]]:
    return gate(runs, seed) + coverage(runs, seed)


def pct(x: float) -> str:
    return f"{x:.1%}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| stable acc. | rows | candidate | ours: pass / better / fail | unpaired: pass / better / fail | "
        "point: pass / fail |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["part"] != "accuracy":
            continue
        lines.append(
            f"| {r['base']:g} | {r['rows']} | {r['candidate']} ({r['delta'] * 100:+.2f} pp) | "
            f"{pct(r['ours_pass'])} / {pct(r['ours_better'])} / {pct(r['ours_fail'])} | "
            f"{pct(r['unpaired_pass'])} / {pct(r['unpaired_better'])} / {pct(r['unpaired_fail'])} | "
            f"{pct(r['point_pass'])} / {pct(r['point_fail'])} |"
        )
    lines += [
        "",
        "| metric (true effect / margin) | rows | holdouts | interval | coverage (nominal 95%) | "
        "too low / too high (nominal 2.5% each) | passed | mean width, paired / unpaired | unpaired coverage |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["part"] != "bootstrap":
            continue
        lines.append(
            f"| {r['metric']} ({r['true_effect']:+.4f} / {r['true_margin']:.4f}) | {r['rows']} | {r['holdouts']} | "
            f"{r['interval']} | {pct(r['coverage'])} | {pct(r['too_low'])} / {pct(r['too_high'])} | "
            f"{pct(r['passed'])} | "
            f"{r['mean_width']:.4f} / {r['unpaired_mean_width']:.4f} | {pct(r['unpaired_coverage'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return simulation_main(__doc__, run, table, RESULTS, 2000, argv)


if __name__ == "__main__":
    sys.exit(main())
