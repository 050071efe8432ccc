"""The one-pass decoder for plain JSON requests agrees with the strict decoder on every body.

``decode_infer`` tries ``_decode_plain`` first. The strict decoder treats ``"parameters": {}`` exactly like
no parameters, while the plain decoder declines any request with parameters; so decoding a body with and
without that key runs the two decoders on the same request, and their results (or errors) must be equal.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mlrollout_serving.server.codec import InferRequest, RequestError, _decode_plain, decode_infer
from mlrollout_serving.server.signature import DATATYPE_DTYPES, Signature, TensorSpec

F32_MAX = float(np.finfo(np.float32).max)


def spec(name: str, datatype: str, shape: tuple[int | None, ...]) -> TensorSpec:
    return TensorSpec(name, datatype, DATATYPE_DTYPES[datatype], shape)


OUTPUTS = (spec("label", "INT64", (None,)), spec("probabilities", "FP32", (None, 2)))
SIGNATURES = {
    "fp32": Signature(inputs=(spec("input", "FP32", (None, 3)),), outputs=OUTPUTS),
    "fp64": Signature(inputs=(spec("input", "FP64", (None, 3)),), outputs=OUTPUTS),
    "fixed": Signature(inputs=(spec("input", "FP32", (2, 3)),), outputs=OUTPUTS),
    "vector": Signature(inputs=(spec("input", "FP32", (None,)),), outputs=OUTPUTS),
    "int": Signature(inputs=(spec("input", "INT64", (None, 3)),), outputs=OUTPUTS),
}


def decode(doc: dict[str, Any], sig: Signature, allow_non_finite: bool = False) -> InferRequest | tuple[int, str]:
    try:
        return decode_infer(json.dumps(doc, allow_nan=True).encode(), sig, None, allow_non_finite)
    except RequestError as e:
        return e.status, str(e)


def assert_same(a: InferRequest | tuple[int, str], b: InferRequest | tuple[int, str]) -> None:
    if isinstance(a, tuple) or isinstance(b, tuple):
        assert a == b
        return
    assert (a.id, a.rows, a.outputs) == (b.id, b.rows, b.outputs)
    assert list(a.inputs) == list(b.inputs)
    for name in a.inputs:
        x, y = a.inputs[name], b.inputs[name]
        assert (x.dtype, x.shape, x.flags.c_contiguous) == (y.dtype, y.shape, y.flags.c_contiguous)
        assert x.tobytes() == y.tobytes()  # bit for bit, NaN payloads and signed zeros included


def strict_twin(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "parameters": {}}


IN_RANGE = st.one_of(
    st.floats(min_value=-1e4, max_value=1e4, width=32),
    st.floats(min_value=-1e30, max_value=1e30),
    st.integers(min_value=-(2**70), max_value=2**70),
)
ANY_VALUE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-F32_MAX * 1.01, max_value=F32_MAX * 1.01),
    st.floats(min_value=-1e4, max_value=1e4, width=32),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([F32_MAX, -F32_MAX, math.nextafter(F32_MAX, math.inf), 2**128, 10**400, 0.0, -0.0, 1e-46]),
    st.booleans(),
    st.text(max_size=2),
    st.none(),
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(sorted(SIGNATURES)))
    # Mostly requests the plain decoder takes (about a third), the rest invalid or unusual in one way.
    rows = draw(st.sampled_from([2, 2, 2, 1, 3, 0] if kind == "fixed" else [1, 1, 2, 3, 0]))
    width = draw(st.sampled_from([3, 3, 3, 3, 2]))
    shape: Any = [rows] if kind == "vector" else [rows, width]
    if draw(st.integers(0, 4)) == 0:
        shape = draw(st.lists(st.integers(min_value=-1, max_value=3), max_size=3))
    count = max(0, math.prod(shape))
    numbers = IN_RANGE if draw(st.integers(0, 2)) else ANY_VALUE
    data: Any = draw(st.lists(numbers, min_size=count, max_size=count))
    if draw(st.integers(0, 9)) == 0:
        data = [*data, 1.0]
    if len(shape) == 2 and shape[1] > 0 and draw(st.integers(0, 3)) == 0:  # nested rows
        data = [data[i : i + shape[1]] for i in range(0, len(data), shape[1])]
    entry: dict[str, Any] = {"name": "input", "datatype": "INT64" if kind == "int" else "FP32", "shape": shape}
    if kind == "fp64":
        entry["datatype"] = "FP64"
    entry["data"] = data
    mutation = draw(st.integers(0, 24))  # 0 and 9-24: none
    if mutation == 1:
        entry["name"] = "other"
    elif mutation == 2:
        entry["datatype"] = "FP16"
    elif mutation == 3:
        entry["parameters"] = {"binary_data_size": 4}
    elif mutation == 4:
        del entry["data"]
    doc: dict[str, Any] = {"inputs": [entry]}
    if mutation == 5:
        doc["id"] = draw(st.one_of(st.text(max_size=3), st.integers()))
    elif mutation == 6:
        doc["outputs"] = [{"name": "label"}]
    elif mutation == 7:
        doc["inputs"] = [entry, entry]
    elif mutation == 8:
        doc["inputs"] = []
    return kind, doc


@settings(max_examples=400, deadline=None)
@given(requests(), st.booleans())
@example(("fp32", {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2, 3.5]}]}), False)
@example(  # NaN/inf allowed next to a value beyond float32: narrowing overflows, silently (warnings are errors)
    ("fp32", {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [0.0, math.inf, 2**128]}]}),
    True,
)
def test_plain_and_strict_decoders_agree(case: tuple[str, dict[str, Any]], allow_non_finite: bool) -> None:
    kind, doc = case
    sig = SIGNATURES[kind]
    assert_same(decode(doc, sig, allow_non_finite), decode(strict_twin(doc), sig, allow_non_finite))


@pytest.mark.parametrize(
    ("kind", "data", "shape"),
    [
        ("fp32", [1.0, 2, 3.5], [1, 3]),
        ("fp32", [0.1, -0.0, F32_MAX, 1e-46, 2**60, -1], [2, 3]),  # the sum rounds back to F32_MAX
        ("fp32", [10**38, 2**100, -(2**90)], [1, 3]),  # ints beyond int64, in float32's range
        ("fp64", [0.1, 1e300, -1e-300], [1, 3]),
        ("fixed", [1, 2, 3, 4, 5, 6], [2, 3]),
        ("vector", [1.5, 2.5], [2]),
    ],
)
def test_plain_decoder_takes_the_common_requests(kind: str, data: list[Any], shape: list[int]) -> None:
    sig = SIGNATURES[kind]
    entry = {"name": "input", "datatype": sig.inputs[0].datatype, "shape": shape, "data": data}
    doc = {"id": "r1", "inputs": [entry]}
    plain = _decode_plain(doc, sig)
    assert plain is not None
    assert_same(plain, decode(strict_twin(doc), sig))
    want = np.array(data, dtype=np.float64).astype(sig.inputs[0].dtype).reshape(shape)
    assert plain.inputs["input"].tobytes() == want.tobytes()


@pytest.mark.parametrize(
    "data",
    [
        [1.0, float("nan"), 3.0],
        [1.0, float("inf"), 3.0],
        [math.nextafter(F32_MAX, math.inf), 0.0, 0.0],
        [F32_MAX, F32_MAX, 0.0],  # in range each, but the magnitude sum is not: the strict decoder decides
        [10**400, 0, 0],
        [0.0, 10**400, 0],  # float + huge int: the sum overflows instead of comparing
        [[1.0, 2.0, 3.0]],
        [True, 2.0, 3.0],
    ],
)
def test_plain_decoder_declines_what_needs_the_strict_one(data: list[Any]) -> None:
    doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": data}]}
    assert _decode_plain(doc, SIGNATURES["fp32"]) is None


def test_finite_values_whose_sum_overflows_are_accepted_without_a_warning() -> None:
    """The plain decoder declines them (its magnitude sum is inf); the strict one's finiteness check sums
    in float64 too, overflows, and must then check element by element, silently (warnings are errors)."""
    doc = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 3], "data": [1.5e308, 1.5e308, 0.0]}]}
    sig = SIGNATURES["fp64"]
    assert _decode_plain(doc, sig) is None
    decoded = decode(doc, sig)
    assert isinstance(decoded, InferRequest)
    np.testing.assert_array_equal(decoded.inputs["input"], [[1.5e308, 1.5e308, 0.0]])
