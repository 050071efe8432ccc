"""The pure rollout state machine: `decide(status, facts, policy, now) -> Decision(status, actions)`.

One module per job: `machine` (the driver), `spec` (following the spec), `progress` (the candidate's
steps), `looks` (the analysis as the machine sees it), `commands` (human commands), `moves` (promote,
roll back, hold, ...), `housekeeping` (scheduled removals), `projection` (phase, conditions, routes),
on the shared working copy of `work`; `facts` in, `actions` out.
"""

from mlrollout.rollout.actions import (
    Action,
    EnsureTrack,
    RecordEvent,
    RemoveRoutes,
    RemoveTrack,
    Role,
    RolloutFinished,
    RouteMode,
    RunEvaluation,
    SetRoutes,
    StepFinished,
    StopEvaluation,
)
from mlrollout.rollout.facts import EvaluationFact, Facts, Look, Routing, TrackFacts, Unresolved
from mlrollout.rollout.looks import analysis_due
from mlrollout.rollout.machine import Decision, decide
from mlrollout.rollout.moves import DRAIN_SECONDS, PROMOTE_SCALE_DOWN_SECONDS
from mlrollout.rollout.projection import not_governable

__all__ = [
    "DRAIN_SECONDS",
    "PROMOTE_SCALE_DOWN_SECONDS",
    "Action",
    "Decision",
    "EnsureTrack",
    "EvaluationFact",
    "Facts",
    "Look",
    "RecordEvent",
    "RemoveRoutes",
    "RemoveTrack",
    "Role",
    "RolloutFinished",
    "RouteMode",
    "Routing",
    "RunEvaluation",
    "SetRoutes",
    "StepFinished",
    "StopEvaluation",
    "TrackFacts",
    "Unresolved",
    "analysis_due",
    "decide",
    "not_governable",
]
