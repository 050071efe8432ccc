"""Many looks' snapshots from few requests: the built-in queries of every look share unions (issue 19).

Each look asks 12-22 queries, and each carries its own window (the time since its step started), so no
single query with one window can serve every ModelDeployment. What they can share is the request: the
built-in queries (:class:`~mlrollout.analysis.queries.BuiltIn`, instant vectors of checked selectors) of
every look evaluated at the same time go into one PromQL union, ``label_replace(q1, "<member>", "0", "",
"") or label_replace(q2, "<member>", "1", "", "") or ...``, and each look reads back the rows of its member.
The member label keeps every member's rows apart (an ``or`` keeps a right-hand row only when no left-hand
row has its labels), so each member's rows are exactly the rows its query alone returns: the same
expression evaluated at the same time by the same Prometheus.

:func:`collect_snapshots` runs the unchanged :func:`~mlrollout.analysis.collect.collect_snapshot` of every
look against the answers gathered so far; the queries it asks that have no answer yet are asked together
(a round), and it runs again. The first round finds nearly every query (an unanswered query reads as no
data, and collect asks the same queries with no data as with data but for the labelled pairs' details);
the second the rest; a third is rare. A look whose round would ask nothing new is done, with the snapshot
the individual queries would give. A failed request fails its members' looks (and, so a Prometheus that is
down costs a few timeouts and not one per request, the requests not yet sent): ``inconclusive``, as today.
Custom queries (user PromQL: a scalar, or a syntax error, would fail a whole union) are asked one by one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mlrollout.analysis.collect import AnalysisTarget, collect_snapshot
from mlrollout.analysis.provider import Measurement, MetricsProvider, Sample
from mlrollout.analysis.queries import BuiltIn
from mlrollout.analysis.snapshot import Snapshot
from mlrollout.api.rolloutpolicy import CustomMetric

__all__ = [
    "MAX_UNION_CHARS",
    "MEMBER_LABEL",
    "PARALLEL",
    "LookRequest",
    "ask_all",
    "collect_snapshots",
    "split",
    "union",
]

MEMBER_LABEL = "mlrollout_batch_member"
"""The label that tells a union's members apart; no series of the metrics contract carries it."""

MAX_UNION_CHARS = 25_000
"""PromQL characters per union request: about 40 built-in queries. Prometheus' cost of a union grows faster
than its members' (measured on Prometheus 2.42, 2,200 queries of 100 looks: one request each 2.6 CPU s;
unions of 10 k characters 1.3 s, 25 k 1.5 s, 50 k 1.8 s, 100 k 2.7 s, 200 k 5.4 s), so unions stay small:
about 40 times fewer requests than alone at half the CPU."""

MAX_ROUNDS = 4

PARALLEL = 4
"""Union requests in flight at once: Prometheus evaluates queries concurrently (20 by default), and looks
taken alone run on all of kopf's worker threads; a batch sent one request at a time would be slower than
the looks it replaces."""


@dataclass(frozen=True)
class LookRequest:
    """One look to take: what :func:`collect_snapshot` needs besides the provider and the time."""

    target: AnalysisTarget
    window_seconds: float
    custom: tuple[CustomMetric, ...] = ()
    quality: bool = False


def union(queries: Sequence[str]) -> str:
    """The members as one query: each tagged with its index in :data:`MEMBER_LABEL`, joined by ``or`` in a
    balanced tree (a chain would make Prometheus hash the growing left side once per member)."""
    if not queries:
        raise ValueError("a union needs at least one query")
    parts = [f'label_replace({q}, "{MEMBER_LABEL}", "{i}", "", "")' for i, q in enumerate(queries)]
    while len(parts) > 1:
        pairs = [f"({parts[i]}) or ({parts[i + 1]})" for i in range(0, len(parts) - 1, 2)]
        parts = pairs + ([parts[-1]] if len(parts) % 2 else [])
    return parts[0]


