"""The offline evaluation's wire format: what the operator asks the evaluation Job, and what the Job answers.

The operator renders an :class:`EvaluationRequest` (a RolloutPolicy's ``evaluate`` step plus the two
revisions' models) into the Job's environment as JSON (:attr:`EvaluateEnv.REQUEST`); ``mlrollout-evaluate``
(:mod:`mlrollout_serving.evaluation`) scores both models on the holdout and writes an
:class:`EvaluationReport` to its termination message (:meth:`EvaluationReport.to_message`, at most
:data:`MESSAGE_LIMIT` bytes, the kubelet's limit); the operator reads it back from the pod's status with
:func:`parse_report`. ``mlrollout evaluate --json`` prints the same report.

Why the termination message (docs/evaluation.md): the Job needs no Kubernetes identity
at all (no token, no Role), the operator already lists pods, and the message outlives the container for as
long as the pod exists; the price is its size, so the report is compact by construction and shrinks its
least important parts (the passing slices) first.

Field names are camelCase on the wire and snake_case in Python, like every other contract.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from mlrollout_serving.contract.process import ServerEnv

__all__ = [
    "CLASSIFICATION_METRICS",
    "EVALUATE_COMMAND",
    "HIGHER_IS_BETTER",
    "MESSAGE_LIMIT",
    "REGRESSION_METRICS",
    "REPORT_KIND",
    "Baseline",
    "Check",
    "CheckKind",
    "DatasetRef",
    "EvaluateEnv",
    "EvaluateExit",
    "EvaluationFormatError",
    "EvaluationReport",
    "EvaluationRequest",
    "MarginSpec",
    "Metric",
    "ModelRef",
    "Problem",
    "Verdict",
    "default_baseline",
    "finite",
    "margin_allowed",
    "parse_report",
]

EVALUATE_COMMAND: Final = "mlrollout-evaluate"
REPORT_KIND: Final = "mlrollout.io/evaluation"
MESSAGE_LIMIT: Final = 4096
"""Bytes of a container's termination message the kubelet keeps (Kubernetes' limit per container)."""

Metric = Literal["accuracy", "balancedAccuracy", "logLoss", "rocAuc", "mae", "rmse"]
Baseline = Literal["majority", "mean", "none"]
Verdict = Literal["pass", "fail", "inconclusive"]
CheckKind = Literal["stable", "baseline", "slice"]
Problem = Literal["badInput", "error"]
"""Why a report has no comparison: the inputs are unusable (bad input), or the evaluation itself broke."""

HIGHER_IS_BETTER: Final[dict[str, bool]] = {
    "accuracy": True, "balancedAccuracy": True, "rocAuc": True, "logLoss": False, "mae": False, "rmse": False,
}  # fmt: skip
CLASSIFICATION_METRICS: Final = ("accuracy", "balancedAccuracy", "logLoss", "rocAuc")
REGRESSION_METRICS: Final = ("mae", "rmse")


def default_baseline(metric: str) -> Baseline:
    """The trivial model a metric's candidate must beat: the majority class, or the mean of the labels."""
    return "mean" if metric in REGRESSION_METRICS else "majority"


class EvaluateEnv(StrEnum):
    """Environment variables of ``mlrollout-evaluate`` that the operator sets."""

    REQUEST = "MLROLLOUT_EVALUATION_REQUEST"
    TERMINATION_LOG = "MLROLLOUT_TERMINATION_LOG"
    WORK_DIR = "MLROLLOUT_EVALUATION_DIR"
    LOG_LEVEL = "MLROLLOUT_LOG_LEVEL"
    # the model server's own variable (the store access of both pods sets it): one name, one meaning
    REGISTRY_URI = ServerEnv.REGISTRY_URI.value


class EvaluateExit(IntEnum):
    """Exit codes of ``mlrollout evaluate`` and ``mlrollout-evaluate`` (the operator reads the report, not these)."""

    PASS = 0
    FAIL = 1  # worse than the margin, losing to the baseline, or the holdout cannot tell (inconclusive)
    BAD_INPUT = 2  # a flag, the dataset or a model is unusable; the report's reason names it
    ERROR = 3  # the evaluation itself broke (a bug); the report's reason says where


class WireModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, validate_default=True
    )

    def to_wire(self) -> dict[str, Any]:
        """The camelCase JSON form (unset optional fields left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def margin_allowed(level: float, relative: float | None, floor: float | None, absolute: float | None) -> float:
    """How much worse than stable's ``level`` still counts as no worse: ``max(relative * level, floor)``, or the
    absolute margin. The one definition of the rule; the RolloutPolicy's ``Margin`` uses it too."""
    if absolute is not None:
        return absolute
    return max((relative or 0.0) * max(level, 0.0), floor or 0.0)


class MarginSpec(WireModel):
    """The non-inferiority margin (the RolloutPolicy's ``Margin``, as numbers)."""

    relative: float | None = Field(default=None, ge=0, le=10)
    floor: float | None = Field(default=None, ge=0)
    absolute: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one(self) -> MarginSpec:
        if (self.relative is None) == (self.absolute is None):
            raise ValueError("a margin sets exactly one of relative, absolute")
        if self.floor is not None and self.relative is None:
            raise ValueError("floor goes with a relative margin")
        return self

    def allowed(self, level: float) -> float:
        return margin_allowed(level, self.relative, self.floor, self.absolute)


class ModelRef(WireModel):
    """A model file and the digest it must have."""

    uri: str = Field(min_length=1, max_length=2048)
    sha256: str | None = Field(default=None, pattern=r"^[a-f0-9]{64}$")


class DatasetRef(WireModel):
    """The labelled holdout: where, its digest, the label column and the format."""

    uri: str = Field(min_length=1, max_length=2048)
    sha256: str | None = Field(default=None, pattern=r"^[a-f0-9]{64}$")
    label: str = Field(min_length=1, max_length=256)
    format: Literal["csv", "npz"] = "csv"


class EvaluationRequest(WireModel):
    """What to evaluate and how strictly: the operator's ask, and what ``mlrollout evaluate``'s flags build."""

    stable: ModelRef
    candidate: ModelRef
    dataset: DatasetRef
    metric: Metric = "accuracy"
    margin: MarginSpec = Field(default_factory=lambda: MarginSpec(relative=0.01))
    baseline: Baseline | None = None  # None: the metric's default_baseline
    alpha: float = Field(default=0.05, gt=0, le=0.5)
    slices: tuple[Annotated[str, Field(min_length=1, max_length=256)], ...] = Field(default=(), max_length=8)
    resamples: int = Field(default=2000, ge=100, le=100_000)
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _coherent(self) -> EvaluationRequest:
        if self.baseline == "mean" and self.metric not in REGRESSION_METRICS:
            raise ValueError(f"baseline mean is for regression metrics (mae, rmse), not {self.metric}")
        if self.baseline == "majority" and self.metric in REGRESSION_METRICS:
            raise ValueError(f"baseline majority is for classification metrics, not {self.metric}")
        if self.dataset.label in self.slices:
            raise ValueError(f"the label column {self.dataset.label!r} cannot also be a slice")
        return self

    @property
    def effective_baseline(self) -> Baseline:
        return self.baseline if self.baseline is not None else default_baseline(self.metric)


class Check(WireModel):
    """One comparison of the candidate: with stable (overall or on a slice) or with the trivial baseline.

    ``effect`` is candidate minus reference in the metric's unit with its ``interval`` at level 1 - ``alpha``
    (slices: a Bonferroni share of the policy's alpha); ``margin`` is how much worse than the reference the
    candidate may be on this comparison (absent for the baseline, which must be beaten)."""

    kind: CheckKind
    name: str = Field(max_length=300)
    decision: Verdict
    rows: int = Field(ge=0)
    reference: float | None = None
    candidate: float | None = None
    effect: float | None = None
    interval: tuple[float, float] | None = None
    alpha: float | None = None
    test: str | None = Field(default=None, max_length=300)
    p_value: float | None = None
    margin: float | None = None
    reason: str | None = Field(default=None, max_length=1024)


