"""The offline evaluation in status: the Job the operator ran for an ``evaluate`` step, and what it found.

``status.lastEvaluation`` is the memory of the step: which Job (named from the rollout, the step and the
attempt, so an operator restarted mid-evaluation finds the same Job instead of starting a second one), its
phase, and, once the Job has answered, the verdict with every comparison (the report of
``mlrollout_serving.contract.evaluation``, in the status' own words). A rollout's history entry keeps the
verdict's one line.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from mlrollout.api.analysis import MetricDecision
from mlrollout.api.common import ApiModel, Label, Line, Message, Word
from mlrollout_serving.contract.evaluation import Check, EvaluationReport

EvaluationPhase = Literal["Running", "Passed", "Failed", "Inconclusive"]
PHASES: dict[str, EvaluationPhase] = {"pass": "Passed", "fail": "Failed", "inconclusive": "Inconclusive"}
MAX_CHECKS = 16


def job_name(model_deployment: str, revision: str, rollout_started: str, step: int, attempt: int) -> str:
    """The evaluation Job of one attempt at one evaluate step of one rollout: the same inputs, the same name
    (an operator restarted mid-evaluation, or a pass redone after a conflict, finds the Job it asked for);
    a new rollout of the same revision (``retry``) or a rerun after ``resume`` gets a new one. At most 56
    characters, so its pods' ``job-name`` label fits; ``kubectl get jobs`` shows the revision it scores."""
    digest = hashlib.sha256(f"{revision}/{rollout_started}/{step}/{attempt}".encode()).hexdigest()[:8]
    return f"{model_deployment[:29]}-eval-{revision[:12]}-{digest}"


def _first(value: object) -> object:
    return value[:MAX_CHECKS] if isinstance(value, list) else value


class EvaluationCheck(ApiModel):
    """One comparison: the candidate against stable (overall or on a slice), or against the trivial baseline."""

    kind: Literal["stable", "baseline", "slice"] = Field(description="stable, baseline or slice.")
    name: Label = Field(description="stable; the baseline (majority, mean); or the slice as column=value.")
    decision: MetricDecision = Field(description="pass, fail or inconclusive.")
    rows: int = Field(ge=0, description="Holdout rows compared.")
    reference: float | None = Field(default=None, description="Stable's score (or the baseline's) on those rows.")
    candidate: float | None = Field(default=None, description="The candidate's score on those rows.")
    effect: float | None = Field(default=None, description="Candidate minus reference, in the metric's unit.")
    interval: list[float] | None = Field(
        default=None, min_length=2, max_length=2, description="The effect's interval at level 1 - alpha."
    )
    alpha: float | None = Field(default=None, description="The interval's alpha (slices: a Bonferroni share).")
    test: Label | None = Field(default=None, description="The paired test.")
    p_value: float | None = Field(default=None, description="Two-sided p-value of no difference.")
    margin: float | None = Field(default=None, description="How much worse than the reference still passes.")
    reason: Message | None = Field(default=None, description="One line for humans.")

    @classmethod
    def of(cls, check: Check) -> EvaluationCheck:
        return cls.model_validate(check.to_wire())  # camelCase, the interval as a list: the CRD's own form


class EvaluationStatus(ApiModel):
    """The offline evaluation of the current (or last) rollout (docs/operator.md, "Offline evaluation")."""

    revision: str = Field(max_length=64, description="The candidate revision evaluated.")
    step: int = Field(ge=0, description="Index of the evaluate step.")
    attempt: int = Field(default=1, ge=1, description="1, then one more for each `resume` that reruns the step.")
    job: str = Field(max_length=63, description="The Job that scores both models (batch/v1, same namespace).")
    phase: EvaluationPhase = Field(description="Running, then Passed, Failed or Inconclusive.")
    started_at: str = Field(description="When the Job was asked for (RFC 3339).")
    finished_at: str | None = Field(default=None, description="When its answer (or its failure) was seen.")
    reason: Message = Field(default="", description="The verdict in one line, or why there is none.")
    metric: Word | None = Field(default=None, description="The metric compared.")
    rows: int | None = Field(default=None, ge=0, description="Holdout rows scored.")
    dataset_sha256: str | None = Field(default=None, max_length=64, description="The holdout's digest.")
    problem: Line | None = Field(default=None, description="badInput or error: why there is no comparison.")
    checks: Annotated[list[EvaluationCheck] | None, BeforeValidator(_first)] = Field(
        default=None, max_length=MAX_CHECKS, description="The comparisons (the first 16)."
    )
    omitted: int | None = Field(default=None, ge=0, description="Slice comparisons not kept (see the Job's log).")

    def with_report(self, report: EvaluationReport, finished_at: str) -> EvaluationStatus:
        """This evaluation, answered (assignments validate: reasons are clipped to the CRD's lengths)."""
        out = self.model_copy(deep=True)
        out.phase = PHASES[report.verdict]
        out.finished_at = finished_at
        out.reason = report.reason
        out.metric = report.metric
        out.rows = report.rows or None
        out.dataset_sha256 = report.dataset_sha256
        out.problem = report.problem
        out.checks = [EvaluationCheck.of(c) for c in report.checks][:MAX_CHECKS] or None
        out.omitted = (report.omitted + max(len(report.checks) - MAX_CHECKS, 0)) or None
        return out

    def without_answer(self, reason: str, finished_at: str) -> EvaluationStatus:
        """This evaluation, ended without a report (the Job failed, vanished or ran out of time)."""
        out = self.model_copy(deep=True)
        out.phase = "Inconclusive"
        out.finished_at = finished_at
        out.reason = reason
        out.problem = "error"
        return out
