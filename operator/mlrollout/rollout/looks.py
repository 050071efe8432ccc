"""The analysis as the machine sees it: when a look is due, and what a look's judgement changes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from mlrollout.api.analysis import QualityDesign
from mlrollout.api.common import parse_duration
from mlrollout.api.modeldeployment import AnalysisStatus, ModelDeploymentStatus
from mlrollout.api.rolloutpolicy import RolloutPolicySpec
from mlrollout.rollout.facts import Look
from mlrollout.rollout.timefmt import fmt, parse
from mlrollout.rollout.work import Work


def analysis_due(status: ModelDeploymentStatus, policy: RolloutPolicySpec, now: datetime) -> bool:
    """A look is due one interval after the step started and one interval after the last look; pause steps
    and a candidate not yet in a step are not analysed."""
    step, cand = status.current_step, status.candidate
    if step is None or cand is None or step.kind in ("pause", "evaluate"):
        return False
    since = parse(step.started_at)
    last = status.last_analysis
    if last is not None and parse(last.time) > since:
        since = parse(last.time)
    return (now - since).total_seconds() >= parse_duration(policy.analysis.interval)


def relevant_look(w: Work) -> Look | None:
    """The look, if it is about this candidate and was taken during the current step."""
    look, cand, step = w.facts.look, w.s.candidate, w.s.current_step
    if look is None or cand is None or step is None or look.candidate_revision != cand.revision:
        return None
    return look if look.time > parse(step.started_at) else None


def record_look(w: Work) -> None:
    """The look goes into ``lastAnalysis``; its carried evidence into the step's ``carriedOut``."""
    look = w.facts.look
    if look is None or w.s.candidate is None or look.candidate_revision != w.s.candidate.revision:
        return
    j = look.judgement
    w.s.last_analysis = AnalysisStatus(
        time=fmt(look.time), verdict=j.verdict, reason=j.reason, alpha=j.alpha, metrics=j.metrics or None,
        source=look.source, forecast=j.forecast,
    )  # fmt: skip
    step = w.s.current_step
    if j.evidence and step is not None and relevant_look(w) is not None:
        # per test, the latest look that measured it: a look without data (Prometheus down) keeps the last
        step.carried_out = {**(step.carried_out or {}), **j.evidence}


EvidenceSource = Literal["gateway", "model"]
"""Whose series a look reads: the built-in gateway's (``mlrollout_gateway_*``) or the model servers' own."""


def evidence_source(step_kind: str, gateway_in_path: bool = True) -> EvidenceSource:
    """Which series judge a step: the built-in gateway's (what clients see) for canaries when it routes;
    the model servers' own for shadow and blue-green preview steps, where the candidate answers only
    mirrored traffic, and for every step when another provider routes (Gateway API, Istio): there the
    gateway's series do not exist, and the model servers' series, labelled with track and revision by
    the servers themselves, are the evidence every provider has."""
    if not gateway_in_path or step_kind in MIRRORING_KINDS:
        return "model"
    return "gateway"


MIRRORING_KINDS = ("shadow", "blueGreen")
"""The analysed steps that copy live requests to the candidate (a blue-green step is analysed in its preview)."""


def quality_design(step_kind: str) -> QualityDesign:
    """The quality test a step runs, from its configuration alone: paired where the step mirrors (the
    candidate answers only copies, each labelled with stable's answer to the same request), unpaired in a
    canary (each track answers its own requests). Never from whether pairs have come: in a shadow step after
    a canary, answers the candidate served before the gateway loaded the new table count in the shadow step,
    and choosing by the counts would give the unpaired test a second chance at the alpha share on them
    (docs/analysis.md, "Which design a step runs")."""
    return "paired" if step_kind in MIRRORING_KINDS else "unpaired"
