"""Approval hooks in the state machine: the gates before the first step and before the promotion, the
answers as facts, approvals remembered per revision, refusals, maxWait and the humans' way out."""

from __future__ import annotations

from typing import Any

from tests.unit.rollout.world import T0, World, events, policy, routes, spec

from mlrollout.rollout.facts import HookAnswer

HOOK_SECRET = {"name": "hooks", "key": "url"}


def hooks(*kinds: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": f"h-{kind.lower()}", "type": kind, "secretRef": HOOK_SECRET, **extra} for kind in kinds]


def rollout_waiting(*kinds: str, **pol: Any) -> World:
    """A healthy stable, then a ready candidate waiting at the gate before the first step."""
    w = World(pol=policy(hooks=hooks(*kinds), **pol))
    w.deploy_healthy()
    w.md_spec = spec("2", "b")
    w.tick()
    w.make_ready()
    return w


def waiting_for(w: World) -> list[str]:
    return [a.hook for a in w.s.approvals or [] if a.state == "waiting"]


def condition_reason(w: World, ctype: str) -> str:
    return next(c.reason for c in w.s.conditions or [] if c.type == ctype)


def test_confirm_rollout_holds_the_first_step_without_traffic_until_the_hook_approves() -> None:
    w = rollout_waiting("confirmRollout")
    actions = w.tick(1)
    assert w.s.current_step is None and "StepStarted" not in events(actions)
    assert "AwaitingApproval" in events(actions)
    assert waiting_for(w) == ["h-confirmrollout"]
    assert w.s.phase == "Progressing"
    assert "waiting for approval from confirmRollout hook h-confirmrollout" in (w.s.message or "")
    assert condition_reason(w, "Progressing") == "WaitingForApproval"
    assert w.s.traffic is not None and (w.s.traffic.candidate, w.s.traffic.mirror) == (0, 0)
    assert events(w.tick(5)) == []  # a fixed point: no new Event while nothing changes

    w.answer("h-confirmrollout", "approved", "HTTP 200: ok")
    actions = w.tick(1)
    assert events(actions)[:2] == ["HookApproved", "StepStarted"]
    assert w.s.current_step is not None and w.s.current_step.index == 0
    assert w.s.approvals is not None and w.s.approvals[0].state == "approved"
    assert condition_reason(w, "Progressing") == "RolloutInProgress"


def test_the_same_facts_twice_give_no_new_events() -> None:
    w = rollout_waiting("confirmRollout")
    w.tick(1)
    assert "AwaitingApproval" not in events(w.tick(1))
    w.answer("h-confirmrollout", "refused", "HTTP 403 Forbidden: change freeze")
    assert events(w.tick(1)) == ["HookNotApproved"]
    assert events(w.tick(1)) == []  # the same refusal again: said once


def test_a_refused_confirm_hook_keeps_waiting_visibly_and_a_later_approval_starts() -> None:
    w = rollout_waiting("confirmRollout")
    w.tick(1)
    w.answer("h-confirmrollout", "refused", "HTTP 403 Forbidden: change freeze")
    actions = w.tick(1)
    assert w.s.current_step is None and w.s.candidate is not None
    assert "change freeze" in str((w.s.approvals or [])[0].message)
    assert "last answer: refused: HTTP 403 Forbidden: change freeze" in (w.s.message or "")
    assert any(e == "HookNotApproved" for e in events(actions))
    w.answer("h-confirmrollout", "approved")
    w.tick(1)
    assert w.s.current_step is not None


def test_an_answer_older_than_the_wait_is_not_taken() -> None:
    w = rollout_waiting("confirmRollout")
    w.tick(1)
    assert w.s.candidate is not None
    w.hooks["h-confirmrollout"] = HookAnswer("h-confirmrollout", w.s.candidate.revision, "approved", "old", T0)
    w.tick(1)
    assert w.s.current_step is None and waiting_for(w) == ["h-confirmrollout"]


def test_an_answer_about_another_revision_is_not_taken() -> None:
    w = rollout_waiting("confirmRollout")
    w.tick(1)
    w.hooks["h-confirmrollout"] = HookAnswer("h-confirmrollout", "someotherrevision", "approved", "x", w.now)
    w.tick(1)
    assert w.s.current_step is None


def test_confirm_rollout_is_asked_before_pre_rollout() -> None:
    w = rollout_waiting("preRollout", "confirmRollout")
    w.tick(1)
    assert waiting_for(w) == ["h-confirmrollout"]
    w.answer("h-confirmrollout", "approved")
    w.tick(1)
    assert waiting_for(w) == ["h-prerollout"] and w.s.current_step is None
    w.answer("h-prerollout", "approved")
    w.tick(1)
    assert w.s.current_step is not None and waiting_for(w) == []


def test_a_refused_pre_rollout_hook_rolls_back_with_its_reason_and_forgets_the_approvals() -> None:
    w = rollout_waiting("preRollout")
    w.tick(1)
    w.answer("h-prerollout", "refused", "HTTP 500 Internal Server Error: accuracy 0.71 < 0.80")
    actions = w.tick(1)
    assert "PreRolloutRefused" in events(actions)
    assert w.s.candidate is None and w.s.held_back is not None
    assert "accuracy 0.71 < 0.80" in w.s.held_back.reason
    assert w.s.phase == "Degraded" and w.s.approvals is None
    r = routes(actions)
    assert (r.candidate_weight, r.mirror_percent) == (0, 0)


def test_no_answer_within_max_wait_applies_on_inconclusive_rollback() -> None:
    w = rollout_waiting("confirmRollout")
    w.tick(1)
    w.answer("h-confirmrollout", "no_answer", "timeout: no answer within 10s")
    w.tick(1)
    w.tick(3598)
    assert w.s.candidate is not None
    actions = w.tick(2)
    assert "Inconclusive" in events(actions) and w.s.candidate is None
    assert w.s.held_back is not None and "within maxWait 1h" in w.s.held_back.reason
    assert "no answer within 10s" in w.s.held_back.reason


def test_max_wait_with_on_inconclusive_hold_holds_and_resume_asks_again() -> None:
    w = rollout_waiting("confirmRollout", onInconclusive={"action": "hold"})
    w.pol.hooks[0].max_wait = "1m"  # type: ignore[index]
    w.tick(1)
    actions = w.tick(61)
    assert "RolloutHeld" in events(actions) and w.s.phase == "Paused"
    assert w.s.hold is not None and "maxWait 1m" in w.s.hold
    w.tick(600)
    assert w.s.candidate is not None  # held: nothing happens until a human acts
    w.send("resume")
    assert w.s.hold is None and waiting_for(w) == ["h-confirmrollout"]
    assert w.s.phase == "Progressing"
    w.answer("h-confirmrollout", "approved")
    w.tick(1)
    assert w.s.current_step is not None


def test_confirm_promotion_holds_the_promotion_after_the_last_step_and_analysis_still_rolls_back() -> None:
    w = World(pol=policy(hooks=hooks("confirmPromotion")))
    w.start_rollout()
    w.give_verdict("promote", 20)
    w.give_verdict("promote", 20)
    actions = w.give_verdict("promote", 20)
    assert "StepPassed" in events(actions) and "Promoted" not in events(actions)
    step = w.s.current_step
    assert step is not None and step.index == 2 and step.passed is not None
    assert waiting_for(w) == ["h-confirmpromotion"]
    assert w.s.traffic is not None and w.s.traffic.candidate == 50  # the last step's split is kept
    assert "passed; waiting for approval from confirmPromotion hook" in (w.s.message or "")
    assert "StepPassed" not in events(w.give_verdict("promote", 30))  # passed once
    actions = w.give_verdict("rollback", 30)
    assert "AnalysisFailed" in events(actions) and w.s.candidate is None


def test_confirm_promotion_approved_promotes() -> None:
    w = World(pol=policy(hooks=hooks("confirmPromotion")))
    w.start_rollout()
    for _ in range(3):
        w.give_verdict("promote", 20)
    w.answer("h-confirmpromotion", "approved")
    actions = w.tick(1)
    assert "Promoted" in events(actions)
    assert w.s.candidate is None and w.s.stable is not None and w.s.stable.model_version == "2"
    assert w.s.history is not None and "confirmed by the confirmPromotion hooks" in w.s.history[-1].reason


def test_a_human_promote_is_the_confirmation() -> None:
    w = World(pol=policy(hooks=hooks("confirmPromotion")))
    w.start_rollout()
    for _ in range(3):
        w.give_verdict("promote", 20)
    assert w.s.candidate is not None
    actions = w.send("promote")
    assert "Promoted" in events(actions) and events(actions).count("StepPassed") == 0


def test_blue_green_switch_waits_for_confirm_promotion() -> None:
    steps = [{"blueGreen": {"minRequests": 10, "maxDuration": "5m", "scaleDownDelay": "1m"}}]
    w = World(pol=policy(steps=steps, hooks=hooks("confirmPromotion")))
    w.start_rollout()
    w.give_verdict("promote", 20)
    assert w.s.candidate is not None and w.s.traffic is not None and w.s.traffic.candidate == 0
    w.answer("h-confirmpromotion", "approved")
    assert "Promoted" in events(w.tick(1))


def test_retry_after_a_refusal_asks_again() -> None:
    w = rollout_waiting("preRollout")
    w.tick(1)
    w.answer("h-prerollout", "refused", "HTTP 409 Conflict")
    w.tick(1)
    w.send("retry")
    w.tick(1)
    assert w.s.candidate is not None and waiting_for(w) == ["h-prerollout"]
    w.tick(1)  # the old refusal is older than the new wait: not taken
    assert w.s.candidate is not None


def test_a_policy_without_hooks_is_unchanged() -> None:
    w = World()
    w.start_rollout()
    assert w.s.approvals is None
