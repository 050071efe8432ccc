"""The time-to-decision forecast against simulation with the judge itself.

For each scenario the forecast (``mlrollout.analysis.forecast``, what ``mlrollout plan`` prints and status
shows) predicts the median looks until a step passes and the chances to promote a healthy candidate and
to roll regressions back within 20 looks; the same scenario is then simulated with ``decision_quality.py``'s
simulator and the real ``judge`` (one look a minute), and both are printed side by side. A healthy
candidate's median is the median over all runs (a run not promoted within the looks counts as later).

Usage: ``python bench/forecast_check.py [--runs N]``; writes ``bench/results/forecast-check.json`` and prints
a Markdown table (docs/analysis.md, "Time to decision").
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from decision_quality import LATENCY_MEDIAN, LATENCY_SIGMA, Scenario, judge_ours, simulate
from mlrollout.analysis.forecast import LatencyShape, Regression, StepTraffic, forecast_step
from mlrollout.analysis.judge import alpha_shares
from mlrollout.analysis.snapshot import parse_snapshot
from sim_cli import simulation_main

RESULTS = Path(__file__).parent / "results" / "forecast-check.json"
LOOKS = 40
HORIZON = 20  # looks

SCENARIOS = (
    Scenario("A/A err 0.1% (no SLO)", "aa", base_error=0.001, slo=False),
    Scenario("A/A err 1% (no SLO)", "aa", base_error=0.01, slo=False),
    Scenario("A/A err 1%", "aa", base_error=0.01),
    Scenario("A/A err 3%", "aa", base_error=0.03),
    Scenario("A/A err 20% (no SLO)", "aa", base_error=0.2, slo=False),
    Scenario("A/A err 1%, 25% canary", "aa", base_error=0.01, share=0.25),
    Scenario("A/A err 1%, 1000 rps", "aa", base_error=0.01, rps=1000.0),
    Scenario("errors x1.5 (1->1.5%)", "regression", candidate_error=0.015),
    Scenario("errors x2 (1->2%)", "regression", candidate_error=0.02),
    Scenario("errors x2 (0.1->0.2%) (no SLO)", "regression", base_error=0.001, candidate_error=0.002, slo=False),
    Scenario("latency +20%", "regression", latency_factor=1.2),
    Scenario("latency +30%, 10 rps", "regression", latency_factor=1.3, rps=10.0),
)


def predicted(sc: Scenario) -> dict[str, Any]:
    spec = sc.policy()
    traffic = StepTraffic(sc.rps * (1 - sc.share), sc.rps * sc.share, sc.base_error,
                          LatencyShape(LATENCY_MEDIAN, LATENCY_SIGMA))  # fmt: skip
    snap = parse_snapshot({"stable": {"requests": 1000, "latency_buckets": {"+Inf": 1000}, "predictions": {"a": 1}},
                           "candidate": {"requests": 100, "latency_buckets": {"+Inf": 100}}})  # fmt: skip
    ratio = (sc.candidate_error or sc.base_error) / sc.base_error
    regression = Regression(sc.name, error_ratio=ratio, latency_factor=sc.latency_factor)
    f = forecast_step(spec, traffic, alpha_shares(snap, spec), HORIZON * sc.interval, regressions=(regression,))
    return {
        "median_looks": f.seconds / sc.interval,
        "promote_by_20": f.promote,
        "rollback_by_20": f.rollback[sc.name],
    }


def simulated(sc: Scenario, runs: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, zlib.crc32(sc.name.encode())])
    inc = simulate(sc, runs, LOOKS, rng)
    cum = {t: {k: np.cumsum(v, axis=1) for k, v in d.items()} for t, d in inc.items()}
    promoted, rolled_back = [], []
    for run in range(runs):
        verdict, look = "continue", LOOKS + 1
        for t in range(LOOKS):
            verdict = judge_ours(cum, sc, run, t)
            if verdict in ("promote", "rollback"):
                look = t + 1
                break
        promoted.append(look if verdict == "promote" else LOOKS + 1)
        rolled_back.append(look if verdict == "rollback" else LOOKS + 1)
    return {
        "median_looks": float(np.median(promoted)),
        "promote_by_20": float(np.mean(np.array(promoted) <= HORIZON)),
        "rollback_by_20": float(np.mean(np.array(rolled_back) <= HORIZON)),
    }


def run(runs: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    for sc in SCENARIOS:
        row = {
            "scenario": sc.name,
            "group": sc.group,
            "forecast": predicted(sc),
            "simulated": simulated(sc, runs, seed),
        }
        print(row, file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def _looks(x: float) -> str:
    return f"> {LOOKS}" if x > LOOKS else f"{x:.3g}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | median looks to promote: forecast / simulated | promoted by look 20 | rolled back by look 20 |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        f, s = r["forecast"], r["simulated"]
        if r["group"] == "aa":  # the forecast of promotion speaks of a candidate like stable
            lines.append(
                f"| {r['scenario']} | {_looks(f['median_looks'])} / {_looks(s['median_looks'])} | "
                f"{f['promote_by_20']:.0%} / {s['promote_by_20']:.0%} | - |"
            )
        else:
            lines.append(f"| {r['scenario']} | - | - | {f['rollback_by_20']:.0%} / {s['rollback_by_20']:.0%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return simulation_main(__doc__, run, table, RESULTS, 200, argv)


if __name__ == "__main__":
    sys.exit(main())
