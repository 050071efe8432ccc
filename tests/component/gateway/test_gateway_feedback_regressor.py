"""Regressor feedback through a real gateway and real model servers of the diabetes regressor; the client
sends back the true targets of the rows it was answered.

- The gateway's /metrics shows, per track, each labelled row's absolute error on the contract's buckets
  (docs/metrics.md), agreeing with the errors the client computes and with the error sum counters, and
  the sums of the errors clipped at every clip bound.
- A worse regressor (a linear fit on shuffled targets: predictions near the mean, never an error, a
  higher MAE) as a 100 % shadow, a real Prometheus scraping everything: the operator's collection reads the
  paired clipped error sums at the policy's errorBound and the verdict rolls it back on quality.harm, the
  finite-sample paired MAE test (docs/analysis.md).
"""

from __future__ import annotations

import contextlib
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tests.component.gateway.gateway_helpers import (
    Proc,
    RouteFile,
    feedback_keys,
    gateway,
    infer_body,
    metric_samples,
    metric_sum,
    request,
    shadow_table,
    table,
)
from tests.support.models import BuiltModel
from tests.support.procs import ServerProcess, serve_model
from tests.support.prometheus import run_prometheus
from tests.support.waiting import wait_for

from mlrollout.analysis import AnalysisTarget, PrometheusProvider, collect_snapshot, judge
from mlrollout.api.rolloutpolicy import RolloutPolicySpec
from mlrollout_serving.contract import metrics as contract

pytestmark = pytest.mark.component

NAMESPACE, MD = "quality-test", "diabetes"
ROWS_PER_REQUEST = 3
REQUESTS = 60
SHADOW_ROWS_PER_REQUEST, SHADOW_REQUESTS = 8, 256  # 2048 labelled rows: 32 passes over the 64 held-out rows
BOUND = 500.0  # the policy's errorBound: a clip bound above every error of the diabetes target (25-346)


def _labels(track: str, revision: str) -> dict[str, str]:
    return {"namespace": NAMESPACE, "model_deployment": MD, "track": track, "revision": revision}


@contextlib.contextmanager
def _servers(
    stable: BuiltModel, candidate: BuiltModel, prefix: str, workdir: Path
) -> Iterator[tuple[ServerProcess, ServerProcess, RouteFile, tuple[str, ...]]]:
    """Model servers of the stable and candidate tracks (revisions ``{prefix}stable``, ``{prefix}candidate``),
    a route file to fill, and the gateway flags of a feedback key."""
    with (
        serve_model(stable, name=MD, labels=_labels("stable", f"{prefix}stable")) as a,
        serve_model(candidate, name=MD, labels=_labels("candidate", f"{prefix}candidate")) as b,
    ):
        yield a, b, RouteFile(workdir), ("--feedback-keys", str(feedback_keys(workdir)))


@contextlib.contextmanager
def _shadowed(
    stable: BuiltModel, shadow: BuiltModel, workdir: Path
) -> Iterator[tuple[ServerProcess, ServerProcess, Proc]]:
    """A gateway with feedback ids mirroring every request of ``stable`` to ``shadow`` (revisions ``r-*``)."""
    with _servers(stable, shadow, "r-", workdir) as (a, b, routes, flags):
        routes.write(shadow_table(a.url, b.url))
        with gateway(routes, *flags, namespace=NAMESPACE, model_deployment=MD) as gw:
            yield a, b, gw


