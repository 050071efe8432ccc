"""Open Inference Protocol v2 through tritonclient (a client we did not write), with real models."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from tests.component.server.conftest import get, infer_body, outputs_of, post, reference
from tests.support import models
from tests.support.models import BuiltModel
from tests.support.procs import ServerProcess, serve_model
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.component


@pytest.fixture(scope="module", params=["wine", "diabetes", "breast_cancer", "digits"])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[BuiltModel, ServerProcess]]:
    model = models.ALL[request.param]()
    with serve_model(model, name=request.param, version="2") as server:
        yield model, server


def client(server: ServerProcess) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.host_port, network_timeout=60.0)


def test_health_and_metadata(served: tuple[BuiltModel, ServerProcess]) -> None:
    model, server = served
    c = client(server)
    name = server.args[server.args.index("--model-name") + 1]
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready(name) and c.is_model_ready(name, "2")
    assert "binary_tensor_data" in c.get_server_metadata()["extensions"]
    meta = c.get_model_metadata(name)
    assert meta == c.get_model_metadata(name, "2")
    assert meta["platform"] == "onnx_onnxv1" and meta["versions"] == ["2"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, model.n_features]}]
    assert [o["name"] for o in meta["outputs"]] == list(model.output_names)
    with pytest.raises(InferenceServerException, match="unknown version"):
        c.get_model_metadata(name, "3")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_outputs_equal_a_direct_onnxruntime_run(served: tuple[BuiltModel, ServerProcess], binary: bool) -> None:
    model, server = served
    name = server.args[server.args.index("--model-name") + 1]
    rows = model.samples
    want = reference(model, rows)
    inp = triton.InferInput("input", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows, binary_data=binary)
    outs = [triton.InferRequestedOutput(n, binary_data=binary) for n in model.output_names]
    result = client(server).infer(name, [inp], outputs=outs, request_id="batch-1", model_version="2")
    assert result.get_response()["id"] == "batch-1"
    for n, w in zip(model.output_names, want, strict=True):
        got = result.as_numpy(n)
        assert got.dtype == w.dtype and got.shape == w.shape
        np.testing.assert_array_equal(got, w)


def test_single_rows_equal_the_same_rows_run_together(served: tuple[BuiltModel, ServerProcess]) -> None:
    model, server = served
    name = server.args[server.args.index("--model-name") + 1]
    want = reference(model, model.samples)
    c = client(server)
    for i in range(0, len(model.samples), 7):
        inp = triton.InferInput("input", [1, model.n_features], "FP32")
        inp.set_data_from_numpy(model.samples[i : i + 1])
        result = c.infer(name, [inp])  # no outputs named: all, in binary
        for n, w in zip(model.output_names, want, strict=True):
            np.testing.assert_array_equal(result.as_numpy(n), w[i : i + 1])


def test_output_selection_nested_data_and_id(served: tuple[BuiltModel, ServerProcess]) -> None:
    model, server = served
    name = server.args[server.args.index("--model-name") + 1]
    rows = model.samples[:3]
    doc = {
        "id": "nested-1",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [3, model.n_features], "data": rows.tolist()}],
        "outputs": [{"name": model.output_names[-1]}],
    }
    status, body, _ = post(server.port, f"/v2/models/{name}/versions/2/infer", json.dumps(doc).encode())
    assert status == 200, body
    answer = json.loads(body)
    assert answer["id"] == "nested-1" and answer["model_name"] == name and answer["model_version"] == "2"
    got = outputs_of(body)
    assert list(got) == [model.output_names[-1]]
    np.testing.assert_array_equal(got[model.output_names[-1]], reference(model, rows)[-1])
    flat_status, flat_body, _ = post(server.port, f"/v2/models/{name}/infer", infer_body(model, rows))
    assert flat_status == 200
    np.testing.assert_array_equal(outputs_of(flat_body)[model.output_names[-1]], got[model.output_names[-1]])


def test_unknown_model_and_paths(served: tuple[BuiltModel, ServerProcess]) -> None:
    model, server = served
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        inp = triton.InferInput("input", [1, model.n_features], "FP32")
        inp.set_data_from_numpy(model.samples[:1])
        client(server).infer("nope", [inp])
    assert get(server.port, "/v2/nothing")[0] == 404
    assert get(server.port, "/v2/models/nope/ready")[0] == 400
