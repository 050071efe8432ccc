"""The evaluate step in the pure state machine: the evaluation Job is a fact (missing, running, finished
with its report), and the machine's answer is a transition (Given a world, When the Job says..., Then...)."""

from __future__ import annotations

from typing import Any

from tests.unit.rollout.test_rollout_approval import hooks
from tests.unit.rollout.world import World, events, policy, spec

from mlrollout.revision import Resolved
from mlrollout.rollout import EvaluationFact, RunEvaluation, SetRoutes, StopEvaluation
from mlrollout_serving.contract.evaluation import Check, EvaluationReport, Problem, Verdict

SHA = "c" * 64
EVALUATE: dict[str, Any] = {
    "evaluate": {
        "dataset": {"uri": "http://store/holdout.csv", "sha256": SHA, "label": "quality"},
        "metric": "accuracy",
        "margin": {"relative": 0.01},
        "maxDuration": "10m",
    }
}
SHADOW = {"shadow": {"mirrorPercent": 100, "minRequests": 10, "maxDuration": "5m"}}


def gated(**extra: Any) -> World:
    """A policy whose first step is an offline evaluation, then a shadow step."""
    return World(pol=policy([EVALUATE, SHADOW], **extra))


def report(
    verdict: Verdict, effect: float = 0.02, problem: Problem | None = None, cand_sha: str | None = None
) -> EvaluationReport:
    checks = (
        Check(kind="stable", name="stable", decision=verdict, rows=2000, reference=0.80, candidate=0.80 + effect,
              effect=effect, interval=(effect - 0.01, effect + 0.01), alpha=0.05, test="exact McNemar", p_value=0.003,
              margin=0.008, reason=f"{verdict} vs stable"),
        Check(kind="baseline", name="majority", decision="pass", rows=2000, reference=0.6, candidate=0.80 + effect,
              effect=0.2 + effect, interval=(0.18, 0.22), alpha=0.05, test="exact McNemar", p_value=1e-30),
    ) if problem is None else ()  # fmt: skip
    return EvaluationReport(
        verdict=verdict,
        reason=f"{verdict.upper()}: accuracy {0.80 + effect:.4g} vs stable 0.8" if problem is None else "bad input: x",
        problem=problem,
        metric="accuracy",
        rows=2000 if problem is None else 0,
        dataset_sha256=SHA if problem is None else None,
        candidate_sha256=cand_sha,
        checks=checks,
    )


def start(w: World) -> RunEvaluation:
    """A healthy stable, then a ready candidate: the evaluate step asks for its Job."""
    w.deploy_healthy()
    w.md_spec = spec("2", "b")
    w.tick(1)
    w.make_ready()
    actions = w.tick(1)
    runs = [a for a in actions if isinstance(a, RunEvaluation)]
    assert len(runs) == 1, actions
    return runs[0]


def answer(
    w: World, run: RunEvaluation, state: str, rep: EvaluationReport | None = None, detail: str = ""
) -> list[Any]:
    w.evaluation = EvaluationFact(run.job, state, rep, detail)  # type: ignore[arg-type]
    return w.tick(5)


def no_traffic_ever(actions: list[Any]) -> None:
    for a in actions:
        if isinstance(a, SetRoutes):
            assert a.candidate_weight == 0 and a.mirror_percent == 0, a


def test_the_step_asks_for_one_job_and_sends_the_candidate_nothing_while_it_runs() -> None:
    w = gated()
    run = start(w)
    assert w.s.current_step is not None and w.s.current_step.kind == "evaluate"
    ev = w.s.last_evaluation
    assert ev is not None and ev.phase == "Running" and ev.job == run.job and ev.attempt == 1
    assert run.job.startswith(f"wine-eval-{run.candidate.revision[:12]}-") and len(run.job) <= 56
    assert run.stable.number == 1 and run.candidate.number == 2 and run.alpha == w.pol.significance.alpha
    assert w.s.traffic is not None and (w.s.traffic.candidate, w.s.traffic.mirror) == (0, 0)
    # running, and an operator restarted mid-evaluation (the same status, the same facts): no second Job
    for _ in range(3):
        actions = answer(w, run, "running")
        assert not [a for a in actions if isinstance(a, RunEvaluation)] and events(actions) == []
        no_traffic_ever(actions)
    assert w.s.current_step.kind == "evaluate"


