"""Helpers for the model server's component tests: plain-HTTP clients and reference outputs."""

from __future__ import annotations

import http.client
import json
import threading
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


class GoodStream(threading.Thread):
    """Sends valid requests over one keep-alive connection and checks every answer."""

    def __init__(self, port: int, model: BuiltModel, path: str = "/v2/models/wine/infer") -> None:
        super().__init__(daemon=True)
        self.port, self.model, self.path = port, model, path
        self.want = reference(model, model.samples)
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        i = 0
        while not self.stop.is_set():
            row = i % len(self.model.samples)
            try:
                conn.request("POST", self.path, body=infer_body(self.model, self.model.samples[row : row + 1]))
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(f"request {i}: {e!r}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                continue
            if resp.status != 200:
                self.failures.append(f"request {i}: {resp.status} {body[:200]!r}")
            else:
                got = outputs_of(body)
                if not (
                    np.array_equal(got["label"], self.want[0][row : row + 1])
                    and np.array_equal(got["probabilities"], self.want[1][row : row + 1])
                ):
                    self.failures.append(f"request {i}: wrong result")
                self.ok += 1
            i += 1
        conn.close()
