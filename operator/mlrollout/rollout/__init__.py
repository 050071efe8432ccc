"""The pure rollout state machine: `decide(status, facts, policy, now) -> Decision(status, actions)`."""

from mlrollout.rollout.actions import (
    Action,
    EnsureTrack,
    RecordEvent,
    RemoveTrack,
    RolloutFinished,
    SetRoutes,
    StepFinished,
)
from mlrollout.rollout.facts import VERBS, Command, Facts, TrackFacts, Verdict
from mlrollout.rollout.machine import DRAIN_SECONDS, PROMOTE_SCALE_DOWN_SECONDS, Decision, decide

__all__ = [
    "DRAIN_SECONDS",
    "PROMOTE_SCALE_DOWN_SECONDS",
    "VERBS",
    "Action",
    "Command",
    "Decision",
    "EnsureTrack",
    "Facts",
    "RecordEvent",
    "RemoveTrack",
    "RolloutFinished",
    "SetRoutes",
    "StepFinished",
    "TrackFacts",
    "Verdict",
    "decide",
]
