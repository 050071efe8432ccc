"""Rows a model gave no prediction for count against it, through real model servers, a real gateway and a
real Prometheus (docs/gateway.md, "Feedback"; the rule is contract.feedback's "A row without a prediction").

- A canary whose candidate (a linear fit) overflows to NaN on rows of huge features: those labelled rows are
  the candidate's, an error of the clip bound each; the operator's collection reads the rows it divides by
  and the clipped sums in agreement, and its quality estimate is the one the client computes.
- A candidate that fails every request, rescued by the `stable` fallback: the client gets stable's answer,
  but its feedback id names the candidate, and the labels count against the candidate, not for stable.
- A shadow that fails every mirrored copy: each label pairs, with the shadow wrong on every row.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tests.component.gateway.gateway_helpers import (
    Proc,
    RouteFile,
    control,
    fake_upstream,
    fallback,
    feedback_keys,
    gateway,
    infer_body,
    metric_sum,
    request,
    shadow_table,
    table,
)
from tests.support.models import BuiltModel
from tests.support.procs import serve_model
from tests.support.prometheus import run_prometheus
from tests.support.waiting import wait_for

from mlrollout.analysis import AnalysisTarget, PrometheusProvider, collect_snapshot, judge
from mlrollout.api.rolloutpolicy import RolloutPolicySpec
from mlrollout_serving.contract import metrics as contract

pytestmark = pytest.mark.component

NAMESPACE, MD = "failures-test", "diabetes"
BOUND = 500.0  # the policy's errorBound: above every error of the diabetes target (25-346)
REQUESTS, ROWS = 80, 4  # every other request has one row of huge features (the linear fit answers null)


def _labels(track: str, revision: str) -> dict[str, str]:
    return {"namespace": NAMESPACE, "model_deployment": MD, "track": track, "revision": revision}


def _error(truth: float, served: float | None) -> float:
    """The row's absolute error; no prediction is beyond every clip bound."""
    return float("inf") if served is None else abs(truth - served)


def _label_everything(gw: Proc, bodies: list[tuple[list[list[float]], list[float]]]) -> dict[str, list[float]]:
    """Ask each body, send its labels back; the rows' errors per track that answered."""
    errors: dict[str, list[float]] = {"stable": [], "candidate": []}
    for rows, truth in bodies:
        answer = request(f"{gw.url}/v2/models/{MD}/infer", infer_body(rows))
        assert answer.status == 200, answer.body
        feedback_id = answer.headers["x-mlrollout-feedback-id"]
        assert answer.body["parameters"]["feedback_id"] == feedback_id
        got = request(f"{gw.url}/v2/models/{MD}/feedback", {"feedback_id": feedback_id, "labels": truth})
        assert got.status == 202 and got.body["counted"] == len(truth), got.body
        served = answer.body["outputs"][0]["data"]
        errors[answer.track] += [_error(t, None if p is None else float(p)) for t, p in zip(truth, served, strict=True)]
    return errors


@contextlib.contextmanager
def _canary(stable: BuiltModel, candidate: BuiltModel, workdir: Path, weight: float) -> Iterator[Proc]:
    with (
        serve_model(stable, name=MD, labels=_labels("stable", "rev-stable")) as a,
        serve_model(candidate, name=MD, labels=_labels("candidate", "rev-candidate")) as b,
    ):
        routes = RouteFile(workdir)
        routes.write(table(1, a.url, b.url, weight=weight))
        keys = ("--feedback-keys", str(feedback_keys(workdir)))
        with gateway(routes, *keys, namespace=NAMESPACE, model_deployment=MD) as gw:
            yield gw


