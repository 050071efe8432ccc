"""The chart's Grafana dashboard against a real Prometheus scraping a real gateway and real model servers.

One ModelDeployment as the dashboard sees it: a gateway splitting 70/30 between stable (scikit-learn's
wine model) and a candidate (trained on shuffled labels), mirroring every request to a shadow, with a
confidence threshold whose low answers fall back to stable, feedback ids and labels sent back, a few bad
requests; every model server bins its inputs on a reference profile. Prometheus (the Debian binary)
scrapes each second. Every panel query and every template variable, with the variables substituted as
Grafana would, goes through Prometheus' HTTP API as Grafana sends it (``query_range``): each must parse
(no 400), and each must return data except the few whose series this world cannot have (regressors, the
operator, retries and drops that did not happen), listed in ``NO_DATA_HERE``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.component.gateway.gateway_helpers import RouteFile, gateway, request
from tests.support import dashboard
from tests.support.models import BuiltModel
from tests.support.procs import serve_model
from tests.support.prometheus import PrometheusProcess, run_prometheus

from mlrollout_serving import profile
from mlrollout_serving.contract import metrics as contract

pytestmark = pytest.mark.component

NAMESPACE, MD = "dashboard-test", "wine"
REQUESTS = 240
BAD_REQUESTS = 6
# Seconds between requests: the load spans many scrapes, so rate() sees the counters grow (a burst shorter
# than a scrape interval gives series born at their final value, whose rate is 0).
PACE = 0.04
INFER = "/v2/models/wine/infer"
# Grafana's built-in variables, as Grafana would fill them for "the last 5 minutes"
BUILTINS = {"__rate_interval": "1m", "__interval": "5s", "__range": "5m"}
# Panels (or one query of a panel) whose series this world cannot have: no regressor, no operator, no
# refused connect, no copy dropped, no label that beat the shadow's answer.
NO_DATA_HERE = {
    ("Shadow copies/s", "B"),
    ("Predicted value p10 / p50 / p90 by track (regressors)", None),
    ("Upstream connect retries/s", None),
    ("Shadow absolute difference p50 / p90 (regressors)", None),
    ("Mean absolute error by track (regressors)", None),
    ("Feedback refused and unpaired/s", "B"),
    ("Rollouts ended by outcome", None),
    ("Operator reconcile errors/s", None),
    ("Current phase", None),
    ("Phase over time", None),
    ("Analysis looks by verdict", None),
    ("Step duration p50 / p90 by kind", None),
}


@dataclass
class World:
    prometheus: PrometheusProcess
    statuses: dict[int, int]


def _labels(track: str) -> dict[str, str]:
    return {"namespace": NAMESPACE, "model_deployment": MD, "track": track, "revision": f"r-{track}"}


def _body(model: BuiltModel, row: int) -> dict[str, Any]:
    data = model.samples[row % len(model.samples)]
    return {"inputs": [{"name": "input", "shape": [1, model.n_features], "datatype": "FP32", "data": data.tolist()}]}


def _reference_profile(model: BuiltModel, workdir: Path) -> Path:
    train, out = workdir / "train.npy", workdir / "profile.json"
    np.save(train, model.train)
    assert profile.cli_main(["-o", str(out), "--model", str(model.path), "--bins", "6", str(train)]) == 0
    return out


@contextlib.contextmanager
def _world(good: BuiltModel, worse: BuiltModel, plausible: BuiltModel, workdir: Path) -> Iterator[World]:
    keys = workdir / "keys"
    keys.write_text(json.dumps({"1": base64.b64encode(os.urandom(32)).decode()}))
    args = ["--reference-profile", str(_reference_profile(good, workdir))]
    with contextlib.ExitStack() as stack:
        servers = {
            track: stack.enter_context(serve_model(model, name="wine", labels=_labels(track), extra_args=args))
            for track, model in (("stable", good), ("candidate", worse), ("shadow", plausible))
        }
        # about half the candidate's answers fall below the threshold and are answered by stable instead
        tops = sorted(max(request(servers["candidate"].url + INFER, _body(good, i)).body["outputs"][1]["data"])
                      for i in range(len(good.samples)))  # fmt: skip
        routes = RouteFile(workdir)
        routes.write({
            "version": 3, "mode": "canary",
            "tracks": {"stable": {"upstream": servers["stable"].url, "revision": "r-stable", "weight": 70},
                       "candidate": {"upstream": servers["candidate"].url, "revision": "r-candidate", "weight": 30}},
            "mirror": {"upstream": servers["shadow"].url, "revision": "r-shadow", "percent": 100},
            "fallback": {"chain": [{"action": "stable"}, {"action": "refuse"}],
                         "confidenceThreshold": tops[len(tops) // 2], "lowConfidenceAction": {"action": "stable"}},
        })  # fmt: skip
        flags = ("--feedback-keys", str(keys))
        gw = stack.enter_context(gateway(routes, *flags, namespace=NAMESPACE, model_deployment=MD))
        scrape = [s.host_port for s in servers.values()] + [f"127.0.0.1:{gw.port}"]
        prometheus = stack.enter_context(run_prometheus(scrape, scrape_interval="1s"))
        prometheus.wait_scraped(scrape, timeout=120)
        statuses: dict[int, int] = {}
        bad = {"inputs": [{"name": "no-such-input", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}
        for i in range(REQUESTS + BAD_REQUESTS):
            time.sleep(PACE)
            answer = request(gw.url + INFER, _body(good, i) if i < REQUESTS else bad)
            statuses[answer.status] = statuses.get(answer.status, 0) + 1
            if i < REQUESTS:
                label = int(good.sample_targets[i % len(good.samples)])
                sent = request(gw.url + "/v2/models/wine/feedback",
                               {"feedback_id": answer.body["parameters"]["feedback_id"], "label": label})  # fmt: skip
                assert sent.status == 202, sent.body
        assert request(gw.url + "/v2/models/wine/feedback", {"feedback_id": "x" * 40, "label": 1}).status == 400
        scoped = f'namespace="{NAMESPACE}",model_deployment="{MD}"'
        prometheus.wait_for(f"sum({contract.GATEWAY_REQUESTS.name}{{{scoped}}})",
                            lambda v: v is not None and v >= REQUESTS + BAD_REQUESTS)  # fmt: skip
        prometheus.wait_for(f"sum({contract.GATEWAY_FEEDBACK_REFUSED.name}{{{scoped}}})", lambda v: v == 1)
        time.sleep(2.0)  # one more scrape of the model servers, which count a moment after the gateway
        yield World(prometheus, statuses)


@pytest.fixture(scope="module")
def world(
    wine_model: BuiltModel,
    wine_worse_model: BuiltModel,
    wine_plausible_model: BuiltModel,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    with _world(wine_model, wine_worse_model, wine_plausible_model, tmp_path_factory.mktemp("dashboard")) as w:
        yield w


def values() -> dict[str, str]:
    return {"namespace": NAMESPACE, "model_deployment": MD, "datasource": "prometheus", **BUILTINS}


def send(prometheus: PrometheusProcess, query: dashboard.Query) -> tuple[int, dict[str, Any]]:
    """The query as Grafana sends it: instant at now, or over the last two minutes with a point every 5 s."""
    expr, end = dashboard.substitute(query.expr, values()), time.time()
    if query.instant:
        return prometheus.api("query", [("query", expr), ("time", f"{end:.3f}")])
    params = [("query", expr), ("start", f"{end - 120:.3f}"), ("end", f"{end:.3f}"), ("step", "5")]
    return prometheus.api("query_range", params)


def finite_points(body: dict[str, Any]) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every point that is a number (a ratio of zero rates is NaN: no data to draw)."""
    results = body["data"]["result"]
    points = [(r["metric"], v) for r in results for _, v in (r["values"] if "values" in r else [r["value"]])]
    return [(labels, float(v)) for labels, v in points if math.isfinite(float(v))]


