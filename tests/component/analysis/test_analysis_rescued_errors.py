"""A candidate whose failures the fallback chain hides from every client is still rolled back.

A real gateway splits 70/30 between a real ``mlrollout-serve`` (stable, scikit-learn's wine model) and an
upstream that answers every tenth request with a 500 (the candidate, ``fake_upstream.py``), under the
default FallbackPolicy's chain ``[stable, refuse]``: each failed candidate request is answered by stable,
so every client gets a 200. Prometheus (the Debian binary) scrapes both; ``collect_snapshot`` and ``judge``
must still see the candidate's failures as its errors (``errorRate.harm`` fails) and count the rescued
requests as the candidate's, which keeps the traffic-split check's routed counts right too.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.component.gateway.gateway_helpers import (
    LoadResult,
    Proc,
    RouteFile,
    control,
    fake_upstream,
    fallback,
    gateway,
    infer_body,
    load,
    metric_sum,
    table,
    upstream_count,
)
from tests.support.models import BuiltModel
from tests.support.procs import serve_model
from tests.support.prometheus import PrometheusProcess, run_prometheus

from mlrollout.analysis import AnalysisTarget, PrometheusProvider, Snapshot, collect_snapshot, judge
from mlrollout.analysis.collect import SPLIT_SETTLE_SECONDS
from mlrollout.analysis.snapshot import Split
from mlrollout_serving.contract.metrics import GATEWAY_FALLBACK_REQUESTS

pytestmark = pytest.mark.component

NAMESPACE = "rescued-test"
NAME = "wine"
WEIGHT = 30
REQUESTS = 800
FAIL_EVERY = 10  # the candidate fails 10 % of the requests it gets
INFER = f"/v2/models/{NAME}/infer"


@dataclass
class World:
    prometheus: PrometheusProcess
    gateway: Proc
    candidate: Proc
    sent: LoadResult
    started: float

    def snapshot(self) -> Snapshot:
        """The canary step's look: the gateway's evidence, with the configured split (its counts start
        ``SPLIT_SETTLE_SECONDS`` into the window, so the window reaches that far before the load)."""
        target = AnalysisTarget(NAMESPACE, NAME, "rev-stable", "rev-candidate", "gateway",
                                split=Split((100 - WEIGHT) / 100, WEIGHT / 100))  # fmt: skip
        window = time.time() - self.started + 5.0 + SPLIT_SETTLE_SECONDS
        return collect_snapshot(PrometheusProvider(self.prometheus.url, timeout=10), target, window)


@pytest.fixture(scope="module")
def world(wine_model: BuiltModel) -> Iterator[World]:
    labels = {"namespace": NAMESPACE, "model_deployment": NAME, "track": "stable", "revision": "rev-stable"}
    with contextlib.ExitStack() as stack:
        routes = RouteFile(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rescued-"))))
        stable = stack.enter_context(serve_model(wine_model, name=NAME, labels=labels))
        candidate = stack.enter_context(fake_upstream("candidate"))
        control(candidate, fail_every=FAIL_EVERY)
        chain = fallback({"action": "stable"}, {"action": "refuse"})  # the default FallbackPolicy's
        routes.write(table(1, stable.url, candidate.url, WEIGHT, **chain))
        gw = stack.enter_context(gateway(routes, namespace=NAMESPACE, model_deployment=NAME))
        scrape = [stable.host_port, f"127.0.0.1:{gw.port}"]
        prometheus = stack.enter_context(run_prometheus(scrape, scrape_interval="1s"))
        prometheus.wait_scraped(scrape, timeout=120)
        started = time.time()
        rows = wine_model.samples
        bodies = [infer_body(rows[i : i + 1]) for i in range(len(rows))]
        sent = load(gw.url + INFER, bodies, count=REQUESTS, concurrency=4)
        prometheus.wait_for(
            f'sum(mlrollout_gateway_requests_total{{namespace="{NAMESPACE}"}})',
            lambda v: v is not None and v >= REQUESTS,
            timeout=60,
        )
        time.sleep(2.0)  # one more scrape, so every series of the gateway has its final count
        yield World(prometheus, gw, candidate, sent, started)


def test_every_client_got_a_200_and_the_gateway_counted_each_rescue_once(world: World) -> None:
    assert world.sent.statuses == {200: REQUESTS} and not world.sent.errors
    failures = upstream_count(world.candidate) // FAIL_EVERY
    assert failures > 0  # ... though the candidate failed some
    rescued = metric_sum(world.gateway.url, GATEWAY_FALLBACK_REQUESTS.name, track="candidate", reason="error",
                         answered="stable")  # fmt: skip
    assert rescued == metric_sum(world.gateway.url, GATEWAY_FALLBACK_REQUESTS.name) == failures


def test_rescued_failures_are_the_candidates_errors_and_roll_it_back(world: World) -> None:
    routed = upstream_count(world.candidate)  # every request routed to the candidate reached it once
    failures = routed // FAIL_EVERY
    snap = world.snapshot()
    assert snap.error is None, snap
    assert (snap.candidate.requests, snap.candidate.errors) == (routed, failures)
    assert (snap.stable.requests, snap.stable.errors) == (REQUESTS - routed, 0)
    result = judge(snap)
    harm = next(m for m in result.metrics if m.name == "errorRate.harm")
    assert harm.decision == "fail", harm.reason
    assert result.verdict == "rollback", result.reason
    split = next(m for m in result.metrics if m.name == "split")
    assert split.decision == "pass", split.reason  # the routed share is the configured 30 %
    assert snap.split is not None and snap.split.observed is not None
    assert (snap.split.observed.stable, snap.split.observed.candidate) == (REQUESTS - routed, routed)
