"""Rows a model gives no prediction for: left out of its quality sums, or counted against it.

A regressor that answers NaN (or a request it fails that a fallback rescues) is no error to the error-rate
tests: the client got a 200. Only the quality evidence can see it, and only if the rows count. Traffic as
in ``quality_power.py`` (30 % of 100 requests/s labelled, one look a minute, 20 looks, labels at once;
each row's absolute error ``|N(0, 1)|``, the candidate's correlated 0.9 with stable's in shadow), clip bound
``B`` = 5. The candidate is as good as stable on every row, except that it answers nothing on the share
``f`` of rows where its error would have been largest (the hard rows). Two counting rules feed the same
``quality.harm`` e-process (``paired_mae_log_e`` / ``unpaired_mae_log_e``) at its default alpha share:

- ``left_out``: the gateway before this change: those rows are in no count and no sum, so the candidate's
  MAE is computed on the easy rows it answered (it looks *better* the more it fails);
- ``counted``: the rule now: each is a labelled row with a clipped error of B.

Rows: the share of runs rolled back within 5 and 20 looks, and the mean clipped-MAE difference (candidate
minus stable) each rule reports at look 20; ``f`` = 0 is the A/A line, and ``both`` rows have *both*
models failing their hardest ``f`` (an A/A under the new rule: false rollbacks must stay within alpha).

Usage: ``python bench/quality_failures.py [--runs N]``; writes ``bench/results/quality-failures.json``.
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mlrollout.analysis.judge import split_alpha
from mlrollout.analysis.quality import Labels, Pairs, paired_mae_log_e, unpaired_mae_log_e
from sim_cli import simulation_main

RESULTS = Path(__file__).parent / "results" / "quality-failures.json"
ALPHA = 0.05
DEFAULT_TESTS = [("errorRate.harm", True), ("errorRate.slo", False), ("latency.harm", True),
                 ("predictionDrift", False), ("quality.harm", True)]  # fmt: skip
RPS, LOOK_SECONDS, LOOKS, LABELLED = 100, 60, 20, 0.30
BOUND = 5.0
CORRELATION = 0.9
CANARY_SHARE = 0.1
FAILING = (0.0, 0.005, 0.02, 0.05)
DESIGNS = ("shadow", "canary")
RULES = ("left_out", "counted")

Array = npt.NDArray[np.float64]


def _hard(errors: Array, share: float) -> npt.NDArray[np.bool_]:
    """The rows among the share ``share`` of largest errors in each run (the hard rows a model fails)."""
    if share <= 0:
        return np.zeros(errors.shape, dtype=bool)
    return errors >= np.quantile(errors, 1 - share, axis=1, keepdims=True)


def _sums(errors: Array, failed: npt.NDArray[np.bool_], rule: str) -> tuple[Array, Array, Array]:
    """Rows, clipped sum and clipped sum of squares per run under ``rule``."""
    clipped = np.where(failed, BOUND, np.minimum(errors, BOUND))
    keep = ~failed if rule == "left_out" else np.ones(errors.shape, dtype=bool)
    return keep.sum(axis=1).astype(float), (clipped * keep).sum(axis=1), (clipped * clipped * keep).sum(axis=1)


def simulate(design: str, share: float, both: bool, rule: str, runs: int, rng: np.random.Generator) -> Array:
    """Per run and look, the harm log e-value from the cumulative sums the rule gives the analysis; and the
    clipped-MAE difference at the last look (the last column)."""
    per_look = int(RPS * LOOK_SECONDS * LABELLED)
    n_c = per_look if design == "shadow" else int(per_look * CANARY_SHARE)
    n_s = per_look if design == "shadow" else per_look - n_c
    totals = np.zeros((runs, 9))  # stable rows, sum, sumsq; candidate rows, sum, sumsq; pairs: rows, d, d^2
    out = np.zeros((runs, LOOKS + 1))
    for look in range(LOOKS):
        latent = rng.standard_normal((runs, n_s))
        e_s = np.abs(latent)
        other = latent[:, :n_c] if design == "shadow" else rng.standard_normal((runs, n_c))
        rho = CORRELATION if design == "shadow" else 0.0
        e_c = np.abs(rho * other + math.sqrt(1 - rho * rho) * rng.standard_normal((runs, n_c)))
        fail_c = _hard(e_c, share)
        fail_s = _hard(e_s, share) if both else np.zeros(e_s.shape, dtype=bool)
        s_rows, s_sum, s_sq = _sums(e_s, fail_s, rule)
        c_rows, c_sum, c_sq = _sums(e_c, fail_c, rule)
        if design == "shadow":  # one label scores both: a pair needs both sides under the old rule
            keep = ~(fail_s | fail_c) if rule == "left_out" else np.ones(e_c.shape, dtype=bool)
            d = np.where(fail_c, BOUND, np.minimum(e_c, BOUND)) - np.where(fail_s, BOUND, np.minimum(e_s, BOUND))
            pairs = [keep.sum(axis=1).astype(float), (d * keep).sum(axis=1), (d * d * keep).sum(axis=1)]
        else:
            pairs = [np.zeros(runs)] * 3
        totals = totals + np.stack([s_rows, s_sum, s_sq, c_rows, c_sum, c_sq, *pairs], axis=1)
        for r in range(runs):
            t = totals[r]
            if design == "shadow":
                p = Pairs(both_right=int(t[6]), stable_clipped_sum=0.0, candidate_clipped_sum=float(t[7]),
                          clipped_diff_sumsq=float(t[8]))  # fmt: skip
                out[r, look] = paired_mae_log_e(p, BOUND)
            else:
                stable = Labels(int(t[0]), 0, 0.0, 0.0, float(t[1]), float(t[2]))
                candidate = Labels(int(t[3]), 0, 0.0, 0.0, float(t[4]), float(t[5]))
                out[r, look] = unpaired_mae_log_e(stable, candidate, BOUND)
    if design == "shadow":
        out[:, LOOKS] = totals[:, 7] / totals[:, 6]
    else:
        out[:, LOOKS] = totals[:, 4] / totals[:, 3] - totals[:, 1] / totals[:, 0]
    return out


def run(runs: int, seed: int) -> list[dict[str, Any]]:
    alpha = split_alpha(ALPHA, DEFAULT_TESTS)["quality.harm"]
    bar = math.log(1 / alpha)
    rows = []
    cases = [(d, f, False) for d, f in itertools.product(DESIGNS, FAILING)]
    cases += [(d, 0.05, True) for d in DESIGNS]
    for design, share, both in cases:
        for rule in RULES:
            rng = np.random.default_rng([seed, DESIGNS.index(design), int(share * 1e4), int(both)])
            out = simulate(design, share, both, rule, runs, rng)
            fired = out[:, :LOOKS] >= bar
            rows.append({
                "design": design, "failing_share": share, "both_fail": both, "rule": rule, "alpha": alpha,
                "bound": BOUND, "rolled_back_by_5": float(fired[:, :5].any(axis=1).mean()),
                "rolled_back_by_20": float(fired.any(axis=1).mean()),
                "mae_difference_at_20": float(out[:, LOOKS].mean()),
            })  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| design | candidate fails its hardest | rule | rolled back by look 5 / 20 | clipped MAE diff., look 20 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        who = f"{r['failing_share']:.1%}" + (" (stable too)" if r["both_fail"] else "")
        lines.append(f"| {r['design']} | {who} | {r['rule']} | {r['rolled_back_by_5']:.1%} / "
                     f"{r['rolled_back_by_20']:.1%} | {r['mae_difference_at_20']:+.4f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return simulation_main(__doc__, run, table, RESULTS, 400, argv)


if __name__ == "__main__":
    sys.exit(main())
