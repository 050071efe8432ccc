"""The look batcher's bookkeeping (controller/lookbatch.py) on a scripted clock: which looks a batch taken
ahead of time holds, when a look reads its snapshot from one, and when it is taken alone; and its thread."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import cast

import pytest
from tests.unit.rollout.world import policy

from mlrollout.analysis import AnalysisTarget, MetricsProvider, NullProvider
from mlrollout.analysis.batch import LookRequest
from mlrollout.analysis.carry import StepEvidence
from mlrollout.analysis.snapshot import NO_COUNTS, Snapshot
from mlrollout.controller import handlers
from mlrollout.controller.lookbatch import IDLE_POLL, LookBatcher, clamp_window
from mlrollout.controller.settings import OperatorSettings
from mlrollout.controller.verdicts import PrometheusVerdicts, source_from


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Recorder:
    """Stands in for collect_snapshots: records each batch, answers snapshots naming the look and time."""

    batches: list[tuple[float, list[LookRequest]]] = field(default_factory=list)

    def __call__(self, provider: MetricsProvider, looks: Sequence[LookRequest], at: float, _: int) -> list[Snapshot]:
        self.batches.append((at, list(looks)))
        return [
            Snapshot(NO_COUNTS, NO_COUNTS, x.window_seconds, warnings=(f"{x.target.model_deployment}@{at:g}",))
            for x in looks
        ]


def md(i: int, revision: str = "r2") -> AnalysisTarget:
    return AnalysisTarget("ns", f"md-{i}", "r1", revision)


def batcher(**kw: float) -> tuple[LookBatcher, Clock, Recorder]:
    clock, recorder = Clock(), Recorder()
    return LookBatcher(NullProvider(), ttl=10.0, clock=clock, collect=recorder, **kw), clock, recorder  # type: ignore[arg-type]


def names(looks: list[LookRequest]) -> list[str]:
    return [x.target.model_deployment for x in looks]


def first_looks(b: LookBatcher, clock: Clock, count: int, spacing: float = 3.0, interval: float = 30.0) -> None:
    """Each ModelDeployment's first look (alone: nothing is known yet), ``spacing`` seconds apart."""
    for i in range(count):
        b.snapshot(md(i), 30.0 + i, interval=interval)
        clock.now += spacing


def test_looks_coming_due_are_taken_ahead_in_one_batch_that_their_looks_only_read() -> None:
    b, clock, rec = batcher()
    first_looks(b, clock, 3)  # at 1000, 1003, 1006: due again at 1030, 1033, 1036 (interval 30, tick 10)
    assert len(rec.batches) == 3 and b.counts.alone == 3
    clock.now = 1024.0
    assert b.prefetch() > 0 and len(rec.batches) == 3  # none due within the lead (5 s) yet
    clock.now = 1031.0
    assert b.prefetch() == IDLE_POLL
    assert names(rec.batches[-1][1]) == ["md-0", "md-1", "md-2"] and rec.batches[-1][0] == 1031.0
    # each member's window runs from its own step start to the batch's instant
    assert [x.window_seconds for x in rec.batches[-1][1]] == [61.0, 59.0, 57.0]
    assert b.prefetch() == IDLE_POLL and len(rec.batches) == 4  # served already: not taken twice
    got = []
    for i, at in enumerate((1031.0, 1033.0, 1036.0)):
        clock.now = at
        got.append(b.snapshot(md(i), at - (970.0 + 2 * i), interval=30.0))
    assert len(rec.batches) == 4  # the looks only read
    assert [s.warnings for s in got] == [("md-0@1031",), ("md-1@1031",), ("md-2@1031",)]
    assert got[1].elapsed_seconds == 59.0
    assert (b.counts.served, b.counts.alone, b.counts.batches, b.counts.batched_looks) == (3, 3, 1, 3)


def test_the_next_look_is_expected_at_the_first_tick_one_interval_later() -> None:
    b, clock, rec = batcher(tick=10.0)
    b.snapshot(md(0), 30.0, interval=25.0)  # due at 1025, but the timer ticks at 1010, 1020, 1030
    clock.now = 1024.0
    b.prefetch()
    assert len(rec.batches) == 1
    clock.now = 1025.0
    b.prefetch()
    assert names(rec.batches[-1][1]) == ["md-0"]


