"""A canary rollout under steady load: the table walks 0 -> 5 -> 25 -> 50 -> 100 -> 0 while the candidate
model server is killed mid-way. With a fallback to stable configured, no client request may fail."""

from __future__ import annotations

import threading
import time

import pytest
from tests.component.gateway.gateway_helpers import (
    LoadResult,
    RouteFile,
    gateway,
    infer_body,
    load_until,
    metric_samples,
    table,
)
from tests.component.gateway.gateway_helpers import request as http_request
from tests.support.models import BuiltModel
from tests.support.procs import ServerProcess, start_server
from tests.support.waiting import wait_for

pytestmark = pytest.mark.component

WINE = "/v2/models/wine/infer"
STEPS = (0.0, 5.0, 25.0, 50.0, 100.0, 0.0)
HOLD_SECONDS = 2.0  # traffic per step; the walk is bounded to ~15 s in all


def test_rollout_walk_with_candidate_killed_midway_loses_no_request(
    routes: RouteFile, wine_model: BuiltModel, wine_worse_model: BuiltModel, wine_stable: ServerProcess
) -> None:
    candidate = start_server(wine_worse_model, name="wine")
    fallback = {"requestTimeoutSeconds": 5.0, "chain": [{"action": "stable"}]}
    bodies = [infer_body(wine_model.samples[i : i + 1]) for i in range(len(wine_model.samples))]
    try:
        routes.write(table(1, wine_stable.url, candidate.url, STEPS[0], fallback=fallback))
        with gateway(routes) as gw:
            stop = threading.Event()
            results: list[LoadResult] = []
            traffic = threading.Thread(target=lambda: results.append(load_until(gw.url + WINE, bodies, stop)))
            traffic.start()
            try:
                for version, weight in enumerate(STEPS, start=1):
                    if version > 1:
                        routes.write(table(version, wine_stable.url, candidate.url, weight, fallback=fallback))

                        def routed(v: int = version) -> bool:
                            return http_request(gw.url + WINE, bodies[0]).version == v

                        wait_for(routed, what=f"route table v{version}")
                    if weight == 50.0:  # mid-way: the candidate dies with requests in flight
                        time.sleep(HOLD_SECONDS / 2)
                        candidate.proc.kill()
                        candidate.proc.wait(10)
                        print(f"candidate killed during v{version} ({weight:g}%)")
                        time.sleep(HOLD_SECONDS / 2)
                    else:
                        time.sleep(HOLD_SECONDS)
            finally:
                stop.set()
                traffic.join(60)
            result = results[0]
            fallbacks = {
                (labels["reason"], labels["action"]): value
                for name, labels, value in metric_samples(gw.url)
                if name == "mlrollout_gateway_fallbacks_total"
            }
            print(
                f"\nrollout under load: {result.total} requests, failed {result.failed}, "
                f"statuses {result.statuses}, by track {result.tracks}, "
                f"by route version {dict(sorted(result.versions.items()))}, fallbacks {fallbacks}"
            )
            assert result.failed == 0, result.errors[:5]
            assert result.total > 100
            assert result.tracks.get("candidate", 0) > 0  # the candidate really served before it died
            assert sum(fallbacks.values()) > 0  # and its death was absorbed by the fallback
            assert set(result.versions) <= set(range(1, len(STEPS) + 1))
    finally:
        candidate.stop()
        candidate.log_path.unlink(missing_ok=True)