def test_labelled_regressor_rows_fill_the_abs_error_histogram_per_track(
    diabetes_model: BuiltModel, tmp_path: Path
) -> None:
    with _servers(diabetes_model, diabetes_model, "rev-", tmp_path) as (stable, candidate, routes, flags):
        routes.write(table(1, stable.url, candidate.url, weight=50))
        with gateway(routes, *flags, namespace=NAMESPACE, model_deployment=MD) as gw:
            errors: dict[str, list[float]] = {"stable": [], "candidate": []}
            samples, targets = diabetes_model.samples, diabetes_model.sample_targets
            for i in range(REQUESTS):
                rows = [(i * ROWS_PER_REQUEST + k) % len(samples) for k in range(ROWS_PER_REQUEST)]
                answer = request(f"{gw.url}/v2/models/{MD}/infer", infer_body(samples[rows]))
                assert answer.status == 200, answer.body
                served = [float(v) for v in answer.body["outputs"][0]["data"]]
                truth = [float(targets[r]) for r in rows]
                body = {"feedback_id": answer.headers["x-mlrollout-feedback-id"], "labels": truth}
                counted = request(f"{gw.url}/v2/models/{MD}/feedback", body)
                assert (counted.status, counted.body["counted"]) == (202, ROWS_PER_REQUEST), counted.body
                errors[answer.track] += [abs(t - p) for t, p in zip(truth, served, strict=True)]
            assert errors["stable"] and errors["candidate"]  # 50 % each: both tracks were labelled

            samples_by_name = metric_samples(gw.url)
            name = contract.GATEWAY_FEEDBACK_ABS_ERROR_ROWS.name
            bounds = [b for b in contract.ABS_ERROR_BUCKETS if b != float("inf")]
            for track, mine in errors.items():

                def of(series: str, track: str = track) -> list[tuple[dict[str, str], float]]:
                    return [(lab, v) for n, lab, v in samples_by_name if n == series and lab.get("track") == track]

                buckets = {lab["le"]: v for lab, v in of(f"{name}_bucket")}
                assert len(buckets) == len(bounds) + 1  # every documented bucket and +Inf
                in_bucket = Counter(bisect_left(bounds, e) for e in mine)
                for i, bound in enumerate(bounds):
                    cumulative = sum(n for b, n in in_bucket.items() if b <= i)
                    assert buckets[str(bound)] == cumulative, (track, bound)
                assert buckets["+Inf"] == len(mine)
                [(count_labels, count)] = of(f"{name}_count")
                assert count == len(mine) and count_labels["revision"] == f"rev-{track}"
                [(_, total)] = of(f"{name}_sum")
                assert total == pytest.approx(sum(mine), rel=1e-6)  # float32 answers, as the token carries them
                [(_, counter)] = of(contract.GATEWAY_FEEDBACK_ABS_ERROR.name)
                assert counter == total  # the histogram's sum is the counter the MAE is computed from
                clipped = {lab["bound"]: v for lab, v in of(contract.GATEWAY_FEEDBACK_CLIPPED_ABS_ERROR.name)}
                squares = {lab["bound"]: v for lab, v in of(contract.GATEWAY_FEEDBACK_CLIPPED_SQUARED_ERROR.name)}
                assert set(clipped) == set(squares) == {contract.clip_label(b) for b in contract.CLIP_BOUNDS}
                for bound in contract.CLIP_BOUNDS:
                    at = contract.clip_label(bound)
                    assert clipped[at] == pytest.approx(sum(min(e, bound) for e in mine), rel=1e-6), (track, bound)
                    assert squares[at] == pytest.approx(sum(min(e, bound) ** 2 for e in mine), rel=1e-6)


