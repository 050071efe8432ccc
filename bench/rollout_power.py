"""A whole rollout, not one step: carried evidence (ours) against splitting alpha per step, and a plain product.

Two strategies: the default, which analyses four steps (shadow, where every request is mirrored so the
candidate sees as many requests as stable, then canaries at 5, 25 and 50 percent), and canaries only
(5, 25, 50). At 100 requests/s with one look a minute and five looks per step, the error-harm test runs at
``judge()``'s share of alpha under the default policy, three ways:

- ``split``: each step a fresh e-process at that share / k for k analysed steps (the union bound over
  steps; the operator's rule before evidence was carried);
- ``product``: the steps' e-values multiplied into one e-process at the whole share;
- ``ours``: ``mlrollout.analysis.carry``, the fixed mixture of restarts (half on the first step).

Scenarios: identical tracks (false rollbacks over the whole rollout), regressions present from the start,
a regression that begins only at the 25% step, and one that begins there after the candidate was *better*
in the earlier steps (the case a plain product handles badly). Reported: the share of runs rolled back
within 3, 5 and 10 looks of the regression's onset and at all, and the median looks from onset to
rollback. Usage: ``python bench/rollout_power.py [--runs N]``; writes ``bench/results/rollout-power.json``
and prints a Markdown table (docs/analysis.md, "Evidence across steps").
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlrollout.analysis.carry import StepEvidence
from mlrollout.analysis.judge import split_alpha
from mlrollout.analysis.sequential import harm_log_e, log_to_e
from sim_cli import simulation_main

RESULTS = Path(__file__).parent / "results" / "rollout-power.json"
ALPHA = 0.05
DEFAULT_TESTS = [("errorRate.harm", True), ("errorRate.slo", False), ("latency.harm", True), ("predictionDrift", False)]
DEFAULT = (None, 0.05, 0.25, 0.5)  # None: shadow (mirrored, the candidate answers a copy of every request)
CANARIES = (0.05, 0.25, 0.5)
LOOKS_PER_STEP = 5
PER_MINUTE = 6000  # 100 requests/s
METHODS = ("split", "product", "ours")


@dataclass(frozen=True)
class Scenario:
    name: str
    shares: tuple[float | None, ...]  # the candidate's share of requests per analysed step; None: shadow
    base: float
    ratios: tuple[float, ...]  # the candidate's error-rate ratio to stable's, per step
    onset: int  # the first step with a regression (for "looks after onset"); identical tracks: 0


SCENARIOS = (
    Scenario("default: identical tracks, 1% errors", DEFAULT, 0.01, (1, 1, 1, 1), 0),
    Scenario("default: x2 errors (1->2%) from the start", DEFAULT, 0.01, (2, 2, 2, 2), 0),
    Scenario("default: x2 errors (1->2%) from the 25% step", DEFAULT, 0.01, (1, 1, 2, 2), 2),
    Scenario("default: better (x0.5) until 25%, then x2", DEFAULT, 0.01, (0.5, 0.5, 2, 2), 2),
    Scenario("canaries: identical tracks, 1% errors", CANARIES, 0.01, (1, 1, 1), 0),
    Scenario("canaries: identical tracks, 5% errors", CANARIES, 0.05, (1, 1, 1), 0),
    Scenario("canaries: x2 errors (1->2%) from the start", CANARIES, 0.01, (2, 2, 2), 0),
    Scenario("canaries: x1.5 errors (2->3%) from the start", CANARIES, 0.02, (1.5, 1.5, 1.5), 0),
    Scenario("canaries: x2 errors (1->2%) from the 25% step", CANARIES, 0.01, (1, 2, 2), 1),
    Scenario("canaries: better (x0.5) at 5%, then x2", CANARIES, 0.01, (0.5, 2, 2), 1),
)


def one_rollout(s: Scenario, rng: np.random.Generator, alpha: float) -> dict[str, int | None]:
    """The look (counted over the rollout, from 1) at which each method first rolls back; None: never."""
    fired: dict[str, int | None] = dict.fromkeys(METHODS)
    carried: dict[str, float] = {}
    product_log = 0.0
    look = 0
    steps = len(s.shares)
    for step, (share, ratio) in enumerate(zip(s.shares, s.ratios, strict=True)):
        ev = StepEvidence(step=step, steps=steps, carried=carried)
        n_c = n_s = k_c = k_s = 0
        step_log_e = 0.0
        for _ in range(LOOKS_PER_STEP):
            look += 1
            if share is None:  # shadow: the candidate answers a copy of every request
                c = s_ = int(rng.poisson(PER_MINUTE))
            else:
                c, s_ = int(rng.poisson(PER_MINUTE * share)), int(rng.poisson(PER_MINUTE * (1 - share)))
            n_c, n_s = n_c + c, n_s + s_
            k_c += int(rng.binomial(c, min(s.base * ratio, 1.0)))
            k_s += int(rng.binomial(s_, s.base))
            step_log_e = harm_log_e(k_c, k_c + k_s, n_c / (n_c + n_s))
            if fired["split"] is None and step_log_e >= math.log(steps / alpha):
                fired["split"] = look
            if fired["product"] is None and product_log + step_log_e >= math.log(1 / alpha):
                fired["product"] = look
            if fired["ours"] is None and ev.combined("errorRate.harm", log_to_e(step_log_e)) >= 1 / alpha:
                fired["ours"] = look
            if all(v is not None for v in fired.values()):
                return fired
        carried = {"errorRate.harm": ev.carry_out("errorRate.harm", log_to_e(step_log_e))}
        product_log += step_log_e
    return fired


def run(runs: int, seed: int) -> list[dict[str, Any]]:
    alpha = split_alpha(ALPHA, DEFAULT_TESTS)["errorRate.harm"]
    rows = []
    for i, s in enumerate(SCENARIOS):
        rng = np.random.default_rng([seed, i])
        outcomes = [one_rollout(s, rng, alpha) for _ in range(runs)]
        start = s.onset * LOOKS_PER_STEP  # looks before the regression began
        for method in METHODS:
            looks = [o[method] for o in outcomes]
            after = np.array([np.inf if x is None else x - start for x in looks], dtype=float)
            hit = after[np.isfinite(after)]
            row: dict[str, Any] = {"scenario": s.name, "method": method, "alpha": alpha, "runs": runs}
            row["rolled_back"] = float(np.isfinite(after).mean())
            row["early"] = float((after <= 0).mean())  # before the onset: a false rollback
            for n in (3, 5, 10):
                row[f"within_{n}"] = float(((after >= 1) & (after <= n)).mean())
            row["median_looks"] = float(np.median(hit)) if hit.size else None
            rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | method | rolled back | within 3 / 5 / 10 looks of onset | before onset | median looks |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        median = "-" if r["median_looks"] is None else f"{r['median_looks']:g}"
        lines.append(
            f"| {r['scenario']} | {r['method']} | {r['rolled_back']:.1%} | "
            f"{r['within_3']:.1%} / {r['within_5']:.1%} / {r['within_10']:.1%} | {r['early']:.1%} | {median} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return simulation_main(__doc__, run, table, RESULTS, 4000, argv)


if __name__ == "__main__":
    sys.exit(main())