def test_a_look_late_for_its_batch_reads_it_within_an_interval_and_else_is_taken_alone() -> None:
    """An overloaded operator: the look queued for a worker thread; the batch taken for it serves it, if it
    is less than an analysis interval old."""
    b, clock, rec = batcher()
    first_looks(b, clock, 2, spacing=5.0)  # due at 1030, 1035
    clock.now = 1030.0
    b.prefetch()
    assert names(rec.batches[-1][1]) == ["md-0", "md-1"]
    clock.now = 1046.0  # md-1 11 s after it was due: 16 s after the batch's instant
    assert b.snapshot(md(1), 72.0, interval=30.0).warnings == ("md-1@1030",)
    clock.now = 1061.0  # md-0 31 s after the batch: more than an interval old
    late = b.snapshot(md(0), 91.0, interval=30.0)
    assert late.warnings == ("md-0@1061",) and rec.batches[-1][0] == 1061.0 and names(rec.batches[-1][1]) == ["md-0"]
    assert (b.counts.served, b.counts.alone) == (1, 3)


def test_a_look_of_another_candidate_or_step_is_taken_alone() -> None:
    b, clock, rec = batcher()
    first_looks(b, clock, 2, spacing=0.0)
    clock.now = 1026.0
    b.prefetch()
    assert names(rec.batches[-1][1]) == ["md-0", "md-1"]
    clock.now = 1030.0
    b.snapshot(md(0, revision="r3"), 2.0, interval=30.0)  # a new candidate meanwhile
    b.snapshot(md(1), 5.0, interval=30.0)  # a new step (its start moved)
    assert [names(x[1]) for x in rec.batches[-2:]] == [["md-0"], ["md-1"]]
    assert b.counts.served == 0 and b.counts.alone == 4


def test_a_look_not_due_soon_stays_out_and_one_that_stopped_is_forgotten() -> None:
    b, clock, rec = batcher()
    b.snapshot(md(0), 30.0, interval=30.0)
    b.snapshot(md(1), 30.0, interval=300.0)  # due in five minutes
    b.snapshot(md(2), 30.0, interval=30.0)
    clock.now += 30.0
    b.prefetch()
    assert names(rec.batches[-1][1]) == ["md-0", "md-2"]
    b.snapshot(md(0), 60.0, interval=30.0)
    clock.now += 30.0 * 2 + 5.0  # md-2 took no look for two intervals and a window: its rollout ended
    b.prefetch()
    assert names(rec.batches[-1][1]) == ["md-0"]
    b.forget("ns", "md-1")
    clock.now += 300.0
    b.snapshot(md(0), 431.0, interval=30.0)
    clock.now += 30.0
    b.prefetch()
    assert names(rec.batches[-1][1]) == ["md-0"]


def test_a_batch_holds_at_most_max_members_looks_earliest_due_first() -> None:
    b, clock, rec = batcher(max_members=3)
    first_looks(b, clock, 5, spacing=1.0)  # due at 1030 ... 1034
    clock.now = 1030.0
    assert b.prefetch() == 0.0  # more are due: the next batch at once
    assert names(rec.batches[-1][1]) == ["md-0", "md-1", "md-2"]
    b.prefetch()
    assert names(rec.batches[-1][1]) == ["md-3", "md-4"]
    for i in range(5):
        b.snapshot(md(i), 60.0, interval=30.0)
    assert len(rec.batches) == 5 + 2 and b.counts.served == 5


def test_a_look_waits_for_its_running_batch_at_most_max_wait() -> None:
    """A look whose batch is in flight waits for it, but no longer than ``max_wait``: then it is taken
    alone, so no worker thread is held for long by queries other looks need."""
    clock, recorder, release, entered = Clock(), Recorder(), threading.Event(), threading.Event()

    def slow(provider: MetricsProvider, looks: Sequence[LookRequest], at: float, limit: int) -> list[Snapshot]:
        if len(looks) > 1:  # the batch, not a look alone
            entered.set()
            release.wait(10)
        return recorder(provider, looks, at, limit)

    b = LookBatcher(NullProvider(), ttl=10.0, clock=clock, collect=slow, max_wait=0.3)
    first_looks(b, clock, 3, spacing=0.0)
    clock.now = 1026.0
    prefetching = threading.Thread(target=b.prefetch)
    prefetching.start()
    assert entered.wait(10)
    clock.now = 1030.0
    started = time.monotonic()
    alone = b.snapshot(md(0), 60.0, interval=30.0)  # the batch hangs: md-0 is taken alone after 0.3 s
    assert 0.3 <= time.monotonic() - started < 5.0 and alone.warnings == ("md-0@1030",)
    got: list[Snapshot] = []
    waiting = threading.Thread(target=lambda: got.append(b.snapshot(md(1), 61.0, interval=30.0)))
    waiting.start()
    time.sleep(0.1)
    release.set()  # the batch ends within md-1's wait: md-1 reads it
    prefetching.join(10)
    waiting.join(10)
    assert got[0].warnings == ("md-1@1026",)
    assert (b.counts.served, b.counts.waited) == (1, 1)
    assert b.snapshot(md(2), 62.0, interval=30.0).warnings == ("md-2@1026",)  # ended: read at once


def test_the_batcher_thread_takes_batches_ahead_of_looks_on_the_real_clock() -> None:
    recorder = Recorder()
    b = LookBatcher(NullProvider(), ttl=2.0, clock=time.monotonic, collect=recorder, tick=1.0, wall=time.time)
    b.start()
    try:
        started = time.monotonic()
        b.snapshot(md(0), 30.0, interval=3.0)  # alone; due again in 3 s, so batched from 2 s on
        while b.counts.batches == 0 and time.monotonic() - started < 10.0:
            time.sleep(0.05)
        again = b.snapshot(md(0), 30.0 + time.monotonic() - started, interval=3.0)
    finally:
        assert b.stop(timeout=10)
    assert b.counts.batches >= 1 and b.counts.served == 1 and b.counts.alone == 1
    assert again.warnings[0].startswith("md-0@") and len(recorder.batches) == 2


def test_the_operator_batches_within_the_reconcile_interval_unless_told_otherwise() -> None:
    assert OperatorSettings.from_env({}).batch_window == 10.0
    assert OperatorSettings.from_env({"MLROLLOUT_RECONCILE_INTERVAL": "5"}).batch_window == 5.0
    assert OperatorSettings.from_env({"MLROLLOUT_ANALYSIS_BATCH_WINDOW": ""}).batch_window == 10.0  # the chart's null
    assert OperatorSettings.from_env({"MLROLLOUT_ANALYSIS_BATCH_WINDOW": "20"}).batch_window == 20.0
    assert OperatorSettings.from_env({"MLROLLOUT_ANALYSIS_BATCH_WINDOW": "0"}).batch_window == 0.0
    batched = source_from("http://127.0.0.1:9", "", 10.0)
    assert isinstance(batched, PrometheusVerdicts) and batched.batcher is not None
    batched.close()
    alone = source_from("http://127.0.0.1:9", "", 0.0)
    assert isinstance(alone, PrometheusVerdicts) and alone.batcher is None
    alone.close()  # nothing to stop


def test_a_batched_look_at_an_unreachable_prometheus_is_inconclusive_saying_why() -> None:
    verdicts = PrometheusVerdicts("http://127.0.0.1:9", batch_ttl=10.0)
    with contextlib.closing(verdicts):
        result = verdicts.look(md(0), policy(), 60, StepEvidence())
    assert result.verdict == "inconclusive"
    assert result.reason == "no evidence: Prometheus at http://127.0.0.1:9 is unreachable: Connection refused"


@dataclass
class FailingFor:
    """collect_snapshots answering every look of a batch with an error (as when its union failed), or raising."""

    error: str | None = "Prometheus at http://x refused the query: another look's"
    raises: bool = False
    calls: list[list[str]] = field(default_factory=list)

    def __call__(self, provider: MetricsProvider, looks: Sequence[LookRequest], at: float, _: int) -> list[Snapshot]:
        self.calls.append(names(list(looks)))
        if len(looks) == 1:  # taken alone: its own answer
            return [Snapshot(NO_COUNTS, NO_COUNTS, looks[0].window_seconds)]
        if self.raises:
            raise RuntimeError("a bug in one look's snapshot")
        return [Snapshot.failed(self.error or "") for _ in looks]


def test_a_batched_snapshot_with_an_error_is_never_read_the_look_asks_alone() -> None:
    clock, failing = Clock(), FailingFor()
    b = LookBatcher(NullProvider(), ttl=10.0, clock=clock, collect=failing)
    first_looks(b, clock, 2)
    clock.now = 1031.0
    b.prefetch()
    assert failing.calls[-1] == ["md-0", "md-1"]
    got = b.snapshot(md(0), 61.0, interval=30.0)
    assert got.error is None  # its own answer, not the batch's (another look's) error
    assert failing.calls[-1] == ["md-0"] and b.counts.served == 0 and b.counts.alone == 3


def test_a_batch_that_raises_is_not_taken_again_every_second_and_its_looks_go_alone() -> None:
    clock, failing = Clock(), FailingFor(raises=True)
    b = LookBatcher(NullProvider(), ttl=10.0, clock=clock, collect=failing)
    first_looks(b, clock, 2)
    clock.now = 1031.0
    b.prefetch()
    calls = len(failing.calls)
    clock.now = 1032.0
    b.prefetch()
    assert len(failing.calls) == calls  # its members count as served: no batch again before their looks
    assert b.snapshot(md(0), 62.0, interval=30.0).error is None and failing.calls[-1] == ["md-0"]


