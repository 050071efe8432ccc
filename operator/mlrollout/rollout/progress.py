"""The candidate's progress: readiness, failure signals from its pods, and each step's pass or timeout."""

from __future__ import annotations

from mlrollout.api.common import parse_duration
from mlrollout.api.modeldeployment import RevisionStatus, StepStatus
from mlrollout.api.rolloutpolicy import Step
from mlrollout.rollout import approval, evaluation, moves
from mlrollout.rollout.facts import Look
from mlrollout.rollout.looks import relevant_look
from mlrollout.rollout.timefmt import parse
from mlrollout.rollout.work import Work


def progress_candidate(w: Work) -> bool:
    """At most one transition of the candidate; True if one fired."""
    cand = w.s.candidate
    if cand is None:
        return False
    tf = w.facts.track(cand.revision)
    if tf.digest_mismatch:
        moves.rollback(w, "CandidateDigestMismatch", f"the model file's sha256 is not {cand.sha256}: {tf.detail}")
        return True
    if tf.config_error:
        moves.rollback(w, "CandidateConfigError", f"the candidate's pods cannot start: {tf.detail}")
        return True
    if tf.crash_looping:
        moves.rollback(w, "CandidateCrashLoop", f"the candidate's pods are crash-looping: {tf.detail}")
        return True
    if w.s.promoting is not None:  # decided: later looks and steps no longer matter, only the pods
        if w.s.promoting.revision == cand.revision:
            return moves.finish_promotion(w)
        w.s.promoting = None  # another candidate's (each move that replaces one clears it: never expected)
    step = w.s.current_step
    if step is None:
        return _await_ready(w, cand, tf.ready, tf.startup)
    evaluate = w.step_spec(step)
    if evaluate is not None and evaluate.evaluate is not None:  # no traffic, no analysis: the Job's report decides
        if w.paused():
            return False
        if step.passed is not None:  # an evaluate step was the last: its pass waits at the same gate
            return _confirm_promotion(w, step)
        return evaluation.progress(w, step, evaluate.evaluate)
    look = relevant_look(w)
    if look is not None and look.judgement.verdict == "rollback":
        if w.policy.on_failure == "rollback":
            moves.rollback(w, "AnalysisFailed", look.judgement.reason)
            return True
        if w.s.hold is None:
            moves.hold(
                w, "AnalysisFailed", f"rollback verdict, policy onFailure=pause: {look.judgement.reason}", zero=True
            )
            return True
    if w.paused():
        return False
    return _step_progress(w, step, look)


def _await_ready(w: Work, cand: RevisionStatus, ready: bool, startup: str = "") -> bool:
    if not ready:
        deadline = parse_duration(w.policy.progress_deadline)
        if w.elapsed(cand.started_at) > deadline:
            moves.rollback(
                w,
                "ProgressDeadlineExceeded",
                f"candidate not ready within progressDeadline {w.policy.progress_deadline}"
                + (f" ({startup})" if startup else ""),
            )
            return True
        return False
    if cand.origin == "undo":
        moves.promote(w, f"undo: revision {cand.number} is ready")
        return True
    if w.paused():
        return False
    for kind in ("confirmRollout", "preRollout"):  # before any traffic; confirmation first
        shut = approval.gate(w, kind)
        if shut != "open":
            return shut == "moved"
    moves.start_step(w, 0)
    return True


def _confirm_promotion(w: Work, step: StepStatus) -> bool:
    """The last step passed: the promotion waits for the confirmPromotion hooks."""
    assert step.passed is not None
    shut = approval.gate(w, "confirmPromotion")
    if shut == "open":
        moves.promote(w, f"{step.passed}; confirmed by the confirmPromotion hooks")
        return True
    return shut == "moved"


def _step_progress(w: Work, step: StepStatus, look: Look | None) -> bool:
    spec = w.step_spec(step)
    if spec is None:  # the policy lost steps mid-rollout: the candidate has passed all that remain
        moves.promote(w, "the policy has no further steps")
        return True
    if step.passed is not None:
        return _confirm_promotion(w, step)
    elapsed = w.elapsed(step.started_at)
    if spec.pause is not None:
        if spec.pause.duration is not None and elapsed >= parse_duration(spec.pause.duration):
            moves.advance(w, f"pause of {spec.pause.duration} over")
            return True
        return False
    if spec.blue_green is not None and not spec.blue_green.preview_analysis:
        moves.advance(w, "blue-green switch without preview analysis")
        return True
    unmirrorable = w.facts.routing.cannot_mirror(_mirror_percent(spec))
    if unmirrorable is not None:  # the step would send the candidate nothing: a human decides
        moves.hold(
            w, "MirrorUnsupported",
            f"step {step.index} ({step.kind}) mirrors traffic, but {unmirrorable}; promote skips the step, abort ends",
            zero=True,
        )  # fmt: skip
        return True
    min_requests, max_duration = _limits(spec)
    served = w.facts.gateway_serves()  # never promote on a route no one serves
    if served and look is not None and look.judgement.verdict == "promote":
        answered = look.judgement.candidate_requests
        if answered >= min_requests:
            moves.advance(w, f"promote verdict with {answered} requests: {look.judgement.reason}")
            return True
    overdue = labels_overdue(w, step, elapsed, look)
    if elapsed > max_duration or overdue:
        last = w.s.last_analysis
        detail = f"last verdict {last.verdict}: {last.reason}" if last else "no verdict yet"
        message = f"step {step.index} ({step.kind}) ran past maxDuration without a promote verdict ({detail})"
        if overdue and elapsed <= max_duration:
            wait = w.policy.analysis.metrics.quality.max_label_wait
            message = f"step {step.index} ({step.kind}) got no labels for the candidate within maxLabelWait {wait}"
        if w.policy.on_inconclusive.action == "rollback":
            moves.rollback(w, "Inconclusive", message)
        else:
            moves.hold(w, "Inconclusive", f"{message}; holding for a human (promote or abort)", zero=False)
        return True
    return False


def labels_overdue(w: Work, step: StepStatus, elapsed: float, look: Look | None) -> bool:
    """Quality is on, the step has waited maxLabelWait, and its latest look scored no candidate row.

    The latest look is this pass's, else the last one recorded in this step (most passes take no look:
    no look this pass says nothing about labels)."""
    quality = w.policy.analysis.metrics.quality
    if not quality.enabled or elapsed <= parse_duration(quality.max_label_wait):
        return False
    if look is not None:
        metrics = look.judgement.metrics
    else:
        last = w.s.last_analysis
        in_step = last is not None and parse(last.time) > parse(
            step.started_at
        )  # not the look that ended the last step
        metrics = (last.metrics or []) if last is not None and in_step else []
    scored = [m for m in metrics if m.name.startswith("quality.")]
    return not any(m.samples is not None and m.samples.candidate for m in scored)


def _mirror_percent(step: Step) -> int:
    """The share of requests the step copies to the candidate."""
    if step.shadow is not None:
        return step.shadow.mirror_percent
    if step.blue_green is not None and step.blue_green.preview_analysis:
        return step.blue_green.preview_mirror_percent
    return 0


def _limits(step: Step) -> tuple[int, float]:
    """minRequests and maxDuration (seconds) of an analysed step."""
    for sub in (step.shadow, step.canary, step.blue_green):
        if sub is not None:
            return sub.min_requests, parse_duration(sub.max_duration)
    raise AssertionError("pause steps have no analysis limits")
