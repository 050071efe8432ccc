"""How often the timer reconciles a ModelDeployment (issue 19, scale): pure decisions, no kopf, no clock.

A ModelDeployment with nothing in motion (Healthy, no candidate, no step, no scheduled scale-down, no
pending resolution, evaluation, hold or approval, its generation acted upon) has nothing for the clock to
move: its timer passes are needed only to notice what changed outside it (pods, drift). Those run every
`idle_interval` seconds instead of every `reconcile_interval`. A spec, label or annotation change (commands)
still reconciles at once through kopf's change handlers, and any pass that finds it no longer idle puts it
back on the short timer.
"""

from __future__ import annotations

from mlrollout.api.modeldeployment import ModelDeploymentStatus


def idle(status: ModelDeploymentStatus, generation: int) -> bool:
    """Nothing of this ModelDeployment waits for the clock."""
    evaluating = status.last_evaluation is not None and status.last_evaluation.phase == "Running"
    return (
        status.phase == "Healthy"
        and status.observed_generation == generation
        and status.candidate is None
        and status.current_step is None
        and not status.scale_downs
        and status.resolving is None
        and status.hold is None
        and not status.approvals
        and not evaluating
    )


def timer_due(idle_since: float | None, now: float, idle_interval: float, touched: float | None = None) -> bool:
    """Whether a timer tick reconciles: always, unless the last pass (started at monotonic `idle_since`)
    found the ModelDeployment idle less than `idle_interval` seconds ago and none of its Deployments changed
    since that pass started (`touched`: the last watched change, which that pass may not have seen)."""
    if idle_since is None or (touched is not None and touched >= idle_since):
        return True
    return now - idle_since >= idle_interval
