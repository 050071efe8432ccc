"""The evaluate step as the machine sees it: ask for the Job once, wait, read its answer, decide.

- The step starts (or is resumed after an evaluation that failed or could not tell): status.lastEvaluation
  becomes ``Running`` with the Job's name, and :class:`RunEvaluation` asks the controller to create it. The
  name comes from the rollout, the step and the attempt (``api.evaluation.job_name``), so a pass redone
  after a conflict or an operator restarted mid-evaluation asks for the same Job, which then exists.
- While it runs, the controller reports the Job as a fact; nothing moves (no traffic in this step).
- The report decides: ``pass`` passes the step; ``fail`` is the policy's onFailure (rollback, or a hold);
  ``inconclusive`` (the holdout cannot tell, bad input) is onInconclusive. A Job that failed without a
  report (out of memory, past its deadline, crashed), vanished, or outlived maxDuration is inconclusive
  with what the cluster said; so is a step whose stable and candidate name different model-store
  credentials or registry credentials (one pod holds one set, ``revision.reading_credentials`` and
  ``reading_registry``): no Job is made. Nothing but a
  ``pass`` report of this candidate passes the step.
- A Job whose rollout moved on before it answered (superseded, aborted, promoted by a human) is stopped.
"""

from __future__ import annotations

from typing import Final

from mlrollout.api.common import parse_duration
from mlrollout.api.evaluation import EvaluationStatus, job_name
from mlrollout.api.modeldeployment import RevisionStatus, StepStatus
from mlrollout.api.rolloutpolicy import EvaluateStep
from mlrollout.revision import reading_credentials, reading_registry
from mlrollout.rollout import evaluated, moves
from mlrollout.rollout.actions import RunEvaluation, StopEvaluation
from mlrollout.rollout.facts import EvaluationFact
from mlrollout.rollout.timefmt import fmt, parse
from mlrollout.rollout.work import Work
from mlrollout_serving.contract.evaluation import EvaluationReport

DEADLINE_GRACE_SECONDS: Final = 60.0
"""Past maxDuration the Job's own deadline (activeDeadlineSeconds) has stopped it; this much later without
an answer the machine stops waiting even if the cluster never said so."""


def progress(w: Work, step: StepStatus, spec: EvaluateStep) -> bool:
    """At most one transition of an evaluate step; True if one fired."""
    cand = w.s.candidate
    assert cand is not None
    ev = w.s.last_evaluation
    if not _belongs(ev, cand, step):
        _begin(w, cand, step, spec, attempt=1)
        return True
    assert ev is not None
    if ev.phase != "Running":
        if parse(step.started_at) > parse(ev.started_at):  # only `resume` restarts the step's clock: run again
            _begin(w, cand, step, spec, attempt=ev.attempt + 1)
            return True
        return False
    fact = w.facts.evaluation if w.facts.evaluation is not None and w.facts.evaluation.job == ev.job else None
    if fact is not None and fact.report is not None and fact.state in ("succeeded", "failed"):
        _decide(w, ev, fact.report, cand, spec)
        return True
    reason = _no_answer(w, ev, fact, spec)
    if reason is None:
        return False
    w.s.last_evaluation = ev.without_answer(reason, fmt(w.now))
    _inconclusive(w, reason)
    return True


def _belongs(ev: EvaluationStatus | None, cand: RevisionStatus, step: StepStatus) -> bool:
    """``ev`` is this rollout's evaluation at this step (not an earlier rollout's, not another step's)."""
    return ev is not None and ev.step == step.index and evaluated.belongs(ev, cand.revision, cand.started_at)