def test_a_worse_regressor_in_shadow_fails_quality_on_its_paired_mae(
    diabetes_model: BuiltModel, diabetes_worse_model: BuiltModel, tmp_path: Path
) -> None:
    with _shadowed(diabetes_model, diabetes_worse_model, tmp_path) as (stable, shadow, gw):
        gw_target = gw.url.removeprefix("http://")
        scrape = [stable.host_port, shadow.host_port, gw_target]
        with run_prometheus(scrape, scrape_interval="1s") as prometheus:
            prometheus.wait_scraped(scrape, timeout=120)
            started = time.time()
            _label_in_shadow(gw.url, diabetes_model, SHADOW_REQUESTS, SHADOW_ROWS_PER_REQUEST)
            labelled = SHADOW_REQUESTS * SHADOW_ROWS_PER_REQUEST
            pairs = contract.GATEWAY_FEEDBACK_PAIRS.name
            prometheus.wait_for(f"sum({pairs})", lambda v: v is not None and v >= labelled, timeout=60)
            # the diabetes target is 25-346: no error reaches 500, so clipping there changes no row
            target = AnalysisTarget(NAMESPACE, MD, "r-stable", "r-candidate", "model", None, error_bound=BOUND)
            window = time.time() - started + 30.0
            provider = PrometheusProvider(prometheus.url, timeout=10)
            snap = collect_snapshot(provider, target, window, quality=True)
    assert snap.pairs is not None and snap.pairs.rows == labelled
    mae_stable, mae_candidate = snap.pairs.stable_error_sum / labelled, snap.pairs.candidate_error_sum / labelled
    truth_all = np.asarray(diabetes_model.sample_targets, dtype=float)
    assert mae_candidate > mae_stable > 0 and mae_stable < float(np.abs(truth_all - truth_all.mean()).mean())
    # the clipped sums at the policy's bound, from the gateway's own series: no row beyond it
    assert snap.pairs.stable_clipped_sum == pytest.approx(snap.pairs.stable_error_sum, rel=1e-9)
    assert snap.pairs.candidate_clipped_sum == pytest.approx(snap.pairs.candidate_error_sum, rel=1e-9)
    assert snap.pairs.clipped_diff_sumsq == pytest.approx(snap.pairs.diff_sumsq, rel=1e-9)
    assert snap.stable.labels is not None and snap.stable.labels.clipped_sum == pytest.approx(
        snap.stable.labels.abs_error_sum, rel=1e-9
    )
    policy = RolloutPolicySpec.model_validate(
        {"analysis": {"metrics": {"quality": {"enabled": True, "metric": "mae", "errorBound": BOUND}}}}
    )
    result = judge(snap, policy)
    harm = next(m for m in result.metrics if m.name == "quality.harm")
    assert result.verdict == "rollback" and harm.decision == "fail", result.reason
    assert "paired clipped-error difference (finite-sample)" in (harm.test or "")
    assert str(harm.reason).startswith("worse: MAE (errors clipped at 500) higher by")
    assert harm.effect == pytest.approx(mae_candidate - mae_stable, rel=1e-6)


def _label_in_shadow(gateway: str, model: BuiltModel, requests_made: int, rows_per_request: int) -> None:
    """Send ``requests_made`` requests of ``rows_per_request`` rows through the gateway, wait until every one
    was mirrored to the shadow and its answer held, then label every row with its true target: each label
    counted and paired."""
    samples, targets = model.samples, model.sample_targets
    answers = []
    for i in range(requests_made):
        rows = [(i * rows_per_request + k) % len(samples) for k in range(rows_per_request)]
        answer = request(f"{gateway}/v2/models/{MD}/infer", infer_body(samples[rows]))
        assert answer.status == 200, answer.body
        answers.append((answer.headers["x-mlrollout-feedback-id"], [float(targets[r]) for r in rows]))
    wait_for(lambda: metric_sum(gateway, contract.GATEWAY_MIRRORED.name) >= requests_made,
             what="every mirrored copy sent")  # fmt: skip
    time.sleep(1.0)  # the shadow's last answers held for pairing
    for feedback_id, truth in answers:
        got = request(f"{gateway}/v2/models/{MD}/feedback", {"feedback_id": feedback_id, "labels": truth})
        assert got.status == 202 and got.body == {"counted": rows_per_request, "paired": True}, got.body


