"""The analysis engine against a real Prometheus scraping real model servers behind the real gateway.

Three rollouts run side by side, each a gateway splitting traffic between two real ``mlrollout-serve``
processes with real ONNX models (scikit-learn's wine data):

- ``aa``: the same model on both tracks, split 50/50, which must not be rolled back. An even split keeps
  the two processes equally busy: at 70/30 the less-used candidate process answers measurably slower on a
  shared 2-core machine (CPU wake-ups), which is a real difference, not an A/A;
- ``worse`` (70/30): the candidate was trained on shuffled labels (its predictions drift), which must be rolled back;
- ``slow`` (70/30): the same model, but 40 ms of latency injected in front of the candidate, which must be rolled back.

A fourth gateway, ``shadow``, sends every request to stable and a copy of each to the candidate, for the
traffic-split check's mirror counts; the split check of ``aa`` holds its 50/50 against the gateway's counts.

Prometheus (the Debian binary) scrapes every process each second; ``collect_snapshot`` queries it with the
PromQL the operator uses and ``judge`` decides. A Prometheus that goes away gives ``inconclusive``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from tests.component.analysis.slow_proxy import slow_proxy
from tests.support.models import BuiltModel
from tests.support.procs import free_port, running, send_inferences, serve_model
from tests.support.prometheus import PrometheusProcess, run_prometheus

from mlrollout.analysis import AnalysisTarget, PrometheusProvider, Snapshot, collect_snapshot, judge
from mlrollout.analysis.collect import SPLIT_SETTLE_SECONDS
from mlrollout.analysis.snapshot import Split
from mlrollout.api.analysis import Judgement, MetricResult

pytestmark = pytest.mark.component

NAMESPACE = "analysis-test"
CANDIDATE_WEIGHT = {"aa": 50, "worse": 30, "slow": 30, "shadow": 0}
# Requests per rollout. Prediction evidence counts requests, not rows (a request's rows share a route),
# so the worse model needs more requests than the latency regression for the same certainty.
REQUESTS = {"aa": 600, "worse": 1500, "slow": 600, "shadow": 300}
ROWS_PER_REQUEST = 4
INJECTED_DELAY = 0.040


@dataclass
class Rollout:
    name: str
    gateway_port: int
    target: AnalysisTarget
    sent: int = 0
    failed: int = 0


@contextlib.contextmanager
def gateway(name: str, stable_port: int, candidate_port: int, workdir: Path) -> Iterator[int]:
    """A real ``mlrollout-gateway`` splitting ``CANDIDATE_WEIGHT[name]`` between two upstreams; yields its port."""
    routes = workdir / f"routes-{name}.json"
    stable = {"upstream": f"http://127.0.0.1:{stable_port}", "revision": "r-stable"}
    candidate = {"upstream": f"http://127.0.0.1:{candidate_port}", "revision": "r-candidate"}
    table: dict[str, Any]
    if CANDIDATE_WEIGHT[name]:
        table = {"tracks": {"stable": {**stable, "weight": 100 - CANDIDATE_WEIGHT[name]},
                            "candidate": {**candidate, "weight": CANDIDATE_WEIGHT[name]}}}  # fmt: skip
    else:  # shadow: every request to stable, a copy of each to the candidate
        table = {"tracks": {"stable": {**stable, "weight": 100}}, "mirror": {**candidate, "percent": 100}}
    routes.write_text(json.dumps({"version": 1, "mode": "canary", **table}))
    port = free_port()
    cmd = [sys.executable, "-m", "mlrollout_serving.gateway", "--host", "127.0.0.1", "--port", str(port),
           "--routes-file", str(routes), "--namespace", NAMESPACE, "--model-deployment", name]  # fmt: skip
    with running(cmd, port, "/v2/health/ready", prefix=f"gateway-{name}-"):
        yield port


def labels(name: str, track: str) -> dict[str, str]:
    revision = "r-stable" if track == "stable" else "r-candidate"
    return {"namespace": NAMESPACE, "model_deployment": name, "track": track, "revision": revision}


def send_load(rollout: Rollout, rows: np.ndarray[Any, Any], count: int) -> None:
    """``count`` sequential inference requests of ``ROWS_PER_REQUEST`` rows through the gateway."""
    for status in send_inferences(rollout.gateway_port, rows, count, ROWS_PER_REQUEST):
        rollout.sent += 1
        rollout.failed += status >= 500


def at_least(n: float) -> Callable[[float | None], bool]:
    return lambda v: v is not None and v >= n


@dataclass
class World:
    prometheus: PrometheusProcess
    rollouts: dict[str, Rollout]
    started: float
    gateway_targets: list[str]

    def window(self) -> float:
        return time.time() - self.started + 5.0

    def snapshot(
        self, name: str, source: Literal["gateway", "model"] = "gateway", split: Split | None = None
    ) -> Snapshot:
        """The rollout's snapshot; with a configured ``split`` over a window long enough that the split's
        counts (which start ``SPLIT_SETTLE_SECONDS`` into it) cover all the load."""
        target = dataclasses.replace(self.rollouts[name].target, source=source, split=split)
        window = self.window() + (SPLIT_SETTLE_SECONDS if split is not None else 0.0)
        return collect_snapshot(PrometheusProvider(self.prometheus.url, timeout=10), target, window)


@pytest.fixture(scope="module")
def world(wine_model: BuiltModel, wine_worse_model: BuiltModel) -> Iterator[World]:
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="analysis-component-")))
        rollouts: dict[str, Rollout] = {}
        scrape: list[str] = []
        gateways: list[str] = []
        for name, candidate_model, delay in (("aa", wine_model, 0.0), ("worse", wine_worse_model, 0.0),
                                             ("slow", wine_model, INJECTED_DELAY),
                                             ("shadow", wine_model, 0.0)):  # fmt: skip
            stable = stack.enter_context(serve_model(wine_model, name="wine", labels=labels(name, "stable")))
            candidate = stack.enter_context(serve_model(candidate_model, name="wine", labels=labels(name, "candidate")))
            upstream = stack.enter_context(slow_proxy(candidate.port, delay)) if delay else candidate.port
            port = stack.enter_context(gateway(name, stable.port, upstream, workdir))
            scrape += [stable.host_port, candidate.host_port, f"127.0.0.1:{port}"]
            gateways.append(f"127.0.0.1:{port}")
            target = AnalysisTarget(NAMESPACE, name, "r-stable", "r-candidate", "gateway", None)
            rollouts[name] = Rollout(name, port, target)
        prometheus = stack.enter_context(run_prometheus(scrape, scrape_interval="1s"))
        prometheus.wait_scraped(scrape, timeout=120)
        started = time.time()
        threads = [
            threading.Thread(target=send_load, args=(r, wine_model.samples, REQUESTS[r.name]), daemon=True)
            for r in rollouts.values()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        for r in rollouts.values():
            assert r.sent == REQUESTS[r.name], f"{r.name}: only {r.sent} requests completed"
            # wait until Prometheus has scraped the final counts of every gateway
            sent = REQUESTS[r.name]
            prometheus.wait_for(
                f'sum(mlrollout_gateway_requests_total{{model_deployment="{r.name}"}})',
                at_least(sent),
                timeout=60,
            )
        # and the copies the shadow gateway sends after answering
        prometheus.wait_for('sum(mlrollout_gateway_mirrored_requests_total{model_deployment="shadow"})',
                            at_least(REQUESTS["shadow"]), timeout=60)  # fmt: skip
        time.sleep(2.0)  # one more scrape of the model servers, which count a moment after the gateway
        yield World(prometheus, rollouts, started, gateways)


def metric(result: Judgement, name: str) -> MetricResult:
    return next(m for m in result.metrics if m.name == name)


def test_snapshot_counts_match_what_was_sent(world: World) -> None:
    snap = world.snapshot("aa")
    assert snap.error is None, snap
    total = snap.stable.requests + snap.candidate.requests
    assert total == REQUESTS["aa"]  # exact integers, not increase()'s extrapolation
    share = snap.candidate.requests / total
    assert 0.4 < share < 0.6  # half routed to the candidate, within sampling noise
    for counts in (snap.stable, snap.candidate):
        assert counts.latency is not None and counts.latency.total == counts.requests
        assert counts.predictions is not None
        assert sum(counts.predictions.values()) == ROWS_PER_REQUEST * counts.requests
    assert not snap.warnings  # cumulative and monotone without forcing
    model_side = world.snapshot("aa", source="model")
    assert model_side.candidate.requests == snap.candidate.requests


def test_aa_pair_is_not_rolled_back(world: World) -> None:
    result = judge(world.snapshot("aa"))
    print(json.dumps(result.to_json()))
    assert result.verdict in ("continue", "promote"), result.reason
    assert all(m.decision != "fail" for m in result.metrics)
    assert metric(result, "predictionDrift").decision == "pass"


def test_worse_model_is_rolled_back_for_prediction_drift(world: World) -> None:
    result = judge(world.snapshot("worse"))
    assert result.verdict == "rollback", result.reason
    drift, harm = metric(result, "predictionDrift"), metric(result, "errorRate.harm")
    assert drift.decision == "fail"
    assert drift.effect is not None and drift.threshold is not None
    assert drift.effect > drift.threshold  # PSI above maxPsi ...
    # ... and significant: drift's alpha share is half a harm test's (judge.split_alpha), so its bar is twice as high
    assert drift.e_value is not None and harm.threshold is not None and drift.e_value >= 2 * harm.threshold


def test_injected_latency_is_rolled_back(world: World) -> None:
    result = judge(world.snapshot("slow"))
    assert result.verdict == "rollback", result.reason
    harm = metric(result, "latency.harm")
    assert harm.decision == "fail"
    assert harm.estimate is not None and harm.estimate.candidate is not None and harm.estimate.stable is not None
    assert harm.estimate.candidate > harm.estimate.stable + INJECTED_DELAY / 2
    assert metric(result, "predictionDrift").decision != "fail"


def test_the_gateways_routed_counts_hold_the_configured_split(world: World) -> None:
    snap = world.snapshot("aa", split=Split(0.5, 0.5))
    assert snap.split is not None and snap.split.observed is not None
    observed = snap.split.observed
    assert (observed.stable, observed.candidate) == (snap.stable.requests, snap.candidate.requests)
    assert observed.stable + observed.candidate == REQUESTS["aa"]
    split = metric(judge(snap), "split")
    assert split.decision == "pass", split.reason


def test_a_split_other_than_the_configured_one_makes_the_look_inconclusive(world: World) -> None:
    result = judge(world.snapshot("aa", split=Split(0.8, 0.2)))  # the route table says 20%, the gateway did 50%
    assert result.verdict == "inconclusive"
    assert result.reason.startswith("traffic split ") and "observed vs 20% configured (SRM, e=" in result.reason


def test_mirror_copies_are_counted_against_the_requests_that_could_be_copied(world: World) -> None:
    snap = world.snapshot("shadow", split=Split(1.0, 0.0, mirror=1.0))
    assert snap.split is not None and snap.split.observed is not None
    observed = snap.split.observed
    assert (observed.stable, observed.candidate) == (REQUESTS["shadow"], 0)
    assert observed.mirrored == observed.mirror_eligible == REQUESTS["shadow"]
    assert metric(judge(snap), "split").decision == "pass"
    half = judge(world.snapshot("shadow", split=Split(1.0, 0.0, mirror=0.5)))
    assert "mirror share 100% observed vs 50% configured (SRM, e=" in half.reason


def test_stopped_prometheus_gives_inconclusive(world: World) -> None:
    with run_prometheus(world.gateway_targets[:1], scrape_interval="1s") as prom:
        prom.wait_scraped(world.gateway_targets[:1], timeout=120)
        provider = PrometheusProvider(prom.url, timeout=5)
        target = world.rollouts["aa"].target
        assert collect_snapshot(provider, target, 60.0).error is None
        prom.stop()
        snap = collect_snapshot(provider, target, 60.0)
    assert snap.error == f"Prometheus at {prom.url} is unreachable: Connection refused"
    result = judge(snap)
    assert result.verdict == "inconclusive"
    assert result.reason == f"no evidence: {snap.error}"  # one line for people: what failed, where
