"""Which rollout the offline evaluation in status belongs to: one rule for the machine (is this step's Job
asked for yet), the history entry (its one line) and ``kubectl mlrollout status`` (what it shows).

``status.lastEvaluation`` outlives its rollout: a ``retry`` (or a spec change back to the same revision)
starts a new rollout of the same revision, and until that rollout's evaluate step asks for its own Job,
the evaluation in status is the earlier attempt's. It belongs to a rollout when it scored that rollout's
revision and started no earlier than the rollout did.
"""

from __future__ import annotations

from mlrollout.api.evaluation import EvaluationStatus
from mlrollout.api.modeldeployment import ModelDeploymentStatus
from mlrollout.rollout.timefmt import parse


def belongs(ev: EvaluationStatus | None, revision: str, started_at: str | None) -> bool:
    """``ev`` scored ``revision`` in its rollout that started at ``started_at`` (not in an earlier one)."""
    return ev is not None and ev.revision == revision and parse(ev.started_at) >= parse(started_at or ev.started_at)


def current(status: ModelDeploymentStatus) -> EvaluationStatus | None:
    """The evaluation of the rollout in progress (its candidate's), or, when none is, of the last one (the
    newest history entry's); None when the one in status is older than that rollout."""
    ev = status.last_evaluation
    if status.candidate is not None:
        return ev if belongs(ev, status.candidate.revision, status.candidate.started_at) else None
    last = status.history[-1] if status.history else None
    return ev if last is not None and belongs(ev, last.revision, last.started_at) else None
