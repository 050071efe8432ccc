"""Looks due about the same time share Prometheus requests (issue 19: fewer round-trips per interval).

Each ModelDeployment's timer passes on its own, so its looks are spread over the reconcile interval and
never meet by themselves. Each look tells the batcher what it asked (target, step start, analysis
interval), so the next one is known: expected at the first timer tick (``tick``, the reconcile interval)
one analysis interval after it. A thread of the batcher's own (not one of kopf's workers) takes those
next looks ahead of time, in batches: from ``lead`` seconds before they are expected, the known looks not
yet served go into one :func:`mlrollout.analysis.batch.collect_snapshots` at one instant (built-in
queries share unions), at most ``max_members`` a batch, earliest due first. A look then only reads: its
snapshot from the batch taken for it, when that batch's instant is at most ``ttl`` before the look was
expected (or arrived, if earlier: a look that queued for a worker thread in an overloaded operator reads
the batch taken for it) and at most an analysis interval before it arrived, and it is for the same target
and step. A look whose batch is still running waits for it at most ``max_wait`` seconds; a look with no
batch (the first of a rollout or step, a new candidate, a batch that failed, was late or took too long)
is taken alone, as one batch of one, on its own worker thread. So no worker thread waits for queries
other looks need beyond ``max_wait``, and the timers of the others never queue behind a batch (the
suspected reason the earlier batcher, run by the first look of a batch on its worker thread, took fewer
looks an interval than alone in the operator at N = 300; this one took at least as many:
docs/operator.md, "Scale").

A look judges evidence at most ``ttl`` older than the time it was expected (about ``lead`` older than its
pass when the operator keeps up: less than one scrape interval; a late look's, at most an interval), and
each snapshot is the one its look would have taken alone at the batch's instant (the window from its own
step start to that instant).

The window is at most the tick: a larger one would start batches more than a tick ahead and let a look
read a snapshot older than a tick, or wait for its batch past its tick (``lead``, ``max_wait`` and ``ttl``
follow the clamped window).

Bookkeeping here (clocks are passed in: ``clock``, monotonic, for every duration and freshness check, so a
wall-clock step cannot make a batch look fresh or stale; ``wall`` only for the instant the queries are
asked at; :meth:`LookBatcher.prefetch` is one step of the thread, which tests drive by hand); the I/O is
the provider's, behind the analysis' seam.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mlrollout.analysis.batch import MAX_UNION_CHARS, LookRequest, collect_snapshots
from mlrollout.analysis.collect import AnalysisTarget
from mlrollout.analysis.provider import MetricsProvider
from mlrollout.analysis.snapshot import Snapshot
from mlrollout.api.rolloutpolicy import CustomMetric

__all__ = ["LookBatcher", "clamp_window"]

log = logging.getLogger(__name__)

STEP_START_TOLERANCE = 1.0
"""Seconds two looks' step starts may differ and still be the same step (each is its pass's clock minus
the window it computed, so they differ by the passes' clock readings)."""

MAX_MEMBERS = 100
"""Looks in one batch at most (about 2,200 queries, 55 requests): the batches of one interval follow
each other on the batcher's thread, so a batch stays seconds long however many are due."""

IDLE_POLL = 1.0
"""Seconds the batcher's thread sleeps at most between two checks for looks coming due."""

REPORT_EVERY = 60.0
"""Seconds at least between two log lines of how looks were served (read from a batch, or alone)."""

Collect = Callable[[MetricsProvider, Sequence[LookRequest], float, int], list[Snapshot]]


@dataclass(frozen=True)
class _Known:
    """What one ModelDeployment's last look asked: enough to take its next look ahead of time."""

    what: tuple[AnalysisTarget, tuple[CustomMetric, ...], bool]
    step_start: float
    interval: float
    last_look: float
    due: float  # when its next look is expected: the first timer tick one interval after this one


@dataclass(frozen=True)
class _Taken:
    what: tuple[AnalysisTarget, tuple[CustomMetric, ...], bool]
    step_start: float
    at: float
    snapshot: Snapshot


