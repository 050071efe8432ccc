"""Graceful shutdown for both processes (model server, gateway): the drain starts in the signal handler.

A Python-level handler runs in the main thread at the next bytecode boundary after delivery, so even a
request the event loop reads in the same turn as the signal is answered as draining (readiness 503,
``connection: close``). A ``loop.add_signal_handler`` callback would come too late: uvloop queues it and
handles the sockets that are ready first.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator

__all__ = ["drain_on_signal"]


@contextlib.contextmanager
def drain_on_signal(
    loop: asyncio.AbstractEventLoop, start_draining: Callable[[], None], stop: asyncio.Event
) -> Iterator[None]:
    """On SIGTERM/SIGINT call ``start_draining`` at once, then wake the task waiting on ``stop``.

    ``start_draining`` must only set flags (it runs at an arbitrary bytecode boundary); the rest of the
    shutdown stays with the waiting task. The previous handlers are back on exit, before the loop closes;
    a second signal during the drain does nothing more.
    """

    def on_signal(signum: int, frame: object) -> None:
        start_draining()
        loop.call_soon_threadsafe(stop.set)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.siginterrupt(sig, False)  # restart interrupted system calls, as add_signal_handler does
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
