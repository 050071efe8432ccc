"""/metrics after real traffic: every series of the contract, with the identity labels and exact counts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.component.server.conftest import get, infer_body, post, reference
from tests.support.models import BuiltModel
from tests.support.procs import serve_model

from mlrollout_serving import profile
from mlrollout_serving.contract import metrics as contract
from mlrollout_serving.contract import profile as schema

pytestmark = pytest.mark.component

IDENTITY = {"namespace": "shop", "model_deployment": "wine-quality", "track": "candidate", "revision": "7f3a9c"}
Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(port: int) -> Samples:
    status, text = get(port, "/metrics")
    assert status == 200
    out: Samples = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def assert_identity_everywhere(found: Samples) -> None:
    for name, rows in found.items():
        for labels, _ in rows:
            assert {k: labels.get(k) for k in contract.IDENTITY_LABELS} == IDENTITY, (name, labels)


def write_profile(tmp_path: Path, model: BuiltModel, bins: int = 6) -> schema.Profile:
    npy = tmp_path / "train.npy"
    np.save(npy, model.train)
    out = tmp_path / "profile.json"
    assert profile.cli_main(["-o", str(out), "--model", str(model.path), "--bins", str(bins), str(npy)]) == 0
    return profile.read(str(out))


def test_classifier_series_after_traffic(tmp_path: Path, wine_model: BuiltModel) -> None:
    prof = write_profile(tmp_path, wine_model)
    args = ["--reference-profile", (tmp_path / "profile.json").as_uri()]
    with serve_model(wine_model, name="wine", version="3", labels=IDENTITY, extra_args=args) as server:
        rows = wine_model.samples
        for i in range(0, len(rows), 4):
            status, _, _ = post(server.port, "/v2/models/wine/infer", infer_body(wine_model, rows[i : i + 4]))
            assert status == 200
        bad = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}).encode()
        assert post(server.port, "/v2/models/wine/infer", bad)[0] == 400
        assert post(server.port, "/v2/models/wine/infer", b"{")[0] == 400
        found = scrape(server.port)

    assert_identity_everywhere(found)
    codes = {labels["code"]: v for labels, v in found[contract.MODEL_REQUESTS.name]}
    requests = -(-len(rows) // 4)
    assert codes == {"200": requests, "400": 2}
    count = {lb.get("le"): v for lb, v in found[contract.MODEL_DURATION.name + "_bucket"]}
    assert count["+Inf"] == requests + 2
    bounds = [float(lb["le"]) for lb, _ in found[contract.MODEL_DURATION.name + "_bucket"]]
    assert bounds == list(contract.LATENCY_BUCKETS)  # every bucket of the contract, in order
    (batch_rows,) = found[contract.MODEL_BATCH_SIZE.name + "_sum"]
    assert batch_rows[1] == len(rows)

    want = reference(wine_model, rows)
    preds = {(lb["output"], lb["class"]): v for lb, v in found[contract.MODEL_PREDICTIONS.name]}
    labels = Counter(str(v) for v in want[0].tolist())
    argmax = Counter(str(v) for v in want[1].argmax(axis=1).tolist())
    for cls in ("0", "1", "2"):
        assert preds[("label", cls)] == labels.get(cls, 0)
        assert preds[("probabilities", cls)] == argmax.get(cls, 0)

    bins = {(lb["feature"], int(lb["bin"])): v for lb, v in found[contract.MODEL_INPUT_BINS.name]}
    assert {f for f, _ in bins} == {f.name for f in prof.features}
    for i, feature in enumerate(prof.features):
        expected = Counter(profile.bin_index(feature.edges, rows[:, i].astype(np.float64)).tolist())
        assert [bins[(feature.name, b)] for b in range(len(feature.edges) + 1)] == [
            expected.get(b, 0) for b in range(len(feature.edges) + 1)
        ]

    (info,) = found[contract.MODEL_INFO.name]
    assert info[1] == 1.0
    assert info[0]["model_name"] == "wine" and info[0]["model_version"] == "3"
    assert info[0]["sha256"] == wine_model.sha256
    assert contract.MODEL_PREDICTION_VALUE.name + "_bucket" not in found  # a classifier has no regression values


def test_regressor_histogram_buckets_come_from_the_profile(tmp_path: Path, diabetes_model: BuiltModel) -> None:
    prof = write_profile(tmp_path, diabetes_model, bins=5)
    assert prof.predictions is not None
    args = ["--reference-profile", str(tmp_path / "profile.json")]
    with serve_model(diabetes_model, name="diabetes", labels=IDENTITY, extra_args=args) as server:
        status, _, _ = post(
            server.port, "/v2/models/diabetes/infer", infer_body(diabetes_model, diabetes_model.samples)
        )
        assert status == 200
        found = scrape(server.port)
    assert_identity_everywhere(found)
    values = reference(diabetes_model, diabetes_model.samples)[0].ravel().astype(np.float64)
    buckets: dict[str, Any] = {lb["le"]: v for lb, v in found[contract.MODEL_PREDICTION_VALUE.name + "_bucket"]}
    assert list(buckets) == [repr(e) for e in prof.predictions.edges] + ["+Inf"]
    for edge in prof.predictions.edges:
        assert buckets[repr(edge)] == float((values <= edge).sum())
    assert buckets["+Inf"] == len(values)
    assert contract.MODEL_PREDICTIONS.name not in found or all(
        v == 0 for _, v in found[contract.MODEL_PREDICTIONS.name]
    )
