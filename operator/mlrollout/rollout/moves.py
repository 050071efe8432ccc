"""The moves that change where a rollout is: start a step, pass it, promote, roll back, hold, supersede.

Each move sets status, the traffic split it implies and an Event saying why; the callers decide when.
"""

from __future__ import annotations

from typing import Final

from mlrollout.api.common import parse_duration
from mlrollout.api.modeldeployment import HeldBackStatus, Outcome, PromotingStatus, StepStatus
from mlrollout.api.rolloutpolicy import NotificationEvent, Step
from mlrollout.rollout.actions import StepFinished
from mlrollout.rollout.timefmt import fmt
from mlrollout.rollout.work import Work

DRAIN_SECONDS: Final = 30.0  # a rolled-back or superseded candidate is removed after in-flight requests end
PROMOTE_SCALE_DOWN_SECONDS: Final = 30.0  # old stable after a canary promotion (blue-green uses its own delay)


def start_step(w: Work, index: int, carried: dict[str, float] | None = None) -> None:
    spec = w.steps[index]
    w.s.current_step = StepStatus(index=index, kind=spec.kind, started_at=fmt(w.now), carried_in=carried)
    step_traffic(w, spec)
    w.event("StepStarted", f"step {index} ({spec.kind}) started: {spec.summary()}")


def step_traffic(w: Work, spec: Step) -> None:
    """The split a step asks for; a pause holds the split it finds."""
    if spec.shadow is not None:
        w.set_traffic(0, spec.shadow.mirror_percent)
    elif spec.canary is not None:
        w.set_traffic(spec.canary.weight, 0)
    elif spec.blue_green is not None:
        bg = spec.blue_green
        w.set_traffic(0, bg.preview_mirror_percent if bg.preview_analysis else 0)


def advance(w: Work, reason: str, human: bool = False) -> None:
    """The current step passed: start the next one, or promote after the last (or the blue-green switch).

    Before the promotion, the policy's confirmPromotion hooks are asked (the step is marked passed and
    `progress` waits at their gate); a human's `promote` is itself the confirmation."""
    step = w.s.current_step
    assert step is not None
    if step.passed is None:
        w.actions.append(StepFinished(step.kind, w.elapsed(step.started_at)))
        w.event("StepPassed", f"step {step.index} ({step.kind}) passed: {reason}", notify=("StepPassed",))
    spec = w.step_spec(step)
    if spec is None or spec.blue_green is not None or step.index + 1 >= len(w.steps):
        if w.policy.hooks_of("confirmPromotion") and not human:
            step.passed = reason
            return
        promote(w, reason)
        return
    # The rollout's evidence passes to the next step (through pauses unchanged). A test this step never
    # measured keeps what it carried in, which forgets this step's restart term: always valid.
    carried = {**(step.carried_in or {}), **(step.carried_out or {})}
    start_step(w, step.index + 1, carried or None)


def promote(w: Work, reason: str) -> None:
    """Promote the candidate; with spec.autoscaling and fewer of its pods ready than the stable runs, first
    scale it to the stable's count (status.promoting: the reconciler sizes it at 100 %) and switch once they
    are ready (`finish_promotion`), so ready capacity never dips at the switch."""
    cand = w.s.candidate
    assert cand is not None
    short = capacity_short(w)
    if short:
        if w.s.promoting is not None and w.s.promoting.revision == cand.revision:
            return  # already waiting (a command asking again): progressDeadline still counts from the decision
        w.s.promoting = PromotingStatus(revision=cand.revision, reason=reason, since=fmt(w.now))
        w.event(
            "PromotionScalingUp",
            f"revision {cand.number} ({cand.model_version}) is promoted once it runs the stable's pods ({short}): "
            f"{reason}",
        )
        return
    switch(w, reason)


def capacity_short(w: Work) -> str:
    """Why the candidate cannot take all traffic without a dip in ready pods, or "" when it can: with
    spec.autoscaling it runs a share of the stable's count (the HPA's choice) until its promotion. Without
    autoscaling both tracks run spec.replicas."""
    cand, old = w.s.candidate, w.s.stable
    if not w.facts.autoscaled or cand is None or old is None or old.revision == cand.revision:
        return ""
    need = w.facts.track(old.revision).replicas
    have = w.facts.track(cand.revision).ready_replicas
    return f"{have} of {need} pods ready" if have < need else ""