def test_a_passing_report_starts_the_next_step_and_keeps_the_numbers() -> None:
    w = gated()
    run = start(w)
    actions = answer(w, run, "succeeded", report("pass"))
    assert w.s.current_step is not None and w.s.current_step.kind == "shadow"
    assert "StepPassed" in events(actions)
    ev = w.s.last_evaluation
    assert ev is not None and ev.phase == "Passed" and ev.rows == 2000 and ev.dataset_sha256 == SHA
    assert ev.checks is not None and ev.checks[0].p_value == 0.003 and ev.checks[0].interval == [0.01, 0.03]
    assert ev.checks[1].kind == "baseline" and ev.checks[1].reference == 0.6
    # the promotion keeps the evaluation's verdict in history
    w.give_verdict("promote", requests=50)
    assert w.s.history is not None and w.s.history[-1].outcome == "promoted"
    assert (w.s.history[-1].evaluation or "").startswith("Passed: PASS")


def test_a_worse_candidate_is_rolled_back_before_any_traffic_with_the_reason() -> None:
    w = gated()
    run = start(w)
    actions = answer(w, run, "failed", report("fail", effect=-0.05), "BackoffLimitExceeded")
    no_traffic_ever(actions)
    assert w.s.candidate is None and w.s.phase == "Degraded"
    assert "EvaluationFailed" in events(actions)
    last = (w.s.history or [])[-1]
    assert last.outcome == "rolledBack" and "FAIL: accuracy 0.75" in last.reason
    assert (last.evaluation or "").startswith("Failed:")
    ev = w.s.last_evaluation
    assert ev is not None and ev.phase == "Failed" and ev.checks is not None and ev.checks[0].effect == -0.05


def test_on_failure_pause_holds_at_weight_zero_instead() -> None:
    w = gated(onFailure="pause")
    run = start(w)
    actions = answer(w, run, "failed", report("fail", effect=-0.05))
    assert w.s.candidate is not None and w.s.hold is not None and "offline evaluation failed" in w.s.hold
    assert "RolloutHeld" in events(actions)
    no_traffic_ever(actions)


def test_a_job_that_failed_without_a_report_follows_on_inconclusive_visibly() -> None:
    w = gated()
    run = start(w)
    actions = answer(w, run, "failed", None, "DeadlineExceeded: Job was active longer than specified deadline")
    assert w.s.candidate is None and "EvaluationInconclusive" in events(actions)
    assert "DeadlineExceeded" in (w.s.history or [])[-1].reason
    ev = w.s.last_evaluation
    assert ev is not None and ev.phase == "Inconclusive" and ev.problem == "error"


def test_bad_input_such_as_a_checksum_mismatch_is_inconclusive_and_holds_then_resume_reruns_it() -> None:
    w = gated(onInconclusive={"action": "hold"})
    run = start(w)
    answer(w, run, "failed", report("inconclusive", problem="badInput"))
    assert w.s.hold is not None and "offline evaluation inconclusive: bad input" in w.s.hold
    assert w.s.candidate is not None and w.s.current_step is not None and w.s.current_step.kind == "evaluate"
    # a human fixes the dataset and resumes: a second attempt, a new Job
    actions = w.send("resume")
    reruns = [a for a in actions if isinstance(a, RunEvaluation)]
    if not reruns:
        reruns = [a for a in w.tick(1) if isinstance(a, RunEvaluation)]
    assert len(reruns) == 1 and reruns[0].job != run.job
    assert w.s.last_evaluation is not None and w.s.last_evaluation.attempt == 2


def test_a_job_that_vanished_or_never_answers_is_inconclusive() -> None:
    w = gated()
    run = start(w)
    answer(w, run, "missing", None, "")
    assert w.s.candidate is None and "does not exist" in (w.s.history or [])[-1].reason

    w2 = gated()
    run2 = start(w2)
    w2.evaluation = EvaluationFact(run2.job, "running")
    w2.tick(600)
    assert w2.s.candidate is not None  # within maxDuration and its grace: still waiting
    w2.tick(120)
    assert w2.s.candidate is None and "did not answer within maxDuration 10m" in (w2.s.history or [])[-1].reason


def test_a_report_about_another_model_file_never_passes() -> None:
    w = gated()
    run = start(w)
    answer(w, run, "succeeded", report("pass", cand_sha="d" * 64))
    assert w.s.candidate is None and "not the candidate's" in (w.s.history or [])[-1].reason


def test_a_new_revision_during_the_evaluation_stops_its_job() -> None:
    w = gated()
    run = start(w)
    answer(w, run, "running")
    w.md_spec = spec("3", "e")
    actions = w.tick(1)
    assert [a.job for a in actions if isinstance(a, StopEvaluation)] == [run.job]
    assert w.s.last_evaluation is not None and w.s.last_evaluation.phase == "Inconclusive"
    assert "superseded" in [h.outcome for h in w.s.history or []]


