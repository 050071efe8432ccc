"""Approval hooks as the machine sees them: gates that open once every hook of a kind approved the candidate.

The controller calls the hooks off the reconcile pass and hands their latest answers in as facts
(`Facts.hooks`); here those answers become status (`status.approvals`, one entry per hook asked about the
candidate) and moves. An approval is remembered for the candidate's revision, so a hook is never asked
again about the same rollout; a wait that outlives the hook's maxWait ends by the policy's onInconclusive.
"""

from __future__ import annotations

from typing import Literal

from mlrollout.api.common import parse_duration
from mlrollout.api.modeldeployment import ApprovalStatus
from mlrollout.api.rolloutpolicy import Hook, HookType
from mlrollout.rollout import moves
from mlrollout.rollout.timefmt import fmt, parse
from mlrollout.rollout.work import Work

Gate = Literal["open", "waiting", "moved"]
"""open: every hook of the kind approved; waiting: one has not (yet); moved: a refusal or maxWait moved the
rollout (rolled back or held)."""


def gate(w: Work, kind: HookType) -> Gate:
    """Ask the policy's hooks of ``kind`` in order; the first that has not approved keeps the gate shut."""
    cand = w.s.candidate
    assert cand is not None
    for hook in w.policy.hooks_of(kind):
        entry = _entry(w, hook, cand.revision, cand.number)
        if entry.state == "approved":
            continue
        answer = w.facts.hooks.get(hook.name)
        if answer is not None and answer.revision == cand.revision and answer.time >= parse(entry.since):
            if answer.result == "approved":
                entry.state, entry.time, entry.message = "approved", fmt(answer.time), f"approved: {answer.detail}"
                w.event("HookApproved", f"{kind} hook {hook.name} approved revision {cand.number}: {answer.detail}")
                continue
            if answer.result == "refused" and kind == "preRollout":
                moves.rollback(w, "PreRolloutRefused", f"preRollout hook {hook.name} refused: {answer.detail}")
                return "moved"
            said = f"{'refused' if answer.result == 'refused' else 'no answer'}: {answer.detail}"
            if entry.message != said:  # one Event per new answer, not one per pass
                entry.time, entry.message = fmt(answer.time), said
                w.event(
                    "HookNotApproved",
                    f"{kind} hook {hook.name} about revision {cand.number}: {said}; asked again",
                    warning=True,
                )
        if w.elapsed(entry.since) > parse_duration(hook.max_wait):
            message = (
                f"{kind} hook {hook.name} did not approve revision {cand.number} within maxWait {hook.max_wait} "
                f"({entry.message or 'no answer yet'})"
            )
            if w.policy.on_inconclusive.action == "rollback":
                moves.rollback(w, "Inconclusive", message)
            else:
                moves.hold(w, "Inconclusive", f"{message}; holding for a human (resume asks again)", zero=False)
            return "moved"
        return "waiting"
    return "open"


def _entry(w: Work, hook: Hook, revision: str, number: int) -> ApprovalStatus:
    """The hook's entry about ``revision``; a new one starts the wait (and says so)."""
    for entry in w.s.approvals or []:
        if entry.hook == hook.name and entry.revision == revision:
            return entry
    entry = ApprovalStatus(hook=hook.name, type=hook.type, revision=revision, state="waiting", since=fmt(w.now))
    w.s.approvals = [*(w.s.approvals or []), entry]
    w.event(
        "AwaitingApproval",
        f"waiting for approval from {hook.type} hook {hook.name} for revision {number}",
        notify=("AwaitingApproval",),
    )
    return entry


def waiting(w: Work) -> ApprovalStatus | None:
    """The hook the candidate waits for, if any (phase message, Progressing condition, the plugin)."""
    cand = w.s.candidate
    if cand is None:
        return None
    return next((a for a in w.s.approvals or [] if a.revision == cand.revision and a.state == "waiting"), None)


def restart_waits(w: Work) -> None:
    """`resume` after a hold: every hook still waiting gets a fresh maxWait (and is asked again)."""
    for entry in w.s.approvals or []:
        if entry.state == "waiting":
            entry.since = fmt(w.now)


def prune(w: Work) -> None:
    """Approvals are about the candidate: they end with its rollout (a retry of the revision asks again)."""
    cand = w.s.candidate
    kept = [a for a in w.s.approvals or [] if cand is not None and a.revision == cand.revision]
    w.s.approvals = kept or None
