"""Quality from labels: how often each test rolls back equally good models, and how fast it catches worse ones.

Traffic as in ``decision_quality.py``: Poisson requests at 100/s, one look a minute, 90 % base accuracy,
30 % of requests labelled, each label arriving ``delay`` looks after its request (0 to 5). Two designs:

- **shadow, paired** (100 % mirror): one label scores both models. The models disagree on 6 % of rows (as
  two different models of equal accuracy do); a candidate ``d`` worse is right on ``(6 % - d) / 2`` of the
  rows where only one is right, stable on ``(6 % + d) / 2``;
- **canary, unpaired** (10 % to the candidate): each track is scored on its own requests.

Tests, each at the alpha share ``judge()`` gives ``quality.harm`` under the default policy with quality on:

- ``ours``: ``harm_log_e``, the mixture e-process ``quality.harm`` reports (McNemar's shape when paired);
- ``naive``: the same comparison as a fixed-sample one-sided binomial test, repeated at every look (what a
  dashboard that checks "is it significant yet?" does: its false alarms grow with the looks);
- ``oracle``: the uniformly most powerful unbiased one-sided binomial test run once, at the look where it
  first reaches 90 % power: the fewest labelled rows any valid test needs. ``ratio`` is the labelled rows
  ours needs for 90 % power over the oracle's.

Usage: ``python bench/quality_power.py [--runs N]``; writes ``bench/results/quality-power.json`` and prints
the table docs/analysis.md ("Quality") shows.
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

RESULTS = Path(__file__).parent / "results" / "quality-power.json"
ALPHA = 0.05
DEFAULT_TESTS = [("errorRate.harm", True), ("errorRate.slo", False), ("latency.harm", True),
                 ("predictionDrift", False), ("quality.harm", True)]  # fmt: skip
BASE = 0.90
LABELLED = 0.30
RPS, LOOK_SECONDS, LOOKS = 100, 60, 20
DISAGREE = 0.06
EFFECTS = (0.0, 0.01, 0.02, 0.05)
DELAYS = (0, 5)
DESIGNS = ("shadow", "canary")

Array = npt.NDArray[np.float64]


def simulate(design: str, effect: float, delay: int, runs: int, rng: np.random.Generator) -> tuple[Array, Array, Array]:
    """Per run and look, cumulative (events against the candidate, all events, the candidate's share):
    paired: discordant pairs favouring stable, all discordant pairs, 1/2; unpaired: the candidate's wrong
    labelled rows, all wrong labelled rows, the candidate's share of labelled rows."""
    horizon = LOOKS + delay
    if design == "shadow":
        n = rng.poisson(RPS * LOOK_SECONDS * LABELLED, (runs, horizon))
        stable_only = rng.binomial(n, (DISAGREE + effect) / 2)
        candidate_only = rng.binomial(n - stable_only, (DISAGREE - effect) / 2 / (1 - (DISAGREE + effect) / 2))
        against, events, share = stable_only, stable_only + candidate_only, np.full((runs, horizon), 0.5)
    else:
        n_c = rng.poisson(RPS * LOOK_SECONDS * LABELLED * 0.1, (runs, horizon))
        n_s = rng.poisson(RPS * LOOK_SECONDS * LABELLED * 0.9, (runs, horizon))
        wrong_c, wrong_s = rng.binomial(n_c, 1 - BASE + effect), rng.binomial(n_s, 1 - BASE)
        against, events = wrong_c, wrong_c + wrong_s
        share = np.cumsum(n_c, axis=1) / np.maximum(np.cumsum(n_c + n_s, axis=1), 1)
    # labels for the requests of look t arrive at look t + delay: at look t we see requests up to t - delay
    seen = slice(0, LOOKS)
    k = np.cumsum(against, axis=1)[:, seen]
    m = np.cumsum(events, axis=1)[:, seen]
    if delay:
        k = np.concatenate([np.zeros((runs, delay)), k[:, : LOOKS - delay]], axis=1)
        m = np.concatenate([np.zeros((runs, delay)), m[:, : LOOKS - delay]], axis=1)
        share = np.concatenate([np.full((runs, delay), 0.5), share[:, : LOOKS - delay]], axis=1)
    return k.astype(float), m.astype(float), share[:, :LOOKS].astype(float)


def umpu_power(k: Array, n: Array, share: Array, alpha: float) -> float:
    """Mean rejection probability of the randomised one-sided binomial test of ``share`` at level alpha."""
    c = stats.binom.isf(alpha, n, share)
    above, at = stats.binom.sf(c, n, share), stats.binom.pmf(c, n, share)
    gamma = np.where(at > 0, (alpha - above) / np.where(at > 0, at, 1.0), 0.0)
    return float(np.mean(np.where(k > c, 1.0, np.where(k == c, gamma, 0.0))))


def first_look(fired: npt.NDArray[np.bool_], power: float = 0.9) -> int | None:
    """The first look (1-based) by which at least ``power`` of the runs have fired."""
    by_look = np.cumsum(fired, axis=1).clip(0, 1).mean(axis=0)
    hits = np.nonzero(by_look >= power)[0]
    return int(hits[0]) + 1 if hits.size else None


def run(runs: int, seed: int) -> list[dict[str, Any]]:
    alpha = split_alpha(ALPHA, DEFAULT_TESTS)["quality.harm"]
    bar = math.log(1 / alpha)
    rows = []
    for design in DESIGNS:
        for delay in DELAYS:
            for effect in EFFECTS:
                rng = np.random.default_rng([seed, DESIGNS.index(design), delay, int(effect * 1e4)])
                k, n, share = simulate(design, effect, delay, runs, rng)
                ours = np.array([[harm_log_e(int(k[r, t]), int(n[r, t]), float(share[r, t])) >= bar
                                  for t in range(LOOKS)] for r in range(runs)])  # fmt: skip
                with np.errstate(divide="ignore", invalid="ignore"):
                    naive = stats.binom.sf(k - 1, n, share) <= alpha  # p-value of "at least k of n"
                naive &= n > 0
                oracle_look = next(
                    (t + 1 for t in range(LOOKS) if umpu_power(k[:, t], n[:, t], share[:, t], alpha) >= 0.9), None
                )
                ours_look = first_look(ours)
                labelled = RPS * LOOK_SECONDS * LABELLED
                ratio = None
                if effect and ours_look and oracle_look:
                    ratio = max(ours_look - delay, 1) / max(oracle_look - delay, 1)
                rows.append({
                    "design": design, "delay_looks": delay, "effect_pp": -effect * 100, "alpha": alpha,
                    "ours_by_5": float(ours[:, :5].any(axis=1).mean()),
                    "ours_by_20": float(ours.any(axis=1).mean()),
                    "naive_by_20": float(naive.any(axis=1).mean()),
                    "ours_look_90": ours_look, "oracle_look_90": oracle_look,
                    "labelled_rows_per_look": labelled, "ratio": ratio,
                })  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| design | label delay | effect | ours: rolled back by look 5 / 20 | naive (repeated test) by 20 | "
        "90 % power at look: ours / oracle | labelled rows vs oracle |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        looks = f"{r['ours_look_90'] or '>20'} / {r['oracle_look_90'] or '>20'}" if r["effect_pp"] else "-"
        lines.append(
            f"| {r['design']} | {r['delay_looks']} | {r['effect_pp']:+.0f} pp | {r['ours_by_5']:.1%} / "
            f"{r['ours_by_20']:.1%} | {r['naive_by_20']:.1%} | {looks} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return simulation_main(__doc__, run, table, RESULTS, 2000, argv)


if __name__ == "__main__":
    sys.exit(main())
