"""Labels across a step boundary: counted by arrival, or by the step that served their answer.

A canary goes from 10 % to 50 % of the traffic; the 50 % step is judged on the label counters read from its
start (its own window, no evidence carried in). Traffic as in ``quality_power.py`` (100 requests/s, 30 %
labelled, one look a minute; the labelled rows a look: the Poisson mean), each label arriving ``delay`` looks
after its request, the ``quality.harm`` test at its default alpha share. The errors scale with the minute the
answer was served; with ``drift`` the scale grows linearly in time, x0.6 at the 50 % step's start to x1.4 at
its end (look 20), the same trend before it (x0.42 five looks earlier): the inputs get harder through the
day, for both models alike.

- ``mae`` (regressors): each row's absolute error is ``|N(0, 1)|`` times the scale, clipped at ``B`` = 5; the
  candidate's ``(1 + effect)`` times a draw of the same law (``effect`` 0.10: a 10 % higher MAE);
- ``accuracy`` (classifiers): a row is wrong with probability 10 % (90 % base accuracy) times the scale,
  the candidate's ``10 % + effect`` times it (``effect`` 0.05: 5 pp lower accuracy); the test compares the
  candidate's share of the wrong rows with its share of the labelled rows, as ``quality.harm`` does unpaired.

Two counting rules feed the same test:

- ``arrival``: the gateway before stepStartedAt: every label arriving in the window counts, so the 50 % step's
  first ``delay`` looks hold the labels of the 10 % step's last answers - 90 % of them stable's, from an
  earlier (here: easier) minute than the candidate's: stable's labels come from an earlier time mix;
- ``serving``: the rule now (contract.feedback.counts_in_step): only labels for answers served since the step
  started count; those for the 10 % step's last ``delay`` looks are accepted and not scored
  (``feedback_rows_uncounted_total{reason="served_before_step"}``): the price is those labels, lost at every
  step boundary.

Rows: the share of runs rolled back by look 5, 10 and 20, the look by which 90 % are, and the labelled rows
each rule has counted by look 20 (stable's, the candidate's) and lost at the boundary. ``effect`` 0 is the
A/A line (false rollbacks, at most alpha for a valid rule); a worse candidate (10 % higher MAE, 5 pp lower
accuracy) measures power. The delay 0 row is the drift alone, where both rules count the same labels.

Usage: ``python bench/quality_step_boundary.py [--runs N]``; writes ``bench/results/quality-step-boundary.json``.
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
from mlrollout.analysis.quality import Labels
from mlrollout.analysis.sequential import QUALITY_UNPAIRED
from quality_power import (
    ALPHA,
    BASE,
    CANARY_SHARE,
    DEFAULT_TESTS,
    LABELLED,
    LOOK_SECONDS,
    LOOKS,
    MAE_BOUNDS,
    RPS,
    Array,
    beta_log_e,
    first_look,
    grid_log_e,
    new_log_e,
)
from sim_cli import simulation_main

RESULTS = Path(__file__).parent / "results" / "quality-step-boundary.json"
BOUND = MAE_BOUNDS[0]
STEP_SHARE = 0.5  # the candidate's share in the judged step; the step before gives it CANARY_SHARE
DRIFT = (0.6, 1.4)  # the error scale at the judged step's start and end, linear in time
RULES = ("arrival", "serving")
METRICS = ("mae", "accuracy")
# (drift, label delay in looks, harm: the candidate's MAE 10 % higher; for accuracy, half: 5 pp lower)
CASES = ((True, 5, 0.0), (True, 0, 0.0), (False, 5, 0.0), (True, 5, 0.10), (False, 5, 0.10))


def scale(look: int, drift: bool) -> float:
    """The error scale of the answers served in look ``look`` (1 = the judged step's first; 0 and below the
    step before), at the look's middle."""
    if not drift:
        return 1.0
    start, end = DRIFT
    return start + (end - start) * (look - 0.5) / LOOKS


def served(metric: str, drift: bool, delay: int, effect: float, runs: int,
           rng: np.random.Generator) -> tuple[Array, list[int]]:  # fmt: skip
    """Per run and served look (the ``delay`` looks before the step, then its ``LOOKS``), each track's (stable
    first) labelled rows and: ``mae``, clipped sum and clipped sum of squares; ``accuracy``, wrong rows.
    Shape ``(runs, looks, 2, 3)``; and the served looks."""
    per_look = int(RPS * LOOK_SECONDS * LABELLED)
    looks = list(range(1 - delay, LOOKS + 1))
    out = np.zeros((runs, len(looks), 2, 3))
    for i, look in enumerate(looks):
        n_c = int(per_look * (STEP_SHARE if look >= 1 else CANARY_SHARE))
        for track, n, harm in ((0, per_look - n_c, 0.0), (1, n_c, effect)):
            out[:, i, track, 0] = n
            if metric == "accuracy":  # the error rate drifts; the candidate's is `harm` higher at scale 1
                out[:, i, track, 1] = rng.binomial(n, min((1 - BASE + harm) * scale(look, drift), 1.0), runs)
                continue
            errors = np.abs(rng.standard_normal((runs, n))) * scale(look, drift) * (1 + harm)
            errors = np.minimum(errors, BOUND)
            out[:, i, track, 1] = errors.sum(axis=1)
            out[:, i, track, 2] = (errors * errors).sum(axis=1)
    return out, looks


