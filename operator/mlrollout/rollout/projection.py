"""Status projected for people and for the world: phase, message, conditions, the traffic version, and
the actions that make children and routes match status."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from mlrollout.api.common import Condition, parse_duration
from mlrollout.api.modeldeployment import ModelDeploymentStatus, Phase, RoutingStatus, StepStatus, TrafficStatus
from mlrollout.rollout import approval, moves
from mlrollout.rollout.actions import EnsureTrack, RecordEvent, RouteMode, SetRoutes
from mlrollout.rollout.timefmt import fmt, parse
from mlrollout.rollout.work import Work


def finish(w: Work) -> None:
    s, facts = w.s, w.facts
    s.observed_generation = facts.generation
    s.policy = facts.policy
    traffic = s.traffic or TrafficStatus(stable=100, candidate=0)
    routed_candidate = s.candidate.revision if s.candidate and (traffic.candidate or traffic.mirror) else None
    step_start = _step_start(s.current_step if s.candidate else None)
    key = (w.stable_revision(), routed_candidate, traffic.candidate, traffic.mirror, step_start)
    before = w.before
    old_t = before.traffic or TrafficStatus(stable=100, candidate=0)
    old_cand = before.candidate.revision if before.candidate and (old_t.candidate or old_t.mirror) else None
    old_step = _step_start(before.current_step if before.candidate else None)
    old_key = (before.stable.revision if before.stable else "", old_cand, old_t.candidate, old_t.mirror, old_step)
    version = old_t.version + 1 if key != old_key or before.traffic is None else old_t.version
    s.traffic = traffic.model_copy(update={"version": version})
    s.stable_version = s.stable.model_version if s.stable else None
    s.candidate_version = s.candidate.model_version if s.candidate else None
    split = f"{s.traffic.stable}/{s.traffic.candidate}"
    s.traffic_split = f"{split} mirror {s.traffic.mirror}%" if s.traffic.mirror else split
    s.routing = _routing(w)
    s.phase, s.message = _phase(w)
    _conditions(w)
    if s.phase != before.phase:
        degraded = s.phase == "Degraded"
        w.event(f"Phase{s.phase}", s.message or "", warning=degraded, notify=("Degraded",) if degraded else ())
    if s.stable is not None:
        w.actions.append(EnsureTrack(s.stable, "stable"))
    if s.candidate is not None:
        w.actions.append(EnsureTrack(s.candidate, "candidate"))
    if s.stable is not None:
        w.actions.append(
            SetRoutes(
                s.stable.revision, routed_candidate, traffic.candidate, traffic.mirror, _mode(w), version, step_start
            )
        )


def _step_start(step: StepStatus | None) -> float | None:
    """The route table's ``stepStartedAt``: when the current step started, in unix seconds (None: no step). A
    new start is a new table (its version increases), so the gateway learns every step's start."""
    return None if step is None else parse(step.started_at).timestamp()


def _routing(w: Work) -> RoutingStatus:
    """The provider's own word, as observed (nothing of it is memory: the next pass observes again)."""
    r = w.facts.routing
    return RoutingStatus(
        provider=r.provider, accepted=r.accepted, message=r.detail or None, mirror=r.mirror,
        not_applied=list(r.not_applied) or None,
    )  # fmt: skip


def _mode(w: Work) -> RouteMode:
    """Blue-green policies switch at once; a sticky key pins each client to a track (A/B); else weights."""
    if w.policy.strategy.is_blue_green:
        return "blueGreen"
    return "ab" if w.facts.sticky else "canary"


def _phase(w: Work) -> tuple[Phase, str]:
    s = w.s
    stable_tf = w.facts.track(w.stable_revision())
    if s.candidate is not None:
        step = s.current_step
        where = f"step {step.index + 1}/{len(w.steps)} ({step.kind})" if step else "waiting for readiness"
        starting = w.facts.track(s.candidate.revision).startup
        if step is None and starting:
            where += f"; {starting}"
        if step is None and approval.waiting(w) is not None:
            where = "ready, before the first step"
        elif step is not None and step.passed is not None:
            where += ", passed"
        if s.promoting is not None:
            where += f"; promoted once it runs the stable's pods ({moves.capacity_short(w) or 'ready'})"
        what = f"revision {s.candidate.number} ({s.candidate.model_version}): {where}"
        if s.hold:
            return "Paused", f"{what}; held: {s.hold}"
        if w.paused():
            why = "spec.paused" if w.facts.paused else "paused by command"
            return "Paused", f"{what}; {why}"
        asked = approval.waiting(w)
        if asked is not None:
            last = f" (last answer: {asked.message})" if asked.message else ""
            return "Progressing", f"{what}; waiting for approval from {asked.type} hook {asked.hook}{last}"
        door = w.facts.front_door_problem()
        if door and step is not None:  # no step passes while no one serves the route
            return "Progressing", f"{what}; not advancing: {door}"
        return "Progressing", what
    if s.resolving is not None:
        since = s.resolving.since
        return (
            "Progressing",
            f"resolving {w.facts.spec_revision.model_uri} (registry not answering since {since}): {s.resolving.reason}",
        )
    if s.held_back is not None and s.held_back.outcome != "undone":
        return "Degraded", f"revision {s.held_back.number} {s.held_back.outcome}: {s.held_back.reason}"
    if s.stable is None:
        return "Pending", "nothing deployed yet"
    if w.serving():
        note = f"; spec revision held back: {s.held_back.reason}" if s.held_back is not None else ""
        return "Healthy", f"revision {s.stable.number} ({s.stable.model_version}) serving{note}"
    if stable_tf.digest_mismatch or stable_tf.crash_looping or stable_tf.config_error:
        return "Degraded", f"stable revision {s.stable.number} cannot start: {stable_tf.detail}"
    gateway, door = w.facts.gateway, w.facts.front_door_problem()
    if stable_tf.available and door:  # the model answers, the address clients call does not
        ready = f"revision {s.stable.number} ({s.stable.model_version}) ready"
        if gateway is not None and not gateway.available:
            detail = f" ({gateway.detail})" if gateway.detail else ""
            waiting = f"{ready}; waiting for the gateway{detail}"
        else:
            waiting = f"{ready}; waiting: {door}"
        problem = door
    else:
        waiting = f"revision {s.stable.number} ({s.stable.model_version}) starting"
        if stable_tf.startup:
            waiting += f"; {stable_tf.startup}"
        problem = f"stable revision {s.stable.number} has no ready pods"
        if stable_tf.startup:
            problem += f" ({stable_tf.startup})"
    deadline = parse_duration(w.policy.progress_deadline)
    if not s.history and w.elapsed(s.stable.started_at) <= deadline:
        return "Pending", waiting
    return "Degraded", problem


def _conditions(w: Work) -> None:
    s = w.s
    available = w.serving()
    if available:
        available_reason = "StableAvailable"
    elif w.facts.track(w.stable_revision()).available:
        gateway = w.facts.gateway
        available_reason = "GatewayUnavailable" if gateway is not None and not gateway.available else "RouteNotServed"
    else:
        available_reason = "StableUnavailable"
    progressing = s.candidate is not None and s.phase == "Progressing"
    degraded = s.phase == "Degraded"
    wanted = [
        ("Available", available, available_reason),
        ("Progressing", progressing, _progress_reason(w) if progressing else (s.phase or "Idle")),
        ("Degraded", degraded, "RolloutFailed" if degraded else "AsExpected"),
    ]
    old = {c.type: c for c in s.conditions or []}
    s.conditions = [
        _condition(old.get(ctype), ctype, value, reason, s.message or "", w.facts.generation, w.now)
        for ctype, value, reason in wanted
    ]


def _progress_reason(w: Work) -> str:
    return "WaitingForApproval" if approval.waiting(w) is not None else "RolloutInProgress"


def _condition(
    prev: Condition | None, ctype: str, value: bool, reason: str, message: str, generation: int, now: datetime
) -> Condition:
    """A condition whose transition time moves only when its status does."""
    status: Literal["True", "False"] = "True" if value else "False"
    changed = prev is None or prev.status != status
    return Condition(
        type=ctype,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=fmt(now) if changed or prev is None else prev.last_transition_time,
        observed_generation=generation,
    )


def not_governable(
    status: ModelDeploymentStatus, generation: int, reason: str, message: str, now: datetime
) -> tuple[ModelDeploymentStatus, list[RecordEvent]]:
    """A policy that cannot be resolved, or a spec that does not validate: Degraded with the reason and the
    words of the policy or validator; nothing else changes (what runs keeps running)."""
    new = status.model_copy(deep=True)
    new.observed_generation = generation
    new.message = message
    if new.candidate is None:
        new.phase = "Degraded"
    old = next((c for c in new.conditions or [] if c.type == "Degraded"), None)
    conditions = [c for c in new.conditions or [] if c.type != "Degraded"]
    new.conditions = [*conditions, _condition(old, "Degraded", True, reason, message, generation, now)]
    changed = new != status
    return new, [RecordEvent("Warning", reason, message)] if changed else []
