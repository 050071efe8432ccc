"""Evidence carried across analysed steps: the algebra, the judge's use of it, and validity in simulation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.analysis.snapshots import judged, track

from mlrollout.analysis import SnapshotError, parse_snapshot
from mlrollout.analysis.carry import StepEvidence, restart_weights
from mlrollout.analysis.judge import split_alpha
from mlrollout.analysis.sequential import harm_log_e, log_to_e

ALPHA = 0.05


@pytest.mark.parametrize("steps", [1, 2, 4, 9])
def test_restart_weights_sum_to_one_with_half_on_the_first_step(steps: int) -> None:
    weights = restart_weights(steps)
    assert len(weights) == steps
    assert math.isclose(sum(weights), 1.0)
    assert weights[0] == (1.0 if steps == 1 else 0.5)


def test_a_single_analysis_is_judged_at_the_full_alpha() -> None:
    alone = StepEvidence()
    assert alone.step_bar("errorRate.harm", ALPHA) == pytest.approx(1 / ALPHA)
    assert alone.combined("errorRate.harm", 7.0) == 7.0
    assert alone.carry_out("errorRate.harm", 7.0) == 7.0


def test_first_of_four_steps_needs_about_twice_the_evidence_not_four_times() -> None:
    first = StepEvidence(step=0, steps=4)
    assert first.step_bar("errorRate.harm", ALPHA) == pytest.approx(2 / ALPHA - 1)  # per-step split: 80
    assert first.slo_alpha(ALPHA) == pytest.approx(ALPHA / 4)  # confidence sequences still split


def test_evidence_from_an_earlier_step_lowers_the_next_steps_bar() -> None:
    """A regression present from the start: step 0 ends short of the bar, step 1 finishes the job."""
    first = StepEvidence(step=0, steps=4)
    assert first.combined("errorRate.harm", 20.0) < 1 / ALPHA  # 20 is not enough at step 0 (bar 39)
    second = StepEvidence(step=1, steps=4, carried={"errorRate.harm": first.carry_out("errorRate.harm", 20.0)})
    assert second.step_bar("errorRate.harm", ALPHA) < 2.0  # per-step splitting would ask for 80 again
    assert second.combined("errorRate.harm", 2.0) >= 1 / ALPHA
    fresh = StepEvidence(step=1, steps=4)  # a regression that begins at step 1 is still caught on its own
    assert fresh.step_bar("errorRate.harm", ALPHA) == pytest.approx((1 / ALPHA - 1 / 3) * 6)


@given(
    steps=st.integers(1, 8),
    step=st.integers(0, 10),
    carried=st.floats(0, 1e6),
    step_e=st.floats(0, 1e6),
    alpha=st.floats(1e-4, 0.5),
)
def test_step_bar_and_combined_e_value_agree(
    steps: int, step: int, carried: float, step_e: float, alpha: float
) -> None:
    """Holding the step's e-value to step_bar is the same rule as holding the rollout's to 1/alpha."""
    ev = StepEvidence(step=step, steps=steps, carried={"latency.harm": carried})
    combined = ev.combined("latency.harm", step_e)
    bar = ev.step_bar("latency.harm", alpha)
    if not math.isclose(combined, 1 / alpha, rel_tol=1e-9):
        assert (combined >= 1 / alpha) == (step_e >= bar)
    assert combined >= ev.carry_out("latency.harm", step_e)  # the restarts still to come only add


@given(steps=st.integers(2, 8), step=st.integers(0, 6), carried=st.floats(0, 1e6), step_e=st.floats(0, 1e6))
def test_the_rollout_e_value_is_continuous_across_a_step_boundary(
    steps: int, step: int, carried: float, step_e: float
) -> None:
    """End of step j at e-value ``e`` == start of step j+1 (its own e-value 1) carrying ``carry_out``."""
    step = min(step, steps - 2)
    ending = StepEvidence(step=step, steps=steps, carried={"errorRate.harm": carried})
    starting = StepEvidence(
        step=step + 1, steps=steps, carried={"errorRate.harm": ending.carry_out("errorRate.harm", step_e)}
    )
    assert starting.combined("errorRate.harm", 1.0) == pytest.approx(ending.combined("errorRate.harm", step_e))


def _rollout_fires(rng: np.random.Generator, rates: tuple[float, float], shares: list[float], looks: int) -> bool:
    """One simulated rollout of the harm test over several steps with carried evidence: did it ever fire?"""
    alpha = split_alpha(ALPHA, [("errorRate.harm", True), ("errorRate.slo", False)])["errorRate.harm"]
    carried: dict[str, float] = {}
    for j, share in enumerate(shares):
        ev = StepEvidence(step=j, steps=len(shares), carried=carried)
        n_c = n_s = k_c = k_s = 0
        out = None
        for _ in range(looks):
            c, s = rng.poisson(6000 * share), rng.poisson(6000 * (1 - share))
            n_c, n_s = n_c + c, n_s + s
            k_c, k_s = k_c + rng.binomial(c, rates[1]), k_s + rng.binomial(s, rates[0])
            if n_c == 0 or n_s == 0:
                continue
            step_e = log_to_e(harm_log_e(k_c, k_c + k_s, n_c / (n_c + n_s)))
            if ev.combined("errorRate.harm", step_e) >= 1 / alpha:
                return True
            out = ev.carry_out("errorRate.harm", step_e)
        carried = {"errorRate.harm": out} if out is not None else carried
    return False


def test_identical_tracks_are_rolled_back_at_most_alpha_over_a_whole_rollout() -> None:
    """A/A over the default four analysed steps (5/25/50% shares after an even shadow), 5 looks each."""
    rng = np.random.default_rng(20261126)
    runs = 1500
    fired = sum(_rollout_fires(rng, (0.02, 0.02), [0.5, 0.05, 0.25, 0.5], 5) for _ in range(runs))
    alpha = split_alpha(ALPHA, [("errorRate.harm", True), ("errorRate.slo", False)])["errorRate.harm"]
    assert fired / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def test_a_regression_from_the_start_is_caught_sooner_than_with_alpha_split_per_step() -> None:
    """x1.5 errors at 2%: carried evidence catches it in more runs than an even split of alpha over the steps."""
    rng = np.random.default_rng(7)
    runs = 300
    shares = [0.05, 0.25]
    carried_hits = sum(_rollout_fires(rng, (0.02, 0.03), shares, 3) for _ in range(runs))
    alpha = split_alpha(ALPHA, [("errorRate.harm", True), ("errorRate.slo", False)])["errorRate.harm"] / len(shares)
    split_hits = 0
    for _ in range(runs):
        for share in shares:
            n_c = n_s = k_c = k_s = 0
            hit = False
            for _ in range(3):
                c, s = rng.poisson(6000 * share), rng.poisson(6000 * (1 - share))
                n_c, n_s = n_c + c, n_s + s
                k_c, k_s = k_c + rng.binomial(c, 0.03), k_s + rng.binomial(s, 0.02)
                hit = hit or harm_log_e(k_c, k_c + k_s, n_c / (n_c + n_s)) >= math.log(1 / alpha)
            if hit:
                split_hits += 1
                break
    assert carried_hits > split_hits


def _snapshot(errors_c: float, evidence: dict[str, Any] | None) -> dict[str, Any]:
    snap: dict[str, Any] = {"stable": track(54_000, 0.01), "candidate": track(6_000, errors_c)}
    if evidence is not None:
        snap["evidence"] = evidence
    return snap


def test_judge_combines_carried_evidence_and_reports_what_to_carry_next() -> None:
    alone = judged(_snapshot(0.0125, None))
    harm = next(m for m in alone.metrics if m.name == "errorRate.harm")
    assert harm.decision == "pass" and harm.e_value is not None
    assert alone.evidence["errorRate.harm"] == pytest.approx(harm.e_value, rel=1e-5)  # one step: itself
    assert set(alone.evidence) == {"errorRate.harm", "latency.harm", "predictionDrift"}

    big = 1 / harm.e_value * 100.0  # earlier steps already showed strong evidence against the candidate
    later = judged(_snapshot(0.0125, {"step": 2, "steps": 4, "carried": {"errorRate.harm": big}}))
    later_harm = next(m for m in later.metrics if m.name == "errorRate.harm")
    assert later.verdict == "rollback" and later_harm.decision == "fail"
    assert later_harm.e_value is not None and later_harm.threshold is not None
    assert later_harm.e_value >= later_harm.threshold


def test_judge_splits_only_the_slo_share_over_the_steps() -> None:
    snap = _snapshot(0.01, {"step": 0, "steps": 4, "carried": {}})
    result = judged(snap)
    assert result.verdict != "rollback"
    assert result.alpha == ALPHA  # the rollout's budget, not a per-step share


@pytest.mark.parametrize(
    "evidence",
    [
        {"step": -1, "steps": 4},
        {"step": 0, "steps": 0},
        {"step": "1", "steps": 4},
        {"step": 0, "steps": 4, "carried": {"errorRate.harm": -1}},
        {"step": 0, "steps": 4, "carried": {"errorRate.harm": float("nan")}},
        {"step": 0, "steps": 4, "carried": [1.0]},
        "step 1",
    ],
)
def test_malformed_evidence_is_refused_with_where(evidence: Any) -> None:
    with pytest.raises(SnapshotError, match="evidence"):
        parse_snapshot(_snapshot(0.05, evidence))
