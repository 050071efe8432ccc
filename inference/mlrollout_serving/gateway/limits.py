"""What one client may make the gateway hold, and for how long: the configurable limits and the pure rule
of which wait (header, body, send, idle, lingering) applies to a connection in a given state.

server.py enforces them; the defaults are nginx's or stricter (docs/gateway.md lists both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["BODY", "HEAD", "IDLE", "REFUSED", "Limits", "stall_limit"]

IDLE: Final = 0
"""Between requests (or before the first)."""
HEAD: Final = 1
"""Reading a request's line and headers."""
BODY: Final = 2
"""Reading a request's body."""
REFUSED: Final = 3
"""A refusal is owed or written; nothing more is read as requests."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may make the gateway hold, and for how long. Sizes in bytes, times in seconds."""

    max_body: int = 64 * 1024 * 1024
    """One request body (413)."""
    max_head: int = 32 * 1024
    """Request line plus header fields (431), as nginx's `large_client_header_buffers 4 8k`."""
    max_url: int = 8 * 1024
    """The request target (414), as nginx's 8k buffer for the request line."""
    max_buffered: int = 256 * 1024 * 1024
    """Request bodies still arriving (over several reads) at once over all connections: beyond it the
    request whose bytes cross it gets 503, so slow clients with large bodies cannot exhaust memory. (A
    request in service is bounded by the route table's request timeout instead.)"""
    header_timeout: float = 10.0
    """A request's line and headers must arrive within this (a new connection must send them within it too).
    nginx: `client_header_timeout 60s`."""
    body_timeout: float = 10.0
    """Longest wait for the next bytes of a request body, and for a client to take the next bytes of a
    response it is not reading. nginx: `client_body_timeout` and `send_timeout`, 60s."""
    idle_timeout: float = 75.0
    """An idle keep-alive connection is closed after this. nginx: `keepalive_timeout 75s`."""
    max_connections: int = 1024
    """Open client connections. At the cap the longest-waiting connection without a request in service is
    closed for the new one; with every connection in service the new one gets 503."""

    def tick(self) -> float:
        """Seconds between two sweeps: a quarter of the shortest timeout, between 50 ms and 1 s."""
        return min(max(min(self.header_timeout, self.body_timeout, self.idle_timeout) / 4, 0.05), 1.0)


def stall_limit(
    limits: Limits, serving: bool, write_paused: bool, phase: int, messages: int, lingering: bool = False
) -> tuple[float, str] | None:
    """How long a connection may stay as it is (no progress) and what that wait is called; None: no limit.

    Pure. A connection with a request in service waits for the upstream (the route table's request timeout
    bounds that) unless its client stopped reading our answers. A lingering close (after a refusal) lasts
    at most the body timeout.
    """
    if lingering:
        return limits.body_timeout, "lingering close"
    if write_paused:
        return limits.body_timeout, "send timeout"
    if serving:
        return None
    if phase == BODY:
        return limits.body_timeout, "body timeout"
    if phase == HEAD or messages == 0:
        return limits.header_timeout, "header timeout"
    return limits.idle_timeout, "idle timeout"
