"""The off-path queues' bounds (count and bytes) and their bookkeeping on reconfiguration, on loopback: human
review (gateway/review.py) and shadow mirroring (gateway/mirror.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families
from tests.support.httpd import Received, recorder, serving, silent_listener

from mlrollout_serving.contract import metrics as contract
from mlrollout_serving.contract.routes import Review
from mlrollout_serving.gateway.metrics import GatewayMetrics
from mlrollout_serving.gateway.mirror import Mirror, MirrorJob
from mlrollout_serving.gateway.review import MAX_QUEUED_BYTES, ReviewJob, Reviews
from mlrollout_serving.gateway.upstream import UpstreamPool


def _count(m: GatewayMetrics, series: str, **labels: str) -> float:
    want = {"namespace": "prod", "model_deployment": "iris", "track": "stable", "revision": "r1", **labels}
    return sum(
        s.value
        for family in text_string_to_metric_families(m.exposition().decode())
        for s in family.samples
        if s.name == series and s.labels == want
    )


def _review(url: str, **settings: object) -> Review:
    return Review.model_validate({"url": url, "highStakes": {"header": "x-stakes"}, **settings})


async def _eventually(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    assert check()


async def test_the_queue_is_bounded_by_bytes_not_only_by_count() -> None:
    """65536 reviews of 16 MiB would be 1 TiB; the byte cap drops what would pass MAX_QUEUED_BYTES."""
    m = GatewayMetrics("prod", "iris")
    reviews = Reviews(m)
    with silent_listener() as url:  # the webhook hangs: nothing leaves the queue
        hook = reviews.webhook(_review(url + "/r", queueSize=65536, concurrency=1, maxBodyBytes=16 << 20))
        assert hook is not None
        body = b"x" * (16 << 20)
        fits = MAX_QUEUED_BYTES // len(body)
        taken = [reviews.offer(ReviewJob(hook, body, "stable", "r1")) for _ in range(fits + 3)]
        assert taken == [True] * fits + [False] * 3
        assert reviews.queued_bytes == fits * len(body) <= MAX_QUEUED_BYTES
        assert _count(m, contract.GATEWAY_REVIEWS_DROPPED.name, reason="queue_full") == 3
        await reviews.close()


async def test_bytes_are_released_when_a_review_is_delivered() -> None:
    m = GatewayMetrics("prod", "iris")
    reviews = Reviews(m)
    received = Received()
    with serving(recorder(received, {"/r": lambda _: (200, {}, b"{}")})) as url:
        hook = reviews.webhook(_review(url + "/r"))
        assert hook is not None
        for _ in range(5):
            assert reviews.offer(ReviewJob(hook, b"{}" * 1000, "stable", "r1"))
        sent = contract.GATEWAY_REVIEWS_SENT.name
        await _eventually(lambda: _count(m, sent) == 5)
        assert reviews.queued_bytes == 0
        await reviews.close()


async def test_a_sender_cancelled_mid_delivery_counts_its_review_as_failed_cancelled() -> None:
    """Lowering concurrency cancels a sender; the review it was sending is counted, not lost silently."""
    m = GatewayMetrics("prod", "iris")
    reviews = Reviews(m)
    failed = contract.GATEWAY_REVIEWS_FAILED.name
    with silent_listener() as url:
        hook = reviews.webhook(_review(url + "/r", concurrency=2, timeoutSeconds=60))
        assert hook is not None
        for _ in range(2):
            reviews.offer(ReviewJob(hook, b"{}", "stable", "r1"))
        await _eventually(lambda: reviews.in_flight == 2)
        reviews.webhook(_review(url + "/r", concurrency=1, timeoutSeconds=60))  # one sender cancelled
        await _eventually(lambda: _count(m, failed, reason="cancelled") == 1)
        await reviews.close()  # the gateway stops: the other one is counted too
        assert _count(m, failed, reason="cancelled") == 2
        assert reviews.queued_bytes == 0


async def test_queued_reviews_go_to_the_current_webhook_after_a_url_change() -> None:
    """Reviews queued before the URL changed are sent to the new webhook (the old one's pool is closed)."""
    m = GatewayMetrics("prod", "iris")
    reviews = Reviews(m)
    received = Received()
    sent = contract.GATEWAY_REVIEWS_SENT.name
    with silent_listener() as old, serving(recorder(received, {"/new": lambda _: (200, {}, b"{}")})) as new:
        hook = reviews.webhook(_review(old + "/old", concurrency=1, timeoutSeconds=60))
        assert hook is not None
        for n in range(4):
            reviews.offer(ReviewJob(hook, b'{"n": %d}' % n, "stable", "r1"))
        await _eventually(lambda: reviews.in_flight == 1)  # one hangs on the old host; three wait
        reviews.webhook(_review(new + "/new", concurrency=1))
        await _eventually(lambda: _count(m, sent) == 3)
        assert sorted(received.to("/new")) == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
        failed = contract.GATEWAY_REVIEWS_FAILED.name
        assert _count(m, failed, reason="cancelled") == 1  # the one the restarted sender was sending
        assert _count(m, failed, reason="error") == 0
        await reviews.close()


async def test_reviews_still_queued_when_review_is_turned_off_are_counted_as_dropped() -> None:
    m = GatewayMetrics("prod", "iris")
    reviews = Reviews(m)
    with silent_listener() as url:
        hook = reviews.webhook(_review(url + "/r", concurrency=1, timeoutSeconds=60))
        assert hook is not None
        for _ in range(3):
            reviews.offer(ReviewJob(hook, b"{}", "stable", "r1"))
        await _eventually(lambda: reviews.in_flight == 1)
        reviews.webhook(None)
        dropped = contract.GATEWAY_REVIEWS_DROPPED.name
        failed = contract.GATEWAY_REVIEWS_FAILED.name
        await _eventually(lambda: _count(m, failed, reason="cancelled") == 1)
        assert _count(m, dropped, reason="cancelled") == 2
        assert reviews.queued_bytes == 0
        await reviews.close()


def _copy(pool: UpstreamPool, body: bytes) -> MirrorJob:
    """A mirrored inference request as the proxy builds it (host header of the shadow's pool)."""
    head = b"POST /v2/models/iris/infer HTTP/1.1\r\n%scontent-length: %d\r\n\r\n" % (pool.host_header, len(body))
    return MirrorJob(pool, "r1", 60.0, head + body, b'{"outputs": []}')


def _pool(url: str) -> UpstreamPool:
    host, port = url.removeprefix("http://").split(":")
    return UpstreamPool(host, int(port))


async def test_the_mirror_queue_is_bounded_by_bytes_not_only_by_count() -> None:
    """1024 copies of 64 MiB bodies would be 64 GiB while the shadow hangs; the byte cap drops the excess
    (queue_full) and counts the copy a worker is sending too."""
    m = GatewayMetrics("prod", "iris")
    mirror = Mirror(m)
    with silent_listener() as url:  # the shadow hangs: the worker keeps its copy, nothing else leaves
        pool = _pool(url)
        mirror.configure(queue_size=65536, concurrency=1)
        body = b"x" * (16 << 20)
        copy = _copy(pool, body)
        size = len(copy.request) + len(copy.primary_body)  # what a copy holds until a worker is done
        fits = MAX_QUEUED_BYTES // size
        for _ in range(fits + 3):
            mirror.offer(_copy(pool, body))
        dropped = contract.GATEWAY_MIRROR_DROPPED.name
        assert _count(m, dropped, track="shadow", reason="queue_full") == 3
        assert mirror.queued_bytes == fits * size <= MAX_QUEUED_BYTES
        await mirror.close()
        pool.close()


async def test_mirror_bytes_are_released_when_a_copy_is_answered() -> None:
    m = GatewayMetrics("prod", "iris")
    mirror = Mirror(m)
    received = Received()
    with serving(recorder(received, {"/v2/models/iris/infer": lambda _: (200, {}, b'{"outputs": []}')})) as url:
        pool = _pool(url)
        mirror.configure(queue_size=16, concurrency=2)
        for _ in range(5):
            mirror.offer(_copy(pool, b"{}" * 1000))
        await _eventually(lambda: len(received.requests) == 5 and mirror.queued_bytes == 0)
        assert _count(m, contract.GATEWAY_MIRROR_DROPPED.name, track="shadow", reason="queue_full") == 0
        await mirror.close()
        pool.close()


async def test_mirror_bytes_stay_counted_across_a_queue_resize() -> None:
    """A smaller queueSize re-offers the queued copies (the excess dropped) and restarts the workers: the
    copy a cancelled worker was sending gives its bytes back, the re-queued ones are counted once."""
    m = GatewayMetrics("prod", "iris")
    mirror = Mirror(m)
    with silent_listener() as url:
        pool = _pool(url)
        mirror.configure(queue_size=8, concurrency=1)
        body = b"x" * (1 << 20)
        copy = _copy(pool, body)
        size = len(copy.request) + len(copy.primary_body)
        for _ in range(4):
            mirror.offer(_copy(pool, body))
        sent = contract.GATEWAY_MIRRORED.name
        await _eventually(lambda: _count(m, sent, track="shadow") == 1)  # one in the worker's hands
        mirror.configure(queue_size=2, concurrency=1)  # three queued: two fit, one dropped
        assert _count(m, contract.GATEWAY_MIRROR_DROPPED.name, track="shadow", reason="queue_full") == 1
        await _eventually(lambda: _count(m, sent, track="shadow") == 2)  # the new worker took one
        assert mirror.queued_bytes == 2 * size
        await mirror.close()
        pool.close()
