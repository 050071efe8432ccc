"""The inline run of a lone request (``Batcher.run_now``): taken only when it cannot change batching.

A request runs on the caller's stack only when the batcher is idle, no concurrency was seen (the last
batch held one request), the inputs are small and no other request ran inline in the same event-loop
turn. Everything else queues, so requests arriving together are still merged into one run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from tests.support.models import BuiltModel

from mlrollout_serving.server import config, loading
from mlrollout_serving.server.app import App
from mlrollout_serving.server.batching import Batcher, BatchSettings, Feed
from mlrollout_serving.server.http import Deferred, Reply, Request
from mlrollout_serving.server.metrics import ServerMetrics

Array = npt.NDArray[Any]


class Model:
    """A row-wise stand-in model that records the rows of every run."""

    def __init__(self) -> None:
        self.runs: list[int] = []

    def __call__(self, feed: Feed) -> list[Array]:
        x = feed["x"]
        if (x < 0).any():
            raise ValueError("negative input")
        self.runs.append(len(x))
        return [x.sum(axis=1), (x[:, 0] > 0).astype(np.int64)]


def make(model: Model, pool: concurrent.futures.Executor, **settings: Any) -> tuple[Batcher, list[int], list[int]]:
    batches: list[int] = []
    observed: list[int] = []
    batcher = Batcher(
        model,
        BatchSettings(enabled=True, pad_single_row=True, **settings),
        pool,
        lambda feed, out: observed.append(len(out[0])),
        batches.append,
    )
    return batcher, batches, observed


def row(value: float, n: int = 1) -> Feed:
    return {"x": np.full((n, 3), value, dtype=np.float32)}


def test_a_lone_request_runs_at_once_with_the_same_bookkeeping() -> None:
    async def go() -> None:
        model = Model()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            batcher, batches, observed = make(model, pool)
            out = batcher.run_now(row(2.0), 1)
            assert out is not None
            np.testing.assert_array_equal(out[0], [6.0])
            np.testing.assert_array_equal(out[1], [1])
            assert model.runs == [2]  # padded to two rows, as a queued single-row run is
            assert (batches, observed) == ([1], [1])
            await asyncio.sleep(0)  # the turn ends: the next lone request runs inline again
            assert batcher.run_now(row(1.0), 1) is not None
            assert batches == [1, 1]

    asyncio.run(go())


def test_requests_arriving_in_the_same_turn_still_merge() -> None:
    async def go() -> None:
        model = Model()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            batcher, batches, _ = make(model, pool)
            assert batcher.run_now(row(1.0), 1) is not None
            # Same turn: these queue and share one run.
            assert batcher.run_now(row(2.0), 1) is None
            futures = [batcher.submit(row(v), 1) for v in (2.0, 3.0, 4.0)]
            outs = await asyncio.gather(*futures)
            assert batches == [1, 3]
            assert [float(o[0][0]) for o in outs] == [6.0, 9.0, 12.0]
            # Concurrency was seen (the last batch held three requests): the next request queues too.
            assert batcher.run_now(row(1.0), 1) is None
            await batcher.submit(row(1.0), 1)
            assert batches == [1, 3, 1]
            await asyncio.sleep(0)
            assert batcher.run_now(row(1.0), 1) is not None  # a lone batch since: inline again

    asyncio.run(go())


def test_queued_work_or_large_inputs_are_never_overtaken() -> None:
    async def go() -> None:
        model = Model()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            batcher, batches, _ = make(model, pool, inline_elements=30)
            waiting = batcher.submit(row(1.0), 1)
            assert batcher.run_now(row(5.0), 1) is None  # something queued: keep arrival order
            await waiting
            await asyncio.sleep(0)
            assert batcher.run_now(row(1.0, n=11), 11) is None  # 33 elements: the worker thread's job
            big = batcher.submit(row(1.0, n=11), 11)
            await asyncio.sleep(0)  # the flush ran first in that turn: the big batch is on the worker thread
            assert batcher.run_now(row(1.0), 1) is None  # the model is busy
            await big
            assert batches[-1] == 11

    asyncio.run(go())


def test_a_lone_large_request_runs_inline_once_its_runs_are_known_to_be_short() -> None:
    async def go() -> None:
        model = Model()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            batcher, batches, _ = make(model, pool, inline_elements=30, inline_seconds=0.05)
            assert batcher.run_now(row(1.0, n=11), 11) is None  # cost unknown: the worker thread measures it
            await batcher.submit(row(1.0, n=11), 11)
            await asyncio.sleep(0)
            out = batcher.run_now(row(1.0, n=11), 11)  # 33 values, far below 50 ms: no thread hop
            assert out is not None
            np.testing.assert_array_equal(out[0], np.full(11, 3.0))
            assert batches == [11, 11]

    asyncio.run(go())


def test_a_lone_large_request_expected_to_be_slow_still_goes_to_the_worker_thread() -> None:
    class Slow(Model):
        def __call__(self, feed: Feed) -> list[Array]:
            time.sleep(0.002)
            return super().__call__(feed)

    async def go() -> None:
        model = Slow()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            batcher, _, _ = make(model, pool, inline_elements=30, inline_seconds=0.0005)
            await batcher.submit(row(1.0, n=11), 11)  # measured: ~2 ms for 33 values
            await asyncio.sleep(0)
            assert batcher.run_now(row(1.0, n=11), 11) is None  # longer than the budget: keep the loop free
            assert batcher.run_now(row(1.0, n=10), 10) is not None  # at most inline_elements: inline as before

    asyncio.run(go())


@pytest.mark.parametrize("overlap", [True, False], ids=["second-cpu", "one-cpu"])
def test_merged_large_batches_use_the_worker_thread_only_when_a_second_cpu_can_run_the_loop(overlap: bool) -> None:
    class Where(Model):
        def __init__(self) -> None:
            super().__init__()
            self.threads: list[int] = []

        def __call__(self, feed: Feed) -> list[Array]:
            self.threads.append(threading.get_ident())
            return super().__call__(feed)

    async def go() -> None:
        model = Where()
        loop_thread = threading.get_ident()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            batcher, batches, _ = make(model, pool, inline_elements=30, inline_seconds=0.05, overlap=overlap)
            await batcher.submit(row(1.0, n=11), 11)  # the first large run measures the cost on the worker
            outs = await asyncio.gather(*(batcher.submit(row(v, n=11), 11) for v in (1.0, 2.0)))
            assert batches == [11, 22]  # merged
            np.testing.assert_array_equal(outs[1][0], np.full(11, 6.0))
            assert model.threads[0] != loop_thread
            assert (model.threads[1] == loop_thread) is (not overlap)

    asyncio.run(go())


def test_a_failing_inline_run_raises_to_the_caller() -> None:
    async def go() -> None:
        model = Model()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            batcher, batches, observed = make(model, pool)
            with pytest.raises(ValueError, match="negative input"):
                batcher.run_now(row(-1.0), 1)
            assert (batches, observed) == ([], [])
            await asyncio.sleep(0)
            assert batcher.run_now(row(1.0), 1) is not None  # the batcher is still usable

    asyncio.run(go())


def test_the_app_answers_a_lone_request_at_once_and_a_concurrent_one_through_the_queue(
    wine_model: BuiltModel,
) -> None:
    settings = config.parse(["--model-uri", wine_model.uri, "--model-name", "wine"], {})
    metrics = ServerMetrics(settings.identity, "wine", "1")
    rows = wine_model.samples[:2]
    bodies = [
        json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 13], "data": r.tolist()}]}).encode()
        for r in rows
    ]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # as the server runs by default
    session = ort.InferenceSession(str(wine_model.path), opts, providers=["CPUExecutionProvider"])
    want = session.run(None, {"input": wine_model.samples})  # many rows: the multi-row kernels

    async def go() -> list[Reply]:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            app = App(settings, metrics, pool)
            app.set_model(loading.load(wine_model.path.read_bytes(), wine_model.sha256, 1, 1, 8), None)
            first = app.handle(Request("POST", "/v2/models/wine/infer", "", {}, bodies[0], 0.0))
            second = app.handle(Request("POST", "/v2/models/wine/versions/1/infer", "", {}, bodies[1], 0.0))
            assert isinstance(first, Reply)  # ran inline
            assert isinstance(second, Deferred)  # same event-loop turn: queued
            return [first, await second]

    replies = asyncio.run(go())
    for i, reply in enumerate(replies):
        assert reply.status == 200
        outputs = {o["name"]: o for o in json.loads(reply.body)["outputs"]}
        np.testing.assert_array_equal(np.array(outputs["label"]["data"]), want[0][i : i + 1])
        np.testing.assert_array_equal(np.array(outputs["probabilities"]["data"], dtype=np.float32), want[1][i])
    assert metrics.requests == {200: 2}
    assert metrics.batch_size.counts[0] == 2  # two runs of one row each


def test_each_event_loop_gets_its_own_end_of_turn() -> None:
    """The batcher remembers the loop of its last inline run; a later loop (one asyncio.run per call, as in
    tests) must get the end-of-turn callback, not the closed one."""
    model = Model()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        batcher, batches, _ = make(model, pool)

        async def go() -> None:
            assert batcher.run_now(row(1.0), 1) is not None
            assert batcher.run_now(row(1.0), 1) is None  # same turn
            await asyncio.sleep(0)
            assert batcher.run_now(row(1.0), 1) is not None  # the end of the turn ran on this loop

        for _ in range(3):
            asyncio.run(go())
            asyncio.run(asyncio.sleep(0))  # a loop without inline runs in between
        assert batches == [1] * 6
