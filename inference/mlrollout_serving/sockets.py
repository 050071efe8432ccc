"""Socket options the model server and the gateway set on every accepted connection."""

from __future__ import annotations

import asyncio
import contextlib
import socket

__all__ = ["bound_unread_replies"]


def bound_unread_replies(transport: asyncio.BaseTransport, send_timeout: float) -> None:
    """Let the kernel drop a connection whose replies stay unacknowledged for ``send_timeout`` seconds.

    Our own send timeout starts when the transport's buffer passes its high-water mark, but the kernel's send
    buffer (megabytes on loopback) takes a never-reading client's replies first: the transport then never
    pauses, and the connection, idle between requests, would live until the keep-alive or idle timeout.
    ``TCP_USER_TIMEOUT`` covers sent data left unacknowledged, zero-window probing included (Linux)."""
    sock = transport.get_extra_info("socket")
    if sock is None or send_timeout <= 0 or not hasattr(socket, "TCP_USER_TIMEOUT"):
        return
    with contextlib.suppress(OSError):  # not TCP (a test's socket pair): nothing to bound
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, max(1, round(send_timeout * 1000)))