def test_a_canary_candidate_answering_nan_on_hard_rows_has_them_counted_against_it(
    diabetes_model: BuiltModel, diabetes_worse_model: BuiltModel, tmp_path: Path
) -> None:
    samples, targets = diabetes_model.samples, diabetes_model.sample_targets
    huge = np.full_like(samples[0], 3.0e38)  # the linear fit overflows float32 here: null; the tree does not
    bodies = []
    for i in range(REQUESTS):
        picked = [(i * ROWS + k) % len(samples) for k in range(ROWS)]
        rows = [list(map(float, samples[r])) for r in picked]
        if i % 2 == 0:
            rows[-1] = list(map(float, huge))
        bodies.append((rows, [float(targets[r]) for r in picked]))
    with _canary(diabetes_model, diabetes_worse_model, tmp_path, weight=50) as gw:
        gw_target = gw.url.removeprefix("http://")
        with run_prometheus([gw_target], scrape_interval="1s") as prometheus:
            prometheus.wait_scraped([gw_target], timeout=120)
            started = time.time()
            errors = _label_everything(gw, bodies)
            failed = sum(1 for e in errors["candidate"] if e == float("inf"))
            assert failed >= 5 and all(e < float("inf") for e in errors["stable"])  # the tree answers them all

            def value(series: str, track: str, **labels: str) -> float:
                return metric_sum(gw.url, series, track=track, revision=f"rev-{track}", **labels)

            assert value(contract.GATEWAY_FEEDBACK_LABELS.name, "candidate", outcome="failed") == failed
            assert value(contract.GATEWAY_FEEDBACK_FAILED.name, "candidate", reason="non_finite_prediction") == failed
            assert value(contract.GATEWAY_FEEDBACK_LABELS.name, "stable", outcome="failed") == 0
            for bound in contract.CLIP_BOUNDS:
                clipped = value(contract.GATEWAY_FEEDBACK_CLIPPED_ABS_ERROR.name, "candidate",
                                bound=contract.clip_label(bound))  # fmt: skip
                assert clipped == pytest.approx(sum(min(e, bound) for e in errors["candidate"]), rel=1e-5)

            labelled = len(errors["stable"]) + len(errors["candidate"])
            outcomes = contract.GATEWAY_FEEDBACK_LABELS.name
            prometheus.wait_for(f"sum({outcomes})", lambda v: v is not None and v >= labelled, timeout=60)
            target = AnalysisTarget(NAMESPACE, MD, "rev-stable", "rev-candidate", "gateway", None, error_bound=BOUND)
            provider = PrometheusProvider(prometheus.url, timeout=10)
            snap = collect_snapshot(provider, target, time.time() - started + 30.0, quality=True)
    assert snap.error is None, snap.error
    stable, candidate = snap.stable.labels, snap.candidate.labels
    assert stable is not None and candidate is not None
    # the rows the tests divide by are every labelled row, the failed ones in the clipped sums at the bound
    assert candidate.labelled == len(errors["candidate"]) and stable.labelled == len(errors["stable"])
    mae_c = sum(min(e, BOUND) for e in errors["candidate"]) / candidate.labelled
    assert candidate.clipped_sum == pytest.approx(mae_c * candidate.labelled, rel=1e-5)
    policy = RolloutPolicySpec.model_validate(
        {"analysis": {"metrics": {"quality": {"enabled": True, "metric": "mae", "errorBound": BOUND}}}}
    )
    harm = next(m for m in judge(snap, policy).metrics if m.name == "quality.harm")
    assert harm.estimate is not None and harm.estimate.candidate == pytest.approx(mae_c, rel=1e-5)
    answered = [e for e in errors["candidate"] if e < float("inf")]  # what leaving them out would have said
    assert mae_c - sum(answered) / len(answered) > 0.1 * BOUND * failed / len(errors["candidate"])


def test_a_request_the_candidate_failed_counts_against_it_though_stable_answered_the_client(
    diabetes_model: BuiltModel, tmp_path: Path
) -> None:
    samples, targets = diabetes_model.samples, diabetes_model.sample_targets
    with (
        serve_model(diabetes_model, name=MD, labels=_labels("stable", "rev-stable")) as good,
        fake_upstream("broken") as broken,
    ):
        control(broken, status=500)  # every request it gets: a 500
        routes = RouteFile(tmp_path)
        routes.write(table(1, good.url, broken.url, weight=50, **fallback({"action": "stable"})))
        keys = ("--feedback-keys", str(feedback_keys(tmp_path)))
        with gateway(routes, *keys, namespace=NAMESPACE, model_deployment=MD) as gw:
            labelled: dict[str, int] = {"stable": 0, "candidate": 0}
            for i in range(40):
                rows = [(i * 2 + k) % len(samples) for k in range(2)]
                answer = request(f"{gw.url}/v2/models/{MD}/infer", infer_body(samples[rows]))
                assert answer.status == 200 and answer.track == "stable", answer.body  # rescued or routed there
                body = {"feedback_id": answer.headers["x-mlrollout-feedback-id"],
                        "labels": [float(targets[r]) for r in rows]}  # fmt: skip
                got = request(f"{gw.url}/v2/models/{MD}/feedback", body)
                assert got.status == 202 and got.body == {"counted": 2, "paired": False}, got.body
            rescued = metric_sum(gw.url, contract.GATEWAY_FALLBACK_REQUESTS.name, track="candidate", answered="stable")
            assert rescued >= 5  # about half the requests were routed to the broken candidate
            labelled["candidate"] = int(rescued) * 2
            labelled["stable"] = 80 - labelled["candidate"]

            def value(series: str, track: str, **labels: str) -> float:
                return metric_sum(gw.url, series, track=track, revision=f"rev-{track}", **labels)

            assert value(contract.GATEWAY_FEEDBACK_LABELS.name, "candidate", outcome="failed") == labelled["candidate"]
            assert value(contract.GATEWAY_FEEDBACK_LABELS.name, "candidate", outcome="scored") == 0
            assert (
                value(contract.GATEWAY_FEEDBACK_FAILED.name, "candidate", reason="request_failed")
                == labelled["candidate"]
            )
            assert value(contract.GATEWAY_FEEDBACK_LABELS.name, "stable", outcome="scored") == labelled["stable"]
            at = contract.clip_label(BOUND)
            clipped = value(contract.GATEWAY_FEEDBACK_CLIPPED_ABS_ERROR.name, "candidate", bound=at)
            assert clipped == BOUND * labelled["candidate"]


