"""Regressor feedback through a real gateway and two real model servers serving the diabetes regressor: the
client sends back the true targets of the rows it was answered, and the gateway's /metrics shows, per
track, each labelled row's absolute error on the contract's buckets (docs/metrics.md), agreeing with the
errors the client computes from the answers it got and with the error sum counters.
"""

from __future__ import annotations

import base64
import json
import os
from bisect import bisect_left
from collections import Counter
from pathlib import Path

import pytest
from gateway_helpers import RouteFile, gateway, infer_body, metric_samples, request, table
from tests.support.models import BuiltModel
from tests.support.procs import serve_model

from mlrollout_serving.contract import metrics as contract

pytestmark = pytest.mark.component

NAMESPACE, MD = "quality-test", "diabetes"
ROWS_PER_REQUEST = 3
REQUESTS = 60


def _labels(track: str, revision: str) -> dict[str, str]:
    return {"namespace": NAMESPACE, "model_deployment": MD, "track": track, "revision": revision}


def test_labelled_regressor_rows_fill_the_abs_error_histogram_per_track(
    diabetes_model: BuiltModel, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(json.dumps({"1": base64.b64encode(os.urandom(32)).decode()}))
    with (
        serve_model(diabetes_model, name=MD, labels=_labels("stable", "rev-stable")) as stable,
        serve_model(diabetes_model, name=MD, labels=_labels("candidate", "rev-candidate")) as candidate,
    ):
        routes = RouteFile(tmp_path)
        routes.write(table(1, stable.url, candidate.url, weight=50))
        with gateway(routes, "--feedback-keys", str(keys), namespace=NAMESPACE, model_deployment=MD) as gw:
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