def _begin(w: Work, cand: RevisionStatus, step: StepStatus, spec: EvaluateStep, attempt: int) -> None:
    stable = w.s.stable
    assert stable is not None
    job = job_name(w.facts.name, cand.revision, cand.started_at or "", step.index, attempt)
    w.s.last_evaluation = status = EvaluationStatus(
        revision=cand.revision, step=step.index, attempt=attempt, job=job, phase="Running", started_at=fmt(w.now),
        metric=spec.metric, reason=f"scoring stable and candidate on {spec.dataset.uri}",
    )  # fmt: skip
    try:
        reading_credentials((stable, cand))
        reading_registry((stable, cand))
    except ValueError as exc:  # no Job could read both models: say so now, not after a failed download
        reason = f"no evaluation Job can read both models: {exc}"
        w.s.last_evaluation = status.without_answer(reason, fmt(w.now))
        _inconclusive(w, reason)
        return
    w.actions.append(RunEvaluation(job, spec, stable, cand, w.policy.significance.alpha))
    again = f" (attempt {attempt})" if attempt > 1 else ""
    w.event("EvaluationStarted", f"Job {job} scores revisions {stable.number} and {cand.number} on "
                                 f"{spec.dataset.uri}{again}")  # fmt: skip


def _decide(w: Work, ev: EvaluationStatus, report: EvaluationReport, cand: RevisionStatus, spec: EvaluateStep) -> None:
    if report.candidate_sha256 is not None and report.candidate_sha256 != cand.sha256:
        reason = f"the Job's report is about model sha256 {report.candidate_sha256}, not the candidate's {cand.sha256}"
        w.s.last_evaluation = ev.without_answer(reason, fmt(w.now))
        _inconclusive(w, reason)
        return
    w.s.last_evaluation = ev.with_report(report, fmt(w.now))
    if report.verdict == "pass":
        moves.advance(w, f"offline evaluation passed: {report.reason}")
    elif report.verdict == "fail":
        if w.policy.on_failure == "rollback":
            moves.rollback(w, "EvaluationFailed", report.reason)
        else:
            moves.hold(w, "EvaluationFailed", f"offline evaluation failed, policy onFailure=pause: {report.reason}",
                       zero=True)  # fmt: skip
    else:
        _inconclusive(w, report.reason)


def _inconclusive(w: Work, reason: str) -> None:
    message = f"offline evaluation inconclusive: {reason}"
    if w.policy.on_inconclusive.action == "rollback":
        moves.rollback(w, "EvaluationInconclusive", message)
    else:
        moves.hold(w, "EvaluationInconclusive", f"{message}; holding for a human (resume reruns it, promote "
                                                  "skips it, abort ends the rollout)", zero=False)  # fmt: skip


def _no_answer(w: Work, ev: EvaluationStatus, fact: EvaluationFact | None, spec: EvaluateStep) -> str | None:
    """Why this evaluation will never answer, or None while it may still."""
    if fact is not None and fact.state == "missing":
        detail = f": {fact.detail}" if fact.detail else " (deleted before it answered?)"
        return f"the evaluation Job {ev.job} does not exist{detail}"
    if fact is not None and fact.state in ("succeeded", "failed"):
        return f"the evaluation Job {ev.job} ended without a report: {fact.detail or fact.state}"
    limit = parse_duration(spec.max_duration)
    if w.elapsed(ev.started_at) > limit + DEADLINE_GRACE_SECONDS:
        return f"the evaluation Job {ev.job} did not answer within maxDuration {spec.max_duration}"
    return None


def stop_abandoned(w: Work) -> None:
    """A running evaluation whose step is no longer current (superseded, aborted, passed by a human): its
    Job is deleted, and status says it never answered."""
    ev = w.s.last_evaluation
    if ev is None or ev.phase != "Running":
        return
    cand, step = w.s.candidate, w.s.current_step
    same = cand is not None and cand.revision == ev.revision
    if same and step is not None and step.index == ev.step and step.kind == "evaluate":
        return
    w.s.last_evaluation = ev.without_answer("stopped before it answered: the rollout left the step", fmt(w.now))
    w.actions.append(StopEvaluation(ev.job))
