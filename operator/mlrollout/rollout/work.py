"""One call of `decide`: the working copy of status, the actions collected so far, and the small
bookkeeping every transition shares (numbering, history, scheduled removals, traffic)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final, Literal

from mlrollout.api.modeldeployment import (
    HistoryEntry,
    ModelDeploymentStatus,
    Outcome,
    RevisionStatus,
    ScaleDownStatus,
    StepStatus,
    TrafficStatus,
)
from mlrollout.api.rolloutpolicy import NotificationEvent, RolloutPolicySpec, Step
from mlrollout.rollout import evaluated
from mlrollout.rollout.actions import Action, RecordEvent, RolloutFinished
from mlrollout.rollout.facts import Facts
from mlrollout.rollout.timefmt import fmt, parse

MAX_HISTORY: Final = 50
MAX_REVISIONS: Final = 20


class Work:
    """Status as it is being changed (``s``), as it was (``before``), the facts, the policy and the clock."""

    def __init__(
        self, status: ModelDeploymentStatus | None, facts: Facts, policy: RolloutPolicySpec, now: datetime
    ) -> None:
        self.before = status or ModelDeploymentStatus()
        self.s = self.before.model_copy(deep=True)
        self.facts = facts
        self.policy = policy
        self.steps: list[Step] = policy.strategy.steps
        self.now = now
        self.actions: list[Action] = []

    def event(
        self, reason: str, message: str, warning: bool = False, notify: tuple[NotificationEvent, ...] = ()
    ) -> None:
        self.actions.append(RecordEvent("Warning" if warning else "Normal", reason, message, notify))

    def elapsed(self, since: str | None) -> float:
        return (self.now - parse(since)).total_seconds() if since else 0.0

    def step_spec(self, step: StepStatus | None) -> Step | None:
        """The policy's step the status points at (None once the policy lost steps mid-rollout)."""
        return self.steps[step.index] if step is not None and step.index < len(self.steps) else None

    def paused(self) -> bool:
        return self.facts.paused or bool(self.s.paused_by_command) or self.s.hold is not None

    def stable_revision(self) -> str:
        return self.s.stable.revision if self.s.stable else ""

    def serving(self) -> bool:
        """Clients get answers: the stable revision has a ready pod and so does the gateway in front of it."""
        return self.facts.track(self.stable_revision()).available and self.facts.gateway_serves()

    def number_for(self, revision: str) -> int:
        for known in self.s.revisions or []:
            if known.revision == revision:
                return known.number
        numbers = [r.number for r in self.s.revisions or []] + [h.number for h in self.s.history or []]
        numbers += [r.number for r in (self.s.stable, self.s.candidate) if r is not None]
        return max(numbers, default=0) + 1

    def remember(self, revision: RevisionStatus) -> None:
        """Keep the revision (with its template) for undo; the oldest unused ones are forgotten."""
        known = [r for r in self.s.revisions or [] if r.revision != revision.revision] + [revision]
        in_use = {r.revision for r in (self.s.stable, self.s.candidate) if r is not None}
        while len(known) > MAX_REVISIONS:
            drop = next((r for r in known if r.revision not in in_use), known[0])
            known.remove(drop)
        self.s.revisions = known

    def new_revision(self, base: RevisionStatus, origin: Literal["spec", "undo"]) -> RevisionStatus:
        rev = base.model_copy(
            update={"number": self.number_for(base.revision), "started_at": fmt(self.now), "origin": origin}
        )
        self.remember(rev)
        self.s.scale_downs = [d for d in self.s.scale_downs or [] if d.revision != rev.revision] or None
        return rev

    def schedule_removal(self, revision: str, seconds: float, reason: str) -> None:
        entries = [d for d in self.s.scale_downs or [] if d.revision != revision]
        at = fmt(self.now + timedelta(seconds=seconds))
        self.s.scale_downs = [*entries, ScaleDownStatus(revision=revision, at=at, reason=reason)]

    def history(self, rev: RevisionStatus, outcome: Outcome, reason: str) -> None:
        entry = HistoryEntry(
            revision=rev.revision,
            number=rev.number,
            model_version=rev.model_version,
            sha256=rev.sha256,
            resolved_uri=rev.resolved_uri,
            run_id=rev.run_id,
            started_at=rev.started_at,
            finished_at=fmt(self.now),
            outcome=outcome,
            reason=reason,
            evaluation=self._evaluation_summary(rev),
        )
        self.s.history = [*(self.s.history or []), entry][-MAX_HISTORY:]
        self.actions.append(RolloutFinished(outcome, self.elapsed(rev.started_at)))

    def _evaluation_summary(self, rev: RevisionStatus) -> str | None:
        """This rollout's offline evaluation in one line, kept in its history entry."""
        ev = self.s.last_evaluation
        if ev is None or not evaluated.belongs(ev, rev.revision, rev.started_at):
            return None
        return f"{ev.phase}: {ev.reason}" if ev.phase != "Running" else "stopped before it answered"

    def set_traffic(self, candidate: int, mirror: int) -> None:
        version = self.s.traffic.version if self.s.traffic else 0
        self.s.traffic = TrafficStatus(stable=100 - candidate, candidate=candidate, mirror=mirror, version=version)
