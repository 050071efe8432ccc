"""The OIP codec against a signature built by hand (pure: no onnxruntime, no network)."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlrollout_serving.server.codec import RequestError, decode_infer, encode_infer, header_length
from mlrollout_serving.server.signature import DATATYPE_DTYPES, Signature, TensorSpec, output_roles


def spec(name: str, datatype: str, shape: tuple[int | None, ...]) -> TensorSpec:
    return TensorSpec(name, datatype, DATATYPE_DTYPES[datatype], shape)


SIG = Signature(
    inputs=(spec("input", "FP32", (None, 3)),),
    outputs=(spec("label", "INT64", (None,)), spec("probabilities", "FP32", (None, 2))),
)
TWO = Signature(
    inputs=(spec("a", "FP32", (None, 2)), spec("b", "INT64", (None, 1))),
    outputs=(spec("y", "FP64", (None, 1)),),
)


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def good(data: Any = None, shape: Any = None, **extra: Any) -> dict[str, Any]:
    entry = {"name": "input", "datatype": "FP32", "shape": shape or [1, 3], "data": data or [1.0, 2, 3.5]}
    return {"inputs": [entry], **extra}


def test_flat_and_nested_data_decode_to_the_same_array() -> None:
    flat = decode_infer(body(good([1, 2, 3, 4, 5, 6], [2, 3])), SIG)
    nested = decode_infer(body(good([[1, 2, 3], [4, 5, 6]], [2, 3])), SIG)
    assert flat.rows == nested.rows == 2
    np.testing.assert_array_equal(flat.inputs["input"], nested.inputs["input"])
    assert flat.inputs["input"].dtype == np.float32


def test_id_outputs_and_defaults() -> None:
    req = decode_infer(body(good(id="req-7", outputs=[{"name": "probabilities"}])), SIG)
    assert req.id == "req-7"
    assert [(o.name, o.binary) for o in req.outputs] == [("probabilities", False)]
    everything = decode_infer(body(good(parameters={"binary_data_output": True})), SIG)
    assert [(o.name, o.binary) for o in everything.outputs] == [("label", True), ("probabilities", True)]


def test_binary_tensor_extension() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    header = body(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}}]}
    )
    req = decode_infer(header + x.tobytes(), SIG, header_length=len(header))
    np.testing.assert_array_equal(req.inputs["input"], x)


def test_inputs_come_back_in_model_order_and_agree_on_rows() -> None:
    doc = {
        "inputs": [
            {"name": "b", "datatype": "INT64", "shape": [2, 1], "data": [1, 2]},
            {"name": "a", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]},
        ]
    }
    req = decode_infer(body(doc), TWO)
    assert list(req.inputs) == ["a", "b"]
    assert req.rows == 2
    doc["inputs"][0]["shape"] = [1, 1]
    doc["inputs"][0]["data"] = [1]
    with pytest.raises(RequestError, match="disagree on the batch size"):
        decode_infer(body(doc), TWO)


BAD: list[tuple[str, bytes, str]] = [
    ("malformed JSON", b'{"inputs": [', "malformed JSON"),
    ("not an object", b"[1, 2]", "must be a JSON object"),
    ("no inputs", body({"id": "x"}), "'inputs' must be a non-empty list"),
    (
        "unknown input",
        body({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}),
        "unknown input 'x'",
    ),
    (
        "wrong datatype",
        body({"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 3], "data": [1, 2, 3]}]}),
        "datatype FP64 does not match the model's FP32",
    ),
    (
        "unknown datatype",
        body({"inputs": [{"name": "input", "datatype": "FLOAT", "shape": [1, 3], "data": [1, 2, 3]}]}),
        "unknown datatype",
    ),
    ("wrong rank", body(good([1, 2, 3], [3])), "shape [3] does not match"),
    ("wrong fixed dim", body(good([1, 2, 3, 4], [1, 4])), "shape [1, 4] does not match the model's [-1, 3]"),
    ("zero rows", body(good([], [0, 3])), "shape [0, 3] does not match"),
    ("shape not ints", body(good([1, 2, 3], [1.0, 3])), "'shape' must be a list of integers"),
    ("count mismatch", body(good([1, 2], [1, 3])), "needs 3 elements, got 2"),
    ("ragged nested", body(good([[1, 2, 3], [4, 5]], [2, 3])), "ragged: lists at depth 1 hold 2 and 3 values"),
    # Rows of 2 and 4 values: the count is right (6), the shape is not [2, 3].
    ("ragged with the right count", body(good([[1, 2], [3, 4, 5, 6]], [2, 3])), "is ragged"),
    ("nested 2000 deep", b"[" * 2000 + b"]" * 2000, "malformed JSON: nested too deeply"),
    ("nested 2000 deep, unclosed", b'{"inputs": ' + b"[" * 2000, "malformed JSON"),
    (
        "lone surrogate in the id",
        b'{"id": "\\ud800", ' + body(good())[1:],
        "lone UTF-16 surrogate",
    ),
    (
        "lone low surrogate in an input name",
        b'{"inputs": [{"name": "\\udc00x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}',
        "lone UTF-16 surrogate",
    ),
    (
        "datatype nested 900 deep",
        b'{"inputs": [{"name": "input", "datatype": ' + b"[" * 900 + b"]" * 900 + b', "shape": [1, 3]}]}',
        "unknown datatype [[",
    ),
    ("strings as numbers", body(good(["1", 2, 3])), "FP32 data must be numbers, got str"),
    ("booleans as numbers", body(good([True, 2, 3])), "got bool"),
    ("null element", body(good([None, 2, 3])), "got NoneType"),
    (
        "NaN literal",
        b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,3],"data":[NaN,1,2]}]}',
        "non-finite value NaN",
    ),
    ("too large for FP32", body(good([1e39, 2, 3])), "value 1e+39 is out of range for FP32"),
    (
        "infinity",
        b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,3],"data":[1e400,1,2]}]}',
        "NaN or infinite",
    ),
    ("missing data", body({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3]}]}), "missing 'data'"),
    ("duplicate input", body({"inputs": [good()["inputs"][0], good()["inputs"][0]]}), "given more than once"),
    ("unknown output", body(good(outputs=[{"name": "nope"}])), "unknown output 'nope'"),
    ("id not a string", body(good(id=7)), "'id' must be a string"),
    ("parameters not an object", body(good(parameters=[1])), "'parameters' must be a JSON object"),
    ("mixed nesting", body(good([[1, 2, 3], 4], [2, 3])), "mixes lists and scalars"),
]


@pytest.mark.parametrize(("case", "raw", "message"), BAD, ids=[c[0] for c in BAD])
def test_bad_requests_name_the_problem(case: str, raw: bytes, message: str) -> None:
    with pytest.raises(RequestError) as info:
        decode_infer(raw, SIG)
    assert info.value.status == 400
    assert message in str(info.value)


def test_a_pair_of_surrogate_escapes_is_one_character_and_accepted() -> None:
    raw = b'{"id": "\\ud83d\\ude00", ' + body(good())[1:]
    assert decode_infer(raw, SIG).id == "\U0001f600"


@pytest.mark.parametrize("allow_non_finite", [False, True])
def test_lone_surrogates_are_refused_on_both_parsers(allow_non_finite: bool) -> None:
    """With --allow-non-finite the standard library parses everything; without it, what orjson refuses."""
    raw = b'{"id": "a\\ud800b", ' + body(good())[1:]
    with pytest.raises(RequestError, match="lone UTF-16 surrogate"):
        decode_infer(raw, SIG, allow_non_finite=allow_non_finite)
    with pytest.raises(RequestError, match="nested too deeply"):
        decode_infer(b"[" * 5000 + b"]" * 5000, SIG, allow_non_finite=allow_non_finite)


def test_messages_quote_client_values_briefly() -> None:
    long_name = "x" * 100_000
    cases = [
        body({"inputs": [{"name": long_name, "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}),
        body(good(outputs=[{"name": long_name}])),
        body({"inputs": [{"name": "input", "datatype": long_name, "shape": [1, 3], "data": [1, 2, 3]}]}),
        body(good([1, 2, 3], list(range(1, 100_000)))),
        body(
            {
                "inputs": [
                    {"name": "input", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": 2**99}}
                ]
            }
        ),
    ]
    for raw in cases:
        with pytest.raises(RequestError) as info:
            decode_infer(raw, SIG)
        assert len(str(info.value)) < 250, str(info.value)[:300]


def test_absurd_dimensions_are_refused_before_any_arithmetic_on_them() -> None:
    """The standard library (--allow-non-finite) keeps integers of thousands of digits; their product would
    be too long for ``str()`` (Python refuses 4300 digits and more)."""
    huge = b"1" + b"0" * 4000
    raw = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[%s,%s],"data":[1]}]}' % (huge, huge)
    with pytest.raises(RequestError, match="shape dimension an integer of 13288 bits is larger than 2147483647"):
        decode_infer(raw, SIG, allow_non_finite=True)
    with pytest.raises(RequestError, match="shape dimension 2147483648 is larger than 2147483647"):
        decode_infer(body(good([1], [2**31, 3])), SIG)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("12", 12), (" 7 ", 7), ("0", 0), ("000000000000000042", 42)],
)
def test_header_length_accepts_ascii_digits(raw: str, expected: int) -> None:
    assert header_length(raw) == expected


@pytest.mark.parametrize("raw", ["\u00b2", "\u0663", "1" * 5000, "1" * 19, "-1", "+1", "", " ", "1e3", "ten", "0x10"])
def test_header_length_refuses_anything_else_with_a_short_message(raw: str) -> None:
    with pytest.raises(RequestError, match="Inference-Header-Content-Length must be a byte count") as info:
        header_length(raw)
    assert info.value.status == 400 and len(str(info.value)) < 160


def test_missing_input_and_unclaimed_binary() -> None:
    with pytest.raises(RequestError, match="missing input 'b'"):
        decode_infer(body({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}), TWO)
    header = body(good())
    with pytest.raises(RequestError, match="4 bytes of binary data are not claimed"):
        decode_infer(header + b"\0\0\0\0", SIG, header_length=len(header))
    with pytest.raises(RequestError, match="outside the body"):
        decode_infer(header, SIG, header_length=len(header) + 1)


def test_binary_size_must_match_the_shape() -> None:
    header = body(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": 8}}]}
    )
    with pytest.raises(RequestError, match="binary data has 8 bytes"):
        decode_infer(header + b"\0" * 8, SIG, header_length=len(header))


def test_non_finite_allowed_when_configured() -> None:
    raw = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,3],"data":[NaN,1,2]}]}'
    req = decode_infer(raw, SIG, allow_non_finite=True)
    assert np.isnan(req.inputs["input"][0, 0])


@pytest.mark.parametrize("special", ["NaN", "Infinity", "-Infinity"])
def test_with_non_finite_allowed_a_value_out_of_range_beside_one_is_still_rejected(special: str) -> None:
    raw = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,3],"data":[%s,-1e39,2]}]}' % special.encode()
    with pytest.raises(RequestError, match=r"value 1e\+39 is out of range for FP32"):
        decode_infer(raw, SIG, allow_non_finite=True)
    ok = decode_infer(raw.replace(b"-1e39", b"-3e38"), SIG, allow_non_finite=True).inputs["input"]
    assert ok[0, 1] == np.float32(-3e38) and not np.isfinite(ok[0, 0])


def test_integer_range_is_checked() -> None:
    doc = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]},
            {"name": "b", "datatype": "INT64", "shape": [1, 1], "data": [2**70]},
        ]
    }
    with pytest.raises(RequestError, match=r"INT64 data must be integers|out of range for INT64"):
        decode_infer(body(doc), TWO)


def test_encode_json_and_binary() -> None:
    labels = np.array([1, 0], dtype=np.int64)
    probs = np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)
    enc = encode_infer("m", "3", "id-1", [(SIG.outputs[0], labels, False), (SIG.outputs[1], probs, True)])
    assert enc.header_length is not None
    doc = json.loads(enc.body[: enc.header_length])
    assert doc["model_name"] == "m" and doc["model_version"] == "3" and doc["id"] == "id-1"
    assert doc["outputs"][0] == {"name": "label", "datatype": "INT64", "shape": [2], "data": [1, 0]}
    assert doc["outputs"][1]["parameters"] == {"binary_data_size": probs.nbytes}
    raw = enc.body[enc.header_length :]
    np.testing.assert_array_equal(np.frombuffer(raw, dtype=np.float32).reshape(2, 2), probs)
    plain = encode_infer("m", "3", None, [(SIG.outputs[0], labels, False)])
    assert plain.header_length is None and "id" not in json.loads(plain.body)


def test_bytes_tensors_round_trip() -> None:
    sig = Signature(inputs=(spec("s", "BYTES", (None,)),), outputs=(spec("s", "BYTES", (None,)),))
    req = decode_infer(body({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2], "data": ["a", "bc"]}]}), sig)
    assert req.inputs["s"].tolist() == [b"a", b"bc"]
    raw = struct.pack("<I", 1) + b"a" + struct.pack("<I", 2) + b"bc"
    header = body(
        {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(raw)}}]}
    )
    assert decode_infer(header + raw, sig, header_length=len(header)).inputs["s"].tolist() == [b"a", b"bc"]
    enc = encode_infer("m", "1", None, [(sig.outputs[0], req.inputs["s"], False)])
    assert json.loads(enc.body)["outputs"][0]["data"] == ["a", "bc"]


def test_output_roles() -> None:
    assert output_roles(SIG) == {"label": "label", "probabilities": "probabilities"}
    reg = Signature(inputs=SIG.inputs, outputs=(spec("variable", "FP32", (None, 1)),))
    assert output_roles(reg) == {"variable": "value"}
    assert output_roles(SIG, "regression")["probabilities"] == "value"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["input", "x"]) | JSON_VALUES,
        "datatype": st.sampled_from(["FP32", "INT64", "BYTES"]) | JSON_VALUES,
        "shape": st.lists(st.integers(-2, 4), max_size=3) | JSON_VALUES,
        "data": st.lists(st.floats(allow_nan=False) | st.integers() | st.booleans(), max_size=12) | JSON_VALUES,
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-1, 64)}) | JSON_VALUES,
    },
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "inputs": st.lists(FIELDS, max_size=3) | JSON_VALUES,
            "outputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["label", "y"])}), max_size=2)
            | JSON_VALUES,
            "id": JSON_VALUES,
            "parameters": JSON_VALUES,
        },
    ),
    st.binary(max_size=16),
)
def test_arbitrary_documents_either_decode_or_fail_with_a_request_error(doc: dict[str, Any], tail: bytes) -> None:
    """Whatever arrives, the codec answers with a valid request or a RequestError, never anything else."""
    header = json.dumps(doc).encode()
    for raw, length in ((header, None), (header + tail, len(header))):
        try:
            req = decode_infer(raw, SIG, length)
        except RequestError as e:
            assert e.status == 400 and str(e)
        else:
            assert req.inputs["input"].shape[1:] == (3,)
            assert req.inputs["input"].dtype == np.float32
            assert np.isfinite(req.inputs["input"]).all()
