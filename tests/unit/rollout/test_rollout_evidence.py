"""Evidence carried across analysed steps: the machine keeps it in the step's status and hands it on.

The statistics live in mlrollout.analysis.carry; the machine only has to remember, per e-value test, what
the latest look of the current step measured, and start the next step from it (status is the memory).
"""

from __future__ import annotations

from tests.unit.rollout.world import World, policy

from mlrollout.api.analysis import Forecast


def test_each_look_updates_what_the_step_would_carry_and_the_next_step_starts_from_it() -> None:
    w = World()
    w.start_rollout()
    step = w.s.current_step
    assert step is not None and step.index == 0 and step.carried_in is None
    w.give_verdict("continue", requests=5, evidence={"errorRate.harm": 0.8, "latency.harm": 1.5})
    assert w.s.current_step is not None and w.s.current_step.carried_out == {"errorRate.harm": 0.8, "latency.harm": 1.5}
    # the next look measured only error rates (no latency histogram): latency keeps its latest value
    w.give_verdict("promote", requests=50, evidence={"errorRate.harm": 2.5})
    step = w.s.current_step
    assert step is not None and step.index == 1
    assert step.carried_in == {"errorRate.harm": 2.5, "latency.harm": 1.5}
    assert step.carried_out is None


def test_a_look_without_evidence_keeps_the_latest_measured_values() -> None:
    w = World()
    w.start_rollout()
    w.give_verdict("continue", requests=5, evidence={"errorRate.harm": 3.0})
    w.give_verdict("inconclusive", requests=5)  # Prometheus down: nothing measured
    assert w.s.current_step is not None and w.s.current_step.carried_out == {"errorRate.harm": 3.0}


def test_a_step_without_any_look_hands_on_what_it_carried_in() -> None:
    """A test never measured in a step keeps its carried value (it only forgets that step's restart)."""
    w = World(pol=policy([
        {"canary": {"weight": 10, "minRequests": 10, "maxDuration": "5m"}},
        {"pause": {"duration": "30s"}},
        {"canary": {"weight": 50, "minRequests": 10, "maxDuration": "5m"}},
    ]))  # fmt: skip
    w.start_rollout()
    w.give_verdict("promote", requests=50, evidence={"errorRate.harm": 4.0})
    assert w.s.current_step is not None and w.s.current_step.kind == "pause"
    assert w.s.current_step.carried_in == {"errorRate.harm": 4.0}
    w.tick(31)
    assert w.s.current_step is not None and w.s.current_step.index == 2
    assert w.s.current_step.carried_in == {"errorRate.harm": 4.0}


def test_a_new_rollout_starts_with_no_evidence() -> None:
    w = World()
    w.start_rollout()
    w.give_verdict("promote", requests=50, evidence={"errorRate.harm": 9.0})
    assert w.s.current_step is not None and w.s.current_step.carried_in == {"errorRate.harm": 9.0}
    w.start_rollout(version="3", sha="c")  # superseded by a newer spec
    assert w.s.current_step is not None and w.s.current_step.index == 0
    assert w.s.current_step.carried_in is None and w.s.current_step.carried_out is None


def test_a_verdict_from_before_the_step_is_not_counted_in_it() -> None:
    w = World()
    w.start_rollout()
    w.give_verdict("promote", requests=50, evidence={"errorRate.harm": 2.0})
    w.tick(5)  # the same verdict is still the latest fact: it belongs to step 0, not to step 1
    assert w.s.current_step is not None and w.s.current_step.index == 1
    assert w.s.current_step.carried_out is None


def test_a_looks_forecast_goes_into_status_and_the_next_look_replaces_it() -> None:
    w = World()
    w.start_rollout()
    soon = Forecast(seconds=600, candidate_requests=6000, candidate_rate=10.0, slowest="errorRate.nonInferiority")
    w.give_verdict("continue", requests=5, forecast=soon)
    assert w.s.last_analysis is not None and w.s.last_analysis.forecast == soon
    w.give_verdict("inconclusive", requests=5)  # no evidence, no forecast
    assert w.s.last_analysis is not None and w.s.last_analysis.forecast is None
