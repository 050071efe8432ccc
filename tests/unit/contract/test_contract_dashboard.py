"""The chart's Grafana dashboard queries only series of the metrics contract and of the operator, as
docs/metrics.md documents them, and scopes every per-ModelDeployment series to the chosen one.

The allowed names are derived, never listed here: the series tables of docs/metrics.md (with their types,
which say whether a series is queried by its ``_bucket``/``_count``/``_sum``), which must equal the
contract's ``SERIES`` plus the operator's registry. Whether each query parses and returns data is the
component test's job (tests/component/gateway/test_gateway_dashboard.py, a real Prometheus).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest
from tests.support import dashboard
from tests.support.metrics_doc import METRICS_DOC, Documented, documented_series, exposed_names, operator_series

from mlrollout_serving.contract.metrics import SERIES

SCOPE = ('namespace="$namespace"', 'model_deployment="$model_deployment"')
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range"}


def documented() -> dict[str, Documented]:
    rows = documented_series(METRICS_DOC.read_text())
    # the docs are the contract plus the operator's registry, nothing else (both directions)
    assert set(rows) == {s.name for s in SERIES} | set(operator_series())
    return rows


def problems(board: Mapping[str, Any], rows: Mapping[str, Documented]) -> list[str]:
    """Every query's selectors that name an undocumented series, or a per-ModelDeployment series unscoped."""
    names = {exposed: name for name, row in rows.items() for exposed in exposed_names(name, row.kind)}
    contract = {s.name for s in SERIES}
    found = []
    exprs = [(f"{q.panel} {q.ref_id}", q.expr) for q in dashboard.queries(board)]
    exprs += [(f"variable {v.variable}", v.match) for v in dashboard.variable_queries(board) if v.match]
    for where, expr in exprs:
        selectors = dashboard.selectors(expr)
        if not selectors:
            found.append(f"{where}: no series in {expr!r}")
        for metric, matchers in selectors:
            name = names.get(metric)
            if name is None:
                found.append(f"{where}: {metric!r} is not a series of docs/metrics.md")
                continue
            per_md = name in contract or "model_deployment" in rows[name].labels
            if per_md and where.startswith("variable"):
                continue  # the variables choose the namespace and the ModelDeployment
            if per_md and not all(m in matchers for m in SCOPE):
                found.append(f"{where}: {metric}{{{matchers}}} is not scoped to $namespace/$model_deployment")
    return found


def test_every_query_uses_documented_series_scoped_to_the_chosen_model_deployment() -> None:
    board = dashboard.load()
    assert len(dashboard.queries(board)) >= 30
    assert problems(board, documented()) == []


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("mlrollout_gateway_requests_total{", "mlrollout_gateway_request_total{", "not a series of docs/metrics.md"),
        ("mlrollout_gateway_request_duration_seconds_bucket", "mlrollout_gateway_request_duration_seconds",
         "not a series"),  # a histogram is queried by its _bucket
        ('model_deployment="$model_deployment"', 'model_deployment=~".+"', "not scoped"),
    ],
)  # fmt: skip
def test_the_check_catches_a_misspelt_series_and_a_lost_scope(old: str, new: str, complaint: str) -> None:
    board = dashboard.load()
    broken = copy.deepcopy(board)
    for panel in broken["panels"]:
        for target in panel.get("targets", []):
            target["expr"] = target["expr"].replace(old, new)
    found = problems(broken, documented())
    assert found and all(complaint in p for p in found), found[:3]


def test_variables_data_source_and_layout() -> None:
    board = dashboard.load()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    namespace, model_deployment = dashboard.variable_queries(board)
    assert (namespace.variable, namespace.label) == ("namespace", "namespace")
    assert (model_deployment.variable, model_deployment.label) == ("model_deployment", "model_deployment")
    assert '{namespace="$namespace"}' in (model_deployment.match or "")  # the ModelDeployments of that namespace
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert board["uid"] == "mlrollout" and board["id"] is None  # importable anywhere, not tied to one Grafana
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"] and panel["description"], panel["title"]
    for query in dashboard.queries(board):
        assert dashboard.variables_used(query.expr) <= set(variables) | GRAFANA_BUILTINS, query


def test_selectors_of_promql() -> None:
    expr = (
        'sum by (track, le) (rate(a_bucket{x="y", code=~"[45].."}[$__rate_interval])) / ignoring(track) '
        "group_left() sum without (code) (b_total) or histogram_quantile(0.9, c) offset 5m and on() vector(1)"
    )
    assert dashboard.selectors(expr) == [("a_bucket", 'x="y",code=~"[45].."'), ("b_total", ""), ("c", "")]
    chosen = {"namespace": "ns", "__range": "5m"}
    assert dashboard.substitute('m{n="$namespace"}[${__range}]', chosen) == 'm{n="ns"}[5m]'
    with pytest.raises(KeyError, match="model_deployment"):
        dashboard.substitute('m{md="$model_deployment"}', {})
