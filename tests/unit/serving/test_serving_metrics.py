"""The server's Prometheus series: names and labels from the contract, counts from the data."""

from __future__ import annotations

import asyncio
from collections import Counter

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlrollout_serving import profile
from mlrollout_serving.contract import metrics as contract
from mlrollout_serving.contract import profile as schema
from mlrollout_serving.server.metrics import ServerMetrics
from mlrollout_serving.server.signature import DATATYPE_DTYPES, Signature, TensorSpec, output_roles

IDENTITY = {"namespace": "ns", "model_deployment": "wine", "track": "candidate", "revision": "abc123"}


def spec(name: str, datatype: str, shape: tuple[int | None, ...]) -> TensorSpec:
    return TensorSpec(name, datatype, DATATYPE_DTYPES[datatype], shape)


CLASSIFIER = Signature(
    inputs=(spec("input", "FP32", (None, 2)),),
    outputs=(spec("label", "INT64", (None,)), spec("probabilities", "FP32", (None, 3))),
)
REGRESSOR = Signature(inputs=(spec("input", "FP32", (None, 2)),), outputs=(spec("variable", "FP32", (None, 1)),))


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_every_series_carries_the_identity_labels() -> None:
    m = ServerMetrics(IDENTITY, "wine", "2", output_roles(CLASSIFIER), CLASSIFIER)
    m.sha256 = "f" * 64
    m.request(200, 0.0004)
    m.request(400, 0.02)
    m.batch(3)
    m.predictions({"input": np.zeros((2, 2), np.float32)}, [np.array([2, 2]), np.eye(3, dtype=np.float32)[:2]])
    found = samples(m.render().decode())
    assert f"{contract.MODEL_REQUESTS.name}" in found
    for name, rows in found.items():
        for labels, _ in rows:
            assert {k: labels[k] for k in contract.IDENTITY_LABELS} == IDENTITY, name
    codes = {labels["code"]: v for labels, v in found[contract.MODEL_REQUESTS.name]}
    assert codes == {"200": 1.0, "400": 1.0}
    buckets = {labels["le"]: v for labels, v in found[contract.MODEL_DURATION.name + "_bucket"]}
    assert buckets["0.0005"] == 1.0 and buckets["0.02"] == 2.0 and buckets["+Inf"] == 2.0
    batch = {labels["le"]: v for labels, v in found[contract.MODEL_BATCH_SIZE.name + "_bucket"]}
    assert batch["2.0"] == 0.0 and batch["4.0"] == 1.0
    preds = {(labels["output"], labels["class"]): v for labels, v in found[contract.MODEL_PREDICTIONS.name]}
    assert preds == {
        ("label", "2"): 2.0,
        ("probabilities", "0"): 1.0,
        ("probabilities", "1"): 1.0,
        ("probabilities", "2"): 0.0,
    }
    (info,) = found[contract.MODEL_INFO.name]
    assert info[0]["model_name"] == "wine" and info[0]["model_version"] == "2" and info[0]["sha256"] == "f" * 64


def test_input_bins_match_the_profile_rule() -> None:
    rng = np.random.default_rng(3)
    train = rng.normal(size=(500, 2))
    prof = profile.build(train, ["alcohol", "ash"], profile.classification_predictions(["0", "1", "2"]), bins=4)
    m = ServerMetrics(IDENTITY, "wine", "1", output_roles(CLASSIFIER), CLASSIFIER, prof)
    live = rng.normal(loc=0.5, size=(300, 2)).astype(np.float32)
    for chunk in np.array_split(live, 7):
        m.predictions({"input": chunk}, [np.zeros(len(chunk), np.int64), np.zeros((len(chunk), 3), np.float32)])
    found = samples(m.render().decode())
    got = {(labels["feature"], int(labels["bin"])): v for labels, v in found[contract.MODEL_INPUT_BINS.name]}
    for i, f in enumerate(prof.features):
        want = Counter(profile.bin_index(f.edges, live[:, i].astype(np.float64)).tolist())
        for b in range(len(f.edges) + 1):
            assert got[(f.name, b)] == want.get(b, 0)


