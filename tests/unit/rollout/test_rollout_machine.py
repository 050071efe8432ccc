"""The rollout state machine, transition by transition (Given a world, When something happens, Then...)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.unit.rollout.world import World, events, policy, removed, routes, spec

from mlrollout.api.analysis import Judgement, MetricResult, TrackPair
from mlrollout.api.commands import ANNOTATION, from_annotations
from mlrollout.rollout import (
    DRAIN_SECONDS,
    PROMOTE_SCALE_DOWN_SECONDS,
    EnsureTrack,
    Look,
    RolloutFinished,
    StepFinished,
    TrackFacts,
)
from mlrollout.rollout.timefmt import parse


def phase(world: World) -> str:
    return str(world.s.phase)


def result(world: World) -> str:
    assert world.s.last_command is not None
    return world.s.last_command.result


def cond(world: World, ctype: str) -> str:
    found = [c for c in world.s.conditions or [] if c.type == ctype]
    assert len(found) == 1
    return found[0].status


# -- first deployment ----------------------------------------------------------------------------------


def test_first_revision_becomes_stable_directly_and_healthy_once_ready() -> None:
    w = World()
    actions = w.tick()
    assert w.s.stable is not None and w.s.stable.number == 1 and w.s.candidate is None
    assert phase(w) == "Pending"
    assert "Deploying" in events(actions)
    assert [a.role for a in actions if isinstance(a, EnsureTrack)] == ["stable"]
    r = routes(actions)
    assert (r.stable, r.candidate, r.candidate_weight, r.mirror_percent) == (w.want.revision, None, 0, 0)
    assert cond(w, "Available") == "False"

    w.make_ready()
    actions = w.tick(5)
    assert phase(w) == "Healthy"
    assert cond(w, "Available") == "True" and cond(w, "Degraded") == "False"
    assert "PhaseHealthy" in events(actions)
    assert w.s.stable_version == "1" and w.s.traffic_split == "100/0"


def test_not_healthy_before_the_gateway_clients_call_is_ready() -> None:
    w = World(gateway=TrackFacts(exists=True))
    w.tick()
    w.make_ready()
    w.tick(5)
    assert phase(w) == "Pending" and "waiting for the gateway" in (w.s.message or "")
    assert cond(w, "Available") == "False" and not w.s.history
    assert next(c.reason for c in w.s.conditions or [] if c.type == "Available") == "GatewayUnavailable"
    w.gateway = TrackFacts(exists=True, ready=True, available=True)
    actions = w.tick(1)
    assert phase(w) == "Healthy" and cond(w, "Available") == "True" and "PhaseHealthy" in events(actions)
    assert w.s.history is not None and w.s.history[-1].outcome == "promoted"


def test_a_gateway_never_ready_within_progress_deadline_is_degraded() -> None:
    w = World(pol=policy(progressDeadline="1m"), gateway=TrackFacts(exists=True, detail="gateway: ImagePullBackOff"))
    w.tick()
    w.make_ready()
    w.tick(59)
    assert phase(w) == "Pending"
    w.tick(2)
    assert phase(w) == "Degraded" and "gateway has no ready pods (gateway: ImagePullBackOff)" in (w.s.message or "")


def test_healthy_becomes_degraded_while_the_gateway_has_no_ready_pod() -> None:
    up = TrackFacts(exists=True, ready=True, available=True)
    w = World(gateway=up)
    w.deploy_healthy()
    w.gateway = TrackFacts(exists=True)
    w.tick(1)
    assert phase(w) == "Degraded" and cond(w, "Available") == "False"
    w.gateway = up
    w.tick(1)
    assert phase(w) == "Healthy" and cond(w, "Available") == "True"


def test_first_revision_not_ready_within_progress_deadline_is_degraded() -> None:
    w = World(pol=policy(progressDeadline="1m"))
    w.tick()
    w.tick(59)
    assert phase(w) == "Pending"
    actions = w.tick(2)
    assert phase(w) == "Degraded" and cond(w, "Degraded") == "True"
    assert "PhaseDegraded" in events(actions)


def test_first_revision_crash_looping_is_degraded_at_once() -> None:
    w = World()
    w.tick()
    w.make_broken(crash_looping=True)
    w.tick(1)
    assert phase(w) == "Degraded" and "CrashLoopBackOff" in (w.s.message or "")


def test_a_new_spec_replaces_a_first_revision_that_never_served() -> None:
    w = World()
    w.tick()
    first = w.want.revision
    w.md_spec = spec("2", "b")
    actions = w.tick(1)
    assert w.s.stable is not None and w.s.stable.revision == w.want.revision and w.s.candidate is None
    assert removed(actions) == [first]


# -- the happy path ---------------------------------------------------------------------------------------


def test_new_revision_waits_for_readiness_then_walks_every_step_on_promote_verdicts() -> None:
    w = World()
    w.deploy_healthy()
    old = w.want.revision
    w.md_spec = spec("2", "b")
    actions = w.tick(1)
    cand = w.want.revision
    assert w.s.candidate is not None and w.s.candidate.number == 2 and w.s.current_step is None
    assert "RolloutStarted" in events(actions) and phase(w) == "Progressing"
    assert {a.role for a in actions if isinstance(a, EnsureTrack)} == {"stable", "candidate"}
    assert routes(actions).candidate is None  # nothing routed to a candidate that is not ready

    w.make_ready()
    actions = w.tick(1)
    assert w.s.current_step is not None and (w.s.current_step.index, w.s.current_step.kind) == (0, "shadow")
    r = routes(actions)
    assert (r.candidate, r.candidate_weight, r.mirror_percent) == (cand, 0, 100)
    assert w.s.traffic_split == "100/0 mirror 100%"

    # too few requests: no advance
    w.give_verdict("promote", requests=5)
    assert w.s.current_step.index == 0
    # enough requests: step 1
    actions = w.give_verdict("promote", requests=12)
    assert w.s.current_step.index == 1
    assert routes(actions).candidate_weight == 10 and routes(actions).mirror_percent == 0
    assert any(isinstance(a, StepFinished) and a.kind == "shadow" for a in actions)
    # each step needs its own evidence: the window starts with the step
    w.give_verdict("promote", requests=5)
    assert w.s.current_step.index == 1
    w.give_verdict("promote", requests=10)
    assert w.s.current_step.index == 2 and w.s.traffic is not None and w.s.traffic.candidate == 50
    assert w.s.traffic_split == "50/50"
    actions = w.give_verdict("promote", requests=40)
    assert w.s.stable is not None and w.s.stable.revision == cand and w.s.candidate is None
    assert phase(w) == "Healthy" and "Promoted" in events(actions)
    assert routes(actions).stable == cand and routes(actions).candidate is None
    assert w.s.history is not None and w.s.history[-1].outcome == "promoted"
    assert any(isinstance(a, RolloutFinished) and a.outcome == "promoted" for a in actions)
    # the old stable is kept for the scale-down delay, then removed
    assert removed(w.tick(PROMOTE_SCALE_DOWN_SECONDS - 1)) == []
    assert removed(w.tick(2)) == [old]
    assert w.s.scale_downs is None


def test_the_alpha_a_look_was_judged_at_is_recorded_with_the_verdict() -> None:
    w = World()
    w.start_rollout()
    assert w.s.candidate is not None
    w.now += timedelta(seconds=1)
    judgement = Judgement(verdict="continue", reason="collecting", alpha=0.0125)
    w.look = Look(judgement, w.now, w.s.candidate.revision)
    w.tick()
    assert w.s.last_analysis is not None and w.s.last_analysis.alpha == 0.0125


def test_continue_and_inconclusive_verdicts_never_advance() -> None:
    w = World()
    w.start_rollout()
    w.give_verdict("continue", requests=1000)
    w.give_verdict("inconclusive", requests=2000)
    assert w.s.current_step is not None and w.s.current_step.index == 0
    assert w.s.last_analysis is not None and w.s.last_analysis.verdict == "inconclusive"


def test_a_verdict_taken_before_the_step_started_does_not_pass_it() -> None:
    w = World()
    w.start_rollout()
    w.give_verdict("promote", requests=50)
    assert w.s.current_step is not None and w.s.current_step.index == 1
    # the same (old) verdict, looked at again later: it predates step 1
    w.tick(10)
    w.tick(10)
    assert w.s.current_step.index == 1


def test_the_route_mode_follows_the_strategy_and_the_sticky_key() -> None:
    w = World()
    w.start_rollout()
    assert routes(w.tick()).mode == "canary"
    w.sticky = True  # spec.traffic.sticky: clients keep their track
    assert routes(w.tick()).mode == "ab"


def test_traffic_version_changes_only_when_routes_change() -> None:
    w = World()
    w.deploy_healthy()
    v1 = w.s.traffic.version if w.s.traffic else -1
    w.tick(5)
    assert w.s.traffic is not None and w.s.traffic.version == v1
    w.start_rollout()
    v2 = w.s.traffic.version
    assert v2 > v1
    w.give_verdict("promote", requests=50)
    assert w.s.traffic.version == v2 + 1


def test_the_route_table_carries_each_steps_start_so_labels_count_in_the_step_that_served_them() -> None:
    w = World()
    w.deploy_healthy()
    assert routes(w.tick()).step_started_at is None  # no rollout: every label counts
    w.start_rollout()
    r = routes(w.tick(3))
    assert w.s.current_step is not None and w.s.traffic is not None
    first_start, version = parse(w.s.current_step.started_at).timestamp(), w.s.traffic.version
    assert r.step_started_at == first_start == (w.now - timedelta(seconds=3)).timestamp()
    assert routes(w.tick(5)).step_started_at == first_start and w.s.traffic.version == version  # same step
    actions = w.give_verdict("promote", requests=50)  # the next step: a new start, a new table version
    assert w.s.current_step is not None and w.s.current_step.index == 1
    assert routes(actions).step_started_at == w.now.timestamp() > first_start
    assert w.s.traffic.version == version + 1
    w.give_verdict("promote", requests=50)
    actions = w.give_verdict("promote", requests=50)
    assert w.s.candidate is None and routes(actions).step_started_at is None  # promoted: no step runs


# -- rollback --------------------------------------------------------------------------------------------


def test_rollback_verdict_sets_weight_zero_at_once_and_degrades() -> None:
    w = World()
    cand = w.start_rollout()
    w.give_verdict("promote", requests=50)
    assert w.s.traffic is not None and w.s.traffic.candidate == 10
    actions = w.give_verdict("rollback", requests=60)
    r = routes(actions)
    assert r.candidate is None and r.candidate_weight == 0 and r.mirror_percent == 0
    assert w.s.candidate is None and phase(w) == "Degraded" and cond(w, "Degraded") == "True"
    assert "AnalysisFailed" in events(actions)
    assert w.s.history is not None and w.s.history[-1].outcome == "rolledBack"
    assert "test says rollback" in w.s.history[-1].reason
    assert w.s.held_back is not None and w.s.held_back.revision == cand
    assert not any(isinstance(a, EnsureTrack) and a.role == "candidate" for a in actions)
    # the candidate is drained, then removed
    assert removed(w.tick(DRAIN_SECONDS + 1)) == [cand]
    # the spec still names the rolled-back model: it stays Degraded and is not rolled out again
    w.tick(600)
    assert phase(w) == "Degraded" and w.s.candidate is None


def test_rolled_back_revision_is_rolled_out_again_after_a_spec_change() -> None:
    w = World()
    w.start_rollout()
    w.give_verdict("rollback", requests=60)
    w.md_spec = spec("3", "c")
    actions = w.tick(1)
    assert w.s.candidate is not None and w.s.candidate.model_version == "3" and w.s.held_back is None
    assert "SpecChanged" in events(actions) and "RolloutStarted" in events(actions)


def test_crash_looping_candidate_is_rolled_back() -> None:
    w = World()
    cand = w.start_rollout()
    w.make_broken(cand, crash_looping=True)
    actions = w.tick(1)
    assert "CandidateCrashLoop" in events(actions) and phase(w) == "Degraded"


def test_candidate_refusing_its_sha256_is_rolled_back_even_before_ready() -> None:
    w = World()
    w.deploy_healthy()
    w.md_spec = spec("2", "b")
    w.tick(1)
    w.make_broken(digest_mismatch=True)
    actions = w.tick(1)
    assert "CandidateDigestMismatch" in events(actions)
    assert w.s.held_back is not None and "sha256" in w.s.held_back.reason


def test_candidate_not_ready_within_progress_deadline_is_rolled_back() -> None:
    w = World(pol=policy(progressDeadline="2m"))
    w.deploy_healthy()
    w.md_spec = spec("2", "b")
    w.tick(1)
    assert w.s.candidate is not None
    w.tick(119)
    assert w.s.candidate is not None
    actions = w.tick(2)
    assert "ProgressDeadlineExceeded" in events(actions) and w.s.candidate is None


DOWNLOADING = "downloading the model: 412.0 of 900.0 MiB (45%)"


def test_a_starting_candidates_progress_is_in_the_message_and_the_progressing_condition() -> None:
    w = World(pol=policy(progressDeadline="2m"))
    w.deploy_healthy()
    w.md_spec = spec("2", "b")
    w.tick(1)
    w.ready[w.want.revision] = TrackFacts(exists=True, startup=DOWNLOADING)
    w.tick(5)
    assert w.s.message == f"revision 2 (2): waiting for readiness; {DOWNLOADING}"
    progressing = next(c for c in w.s.conditions or [] if c.type == "Progressing")
    assert progressing.status == "True" and progressing.message == w.s.message
    actions = w.tick(120)  # still downloading at the deadline: the rollback says how far it got
    assert "ProgressDeadlineExceeded" in events(actions)
    assert w.s.held_back is not None and w.s.held_back.reason.endswith(f"({DOWNLOADING})")


def test_a_starting_first_revisions_progress_is_in_the_message() -> None:
    w = World(pol=policy(progressDeadline="1m"))
    w.tick()
    w.ready[w.want.revision] = TrackFacts(exists=True, startup=DOWNLOADING)
    w.tick(5)
    assert phase(w) == "Pending" and w.s.message == f"revision 1 (1) starting; {DOWNLOADING}"
    w.tick(60)
    assert phase(w) == "Degraded" and w.s.message == f"stable revision 1 has no ready pods ({DOWNLOADING})"


def test_on_failure_pause_holds_with_weight_zero_and_resume_restores_the_step() -> None:
    w = World(pol=policy(onFailure="pause"))
    w.start_rollout()
    w.give_verdict("promote", requests=50)
    actions = w.give_verdict("rollback", requests=60)
    assert phase(w) == "Paused" and w.s.hold is not None and "onFailure=pause" in w.s.hold
    assert routes(actions).candidate_weight == 0 and "RolloutHeld" in events(actions)
    w.tick(10)
    assert w.s.candidate is not None  # held, not rolled back
    w.send("resume")
    assert w.s.hold is None and w.s.traffic is not None and w.s.traffic.candidate == 10


# -- time limits -----------------------------------------------------------------------------------------


def test_step_past_max_duration_rolls_back_by_default_with_the_reason_visible() -> None:
    w = World()
    w.start_rollout()
    w.give_verdict("inconclusive", requests=3)
    w.tick(250)
    assert w.s.candidate is not None
    actions = w.tick(60)
    assert "Inconclusive" in events(actions)
    assert w.s.history is not None and "maxDuration" in w.s.history[-1].reason
    assert "inconclusive" in w.s.history[-1].reason


def test_no_labels_within_max_label_wait_ends_the_step_by_the_inconclusive_rule() -> None:
    quality: dict[str, Any] = {"analysis": {"metrics": {"quality": {"enabled": True, "maxLabelWait": "2m"}}}}
    w = World(pol=policy(**quality))
    w.start_rollout()
    w.give_verdict("continue", requests=500)  # the test world's looks carry no quality metrics: no labels
    w.tick(100)
    assert w.s.candidate is not None  # 101 s: still waiting
    actions = w.tick(30)
    assert "Inconclusive" in events(actions) and w.s.candidate is None
    assert w.s.history is not None and "no labels for the candidate within maxLabelWait 2m" in w.s.history[-1].reason


def test_labels_keep_the_step_going_past_max_label_wait() -> None:
    quality: dict[str, Any] = {"analysis": {"metrics": {"quality": {"enabled": True, "maxLabelWait": "2m"}}}}
    w = World(pol=policy(**quality))
    w.start_rollout()
    w.give_verdict("continue", requests=500)
    assert w.look is not None
    labelled = MetricResult(
        name="quality.nonInferiority", decision="inconclusive", samples=TrackPair(stable=90, candidate=12)
    )
    w.look = Look(w.look.judgement.model_copy(update={"metrics": [labelled]}), w.look.time, w.look.candidate_revision)
    w.tick(150)
    assert w.s.candidate is not None and w.s.current_step is not None and w.s.current_step.index == 0


def _labelled(w: World, verdict: str = "continue") -> None:
    """One look at the candidate whose quality rows scored labelled candidate rows."""
    w.give_verdict(verdict, requests=500)
    assert w.look is not None
    labelled = MetricResult(name="quality.harm", decision="pass", samples=TrackPair(stable=90, candidate=12))
    w.look = Look(w.look.judgement.model_copy(update={"metrics": [labelled]}), w.look.time, w.look.candidate_revision)
    w.tick()


def test_a_pass_without_a_look_reads_the_steps_last_look_for_labels() -> None:
    """Most passes take no look: the last look recorded in the step says whether labels came (a look-less
    pass once counted as "no labels" and rolled a good candidate back in the demo)."""
    quality: dict[str, Any] = {"analysis": {"metrics": {"quality": {"enabled": True, "maxLabelWait": "2m"}}}}
    w = World(pol=policy(**quality))
    w.start_rollout()
    _labelled(w)
    w.look = None  # the passes that follow take no look
    w.tick(150)
    assert w.s.candidate is not None and w.s.current_step is not None and w.s.current_step.index == 0
    # the look that ends a step is not the next step's: without a look of its own, its labels are overdue
    _labelled(w, "promote")
    assert w.s.current_step is not None and w.s.current_step.index == 1
    w.look = None
    actions = w.tick(150)
    assert "Inconclusive" in events(actions) and w.s.candidate is None


def test_step_past_max_duration_holds_when_the_policy_says_hold() -> None:
    w = World(pol=policy(onInconclusive={"action": "hold"}))
    w.start_rollout()
    w.tick(301)
    assert phase(w) == "Paused" and w.s.hold is not None and "maxDuration" in w.s.hold
    assert w.s.traffic is not None and w.s.traffic.mirror == 100  # a hold keeps the split
    w.tick(3600)
    assert w.s.candidate is not None and phase(w) == "Paused"
    w.send("promote")
    assert w.s.current_step is not None and w.s.current_step.index == 1 and w.s.hold is None


def test_a_rollback_verdict_still_rolls_back_during_an_inconclusive_hold() -> None:
    w = World(pol=policy(onInconclusive={"action": "hold"}))
    w.start_rollout()
    w.tick(301)
    assert w.s.hold is not None
    w.give_verdict("rollback", requests=100)
    assert w.s.candidate is None and phase(w) == "Degraded"


def test_timed_pause_step_passes_on_its_clock_and_keeps_the_split() -> None:
    steps: list[dict[str, Any]] = [
        {"canary": {"weight": 20, "minRequests": 1}},
        {"pause": {"duration": "1m"}},
        {"canary": {"weight": 60}},
    ]
    w = World(pol=policy(steps))
    w.start_rollout()
    w.give_verdict("promote", requests=5)
    assert w.s.current_step is not None and w.s.current_step.kind == "pause"
    assert w.s.traffic is not None and w.s.traffic.candidate == 20
    w.tick(30)
    assert w.s.current_step.kind == "pause"
    w.tick(31)
    assert w.s.current_step.index == 2 and w.s.traffic.candidate == 60


def test_indefinite_pause_waits_for_resume() -> None:
    w = World(pol=policy([{"canary": {"weight": 20, "minRequests": 1}}, {"pause": {}}, {"canary": {"weight": 60}}]))
    w.start_rollout()
    w.give_verdict("promote", requests=5)
    w.tick(86400)
    assert w.s.current_step is not None and w.s.current_step.kind == "pause"
    w.send("resume")
    assert w.s.current_step.index == 2


# -- blue-green --------------------------------------------------------------------------------------------


def test_blue_green_previews_mirrored_then_switches_at_once_and_keeps_old_stable_for_the_window() -> None:
    w = World(pol=policy([{"blueGreen": {"previewMirrorPercent": 50, "minRequests": 10, "scaleDownDelay": "10m"}}]))
    w.deploy_healthy()
    old = w.want.revision
    w.start_rollout()
    r = routes(w.last.actions if w.last else [])
    assert (r.mode, r.candidate_weight, r.mirror_percent) == ("blueGreen", 0, 50)
    actions = w.give_verdict("promote", requests=20)
    r = routes(actions)
    assert r.stable == w.want.revision and r.candidate is None and r.candidate_weight == 0
    assert removed(w.tick(599)) == []
    assert removed(w.tick(2)) == [old]


def test_blue_green_without_preview_analysis_switches_once_ready() -> None:
    w = World(pol=policy([{"blueGreen": {"previewAnalysis": False}}]))
    w.deploy_healthy()
    w.md_spec = spec("2", "b")
    w.tick(1)
    w.make_ready()
    actions = w.tick(1)
    assert "Promoted" in events(actions) and w.s.stable is not None and w.s.stable.model_version == "2"


# -- spec changes during a rollout --------------------------------------------------------------------------


def test_new_revision_during_a_rollout_supersedes_it() -> None:
    w = World()
    first_cand = w.start_rollout()
    w.give_verdict("promote", requests=50)
    w.md_spec = spec("3", "c")
    actions = w.tick(1)
    assert "Superseded" in events(actions) and "RolloutStarted" in events(actions)
    assert w.s.candidate is not None and w.s.candidate.model_version == "3" and w.s.current_step is None
    assert w.s.history is not None and w.s.history[-1].outcome == "superseded"
    assert routes(actions).candidate_weight == 0
    assert removed(w.tick(DRAIN_SECONDS + 1)) == [first_cand]


def test_spec_back_to_stable_during_a_rollout_stops_it() -> None:
    w = World()
    w.start_rollout()
    w.md_spec = spec("1", "a")
    actions = w.tick(1)
    assert "Superseded" in events(actions) and w.s.candidate is None and phase(w) == "Healthy"


def test_policy_only_change_does_not_start_a_rollout() -> None:
    w = World()
    w.deploy_healthy()
    w.md_spec = spec("1", "a", replicas=5, rolloutPolicyRef={"name": "strict"}, paused=True)
    actions = w.tick(1)
    assert w.s.candidate is None and events(actions) == []


# -- pause -------------------------------------------------------------------------------------------------


def test_spec_paused_freezes_steps_and_unpausing_continues() -> None:
    w = World()
    w.start_rollout()
    w.paused = True
    w.tick()
    assert phase(w) == "Paused"
    w.give_verdict("promote", requests=100)
    assert w.s.current_step is not None and w.s.current_step.index == 0
    w.paused = False
    w.give_verdict("promote", requests=200)
    assert w.s.current_step.index == 1


def test_paused_rollout_still_rolls_back_on_a_rollback_verdict() -> None:
    w = World()
    w.start_rollout()
    w.paused = True
    w.give_verdict("rollback", requests=100)
    assert w.s.candidate is None and phase(w) == "Degraded"


# -- commands --------------------------------------------------------------------------------------------


def test_command_promote_passes_one_step_and_promote_full_finishes() -> None:
    w = World()
    w.start_rollout()
    w.send("promote")
    assert w.s.current_step is not None and w.s.current_step.index == 1
    assert w.s.last_command is not None and result(w) == "accepted"
    w.send("promoteFull")
    assert w.s.candidate is None and w.s.stable is not None and w.s.stable.model_version == "2"


def test_a_command_is_acted_on_once_per_id() -> None:
    w = World()
    w.start_rollout()
    w.send("promote", cmd_id="abc")
    w.tick(1)
    w.tick(1)
    assert w.s.current_step is not None and w.s.current_step.index == 1


def test_promote_before_ready_and_without_rollout_is_refused() -> None:
    w = World()
    w.deploy_healthy()
    actions = w.send("promote")
    assert w.s.last_command is not None and result(w) == "refused"
    assert "CommandRefused" in events(actions)
    w.md_spec = spec("2", "b")
    w.tick(1)
    w.send("promote")
    assert result(w) == "refused" and "not ready" in w.s.last_command.message


def test_unknown_verb_is_refused() -> None:
    w = World()
    w.deploy_healthy()
    w.send("explode")
    assert w.s.last_command is not None and result(w) == "refused"


def test_an_unreadable_annotation_is_refused_once_with_its_reason() -> None:
    w = World()
    w.deploy_healthy()
    w.command = from_annotations({ANNOTATION: "promote please"})
    first = w.tick()
    assert w.s.last_command is not None and result(w) == "refused"
    assert w.s.last_command.verb == "invalid" and "not JSON" in w.s.last_command.message
    assert "CommandRefused" in events(first)
    assert "CommandRefused" not in events(w.tick(1))  # the same annotation is not refused again


def test_abort_rolls_back_with_outcome_aborted() -> None:
    w = World()
    w.start_rollout()
    w.give_verdict("promote", requests=50)
    actions = w.send("abort")
    assert routes(actions).candidate_weight == 0 and phase(w) == "Degraded"
    assert w.s.history is not None and w.s.history[-1].outcome == "aborted"
    assert w.s.held_back is not None and w.s.held_back.outcome == "aborted"


def test_pause_and_resume_commands() -> None:
    w = World()
    w.start_rollout()
    w.send("pause")
    assert phase(w) == "Paused" and w.s.paused_by_command
    w.give_verdict("promote", requests=100)
    assert w.s.current_step is not None and w.s.current_step.index == 0
    w.send("resume")
    assert phase(w) == "Progressing" and not w.s.paused_by_command
    w.give_verdict("promote", requests=200)
    assert w.s.current_step.index == 1


def test_retry_rolls_a_held_back_revision_out_again() -> None:
    w = World()
    cand = w.start_rollout()
    w.send("retry")
    assert w.s.last_command is not None and result(w) == "refused"
    w.give_verdict("rollback", requests=50)
    actions = w.send("retry")
    assert result(w) == "accepted" and "RolloutStarted" in events(actions)
    assert w.s.candidate is not None and w.s.candidate.revision == cand and w.s.candidate.number == 2


def test_undo_goes_back_to_the_previous_stable_and_holds_the_spec_revision() -> None:
    w = World()
    w.deploy_healthy()
    first = w.want.revision
    w.start_rollout()
    w.send("promoteFull")
    second = w.want.revision
    assert w.s.stable is not None and w.s.stable.revision == second
    assert removed(w.tick(PROMOTE_SCALE_DOWN_SECONDS + 1)) == [first]
    del w.ready[first]
    actions = w.send("undo")
    assert w.s.last_command is not None and result(w) == "accepted"
    assert w.s.candidate is not None and w.s.candidate.revision == first and w.s.candidate.origin == "undo"
    assert "UndoStarted" in events(actions)
    w.make_ready(first)
    actions = w.tick(1)
    assert w.s.stable.revision == first and w.s.candidate is None and phase(w) == "Healthy"
    assert w.s.held_back is not None and w.s.held_back.outcome == "undone"
    # the spec still names revision 2: not rolled out again...
    w.tick(60)
    assert w.s.candidate is None
    # ...until retry
    w.send("retry")
    assert w.s.candidate is not None and w.s.candidate.revision == second


def test_undo_to_a_numbered_revision_during_a_rollout_aborts_it() -> None:
    w = World()
    w.deploy_healthy()
    first = w.want.revision
    w.start_rollout("2", "b")
    w.send("promoteFull")
    w.ready.pop(first)  # its Deployment is gone after the scale-down delay
    w.start_rollout("3", "c")
    w.send("undo", to_revision=1)
    assert w.s.history is not None and w.s.history[-1].outcome == "aborted"
    assert w.s.candidate is not None and w.s.candidate.number == 1
    w.send("undo", to_revision=9)
    assert w.s.last_command is not None and result(w) == "refused"


def test_undo_without_a_previous_revision_is_refused() -> None:
    w = World()
    w.deploy_healthy()
    w.send("undo")
    assert w.s.last_command is not None and result(w) == "refused"


# -- bookkeeping -----------------------------------------------------------------------------------------


def test_observed_generation_and_policy_are_recorded() -> None:
    w = World(generation=7)
    w.tick()
    assert w.s.observed_generation == 7 and w.s.policy == "test"


def test_revision_numbers_are_reused_for_known_revisions() -> None:
    w = World()
    w.deploy_healthy()
    w.start_rollout("2", "b")
    w.give_verdict("rollback", requests=5)
    w.md_spec = spec("1", "a")
    w.tick(1)
    w.md_spec = spec("2", "b")
    w.tick(1)
    assert w.s.candidate is not None and w.s.candidate.number == 2


def test_calling_again_with_the_same_facts_changes_nothing() -> None:
    w = World()
    w.start_rollout()
    w.give_verdict("promote", requests=50)
    before = w.s.model_copy(deep=True)
    actions = w.tick()
    assert w.s == before and events(actions) == []
