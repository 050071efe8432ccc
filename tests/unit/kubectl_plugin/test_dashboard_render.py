"""The dashboard's pure parts: the HTML of the list and detail pages, the SVG plots, command checks."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import yaml
from tests.support.argocd import CUSTOMIZATION

from mlrollout.api import RolloutPolicySpec
from mlrollout.api.modeldeployment import ModelDeployment
from mlrollout.kubectl_plugin import plots, web
from mlrollout.kubectl_plugin.dashboard import Dashboard, _status_of
from mlrollout.kubectl_plugin.kube import KubeError
from mlrollout.rollout.lookhistory import LookHistory, LookPoint, MetricPoint

FIXTURES = CUSTOMIZATION / "testdata"
NOW = datetime(2026, 11, 26, 6, 24, 0, tzinfo=UTC)


def fixture(name: str) -> ModelDeployment:
    return ModelDeployment.model_validate(yaml.safe_load((FIXTURES / f"{name}.yaml").read_text()))


def looks(n: int) -> LookHistory:
    return LookHistory(
        candidate="c81f03aa92de0000",
        looks=[
            LookPoint(time=f"2026-11-26T06:{10 + i:02d}:00Z", verdict="continue", stable_percent=80,
                      candidate_percent=20, mirror_percent=0, alpha=0.05,
                      metrics=[MetricPoint(name="errorRate", decision="inconclusive", stable=0.01, candidate=0.012,
                                           effect=0.002, interval=(-0.01, 0.01 + i / 100), e_value=2.0**i,
                                           threshold=0.02)])
            for i in range(n)
        ],
    )  # fmt: skip


def test_list_row_shows_phase_versions_split_step_and_verdict() -> None:
    md = fixture("04-canary-20")
    row = web.list_row(md)
    cells = re.findall(r"<td>(.*?)</td>", row)
    namespace = md.metadata["namespace"]
    assert row.startswith(f'<tr id="{namespace}/wine">')
    assert cells[0] == f'<a href="/md/{namespace}/wine">wine</a>'
    assert cells[2:] == ['<span class="phase Progressing">Progressing</span>', "v1", "v2", "80/20",
                         "2 (canary)", "continue (06:23:10)"]  # fmt: skip


def test_everything_from_the_cluster_is_escaped() -> None:
    md = fixture("04-canary-20")
    assert md.status is not None and md.status.last_analysis is not None
    md.status.last_analysis.reason = "<script>alert(1)</script>"
    body = web.detail_body(md, None, None, None, NOW)
    assert "<script>" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_detail_shows_steps_plots_history_and_the_command_buttons() -> None:
    md = fixture("04-canary-20")
    steps = list(RolloutPolicySpec().strategy.steps)
    body = web.detail_body(md, steps, looks(5), None, NOW)
    assert 'class="current"' in body and "<progress" in body
    for verb, _ in web.VERBS:
        assert f'data-verb="{verb}"' in body
    assert "errorRate: estimate per track" in body and "errorRate: e-value (log scale)" in body
    assert body.count("<svg") == 4  # the split, and three per metric
    assert "1/alpha 20" in body  # the e-value's threshold line
    assert "5 looks of candidate c81f03aa92de" in body


def test_detail_says_why_the_looks_are_missing() -> None:
    md = fixture("04-canary-20")
    refused = web.detail_body(md, None, None, "get configmap ml/wine-looks: forbidden: no", NOW)
    assert "Look history unavailable: get configmap ml/wine-looks: forbidden: no" in refused
    assert "No looks recorded" in web.detail_body(md, None, None, None, NOW)


def test_plot_scales_to_what_is_drawn_and_breaks_lines_at_gaps() -> None:
    svg = plots.render(plots.Plot("p", [plots.Series("s", [1.0, None, 3.0, 4.0], "stable")], lines=[("limit", 5.0)]))
    assert svg.count("<polyline") == 1 and svg.count("<circle") == 1  # a lone point is a dot
    assert ">5<" in svg and ">1<" in svg  # the y range covers the limit line
    assert 'points="56.0,22.0' not in svg


def test_log_plot_leaves_out_what_a_log_scale_cannot_show() -> None:
    svg = plots.render(plots.Plot("e", [plots.Series("e", [0.0, 1.0, 10.0, 100.0], "evidence")], log_y=True))
    assert ">100<" in svg and ">1<" in svg
    assert "no data yet" in plots.render(plots.Plot("e", [plots.Series("e", [0.0, None], "evidence")], log_y=True))


def test_refusal_names_what_was_refused() -> None:
    html = web.refusal("read modeldeployment ml/wine", "get modeldeployment ml/wine: forbidden: User cannot get")
    assert 'role="alert"' in html and "Not allowed: read modeldeployment ml/wine" in html


def test_kube_errors_map_to_http_statuses() -> None:
    assert _status_of("patch modeldeployment a/b: forbidden: x") == HTTPStatus.FORBIDDEN
    assert _status_of("get modeldeployment a/b: not found: x") == HTTPStatus.NOT_FOUND
    assert _status_of("something else") == HTTPStatus.BAD_GATEWAY


class Refusing:
    """Stands in for the cluster in checks that must stop before any API call, or be refused by it."""

    def merge_patch(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        raise KubeError(f"patch modeldeployment {namespace}/{name}: forbidden: no patch for you")


def test_bad_commands_are_refused_with_a_reason_before_any_api_call() -> None:
    d = Dashboard(Refusing(), None)  # type: ignore[arg-type]
    cases: list[tuple[Any, str]] = [
        ([], "must be a JSON object"),
        ({"namespace": "ml", "name": "", "verb": "promote"}, "non-empty strings"),
        ({"namespace": "ml", "name": "wine", "verb": "explode"}, "verb must be one of"),
        ({"namespace": "ml", "name": "wine", "verb": "promote", "toRevision": 2}, "only with undo"),
        ({"namespace": "ml", "name": "wine", "verb": "undo", "toRevision": 0}, "1 or more"),
        ({"namespace": "ml", "name": "wine", "verb": "undo", "toRevision": True}, "1 or more"),
    ]
    for payload, reason in cases:
        status, message = d.command(payload)
        assert status == HTTPStatus.BAD_REQUEST and reason in message, (payload, message)
    status, message = d.command({"namespace": "ml", "name": "wine", "verb": "abort"})
    assert status == HTTPStatus.FORBIDDEN and "no patch for you" in message
