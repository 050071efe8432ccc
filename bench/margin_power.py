"""How often can a valid rule promote a healthy candidate while holding x1.3 and x1.5 error rates back?

The promotion side of the error rate (``errorRate.nonInferiority``) against two upper bounds, on the traffic
of ``decision_quality.py`` (Poisson requests at 100/s, 10% to the candidate, one look a minute, 20 looks;
binomial errors; the error SLO set aside). For each base rate, the share of runs promoted by look 20:

- ``ours``: ``error_rate_results`` with the default margin (30% of stable's rate, at least 0.25 pp) at the
  policy's alpha, for identical tracks (A/A) and for candidates erring x1.3 and x1.5 as often;
- ``any mixture``: for a margin of exactly x1.3 (x1.5), the likelihood ratio maximised over every rate ratio
  below it (the GLR) crossing ``1/alpha`` by look 20. Any mixture e-value, and so any confidence sequence
  built from one, is at most this, so no such rule that keeps its x1.3 (x1.5) promotions within alpha
  promotes A/A more often;
- ``any test``: the randomised conditional binomial test of "ratio >= x1.3" (x1.5) run once, at look 20, at
  level alpha: the uniformly most powerful unbiased test for comparing two rates (Lehmann & Romano 2005,
  section 4.5). Conditional on the request counts, look 20's error counts are sufficient for the two rates,
  so no unbiased rule that promotes x1.3 (x1.5) in at most alpha of runs by look 20, sequential or not,
  promotes A/A more often by then.

Usage: ``python bench/margin_power.py [--runs N]``; writes ``bench/results/margin-power.json`` and prints a
Markdown table (docs/analysis.md, "Decision quality").
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from harm_power import glr, umpu_power
from mlrollout.analysis.errors import ErrorRateSettings, error_rate_results
from mlrollout.analysis.snapshot import TrackCounts
from mlrollout.api.rolloutpolicy import Margins
from sim_cli import simulation_main

RESULTS = Path(__file__).parent / "results" / "margin-power.json"
ALPHA = 0.05
LOOKS = 20
BASES = (0.001, 0.01, 0.03, 0.2)
RATIOS = (1.0, 1.3, 1.5)

Array = npt.NDArray[np.float64]


def simulate(base: float, ratio: float, runs: int, rng: np.random.Generator) -> tuple[Array, Array, Array, Array]:
    """Cumulative requests and errors per run and look: candidate, stable."""
    n_c = rng.poisson(100 * 0.1 * 60, (runs, LOOKS))
    n_s = rng.poisson(100 * 0.9 * 60, (runs, LOOKS))
    k_c = np.cumsum(rng.binomial(n_c, base * ratio), axis=1)
    k_s = np.cumsum(rng.binomial(n_s, base), axis=1)
    return np.cumsum(n_c, axis=1), np.cumsum(n_s, axis=1), k_c.astype(float), k_s.astype(float)


def ours(n_c: Array, n_s: Array, k_c: Array, k_s: Array) -> float:
    """Share of runs whose non-inferiority check passes by look 20 (the judge's own code)."""
    settings = ErrorRateSettings(ALPHA, ALPHA, ALPHA, Margins().error_rate, None, 100)
    promoted = 0
    for r in range(n_c.shape[0]):
        for t in range(LOOKS):
            stable = TrackCounts(int(n_s[r, t]), int(k_s[r, t]), None, None, None)
            candidate = TrackCounts(int(n_c[r, t]), int(k_c[r, t]), None, None, None)
            ni = next(
                m for m in error_rate_results(stable, candidate, settings) if m.name == "errorRate.nonInferiority"
            )
            if ni.decision == "pass":
                promoted += 1
                break
    return float(promoted / n_c.shape[0])


def bounds(n_c: Array, n_s: Array, k_c: Array, k_s: Array, margin: float) -> tuple[float, float]:
    """(any mixture by look 20, any test at look 20) for promoting against a rate-ratio margin ``margin``."""
    share = n_c / (n_c + n_s)
    theta = margin * share / (margin * share + 1 - share)  # the candidate's share of errors at the margin
    n, below = k_c + k_s, (k_s).astype(float)  # promotion is the lower tail of k_c: the upper tail of k_s
    mixture = (glr(below, n, 1 - theta) >= np.log(1 / ALPHA)).any(axis=1).mean()
    test = umpu_power(below[:, -1], n[:, -1], 1 - theta[:, -1], ALPHA)
    return float(mixture), float(test)


def run(runs: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    for base in BASES:
        row: dict[str, Any] = {"base": base}
        for ratio in RATIOS:
            rng = np.random.default_rng([seed, int(base * 1e4), int(ratio * 10)])
            counts = simulate(base, ratio, runs, rng)
            row[f"ours_x{ratio:g}"] = ours(*counts)
            if ratio == 1.0:
                for margin in (1.3, 1.5):
                    row[f"any_mixture_x{margin:g}"], row[f"any_test_x{margin:g}"] = bounds(*counts, margin)
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| base rate | ours: A/A / x1.3 / x1.5 promoted | any mixture, A/A, holding x1.3 / x1.5 | "
        "any test, A/A, holding x1.3 / x1.5 |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['base']:.1%} | {r['ours_x1']:.1%} / {r['ours_x1.3']:.1%} / {r['ours_x1.5']:.1%} | "
            f"{r['any_mixture_x1.3']:.1%} / {r['any_mixture_x1.5']:.1%} | "
            f"{r['any_test_x1.3']:.1%} / {r['any_test_x1.5']:.1%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return simulation_main(__doc__, run, table, RESULTS, 2000, argv)


if __name__ == "__main__":
    sys.exit(main())
