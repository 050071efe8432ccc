"""Batched looks against a real Prometheus: the same snapshots as looks taken one by one, from far fewer
requests (issue 19, the analysis at N ModelDeployments).

Three real gateways (``b-0`` 50 %, ``b-1`` 30 %, ``b-2`` 10 % to the candidate) route real wine inferences
to the same two real model servers (labelled as ``b-0``'s tracks). Prometheus scrapes every process each
second. At one instant, each look is taken alone (``collect_snapshot``, one request per query) and all
together (``collect_snapshots``: unions of the built-in queries); the snapshots are equal, and Prometheus'
own request counter says how many requests each way cost. A Prometheus that cannot be reached fails every
look of the batch with its error, after one attempt.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.support.models import BuiltModel
from tests.support.procs import free_port, running, send_inferences, serve_model
from tests.support.prometheus import PrometheusProcess, run_prometheus

from mlrollout.analysis import AnalysisTarget, Measurement, PrometheusProvider, collect_snapshot
from mlrollout.analysis.batch import PARALLEL, LookRequest, collect_snapshots
from mlrollout.analysis.collect import SPLIT_SETTLE_SECONDS
from mlrollout.analysis.snapshot import Split
from mlrollout.api.rolloutpolicy import CustomMetric
from mlrollout.controller.lookbatch import LookBatcher

pytestmark = pytest.mark.component

NAMESPACE = "batch-test"
WEIGHTS = {"b-0": 50, "b-1": 30, "b-2": 10}
REQUESTS = 150
SERVERS_MD = "b-0"  # the model servers carry b-0's labels


@dataclass
class Counting:
    """The real provider, counting the requests it sends."""

    inner: PrometheusProvider
    requests: list[str] = field(default_factory=list)

    def query(self, promql: str, at: float | None = None) -> Measurement:
        self.requests.append(promql)
        return self.inner.query(promql, at)


@dataclass
class World:
    prometheus: PrometheusProcess
    started: float


def served_queries(prometheus: PrometheusProcess) -> float:
    """Instant queries Prometheus has answered (its own counter, read from its /metrics)."""
    with urllib.request.urlopen(f"{prometheus.url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line
    )


@contextlib.contextmanager
def gateway(name: str, stable_port: int, candidate_port: int, workdir: Path) -> Iterator[int]:
    routes = workdir / f"routes-{name}.json"
    tracks = {
        "stable": {"upstream": f"http://127.0.0.1:{stable_port}", "revision": "r-stable",
                   "weight": 100 - WEIGHTS[name]},
        "candidate": {"upstream": f"http://127.0.0.1:{candidate_port}", "revision": "r-candidate",
                      "weight": WEIGHTS[name]},
    }  # fmt: skip
    routes.write_text(json.dumps({"version": 1, "mode": "canary", "tracks": tracks}))
    port = free_port()
    cmd = [sys.executable, "-m", "mlrollout_serving.gateway", "--host", "127.0.0.1", "--port", str(port),
           "--routes-file", str(routes), "--namespace", NAMESPACE, "--model-deployment", name]  # fmt: skip
    with running(cmd, port, "/v2/health/ready", prefix=f"gateway-{name}-"):
        yield port


def labels(track: str) -> dict[str, str]:
    revision = "r-stable" if track == "stable" else "r-candidate"
    return {"namespace": NAMESPACE, "model_deployment": SERVERS_MD, "track": track, "revision": revision}


@pytest.fixture(scope="module")
def world(wine_model: BuiltModel) -> Iterator[World]:
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="analysis-batch-")))
        stable = stack.enter_context(serve_model(wine_model, name="wine", labels=labels("stable")))
        candidate = stack.enter_context(serve_model(wine_model, name="wine", labels=labels("candidate")))
        ports = {name: stack.enter_context(gateway(name, stable.port, candidate.port, workdir)) for name in WEIGHTS}
        scrape = [stable.host_port, candidate.host_port, *(f"127.0.0.1:{p}" for p in ports.values())]
        prometheus = stack.enter_context(run_prometheus(scrape, scrape_interval="1s"))
        prometheus.wait_scraped(scrape, timeout=120)
        started = time.time()
        for name, port in ports.items():
            statuses = list(send_inferences(port, wine_model.samples, REQUESTS, 2))
            assert statuses == [200] * REQUESTS, name
        for name in WEIGHTS:
            prometheus.wait_for(f'sum(mlrollout_gateway_requests_total{{model_deployment="{name}"}})',
                                lambda v: v is not None and v >= REQUESTS, timeout=60)  # fmt: skip
        # every gateway's requests reached the servers: b-0's labels, all three gateways' traffic
        prometheus.wait_for(f'sum(mlrollout_model_inference_requests_total{{model_deployment="{SERVERS_MD}"}})',
                            lambda v: v is not None and v >= REQUESTS * len(WEIGHTS), timeout=60)  # fmt: skip
        time.sleep(2.5)  # one more scrape of every process
        yield World(prometheus, started)


def looks(world: World, at: float) -> list[LookRequest]:
    window = at - world.started + 5.0
    query = 'sum(mlrollout_gateway_requests_total{model_deployment="{{modelDeployment}}",track="{{track}}"})'
    queue = CustomMetric(name="queue", query=query, max=1e9)

    def target(name: str, **kw: object) -> AnalysisTarget:
        return AnalysisTarget(NAMESPACE, name, "r-stable", "r-candidate", **kw)  # type: ignore[arg-type]

    return [
        LookRequest(target("b-0", split=Split(0.5, 0.5)), window + SPLIT_SETTLE_SECONDS),
        LookRequest(target("b-1"), window + 17.0),
        LookRequest(target("b-2", split=Split(0.9, 0.1)), window + SPLIT_SETTLE_SECONDS + 3.0, custom=(queue,)),
        LookRequest(target(SERVERS_MD, source="model"), window, quality=True),
    ]


def test_batched_snapshots_equal_looks_taken_alone_from_fewer_requests(world: World) -> None:
    at = time.time()
    batch = looks(world, at)
    alone_provider = Counting(PrometheusProvider(world.prometheus.url, timeout=10))
    before = served_queries(world.prometheus)
    alone = [
        collect_snapshot(alone_provider, x.target, x.window_seconds, custom=x.custom, quality=x.quality, at=at)
        for x in batch
    ]
    between = served_queries(world.prometheus)
    batched_provider = Counting(PrometheusProvider(world.prometheus.url, timeout=10))
    batched = collect_snapshots(batched_provider, batch, at)
    after = served_queries(world.prometheus)

    assert batched == alone
    for snap in alone:
        assert snap.error is None, snap.error
        assert snap.stable.requests > 0 and snap.candidate.requests > 0
    assert [s.stable.requests + s.candidate.requests for s in alone[:3]] == [REQUESTS] * 3
    assert alone[0].split is not None and alone[0].split.observed is not None
    assert alone[0].split.observed.stable + alone[0].split.observed.candidate == REQUESTS
    assert alone[2].custom["queue"].candidate is not None
    # Prometheus served exactly the requests each way sent
    assert between - before == len(alone_provider.requests)
    assert after - between == len(batched_provider.requests)
    # one look alone: a request per query; together: unions of about 40 queries (25,000 characters), and
    # the custom query per track
    assert len(alone_provider.requests) >= 4 * 12
    assert len(batched_provider.requests) <= 2 + 6 < len(alone_provider.requests) / 10
    print(f"requests alone {len(alone_provider.requests)}, batched {len(batched_provider.requests)}")


def test_an_unreachable_prometheus_fails_every_look_of_the_batch_after_few_attempts(world: World) -> None:
    provider = Counting(PrometheusProvider(f"http://127.0.0.1:{free_port()}", timeout=2))
    snapshots = collect_snapshots(provider, looks(world, time.time()), time.time())
    assert 1 <= len(provider.requests) <= PARALLEL  # those in flight when the first failed; no more
    errors = {s.error for s in snapshots}
    assert len(errors) == 1
    (error,) = errors
    assert error is not None and "is unreachable" in error


def test_looks_read_from_a_batch_taken_ahead_the_snapshots_they_would_have_taken_alone_then(world: World) -> None:
    """The operator's batcher (controller/lookbatch.py) against the real Prometheus: the first looks are taken
    alone; the batch taken ahead of the next ones (its own step, on a scripted clock in the past, so every
    instant has been scraped) serves them without a request, and each snapshot equals the look taken alone
    at the batch's instant with its own window."""
    now = time.time()
    clock = [now - 3.0]
    provider = Counting(PrometheusProvider(world.prometheus.url, timeout=10))
    batcher = LookBatcher(provider, ttl=2.0, clock=lambda: clock[0], tick=1.0)
    first = looks(world, now - 3.0)[1:]  # one look per ModelDeployment (b-0's gateway look left out)
    for x in first:  # due again 2 s later (interval 2 s, tick 1 s), so batched from 1 s later on (lead 1 s)
        batcher.snapshot(x.target, x.window_seconds, interval=2.0, custom=x.custom, quality=x.quality)
    assert batcher.counts.alone == len(first) and batcher.counts.batches == 0
    clock[0] = at = now - 1.5
    batcher.prefetch()
    assert batcher.counts.batches == 1 and batcher.counts.batched_looks == len(first)
    sent = len(provider.requests)
    clock[0] = now - 1.0
    got = [
        batcher.snapshot(x.target, x.window_seconds + 2.0, interval=2.0, custom=x.custom, quality=x.quality)
        for x in first
    ]
    assert len(provider.requests) == sent and batcher.counts.served == len(first)  # the looks only read
    alone_provider = PrometheusProvider(world.prometheus.url, timeout=10)
    alone = [
        collect_snapshot(
            alone_provider, x.target, at - ((now - 3.0) - x.window_seconds), custom=x.custom, quality=x.quality, at=at
        )
        for x in first
    ]
    assert got == alone
    assert all(s.error is None and s.stable.requests > 0 and s.candidate.requests > 0 for s in got)