def windows(sums: Array, looks: list[int], delay: int, rule: str) -> Array:
    """Per run and look of the judged step, the sums of the labels the rule counts by then: ``(runs, LOOKS, 2,
    3)``. At look ``t`` the labels of the answers served up to look ``t - delay`` have arrived; ``arrival``
    counts those that arrived during the step, ``serving`` those whose answer was served in it."""
    first = 0 if rule == "arrival" else looks.index(1)
    out = np.zeros((sums.shape[0], LOOKS, *sums.shape[2:]))
    for t in range(1, LOOKS + 1):
        last = looks.index(t - delay) if t - delay >= looks[0] else -1
        if last >= first:
            out[:, t - 1] = sums[:, first : last + 1].sum(axis=1)
    return out


def fired(metric: str, window: Array, bar: float) -> npt.NDArray[np.bool_]:
    """Per run and look, whether ``quality.harm`` has reached ``bar`` on the window's labels: the unpaired
    clipped-MAE e-process, or the accuracy test's conditional binomial on the wrong rows (the candidate's
    share of them against its share of the labelled rows)."""
    if metric == "accuracy":
        rows, wrong = window[..., 0], window[..., 1]
        k, n = wrong[..., 1], wrong.sum(axis=-1)
        share = rows[..., 1] / np.maximum(rows.sum(axis=-1), 1)
        share = np.where((rows[..., 0] > 0) & (rows[..., 1] > 0), share, 0.5)
        out: npt.NDArray[np.bool_] = grid_log_e(k, n, share, beta_log_e(k, n, share), QUALITY_UNPAIRED) >= bar
        return out & (rows[..., 0] > 0) & (rows[..., 1] > 0)
    runs = window.shape[0]
    result = np.zeros((runs, LOOKS), dtype=bool)
    for r, t in itertools.product(range(runs), range(LOOKS)):
        s, c = window[r, t]
        if s[0] and c[0] and not result[r, :t].any():  # only the first rollback matters: the rest are not run
            stable = Labels(int(s[0]), 0, 0.0, 0.0, float(s[1]), float(s[2]))
            candidate = Labels(int(c[0]), 0, 0.0, 0.0, float(c[1]), float(c[2]))
            result[r, t] = new_log_e(stable, candidate, None, BOUND) >= bar
    return result


def run(runs: int, seed: int) -> list[dict[str, Any]]:
    alpha = split_alpha(ALPHA, DEFAULT_TESTS)["quality.harm"]
    bar = math.log(1 / alpha)
    rows = []
    for metric, (drift, delay, effect) in itertools.product(METRICS, CASES):
        effect = effect if metric == "mae" else effect / 2  # a 10 % worse MAE; 5 pp worse accuracy
        rng = np.random.default_rng([seed, 14, METRICS.index(metric), int(drift), delay, int(effect * 1e4)])
        sums, looks = served(metric, drift, delay, effect, runs, rng)
        counted = {}
        for rule in RULES:
            window = windows(sums, looks, delay, rule)
            hit = fired(metric, window, bar)
            counted[rule] = window[:, -1, :, 0].mean(axis=0)
            rows.append({
                "metric": metric, "drift": f"x{DRIFT[0]}->x{DRIFT[1]}" if drift else "none", "delay_looks": delay,
                "effect": effect, "rule": rule, "alpha": alpha, "bound": BOUND if metric == "mae" else None,
                "runs": runs,
                "rolled_back_by_5": float(hit[:, :5].any(axis=1).mean()),
                "rolled_back_by_10": float(hit[:, :10].any(axis=1).mean()),
                "rolled_back_by_20": float(hit.any(axis=1).mean()),
                "look_90": first_look(hit),
                "counted_by_20_stable": float(counted[rule][0]),
                "counted_by_20_candidate": float(counted[rule][1]),
            })  # fmt: skip
        lost = counted["arrival"] - counted["serving"]
        for row in rows[-len(RULES) :]:
            row["lost_at_boundary_stable"], row["lost_at_boundary_candidate"] = float(lost[0]), float(lost[1])
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| metric | errors drift | label delay | candidate worse by | counted by | rolled back by look 5 / 10 / 20 | "
        "90 % at look | labelled rows by look 20 (stable / candidate) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        harm = f"MAE +{r['effect']:.0%}" if r["metric"] == "mae" else f"accuracy -{r['effect'] * 100:.0f} pp"
        harm = harm if r["effect"] else "none (A/A)"
        lines.append(
            f"| {r['metric']} | {r['drift']} | {r['delay_looks']} | {harm} | {r['rule']} | "
            f"{r['rolled_back_by_5']:.1%} / {r['rolled_back_by_10']:.1%} / {r['rolled_back_by_20']:.1%} | "
            f"{r['look_90'] or '>20'} | {r['counted_by_20_stable']:.0f} / {r['counted_by_20_candidate']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return simulation_main(__doc__, run, table, RESULTS, 400, argv)


if __name__ == "__main__":
    sys.exit(main())
