"""Labels checked and counted on a thread of their own, fed by a bounded queue (docs/gateway.md, "Feedback",
"Labels never delay inference").

Checking a label (JSON, the token's HMAC, its claims, the labels) and counting it costs tens of µs; on the
event loop that serves inference, a flood of labels made every inference request wait for the labels read
in the same turn. Here the loop only reads the request and writes the answer: :meth:`LabelQueue.offer`
hands the body to the worker thread, and the worker's outcome comes back to the loop in batches (one
wake-up for however many answers are ready). The queue is bounded: a label beyond ``capacity`` waiting is
refused at once with 503 and ``retry-after`` (reason ``busy``, counted), never dropped silently nor queued
without bound; its id is not consumed, so sending it again later counts it.

Python threads share one interpreter lock: the worker runs when the loop waits for I/O, and the loop gets
the lock back within the switch interval when it has work (:data:`SWITCH_INTERVAL`, shorter than Python's
5 ms default so that a busy worker hands the lock back quickly). The counters are shared with the loop
(shadow answers arrive there, /metrics reads there) under ``Feedback.lock``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from .feedback import Answer, Feedback, Forward

__all__ = ["DEFAULT_CAPACITY", "SWITCH_INTERVAL", "LabelQueue", "Outcome"]

log = logging.getLogger("mlrollout.gateway.feedback")

DEFAULT_CAPACITY: Final = 256
"""Labels waiting for the worker at most (``--feedback-queue``): 256 bodies of at most 64 KiB, and about
15 ms of work at the worker's pace."""
SWITCH_INTERVAL: Final = 0.0002
"""Seconds a thread waits for the interpreter lock before asking its holder to let go (Python's default,
5 ms, would let a busy worker delay an inference request by up to that much)."""

Outcome = Answer | Forward | None
"""What the worker made of a label: the answer, a forward to the minting replica, or None (it failed)."""
Done = Callable[[Outcome], None]


class LabelQueue:
    """The bounded queue in front of the label worker; ``offer`` and the ``done`` callbacks run on the loop."""

    def __init__(self, feedback: Feedback, capacity: int = DEFAULT_CAPACITY) -> None:
        self.feedback = feedback
        self.capacity = capacity
        self.waiting = 0
        """Labels offered and not yet answered (the loop's count: the bound)."""
        self._jobs: queue.SimpleQueue[tuple[bytes, bytes | None, Done] | None] = queue.SimpleQueue()
        self._results: deque[tuple[Done, Outcome]] = deque()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def offer(self, body: bytes, forwarded: bytes | None, done: Done) -> bool:
        """Queue a label for the worker; False (nothing queued) when ``capacity`` labels already wait."""
        if self.waiting >= self.capacity:
            return False
        if self._thread is None:
            self._start()
        self.waiting += 1
        self._jobs.put((body, forwarded, done))
        return True

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if sys.getswitchinterval() > SWITCH_INTERVAL:
            sys.setswitchinterval(SWITCH_INTERVAL)
        self._thread = threading.Thread(target=self._work, name="feedback-labels", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Let the worker finish what is queued, then end (tests; the gateway's thread ends with it)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None

    # -- the worker thread --
    def _work(self) -> None:
        loop, feedback = self._loop, self.feedback
        assert loop is not None
        while (job := self._jobs.get()) is not None:
            body, forwarded, done = job
            outcome: Outcome
            try:
                outcome = feedback.receive(body, time.time(), forwarded)
            except Exception:
                log.exception("unhandled error taking a label")
                outcome = None
            self._results.append((done, outcome))
            if not self._wake_pending:  # the loop clears it before it takes the results: none is left behind
                self._wake_pending = True
                try:
                    loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:  # the loop is closed: the process is ending
                    return

    # -- back on the loop --
    def _deliver(self) -> None:
        self._wake_pending = False
        results = self._results
        while results:
            done, outcome = results.popleft()
            self.waiting -= 1
            try:
                done(outcome)
            except Exception:
                log.exception("unhandled error answering a label")
