"""Micro-batching: the pure merge/split logic and the scheduler with a stand-in model function."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlrollout_serving.server.batching import (
    Batcher,
    BatchSettings,
    Feed,
    Job,
    feed_key,
    merge,
    pad_single_row,
    split,
    take_batch,
)

Array = npt.NDArray[Any]


def model(feed: Feed) -> list[Array]:
    """A row-wise function of the input, like a real model: sums and a per-row label."""
    x = feed["x"]
    return [x.sum(axis=1), (x[:, 0] > 0).astype(np.int64)]


@given(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=8))
def test_split_inverts_merge(rows: list[int]) -> None:
    feeds = [{"x": np.full((n, 2), i, dtype=np.float32)} for i, n in enumerate(rows)]
    merged = merge(feeds)
    assert merged["x"].shape == (sum(rows), 2)
    parts = split([merged["x"]], rows)
    for feed, part in zip(feeds, parts, strict=True):
        np.testing.assert_array_equal(part[0], feed["x"])


def test_pad_single_row_repeats_the_row() -> None:
    padded = pad_single_row({"x": np.array([[1.0, 2.0]], dtype=np.float32)})
    np.testing.assert_array_equal(padded["x"], [[1.0, 2.0], [1.0, 2.0]])


def job(rows: int, width: int = 2) -> Job:
    loop = asyncio.new_event_loop()
    try:
        return Job({"x": np.zeros((rows, width), dtype=np.float32)}, rows, loop.create_future())
    finally:
        loop.close()


def test_take_batch_respects_max_rows_order_and_shapes() -> None:
    jobs = [job(3), job(2), job(1, width=5), job(4), job(1)]
    batch, rest = take_batch(jobs, max_rows=6)
    assert [j.rows for j in batch] == [3, 2, 1]
    assert all(feed_key(j.feed) == ((2,),) for j in batch)
    assert rest == [jobs[2], jobs[3]]
    big, rest2 = take_batch([job(10), job(1)], max_rows=4)
    assert [j.rows for j in big] == [10] and len(rest2) == 1


async def run_concurrently(settings: BatchSettings, inputs: list[Array]) -> tuple[list[list[Array]], list[int]]:
    batches: list[int] = []
    observed: list[int] = []
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        batcher = Batcher(model, settings, pool, lambda feed, out: observed.append(len(out[0])), batches.append)
        futures = [batcher.submit({"x": x}, len(x)) for x in inputs]
        results = await asyncio.gather(*futures)
    assert observed == batches
    return results, batches


@pytest.mark.parametrize("inline_elements", [0, 10_000], ids=["worker-thread", "inline"])
def test_concurrent_requests_are_merged_and_results_identical(inline_elements: int) -> None:
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=(int(n), 3)).astype(np.float32) for n in rng.integers(1, 4, size=20)]
    on = BatchSettings(enabled=True, pad_single_row=True, max_rows=16, inline_elements=inline_elements)
    off = BatchSettings(enabled=False, pad_single_row=True, inline_elements=inline_elements)
    merged, merged_batches = asyncio.run(run_concurrently(on, inputs))
    alone, alone_batches = asyncio.run(run_concurrently(off, inputs))
    assert len(alone_batches) == len(inputs)
    assert len(merged_batches) < len(inputs)
    assert max(merged_batches) <= 16
    assert sum(merged_batches) == sum(len(x) for x in inputs)
    for x, a, b in zip(inputs, merged, alone, strict=True):
        for got, want, direct in zip(a, b, model({"x": x}), strict=True):
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(got, direct)


def test_single_row_runs_are_padded_and_unpadded() -> None:
    seen: list[int] = []

    def spy(feed: Feed) -> list[Array]:
        seen.append(len(feed["x"]))
        return model(feed)

    async def go() -> list[Array]:
        settings = BatchSettings(enabled=True, pad_single_row=True)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return await Batcher(spy, settings, pool, lambda f, o: None).submit({"x": np.ones((1, 3))}, 1)

    out = asyncio.run(go())
    assert seen == [2]
    assert [o.shape[0] for o in out] == [1, 1]


def test_a_failing_request_does_not_fail_its_batch_neighbours() -> None:
    def picky(feed: Feed) -> list[Array]:
        if (feed["x"] < 0).any():
            raise ValueError("negative input")
        return model(feed)

    async def go() -> list[Any]:
        settings = BatchSettings(enabled=True, pad_single_row=False, max_rows=8)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            batcher = Batcher(picky, settings, pool, lambda f, o: None)
            futures = [batcher.submit({"x": np.full((1, 2), v)}, 1) for v in (1.0, -1.0, 2.0)]
            return await asyncio.gather(*futures, return_exceptions=True)

    good1, bad, good2 = asyncio.run(go())
    assert isinstance(bad, ValueError)
    assert not isinstance(good1, BaseException) and not isinstance(good2, BaseException)
    np.testing.assert_array_equal(good1[0], [2.0])
    np.testing.assert_array_equal(good2[0], [4.0])


def test_max_wait_collects_requests_once_concurrency_was_seen() -> None:
    async def go() -> list[int]:
        batches: list[int] = []
        settings = BatchSettings(enabled=True, pad_single_row=True, max_rows=64, max_wait=0.5)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            batcher = Batcher(model, settings, pool, lambda f, o: None, batches.append)
            await asyncio.gather(*(batcher.submit({"x": np.ones((1, 2))}, 1) for _ in range(2)))
            first = batcher.submit({"x": np.ones((1, 2))}, 1)
            await asyncio.sleep(0.01)  # arrives later, but well within max_wait
            second = batcher.submit({"x": np.ones((1, 2))}, 1)
            await asyncio.gather(first, second)
        return batches

    assert asyncio.run(go()) == [2, 2]
