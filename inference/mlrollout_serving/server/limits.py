"""Connection limits of the HTTP layer: sizes, timeouts, the connection cap (pure decisions, no I/O).

The defaults follow nginx's (``large_client_header_buffers 4 8k``, ``client_header_timeout``,
``client_body_timeout``, ``send_timeout``, ``keepalive_timeout``), stricter where a model server loses
nothing by it: clients send a request's head in one packet and its body at once. ``http.py`` classifies
each connection into a :class:`Phase`; the functions here say when a phase has lasted too long and which
connections to close first when the cap is reached.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

LINGER_SECONDS = 5.0
"""After an error reply that ends a connection, how long its unread input is still read and dropped (so the
client reads the reply instead of a reset); nginx's ``lingering_timeout``."""
FD_MARGIN = 32
"""File descriptors kept free beside the ones open at start (a model download, the executor, logs)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may hold of the server. A timeout of 0 never expires."""

    max_url_bytes: int = 8192
    """Longest request target (nginx: one 8k buffer); longer gets 414."""
    max_header_bytes: int = 32768
    """Request line and header lines together (nginx: four 8k buffers); more gets 431."""
    header_timeout: float = 10.0
    """Seconds from a request's first byte until its head is complete (408), and from connecting until a
    first request begins (closed silently)."""
    body_timeout: float = 10.0
    """Seconds a request body may go without a byte arriving (408)."""
    keepalive_timeout: float = 75.0
    """Seconds a kept-alive connection may stay idle between requests (closed silently; longer than common
    load-balancer idle timeouts, so the client side normally closes first)."""
    send_timeout: float = 30.0
    """Seconds the client may leave our replies unread (the socket buffer full) before the connection is
    dropped."""
    max_connections: int = 4096
    """Open client connections; at the cap the longest-waiting idle or incomplete ones are closed first."""


class Phase(IntEnum):
    """Where a connection is; the sweep and the cap only look at this, its age and whether it ever
    completed a request."""

    NEW = 0
    """Connected, no request completed and none begun."""
    HEAD = 1
    """A request's head is arriving."""
    BODY = 2
    """A request's body is arriving."""
    BUSY = 3
    """Requests are being answered (the model runs, or replies wait in order)."""
    IDLE = 4
    """Kept alive between requests."""
    LINGER = 5
    """Refused: the error reply is out, the client's remaining input is dropped until it closes."""


def timeout(phase: Phase, limits: Limits) -> float:
    """How long a connection may stay in ``phase`` (0 = no limit); the age it is compared with is measured
    from the phase's start (HEAD, NEW, IDLE, LINGER) or the last byte read (BODY)."""
    if phase in (Phase.NEW, Phase.HEAD):
        return limits.header_timeout
    if phase is Phase.BODY:
        return limits.body_timeout
    if phase is Phase.IDLE:
        return limits.keepalive_timeout
    if phase is Phase.LINGER:
        return LINGER_SECONDS
    return 0.0


def sweep_interval(limits: Limits) -> float:
    """How often the timeouts are checked: a quarter of the shortest, at most once a second."""
    positive = [t for t in (limits.header_timeout, limits.body_timeout, limits.keepalive_timeout) if t > 0]
    return max(0.05, min([1.0, *[t / 4 for t in positive]]))


def eviction_rank(phase: Phase, proven: bool) -> int | None:
    """Which connections to close first at the connection cap (lower first; None = never).

    Refused connections first, then connections that never completed a request (a slowloris holds such
    ones: connected and silent, or a head or body that does not end), then idle kept-alive ones (HTTP lets a
    server close those at any time), and last incomplete requests of clients that did complete one before.
    A connection whose requests are being answered is never closed for room.
    """
    if phase is Phase.BUSY:
        return None
    if phase is Phase.LINGER:
        return 0
    if phase is Phase.IDLE:
        return 2
    if not proven:
        return 1
    return 3


def eviction_batch(cap: int) -> int:
    """How many connections one pass at the cap closes: a sixty-fourth of the cap, so a flood of new
    connections costs one scan per batch rather than one per connection."""
    return max(1, cap // 64)


def victims(candidates: Sequence[tuple[int, float]], cap: int) -> list[int]:
    """Which connections to close at the cap, given each candidate's ``(eviction_rank, age)``: indices.

    Refused and never-proven connections go in batches (:func:`eviction_batch`), the longest-waiting
    first; a connection whose client completed requests before goes only when nothing else makes room,
    and then one at a time, so a batch never sweeps away a pool's idle connections beside a few slow ones.
    """
    order = heapq.nsmallest(
        eviction_batch(cap), range(len(candidates)), key=lambda i: (candidates[i][0], -candidates[i][1])
    )
    bulk = [i for i in order if candidates[i][0] <= 1]
    return bulk or order[:1]


def connection_cap(requested: int, soft: int, hard: int, in_use: int) -> tuple[int, int]:
    """The effective connection cap and the soft open-files limit to set for it.

    The soft limit is raised (up to the hard one) so that ``requested`` connections fit beside the
    descriptors already open plus a margin; if they cannot, the cap shrinks to what fits. Reaching the
    cap then closes connections by :func:`eviction_rank` instead of failing ``accept()`` with EMFILE,
    which leaves every new client hanging in the backlog.
    """
    needed = requested + in_use + FD_MARGIN
    new_soft = soft if soft >= needed else min(hard, needed)
    return max(1, min(requested, new_soft - in_use - FD_MARGIN)), new_soft