def test_a_shadow_failing_its_copies_is_paired_and_wrong_on_every_row(
    diabetes_model: BuiltModel, tmp_path: Path
) -> None:
    samples, targets = diabetes_model.samples, diabetes_model.sample_targets
    with (
        serve_model(diabetes_model, name=MD, labels=_labels("stable", "r-stable")) as good,
        fake_upstream("broken-shadow") as broken,
    ):
        control(broken, status=503)
        routes = RouteFile(tmp_path)
        routes.write(shadow_table(good.url, broken.url))
        keys = ("--feedback-keys", str(feedback_keys(tmp_path)))
        with gateway(routes, *keys, namespace=NAMESPACE, model_deployment=MD) as gw:
            answers = []
            for i in range(10):
                rows = [(i * 3 + k) % len(samples) for k in range(3)]
                answer = request(f"{gw.url}/v2/models/{MD}/infer", infer_body(samples[rows]))
                assert answer.status == 200, answer.body
                answers.append((answer.headers["x-mlrollout-feedback-id"], [float(targets[r]) for r in rows]))
            dropped = contract.GATEWAY_MIRROR_DROPPED.name
            wait_for(lambda: metric_sum(gw.url, dropped, reason="error") >= 10, what="every copy failed")
            for feedback_id, truth in answers:
                got = request(f"{gw.url}/v2/models/{MD}/feedback", {"feedback_id": feedback_id, "labels": truth})
                assert got.status == 202 and got.body == {"counted": 3, "paired": True}, got.body
            assert metric_sum(gw.url, contract.GATEWAY_FEEDBACK_PAIRS.name, result="stable_only") == 30
            assert metric_sum(gw.url, contract.GATEWAY_FEEDBACK_PAIRS.name) == 30
            assert metric_sum(gw.url, contract.GATEWAY_FEEDBACK_FAILED.name, track="shadow",
                              reason="request_failed") == 30  # fmt: skip
            at = contract.clip_label(BOUND)
            side = contract.GATEWAY_FEEDBACK_PAIR_CLIPPED_ABS_ERROR.name
            assert metric_sum(gw.url, side, side="candidate", bound=at) == 30 * BOUND
            assert metric_sum(gw.url, contract.GATEWAY_FEEDBACK_UNPAIRED.name) == 0


def test_a_low_confidence_answer_replaced_by_stable_is_scored_as_the_candidate_answered_it(
    wine_model: BuiltModel, wine_worse_model: BuiltModel, tmp_path: Path
) -> None:
    """Not a failure: the candidate answered, below the confidence threshold, and stable's answer was
    served. The id names the candidate and carries the candidate's own classes, so it is scored on them."""
    samples, targets = wine_model.samples, wine_model.sample_targets
    wine = "/v2/models/wine/infer"
    with (
        serve_model(wine_model, name="wine", labels=_labels("stable", "rev-stable")) as good,
        serve_model(wine_worse_model, name="wine", labels=_labels("candidate", "rev-candidate")) as worse,
    ):
        own = [request(worse.url + wine, infer_body(samples[i : i + 1])).body["outputs"] for i in range(len(samples))]
        tops = [max(outputs[1]["data"]) for outputs in own]
        threshold = sorted(tops)[len(tops) // 2]  # about half the candidate's answers are "low confidence"
        routes = RouteFile(tmp_path)
        low = {"confidenceThreshold": threshold, "lowConfidenceAction": {"action": "stable"}}
        routes.write(table(1, good.url, worse.url, weight=100, fallback=low))
        keys = ("--feedback-keys", str(feedback_keys(tmp_path)))
        with gateway(routes, *keys, namespace=NAMESPACE, model_deployment="wine") as gw:
            served_by_stable = 0
            for i in range(len(samples)):
                answer = request(gw.url + wine, infer_body(samples[i : i + 1]))
                assert answer.status == 200, answer.body
                served_by_stable += answer.track == "stable"
                body = {"feedback_id": answer.headers["x-mlrollout-feedback-id"], "label": int(targets[i])}
                assert request(f"{gw.url}/v2/models/wine/feedback", body).status == 202
            assert 0 < served_by_stable < len(samples)
            right = sum(1 for i, outputs in enumerate(own) if outputs[0]["data"][0] == int(targets[i]))

            def value(series: str, track: str, **labels: str) -> float:
                return metric_sum(gw.url, series, track=track, revision=f"rev-{track}", **labels)

            labels = contract.GATEWAY_FEEDBACK_LABELS.name
            assert value(labels, "candidate", outcome="correct") == right
            assert value(labels, "candidate", outcome="incorrect") == len(samples) - right
            assert value(labels, "stable", outcome="correct") + value(labels, "stable", outcome="incorrect") == 0
            assert metric_sum(gw.url, contract.GATEWAY_FEEDBACK_FAILED.name) == 0  # it answered every row
