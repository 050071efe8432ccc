"""The per-look history of the current rollout, kept by the operator in a ConfigMap it owns (`<md>-looks`).

Status keeps only the last look (``lastAnalysis``); the dashboard's plots need every look. They are not in
status because status travels with every watch event and every read of the object (kubectl, Argo CD, the
dashboard's own list watch, each status write of the operator): 200 looks of a few metrics are tens of KiB,
which would multiply the cost of every one of those. A ConfigMap per ModelDeployment is read only by whoever
opens that rollout's page. It is bounded twice: at most ``LOOKS_LIMIT`` looks, and the oldest are dropped until
the JSON is at most ``BYTES_LIMIT`` bytes (a quarter of the 1 MiB object limit). A new candidate starts a new
history. Pure functions: the controller reads, calls `append` and applies; the dashboard calls `decode`.
"""

from __future__ import annotations

import json
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlrollout.api.modeldeployment import ModelDeploymentStatus

LOOKS_LIMIT: Final = 200
BYTES_LIMIT: Final = 256 * 1024
DATA_KEY: Final = "looks.json"


def configmap_name(md: str) -> str:
    """The ConfigMap with a ModelDeployment's looks (a DNS subdomain: at most 63 characters here)."""
    return f"{md[:57]}-looks"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class MetricPoint(_Wire):
    """One metric at one look: what the plots draw."""

    name: str
    decision: str
    stable: float | None = None
    candidate: float | None = None
    effect: float | None = None
    interval: tuple[float, float] | None = None
    e_value: float | None = None
    p_value: float | None = None
    threshold: float | None = None


class LookPoint(_Wire):
    """One look: its verdict, the step and split it was taken in, and each metric's evidence."""

    time: str
    verdict: str
    reason: str = ""
    step: int | None = None
    step_kind: str | None = None
    stable_percent: int | None = None
    candidate_percent: int | None = None
    mirror_percent: int | None = None
    alpha: float | None = None
    metrics: list[MetricPoint] = Field(default_factory=list)


class LookHistory(_Wire):
    """The looks of one candidate revision, oldest first."""

    candidate: str
    looks: list[LookPoint] = Field(default_factory=list)


def point_of(status: ModelDeploymentStatus) -> LookPoint | None:
    """The look just recorded in ``lastAnalysis``, with the step and split in force; None without a look."""
    last = status.last_analysis
    if last is None:
        return None
    step, traffic = status.current_step, status.traffic
    metrics = [
        MetricPoint(
            name=m.name,
            decision=m.decision,
            stable=m.estimate.stable if m.estimate else None,
            candidate=m.estimate.candidate if m.estimate else None,
            effect=m.effect,
            interval=(m.interval[0], m.interval[1]) if m.interval else None,
            e_value=m.e_value,
            p_value=m.p_value,
            threshold=m.threshold,
        )
        for m in last.metrics or []
    ]
    return LookPoint(
        time=last.time,
        verdict=last.verdict,
        reason=last.reason,
        step=step.index if step else None,
        step_kind=step.kind if step else None,
        stable_percent=traffic.stable if traffic else None,
        candidate_percent=traffic.candidate if traffic else None,
        mirror_percent=traffic.mirror if traffic else None,
        alpha=last.alpha,
        metrics=metrics,
    )


def append(history: LookHistory | None, candidate: str, point: LookPoint) -> LookHistory:
    """The history with one more look; a look of another candidate starts a new history. A look already
    recorded (same time) is not added twice, so a retried reconcile pass changes nothing."""
    looks = list(history.looks) if history is not None and history.candidate == candidate else []
    if looks and looks[-1].time == point.time:
        return LookHistory(candidate=candidate, looks=looks)
    return LookHistory(candidate=candidate, looks=[*looks, point][-LOOKS_LIMIT:])


def encode(history: LookHistory) -> str:
    """Compact JSON of at most ``LOOKS_LIMIT`` looks and ``BYTES_LIMIT`` bytes: the oldest looks go first.
    Each look is serialised once, and the newest that fit are kept (one pass, whatever the size)."""
    head = json.dumps({"candidate": history.candidate, "looks": []}, separators=(",", ":"))[:-2]  # up to "looks":[
    parts = [
        json.dumps(p.model_dump(exclude_none=True), separators=(",", ":"), allow_nan=False)
        for p in history.looks[-LOOKS_LIMIT:]
    ]
    room, kept = BYTES_LIMIT - len(head.encode()) - 2, 0
    for part in reversed(parts):
        size = len(part.encode()) + (1 if kept else 0)  # the comma between looks
        if size > room:
            break
        room, kept = room - size, kept + 1
    return head + ",".join(parts[len(parts) - kept :]) + "]}"


def decode(text: str | None) -> LookHistory | None:
    """The stored history, or None when there is none or it cannot be read (a new one is then started)."""
    if not text:
        return None
    try:
        return LookHistory.model_validate_json(text)
    except ValidationError:
        return None
