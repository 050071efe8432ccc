"""Open Inference Protocol v2 inference bodies: strict decoding and encoding (pure, no I/O).

Decoding turns a request body (JSON, or JSON plus binary tensors per the binary tensor data extension)
into numpy arrays that match the model signature, or raises :class:`RequestError` with a message that
names the problem. Nothing malformed ever reaches onnxruntime.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from mlrollout_serving.contract.feedback import MAX_ROWS
from mlrollout_serving.contract.predicted import header_value, read_answer
from mlrollout_serving.server.signature import DATATYPE_DTYPES, RequestedOutput, Signature, TensorSpec

Array = npt.NDArray[Any]

# Python element types that JSON data may hold for each kind of numpy dtype ("bool" is not a number here).
_NUMBER_TYPES = {
    "f": frozenset({float, int}),
    "i": frozenset({int}),
    "u": frozenset({int}),
    "b": frozenset({bool}),
    "O": frozenset({str}),
}
_FLOAT_MAX = {2: float(np.finfo(np.float16).max), 4: float(np.finfo(np.float32).max)}
_KIND_WORDS = {"f": "numbers", "i": "integers", "u": "non-negative integers", "b": "booleans", "O": "strings"}


_SHOWN = 48
"""Characters of a client's value an error message quotes at most (a message never echoes megabytes)."""
_MAX_DIM = 2**31 - 1
"""Largest tensor dimension accepted; any larger one needs more values than a request body can hold."""
_MAX_LENGTH_DIGITS = 18
"""Digits of a byte count in a header: more would be an exabyte (and ``int()`` refuses 4300 and beyond)."""


def clip(text: str, limit: int = _SHOWN) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis), to quote a client's string in a message."""
    return text if len(text) <= limit else text[:limit] + "\u2026"


def shown(value: Any, limit: int = _SHOWN) -> str:
    """A client's JSON value for an error message: short, without recursion into nested values, and
    without converting a huge integer to text."""
    if isinstance(value, str):
        return json.dumps(clip(value, limit))
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 3 * limit else f"an integer of {value.bit_length()} bits"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        head = ", ".join(shown(v, 12) if not isinstance(v, list | dict) else "[\u2026]" for v in value[:6])
        more = ", \u2026" if len(value) > 6 else ""
        return f"[{head}{more}]"
    return "a JSON object" if isinstance(value, dict) else type(value).__name__


class RequestError(Exception):
    """A request the server refuses; ``status`` is the HTTP status, ``str(self)`` the message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class InferRequest:
    id: str | None
    inputs: dict[str, Array]
    """Arrays by input name, in the model's input order."""
    rows: int
    """Leading dimension shared by all inputs (1 for models without a batch dimension)."""
    outputs: tuple[RequestedOutput, ...]
    """The outputs to return, in order (all model outputs when the request names none)."""


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RequestError(f"{what} must be a JSON object")
    return value


def _params(entry: dict[str, Any], what: str) -> dict[str, Any]:
    params = entry.get("parameters")
    if params is None:
        return {}
    return _obj(params, f"{what} 'parameters'")


def _flatten(data: list[Any], depth: int, name: str) -> list[Any]:
    """Flatten nested lists (up to the tensor's rank) into one row-major list.

    The lists at each level must all be as long as each other (as numpy requires of a nested array): rows
    of 12 and 14 values hold as many values as two rows of 13, but they are not a ``[2, 13]`` tensor.
    """
    flat = data
    for level in range(1, depth + 1):
        if not flat or type(flat[0]) is not list:
            break
        if any(type(x) is not list for x in flat):
            raise RequestError(f"input '{name}': nested 'data' mixes lists and scalars")
        widths = set(map(len, flat))
        if len(widths) > 1:
            a, b = sorted(widths)[:2]
            raise RequestError(
                f"input '{name}': nested 'data' is ragged: lists at depth {level} hold {a} and {b} values"
            )
        flat = list(chain.from_iterable(flat))
    return flat


