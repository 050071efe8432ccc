"""Looks due about the same time share Prometheus requests (issue 19: fewer round-trips per interval).

Each ModelDeployment's timer passes on its own, so its looks are spread over the reconcile interval and
never meet by themselves. The first look after a quiet spell takes a batch: its own snapshot and those of
every ModelDeployment whose next look is due within ``ttl`` (known from its previous look: target, step
start, analysis interval), all at one instant by
:func:`mlrollout.analysis.batch.collect_snapshots` (built-in queries share unions). A later look reads
its snapshot from the batch when the batch's instant is at most ``ttl`` before the look's arrival, or
the look is a member of the batch running when it arrived (it waits for it: a batch that took longer
than ``ttl`` must not make each of its members take another), and it is for the same target and step;
otherwise it takes a batch itself. A look that arrives more than ``ttl`` after it was due, having
queued for one of kopf's threads in an overloaded operator, reads the batch taken for it when it was
due, unless that is more than an analysis interval old: without this, at N = 1,000 on a saturated
machine every batch's members arrived too late for it and took batches of their own. So a look judges
evidence about ``ttl`` (the reconcile interval: less than one scrape interval) older than its pass when
the operator keeps up, and Prometheus sees about ``interval / ttl`` batches per analysis interval, each
a request per about 40 queries (analysis/batch.py says why not more). Each snapshot is the one its look
would have taken alone at the batch's instant.

Bookkeeping only here (a clock is passed in); the I/O is the provider's, behind the analysis' seam.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mlrollout.analysis.batch import MAX_UNION_CHARS, LookRequest, collect_snapshots
from mlrollout.analysis.collect import AnalysisTarget
from mlrollout.analysis.provider import MetricsProvider
from mlrollout.analysis.snapshot import Snapshot
from mlrollout.api.rolloutpolicy import CustomMetric

__all__ = ["LookBatcher"]

STEP_START_TOLERANCE = 1.0
"""Seconds two looks' step starts may differ and still be the same step (each is its pass's clock minus
the window it computed, so they differ by the passes' clock readings)."""


MAX_MEMBERS = 100
"""Looks in one batch at most (about 2,200 queries, 55 requests): a batch's first look waits for all of
it, so it stays seconds long however many are due."""


@dataclass(frozen=True)
class _Known:
    """What one ModelDeployment's last look asked: enough to take its next look in someone else's batch."""

    what: tuple[AnalysisTarget, tuple[CustomMetric, ...], bool]
    step_start: float
    interval: float
    last_look: float


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


class LookBatcher:
    """Snapshots for looks, shared between the looks due within ``ttl`` of each other. Thread-safe.
    Batches run outside the lock, several at once with disjoint members (as looks alone run on all of
    kopf's threads), each of at most ``max_members`` looks, so none blocks the looks that are not in it."""

    def __init__(
        self,
        provider: MetricsProvider,
        ttl: float,
        clock: Callable[[], float],
        max_chars: int = MAX_UNION_CHARS,
        collect: Callable[[MetricsProvider, Sequence[LookRequest], float, int], list[Snapshot]] = collect_snapshots,
        max_members: int = MAX_MEMBERS,
    ) -> None:
        self.provider = provider
        self.ttl = ttl
        self.clock = clock
        self.max_chars = max_chars
        self.max_members = max_members
        self._collect = collect
        self._known: dict[tuple[str, str], _Known] = {}
        self._taken: dict[tuple[str, str], _Taken] = {}
        self._running: dict[tuple[str, str], _Running] = {}  # members of the batches in flight
        self._lock = threading.Lock()
        self.batches = 0  # batches taken, for the bench and the tests

    def snapshot(
        self,
        target: AnalysisTarget,
        window_seconds: float,
        interval: float,
        custom: Sequence[CustomMetric] = (),
        quality: bool = False,
    ) -> Snapshot:
        """The snapshot of this look: from a batch taken at most ``ttl`` before it arrived, or from the
        batch with it in flight when it arrived (waited for), or from a new batch."""
        key = (target.namespace, target.model_deployment)
        what = (target, tuple(custom), quality)
        arrived = self.clock()
        step_start = arrived - window_seconds
        with self._lock:
            previous = self._known.get(key)
            self._known[key] = _Known(what, step_start, interval, arrived)
            running = self._running.get(key)
        # when the look was due: a look that queued for a worker thread (an overloaded operator) may read
        # the batch taken for it then, if that is less than one analysis interval old
        due = previous.last_look + previous.interval if previous is not None else arrived
        since = due if arrived - due > self.ttl else arrived  # late by more than a tick: overloaded
        if running is not None:
            running.done.wait()
        with self._lock:
            taken = self._taken.pop(key, None)
            if (
                taken is not None
                and taken.what == what
                and abs(taken.step_start - step_start) <= STEP_START_TOLERANCE
                and arrived - taken.at <= max(interval, self.ttl)
                and (taken.at >= since - self.ttl or (running is not None and taken.at >= running.at))
            ):
                return taken.snapshot
            now = self.clock()
            members = [key, *self._due(key, now)[: self.max_members - 1]]
            looks = [self._request(self._known[k], now) for k in members]
            batch = _Running(now)
            for k in members:
                self._running[k] = batch
            self.batches += 1
        snapshots: list[Snapshot] = []
        try:
            snapshots = self._collect(self.provider, looks, now, self.max_chars)
        finally:
            with self._lock:
                for k, snap in zip(members[1:], snapshots[1:], strict=False):
                    known = self._known.get(k)
                    if known is not None:
                        self._taken[k] = _Taken(known.what, known.step_start, now, snap)
                for k in members:
                    if self._running.get(k) is batch:
                        del self._running[k]
                batch.done.set()
        return snapshots[0]

    def _due(self, key: tuple[str, str], now: float) -> list[tuple[str, str]]:
        """The others whose next look falls within ``ttl``; forgets those that stopped looking (their
        rollout ended: no look for two intervals and a ttl)."""
        due = []
        for k, known in list(self._known.items()):
            taken = self._taken.get(k)
            if k == key or k in self._running or (taken is not None and now - taken.at < self.ttl / 2):
                continue  # this look, one in a batch in flight, or one a batch served a moment ago
            next_look = known.last_look + known.interval
            if now - known.last_look > 2 * known.interval + self.ttl:
                del self._known[k]
                self._taken.pop(k, None)
            elif next_look <= now + self.ttl and known.step_start < now:
                due.append(k)
        return due

    @staticmethod
    def _request(known: _Known, now: float) -> LookRequest:
        target, custom, quality = known.what
        return LookRequest(target, max(now - known.step_start, 1.0), custom, quality)

    def forget(self, namespace: str, name: str) -> None:
        """A deleted ModelDeployment takes no more looks."""
        with self._lock:
            self._known.pop((namespace, name), None)
            self._taken.pop((namespace, name), None)
