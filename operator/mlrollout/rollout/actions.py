"""What the state machine asks the controller to do: plain data, executed by `mlrollout.controller`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mlrollout.api.modeldeployment import Outcome, RevisionStatus
from mlrollout.api.rolloutpolicy import EvaluateStep, NotificationEvent

Role = Literal["stable", "candidate"]
"""The part a revision plays in a rollout (its pods' `track` label)."""

RouteMode = Literal["canary", "ab", "blueGreen"]
"""How the data plane splits: by weight, by a sticky key (A/B), or all at once (blue-green)."""


@dataclass(frozen=True)
class EnsureTrack:
    """Deploy (or keep) this revision's Deployment and Service, labelled with its role."""

    revision: RevisionStatus
    role: Role


@dataclass(frozen=True)
class RemoveTrack:
    """Delete this revision's Deployment and Service (its scale-down time has come)."""

    revision: str
    reason: str


@dataclass(frozen=True)
class SetRoutes:
    """The route table the data plane should have: absolute, so applying it twice changes nothing."""

    stable: str | None  # revision hash serving live traffic
    candidate: str | None  # revision hash receiving weight or mirror, if any
    candidate_weight: int
    mirror_percent: int
    mode: RouteMode
    version: int
    step_started_at: float | None = None
    """Unix seconds the current rollout step started (None: no step runs): the gateway scores a label only
    for an answer served since (contract.feedback.counts_in_step), as the step's analysis window starts there."""


@dataclass(frozen=True)
class RemoveRoutes:
    """Delete the route object of a provider the ModelDeployment no longer uses: a stale HTTPRoute or
    VirtualService would keep routing clients by weights no one updates, to Services about to go."""

    provider: str


@dataclass(frozen=True)
class RecordEvent:
    """A Kubernetes Event on the ModelDeployment: every transition has one, with its reason. ``notify`` names
    the notifications the transition is (docs/notifications.md): set by the move that knows, never guessed
    from the reason."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    notify: tuple[NotificationEvent, ...] = ()


@dataclass(frozen=True)
class RolloutFinished:
    """For the operator's metrics: a rollout ended."""

    outcome: Outcome
    seconds: float


@dataclass(frozen=True)
class StepFinished:
    """For the operator's metrics: a step ended."""

    kind: str
    seconds: float


@dataclass(frozen=True)
class RunEvaluation:
    """Create the evaluation Job (once: a Job of this name that exists already is the one)."""

    job: str
    step: EvaluateStep
    stable: RevisionStatus
    candidate: RevisionStatus
    alpha: float


@dataclass(frozen=True)
class StopEvaluation:
    """Delete an evaluation Job nobody waits for any more (its rollout moved on before it answered)."""

    job: str


Action = (
    EnsureTrack
    | RemoveTrack
    | SetRoutes
    | RemoveRoutes
    | RecordEvent
    | RolloutFinished
    | StepFinished
    | RunEvaluation
    | StopEvaluation
)