def finish_promotion(w: Work) -> bool:
    """A promotion waiting for the candidate's pods (status.promoting): switch once they are ready, or once
    progressDeadline has passed (a cluster without room for a second fleet must not hold the rollout
    forever: the HPA scales the new stable from there, and the Warning says so). True if it switched."""
    pending, cand = w.s.promoting, w.s.candidate
    assert pending is not None and cand is not None
    if w.paused():  # a pause holds the switch too (the candidate keeps its step's traffic meanwhile)
        return False
    short = capacity_short(w)
    if short:
        if w.elapsed(pending.since) <= parse_duration(w.policy.progress_deadline):
            return False
        w.event(
            "PromotedBelowCapacity",
            f"revision {cand.number} ({cand.model_version}) had {short} after progressDeadline "
            f"{w.policy.progress_deadline}; promoted anyway, its HPA scales it from here",
            warning=True,
        )
    switch(w, pending.reason)
    return True


def switch(w: Work, reason: str) -> None:
    """The promotion itself: the candidate becomes stable and takes all traffic."""
    cand, old = w.s.candidate, w.s.stable
    assert cand is not None
    w.s.promoting = None
    if old is not None and old.revision != cand.revision:
        delay = PROMOTE_SCALE_DOWN_SECONDS
        bg = next((s.blue_green for s in w.steps if s.blue_green is not None), None)
        if bg is not None:
            delay = parse_duration(bg.scale_down_delay)
        w.schedule_removal(old.revision, delay, f"replaced by revision {cand.number}")
    w.history(cand, "promoted", reason)
    w.s.stable = cand
    w.s.candidate = None
    w.s.current_step = None
    w.s.hold = None
    w.s.promoting = None
    w.set_traffic(0, 0)
    w.event("Promoted", f"revision {cand.number} ({cand.model_version}) is stable: {reason}", notify=("Promoted",))


def rollback(w: Work, code: str, reason: str, outcome: Outcome = "rolledBack") -> None:
    """Candidate weight and mirror to 0 at once, removal after the drain, the spec's revision held back."""
    cand = w.s.candidate
    assert cand is not None
    w.set_traffic(0, 0)
    w.history(cand, outcome, f"{code}: {reason}")
    w.schedule_removal(cand.revision, DRAIN_SECONDS, f"{outcome}: {code}")
    if cand.revision == w.facts.spec_revision.revision:
        w.s.held_back = HeldBackStatus(
            revision=cand.revision,
            number=cand.number,
            outcome="aborted" if outcome == "aborted" else "rolledBack",
            reason=f"{code}: {reason}",
            time=fmt(w.now),
        )
    w.s.candidate = None
    w.s.current_step = None
    w.s.hold = None
    w.s.promoting = None
    verb = "aborted" if outcome == "aborted" else "rolled back"
    notify = _notify("RolledBack", code)
    w.event(code, f"revision {cand.number} {verb}; candidate weight set to 0: {reason}", warning=True, notify=notify)


def hold(w: Work, code: str, reason: str, zero: bool) -> None:
    """Wait for a human (policy onFailure=pause or onInconclusive=hold), visibly; ``zero`` stops traffic."""
    w.s.hold = reason
    if zero:
        w.set_traffic(0, 0)
    w.event("RolloutHeld", f"{code}: {reason}", warning=True, notify=_notify("Held", code))


def supersede(w: Work, reason: str) -> None:
    cand = w.s.candidate
    assert cand is not None
    w.history(cand, "superseded", reason)
    w.schedule_removal(cand.revision, DRAIN_SECONDS, "superseded")
    w.s.candidate = None
    w.s.current_step = None
    w.s.hold = None
    w.s.promoting = None
    w.set_traffic(0, 0)
    w.event("Superseded", f"rollout of revision {cand.number} stopped: {reason}", warning=True)


def _notify(move: NotificationEvent, code: str) -> tuple[NotificationEvent, ...]:
    """A rollback or hold, and Inconclusive too when a step ran out of time without a verdict (the code)."""
    return (move, "Inconclusive") if code == "Inconclusive" else (move,)
