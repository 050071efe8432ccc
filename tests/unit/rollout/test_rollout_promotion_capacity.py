"""The promotion hand-over under spec.autoscaling: the candidate runs its share of the stable's pods during the
rollout, so a decided promotion first scales it to the stable's count and switches only once that many of its
pods are ready (or progressDeadline later, with a Warning), so ready capacity never dips at the switch."""

from __future__ import annotations

from tests.unit.rollout.world import World, events, policy, routes

from mlrollout.controller import scaling
from mlrollout.rollout import RecordEvent

STEPS = [{"canary": {"weight": 50, "minRequests": 10, "maxDuration": "10m"}}]


def _world(**extra: object) -> tuple[World, str, str]:
    """v1 stable at 4 pods (the HPA's choice), v2 in a 50 % canary running 2 ready pods."""
    w = World(pol=policy(STEPS, progressDeadline="5m", **extra), autoscaled=True)
    w.deploy_healthy()
    old = w.want.revision
    w.make_ready(old, replicas=4, ready_replicas=4)
    cand = w.start_rollout()
    w.make_ready(cand, replicas=2, ready_replicas=2)
    return w, old, cand


def _warnings(w: World) -> list[str]:
    assert w.last is not None
    return [a.reason for a in w.last.actions if isinstance(a, RecordEvent) and a.type == "Warning"]


def test_a_decided_promotion_waits_for_the_candidate_at_the_stables_count_then_switches() -> None:
    w, old, cand = _world()
    actions = w.give_verdict("promote", requests=50)
    assert w.s.stable is not None and w.s.stable.revision == old  # not yet: 2 of 4 pods
    assert w.s.promoting is not None and w.s.promoting.revision == cand
    assert "PromotionScalingUp" in events(actions) and "Promoted" not in events(actions)
    assert w.s.traffic is not None and w.s.traffic.candidate == 50  # the step's split holds meanwhile
    assert "2 of 4 pods ready" in (w.s.message or "")
    # the reconciler sizes the candidate at 100 % of the stable while status.promoting is set
    share = scaling.share_percent("canary", w.s.traffic, w.s.promoting is not None)
    assert scaling.candidate_replicas(4, share) == 4

    w.make_ready(cand, replicas=4, ready_replicas=3)  # scaling up: not enough yet
    assert "Promoted" not in events(w.tick(10)) and w.s.promoting is not None
    w.make_ready(cand, replicas=4, ready_replicas=4)
    actions = w.tick(10)
    assert w.s.stable.revision == cand and w.s.candidate is None and w.s.promoting is None
    assert "Promoted" in events(actions) and routes(actions).stable == cand
    assert w.s.history is not None and w.s.history[-1].reason == "promote verdict with 50 requests: test says promote"
    assert _warnings(w) == []


def test_a_candidate_that_cannot_reach_the_count_is_promoted_after_progress_deadline_with_a_warning() -> None:
    w, _, cand = _world()
    w.give_verdict("promote", requests=50)
    assert "Promoted" not in events(w.tick(299))  # 5m counts from the decision
    actions = w.tick(2)
    assert w.s.stable is not None and w.s.stable.revision == cand and w.s.promoting is None
    assert "Promoted" in events(actions) and "PromotedBelowCapacity" in _warnings(w)


def test_a_candidate_already_at_the_count_is_promoted_at_once() -> None:
    w, _, cand = _world()
    w.make_ready(cand, replicas=4, ready_replicas=4)
    actions = w.give_verdict("promote", requests=50)
    assert w.s.stable is not None and w.s.stable.revision == cand
    assert "PromotionScalingUp" not in events(actions) and "Promoted" in events(actions)


def test_without_autoscaling_the_promotion_is_immediate_as_before() -> None:
    w, _, cand = _world()
    w.autoscaled = False  # both tracks run spec.replicas: the counts here are not the HPA's
    w.give_verdict("promote", requests=50)
    assert w.s.stable is not None and w.s.stable.revision == cand and w.s.promoting is None


def test_abort_during_the_wait_rolls_back_and_forgets_the_promotion() -> None:
    w, old, _ = _world()
    w.give_verdict("promote", requests=50)
    actions = w.send("abort")
    assert w.s.stable is not None and w.s.stable.revision == old and w.s.candidate is None
    assert w.s.promoting is None and routes(actions).candidate_weight == 0


def test_a_pause_holds_the_switch_and_resuming_lets_it_happen() -> None:
    w, _, cand = _world()
    w.give_verdict("promote", requests=50)
    w.paused = True
    w.make_ready(cand, replicas=4, ready_replicas=4)
    w.tick(10)
    assert w.s.promoting is not None and w.s.candidate is not None
    w.paused = False
    assert "Promoted" in events(w.tick(1)) and w.s.stable is not None and w.s.stable.revision == cand


def test_asking_again_does_not_restart_the_deadline_and_later_looks_are_ignored() -> None:
    w, _, cand = _world()
    w.give_verdict("promote", requests=50)
    since = w.s.promoting.since if w.s.promoting else ""
    w.tick(200)
    w.send("promoteFull")
    assert w.s.promoting is not None and w.s.promoting.since == since
    w.give_verdict("rollback", requests=60)  # decided: the wait only counts pods
    assert w.s.candidate is not None and w.s.candidate.revision == cand
    actions = w.tick(100)  # 301 s after the decision
    assert "Promoted" in events(actions) and "PromotedBelowCapacity" in _warnings(w)


def test_the_same_facts_twice_change_nothing_while_waiting() -> None:
    w, _, _ = _world()
    w.give_verdict("promote", requests=50)
    before = w.s.model_dump()
    actions = w.tick()
    assert w.s.model_dump() == before and "PromotionScalingUp" not in events(actions)