def split(answer: Measurement, members: int) -> list[Measurement]:
    """A union's answer as its members' answers, the member label removed; an error is every member's."""
    if answer.error is not None:
        return [Measurement(error=answer.error) for _ in range(members)]
    rows: list[list[Sample]] = [[] for _ in range(members)]
    for sample in answer.samples:
        index = sample.labels.get(MEMBER_LABEL, "")
        if not index.isdigit() or int(index) >= members:
            error = f"unexpected prometheus answer: a union row without a member ({dict(sample.labels)})"
            return [Measurement(error=error) for _ in range(members)]
        labels = {k: v for k, v in sample.labels.items() if k != MEMBER_LABEL}
        rows[int(index)].append(Sample(labels, sample.value))
    return [Measurement(tuple(r)) for r in rows]


def _chunks(queries: Sequence[str], max_chars: int) -> list[list[str]]:
    out: list[list[str]] = []
    size = max_chars
    for q in queries:
        if size + len(q) > max_chars:
            out.append([])
            size = 0
        out[-1].append(q)
        size += len(q) + 60  # the label_replace and or around it
    return out


def ask_all(
    provider: MetricsProvider,
    queries: Iterable[str],
    at: float | None,
    max_chars: int = MAX_UNION_CHARS,
    parallel: int = PARALLEL,
) -> dict[str, Measurement]:
    """Every query's answer at ``at``: built-in ones in unions, others one by one, each distinct query once,
    ``parallel`` requests at a time. After a failed request of built-in queries the requests not yet sent
    are not sent: they fail with the same error (so a Prometheus that is down sees at most ``parallel``
    attempts). Built-in ones go first, and a custom query's failure is its own (Prometheus may refuse that
    one query: a parse error, many-to-many matching): it never fails the other queries of the batch."""
    distinct = list(dict.fromkeys(queries))
    batches = _chunks([q for q in distinct if isinstance(q, BuiltIn)], max_chars)
    batches += [[q] for q in distinct if not isinstance(q, BuiltIn)]
    failed: list[str] = []
    guard = threading.Lock()

    def send(batch: list[str]) -> list[Measurement]:
        with guard:
            if failed:
                return [Measurement(error=failed[0]) for _ in batch]
        if len(batch) == 1:
            results = [provider.query(batch[0], at)]
        else:
            results = split(provider.query(union(batch), at), len(batch))
        error = next((m.error for m in results if m.error is not None), None)
        if error is not None and isinstance(batch[0], BuiltIn):
            with guard:
                failed.append(error)
        return results

    if parallel <= 1 or len(batches) <= 1:
        answered = [send(b) for b in batches]
    else:
        with ThreadPoolExecutor(min(parallel, len(batches)), thread_name_prefix="mlrollout-batch") as pool:
            answered = list(pool.map(send, batches))
    answers: dict[str, Measurement] = {}
    for batch, results in zip(batches, answered, strict=True):
        answers.update(zip(batch, results, strict=True))
    return answers


@dataclass
class _Replay:
    """Answers from what was asked already; records the rest and answers them with no data for now."""

    answers: dict[str, Measurement]
    missed: list[str] = field(default_factory=list)

    def query(self, promql: str, at: float | None = None) -> Measurement:
        answer = self.answers.get(promql)
        if answer is None:
            self.missed.append(promql)
            return Measurement()
        return answer


def collect_snapshots(
    provider: MetricsProvider,
    looks: Sequence[LookRequest],
    at: float,
    max_chars: int = MAX_UNION_CHARS,
    parallel: int = PARALLEL,
) -> list[Snapshot]:
    """Each look's snapshot at ``at``, as :func:`collect_snapshot` would take it alone at ``at``."""
    answers: dict[str, Measurement] = {}
    done: dict[int, Snapshot] = {}
    for rounds in range(MAX_ROUNDS + 1):
        wanted: list[str] = []
        for i, look in enumerate(looks):
            if i in done:
                continue
            replay = _Replay(answers)
            snapshot = collect_snapshot(
                replay, look.target, look.window_seconds, custom=look.custom, quality=look.quality, at=at
            )
            if replay.missed:
                wanted += replay.missed
            else:
                done[i] = snapshot
        if not wanted or rounds == MAX_ROUNDS:
            break
        answers.update(ask_all(provider, wanted, at, max_chars, parallel))
    for i, look in enumerate(looks):  # a look still asking after MAX_ROUNDS: on its own, never wrong
        if i not in done:
            done[i] = collect_snapshot(
                provider, look.target, look.window_seconds, custom=look.custom, quality=look.quality, at=at
            )
    return [done[i] for i in range(len(looks))]
