"""The gateway's request path: route by track, forward, fall back, mirror, count.

Every request reads `self.active` once and uses that compiled table to the end, so a table swap never
changes the rules under an in-flight request. Decisions come from decide.py; this module does the I/O.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ..contract.metrics import HIGH_STAKES, LOW_CONFIDENCE, NOT_ANSWERED
from ..contract.process import HEALTH_LIVE, HEALTH_READY, METRICS_PATH
from ..contract.routes import CircuitBreaker, FallbackStep, RouteTable, Sticky
from .decide import (
    CLOSED,
    BreakerState,
    Failure,
    admit,
    fallback_plan,
    low_confidence,
    on_failure,
    pick_track,
    status_blame,
    sticky_bucket,
    sticky_key,
)
from .feedback import Answer, Feedback, Forward
from .feedback_queue import DEFAULT_CAPACITY, LabelQueue, Outcome
from .metrics import GatewayMetrics
from .mirror import Mirror, MirrorJob
from .review import ReviewJob, Reviews, Webhook
from .review_body import high_stakes, mark_pending, review_body
from .server import Reply, Request, Response
from .upstream import MAX_RESPONSE, UpstreamFailure, UpstreamPool, UpstreamResponse

__all__ = ["ActiveTable", "Gateway"]

log = logging.getLogger("mlrollout.gateway")

_JSON: Final = b"content-type: application/json\r\n"
_LIVE: Final = HEALTH_LIVE.encode()
_READY: Final = HEALTH_READY.encode()
_METRICS: Final = METRICS_PATH.encode()
# Hop-by-hop and per-connection headers are not forwarded; host and content-length are set per upstream.
_DROP: Final = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"host", b"te", b"upgrade",
     b"proxy-connection", b"expect"}
)  # fmt: skip
_LOCAL_METHODS: Final = frozenset({b"GET", b"HEAD"})
_FORWARDED_METHODS: Final = frozenset({b"GET", b"HEAD", b"POST"})  # all the Open Inference Protocol uses
_MODEL_PATH: Final = re.compile(rb"^/v2/models/[^/?]+(?:/versions/[^/?]+)?")
_FEEDBACK_PATH: Final = re.compile(rb"^/v2/models/[^/?]+(?:/versions/[^/?]+)?/feedback$")
_FORWARDED_FEEDBACK: Final = b"x-mlrollout-feedback-forwarded"
_FEEDBACK_FORWARD_TIMEOUT: Final = 2.0
_MINTER_ANSWERS: Final = frozenset({202, 409})
_RETRY_LATER: Final = b"retry-after: 1\r\n"
_MAX_BUCKET_KEY: Final = 1024


@dataclass(frozen=True, slots=True)
class _Track:
    name: str
    pool: UpstreamPool
    revision: str
    header: bytes  # serialised x-mlrollout-track line
    tail: bytes  # the version and track header lines appended to every answer from this track


@dataclass(frozen=True, slots=True)
class ActiveTable:
    """A RouteTable compiled for the hot path (pools resolved, headers pre-serialised)."""

    table: RouteTable
    weights: tuple[tuple[str, float], ...]
    tracks: dict[str, _Track]
    single: _Track | None  # set when one track has all the weight: no draw, no hashing
    version_header: bytes
    timeout: float
    mirror_pool: UpstreamPool | None
    backups: dict[str, UpstreamPool]
    check_confidence: bool  # a confidence threshold and a low-confidence action are configured
    webhook: Webhook | None  # human review configured (docs/gateway.md, "Human review")
    high_stakes: Sticky | None  # the marker of requests whose answers are always reviewed


def _error_body(message: str, reason: str, **extra: object) -> bytes:
    return json.dumps({"error": message, "reason": reason, **extra}).encode()


class Gateway:
    """Holds the active table, the upstream pools and breakers; `handle` answers one request."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        max_response: int = MAX_RESPONSE,
        feedback: Feedback | None = None,
        feedback_queue: int = DEFAULT_CAPACITY,
    ) -> None:
        self.metrics = metrics
        self.max_response = max_response
        metrics.upstream_retries = self.upstream_retries
        self.active: ActiveTable | None = None
        self.draining = False
        self.feedback = feedback
        if feedback is not None:
            metrics.feedback = feedback
        self.mirror = Mirror(metrics, feedback)
        self.reviews = Reviews(metrics)
        self.labels = LabelQueue(feedback, feedback_queue) if feedback is not None else None
        self._pools: dict[str, UpstreamPool] = {}
        self._breakers: dict[str, BreakerState] = {}  # only upstreams with failures since their last success
        self._random = random.random
        self.note: Callable[[str], None] = lambda what: None
        """Where each request whose track's answer was not served is summarised for the log (the server's
        notes: one line every few seconds while it lasts; set by the CLI), beside its counter."""

    # -- route tables --
    def apply(self, table: RouteTable, origin: str) -> bool:
        """Make `table` the active one (unless identical); return whether it changed anything."""
        current = self.active
        if current is not None and current.table == table:
            return False
        if current is not None and table.version <= current.table.version:
            log.warning(
                "route table from %s has version %d, not above the active %d; applying it anyway",
                origin, table.version, current.table.version,
            )  # fmt: skip
        self.active = self._compile(table)
        if self.feedback is not None:  # labels for answers served before this step are not scored
            self.feedback.step_started_at = table.step_started_at
        self._prune(table)
        if table.mirror is not None:
            self.mirror.configure(table.mirror.queue_size, table.mirror.concurrency)
        self.metrics.set_route_version(table.version)
        weights = ", ".join(f"{n}={w:g}%" for n, w in table.weights())
        mirror = f", mirror {table.mirror.percent:g}%" if table.mirror else ""
        step = "" if table.step_started_at is None else f", step started at {table.step_started_at:.3f}"
        log.info("route table version %d active (from %s): %s %s%s%s", table.version, origin, table.mode,
                 weights, mirror, step)  # fmt: skip
        return True

    def reject(self, origin: str, reason: str) -> None:
        """Log why a table was refused; the active one stays."""
        active = "none" if self.active is None else str(self.active.table.version)
        log.error("route table from %s rejected, keeping version %s: %s", origin, active, reason)

    def _prune(self, table: RouteTable) -> None:
        """Forget upstreams the new table no longer names: idle connections close now, busy ones when
        their (old-table) request completes; their breakers go too."""
        used = {t.upstream for t in table.tracks.values()}
        used |= {s.backup.upstream for s in (*table.fallback.chain, table.fallback.low_confidence_action)
                 if s is not None and s.backup is not None}  # fmt: skip
        if table.mirror is not None:
            used.add(table.mirror.upstream)
        for url in [u for u in self._pools if u not in used]:
            pool = self._pools.pop(url)
            pool.close()
            self._breakers.pop(pool.name, None)

    def _pool(self, url: str) -> UpstreamPool:
        pool = self._pools.get(url)
        if pool is None:
            host, _, port = url.removeprefix("http://").rpartition(":")
            pool = self._pools[url] = UpstreamPool(host, int(port), max_response=self.max_response)
        return pool

    def _compile(self, table: RouteTable) -> ActiveTable:
        version_header = b"x-mlrollout-route-version: %d\r\n" % table.version
        tracks: dict[str, _Track] = {}
        for name, t in table.tracks.items():
            header = b"x-mlrollout-track: %s\r\n" % name.encode()
            tracks[name] = _Track(name, self._pool(t.upstream), t.revision, header, version_header + header)
        weights = table.weights()
        full = [name for name, w in weights if w >= 100.0]
        single = tracks[full[0]] if full else None
        backups = {
            s.backup.name: self._pool(s.backup.upstream)
            for s in (*table.fallback.chain, table.fallback.low_confidence_action)
            if s is not None and s.backup is not None
        }
        review = table.fallback.review
        return ActiveTable(
            table=table,
            weights=weights,
            tracks=tracks,
            single=single,
            version_header=version_header,
            timeout=table.fallback.request_timeout_seconds,
            mirror_pool=self._pool(table.mirror.upstream) if table.mirror else None,
            backups=backups,
            check_confidence=(
                table.fallback.confidence_threshold is not None and table.fallback.low_confidence_action is not None
            ),
            webhook=self.reviews.webhook(review),
            high_stakes=review.high_stakes if review is not None else None,
        )

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        if self.labels is not None:
            self.labels.stop()

    def upstream_retries(self) -> list[tuple[str, str, str, int]]:
        """(track, revision, upstream, connect retries) of every upstream the active table names; a backup's
        track is ``backup``. Read at scrape time, so the hot path only increments a plain int."""
        active = self.active
        if active is None:
            return []
        pools = [(t.name, t.revision, t.pool) for t in active.tracks.values()]
        mirror = active.table.mirror
        if active.mirror_pool is not None and mirror is not None:
            pools.append(("shadow", mirror.revision, active.mirror_pool))
        pools += [("backup", "", pool) for pool in active.backups.values()]
        # One row per label set: two backups on one upstream must not become a duplicate series.
        rows = {(track, revision, pool.name): pool.connect_retries for track, revision, pool in pools}
        return [(track, revision, upstream, count) for (track, revision, upstream), count in rows.items()]

    # -- requests --
    def handle(self, request: Request, reply: Reply) -> None:
        """Answer one request; the common case runs in callbacks only (no task, no future).

        What is answered here without an upstream (health, metrics, 405, 503) is answered on the next
        event-loop turn: the server side then answers one pipelined request per turn, so a flood of them
        in one read (a thousand /metrics) cannot hold the loop for everybody else."""
        started = time.perf_counter()
        target = request.target
        if not target.startswith(b"/v2"):
            _soon(reply, self._local(request.method, target))
            return
        if target.startswith(b"/v2/health/"):
            _soon(reply, self._health(request.method, target))
            return
        if request.method != b"POST" and not self._get_or_head(request):
            _soon(reply, _not_allowed(request.method, _FORWARDED_METHODS))
            return
        if request.method == b"POST" and target.endswith(b"/feedback") and _FEEDBACK_PATH.match(target):
            self._feedback(request, reply)
            return
        active = self.active
        if active is None:
            _soon(reply, Response(503, _JSON, _error_body("no route table loaded yet", "unavailable")))
            return
        track = active.single or self._choose(active, request)
        exchange = _Exchange(self, active, track, request, reply, started)
        pool = track.pool
        if pool.name in self._breakers:  # breaker not plainly closed: take the careful path
            self._loop().create_task(exchange.run_slow(None))
            return
        pool.send(b"".join((exchange.line, pool.host_header, exchange.rest)), active.timeout, exchange.on_primary)

    @staticmethod
    def _get_or_head(request: Request) -> bool:
        """GET is forwarded as is; HEAD goes upstream as GET (the response parser cannot know that a reply
        has no body), the server side drops the body when it answers."""
        if request.method == b"HEAD":
            request.method = b"GET"
            return True
        return request.method == b"GET"

    @staticmethod
    def _loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def _choose(self, active: ActiveTable, request: Request) -> _Track:
        sticky = active.table.sticky
        draw: float | None = None
        if sticky is not None:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers}
            key = sticky_key(sticky, headers, request.body)
            if key is not None:
                draw = sticky_bucket(key[:_MAX_BUCKET_KEY])
        if draw is None:
            draw = self._random()
        return active.tracks[pick_track(active.weights, draw)]

    def _account(
        self,
        pool: UpstreamPool,
        result: UpstreamResponse | UpstreamFailure,
        breaker_config: CircuitBreaker,
        request: Request,
    ) -> UpstreamResponse | tuple[str, str]:
        """Feed an upstream outcome to its breaker; a 5xx or a failure becomes (reason, message)."""
        name = pool.name
        if isinstance(result, UpstreamResponse) and result.status < 500:
            if name in self._breakers:
                del self._breakers[name]  # closed and no failures: the fast path has no entry at all
            return result
        blame = result.blame if isinstance(result, UpstreamFailure) else status_blame(result.status)
        failure = Failure(blame, request.client, b"" if blame == "upstream" else _fingerprint(request))
        state = on_failure(self._breakers.get(name) or CLOSED, breaker_config, time.monotonic(), failure)
        self._breakers[name] = state
        if isinstance(result, UpstreamFailure):
            return result.reason, str(result)
        return "error", f"upstream {name} answered {result.status}"

    async def _route(
        self,
        active: ActiveTable,
        track: _Track,
        request: Request,
        line: bytes,
        rest: bytes,
        outcome: UpstreamResponse | tuple[str, str] | None,
    ) -> tuple[tuple[Response, str, _Track], UpstreamResponse | None]:
        """After the first attempt (or making it, if `outcome` is None): confidence check, fallback chain.
        Returns the answer, and the routed track's own answer when it gave one that is not the one served
        (low confidence, held for review): its feedback id scores the track on that (from its predictions
        header when it sent one).

        A request whose track's answer is not served is counted once in `fallback_requests_total` under the
        track it was routed to, with what answered it: `requests_total` counts a `stable` step's answer under
        stable, and a rescued failure nowhere as an error (docs/gateway.md, "Metrics")."""
        fallback = active.table.fallback
        if outcome is None:
            outcome = await self._attempt(track.pool, line, rest, active.timeout, fallback.circuit_breaker, request)
        if isinstance(outcome, UpstreamResponse):
            if self._low_confidence(active, track, request, outcome):
                step = fallback.low_confidence_action
                assert step is not None
                if step.action == "review":
                    return self._review(active, track, request, outcome, LOW_CONFIDENCE), outcome
                self.metrics.fallback(track.name, track.revision, LOW_CONFIDENCE, step.action)
                answer = await self._run_steps(active, (step,), track, request, line, rest, LOW_CONFIDENCE)
                self._fallback_request(track, LOW_CONFIDENCE, _answered(answer))
                if answer is not None:
                    return answer, outcome
            if self._high_stakes(active, request, outcome):
                return self._review(active, track, request, outcome, HIGH_STAKES), outcome
            return (self._forwarded(active, track, outcome), track.name, track), None
        reason, message = outcome
        answer = await self._run_steps(
            active, fallback_plan(fallback.chain, track.name), track, request, line, rest, reason, message,
            count_first=True,
        )  # fmt: skip
        self._fallback_request(track, reason, _answered(answer))
        if answer is not None:
            return answer, None
        status = 504 if reason == "timeout" else 502
        return (
            Response(status, _JSON + active.version_header + track.header, _error_body(message, reason)),
            track.name,
            track,
        ), None

    def _fallback_request(self, track: _Track, reason: str, answered: str) -> None:
        """Count a request whose routed track's answer was not served, and note it for the log: a client that
        got a refusal (503) or a fallback's answer can then be traced to its cause without Prometheus."""
        self.metrics.fallback_request(track.name, track.revision, reason, answered)
        self.note(f"{track.name} {reason} -> {answered}")

    @staticmethod
    def _high_stakes(active: ActiveTable, request: Request, result: UpstreamResponse) -> bool:
        """An inference answered 200 whose request carries the policy's high-stakes marker."""
        marker = active.high_stakes
        if marker is None or result.status != 200 or not request.target.endswith(b"/infer"):
            return False
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers}
        return high_stakes(marker, headers, request.body)

    def _review(
        self, active: ActiveTable, track: _Track, request: Request, result: UpstreamResponse, reason: str
    ) -> tuple[Response, str, _Track]:
        """Queue this answer for human review (never waiting for the webhook) and answer as the policy says.

        The review body holds this request and this answer only; the client learns the review's id in
        `x-mlrollout-review-id` when it was queued (a dropped review is counted, and not claimed)."""
        review, webhook = active.table.fallback.review, active.webhook
        assert review is not None and webhook is not None
        review_id = os.urandom(16).hex()
        body = review_body(
            review_id=review_id, namespace=self.metrics.namespace, model_deployment=self.metrics.model_deployment,
            target=request.target, track=track.name, revision=track.revision, reason=reason, request=request.body,
            answer=result.body, now=time.time(), max_bytes=review.max_body_bytes,
        )  # fmt: skip
        if isinstance(body, str):
            self.reviews.dropped(track.name, track.revision, body)
            queued = False
        else:
            queued = self.reviews.offer(ReviewJob(webhook, body, track.name, track.revision))
        self.metrics.fallback(track.name, track.revision, reason, "review")
        review_header = b"x-mlrollout-review-id: %s\r\n" % review_id.encode() if queued else b""
        if review.respond == "model":
            response = self._forwarded(active, track, result)
            response.headers += review_header
            if queued:
                response.body = mark_pending(response.body, review_id)
            return response, track.name, track
        self._fallback_request(track, reason, "review")
        headers = _JSON + active.version_header + review_header
        if review.respond == "default":
            body_out = json.dumps(review.default_response).encode()
            return Response(200, headers + b"x-mlrollout-track: default\r\n", body_out), "default", track
        why = f"answer held for human review ({reason.replace('_', ' ')})"
        text = f"{review.message} ({why})" if review.message else why
        extra: dict[str, object] = {"track": track.name}
        if queued:
            extra["review_id"] = review_id
        refusal = _error_body(text, reason, **extra)
        return Response(503, headers + b"x-mlrollout-track: refuse\r\n", refusal), "refuse", track

    @staticmethod
    def _low_confidence(active: ActiveTable, track: _Track, request: Request, result: UpstreamResponse) -> bool:
        if not active.check_confidence:
            return False
        fallback = active.table.fallback
        threshold = fallback.confidence_threshold
        step = fallback.low_confidence_action
        return (
            threshold is not None
            and step is not None
            and result.status == 200
            and not (step.action == "stable" and track.name == "stable")
            and request.target.endswith(b"/infer")
            and _is_low_confidence(result.body, threshold)
        )

    def _finish(
        self,
        active: ActiveTable,
        request: Request,
        line: bytes,
        rest: bytes,
        answer: tuple[Response, str, _Track],
        started: float,
        reply: Reply,
        routed: _Track,
        own: UpstreamResponse | None = None,
        predicted: bytes | None = None,
    ) -> None:
        """Reply (with a feedback id on a model's answer), then (off the client's path) mirror and count.

        The id always names the track the request was routed to (``routed``): on a fallback's answer it
        scores that track on ``own`` (its answer that was not served) or as having failed the request.
        ``predicted``: the routed track's predictions header, when its answer is served as it came (the
        fast path; contract.predicted): signed without reading the answer."""
        response, served, label = answer
        nonce: int | None = None
        mirrored = False
        if response.status == 200 and request.target.endswith(b"/infer"):
            if served in ("stable", "candidate"):
                mirrored = active.mirror_pool is not None and self._mirror_draw(active)
            stamped = None
            if self.feedback is None:
                pass
            elif served == routed.name:
                stamped = self.feedback.stamp(served, label.revision, response.body, mirrored, int(time.time()),
                                              predicted)  # fmt: skip
            elif routed.name in ("stable", "candidate"):  # a fallback's answer: the id scores the routed track
                stamped = self.feedback.stamp_rescued(routed.name, routed.revision, response.body,
                                                      None if own is None else own.body, int(time.time()),
                                                      None if own is None else own.predicted)  # fmt: skip
            if stamped is not None:
                response.body, minted = stamped
                if minted is not None:  # None: no row can be labelled, the answer says feedback_rows: 0
                    response.headers = b"%sx-mlrollout-feedback-id: %s\r\n" % (response.headers, minted.id)
                    nonce = minted.nonce if served == routed.name else None  # only the routed track's answer pairs
        reply(response)
        if mirrored:
            self._mirror(active, line, rest, response.body, nonce)
        self.metrics.observe_request(label.name, label.revision, response.status, time.perf_counter() - started)

    async def _run_steps(
        self,
        active: ActiveTable,
        steps: tuple[FallbackStep, ...],
        failed: _Track,
        request: Request,
        line: bytes,
        rest: bytes,
        reason: str,
        message: str = "",
        count_first: bool = False,
    ) -> tuple[Response, str, _Track] | None:
        """Try the steps in order; each one taken is counted with the reason of the failure before it."""
        breaker = active.table.fallback.circuit_breaker
        headers = _JSON + active.version_header
        for index, step in enumerate(steps):
            if count_first or index > 0:
                self.metrics.fallback(failed.name, failed.revision, reason, step.action)
            if step.action == "stable":
                stable = active.tracks["stable"]
                result = await self._attempt(stable.pool, line, rest, active.timeout, breaker, request)
                if isinstance(result, UpstreamResponse):
                    return self._forwarded(active, stable, result), "stable", stable
                reason, message = result
            elif step.action == "backup":
                assert step.backup is not None
                pool = active.backups[step.backup.name]
                backup_line = _rewrite_model(line, step.backup.served_name.encode())
                result = await self._attempt(pool, backup_line, rest, active.timeout, breaker, request)
                if isinstance(result, UpstreamResponse):
                    return (
                        Response(result.status, result.headers + active.version_header
                                 + b"x-mlrollout-track: backup\r\n", result.body),
                        "backup",
                        failed,
                    )  # fmt: skip
                reason, message = result
            elif step.action == "default":
                body = json.dumps(step.default_response).encode()
                return Response(200, headers + b"x-mlrollout-track: default\r\n", body), "default", failed
            else:  # refuse
                why = (
                    f"track {failed.name} failed ({reason}): {message}"
                    if message
                    else (f"track {failed.name}: {reason.replace('_', ' ')}")
                )
                text = f"{step.message} ({why})" if step.message else f"refused by fallback policy: {why}"
                body = _error_body(text, reason, track=failed.name)
                return Response(503, headers + b"x-mlrollout-track: refuse\r\n", body), "refuse", failed
        return None

    async def _attempt(
        self,
        pool: UpstreamPool,
        line: bytes,
        rest: bytes,
        timeout: float,
        breaker_config: CircuitBreaker,
        request: Request,
    ) -> UpstreamResponse | tuple[str, str]:
        """One upstream call under its circuit breaker: a response, or (reason, message)."""
        name = pool.name
        state = self._breakers.get(name)
        if state is not None:
            allowed, new_state = admit(state, breaker_config, time.monotonic())
            self._breakers[name] = new_state
            if not allowed:
                return "circuit_open", f"circuit breaker for {name} is open"
        try:
            result: UpstreamResponse | UpstreamFailure = await pool.request(
                b"".join((line, pool.host_header, rest)), timeout
            )
        except UpstreamFailure as exc:
            result = exc
        return self._account(pool, result, breaker_config, request)

    @staticmethod
    def _forwarded(active: ActiveTable, track: _Track, result: UpstreamResponse) -> Response:
        return Response(result.status, result.headers + track.tail, result.body)

    def _mirror_draw(self, active: ActiveTable) -> bool:
        """Whether this request is copied to the shadow (the table's mirror percent)."""
        mirror = active.table.mirror
        return mirror is not None and mirror.percent > 0.0 and self._random() * 100.0 < mirror.percent

    def _mirror(self, active: ActiveTable, line: bytes, rest: bytes, primary: bytes, nonce: int | None) -> None:
        mirror = active.table.mirror
        assert mirror is not None and active.mirror_pool is not None
        pool = active.mirror_pool
        request = b"".join((line, pool.host_header, rest))
        self.mirror.offer(MirrorJob(pool, mirror.revision, mirror.timeout_seconds, request, primary, nonce))

    # -- feedback (docs/gateway.md, "Feedback") --
    def _feedback(self, request: Request, reply: Reply) -> None:
        """Hand a label to the label worker (feedback_queue.py); its outcome is answered, or forwarded to the
        replica that holds the shadow's answer (and counted here unpaired if that replica cannot be reached).
        With the worker's queue full: 503 now, counted, the id not consumed (a retry counts it)."""
        feedback, labels = self.feedback, self.labels
        if feedback is None or labels is None:
            _soon(reply, _json_answer(404, {"error": "feedback is not enabled for this model", "reason": "disabled"}))
            return
        oversized = feedback.oversized(request.body)
        if oversized is not None:
            _soon(reply, _json_answer(oversized.status, oversized.body))
            return
        forwarded = next((value for name, value in request.headers if name == _FORWARDED_FEEDBACK), None)

        def done(outcome: Outcome) -> None:
            if isinstance(outcome, Answer):
                reply(_json_answer(outcome.status, outcome.body))
            elif isinstance(outcome, Forward):
                self._loop().create_task(self._forward_feedback(outcome, request, reply))
            else:
                reply(Response(500, _JSON, b'{"error": "internal gateway error"}'))

        if not labels.offer(request.body, forwarded, done):
            busy = feedback.refuse("busy", f"{labels.capacity} labels are waiting to be counted; retry later")
            _soon(reply, _json_answer(busy.status, busy.body, _RETRY_LATER))

    async def _forward_feedback(self, forward: Forward, request: Request, reply: Reply) -> None:
        feedback = self.feedback
        assert feedback is not None
        address = ".".join(str(b) for b in forward.replica.to_bytes(4, "big"))
        pool = self._pool(f"http://{address}:{feedback.config.port}")
        head = b"POST %s HTTP/1.1\r\n" % request.target
        proof = feedback.forward_proof(forward.feedback_id)
        rest = b"%s: %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
            _FORWARDED_FEEDBACK, proof, len(request.body), request.body,
        )  # fmt: skip
        try:
            result = await pool.request(b"".join((head, pool.host_header, rest)), _FEEDBACK_FORWARD_TIMEOUT)
        except UpstreamFailure as exc:
            log.debug("feedback for replica %s not delivered (%s); counted here unpaired", address, exc)
            result = None
        # the token was verified here, so the minting replica can only count it (202) or have counted it
        # already (409); anything else came from something else at that address now (a restarted pod's IP
        # taken by another ModelDeployment's gateway, say): the minting replica is gone
        if result is not None and result.status in _MINTER_ANSWERS:
            reply(Response(result.status, _JSON, result.body))
            return
        if result is not None and _busy(result):  # the minting replica lives; its queue is full: the client retries
            reply(Response(503, _JSON + _RETRY_LATER, result.body))
            return
        answer = feedback.count(forward.token, forward.labels, time.time(), unpaired="replica_gone")
        reply(_json_answer(answer.status, answer.body))

    # -- local endpoints (GET and HEAD only) --
    def _health(self, method: bytes, target: bytes) -> Response:
        if target.startswith(_LIVE):
            if method not in _LOCAL_METHODS:
                return _not_allowed(method, _LOCAL_METHODS)
            return Response(200, _JSON, b'{"live": true}')
        if target.startswith(_READY):
            if method not in _LOCAL_METHODS:
                return _not_allowed(method, _LOCAL_METHODS)
            ready = self.active is not None and not self.draining
            return Response(200 if ready else 503, _JSON, b'{"ready": %s}' % (b"true" if ready else b"false"))
        return Response(404, _JSON, b'{"error": "not found"}')

    def _local(self, method: bytes, target: bytes) -> Response:
        if target == _METRICS or target.startswith(_METRICS + b"?"):
            if method not in _LOCAL_METHODS:
                return _not_allowed(method, _LOCAL_METHODS)
            return Response(200, b"content-type: text/plain; version=0.0.4; charset=utf-8\r\n",
                            self.metrics.exposition())  # fmt: skip
        return Response(404, _JSON, b'{"error": "not found"}')