def test_a_model_deployment_deleted_while_its_batch_runs_leaves_nothing_behind() -> None:
    clock = Clock()
    b: LookBatcher

    def collect(provider: MetricsProvider, looks: Sequence[LookRequest], at: float, n: int) -> list[Snapshot]:
        if len(looks) > 1:
            b.forget("ns", "md-0")  # deleted while the batch is in flight
        return [Snapshot(NO_COUNTS, NO_COUNTS, x.window_seconds) for x in looks]

    b = LookBatcher(NullProvider(), ttl=10.0, clock=clock, collect=collect)
    first_looks(b, clock, 2)
    clock.now = 1031.0
    b.prefetch()
    assert ("ns", "md-0") not in b._taken and ("ns", "md-1") in b._taken


def test_a_window_larger_than_the_tick_is_clamped_to_the_tick() -> None:
    """A 30 s window with a 10 s tick would start batches 15 s ahead (a look would read a snapshot older than
    a tick) and let a look wait 15 s for its batch, past its next tick: the window in force is the tick."""
    clock, rec = Clock(), Recorder()
    b = LookBatcher(NullProvider(), ttl=30.0, clock=clock, collect=rec, tick=10.0)
    assert (b.ttl, b.lead, b.max_wait) == (10.0, 5.0, 5.0)
    first_looks(b, clock, 1)  # at 1000: due again at 1030
    clock.now = 1016.0  # 14 s ahead: more than a tick before the look
    b.prefetch()
    assert [at for at, _ in rec.batches] == [1000.0]  # the first look, alone; no batch yet
    clock.now = 1025.0
    b.prefetch()
    assert [at for at, _ in rec.batches] == [1000.0, 1025.0]
    clock.now = 1030.0
    assert b.snapshot(md(0), 60.0, interval=30.0).warnings == ("md-0@1025",) and b.counts.served == 1
    assert clamp_window(30.0, 10.0) == 10.0 and clamp_window(5.0, 10.0) == 5.0 and clamp_window(30.0, 0.0) == 30.0
    explicit = LookBatcher(NullProvider(), ttl=30.0, clock=clock, collect=rec, tick=10.0, lead=20.0, max_wait=20.0)
    assert (explicit.lead, explicit.max_wait) == (10.0, 10.0)


def test_freshness_is_judged_on_the_monotonic_clock_and_queries_asked_at_the_wall_clock() -> None:
    """The wall clock steps back an hour (NTP) between a look and its batch: the batch is still taken a lead
    ahead and read as fresh, and its queries are asked at the wall clock's instant (Prometheus' time)."""
    mono, wall, rec = Clock(1000.0), Clock(1_700_000_000.0), Recorder()
    b = LookBatcher(NullProvider(), ttl=10.0, clock=mono, collect=rec, tick=10.0, wall=wall)
    b.snapshot(md(0), 30.0, interval=30.0)  # alone, at the wall's instant
    assert rec.batches[-1][0] == 1_700_000_000.0
    mono.now, wall.now = 1026.0, 1_700_000_026.0 - 3600.0
    b.prefetch()
    assert rec.batches[-1][0] == 1_699_996_426.0 and b.counts.batches == 1
    mono.now, wall.now = 1030.0, 1_699_996_430.0
    got = b.snapshot(md(0), 60.0, interval=30.0)
    assert got.error is None and (b.counts.served, b.counts.alone) == (1, 1) and len(rec.batches) == 2  # the batch's
    assert rec.batches[-1][1][0].window_seconds == 56.0  # monotonic: from the step start (970) to the batch (1026)
    verdicts = PrometheusVerdicts("http://127.0.0.1:9", batch_ttl=10.0)
    with contextlib.closing(verdicts):
        assert verdicts.batcher is not None
        assert verdicts.batcher.clock is time.monotonic and verdicts.batcher.wall is time.time


def test_the_batcher_thread_stops_cleanly_and_may_start_again() -> None:
    b = LookBatcher(NullProvider(), ttl=2.0, clock=time.monotonic, collect=Recorder(), tick=1.0)
    b.start()
    assert b.running
    assert b.stop(timeout=10) and not b.running
    assert b.stop(timeout=10)  # idempotent
    b.start()
    assert b.running and b.stop(timeout=10) and not b.running
    assert not [t for t in threading.enumerate() if t.name == "mlrollout-lookbatch"]


def test_the_operator_cleanup_stops_the_batcher_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf's cleanup (the operator shutting down) stops the look batcher's thread."""
    verdicts = PrometheusVerdicts("http://127.0.0.1:9", batch_ttl=10.0)
    assert verdicts.batcher is not None and verdicts.batcher.running
    monkeypatch.setitem(handlers._STATE, "reconciler", SimpleNamespace(verdicts=verdicts))
    cast(Callable[..., None], handlers.cleanup)()
    assert not verdicts.batcher.running
