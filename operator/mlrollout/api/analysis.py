"""The analysis' vocabulary, shared by the judge, the state machine and status: verdicts and evidence.

A :class:`Judgement` is the judge's answer to one look; the machine records it into
``status.lastAnalysis`` (its metrics are the same :class:`MetricResult` values, not a copy in another
shape). JSON is its form only at the edges: ``mlrollout analyze`` prints it, recorded verdict files hold it.
"""

from __future__ import annotations

import math
from typing import Annotated, Final, Literal, get_args

from pydantic import AfterValidator, Field

from mlrollout.api.common import ApiModel, Label, Message

Verdict = Literal["promote", "continue", "rollback", "inconclusive"]
"""What one look says about the candidate: pass the step, keep looking, roll back, or no evidence."""
VERDICTS: Final[tuple[Verdict, ...]] = get_args(Verdict)

MetricDecision = Literal["pass", "fail", "inconclusive"]
"""What one metric says: its guardrail holds, it is broken (roll back), or not known yet."""

QualityDesign = Literal["paired", "unpaired"]
"""Which quality test a step runs: paired (labelled pairs of mirrored answers: shadow, blue-green preview) or
unpaired (each track's own labelled rows: canary). Fixed by the step's configuration, never by its counts."""


class TrackPair(ApiModel):
    """A value per track."""

    stable: float | None = Field(default=None, description="Stable's value.")
    candidate: float | None = Field(default=None, description="The candidate's value.")


class MetricResult(ApiModel):
    """One metric's evidence at one look, enough to explain the verdict."""

    name: Label = Field(description="Metric name.")
    decision: MetricDecision = Field(description="pass, fail or inconclusive.")
    test: Label | None = Field(default=None, description="The statistical test used.")
    samples: TrackPair | None = Field(default=None, description="Sample sizes.")
    estimate: TrackPair | None = Field(default=None, description="Point estimate per track.")
    effect: float | None = Field(default=None, description="Candidate minus stable (or a ratio, per test).")
    interval: list[float] | None = Field(
        default=None, min_length=2, max_length=2, description="Anytime-valid interval for the effect."
    )
    statistic: float | None = Field(default=None, description="Test statistic.")
    e_value: float | None = Field(default=None, description="E-value (evidence against the null).")
    p_value: float | None = Field(default=None, description="Anytime-valid p-value.")
    threshold: float | None = Field(default=None, description="The limit it was held to.")
    reason: Message | None = Field(default=None, description="One line for humans.")


def _carried(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"carried evidence must be a finite number >= 0, got {value!r}")
    return value


Carried = Annotated[float, AfterValidator(_carried)]


class Samples(ApiModel):
    """Requests per track in the look's window."""

    stable: int = Field(ge=0)
    candidate: int = Field(ge=0)


class Forecast(ApiModel):
    """When a candidate like stable would pass every check of the current step, at the traffic seen so far
    (docs/analysis.md, "Time to decision"); a worse candidate is rolled back sooner, or never passes."""

    seconds: float | None = Field(
        default=None, ge=0, description="Seconds from the step's start; null: not within a year at this traffic."
    )
    candidate_requests: float | None = Field(
        default=None, ge=0, description="Candidate requests the step's checks need by then."
    )
    candidate_rate: float = Field(default=0.0, ge=0, description="Candidate requests per second seen in the step.")
    slowest: Label | None = Field(default=None, description="The check that takes longest (or minRequests).")


class Judgement(ApiModel):
    """The judge's answer to one look (docs/analysis.md, "The verdict")."""

    verdict: Verdict
    reason: Message
    metrics: list[MetricResult] = Field(default_factory=list)
    alpha: float | None = Field(default=None, gt=0, le=1, description="The policy's alpha it was judged at.")
    samples: Samples | None = Field(default=None, description="Requests per track; absent without evidence.")
    warnings: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    evidence: dict[str, Carried] = Field(
        default_factory=dict,
        description="Per e-value test, what the next analysed step starts from if the step ends at this look.",
    )
    forecast: Forecast | None = Field(default=None, description="Time to a decision at the traffic seen.")

    @property
    def candidate_requests(self) -> int:
        """The candidate's requests in the window (a recorded judgement without samples: its metrics')."""
        if self.samples is not None:
            return self.samples.candidate
        counts = [m.samples.candidate for m in self.metrics if m.samples is not None and m.samples.candidate]
        return int(max(counts, default=0))

    def to_json(self) -> dict[str, object]:
        """The JSON edge (``mlrollout analyze``, recorded files): every key, nulls included."""
        return self.model_dump(by_alias=True, mode="json")
