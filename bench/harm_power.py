"""How fast can a valid test catch a doubled error rate? Our error-harm test against two upper bounds.

Same traffic as ``decision_quality.py`` (Poisson requests at 100/s, 10% to the candidate, one look a
minute; binomial errors). For each x2 scenario, the share of runs in which the harm test fires by look 3
and by look 5:

- ``ours``: ``harm_log_e`` (the mixture e-process ``judge()`` uses) at the alpha share ``judge()`` gives
  error harm under the default policy;
- ``any mixture``: the conditional-binomial likelihood ratio maximised over every rate ratio above 1 (the
  GLR) crossing the same bar. A mixture e-value is an average of these likelihood ratios, so it is at most
  their maximum: no mixing distribution, however centred, fires more often than this;
- ``any test``: the randomised one-sided conditional binomial test run once at that look at level alpha,
  the uniformly most powerful unbiased test for comparing two rates (Lehmann & Romano, ch. 4.5). An
  unbiased rule that rolls identical tracks back with probability at most alpha by that look, sequential
  or not, cannot fire more often.

Each at an even split of alpha over the four default tests, at our (weighted) share and at the whole
alpha. Usage: ``python bench/harm_power.py [--runs N]``; writes ``bench/results/harm-power.json`` and
prints a Markdown table (docs/analysis.md, "Decision quality").
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from mlrollout.analysis.judge import split_alpha
from mlrollout.analysis.sequential import harm_log_e
from sim_cli import simulation_main

RESULTS = Path(__file__).parent / "results" / "harm-power.json"
ALPHA = 0.05
# the tests judge() budgets for the default policy on a snapshot with predictions (decision_quality.py)
DEFAULT_TESTS = [("errorRate.harm", True), ("errorRate.slo", False), ("latency.harm", True), ("predictionDrift", False)]
SCENARIOS = (("errors x2 (1->2%)", 0.01, 0.02), ("errors x2 (2->4%)", 0.02, 0.04))
LOOKS = (3, 5)

Array = npt.NDArray[np.float64]


def simulate(base: float, candidate: float, runs: int, looks: int, rng: np.random.Generator) -> tuple[Array, ...]:
    """Cumulative (candidate errors, all errors, candidate share of requests) per run and look."""
    n_c = rng.poisson(100 * 0.1 * 60, (runs, looks))
    n_s = rng.poisson(100 * 0.9 * 60, (runs, looks))
    k_c = np.cumsum(rng.binomial(n_c, candidate), axis=1)
    k_s = np.cumsum(rng.binomial(n_s, base), axis=1)
    n_c, n_s = np.cumsum(n_c, axis=1), np.cumsum(n_s, axis=1)
    return k_c.astype(float), (k_c + k_s).astype(float), n_c / (n_c + n_s)


def glr(k: Array, n: Array, share: Array) -> Array:
    """log of the likelihood ratio maximised over candidate event shares above ``share``."""
    theta = np.clip(np.maximum(k / np.maximum(n, 1), share), 1e-12, 1 - 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = k * np.log(theta / share) + (n - k) * np.log((1 - theta) / (1 - share))
    return np.nan_to_num(out)


def umpu_power(k: Array, n: Array, share: Array, alpha: float) -> float:
    """Mean rejection probability of the randomised one-sided binomial test of ``share`` at level alpha."""
    c = stats.binom.isf(alpha, n, share)  # smallest c with P(K > c) <= alpha
    above, at = stats.binom.sf(c, n, share), stats.binom.pmf(c, n, share)
    gamma = np.where(at > 0, (alpha - above) / np.where(at > 0, at, 1.0), 0.0)
    return float(np.mean(np.where(k > c, 1.0, np.where(k == c, gamma, 0.0))))


def run(runs: int, seed: int) -> list[dict[str, Any]]:
    alpha_harm = split_alpha(ALPHA, DEFAULT_TESTS)["errorRate.harm"]
    rows = []
    for name, base, candidate in SCENARIOS:
        rng = np.random.default_rng([seed, int(base * 1e4)])
        k, n, share = simulate(base, candidate, runs, max(LOOKS), rng)
        ours = np.array([[harm_log_e(int(k[r, t]), int(n[r, t]), float(share[r, t])) for t in range(max(LOOKS))]
                         for r in range(runs)])  # fmt: skip
        g = glr(k, n, share)
        for alpha in (ALPHA / len(DEFAULT_TESTS), alpha_harm, ALPHA):  # the even split, ours, all of alpha
            bar = math.log(1 / alpha)
            row: dict[str, Any] = {"scenario": name, "alpha": alpha}
            for look in LOOKS:
                row[f"ours_by_{look}"] = float((ours[:, :look] >= bar).any(axis=1).mean())
                row[f"any_mixture_by_{look}"] = float((g[:, :look] >= bar).any(axis=1).mean())
                row[f"any_test_at_{look}"] = umpu_power(k[:, look - 1], n[:, look - 1], share[:, look - 1], alpha)
            rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | alpha | ours by look 3 / 5 | any mixture by look 3 / 5 | any test at look 3 / 5 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['alpha']:.4g} | {r['ours_by_3']:.1%} / {r['ours_by_5']:.1%} | "
            f"{r['any_mixture_by_3']:.1%} / {r['any_mixture_by_5']:.1%} | "
            f"{r['any_test_at_3']:.1%} / {r['any_test_at_5']:.1%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return simulation_main(__doc__, run, table, RESULTS, 20_000, argv)


if __name__ == "__main__":
    sys.exit(main())
