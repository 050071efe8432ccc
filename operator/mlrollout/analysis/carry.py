"""Evidence carried across a rollout's analysed steps: one false-rollback budget for the whole rollout.

Each analysed step runs its own e-process on the counts since the step started (the traffic split changes
between steps, so one step's counts are not comparable with the next one's). Splitting alpha evenly over
the k steps keeps the rollout within alpha, but pays ``log k`` nats at every step and forgets what earlier
steps saw. Instead the steps' e-values are combined into one e-process for the whole rollout, a fixed
mixture over the step at which a regression may have begun:

    E(t) = sum_i w_i * M_i(t),    M_i(t) = product of the step e-values from step i to now (1 before step i)

with weights fixed in advance (``restart_weights``): half on "from the first analysed step" (evidence
multiplies across steps), half split over restarts at each later step (a regression that appears only at
a higher traffic share is not weighed down by earlier steps that saw nothing, or saw the candidate better).
Each ``M_i`` is a test supermartingale under "the candidate is no worse" (a step's e-process starts at 1
and, given everything before, has expectation at most 1; a finished step contributes its value at the look
that ended it, a stopping time). A fixed average of test supermartingales is one, so by Ville's inequality
``E`` ever reaching ``1/alpha`` has probability at most alpha over the whole rollout, however many steps
and looks (Vovk & Wang 2021, "E-values: calibration, combination and applications"; Ramdas et al. 2023,
"Game-theoretic statistics and safe anytime-valid inference"; Grünwald, de Heide & Koolen 2024, "Safe
 testing", on optional continuation).

During step ``j`` this is ``E(t) = (A_j + w_j) * E_j(t) + R_j``, where ``A_j = sum_{i<j} w_i M_i`` at the
end of step j-1 is the only state to keep (the operator keeps it in the step's status) and ``R_j`` is the
weight of the restarts still to come. So the step's own e-value is held to the threshold
``(1/alpha - R_j) / (A_j + w_j)``; at the first of four steps that is about ``2/alpha`` (per-step splitting
needs ``4/alpha``).

Only tests that produce an e-value carry (harm and drift); the SLO tests use confidence sequences, so
their share of alpha is still split evenly over the analysed steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["CARRIED_TESTS", "StepEvidence", "restart_weights"]

CARRIED_TESTS = frozenset({"errorRate.harm", "latency.harm", "predictionDrift", "inputDrift", "quality.harm"})
"""Tests whose verdict is an e-value against 1/alpha, so their evidence can be combined across steps."""

FIRST_STEP_WEIGHT = 0.5


def restart_weights(steps: int) -> list[float]:
    """``w_i``: the prior weight that a regression began at analysed step ``i``; they sum to 1."""
    if steps <= 1:
        return [1.0]
    return [FIRST_STEP_WEIGHT] + [(1.0 - FIRST_STEP_WEIGHT) / (steps - 1)] * (steps - 1)


@dataclass(frozen=True)
class StepEvidence:
    """Where this look sits in the rollout, and what earlier analysed steps showed.

    ``step`` is the 0-based index among the rollout's ``steps`` analysed steps; ``carried`` maps a test to
    ``A_j``. A test missing from ``carried`` after the first step counts as ``A_j = 0`` (it forgets the
    earlier restarts: always valid, possibly conservative). The default (one step, nothing carried) is a
    single analysis on its own, judged at the full alpha.
    """

    step: int = 0
    steps: int = 1
    carried: Mapping[str, float] = field(default_factory=dict)

    @property
    def index(self) -> int:
        """The step's index into the weights (a policy that lost steps mid-rollout: the last one)."""
        return min(max(self.step, 0), max(self.steps, 1) - 1)

    def _terms(self, test: str) -> tuple[float, float]:
        """``(A_j + w_j, R_j)`` for one test."""
        weights = restart_weights(self.steps)
        j = self.index
        return self.carried.get(test, 0.0) + weights[j], sum(weights[j + 1 :])

    def step_bar(self, test: str, alpha: float) -> float:
        """What the step's own e-value must reach: ``e >= step_bar`` exactly when ``E >= 1/alpha``."""
        scale, rest = self._terms(test)
        return (1.0 / alpha - rest) / scale

    def combined(self, test: str, step_e: float) -> float:
        """``E``: the whole rollout's e-value for ``test`` given this step's e-value."""
        scale, rest = self._terms(test)
        return scale * step_e + rest

    def carry_out(self, test: str, step_e: float) -> float:
        """``A_{j+1}`` if the step ended at this look: what the next analysed step starts from."""
        scale, _ = self._terms(test)
        value = scale * step_e
        return value if math.isfinite(value) else 1e300

    def slo_alpha(self, alpha: float) -> float:
        """An SLO test (confidence sequence, no e-value to carry): an even split over the analysed steps."""
        return alpha / max(self.steps, 1)