def _shape(value: Any, spec: TensorSpec) -> tuple[int, ...]:
    if type(value) is not list:
        raise RequestError(f"input '{spec.name}': 'shape' must be a list of integers")
    for d in value:  # a plain loop: a generator in any() costs a Python call per element
        if type(d) is not int:
            raise RequestError(f"input '{spec.name}': 'shape' must be a list of integers")
        if d > _MAX_DIM:  # an absurd size: refused before a product of such numbers is ever formatted
            raise RequestError(f"input '{spec.name}': shape dimension {shown(d)} is larger than {_MAX_DIM}")
    ok = len(value) == len(spec.shape)
    if ok:
        for d, want in zip(value, spec.shape, strict=True):
            if d < 1 or (want is not None and d != want):
                ok = False
                break
    if not ok:
        raise RequestError(
            f"input '{spec.name}': shape {shown(value)} does not match the model's {spec.oip_shape} "
            "(-1 = any size >= 1)"
        )
    return tuple(value)


def _from_json(data: Any, spec: TensorSpec, shape: tuple[int, ...], count: int) -> tuple[Array, bool]:
    """The array, and whether it is already known to be all finite (so the caller can skip that check)."""
    if type(data) is not list:
        raise RequestError(f"input '{spec.name}': 'data' must be a list")
    flat = _flatten(data, len(shape) - 1, spec.name) if len(shape) > 1 else data
    if len(flat) != count:
        raise RequestError(f"input '{spec.name}': shape {list(shape)} needs {count} elements, got {len(flat)}")
    kind = spec.dtype.kind
    found = set(map(type, flat))
    if not found <= _NUMBER_TYPES[kind]:
        bad = sorted(t.__name__ for t in found - _NUMBER_TYPES[kind])
        raise RequestError(
            f"input '{spec.name}': {spec.datatype} data must be {_KIND_WORDS[kind]}, got {', '.join(bad)}"
        )
    finite = False
    try:
        if kind == "O":
            arr = np.empty(count, dtype=object)
            arr[:] = [s.encode() for s in flat]
        elif kind == "f" and spec.dtype.itemsize < 8:
            # Parse wide and check the range first: a silent overflow to inf would hide the real problem.
            wide = np.array(flat, dtype=np.float64)
            peak = float(np.maximum.reduce(np.abs(wide)))  # NaN stays NaN, fails every comparison
            limit = _FLOAT_MAX[spec.dtype.itemsize]
            finite = peak <= limit  # the same reduction answers the finiteness check
            if not finite and not peak < math.inf:  # NaN or inf among the values: range of the finite ones
                rest = np.abs(wide[np.isfinite(wide)])
                peak = float(rest.max()) if rest.size else 0.0
            if peak > limit:
                raise RequestError(f"input '{spec.name}': value {peak:g} is out of range for {spec.datatype}")
            arr = wide.astype(spec.dtype)
        else:
            arr = np.array(flat, dtype=spec.dtype)
    except (OverflowError, ValueError) as e:
        raise RequestError(f"input '{spec.name}': value out of range for {spec.datatype} ({e})") from None
    return arr.reshape(shape), finite


