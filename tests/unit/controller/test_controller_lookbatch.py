"""The look batcher's bookkeeping (controller/lookbatch.py) on a scripted clock: who joins a batch, when a
look reads its snapshot from one, and when it takes its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from tests.unit.rollout.world import policy

from mlrollout.analysis import AnalysisTarget, MetricsProvider, NullProvider
from mlrollout.analysis.batch import LookRequest
from mlrollout.analysis.carry import StepEvidence
from mlrollout.analysis.snapshot import NO_COUNTS, Snapshot
from mlrollout.controller.lookbatch import LookBatcher
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


def batcher() -> tuple[LookBatcher, Clock, Recorder]:
    clock, recorder = Clock(), Recorder()
    return LookBatcher(NullProvider(), ttl=10.0, clock=clock, collect=recorder), clock, recorder


def names(looks: list[LookRequest]) -> list[str]:
    return [x.target.model_deployment for x in looks]


def test_looks_due_within_the_window_share_one_batch_at_its_instant() -> None:
    b, clock, rec = batcher()
    for i in range(3):  # first looks, spread over the reconcile interval: each alone (nothing known yet)
        b.snapshot(md(i), 30.0 + i, interval=30.0)
        clock.now += 3.0
    assert len(rec.batches) == 3
    clock.now = 1000.0 + 30.0  # md-0 due again; md-1 and md-2 are due within 10 s
    first = b.snapshot(md(0), 60.0, interval=30.0)
    assert names(rec.batches[-1][1]) == ["md-0", "md-1", "md-2"]
    # each member's window runs from its own step start to the batch's instant
    assert [x.window_seconds for x in rec.batches[-1][1]] == [60.0, 58.0, 56.0]
    clock.now += 3.0
    second = b.snapshot(md(1), 61.0, interval=30.0)
    clock.now += 3.0
    third = b.snapshot(md(2), 61.0, interval=30.0)
    assert len(rec.batches) == 4  # md-1 and md-2 read theirs from md-0's batch
    assert first.warnings == ("md-0@1030",) and second.warnings == ("md-1@1030",) and third.warnings == ("md-2@1030",)
    assert second.elapsed_seconds == 58.0


def test_a_look_after_the_window_or_of_another_step_takes_its_own_batch() -> None:
    b, clock, rec = batcher()
    b.snapshot(md(0), 30.0, interval=30.0)
    clock.now += 5.0
    b.snapshot(md(1), 30.0, interval=30.0)  # due again at 1035
    clock.now = 1030.0
    b.snapshot(md(0), 60.0, interval=30.0)  # md-1 joins
    assert len(rec.batches) == 3
    clock.now += 10.5  # older than the window, and md-1 is on time: not served
    b.snapshot(md(1), 65.5, interval=30.0)
    assert len(rec.batches) == 4 and rec.batches[-1][0] == clock.now
    b2, clock2, rec2 = batcher()
    b2.snapshot(md(0), 30.0, interval=30.0)
    b2.snapshot(md(1), 30.0, interval=30.0)
    clock2.now += 30.0
    b2.snapshot(md(0), 60.0, interval=30.0)
    clock2.now += 2.0
    b2.snapshot(md(1, revision="r3"), 2.0, interval=30.0)  # a new candidate meanwhile: a batch of its own
    assert len(rec2.batches) == 4 and names(rec2.batches[-1][1])[0] == "md-1"


def test_a_look_not_due_soon_stays_out_and_one_that_stopped_is_forgotten() -> None:
    b, clock, rec = batcher()
    b.snapshot(md(0), 30.0, interval=30.0)
    b.snapshot(md(1), 30.0, interval=300.0)  # due in five minutes
    clock.now += 30.0
    b.snapshot(md(0), 60.0, interval=30.0)
    assert names(rec.batches[-1][1]) == ["md-0"]
    b.snapshot(md(2), 5.0, interval=30.0)
    clock.now += 30.0 * 2 + 11.0  # md-2 took no look for two intervals and a window: its rollout ended
    b.snapshot(md(0), 131.0, interval=30.0)
    assert "md-2" not in names(rec.batches[-1][1])
    b.forget("ns", "md-1")
    clock.now += 300.0
    b.snapshot(md(0), 431.0, interval=30.0)
    assert names(rec.batches[-1][1]) == ["md-0"]


def test_the_operator_batches_only_when_told_to() -> None:
    assert OperatorSettings.from_env({"MLROLLOUT_RECONCILE_INTERVAL": "5"}).batch_window == 0.0
    assert OperatorSettings.from_env({"MLROLLOUT_ANALYSIS_BATCH_WINDOW": "10"}).batch_window == 10.0
    assert OperatorSettings(analysis_batch_window=None, reconcile_interval=5.0).batch_window == 5.0
    batched = source_from("http://127.0.0.1:9", "", 10.0)
    assert isinstance(batched, PrometheusVerdicts) and batched.batcher is not None
    alone = source_from("http://127.0.0.1:9", "", 0.0)
    assert isinstance(alone, PrometheusVerdicts) and alone.batcher is None


def test_a_batched_look_at_an_unreachable_prometheus_is_inconclusive_saying_why() -> None:
    verdicts = PrometheusVerdicts("http://127.0.0.1:9", batch_ttl=10.0)
    result = verdicts.look(md(0), policy(), 60, StepEvidence())
    assert result.verdict == "inconclusive"
    assert result.reason == "no evidence: Prometheus at http://127.0.0.1:9 is unreachable: Connection refused"


def test_a_member_of_a_long_batch_reads_its_snapshot_from_it() -> None:
    """A look arriving while a batch with it runs waits for that batch, however long it takes: otherwise
    each member queued behind a slow batch would take a batch of its own, and those would queue the next
    looks (a cascade, seen at N = 1,000 before this rule)."""
    clock, release, entered = Clock(), threading.Event(), threading.Event()
    recorder = Recorder()

    def slow(provider: MetricsProvider, looks: Sequence[LookRequest], at: float, limit: int) -> list[Snapshot]:
        if len(recorder.batches) == 2:  # the third batch: md-0's, which md-1 waits for
            entered.set()
            release.wait(10)
        return recorder(provider, looks, at, limit)

    b = LookBatcher(NullProvider(), ttl=10.0, clock=clock, collect=slow)
    b.snapshot(md(0), 30.0, interval=30.0)
    b.snapshot(md(1), 30.0, interval=30.0)
    clock.now += 30.0
    first = threading.Thread(target=b.snapshot, args=(md(0), 60.0, 30.0))
    first.start()
    assert entered.wait(10)
    clock.now += 12.0  # md-1 arrives more than a window after the batch's instant, while it runs
    got: list[Snapshot] = []
    second = threading.Thread(target=lambda: got.append(b.snapshot(md(1), 72.0, 30.0)))
    second.start()
    time.sleep(0.2)  # md-1 waits for the lock
    clock.now += 15.0  # the batch took 15 s
    release.set()
    first.join(10)
    second.join(10)
    assert len(recorder.batches) == 3
    assert got[0].warnings == ("md-1@1030",)


def test_a_batch_holds_at_most_max_members_looks() -> None:
    clock, recorder = Clock(), Recorder()
    b = LookBatcher(NullProvider(), ttl=10.0, clock=clock, collect=recorder, max_members=3)
    for i in range(5):
        b.snapshot(md(i), 30.0, interval=30.0)
    clock.now += 30.0
    b.snapshot(md(0), 60.0, interval=30.0)
    assert names(recorder.batches[-1][1]) == ["md-0", "md-1", "md-2"]
    b.snapshot(md(3), 60.0, interval=30.0)  # not in it: a batch of its own, with the one left
    assert names(recorder.batches[-1][1]) == ["md-3", "md-4"]
    b.snapshot(md(4), 60.0, interval=30.0)
    b.snapshot(md(1), 60.0, interval=30.0)
    assert len(recorder.batches) == 5 + 2


def test_a_look_late_by_more_than_a_tick_reads_the_batch_taken_when_it_was_due() -> None:
    """An overloaded operator: the look queued for a worker thread; the batch taken for it is used."""
    b, clock, rec = batcher()
    b.snapshot(md(0), 30.0, interval=30.0)
    clock.now += 5.0
    b.snapshot(md(1), 30.0, interval=30.0)  # due again at 1035
    clock.now = 1030.0
    b.snapshot(md(0), 60.0, interval=30.0)  # md-1 joins
    clock.now = 1046.0  # 11 s after it was due
    late = b.snapshot(md(1), 71.0, interval=30.0)
    assert len(rec.batches) == 3 and late.warnings == ("md-1@1030",)
    b.snapshot(md(0), 76.0, interval=30.0)
    clock.now = 1030.0 + 30.0 + 15.0  # later still, but the snapshot would be more than an interval old
    b.snapshot(md(1), 75.0 + 25.0, interval=30.0)
    assert rec.batches[-1][0] == clock.now