def test_identical_regressors_in_shadow_tie_on_every_labelled_row(diabetes_model: BuiltModel, tmp_path: Path) -> None:
    """The same model as stable and as a 100 % shadow: each labelled row is a tie (``both_right``), never a
    win for either side. The shadow's answer is kept from its predictions header as float32, as the client's
    answer's token carries stable's (until 6 Dec it was the answer's float64 values, so float32 rounding
    alone made nearly every row of two identical regressors a win for one side or the other)."""
    requests_made, rows_per_request = 40, 3
    with _shadowed(diabetes_model, diabetes_model, tmp_path) as (_, _, gw):
        _label_in_shadow(gw.url, diabetes_model, requests_made, rows_per_request)
        pairs = Counter(
            {lab["result"]: value for name, lab, value in metric_samples(gw.url)
             if name == contract.GATEWAY_FEEDBACK_PAIRS.name and value}
        )  # fmt: skip
    assert pairs == Counter({"both_right": requests_made * rows_per_request}), pairs


def test_a_regressor_row_answered_with_inf_or_nan_counts_against_its_model_and_the_sums_stay_finite(
    diabetes_model: BuiltModel, diabetes_worse_model: BuiltModel, tmp_path: Path
) -> None:
    # the linear fit overflows float32 on a row of huge (in range) features: its answer has null there
    # (how the model server writes NaN and +-Inf); the tree-based shadow answers a finite value
    with _shadowed(diabetes_worse_model, diabetes_model, tmp_path) as (_, _, gw):
        sample, truth = diabetes_model.samples[0], float(diabetes_model.sample_targets[0])
        huge = np.full_like(sample, 3.0e38)
        answer = request(f"{gw.url}/v2/models/{MD}/infer", infer_body([sample, huge]))
        assert answer.status == 200, answer.body
        served = answer.body["outputs"][0]["data"]
        assert served[0] is not None and served[1] is None, served
        wait_for(lambda: metric_sum(gw.url, contract.GATEWAY_MIRRORED.name) >= 1, what="the mirrored copy sent")
        time.sleep(1.0)  # the shadow's answer held for pairing
        body = {"feedback_id": answer.headers["x-mlrollout-feedback-id"], "labels": [truth, truth]}
        got = request(f"{gw.url}/v2/models/{MD}/feedback", body)
        assert got.status == 202 and got.body == {"counted": 2, "paired": True}, got.body

        def value(series: str, **labels: str) -> float:
            return metric_sum(gw.url, series, **labels)

        stable_row = {"track": "stable", "revision": "r-stable"}  # shadow_table names the revisions
        assert value(contract.GATEWAY_FEEDBACK_FAILED.name, reason="non_finite_prediction", **stable_row) == 1
        assert value(contract.GATEWAY_FEEDBACK_LABELS.name, outcome="scored", **stable_row) == 1
        assert value(contract.GATEWAY_FEEDBACK_LABELS.name, outcome="failed", **stable_row) == 1
        error = value(contract.GATEWAY_FEEDBACK_ABS_ERROR.name, **stable_row)  # the finite row's alone
        assert error == pytest.approx(abs(truth - float(served[0])), rel=1e-6)
        squares = value(contract.GATEWAY_FEEDBACK_SQUARED_ERROR.name, **stable_row)
        assert squares == pytest.approx(error**2, rel=1e-6)
        top = contract.clip_label(contract.CLIP_BOUNDS[-1])  # the NaN row is the bound there, as at every bound
        clipped = value(contract.GATEWAY_FEEDBACK_CLIPPED_ABS_ERROR.name, bound=top, **stable_row)
        assert clipped == pytest.approx(error + contract.CLIP_BOUNDS[-1], rel=1e-6)
        # both rows pair: on the NaN row stable is wrong and the shadow closer
        assert value(contract.GATEWAY_FEEDBACK_PAIRS.name) == 2
        assert value(contract.GATEWAY_FEEDBACK_PAIRS.name, result="candidate_only") >= 1
        differences = contract.GATEWAY_SHADOW_ABS_DIFF.name
        wait_for(lambda: value(f"{differences}_count") == 1, what="the finite row's shadow difference")
        assert np.isfinite(value(f"{differences}_sum"))
