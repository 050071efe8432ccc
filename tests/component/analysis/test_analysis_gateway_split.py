"""The traffic split of a Gateway API implementation, counted from its own per-backend request counter.

Traefik's Kubernetes Gateway provider counts every request it sends to a backendRef in
``traefik_service_requests_total{service="<namespace>-<service>-http-<port>@kubernetesgateway"}``, in one process,
in one scrape: the routed counts our own gateway's series would be. Here a loopback HTTP server exports that
counter in Traefik's format for two canary steps at 10%: ``right``, whose requests went the candidate's way
at random with the configured weight, and ``wrong``, an implementation that ignores weights and sends every
other request to the candidate. A real Prometheus scrapes it; ``collect_snapshot`` with the Traefik preset
(what the operator builds for a gatewayAPI canary step with ``gatewayAPI.splitQuery: traefik``) and ``judge``
decide: the right split passes the sample-ratio-mismatch check, the wrong one makes the verdict
inconclusive with the SRM reason.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from tests.support.httpd import Received, recorder, serving
from tests.support.prometheus import run_prometheus

from mlrollout.analysis import AnalysisTarget, PrometheusProvider, collect_snapshot, judge
from mlrollout.analysis.collect import SPLIT_SETTLE_SECONDS, BackendCounter
from mlrollout.analysis.queries import backend_split_template
from mlrollout.analysis.snapshot import RoutedCounts, Split

pytestmark = pytest.mark.component

NAMESPACE = "split-test"
PORT = 8080
CANDIDATE_SHARE = 0.1
REQUESTS = 4000
HELP = (
    "# HELP traefik_service_requests_total How many HTTP requests processed on a service, partitioned by "
    "status code, protocol, and method.\n# TYPE traefik_service_requests_total counter\n"
)


class TraefikCounters:
    """Traefik's per-service request counters (by code, method, protocol), as its /metrics writes them."""

    def __init__(self, services: list[str]) -> None:
        self.lock = threading.Lock()
        # every backend starts at zero, as Traefik's series do once a route names them
        self.counts = {(service, code): 0 for service in services for code in ("200", "503")}

    def add(self, service: str, code: str) -> None:
        with self.lock:
            self.counts[(service, code)] += 1

    def exposition(self) -> bytes:
        with self.lock:
            rows = sorted(self.counts.items())
        lines = [
            f'traefik_service_requests_total{{code="{code}",method="POST",protocol="http",service="{service}"}} {n}'
            for (service, code), n in rows
        ]
        return (HELP + "\n".join(lines) + '\ntraefik_entrypoint_requests_total{entrypoint="web"} 1\n').encode()


def traefik_service(md: str, revision: str) -> str:
    return f"{NAMESPACE}-{md}-{revision}-http-{PORT}@kubernetesgateway"


def route(counters: TraefikCounters, md: str, ignore_weights: bool, rng: random.Random) -> None:
    """``REQUESTS`` requests of one HTTPRoute at 90/10, over about two seconds; one in 50 answered 503."""
    for i in range(REQUESTS):
        to_candidate = i % 2 == 1 if ignore_weights else rng.random() < CANDIDATE_SHARE
        code = "503" if rng.random() < 0.02 else "200"
        counters.add(traefik_service(md, "r2" if to_candidate else "r1"), code)
        if i % 200 == 0:
            time.sleep(0.1)


def target(md: str) -> AnalysisTarget:
    """What the operator builds for a gatewayAPI canary step at 10% with the Traefik preset
    (reconcile.Reconciler._look): backends are the HTTPRoute's backendRefs, `<md>-<revision>` on PORT."""
    counter = BackendCounter(backend_split_template("traefik"), (f"{md}-r1", PORT), (f"{md}-r2", PORT))
    return AnalysisTarget(
        NAMESPACE, md, "r1", "r2", "model", split=Split(0.9, 0.1), gateway_in_path=False, backend_counter=counter
    )


def test_traefik_counters_pass_a_right_split_and_flag_one_that_ignores_weights() -> None:
    services = [traefik_service(md, rev) for md in ("right", "wrong") for rev in ("r1", "r2")]
    services.append("other-team-api-http-80@kubernetesgateway")  # another route's backend: never counted
    counters = TraefikCounters(services)
    metrics = {"/metrics": lambda _: (200, {"Content-Type": "text/plain; version=0.0.4"}, counters.exposition())}
    with serving(recorder(Received(), metrics)) as url, run_prometheus([url.removeprefix("http://")]) as prom:
        prom.wait_scraped([url.removeprefix("http://")], timeout=120)
        started = time.time()
        rng = random.Random(20261205)
        for _ in range(500):
            counters.add("other-team-api-http-80@kubernetesgateway", "200")
        route(counters, "right", ignore_weights=False, rng=rng)
        route(counters, "wrong", ignore_weights=True, rng=rng)
        total = f'sum(traefik_service_requests_total{{service=~"{NAMESPACE}-.*"}})'
        prom.wait_for(total, lambda v: v == 2 * REQUESTS, timeout=60)
        time.sleep(1.5)
        # a look SPLIT_SETTLE_SECONDS after the split settled: the window covers all of this traffic
        window = SPLIT_SETTLE_SECONDS + time.time() - started + 2.0
        provider = PrometheusProvider(prom.url)
        snaps = {md: collect_snapshot(provider, target(md), window) for md in ("right", "wrong")}

    right, wrong = snaps["right"], snaps["wrong"]
    assert right.error is None and wrong.error is None, (right.error, wrong.error)
    assert right.split is not None and right.split.observed is not None
    routed = right.split.observed
    assert routed.stable + routed.candidate == REQUESTS, routed  # every code, no other route's requests
    assert 0.08 < routed.candidate / REQUESTS < 0.12, routed
    assert wrong.split is not None and wrong.split.observed == RoutedCounts(REQUESTS // 2, REQUESTS // 2)

    passed = next(m for m in judge(right).metrics if m.name == "split")
    assert passed.decision == "pass", passed.reason
    flagged = judge(wrong)
    srm = next(m for m in flagged.metrics if m.name == "split")
    assert srm.decision == "inconclusive" and "SRM" in (srm.reason or ""), srm.reason
    assert flagged.verdict == "inconclusive" and "SRM" in flagged.reason, flagged.reason