def test_an_evaluate_step_as_the_last_step_waits_for_confirm_promotion_then_promotes() -> None:
    """An evaluate-only policy with a confirmPromotion hook: the pass waits at the hook's gate (it used to
    sit at 'step 1/1 passed' forever, the hook never asked), and the hook's approval promotes."""
    w = World(pol=policy([EVALUATE], hooks=hooks("confirmPromotion")))
    run = start(w)
    actions = answer(w, run, "succeeded", report("pass"))
    assert "StepPassed" in events(actions) and "Promoted" not in events(actions)
    w.tick(5)
    assert [a.hook for a in w.s.approvals or [] if a.state == "waiting"] == ["h-confirmpromotion"]
    w.answer("h-confirmpromotion", "approved")
    actions = w.tick(1)
    assert "Promoted" in events(actions)
    assert w.s.stable is not None and w.s.stable.model_version == "2" and w.s.candidate is None


def with_credentials(version: str, sha: str, **credentials: Any) -> Any:
    s = spec(version, sha)
    return s.model_copy(update={"model": s.model.model_validate({**s.model.to_dict(), "credentials": credentials})})


def test_revisions_with_different_store_credentials_are_inconclusive_without_a_job() -> None:
    """One pod holds one credentials set: a Job for both models would read one with the other's, fail the
    download and say nothing useful maxDuration later; the step says why at once instead."""
    w = gated(onInconclusive={"action": "hold"})
    w.md_spec = with_credentials("1", "a", secretRef={"name": "old-reader"})
    w.deploy_healthy()
    w.md_spec = with_credentials("2", "b", secretRef={"name": "new-reader"})
    w.tick(1)
    w.make_ready()
    actions = w.tick(1)
    assert not [a for a in actions if isinstance(a, RunEvaluation)] and "RolloutHeld" in events(actions)
    ev = w.s.last_evaluation
    assert ev is not None and ev.phase == "Inconclusive" and w.s.hold is not None
    assert "offline evaluation inconclusive: no evaluation Job can read both models" in w.s.hold
    for said in (ev.reason, w.s.hold):
        assert "revision 1 and revision 2" in said and "old-reader" in said and "new-reader" in said, said
    no_traffic_ever(actions)


def test_revisions_with_the_same_credentials_or_only_one_set_get_their_job() -> None:
    for stable, cand in (({"secretRef": {"name": "reader"}},) * 2, ({}, {"serviceAccountName": "models"})):
        w = gated()
        w.md_spec = with_credentials("1", "a", **stable) if stable else spec("1", "a")
        w.deploy_healthy()
        w.md_spec = with_credentials("2", "b", **cand)
        w.tick(1)
        w.make_ready()
        assert [a for a in w.tick(1) if isinstance(a, RunEvaluation)], (stable, cand)


def registered(version: str, secret: str) -> Any:
    """A models:/ spec on a tracking server whose credentials are the Secret ``secret``."""
    s = spec(version, "a")
    registry = {"uri": "http://mlflow:5000", "credentials": {"secretRef": {"name": secret}}}
    model = {**s.model.to_dict(), "uri": f"models:/wine/{version}", "registry": registry}
    model.pop("sha256", None)
    return s.model_copy(update={"model": s.model.model_validate(model)})


def test_revisions_with_different_registry_credentials_are_inconclusive_without_a_job() -> None:
    """The same for MLflow's credentials: one pod has one --registry-uri and one MLFLOW_TRACKING_* set."""
    w = gated(onInconclusive={"action": "hold"})
    w.md_spec, w.registry = registered("1", "old-reader"), Resolved("http://mlflow:5000/a/1.onnx", "a" * 64, "1")
    w.deploy_healthy()
    w.md_spec, w.registry = registered("2", "new-reader"), Resolved("http://mlflow:5000/a/2.onnx", "b" * 64, "2")
    w.tick(1)
    w.make_ready()
    actions = w.tick(1)
    assert not [a for a in actions if isinstance(a, RunEvaluation)] and "RolloutHeld" in events(actions)
    ev = w.s.last_evaluation
    assert ev is not None and ev.phase == "Inconclusive"
    assert "no evaluation Job can read both models: revision 1 and revision 2 read MLflow registries" in ev.reason
    assert "old-reader" in ev.reason and "new-reader" in ev.reason
    no_traffic_ever(actions)
    # the same Secret on both: the Job is asked for
    w = gated()
    w.md_spec, w.registry = registered("1", "reader"), Resolved("http://mlflow:5000/a/1.onnx", "a" * 64, "1")
    w.deploy_healthy()
    w.md_spec, w.registry = registered("2", "reader"), Resolved("http://mlflow:5000/a/2.onnx", "b" * 64, "2")
    w.tick(1)
    w.make_ready()
    assert [a for a in w.tick(1) if isinstance(a, RunEvaluation)]