def test_regression_histogram_uses_the_profile_edges() -> None:
    prof = schema.Profile(
        features=(),
        predictions=schema.PredictionProfile("regression", (0.5, 0.5), edges=(100.0,)),
    )
    m = ServerMetrics(IDENTITY, "diabetes", "1", output_roles(REGRESSOR), REGRESSOR, prof)
    m.predictions({"input": np.zeros((3, 2), np.float32)}, [np.array([[50.0], [100.0], [150.0]], np.float32)])
    found = samples(m.render().decode())
    buckets = {labels["le"]: v for labels, v in found[contract.MODEL_PREDICTION_VALUE.name + "_bucket"]}
    assert buckets == {"100.0": 2.0, "+Inf": 3.0}
    (total,) = found[contract.MODEL_PREDICTION_VALUE.name + "_sum"]
    assert total[1] == pytest.approx(300.0)


def test_configured_buckets_win_over_the_profile() -> None:
    m = ServerMetrics(IDENTITY, "d", "1", output_roles(REGRESSOR), REGRESSOR, None, prediction_buckets=(1.0, 10.0))
    m.predictions({"input": np.zeros((1, 2), np.float32)}, [np.array([[5.0]], np.float32)])
    found = samples(m.render().decode())
    assert {labels["le"]: v for labels, v in found[contract.MODEL_PREDICTION_VALUE.name + "_bucket"]} == {
        "1.0": 0.0,
        "10.0": 1.0,
        "+Inf": 1.0,
    }


def test_a_full_queue_is_binned_after_the_request_that_filled_it_not_during_it() -> None:
    """The request that fills the prediction queue must not pay for binning it (it was the c=1 p99)."""
    from mlrollout_serving.server import metrics as metrics_module

    async def go() -> None:
        m = ServerMetrics(IDENTITY, "wine", "1", output_roles(CLASSIFIER), CLASSIFIER)
        rows = np.zeros((1, 2), np.float32)
        for i in range(metrics_module._FLUSH_RUNS):
            m.predictions({"input": rows}, [np.array([i % 3]), np.eye(3, dtype=np.float32)[[i % 3]]])
        assert len(m._pending) == metrics_module._FLUSH_RUNS  # full, but nothing binned in this callback
        assert m.classes["label"] == {}
        await asyncio.sleep(0)  # the next loop callback bins it
        assert m._pending == []
        n = metrics_module._FLUSH_RUNS
        want = {str(c): len(range(c, n, 3)) for c in range(3)}
        assert m.classes["label"] == want and m.classes["probabilities"] == want

    asyncio.run(go())


def test_without_an_event_loop_a_full_queue_is_binned_at_once() -> None:
    from mlrollout_serving.server import metrics as metrics_module

    m = ServerMetrics(IDENTITY, "diabetes", "1", output_roles(REGRESSOR), REGRESSOR, prediction_buckets=[1, 10])
    for _ in range(metrics_module._FLUSH_RUNS):
        m.predictions({"input": np.zeros((1, 2), np.float32)}, [np.array([[5.0]], np.float32)])
    assert m._pending == []
    assert m.values["variable"].counts == [0, metrics_module._FLUSH_RUNS, 0]


def test_binning_in_bulk_accepts_runs_of_any_size() -> None:
    m = ServerMetrics(IDENTITY, "wine", "1", output_roles(CLASSIFIER), CLASSIFIER)
    for n in (1, 5, 2):
        probs = np.tile(np.array([[0.1, 0.7, 0.2]], np.float32), (n, 1))
        m.predictions({"input": np.zeros((n, 2), np.float32)}, [np.full(n, 1, np.int64), probs])
    m.flush()
    assert m.classes["label"] == {"1": 8}
    assert m.classes["probabilities"] == {"0": 0, "1": 8, "2": 0}  # the known classes are listed from the start