@dataclass
class _Running:
    """A batch in flight: its instant, and the event its members wait on."""

    at: float
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class Counts:
    """How looks were served, for the bench and the tests."""

    batches: int = 0  # batches taken ahead of time
    batched_looks: int = 0  # looks in them
    served: int = 0  # looks that read their snapshot from a batch
    waited: int = 0  # of those, looks that waited for their batch to finish
    alone: int = 0  # looks taken alone (no batch, a late one, or one that took longer than max_wait)


class LookBatcher:
    """Snapshots for looks, taken ahead of time in shared batches by a thread of its own. Thread-safe."""

    def __init__(
        self,
        provider: MetricsProvider,
        ttl: float,
        clock: Callable[[], float],
        max_chars: int = MAX_UNION_CHARS,
        collect: Collect = collect_snapshots,
        max_members: int = MAX_MEMBERS,
        lead: float | None = None,
        max_wait: float | None = None,
        tick: float | None = None,
        wall: Callable[[], float] | None = None,
    ) -> None:
        self.provider = provider
        self.tick = ttl if tick is None else tick  # the reconcile interval: looks come at its ticks
        self.ttl = clamp_window(ttl, self.tick)
        self.clock = clock  # monotonic: durations and freshness
        self.wall = clock if wall is None else wall  # the instant queries are asked at (Prometheus' time)
        self.max_chars = max_chars
        self.max_members = max_members
        # a batch starts this long before its looks are due, so it is read, not waited for, by looks on time
        self.lead = self.ttl / 2 if lead is None else min(lead, self.ttl)
        self.max_wait = self.ttl / 2 if max_wait is None else min(max_wait, self.ttl)
        self._collect = collect
        self._known: dict[tuple[str, str], _Known] = {}
        self._taken: dict[tuple[str, str], _Taken] = {}
        self._running: dict[tuple[str, str], _Running] = {}  # members of the batch in flight
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.counts = Counts()

    @property
    def batches(self) -> int:
        """Batches taken ahead of time."""
        return self.counts.batches

    # -- the looks (kopf's worker threads) -----------------------------------------------------------------

    def snapshot(
        self,
        target: AnalysisTarget,
        window_seconds: float,
        interval: float,
        custom: Sequence[CustomMetric] = (),
        quality: bool = False,
    ) -> Snapshot:
        """The snapshot of this look: from the batch taken for it, or alone."""
        key = (target.namespace, target.model_deployment)
        what = (target, tuple(custom), quality)
        arrived = self.clock()
        step_start = arrived - window_seconds
        with self._lock:
            previous = self._known.get(key)
            self._known[key] = _Known(what, step_start, interval, arrived, arrived + self._next(interval))
            running = self._running.get(key)
        waited = False
        if running is not None:
            waited = running.done.wait(self.max_wait)
        # a snapshot at most ttl older than the look was expected (a look that queued for one of kopf's
        # threads in an overloaded operator reads the batch taken for it then), and never an interval old
        since = arrived if previous is None else min(arrived, previous.due)
        with self._lock:
            taken = self._taken.pop(key, None)
            if (
                taken is not None
                and taken.what == what
                and abs(taken.step_start - step_start) <= STEP_START_TOLERANCE
                and (previous is None or taken.at > previous.last_look)
                and taken.at >= since - self.ttl
                and arrived - taken.at <= max(interval, self.ttl)
                # a batch's error may be another look's (its union failed, its request was refused after
                # another failed): never read, the look asks alone and gets its own answer or error
                and taken.snapshot.error is None
            ):
                self.counts.served += 1
                self.counts.waited += waited
                return taken.snapshot
            self.counts.alone += 1
            now, at = self.clock(), self.wall()
        return self._collect(self.provider, [LookRequest(target, max(now - step_start, 1.0), what[1], quality)], at,
                             self.max_chars)[0]  # fmt: skip

    def forget(self, namespace: str, name: str) -> None:
        """A deleted ModelDeployment takes no more looks."""
        with self._lock:
            self._known.pop((namespace, name), None)
            self._taken.pop((namespace, name), None)

    # -- the batches (the batcher's thread) ----------------------------------------------------------------

    def start(self) -> None:
        """Starts the thread that takes batches (once until :meth:`stop`; a daemon, so a process that never
        stops it still exits)."""
        with self._lock:
            if self._thread is not None:
                return
            self._stopped.clear()
            self._thread = threading.Thread(target=self._run, name="mlrollout-lookbatch", daemon=True)
            thread = self._thread
        thread.start()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stops the thread after the batch in flight (its looks still read it); looks go on, alone.
        Idempotent. False if the thread did not end within `timeout` (a batch stuck on Prometheus)."""
        with self._lock:
            thread, self._thread = self._thread, None
        self._stopped.set()
        self._wake.set()
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def running(self) -> bool:
        """The batcher's thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _run(self) -> None:
        reported, last = self.clock(), Counts()
        while not self._stopped.is_set():
            if self.clock() - reported >= REPORT_EVERY and self.counts != last:
                reported, c = self.clock(), self.counts
                last = Counts(**vars(c))
                log.info("looks so far: %d read from %d batches taken ahead (%d waited for theirs), %d taken alone",
                         c.served, c.batches, c.waited, c.alone)  # fmt: skip
            try:
                pause = self.prefetch()
            except Exception:  # never lose the thread: looks fall back to alone meanwhile
                log.exception("a batch of looks failed")
                pause = IDLE_POLL
            if pause > 0:
                self._wake.wait(pause)
                self._wake.clear()

    def prefetch(self) -> float:
        """Takes one batch of the looks coming due within ``lead`` (earliest due first), if any; returns
        the seconds until the next one comes due (0: more are due now)."""
        now = self.clock()
        with self._lock:
            due, wait = self._due(now)
            members = due[: self.max_members]
            if not members:
                return min(wait, IDLE_POLL)
            knowns = [self._known[k] for k in members]
            looks = [self._request(known, now) for known in knowns]
            batch = _Running(now)
            for k in members:
                self._running[k] = batch
            self.counts.batches += 1
            self.counts.batched_looks += len(members)
            at = self.wall()
        snapshots: list[Snapshot] = []
        try:
            snapshots = self._collect(self.provider, looks, at, self.max_chars)
        except Exception:  # these looks are served (so not batched again every second) and taken alone
            log.exception("a batch of %d looks failed", len(members))
            snapshots = [Snapshot.failed("the batch taken for this look failed")] * len(members)
        finally:
            with self._lock:
                for k, known, snap in zip(members, knowns, snapshots, strict=False):
                    if k in self._known:  # not forgotten (deleted) while the batch ran
                        self._taken[k] = _Taken(known.what, known.step_start, now, snap)
                for k in members:
                    if self._running.get(k) is batch:
                        del self._running[k]
                batch.done.set()
        return 0.0 if len(due) > len(members) else min(max(wait, 0.0), IDLE_POLL)

    def _due(self, now: float) -> tuple[list[tuple[str, str]], float]:
        """The looks due within ``lead`` and not served yet, earliest first, and the seconds until the next
        of the others is; forgets those that stopped looking (their rollout ended: no look for two
        intervals and a ttl)."""
        due: list[tuple[float, tuple[str, str]]] = []
        wait = IDLE_POLL
        for k, known in list(self._known.items()):
            taken = self._taken.get(k)
            if now - known.last_look > 2 * known.interval + self.ttl:
                del self._known[k]
                self._taken.pop(k, None)
            elif k in self._running or (taken is not None and taken.at > known.last_look):
                continue  # in the batch in flight, or served already
            elif known.due - self.lead <= now and known.step_start < now:
                due.append((known.due, k))
            else:
                wait = min(wait, known.due - self.lead - now)
        due.sort()
        return [k for _, k in due], wait

    def _next(self, interval: float) -> float:
        """Seconds from a look to the next: the first tick at least ``interval`` later."""
        if self.tick <= 0:
            return interval
        return max(math.ceil(interval / self.tick - 1e-6), 1) * self.tick

    @staticmethod
    def _request(known: _Known, now: float) -> LookRequest:
        target, custom, quality = known.what
        return LookRequest(target, max(now - known.step_start, 1.0), custom, quality)


def clamp_window(window: float, tick: float) -> float:
    """The batch window in force: at most one tick (a look comes every tick at most; a larger window would
    batch looks more than a tick ahead and read snapshots older than a tick). No tick (0): as given."""
    return min(window, tick) if tick > 0 else window
