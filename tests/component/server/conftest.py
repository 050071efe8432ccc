"""Helpers for the model server's component tests: plain-HTTP clients and reference outputs."""

from __future__ import annotations

import http.client
import json
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from tests.support.models import BuiltModel

pytestmark = pytest.mark.component


def reference(model: BuiltModel, rows: npt.NDArray[np.float32]) -> list[npt.NDArray[Any]]:
    """A direct onnxruntime run on the same rows (in one batch).

    With one intra-op thread, as the server runs by default: tree ensembles sum their trees in a
    different order when onnxruntime splits them over threads, which changes the last bits.
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model.path), opts, providers=["CPUExecutionProvider"])
    outputs: list[npt.NDArray[Any]] = session.run(None, {model.input_name: rows})
    return outputs


def post(
    port: int, path: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 30.0
) -> tuple[int, bytes, dict[str, str]]:
    """One POST on a fresh connection; returns status, body and lower-cased headers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers or {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def get(port: int, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def infer_body(model: BuiltModel, rows: npt.NDArray[np.float32], **extra: Any) -> bytes:
    doc = {
        "inputs": [
            {"name": model.input_name, "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}
        ],
        **extra,
    }
    return json.dumps(doc).encode()


def outputs_of(body: bytes) -> dict[str, npt.NDArray[Any]]:
    """Outputs of a JSON inference response as arrays of the declared shape and datatype."""
    dtypes = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
    doc = json.loads(body)
    return {o["name"]: np.array(o["data"], dtype=dtypes[o["datatype"]]).reshape(o["shape"]) for o in doc["outputs"]}
