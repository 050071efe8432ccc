"""Labels wait for the label worker in a bounded queue (docs/gateway.md, "Labels never delay inference"): a
real gateway with a queue of one label and a real wine model server, a flood of labels from 32 keep-alive
connections beside steady inference. Labels beyond the queue are refused at once with 503 ``busy`` and
``retry-after``, counted; a retry counts them, so every label is counted exactly once and nothing is lost
silently; inference beside the flood is answered throughout. With two replicas, a label forwarded to the
minting replica whose queue is full is relayed as 503 ``busy`` (not counted by the forwarder as if that
replica were gone: a retry would then have counted it twice).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.component.gateway.gateway_helpers import RouteFile, feedback_keys, gateway, metric_sum, table
from tests.support.models import BuiltModel
from tests.support.procs import free_port, serve_model

from mlrollout_serving.contract import metrics as contract

pytestmark = pytest.mark.component

IDS = 600
FLOOD = 32
JSON = {"content-type": "application/json"}


def _infer(model: BuiltModel, row: int) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "shape": [1, model.n_features], "datatype": "FP32",
                                   "data": model.samples[row].tolist()}]}).encode()  # fmt: skip


async def _ids(base: str, model: BuiltModel) -> list[tuple[str, int]]:
    """(feedback id, true class) of IDS answers."""
    out: list[tuple[str, int]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as session:

        async def one(i: int) -> None:
            row = i % len(model.samples)
            async with session.post(base + "/v2/models/wine/infer", data=_infer(model, row), headers=JSON) as resp:
                assert resp.status == 200
                out.append((resp.headers["x-mlrollout-feedback-id"], int(model.sample_targets[row])))

        await asyncio.gather(*(one(i) for i in range(IDS)))
    return out


async def _flood(base: str, model: BuiltModel, ids: list[tuple[str, int]]) -> tuple[dict[int, int], int, list[int]]:
    """Every label sent until it is answered 202 (a 503 is retried); steady inference beside it. Returns the
    statuses of the label answers, the 503s seen, and the inference statuses."""
    statuses: dict[int, int] = {}
    busy = 0
    inference: list[int] = []
    done = asyncio.Event()
    pending = list(ids)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=FLOOD + 1)) as session:

        async def labels() -> None:
            nonlocal busy
            while pending:
                feedback_id, truth = pending.pop()
                while True:
                    body = json.dumps({"feedback_id": feedback_id, "label": truth})
                    async with session.post(base + "/v2/models/wine/feedback", data=body, headers=JSON) as resp:
                        answer: dict[str, Any] = await resp.json()
                        statuses[resp.status] = statuses.get(resp.status, 0) + 1
                        if resp.status != 503:
                            assert (resp.status, answer) == (202, {"counted": 1, "paired": False}), answer
                            break
                        assert answer["reason"] == "busy" and resp.headers["retry-after"] == "1", answer
                        busy += 1
                    await asyncio.sleep(0.01)  # sooner than asked: the test's own impatience

        async def steady() -> None:
            row = 0
            while not done.is_set():
                async with session.post(base + "/v2/models/wine/infer", data=_infer(model, row), headers=JSON) as r:
                    await r.read()
                    inference.append(r.status)
                row = (row + 1) % len(model.samples)
                await asyncio.sleep(0.002)

        steady_task = asyncio.create_task(steady())
        await asyncio.gather(*(labels() for _ in range(FLOOD)))
        done.set()
        await steady_task
    return statuses, busy, inference


def test_a_full_label_queue_answers_busy_at_once_and_loses_nothing(wine_model: BuiltModel, tmp_path: Path) -> None:
    with serve_model(wine_model, name="wine") as stable:
        routes = RouteFile(tmp_path)
        routes.write(table(1, stable.url))
        flags = ("--feedback-keys", str(feedback_keys(tmp_path)), "--feedback-queue", "1")
        with gateway(routes, *flags, model_deployment="wine") as gw:
            ids = asyncio.run(_ids(gw.url, wine_model))
            statuses, busy, inference = asyncio.run(_flood(gw.url, wine_model, ids))
            counted = metric_sum(gw.url, contract.GATEWAY_FEEDBACK_LABELS.name)
            refused = metric_sum(gw.url, contract.GATEWAY_FEEDBACK_REFUSED.name, reason="busy")
            others = metric_sum(gw.url, contract.GATEWAY_FEEDBACK_REFUSED.name) - refused
    assert statuses.get(202) == IDS and set(statuses) <= {202, 503}, statuses
    assert busy > 0, "32 connections never found the one-label queue full"
    assert (counted, refused, others) == (IDS, busy, 0)  # every label once, every refusal counted
    assert inference and set(inference) == {200}, inference


def test_a_busy_minting_replica_is_relayed_to_the_client_and_nothing_counts_twice(
    wine_model: BuiltModel, tmp_path: Path
) -> None:
    keys = str(feedback_keys(tmp_path))
    with serve_model(wine_model, name="wine") as stable:
        routes = RouteFile(tmp_path)
        routes.write(table(1, stable.url))
        port = free_port()
        replicas = []
        for host, queue in (("127.0.0.2", "1"), ("127.0.0.3", "256")):
            flags = ("--feedback-keys", keys, "--pod-ip", host, "--feedback-queue", queue)
            replicas.append(gateway(routes, *flags, model_deployment="wine", host=host, port=port))
        with replicas[0] as minter, replicas[1] as other:
            ids = asyncio.run(_ids(minter.url, wine_model))
            statuses, busy, _ = asyncio.run(_flood(other.url, wine_model, ids))  # forwarded to the minter
            counted = [metric_sum(r.url, contract.GATEWAY_FEEDBACK_LABELS.name) for r in (minter, other)]
            unpaired = [metric_sum(r.url, contract.GATEWAY_FEEDBACK_UNPAIRED.name) for r in (minter, other)]
            refused = metric_sum(minter.url, contract.GATEWAY_FEEDBACK_REFUSED.name, reason="busy")
    assert statuses.get(202) == IDS and set(statuses) <= {202, 503}, statuses
    assert (counted, unpaired, refused) == ([IDS, 0], [0, 0], busy)  # before: counted by the forwarder, unpaired
    assert busy > 0, "the forwarded flood never found the minting replica's one-label queue full"