def _from_binary(raw: memoryview, spec: TensorSpec, shape: tuple[int, ...], count: int) -> Array:
    if spec.dtype.kind == "O":
        items: list[bytes] = []
        pos = 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise RequestError(f"input '{spec.name}': truncated BYTES element")
            (size,) = struct.unpack_from("<I", raw, pos)
            items.append(bytes(raw[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        if len(items) != count or pos != len(raw):
            raise RequestError(f"input '{spec.name}': shape {list(shape)} needs {count} BYTES elements")
        arr = np.empty(count, dtype=object)
        arr[:] = items
        return arr.reshape(shape)
    expected = count * spec.dtype.itemsize
    if len(raw) != expected:
        raise RequestError(
            f"input '{spec.name}': binary data has {len(raw)} bytes, shape {list(shape)} "
            f"of {spec.datatype} needs {expected}"
        )
    return np.frombuffer(raw, dtype=spec.dtype).reshape(shape)


def _decode_input(
    entry: Any, spec_of: Signature, binary: memoryview, offset: int, allow_non_finite: bool
) -> tuple[str, Array, int]:
    entry = _obj(entry, "each entry of 'inputs'")
    name = entry.get("name")
    if not isinstance(name, str):
        raise RequestError("each input needs a string 'name'")
    spec = spec_of.input(name)
    if spec is None:
        known = ", ".join(repr(t.name) for t in spec_of.inputs)
        raise RequestError(f"unknown input '{clip(name)}' (the model's inputs: {known})")
    datatype = entry.get("datatype")
    if datatype != spec.datatype:
        if not isinstance(datatype, str) or datatype not in DATATYPE_DTYPES:
            raise RequestError(f"input '{name}': unknown datatype {shown(datatype)}")
        raise RequestError(f"input '{name}': datatype {datatype} does not match the model's {spec.datatype}")
    shape = _shape(entry.get("shape"), spec)
    count = math.prod(shape)
    params = entry.get("parameters")
    size = None if params is None else _obj(params, f"input '{name}' 'parameters'").get("binary_data_size")
    finite = False
    if size is not None:
        if type(size) is not int or size < 0 or offset + size > len(binary):
            raise RequestError(f"input '{name}': 'binary_data_size' {shown(size)} exceeds the binary data sent")
        if "data" in entry:
            raise RequestError(f"input '{name}': has both 'data' and 'binary_data_size'")
        arr = _from_binary(binary[offset : offset + size], spec, shape, count)
        offset += size
    elif "data" not in entry:
        raise RequestError(f"input '{name}': missing 'data'")
    else:
        arr, finite = _from_json(entry["data"], spec, shape, count)
    if spec.is_float and not allow_non_finite and not finite and not _all_finite(arr):
        raise RequestError(f"input '{name}': contains NaN or infinite values, which this model does not accept")
    return name, arr, offset


def _all_finite(arr: Array) -> bool:
    """One sum instead of an elementwise mask: NaN and inf propagate through it, so a finite sum proves
    every element finite. Only a non-finite sum (which finite values can also reach by overflowing in the
    array's own precision) needs the exact elementwise check."""
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing sum is expected and checked below
        total = arr.sum()
    if bool(np.isfinite(total)):
        return True
    return bool(np.isfinite(arr).all())


def _decode_outputs(value: Any, sig: Signature, default_binary: bool) -> tuple[RequestedOutput, ...]:
    if not isinstance(value, list):
        raise RequestError("'outputs' must be a list")
    result: list[RequestedOutput] = []
    for entry in value:
        entry = _obj(entry, "each entry of 'outputs'")
        name = entry.get("name")
        if not isinstance(name, str):
            raise RequestError("each requested output needs a string 'name'")
        if sig.output(name) is None:
            known = ", ".join(repr(t.name) for t in sig.outputs)
            raise RequestError(f"unknown output '{clip(name)}' (the model's outputs: {known})")
        binary = _params(entry, f"output '{name}'").get("binary_data", default_binary)
        if not isinstance(binary, bool):
            raise RequestError(f"output '{name}': 'binary_data' must be true or false")
        result.append(RequestedOutput(name, binary))
    return tuple(result)


def _reject_constant(token: str) -> float:
    raise RequestError(f"non-finite value {token} is not accepted (it is not valid JSON either)")


# Built once: json.loads/json.dumps with arguments construct a new decoder/encoder on every call.
_STRICT_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_LAX_DECODER = json.JSONDecoder()
# orjson serialises these numpy dtypes itself (float32 as its shortest round-trip repr).
_ORJSON_NATIVE = frozenset(["f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1"])
_ORJSON_NATIVE_DTYPES = frozenset(np.dtype(t) for t in _ORJSON_NATIVE)
"""The same, as native-byte-order dtypes: one set lookup per output array on the hot path."""


def parse_json(data: bytes | memoryview, allow_non_finite: bool) -> Any:
    """Parse JSON, reporting malformed JSON as a RequestError and, unless allowed, refusing NaN.

    orjson parses first: strict JSON, several times faster. What it refuses goes to the standard library,
    which names the problem better (``non-finite value NaN``) and holds what orjson cannot (1e400 is
    infinity, refused later with the range checks) - but it also nests only as deep as Python's recursion
    limit, and it accepts a lone UTF-16 surrogate escape (``"\\ud800"``), a string no UTF-8 encoder can
    write back: both are refused here.
    """
    if not allow_non_finite:
        try:
            return orjson.loads(data)  # strict JSON: no NaN, no Infinity; several times faster
        except orjson.JSONDecodeError:
            pass  # the standard library below names the problem (or accepts what orjson cannot hold)
    try:
        text = data.decode("utf-8") if type(data) is bytes else bytes(data).decode("utf-8")
        doc = (_LAX_DECODER if allow_non_finite else _STRICT_DECODER).decode(text)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        if "integer string conversion" in str(e):  # Python's own limit, not the client's business
            raise RequestError(
                f"malformed JSON: an integer of more than {sys.get_int_max_str_digits()} digits"
            ) from None
        raise RequestError(f"malformed JSON: {clip(str(e), 200)}") from None
    except RecursionError:
        raise RequestError("malformed JSON: nested too deeply") from None
    if "\\u" in text and _has_lone_surrogate(doc):  # only an escape can make one: UTF-8 decoding refuses them
        raise RequestError("malformed JSON: a string holds a lone UTF-16 surrogate escape (\\ud800-\\udfff)")
    return doc


def _has_lone_surrogate(doc: Any) -> bool:
    """Whether any string (or key) in a parsed document holds a lone surrogate (no recursion)."""
    stack = [doc]
    while stack:
        value = stack.pop()
        if type(value) is str:
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif type(value) is list:
            stack.extend(value)
        elif type(value) is dict:
            stack.extend(value)
            stack.extend(value.values())
    return False


def header_length(raw: str) -> int:
    """The ``Inference-Header-Content-Length`` header's value: ASCII digits only (``str.isdigit()`` also
    takes ``"²"``, which ``int()`` then refuses) and not absurdly many of them."""
    text = raw.strip(" \t")
    if not (0 < len(text) <= _MAX_LENGTH_DIGITS and text.isascii() and text.isdigit()):
        raise RequestError(
            f"Inference-Header-Content-Length must be a byte count of at most {_MAX_LENGTH_DIGITS} digits, "
            f"got {shown(raw)}"
        )
    return int(text)


def decode_infer(
    body: bytes, sig: Signature, header_length: int | None = None, allow_non_finite: bool = False
) -> InferRequest:
    """Decode and validate one inference request body against the model signature."""
    header: bytes | memoryview
    if header_length is None:
        header, binary = body, memoryview(b"")
    else:
        if not 0 <= header_length <= len(body):
            raise RequestError(
                f"Inference-Header-Content-Length {header_length} is outside the body ({len(body)} bytes)"
            )
        view = memoryview(body)
        header, binary = view[:header_length], view[header_length:]
    if allow_non_finite:
        req = parse_json(header, allow_non_finite)
    else:
        try:
            req = orjson.loads(header)  # what parse_json does first, without the call
        except orjson.JSONDecodeError:
            req = parse_json(header, allow_non_finite)
    if header_length is None and type(req) is dict:
        plain = _decode_plain(req, sig)
        if plain is not None:
            return plain
    req = _obj(req, "the request body")
    req_id = req.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise RequestError("'id' must be a string")
    default_binary = _params(req, "request").get("binary_data_output", False)
    if not isinstance(default_binary, bool):
        raise RequestError("'binary_data_output' must be true or false")
    entries = req.get("inputs")
    if not isinstance(entries, list) or not entries:
        raise RequestError("'inputs' must be a non-empty list")
    if len(entries) == 1 and len(sig.inputs) == 1:  # the common case, without the bookkeeping below
        name, arr, offset = _decode_input(entries[0], sig, binary, 0, allow_non_finite)
        ordered = {name: arr}
    else:
        ordered = _decode_inputs(entries, sig, binary, allow_non_finite)
        offset = len(binary)
    if offset != len(binary):
        raise RequestError(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    rows = 1
    if sig.batchable:
        leading = {a.shape[0] for a in ordered.values()}
        if len(leading) > 1:
            raise RequestError(f"inputs disagree on the batch size: {sorted(leading)}")
        rows = leading.pop()
    outputs = req.get("outputs")
    return InferRequest(
        id=req_id,
        inputs=ordered,
        rows=rows,
        outputs=sig.default_outputs[default_binary]
        if outputs is None
        else _decode_outputs(outputs, sig, default_binary),
    )


_FLOATS = frozenset({float, int})
_PLAIN_FLOAT_MAX = {4: _FLOAT_MAX[4], 8: sys.float_info.max}


def _decode_plain(req: dict[str, Any], sig: Signature) -> InferRequest | None:
    """The common request in one pass: one input given as a flat JSON list of in-range numbers, no
    parameters, all outputs as JSON. Returns None for anything else (including every invalid request),
    and the strict decoder then handles it and names the problem; what this accepts, the strict decoder
    accepts with the same result (tests/unit/serving/test_serving_codec_plain.py)."""
    entries = req.get("inputs")
    if type(entries) is not list or len(entries) != 1 or len(sig.inputs) != 1:
        return None
    req_id = req.get("id")
    if (req_id is not None and type(req_id) is not str) or "parameters" in req or "outputs" in req:
        return None
    entry = entries[0]
    spec = sig.inputs[0]
    if (
        type(entry) is not dict
        or entry.get("name") != spec.name
        or entry.get("datatype") != spec.datatype
        or "parameters" in entry
        or spec.dtype.kind != "f"
        or spec.dtype.itemsize not in _PLAIN_FLOAT_MAX
    ):
        return None
    shape, data = entry.get("shape"), entry.get("data")
    if type(shape) is not list or type(data) is not list or len(shape) != len(spec.shape):
        return None
    count = 1
    for d, want in zip(shape, spec.shape, strict=True):
        if type(d) is not int or d < 1 or (want is not None and d != want):
            return None
        count *= d
    if len(data) != count or not set(map(type, data)) <= _FLOATS:
        return None
    # Every value in range and finite (a NaN or inf makes the sum fail the comparison), so the array
    # converts without overflow, exactly as the strict decoder's float64-then-narrow conversion does.
    try:
        magnitude = sum(map(abs, data))
    except OverflowError:  # an int too large for a float, added to a float
        return None
    if not magnitude <= _PLAIN_FLOAT_MAX[spec.dtype.itemsize]:
        return None
    arr = np.array(data, dtype=spec.dtype).reshape(shape)
    rows = shape[0] if sig.batchable else 1
    return InferRequest(id=req_id, inputs={spec.name: arr}, rows=rows, outputs=sig.default_outputs[False])


def _decode_inputs(entries: list[Any], sig: Signature, binary: memoryview, allow_non_finite: bool) -> dict[str, Array]:
    decoded: dict[str, Array] = {}
    offset = 0
    for entry in entries:
        name, arr, offset = _decode_input(entry, sig, binary, offset, allow_non_finite)
        if name in decoded:
            raise RequestError(f"input '{name}' is given more than once")
        decoded[name] = arr
    if offset != len(binary):
        raise RequestError(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    missing = [t.name for t in sig.inputs if t.name not in decoded]
    if missing:
        raise RequestError(f"missing input '{missing[0]}'")
    return {t.name: decoded[t.name] for t in sig.inputs}


def _json_data(arr: Array) -> Array | list[Any]:
    flat = np.ascontiguousarray(arr).ravel()
    if flat.dtype.kind == "O":
        return [x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in flat]
    if flat.dtype.str[1:] in _ORJSON_NATIVE:
        return flat
    data: list[Any] = flat.tolist()
    return data


def _binary_data(arr: Array) -> bytes:
    if arr.dtype.kind == "O":
        parts: list[bytes] = []
        for x in arr.ravel():
            raw = x if isinstance(x, bytes) else str(x).encode()
            parts += [struct.pack("<I", len(raw)), raw]
        return b"".join(parts)
    return np.ascontiguousarray(arr).tobytes()


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a microsecond per reply
class Encoded:
    body: bytes
    header_length: int | None
    """Length of the JSON part when binary tensors follow it, else None."""


def encode_infer(
    model_name: str,
    model_version: str,
    req_id: str | None,
    outputs: Sequence[tuple[TensorSpec, Array, bool]],
) -> Encoded:
    """Encode a response: each output is ``(spec, array, binary?)``."""
    items: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for spec, arr, binary in outputs:
        item: dict[str, Any] = {"name": spec.name, "datatype": spec.datatype, "shape": list(arr.shape)}
        if binary:
            blob = _binary_data(arr)
            blobs.append(blob)
            item["parameters"] = {"binary_data_size": len(blob)}
        else:
            flat = arr.ravel()  # contiguous (a view when arr already is)
            item["data"] = flat if flat.dtype in _ORJSON_NATIVE_DTYPES else _json_data(flat)
        items.append(item)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if req_id is not None:
        doc["id"] = req_id
    doc["outputs"] = items
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return Encoded(header, None)
    return Encoded(header + b"".join(blobs), len(header))


_PREDICTED_VALUES = 64 * MAX_ROWS
"""Beyond this many output values an answer gets no predictions header (its rows are beyond what a token
carries, or nearly): the gateway reads such an answer itself, as one from any other server."""
_CLASS_HEADERS: dict[tuple[tuple[Any, ...], int], str | None] = {}
"""Header values of class predictions already packed (a classifier's answers of up to 4 rows: one-row answers
have one per class)."""


def predicted_header(outputs: Sequence[tuple[TensorSpec, Array, bool]]) -> str | None:
    """The predictions header's value (contract.predicted) for an answer of these outputs encoded as JSON (no
    binary ones), or None: the gateway's reading rule (``read_answer``) applied to the outputs as the answer's
    JSON shows them (a non-finite float is ``null``), so the gateway signs what it would have read."""
    shown: list[dict[str, Any]] = []
    values = 0
    for spec, arr, _ in outputs:
        flat = arr.ravel()
        values += flat.size
        if values > _PREDICTED_VALUES:
            return None
        kind = flat.dtype.kind
        if kind == "f":
            data = flat.tolist()
            for x in data:
                if x - x != 0.0:  # NaN or ±Inf: orjson writes null
                    data = [v if v - v == 0.0 else None for v in data]
                    break
        elif kind in "iub":  # what orjson writes natively (_ORJSON_NATIVE): tolist gives the same numbers
            data = flat.tolist()
        else:
            data = list(_json_data(flat))
        shown.append({"datatype": spec.datatype, "shape": list(arr.shape), "data": data})
    read = read_answer({"outputs": shown})
    if read is None:
        return None
    if not read.classes:
        value = header_value(read, plain=True)  # encode_infer's object, no parameters
        return None if value is None else value.decode("ascii")
    key = (tuple(read.values), read.class_count)
    cached = _CLASS_HEADERS.get(key, "")
    if cached == "":
        value = header_value(read, plain=True)
        cached = None if value is None else value.decode("ascii")
        if len(key[0]) <= 4 and len(_CLASS_HEADERS) < 1024:  # a few rows' labels: the memory stays small
            _CLASS_HEADERS[key] = cached
    return cached
