"""Answers as our model server sends them (body and predictions header), for the gateway's feedback tests.

Kept in one place so the tests that compare a header-signed id with a read answer build their answers alike."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from mlrollout_serving.server.codec import encode_infer, predicted_header
from mlrollout_serving.server.signature import DATATYPE_DTYPES, TensorSpec

Outputs = list[tuple[TensorSpec, np.ndarray[Any, Any], bool]]


def spec(name: str, datatype: str) -> TensorSpec:
    return TensorSpec(name, datatype, np.dtype(DATATYPE_DTYPES[datatype]), (None,))


def server_answer(outputs: Outputs, model: str = "wine") -> tuple[bytes, bytes | None]:
    """The model server's answer to these outputs and its predictions header (as bytes), as app.py sends them."""
    body = encode_infer(model, "1", None, outputs).body
    header = predicted_header(outputs)
    return body, None if header is None else header.encode()


def drawn_labels(data: st.DataObject, rows: int, kind: str) -> np.ndarray[Any, Any]:
    """A label output of ``rows`` rows of datatype ``kind`` (INT64, BYTES or BOOL), values drawn."""
    values = data.draw(st.lists(st.integers(-1, 5), min_size=rows, max_size=rows))
    if kind == "BYTES":
        return np.array([f"class \u00e9{v}".encode() for v in values], dtype=object)
    if kind == "BOOL":
        return np.array([v > 1 for v in values])
    return np.array(values, dtype=np.int64)
