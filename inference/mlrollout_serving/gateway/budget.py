"""A byte budget for the gateway's off-path queues (mirror, review): a count bound alone is not enough.

``queueSize`` copies of bodies up to ``--max-body-bytes`` each could be gigabytes while a shadow or a
webhook is slow or down, so every queue also takes its bodies' bytes from a budget when a job is
offered and gives them back when a worker is done with it (or it is dropped).
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_QUEUED_BYTES", "ByteBudget"]

MAX_QUEUED_BYTES: Final = 64 << 20
"""Bodies one queue holds (queued or in a worker's hands), at most; a job over it is dropped (``queue_full``)."""


class ByteBudget:
    """Bytes held by one queue's jobs, at most `cap`."""

    __slots__ = ("cap", "used")

    def __init__(self, cap: int = MAX_QUEUED_BYTES) -> None:
        self.cap = cap
        self.used = 0

    def take(self, size: int) -> bool:
        """Reserve `size` bytes; False (nothing reserved) when that would pass the cap."""
        if self.used + size > self.cap:
            return False
        self.used += size
        return True

    def release(self, size: int) -> None:
        """Give back what a job took: it was sent, failed, or dropped."""
        self.used -= size
