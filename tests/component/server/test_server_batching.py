"""Micro-batching with real servers: concurrent requests are merged, and every answer is identical to
the one an unbatched server gives (and to onnxruntime on the same rows)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.component.server.conftest import get, infer_body, outputs_of, reference
from tests.support.models import BuiltModel
from tests.support.procs import ServerProcess, serve_model

from mlrollout_serving.contract import metrics as contract

pytestmark = pytest.mark.component

REQUESTS = 240
CONCURRENCY = 48


@pytest.fixture(scope="module")
def servers(wine_model: BuiltModel) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with (
        serve_model(wine_model, name="wine", extra_args=["--batching", "on", "--max-batch-wait-ms", "2"]) as on,
        serve_model(wine_model, name="wine", extra_args=["--batching", "off"]) as off,
    ):
        yield on, off


async def fire(port: int, bodies: list[bytes]) -> list[dict[str, Any]]:
    """Send all bodies with CONCURRENCY requests in flight; return the decoded outputs in order."""
    sem = asyncio.Semaphore(CONCURRENCY)
    url = f"http://127.0.0.1:{port}/v2/models/wine/infer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def one(body: bytes) -> dict[str, Any]:
            async with sem, session.post(url, data=body) as resp:
                raw = await resp.read()
                assert resp.status == 200, raw
                return outputs_of(raw)

        return await asyncio.gather(*(one(b) for b in bodies))


def runs_and_rows(port: int) -> tuple[float, float]:
    status, text = get(port, "/metrics")
    assert status == 200
    for fam in text_string_to_metric_families(text.decode()):
        if fam.name == contract.MODEL_BATCH_SIZE.name:
            values = {s.name: s.value for s in fam.samples}
            return values[contract.MODEL_BATCH_SIZE.name + "_count"], values[contract.MODEL_BATCH_SIZE.name + "_sum"]
    raise AssertionError("no batch size histogram")


def test_batched_results_are_identical_to_unbatched(
    servers: tuple[ServerProcess, ServerProcess], wine_model: BuiltModel
) -> None:
    on, off = servers
    rng = np.random.default_rng(11)
    picks = [rng.choice(len(wine_model.samples), size=int(rng.integers(1, 4))) for _ in range(REQUESTS)]
    bodies = [infer_body(wine_model, wine_model.samples[p]) for p in picks]
    runs_before, _ = runs_and_rows(on.port)
    batched = asyncio.run(fire(on.port, bodies))
    unbatched = asyncio.run(fire(off.port, bodies))
    want = reference(wine_model, wine_model.samples)
    for p, a, b in zip(picks, batched, unbatched, strict=True):
        for i, name in enumerate(wine_model.output_names):
            np.testing.assert_array_equal(a[name], b[name])
            np.testing.assert_array_equal(a[name], want[i][p])
    runs, rows = runs_and_rows(on.port)
    assert rows == sum(len(p) for p in picks)
    assert runs - runs_before < REQUESTS, "no request was merged with another"
    off_runs, _ = runs_and_rows(off.port)
    assert off_runs == REQUESTS
