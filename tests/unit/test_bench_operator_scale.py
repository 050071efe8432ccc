"""The scale bench's pure parts (bench/operator_scale.py): the rollback verdict→route goal is timed from the
operator's look, with the wait for that look reported beside it, not hidden in it; and rows merged into the
results file (issue 19)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bench.operator_scale import SizeResult, rollback_timing, write_results

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


def _row(n: int, date: str) -> SizeResult:
    return SizeResult(n, 1.0, 1.0, 0.1, 0.1, 200.0, 1.0, 1.0, 0.1, 0.2, 20, 0.05, 0.1, 0.06, 0.2, 10, date=date)


def test_merging_after_each_size_moves_only_rows_of_earlier_runs_to_earlier_runs(tmp_path: Path) -> None:
    """A run of sizes 100,300 writes after each: its 100 row is in the file when 300 is written."""
    out = tmp_path / "scale.json"
    args = argparse.Namespace(merge=True, out=out, idle=200.0, nodes="none", workers=None)
    write_results(args, [_row(100, "old"), _row(300, "old"), _row(1000, "kept")], {})
    fresh = [_row(100, "new")]
    write_results(args, fresh, {})
    write_results(args, [*fresh, _row(300, "new")], {})
    written = json.loads(out.read_text())
    assert [(r["n"], r["date"]) for r in written["sizes"]] == [(100, "new"), (300, "new"), (1000, "kept")]
    assert sorted((r["n"], r["date"]) for r in written["earlier_runs"]) == [(100, "old"), (300, "old")]
