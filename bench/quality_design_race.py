"""The quality design at a canary-to-shadow boundary: chosen by whether pairs exist, or by the step's kind.

The operator writes the shadow step's start into the route table; the gateway loads it a moment later. The
candidate's answers to clients in that moment (served under the canary's split) carry a feedback id issued
after the step's start, so their labels count in the shadow step, beside stable's of the same moment. Until
the first labelled pair, the shadow step has only those rows. Two rules pick the step's ``quality.harm``:

- ``pairs exist`` (the rule until issue #14's fix): the unpaired test on those rows until the first pair,
  the paired one after: two e-processes in one step, each a chance at the alpha share;
- ``configured`` (now: ``rollout.looks.quality_design``): the step mirrors, so it is paired from its first
  look; the race rows are in no test (``quality.harm`` waits, and its reason names them).

The rollout: a canary at ``weight`` judged for 5 looks, then a shadow step (100 % mirror) for 20, the two
analysed steps carrying ``quality.harm``'s evidence as the operator does (``carry.py``: weights 1/2 and
1/2; the canary's e-value at its last look carries in), at its default alpha share. Traffic as in
``quality_power.py``: 100 requests/s, 30 % labelled (1 800 labelled rows a look), labels at once, 90 %
base accuracy; in the shadow step the models disagree on 6 % of rows. The race: 0 to 300 (uniform) labelled
rows of the candidate, with stable's of the same moment at the canary's split (negative binomial), arriving
over the shadow step's first 1 to 3 looks (uniform) before the first pair; then the pairs. Also the shadow
step alone (the only analysed step, nothing carried in): the race's second chance undiluted.

Rows: equal models (false rollbacks over all 25 looks; those at a look before the first pair, on the race
rows alone) and a candidate 2 and 5 pp less accurate (power: rolled back by the shadow step's looks 1, 3 and
20, and the look by which 90 % are), each rule on the same draws. ``check_against_product`` replays runs
through ``quality_results`` and ``StepEvidence`` (the product's code) and asserts the same decisions.

Usage: ``python bench/quality_design_race.py [--runs N]``; writes ``bench/results/quality-design-race.json``.
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mlrollout.analysis.carry import StepEvidence, restart_weights
from mlrollout.analysis.judge import split_alpha
from mlrollout.analysis.quality import Labels, Pairs, QualitySettings, quality_results
from mlrollout.analysis.sequential import QUALITY_PAIRED, QUALITY_UNPAIRED
from mlrollout.api.analysis import MetricResult, QualityDesign
from mlrollout.api.rolloutpolicy import Margin
from quality_power import ALPHA, BASE, DEFAULT_TESTS, DISAGREE, LABELLED, LOOK_SECONDS, RPS, Array, beta_log_e, check
from quality_power import grid_log_e as _grid_log_e
from sim_cli import simulation_main

RESULTS = Path(__file__).parent / "results" / "quality-design-race.json"
PER_LOOK = int(RPS * LOOK_SECONDS * LABELLED)
CANARY_LOOKS, SHADOW_LOOKS = 5, 20
RACE_MAX = 300  # the candidate's labelled rows of the moment before the table change: 0 to this
PRE_PAIR_LOOKS = 3  # the race rows arrive over the shadow step's first 1 to this many looks
WEIGHTS = (0.1, 0.5)
EFFECTS = (0.0, 0.02, 0.05)
CONTEXTS = ("rollout", "shadow alone")
RULES = ("pairs exist", "configured")

Bools = npt.NDArray[np.bool_]


def grid_log_e(k: Array, n: Array, share: Array, mixture: Any) -> Array:
    """``grid_harm_log_e`` on arrays: ``quality_power``'s (checked against the product's there), with shares
    outside (0, 1) read as 0.5."""
    share = np.where((share > 0) & (share < 1), share, 0.5)
    return _grid_log_e(k, n, share, beta_log_e(k, n, share), mixture)


def simulate(weight: float, effect: float, runs: int, rng: np.random.Generator) -> dict[str, Array]:
    """Cumulative counts per run and look. Canary (``CANARY_LOOKS``): the candidate's wrong rows, all wrong
    rows, the candidate's share of labelled rows. Shadow (``SHADOW_LOOKS``): the race rows so far (the
    candidate's labelled and wrong, stable's labelled and wrong) and the pairs (favouring stable, discordant)."""
    p_s, p_c = 1 - BASE, 1 - BASE + effect
    n_c = round(PER_LOOK * weight)
    wc = rng.binomial(n_c, p_c, (runs, CANARY_LOOKS)).cumsum(axis=1).astype(float)
    ws = rng.binomial(PER_LOOK - n_c, p_s, (runs, CANARY_LOOKS)).cumsum(axis=1).astype(float)
    race_c = rng.integers(0, RACE_MAX + 1, runs)
    race_s = np.where(race_c > 0, rng.negative_binomial(np.maximum(race_c, 1), weight), 0)
    before = rng.integers(1, PRE_PAIR_LOOKS + 1, runs)  # the looks with race rows only
    parts = np.zeros((runs, SHADOW_LOOKS, 4))  # per look: candidate rows, wrong; stable rows, wrong
    left_c, left_s = race_c.copy(), race_s.copy()
    for j in range(PRE_PAIR_LOOKS):
        share = np.where(j < before, 1.0 / np.maximum(before - j, 1), 0.0)
        take_c, take_s = rng.binomial(left_c, share), rng.binomial(left_s, share)
        left_c, left_s = left_c - take_c, left_s - take_s
        parts[:, j] = np.stack([take_c, rng.binomial(take_c, p_c), take_s, rng.binomial(take_s, p_s)], axis=1)
    discordant = rng.binomial(PER_LOOK, DISAGREE, (runs, SHADOW_LOOKS))
    favour_stable = rng.binomial(discordant, (DISAGREE + effect) / (2 * DISAGREE))
    paired = np.arange(1, SHADOW_LOOKS + 1)[None, :] > before[:, None]
    return {
        "canary_k": wc, "canary_n": wc + ws, "canary_share": np.full_like(wc, n_c / PER_LOOK),
        "race": parts.cumsum(axis=1), "before": before.astype(float),
        "pairs_k": np.where(paired, favour_stable, 0).cumsum(axis=1).astype(float),
        "pairs_n": np.where(paired, discordant, 0).cumsum(axis=1).astype(float),
    }  # fmt: skip


def with_e_values(sim: dict[str, Array]) -> dict[str, Array]:
    """The counts with each test's log e-value per run and look, computed once for both rules: the canary's
    unpaired, the shadow's paired (0 before the first pair), and the unpaired test on the race rows alone
    (where both tracks have some; else 0)."""
    race = sim["race"]
    rows_c, wrong_c, rows_s, wrong_s = (race[..., i] for i in range(4))
    runs_race = (rows_c > 0) & (rows_s > 0)
    race_log_e = np.zeros_like(rows_c)
    at = np.nonzero(runs_race)
    share = rows_c[at] / (rows_c[at] + rows_s[at])
    race_log_e[at] = grid_log_e(wrong_c[at], wrong_c[at] + wrong_s[at], share, QUALITY_UNPAIRED)
    half = np.full_like(sim["pairs_n"], 0.5)
    return {
        **sim,
        "canary_log_e": grid_log_e(sim["canary_k"], sim["canary_n"], sim["canary_share"], QUALITY_UNPAIRED),
        "paired_log_e": grid_log_e(sim["pairs_k"], sim["pairs_n"], half, QUALITY_PAIRED),
        "race_log_e": race_log_e,
        "race_runs": runs_race.astype(float),
    }


def step_e(sim: dict[str, Array], rule: str) -> tuple[Array, Bools, Bools]:
    """The shadow step's ``quality.harm`` e-value per run and look (log), whether it was measured, and whether
    it was measured on the race rows alone (the old rule's looks before the first pair)."""
    has_pairs = np.arange(1, SHADOW_LOOKS + 1)[None, :] > sim["before"][:, None]
    if rule == "configured":
        return sim["paired_log_e"], has_pairs, np.zeros_like(has_pairs)
    on_race = (sim["race_runs"] > 0) & ~has_pairs  # the unpaired test runs until the first pair (else waits)
    return np.where(has_pairs, sim["paired_log_e"], sim["race_log_e"]), has_pairs | on_race, on_race


def first_rollback(sim: dict[str, Array], rule: str, context: str, bar: float) -> tuple[Array, Bools]:
    """Per run, the rollout look (1-based; 0: never) of the first rollback, and whether it came from the race
    rows alone. ``rollout``: the canary's looks then the shadow's, evidence carried (two analysed steps);
    ``shadow alone``: the shadow's looks as the only analysed step."""
    log_e, measured, on_race = step_e(sim, rule)
    runs = log_e.shape[0]
    if context == "rollout":
        w0, w1 = restart_weights(2)
        canary = sim["canary_log_e"]
        # E = (A_0 + w_0) E_canary + R_0 with A_0 = 0 and R_0 = w_1, held to 1/alpha
        canary_fired = canary >= math.log(max(bar - w1, 1e-300) / w0)
        carried = w0 * np.exp(np.minimum(canary[:, -1], 700.0))  # A_1: its e-value at its last look carries in
        shadow = np.log(carried[:, None] + w1) + log_e  # log((A_1 + w_1) E_shadow + R_1), R_1 = 0
        fired = np.concatenate([canary_fired, measured & (shadow >= math.log(bar))], axis=1)
        race = np.concatenate([np.zeros((runs, CANARY_LOOKS), dtype=bool), on_race], axis=1)
    else:
        fired, race = measured & (log_e >= math.log(bar)), on_race
    first = np.where(fired.any(axis=1), fired.argmax(axis=1) + 1, 0)
    by_race = race[np.arange(runs), np.maximum(first - 1, 0)] & (first > 0)
    return first.astype(float), by_race


def check_against_product(sim: dict[str, Array], rule: str, context: str, alpha: float) -> None:
    """The runs replayed through ``quality_results`` with the operator's carry (``StepEvidence``,
    as ``judge`` wires it): the same first rollback."""
    first, _ = first_rollback(sim, rule, context, 1 / alpha)
    for r in range(len(first)):
        fails: list[bool] = []
        carried: dict[str, float] = {}
        if context == "rollout":
            canary = StepEvidence(step=0, steps=2)
            for t in range(CANARY_LOOKS):
                k, n = int(sim["canary_k"][r, t]), int(sim["canary_n"][r, t])
                n_c = round(PER_LOOK * sim["canary_share"][r, t]) * (t + 1)
                harm, step_e = _harm(Labels(PER_LOOK * (t + 1) - n_c, n - k), Labels(n_c, k), None, canary, alpha,
                                     "unpaired")  # fmt: skip
                fails.append(harm.decision == "fail")
                carried = {"quality.harm": canary.carry_out("quality.harm", step_e)}
        shadow = StepEvidence(step=1, steps=2, carried=carried) if context == "rollout" else StepEvidence()
        for t in range(SHADOW_LOOKS):
            rc, wc, rs, ws = (int(x) for x in sim["race"][r, t])
            k, n = int(sim["pairs_k"][r, t]), int(sim["pairs_n"][r, t])
            has_pairs = t + 1 > sim["before"][r]
            pairs = Pairs(0, 0, k, n - k) if has_pairs else None
            design: QualityDesign = "paired" if rule == "configured" or has_pairs else "unpaired"
            fails.append(_harm(Labels(rs, ws), Labels(rc, wc), pairs, shadow, alpha, design)[0].decision == "fail")
        product = fails.index(True) + 1 if True in fails else 0
        assert product == first[r], (rule, context, r, product, first[r])


def _harm(stable: Labels, candidate: Labels, pairs: Pairs | None, steps: StepEvidence, alpha: float,
          design: QualityDesign) -> tuple[MetricResult, float]:  # fmt: skip
    """``quality.harm`` as ``judge`` computes it at this step, and the step's own e-value (what carries)."""
    step_e = [1.0]

    def carry(e: float) -> float:
        step_e[0] = e
        return steps.combined("quality.harm", e)

    settings = QualitySettings("accuracy", alpha, 0.05, Margin(absolute=0.01), 100, carry)
    return quality_results(stable, candidate, pairs, settings, design=design)[0], step_e[0]


def run(runs: int, seed: int) -> list[dict[str, Any]]:
    check(np.random.default_rng(seed))
    alpha = split_alpha(ALPHA, DEFAULT_TESTS)["quality.harm"]
    bar = 1 / alpha
    rows = []
    for weight, effect in itertools.product(WEIGHTS, EFFECTS):
        rng = np.random.default_rng([seed, 14, int(weight * 100), int(effect * 100)])
        sim = with_e_values(simulate(weight, effect, runs, rng))
        for context, rule in itertools.product(CONTEXTS, RULES):
            check_against_product({k: v[:30] for k, v in sim.items()}, rule, context, alpha)
            first, by_race = first_rollback(sim, rule, context, bar)
            offset = CANARY_LOOKS if context == "rollout" else 0
            hit = first > 0

            def by(look: int, first: Array = first, offset: int = offset) -> float:
                return float(((first > 0) & (first <= offset + look)).mean())

            looks = offset + SHADOW_LOOKS
            curve = [float(((first > 0) & (first <= t)).mean()) for t in range(1, looks + 1)]
            look_90 = next((t for t, c in enumerate(curve, 1) if c >= 0.9), None)
            rows.append({
                "weight": weight, "effect": effect, "context": context, "rule": rule, "alpha": alpha, "runs": runs,
                "rolled_back": float(hit.mean()), "rolled_back_on_race_rows": float(by_race.mean()),
                "rolled_back_in_canary": float(((first > 0) & (first <= offset)).mean()) if offset else 0.0,
                "by_shadow_look_1": by(1), "by_shadow_look_3": by(3), "by_shadow_look_20": by(SHADOW_LOOKS),
                "look_90": look_90, "canary_looks": offset,
            })  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| canary weight | candidate | judged | rule | rolled back | of which on the race rows alone | "
        "in the canary | by the shadow step's look 1 / 3 / 20 | 90 % at rollout look |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        harm = f"-{r['effect'] * 100:.0f} pp" if r["effect"] else "equal (A/A)"
        judged = f"canary {r['canary_looks']} looks, then shadow" if r["context"] == "rollout" else "shadow alone"
        lines.append(
            f"| {r['weight']:.0%} | {harm} | {judged} | {r['rule']} | {r['rolled_back']:.3%} | "
            f"{r['rolled_back_on_race_rows']:.3%} | {r['rolled_back_in_canary']:.1%} | {r['by_shadow_look_1']:.1%} / "
            f"{r['by_shadow_look_3']:.1%} / {r['by_shadow_look_20']:.1%} | {r['look_90'] or '-'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return simulation_main(__doc__, run, table, RESULTS, 20_000, argv)


if __name__ == "__main__":
    sys.exit(main())
