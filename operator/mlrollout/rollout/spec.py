"""Following the spec: a new revision becomes the candidate (or the first stable), a change supersedes the
rollout in progress, a held-back revision is released when the spec moves on."""

from __future__ import annotations

from mlrollout.api.common import parse_duration
from mlrollout.api.modeldeployment import HeldBackStatus, ResolvingStatus
from mlrollout.rollout import moves
from mlrollout.rollout.actions import RemoveRoutes
from mlrollout.rollout.facts import Unresolved
from mlrollout.rollout.timefmt import fmt
from mlrollout.rollout.work import Work


def follow_provider(w: Work) -> None:
    """spec.traffic.provider changed: the old provider's route object goes (it would keep routing by stale
    weights), and a step in progress starts its window again, so no look mixes evidence gathered behind two
    data planes (the carried evidence of passed steps stays: each step's test is valid on its own)."""
    before = w.before.routing.provider if w.before.routing is not None else None
    now = w.facts.routing.provider
    if before is None or before == now:
        return
    w.actions.append(RemoveRoutes(before))
    step = w.s.current_step
    detail = ""
    if step is not None and w.s.candidate is not None:
        w.s.current_step = step.model_copy(update={"started_at": fmt(w.now), "carried_out": None})
        detail = f"; step {step.index} ({step.kind}) starts its analysis window again"
    w.event("ProviderChanged", f"traffic provider {before} -> {now}: the {before} route is removed{detail}")


def follow_spec(w: Work) -> bool:
    """At most one transition towards what the spec asks for; True if one fired."""
    want = w.facts.spec_revision
    s = w.s
    if s.resolving is not None and (s.resolving.revision != want.revision or want.sha256):
        s.resolving = None  # resolved now, or the spec moved on
    if s.held_back is not None and s.held_back.revision != want.revision and s.held_back.outcome != "undone":
        w.event("SpecChanged", f"spec changed; revision {s.held_back.number} is no longer held back")
        s.held_back = None
        return True
    if s.held_back is not None and s.held_back.outcome == "undone" and s.held_back.revision != want.revision:
        s.held_back = None  # a new spec after an undo: roll it out
        return True
    if s.stable is not None and s.stable.revision == want.revision:
        if s.candidate is not None and s.candidate.origin == "spec":
            moves.supersede(w, "the spec went back to the stable revision")
            return True
        return False
    if s.candidate is not None and s.candidate.revision == want.revision:
        return False
    if s.held_back is not None and s.held_back.revision == want.revision:
        return False
    unresolved = w.facts.unresolved
    if unresolved is None and not want.sha256:  # never deploy a revision without its digest
        unresolved = Unresolved("the registry has not been asked yet", final=False)
    if unresolved is not None:
        return _unresolved(w, unresolved)
    if s.stable is None and s.candidate is None:
        s.stable = w.new_revision(want, "spec")
        w.set_traffic(0, 0)
        w.event("Deploying", f"first revision {s.stable.number} ({want.model_version}) deployed as stable")
        return True
    if s.stable is not None and s.candidate is None and not s.history and not _stable_ever_available(w):
        old = s.stable.revision
        s.stable = w.new_revision(want, "spec")
        w.schedule_removal(old, 0, "replaced before it ever served")
        w.event("Deploying", f"revision {s.stable.number} replaces a stable that never became available")
        return True
    if s.candidate is not None:
        moves.supersede(w, f"superseded by revision {w.number_for(want.revision)}")
    s.candidate = w.new_revision(want, "spec")
    s.current_step = None
    w.set_traffic(0, 0)
    w.event(
        "RolloutStarted",
        f"revision {s.candidate.number} ({want.model_version}) deployed as candidate; {len(w.steps)} steps once ready",
        notify=("RolloutStarted",),
    )
    return True


def first_available(w: Work) -> bool:
    """The first revision answering for the first time: history records it as promoted."""
    stable = w.s.stable
    if stable is None or w.s.history or not w.serving():
        return False
    w.history(stable, "promoted", "first revision available")
    return True


def _stable_ever_available(w: Work) -> bool:
    cond = next((c for c in w.s.conditions or [] if c.type == "Available"), None)
    return (cond is not None and cond.status == "True") or w.facts.track(w.stable_revision()).available


def _unresolved(w: Work, why: Unresolved) -> bool:
    """The spec's models:/ URI has no answer from the registry: nothing half-resolved is deployed. A final
    error holds the spec's revision back at once (refused); a registry that is down is waited for, then
    after progressDeadline the policy's onInconclusive decides: rollback refuses it, hold keeps waiting."""
    want, s = w.facts.spec_revision, w.s
    if why.final:
        _refuse(w, "ResolutionFailed", why.reason)
        return True
    if s.resolving is None:
        s.resolving = ResolvingStatus(revision=want.revision, since=fmt(w.now), reason=why.reason)
        w.event("RegistryUnavailable", f"cannot resolve {want.model_uri} yet, retrying: {why.reason}", warning=True)
        return True
    s.resolving.reason = why.reason
    deadline = parse_duration(w.policy.progress_deadline)
    if w.elapsed(s.resolving.since) <= deadline or w.policy.on_inconclusive.action != "rollback":
        return False
    _refuse(w, "RegistryUnavailable", f"no answer within progressDeadline {w.policy.progress_deadline}: {why.reason}")
    return True


def _refuse(w: Work, code: str, reason: str) -> None:
    want = w.facts.spec_revision
    w.s.resolving = None
    w.s.held_back = HeldBackStatus(
        revision=want.revision,
        number=w.number_for(want.revision),
        outcome="refused",
        reason=f"{code}: {reason}",
        time=fmt(w.now),
    )
    w.event(code, f"{want.model_uri} not rolled out: {reason}", warning=True)