def test_every_panel_query_parses_and_returns_data(world: World) -> None:
    assert world.statuses.get(200, 0) == REQUESTS and sum(world.statuses.values()) == REQUESTS + BAD_REQUESTS
    queries = dashboard.queries(dashboard.load())
    titles = {q.panel for q in queries}
    assert {title for title, _ in NO_DATA_HERE} <= titles  # the exceptions name real panels
    refused, empty, data = [], [], {}
    for q in queries:
        status, body = send(world.prometheus, q)
        if status != 200:
            refused.append(f"{q.panel} {q.ref_id}: HTTP {status} {body.get('error')}")
            continue
        points = finite_points(body)
        data[(q.panel, q.ref_id)] = points
        allowed_empty = (q.panel, None) in NO_DATA_HERE or (q.panel, q.ref_id) in NO_DATA_HERE
        if not points and not allowed_empty:
            empty.append(f"{q.panel} {q.ref_id}: {dashboard.substitute(q.expr, values())}")
    print(f"{len(queries)} queries, {sum(1 for p in data.values() if p)} with data")
    assert refused == []
    assert empty == [], "\n".join(empty)

    def tracks(panel: str, ref: str = "A") -> set[str]:
        return {labels.get("track", "") for labels, _ in data[(panel, ref)]}

    # the core panels show each track that served traffic
    assert tracks("Requests/s by track (gateway)") == {"stable", "candidate"}
    for ref in "ABC":
        assert tracks("Gateway latency p50 / p90 / p99 by track", ref) == {"stable", "candidate"}
        assert tracks("Model server latency p50 / p90 / p99 by track", ref) == {"stable", "candidate", "shadow"}
    codes = {labels["code"] for labels, _ in data[("Errors/s by track and code (gateway)", "A")]}
    assert codes and all(c.startswith("4") for c in codes)  # the bad requests, and no 5xx
    shares = [v for _, v in data[("Traffic share by track (gateway)", "A")]]
    assert all(0.0 <= v <= 1.0 for v in shares)
    rescued = {(lb["track"], lb["reason"], lb["answered"]) for lb, _ in
               data[("Fallback requests/s by track, reason and answer", "A")]}  # fmt: skip
    assert rescued == {("candidate", contract.LOW_CONFIDENCE, "stable")}


def test_template_variables_list_the_model_deployment(world: World) -> None:
    found = {}
    for var in dashboard.variable_queries(dashboard.load()):
        params = [("match[]", dashboard.substitute(var.match, values()))] if var.match else []
        status, body = world.prometheus.api(f"label/{var.label}/values", params)
        assert status == 200, body
        found[var.variable] = body["data"]
    assert found == {"namespace": [NAMESPACE], "model_deployment": [MD]}
