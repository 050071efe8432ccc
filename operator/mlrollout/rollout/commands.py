"""Human commands (``kubectl mlrollout ...``): each acted on once, accepted or refused visibly in
``status.lastCommand`` with an Event."""

from __future__ import annotations

from mlrollout.api.commands import VERBS, Command
from mlrollout.api.modeldeployment import CommandStatus, HeldBackStatus, RevisionStatus
from mlrollout.rollout import approval, moves
from mlrollout.rollout.timefmt import fmt
from mlrollout.rollout.work import Work


def handle_command(w: Work) -> None:
    cmd = w.facts.command
    if cmd is None or (w.s.last_command is not None and w.s.last_command.id == cmd.id):
        return
    ok, message = _carry_out(w, cmd)
    w.s.last_command = CommandStatus(
        id=cmd.id, verb=cmd.verb, result="accepted" if ok else "refused", message=message, time=fmt(w.now)
    )
    w.event("CommandAccepted" if ok else "CommandRefused", f"{cmd.verb} ({cmd.id}): {message}", not ok)


def _carry_out(w: Work, cmd: Command) -> tuple[bool, str]:
    if cmd.error is not None:
        return False, cmd.error
    if cmd.verb not in VERBS:
        return False, f"unknown verb {cmd.verb!r}; use one of {', '.join(VERBS)}"
    cand, step = w.s.candidate, w.s.current_step
    if cmd.verb == "pause":
        w.s.paused_by_command = True
        return True, "paused: steps do not advance until resume"
    if cmd.verb == "resume":
        return True, _resume(w)
    if cmd.verb == "retry":
        held = w.s.held_back
        if held is None or held.revision != w.facts.spec_revision.revision or cand is not None:
            return False, "nothing to retry: the spec's revision is not held back"
        w.s.held_back = None
        w.event("Retry", f"retrying revision {held.number} ({held.revision})")
        return True, f"retrying revision {held.number}"
    if cmd.verb == "undo":
        return _undo(w, cmd.to_revision)
    if cand is None:
        return False, "no rollout in progress"
    if cmd.verb == "abort":
        moves.rollback(w, "Aborted", f"aborted by command {cmd.id}", outcome="aborted")
        return True, f"rollout of revision {cand.number} aborted"
    if step is None:
        return False, f"candidate revision {cand.number} is not ready yet"
    w.s.hold = None
    if cmd.verb == "promoteFull":
        moves.promote(w, f"promoted fully by command {cmd.id}")
        return True, f"revision {cand.number} promoted to stable"
    moves.advance(w, f"promoted by command {cmd.id}", human=True)
    return True, f"step {step.index} ({step.kind}) passed by command"


def _resume(w: Work) -> str:
    was = [x for x, on in (("command pause", w.s.paused_by_command), ("hold", w.s.hold)) if on]
    w.s.paused_by_command = None
    w.s.hold = None
    approval.restart_waits(w)
    step = w.s.current_step
    spec = w.step_spec(step)
    if spec is not None and spec.pause is not None and spec.pause.duration is None:
        moves.advance(w, "resumed")
        return "indefinite pause step passed"
    if step is not None and was:
        step.started_at = fmt(w.now)  # the step's clock restarts: its maxDuration counts from now
        if spec is not None:
            moves.step_traffic(w, spec)  # undo a hold's weight 0
    w.event("Resumed", f"resumed ({', '.join(was) or 'nothing was paused'})")
    return "resumed" if was else "nothing was paused"


def _undo(w: Work, to_revision: int | None) -> tuple[bool, str]:
    stable = w.s.stable
    if stable is None:
        return False, "nothing to undo: no stable revision"
    target = _undo_target(w, to_revision, stable)
    if target is None:
        wanted = f"revision {to_revision}" if to_revision else "a previous revision"
        return False, f"{wanted} is not known (see status.revisions)"
    if w.s.candidate is not None:
        moves.rollback(w, "Aborted", f"undo to revision {target.number}", outcome="aborted")
    spec_rev = w.facts.spec_revision.revision
    if spec_rev != target.revision:
        w.s.held_back = HeldBackStatus(
            revision=spec_rev,
            number=w.number_for(spec_rev),
            outcome="undone",
            reason=f"undo to revision {target.number}; change the spec or `retry` to roll the spec out",
            time=fmt(w.now),
        )
    if target.revision == stable.revision:
        return True, f"stable is revision {target.number}; the spec's revision is held back"
    w.s.candidate = w.new_revision(target, "undo")
    w.s.current_step = None
    w.event("UndoStarted", f"redeploying revision {target.number} ({target.model_version})")
    return True, f"redeploying revision {target.number}; it becomes stable once ready"


def _undo_target(w: Work, to_revision: int | None, stable: RevisionStatus) -> RevisionStatus | None:
    known = {r.number: r for r in w.s.revisions or [] if r.template}
    if to_revision is not None:
        return known.get(to_revision)
    promoted = [h for h in w.s.history or [] if h.outcome == "promoted" and h.revision != stable.revision]
    for entry in reversed(promoted):
        if entry.number in known:
            return known[entry.number]
    return None