def _busy(result: UpstreamResponse) -> bool:
    """Whether a replica answered a forwarded label "busy" (its label queue was full)."""
    if result.status != 503:
        return False
    try:
        answer = json.loads(result.body)
    except ValueError:
        return False
    return isinstance(answer, dict) and answer.get("reason") == "busy"


def _json_answer(status: int, body: dict[str, object], headers: bytes = b"") -> Response:
    return Response(status, _JSON + headers, json.dumps(body).encode())


def _soon(reply: Reply, response: Response) -> None:
    asyncio.get_running_loop().call_soon(reply, response)


def _not_allowed(method: bytes, allowed: frozenset[bytes]) -> Response:
    """405 naming the allowed methods (httptools accepts only known method names, so echoing it is safe)."""
    names = ", ".join(sorted(m.decode() for m in allowed))
    body = _error_body(f"method {method.decode()} is not allowed here (allowed: {names})", "method_not_allowed")
    return Response(405, _JSON + b"allow: %s\r\n" % names.encode(), body)


def _answered(answer: tuple[Response, str, _Track] | None) -> str:
    """What answered a request after its track's answer was not used: the fallback action, or none."""
    return NOT_ANSWERED if answer is None else answer[1]


def _fingerprint(request: Request) -> bytes:
    """What makes two requests the same for the circuit breaker: method, target and body."""
    digest = hashlib.blake2b(b"%s %s\n" % (request.method, request.target), digest_size=16)
    digest.update(request.body)
    return digest.digest()