class EvaluationReport(WireModel):
    """The Job's answer. ``verdict`` decides the step: ``pass`` (the next step starts), ``fail`` (rolled back
    before any traffic), ``inconclusive`` (the policy's onInconclusive). ``problem`` says why a report has no
    comparison (bad input or an error), and ``reason`` names it."""

    kind: Literal["mlrollout.io/evaluation"] = REPORT_KIND
    version: Literal[1] = 1
    verdict: Verdict
    reason: str = Field(max_length=2048)
    problem: Problem | None = None
    metric: Metric | None = None
    rows: int = Field(default=0, ge=0)
    dataset_sha256: str | None = None
    stable_sha256: str | None = None
    candidate_sha256: str | None = None
    checks: tuple[Check, ...] = ()
    omitted: int = Field(default=0, ge=0, description="slice checks left out of this report to keep it short")
    seconds: float | None = None

    @property
    def exit_code(self) -> EvaluateExit:
        if self.problem == "badInput":
            return EvaluateExit.BAD_INPUT
        if self.problem == "error":
            return EvaluateExit.ERROR
        return EvaluateExit.PASS if self.verdict == "pass" else EvaluateExit.FAIL

    def to_json(self) -> str:
        return json.dumps(self.to_wire(), separators=(",", ":"), allow_nan=False)

    def to_message(self, limit: int = MESSAGE_LIMIT) -> str:
        """The report as compact JSON within ``limit`` bytes: what does not fit goes first from the passing
        slices (their tests and reasons, then the slices themselves, counted in ``omitted``), then from the
        failing ones (which the verdict's reason already names), then the reasons are shortened."""
        report = self
        for shrink in _shrinks():
            text = report.to_json()
            if len(text.encode()) <= limit:
                return text
            report = shrink(report, limit)
        return report.to_json()


def _without_details(report: EvaluationReport, passing: bool) -> EvaluationReport:
    checks = tuple(
        c.model_copy(update={"test": None, "reason": None})
        if c.kind == "slice" and (c.decision != "fail") == passing
        else c
        for c in report.checks
    )
    return report.model_copy(update={"checks": checks})


def _drop_slices(report: EvaluationReport, passing: bool, limit: int) -> EvaluationReport:
    """Drop slice checks (the passing or the failing ones), last first, until the report fits."""
    checks = list(report.checks)
    omitted = report.omitted
    while len(report.model_copy(update={"checks": tuple(checks), "omitted": omitted}).to_json().encode()) > limit:
        drop = next(
            (i for i in range(len(checks) - 1, -1, -1)
             if checks[i].kind == "slice" and (checks[i].decision != "fail") == passing),
            None,
        )  # fmt: skip
        if drop is None:
            break
        del checks[drop]
        omitted += 1
    return report.model_copy(update={"checks": tuple(checks), "omitted": omitted})


def _shorten_reasons(report: EvaluationReport, limit: int) -> EvaluationReport:
    checks = tuple(c.model_copy(update={"reason": (c.reason or "")[:120] or None}) for c in report.checks)
    return report.model_copy(update={"checks": checks, "reason": report.reason[:400]})


def _shrinks() -> tuple[Callable[[EvaluationReport, int], EvaluationReport], ...]:
    return (
        lambda r, limit: _without_details(r, passing=True),
        lambda r, limit: _drop_slices(r, passing=True, limit=limit),
        lambda r, limit: _without_details(r, passing=False),
        lambda r, limit: _drop_slices(r, passing=False, limit=limit),
        _shorten_reasons,
    )


class EvaluationFormatError(ValueError):
    """A termination message that is not an evaluation report (a crash's log tail, or nothing)."""


def parse_report(text: str) -> EvaluationReport:
    """The report in a termination message; EvaluationFormatError when it holds something else."""
    try:
        data = json.loads(text)
    except ValueError:
        raise EvaluationFormatError("not an evaluation report (not JSON)") from None
    if not isinstance(data, dict) or data.get("kind") != REPORT_KIND:
        raise EvaluationFormatError(f"not an evaluation report (kind is not {REPORT_KIND})")
    try:
        return EvaluationReport.model_validate(data)
    except ValidationError as exc:
        first = str(exc).splitlines()
        raise EvaluationFormatError(f"invalid evaluation report: {'; '.join(first[:3])}") from None


def finite(value: float) -> float:
    """Six significant digits (the report stays short) of a finite number (JSON has no NaN)."""
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value}")
    return float(f"{value:.6g}")
