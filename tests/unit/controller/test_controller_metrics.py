"""The operator's own series: docs/metrics.md ("Operator") documents exactly the registry's, with their types;
the per-ModelDeployment series speak the API's vocabularies and end with their ModelDeployment."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import cast

from tests.support import dashboard
from tests.support.metrics_doc import METRICS_DOC, OPERATOR_PREFIX, documented_series, operator_series

from mlrollout.api.analysis import VERDICTS
from mlrollout.api.modeldeployment import PHASES
from mlrollout.controller import handlers, metrics

on_delete = cast(Callable[..., None], handlers.on_delete)  # kopf types its handlers as its own callback protocol


def test_docs_list_every_operator_series_with_its_type() -> None:
    rows = documented_series(METRICS_DOC.read_text())
    documented = {name: row.kind for name, row in rows.items() if name.startswith(OPERATOR_PREFIX)}
    assert documented == operator_series()


def test_forget_knows_every_per_model_deployment_series_and_its_other_label() -> None:
    """A new per-ModelDeployment series missing from PER_MODEL_DEPLOYMENT would outlive its ModelDeployment."""
    rows = documented_series(METRICS_DOC.read_text())
    per_md = {name: row.labels for name, row in rows.items() if "model_deployment" in row.labels}
    known = {
        family.name + ("_total" if family.type == "counter" else ""): ("namespace", "model_deployment", other)
        for metric, other in metrics.PER_MODEL_DEPLOYMENT
        for family in metric.collect()
    }
    assert known == {name: labels for name, labels in per_md.items() if name.startswith(OPERATOR_PREFIX)}


def _row(name: str) -> str:
    found = re.search(rf"^\| `{name}` \|.*$", METRICS_DOC.read_text(), re.MULTILINE)
    assert found, name
    return found.group(0)


def test_docs_name_every_phase_and_verdict_of_the_api() -> None:
    assert all(f"`{phase}`" in _row("mlrollout_operator_phase") for phase in PHASES)
    assert all(f"`{verdict}`" in _row("mlrollout_operator_looks_total") for verdict in VERDICTS)


def test_the_dashboard_colours_every_phase() -> None:
    panels = {p["title"]: p for p in dashboard.load()["panels"]}
    for title in ("Current phase", "Phase over time"):
        named = {o["matcher"]["options"] for o in panels[title]["fieldConfig"]["overrides"]}
        assert named == set(PHASES), title


def _labels_of(namespace: str, name: str) -> list[dict[str, str]]:
    return [
        sample.labels
        for family in metrics.REGISTRY.collect()
        for sample in family.samples
        if sample.labels.get("namespace") == namespace and sample.labels.get("model_deployment") == name
    ]


def test_phase_is_one_for_the_current_phase_and_zero_for_the_others() -> None:
    metrics.set_phase("unit", "gauge", "Paused")
    metrics.set_phase("unit", "gauge", "Degraded")
    values = {labels["phase"]: metrics.REGISTRY.get_sample_value("mlrollout_operator_phase", labels)
              for labels in _labels_of("unit", "gauge")}  # fmt: skip
    assert values == {phase: 1.0 if phase == "Degraded" else 0.0 for phase in PHASES}
    metrics.set_phase("unit", "gauge", None)  # no phase yet: every series 0, none 1
    zeros = {metrics.REGISTRY.get_sample_value("mlrollout_operator_phase", lb) for lb in _labels_of("unit", "gauge")}
    assert zeros == {0.0}
    metrics.forget("unit", "gauge")


def test_the_delete_handler_drops_every_series_of_that_model_deployment_only() -> None:
    for name in ("gone", "kept"):
        metrics.set_phase("unit", name, "Progressing")
        metrics.observe_look("unit", name, "rollback", 0.2)
        metrics.RECONCILE_ERRORS.labels("unit", name, "ApiException").inc()
    on_delete(namespace="unit", name="gone")
    assert _labels_of("unit", "gone") == []
    kept = {(lb.get("phase"), lb.get("verdict"), lb.get("error")) for lb in _labels_of("unit", "kept")}
    assert {("Progressing", None, None), (None, "rollback", None), (None, None, "ApiException")} <= kept
    on_delete(namespace="unit", name="kept")
    assert _labels_of("unit", "kept") == []
