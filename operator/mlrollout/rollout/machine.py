"""The rollout state machine: `decide(status, facts, policy, now) -> Decision(status, actions)`, pure.

Status is the memory: everything the machine needs next time is in the status it returns, so the
operator can be killed between any two calls. `decide` runs transitions until none fires, which makes it
a fixed point: called again with the same facts and clock it returns the same status and no events.

Flow (docs/operator.md has the diagram and every reason):
- first revision: becomes stable directly; Pending until it answers, Degraded past the progress deadline;
- a later revision becomes the candidate: once ready it walks the policy's steps; a step passes on a
  `promote` verdict taken during the step whose evidence (the controller looks at a window that starts
  with the step) counts at least the step's minRequests candidate requests (a pause step passes on its
  clock or `resume`); after the last step (or the blue-green switch) it becomes stable and
  the old stable is removed after the scale-down delay;
- `rollback` verdict, crash loop, refused sha256, progress deadline: candidate weight and mirror go to 0
  at once, the candidate is removed after a drain delay, history records why, the spec's revision is
  held back (Degraded) until the spec changes, `retry` or `undo`;
- a step past its maxDuration: the policy's onInconclusive (rollback, or hold for a human, visibly);
- a new spec revision during a rollout supersedes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from mlrollout.api.modeldeployment import ModelDeploymentStatus
from mlrollout.api.rolloutpolicy import RolloutPolicySpec
from mlrollout.rollout import approval
from mlrollout.rollout.actions import Action, RecordEvent
from mlrollout.rollout.commands import handle_command
from mlrollout.rollout.facts import Facts
from mlrollout.rollout.housekeeping import scale_downs
from mlrollout.rollout.looks import record_look
from mlrollout.rollout.progress import progress_candidate
from mlrollout.rollout.projection import finish
from mlrollout.rollout.spec import first_available, follow_provider, follow_spec
from mlrollout.rollout.work import Work

MAX_TRANSITIONS: Final = 16


@dataclass
class Decision:
    """The next status and the actions that make the world match it."""

    status: ModelDeploymentStatus
    actions: list[Action] = field(default_factory=list)

    def events(self) -> list[RecordEvent]:
        """Only the events (what a human sees in `kubectl describe`)."""
        return [a for a in self.actions if isinstance(a, RecordEvent)]


def decide(status: ModelDeploymentStatus | None, facts: Facts, policy: RolloutPolicySpec, now: datetime) -> Decision:
    """The next status and actions for one ModelDeployment; pure and deterministic."""
    w = Work(status, facts, policy, now)
    record_look(w)
    follow_provider(w)
    handle_command(w)
    for _ in range(MAX_TRANSITIONS):  # each call fires at most one transition
        if not (follow_spec(w) or first_available(w) or progress_candidate(w)):
            break
    scale_downs(w)
    approval.prune(w)
    finish(w)
    return Decision(w.s, w.actions)
