"""Shadow mirroring off the primary path: a bounded queue, a few workers, a timeout, drops counted.

The proxy only calls `offer()` after the client's response is written; it never waits. A full queue
(``queueSize`` copies, or `MAX_QUEUED_BYTES` of request and primary bodies: each copy may hold a body of
``--max-body-bytes``) drops the copy (counted as `queue_full`); a slow or failing shadow is counted as
`timeout` or `error`.
Answers are compared with the primary's (compare.py) and recorded as agreement metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from .budget import ByteBudget
from .compare import compare_responses
from .feedback import Feedback
from .metrics import GatewayMetrics
from .upstream import UpstreamFailure, UpstreamPool, UpstreamTimeout

__all__ = ["Mirror", "MirrorJob"]

log = logging.getLogger("mlrollout.gateway.mirror")


class MirrorJob:
    """Everything one copy needs; built by the proxy from the table the request started with."""

    __slots__ = ("nonce", "pool", "primary_body", "request", "revision", "timeout")

    def __init__(
        self, pool: UpstreamPool, revision: str, timeout: float, request: bytes, primary_body: bytes,
        nonce: int | None = None,
    ) -> None:  # fmt: skip
        self.pool = pool
        self.revision = revision
        self.timeout = timeout
        self.request = request
        self.primary_body = primary_body
        self.nonce = nonce  # the client answer's feedback id: the shadow's answer is kept for its label

    @property
    def size(self) -> int:
        """Bytes this copy holds until a worker is done with it (the byte budget's unit)."""
        return len(self.request) + len(self.primary_body)


class Mirror:
    """Worker pool draining a bounded queue of MirrorJobs. Resized when a route table says so."""

    def __init__(self, metrics: GatewayMetrics, feedback: Feedback | None = None) -> None:
        self._metrics = metrics
        self._feedback = feedback
        self._queue: asyncio.Queue[MirrorJob] = asyncio.Queue(maxsize=1024)
        self._workers: list[asyncio.Task[None]] = []
        self._bytes = ByteBudget()

    @property
    def queued_bytes(self) -> int:
        """Bytes of the copies queued or being sent (released when a worker finishes with one)."""
        return self._bytes.used

    def configure(self, queue_size: int, concurrency: int) -> None:
        """Apply a table's mirror settings; queued copies move to the new queue (excess dropped)."""
        if self._queue.maxsize != queue_size:
            old, self._queue = self._queue, asyncio.Queue(maxsize=queue_size)
            while not old.empty():
                job = old.get_nowait()
                self._bytes.release(job.size)
                self.offer(job)
            for task in self._workers:  # workers bind the queue at start: restart them
                task.cancel()
            self._workers = []
        while len(self._workers) < concurrency:
            self._workers.append(asyncio.get_running_loop().create_task(self._work()))
        while len(self._workers) > concurrency:
            self._workers.pop().cancel()

    def offer(self, job: MirrorJob) -> None:
        """Queue a copy without waiting; count it as dropped (queue_full) if the queue is full, by count or
        by bytes (`MAX_QUEUED_BYTES`)."""
        if self._bytes.take(job.size):
            try:
                self._queue.put_nowait(job)
                return
            except asyncio.QueueFull:
                self._bytes.release(job.size)
        self._metrics.mirror_drop(job.revision, "queue_full")

    async def _work(self) -> None:
        queue = self._queue
        while True:
            job = await queue.get()
            try:
                await self._send(job)
            finally:  # sent, failed or cancelled: the copy's bytes are free again
                self._bytes.release(job.size)

    async def _send(self, job: MirrorJob) -> None:
        self._metrics.mirror_sent(job.revision)
        try:
            response = await job.pool.request(job.request, job.timeout)
        except UpstreamTimeout:
            self._metrics.mirror_drop(job.revision, "timeout")
            self._shadow_failed(job)
            return
        except UpstreamFailure:
            self._metrics.mirror_drop(job.revision, "error")
            self._shadow_failed(job)
            return
        if response.status != 200:
            self._metrics.mirror_drop(job.revision, "error")
            self._shadow_failed(job)
            return
        try:
            self._record(job, response.body)
            if job.nonce is not None and self._feedback is not None:
                self._feedback.shadow_answered(job.nonce, job.revision, response.body, time.time(),
                                               response.predicted)  # fmt: skip
        except Exception:  # a comparison bug must never kill the worker
            log.exception("comparing a shadow answer failed")

    def _shadow_failed(self, job: MirrorJob) -> None:
        """The shadow failed a copy it was sent: its label scores the shadow as wrong on every row (a copy
        never sent, dropped as ``queue_full`` by this gateway, leaves its label unpaired instead)."""
        if job.nonce is not None and self._feedback is not None:
            self._feedback.shadow_failed(job.nonce, job.revision, time.time())

    def _record(self, job: MirrorJob, shadow_body: bytes) -> None:
        try:
            primary, shadow = json.loads(job.primary_body), json.loads(shadow_body)
        except ValueError:
            self._metrics.mirror_drop(job.revision, "error")
            return
        if not isinstance(primary, dict) or not isinstance(shadow, dict):
            return
        result = compare_responses(primary, shadow)
        for output, (agree, disagree) in result.agreement.items():
            self._metrics.shadow_agreement(job.revision, output, agree, disagree)
        for output, values in result.abs_differences.items():
            self._metrics.shadow_abs_difference(job.revision, output, values)

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []
