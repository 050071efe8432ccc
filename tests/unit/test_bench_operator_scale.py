"""The scale bench's rollback times (bench/operator_scale.py): the verdict→route goal is timed from the
operator's look, and the wait for that look is reported beside it, not hidden in it (issue 19)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from bench.operator_scale import rollback_timing

LOOK = datetime(2026, 12, 5, 19, 30, 0, 250000, tzinfo=UTC)


def test_a_judgement_read_at_the_next_tick_waits_for_the_look_and_is_not_counted_against_the_operator() -> None:
    injected = LOOK.timestamp() - 9.5  # written just after a look: the next due look is a 10 s tick later
    timing = rollback_timing(injected, "2026-12-05T19:30:00.250000Z", LOOK.timestamp() + 0.12)
    assert timing.verdict_to_route == pytest.approx(0.12)
    assert timing.look_wait == pytest.approx(9.5)
    assert timing.injection_to_route == pytest.approx(9.62)
    assert timing.injection_to_route == pytest.approx(timing.look_wait + timing.verdict_to_route)


def test_a_look_whose_pass_started_just_before_the_write_shows_a_negative_wait() -> None:
    """Status records the pass's start; the file is read later in that pass: the sample is real."""
    timing = rollback_timing(LOOK.timestamp() + 0.01, "2026-12-05T19:30:00.25Z", LOOK.timestamp() + 0.2)
    assert timing.look_wait == pytest.approx(-0.01)
    assert timing.verdict_to_route == pytest.approx(0.2)
    assert timing.injection_to_route == pytest.approx(0.19)


def test_kubernetes_second_precision_times_read_too() -> None:
    timing = rollback_timing(LOOK.timestamp() - 1, "2026-12-05T19:30:00Z", LOOK.timestamp())
    assert timing.verdict_to_route == pytest.approx(0.25)
