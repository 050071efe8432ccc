"""Properties of the state machine over random histories of time, readiness, verdicts, spec edits and commands.

- it never advances a step or promotes without a `promote` verdict (when no human forces it);
- after a rollback or abort the candidate has weight 0 and no mirror, and nothing is routed to it;
- it is a fixed point: called again with the same facts and clock it changes nothing and says nothing;
- live weight goes to the candidate only in a canary step;
- Healthy (and Available) only while the stable revision and the gateway clients call both answer;
- no traffic reaches a candidate before its confirmRollout and preRollout hooks approved it.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.rollout.world import World, policy, spec

from mlrollout.rollout import RecordEvent, RemoveTrack, SetRoutes, TrackFacts, decide

Op = tuple[str, Any]

VERSIONS = [("1", "a"), ("2", "b"), ("3", "c")]

_ops = st.one_of(
    st.tuples(st.just("wait"), st.sampled_from([1, 10, 45, 200, 400])),
    st.tuples(st.just("verdict"), st.sampled_from(["promote", "continue", "rollback", "inconclusive"])),
    st.tuples(st.just("ready"), st.booleans()),
    st.tuples(st.just("crash"), st.sampled_from(["crash_looping", "digest_mismatch"])),
    st.tuples(st.just("spec"), st.sampled_from(VERSIONS)),
    st.tuples(st.just("paused"), st.booleans()),
    st.tuples(st.just("gateway"), st.sampled_from(["ready", "down", "none"])),
    st.tuples(
        st.just("hook"),
        st.tuples(st.sampled_from(["start", "accept", "board"]), st.sampled_from(["approved", "refused", "no_answer"])),
    ),
)
_human = st.tuples(
    st.just("command"), st.sampled_from(["promote", "promoteFull", "abort", "pause", "resume", "retry", "undo"])
)
_safe_human = st.tuples(st.just("command"), st.sampled_from(["abort", "pause", "retry"]))

POLICIES = [
    policy(),
    policy(onInconclusive={"action": "hold"}, onFailure="pause"),
    policy([{"blueGreen": {"minRequests": 5, "maxDuration": "5m", "scaleDownDelay": "1m"}}]),
    policy([{"canary": {"weight": 20, "minRequests": 5}}, {"pause": {"duration": "1m"}}, {"canary": {"weight": 70}}]),
    policy(
        hooks=[
            {"name": name, "type": kind, "secretRef": {"name": "hooks", "key": name}, "maxWait": "20m"}
            for name, kind in (("start", "confirmRollout"), ("accept", "preRollout"), ("board", "confirmPromotion"))
        ],
        onInconclusive={"action": "hold"},
    ),
]


def apply(w: World, op: Op, requests: list[int]) -> None:
    kind, arg = op
    w.command = None
    if kind == "wait":
        w.tick(arg)
    elif kind == "verdict":
        if w.status is not None and w.status.candidate is not None:
            requests[0] += 7
            w.give_verdict(arg, requests[0])
        else:
            w.tick(1)
    elif kind == "ready":
        if arg:
            w.make_ready()
        else:
            w.ready.pop(w.want.revision, None)
        w.tick(1)
    elif kind == "crash":
        w.make_broken(crash_looping=arg == "crash_looping", digest_mismatch=arg == "digest_mismatch")
        w.tick(1)
    elif kind == "spec":
        w.md_spec = spec(*arg)
        w.tick(1)
    elif kind == "paused":
        w.paused = arg
        w.tick(1)
    elif kind == "gateway":
        up = TrackFacts(exists=True, ready=True, available=True)
        w.gateway = {"ready": up, "down": TrackFacts(exists=True), "none": None}[arg]
        w.tick(1)
    elif kind == "command":
        w.send(arg)
    elif kind == "hook":
        if w.status is not None and w.status.candidate is not None:
            w.answer(*arg)
        w.tick(1)


def check_invariants(w: World) -> None:
    s = w.s
    assert s.traffic is not None
    if s.candidate is None:
        assert s.traffic.candidate == 0 and s.traffic.mirror == 0
    if s.traffic.candidate > 0:
        assert s.current_step is not None and s.current_step.kind in ("canary", "pause")
    assert s.traffic.stable + s.traffic.candidate == 100
    if s.candidate is not None and (s.traffic.candidate or s.traffic.mirror):  # traffic only past the first gates
        approved = {a.hook for a in s.approvals or [] if a.revision == s.candidate.revision and a.state == "approved"}
        assert {h.name for h in w.pol.hooks or [] if h.type != "confirmPromotion"} <= approved
    serving = w.facts().track(s.stable.revision if s.stable else "").available and w.facts().gateway_serves()
    available = next(c.status for c in s.conditions or [] if c.type == "Available")
    assert (available == "True") == serving
    if s.phase == "Healthy":
        assert serving
    assert w.last is not None
    for action in w.last.actions:
        if isinstance(action, SetRoutes):
            assert (action.candidate is None) == (action.candidate_weight == 0 and action.mirror_percent == 0)
    # fixed point
    again = decide(s, w.facts(), w.pol, w.now)
    assert again.status == s
    assert not [a for a in again.actions if isinstance(a, RecordEvent | RemoveTrack)]


def progress(w: World) -> tuple[str | None, int, int]:
    s = w.s
    promoted = len([h for h in s.history or [] if h.outcome == "promoted"])
    return (s.candidate.revision if s.candidate else None, s.current_step.index if s.current_step else -1, promoted)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pol=st.sampled_from(POLICIES), ops=st.lists(st.one_of(_ops, _human), min_size=1, max_size=40))
def test_weights_after_rollback_and_fixed_point(pol: Any, ops: list[Op]) -> None:
    w = World(pol=pol)
    requests = [0]
    w.tick()
    for op in ops:
        rolled_back_before = len([h for h in w.s.history or [] if h.outcome in ("rolledBack", "aborted")])
        apply(w, op, requests)
        check_invariants(w)
        rolled_back = len([h for h in w.s.history or [] if h.outcome in ("rolledBack", "aborted")])
        if rolled_back > rolled_back_before and w.s.candidate is None:
            assert w.s.traffic is not None and w.s.traffic.candidate == 0 and w.s.traffic.mirror == 0
            assert w.last is not None
            [routes] = [a for a in w.last.actions if isinstance(a, SetRoutes)]
            assert routes.candidate is None and routes.candidate_weight == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.one_of(_ops, _safe_human), min_size=1, max_size=40))
def test_never_advances_without_a_promote_verdict(ops: list[Op]) -> None:
    """Default-style policy (no pause steps), no human promote: every step advance needs a promote verdict."""
    w = World(pol=POLICIES[0])
    requests = [0]
    w.tick()
    for op in ops:
        cand, index, promoted = progress(w)
        apply(w, op, requests)
        new_cand, new_index, new_promoted = progress(w)
        # the first revision is recorded as promoted once it serves, even if a candidate already waits: not
        # an advance; a promotion of the candidate is
        candidate_promoted = new_promoted > promoted and cand is not None and (w.s.history or [])[-1].revision == cand
        # entering step 0 once the candidate is ready (index -1 -> 0) passes no gate; later indexes do
        advanced = (new_cand == cand and cand is not None and index >= 0 and new_index > index) or candidate_promoted
        if advanced:
            assert op[0] == "verdict" and op[1] == "promote", (op, w.s.history)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.one_of(_ops, _human), min_size=1, max_size=40))
def test_hooks_gate_traffic_and_keep_the_fixed_point(ops: list[Op]) -> None:
    """The policy with every kind of approval hook, under random answers, time, verdicts and commands."""
    w = World(pol=POLICIES[-1])
    requests = [0]
    w.tick()
    w.make_ready()  # a serving stable, so that spec edits start rollouts
    w.tick()
    for op in ops:
        apply(w, op, requests)
        check_invariants(w)