def _forward_rest(request: Request) -> bytes:
    """Forwarded header lines plus content-length and body (everything after the host line)."""
    parts = [b"%s: %s\r\n" % (k, v) for k, v in request.headers if k not in _DROP]
    parts.append(b"content-length: %d\r\n\r\n" % len(request.body))
    parts.append(request.body)
    return b"".join(parts)


def _is_low_confidence(body: bytes, threshold: float) -> bool:
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    return isinstance(parsed, dict) and low_confidence(parsed, threshold)


def _rewrite_model(line: bytes, model: bytes) -> bytes:
    """Point `/v2/models/<any>[/versions/<v>]` at the backup model (no version: its default one)."""
    method, _, remainder = line.partition(b" ")
    target, _, protocol = remainder.rpartition(b" ")
    new_target = _MODEL_PATH.sub(b"/v2/models/" + model, target, count=1)
    return b"%s %s %s" % (method, new_target, protocol)


class _Exchange:
    """One request in flight on the fast path; its bound method is the upstream callback."""

    __slots__ = ("active", "gateway", "line", "reply", "request", "rest", "started", "track")

    def __init__(
        self, gateway: Gateway, active: ActiveTable, track: _Track, request: Request, reply: Reply, started: float
    ) -> None:
        self.gateway = gateway
        self.active = active
        self.track = track
        self.request = request
        self.reply = reply
        self.started = started
        self.line = b"%s %s HTTP/1.1\r\n" % (request.method, request.target)
        self.rest = _forward_rest(request)

    def on_primary(self, result: UpstreamResponse | UpstreamFailure) -> None:
        """The upstream callback: answer at once, or hand over to the fallback path in a task."""
        gw, active, track = self.gateway, self.active, self.track
        try:
            outcome = gw._account(track.pool, result, active.table.fallback.circuit_breaker, self.request)
            if (
                isinstance(outcome, UpstreamResponse)
                and not gw._low_confidence(active, track, self.request, outcome)
                and not (active.high_stakes is not None and gw._high_stakes(active, self.request, outcome))
            ):
                answer = (Gateway._forwarded(active, track, outcome), track.name, track)
                gw._finish(active, self.request, self.line, self.rest, answer, self.started, self.reply, track,
                           None, outcome.predicted)  # fmt: skip
                return
            asyncio.get_running_loop().create_task(self.run_slow(outcome))
        except Exception:  # never leave a client without an answer (reply() ignores a second call)
            log.exception("answering %s failed", self.request.target.decode(errors="replace"))
            self.reply(Response(500, _JSON, _error_body("internal gateway error", "error")))

    async def run_slow(self, outcome: UpstreamResponse | tuple[str, str] | None) -> None:
        gw = self.gateway
        own: UpstreamResponse | None = None
        try:
            answer, own = await gw._route(self.active, self.track, self.request, self.line, self.rest, outcome)
        except Exception:
            log.exception("fallback path failed")
            answer = (Response(500, _JSON, _error_body("internal gateway error", "error")), self.track.name,
                      self.track)  # fmt: skip
        gw._finish(self.active, self.request, self.line, self.rest, answer, self.started, self.reply, self.track,
                   own)  # fmt: skip
