"""What an OIP answer predicted per row, and the response header that says it without the answer being read.

One rule for both ends (docs/gateway.md, "Feedback"): the gateway reads an upstream's JSON answer with
:func:`read_answer` to mint its feedback id, and the model server applies the same function to the outputs it
just computed to send :data:`PREDICTED_HEADER`, so that the gateway can sign them without parsing the answer.

**The header** (``x-mlrollout-predicted``; a *response* header of the gateway's upstreams, never read from a
client request and never passed on to a client: the gateway drops it with the other ``x-mlrollout-*`` headers
of upstreams). Its value is the standard base64 of ``flags u8 | rows u16 | classes u8 | predictions``: the
token's own predictions field (contract.feedback's layout, :func:`~.feedback.section`) after a flags byte,
``CLASSES`` or 0, plus :data:`PLAIN` when the answer is one JSON object, ending with the ``}`` that closes it
and without a top-level ``parameters`` (so the id can be spliced in before that brace unread; the model
server's answers always are). The flag is the upstream's claim, not the gateway's licence: the gateway
checks the answer's bytes before splicing whatever the flag says (gateway/feedback.py ``_plain``), so an
upstream that sets it wrongly gets its answer read, not corrupted. The gateway copies the predictions
field into the token as it is. It is what :func:`read_answer`
reads from the answer the header comes with, byte for byte the same token
(tests/unit/gateway/test_gateway_feedback_header.py); an upstream that does not send it (MLServer, KServe,
an older model server) has its answer read instead. A header that does not parse is ignored (the answer is
read); the gateway never fails a request over it.
"""

from __future__ import annotations

import binascii
import math
from dataclasses import dataclass
from typing import Any, Final

from .feedback import CLASSES, FLOAT32_MAX, MAX_ROWS, NO_PREDICTION, carried_rows, section, unpack_predictions

__all__ = [
    "PLAIN",
    "PREDICTED_HEADER",
    "Predicted",
    "Section",
    "header_value",
    "read_answer",
    "read_header",
    "read_predicted",
]

PREDICTED_HEADER: Final = "x-mlrollout-predicted"
PLAIN: Final = 0x80
"""The header's flag for an answer that is one JSON object ending with its closing ``}``, without ``parameters``
(a claim the gateway checks against the bytes before it splices; it never trusts it alone)."""
_FLOAT_TYPES: Final = frozenset({"FP16", "FP32", "FP64", "BF16"})
_SECTION_HEAD: Final = 4  # flags u8, rows u16, classes u8


@dataclass(slots=True)
class Predicted:
    """What an answer predicted per row, and how many classes its probabilities showed (0: unknown). Not
    frozen: made once per answer, and a frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__`` (docs/gateway.md, "What feedback costs")."""

    classes: bool
    values: list[Any]
    class_count: int = 0


def read_answer(answer: dict[str, Any]) -> Predicted | None:
    """What a parsed OIP answer predicted per row.

    The classifier's label output is preferred (non-float data, e.g. ``label``); else probabilities (a float
    ``[rows, classes]`` matrix) give the arg-max class; else a float vector is a regressor's values. The
    probabilities' width is the class count when the labels are the integers 0 to width - 1 (sklearn's).
    Any other shape of JSON gives None, never an exception (the answer then passes without an id). A
    regressor's ``null`` (how the model server writes NaN and ±Inf) is carried as NaN and a value beyond
    float32 as ±Inf, a probability row with a ``null`` as no class: the other rows can still be labelled,
    and that row counts against the model (contract.feedback, "A row without a prediction").
    """
    outputs = answer.get("outputs")
    if type(outputs) is not list:
        return None
    labels: list[Any] | None = None
    floats: list[dict[str, Any]] = []
    for out in outputs:
        if type(out) is not dict or type(data := out.get("data")) is not list:
            continue
        if out.get("datatype") in _FLOAT_TYPES:
            floats.append(out)
        elif labels is None:
            labels = _flat(data)
    if labels is not None:
        width = _width(floats) if floats else 0
        for x in labels:  # orjson makes exactly int for integers (bool is not `type(x) is int`)
            if type(x) is not int or not 0 <= x < width:
                width = 0
                break
        return Predicted(True, [str(x) for x in labels], width)
    width, argmax = _probabilities(floats)
    if argmax is not None:
        return Predicted(True, argmax, width)
    for out in floats:
        data = _flat(out["data"])
        if data and _numbers(data):
            return Predicted(False, [_carried(x) for x in data])
    return None


def _numbers(data: list[Any]) -> bool:
    """Whether every item is exactly an int, a float or None (JSON null; a bool is not a number here). A plain
    loop: a third of ``all()`` over a generator for an answer's few values."""
    for x in data:  # noqa: SIM110 (all() over a generator is what this replaces)
        if type(x) is not float and type(x) is not int and x is not None:
            return False
    return True


def _carried(value: float | None) -> float:
    """A regressor's value as a float32 token holds it: ``null`` as NaN, beyond float32 as ±Inf (packing
    such a value would raise)."""
    if value is None:
        return math.nan
    return float(value) if -FLOAT32_MAX <= value <= FLOAT32_MAX else math.copysign(math.inf, value)


def _width(floats: list[dict[str, Any]]) -> int:
    """The width of the first float ``[rows, classes]`` output (``classes`` >= 2, numbers or nulls), else 0:
    :func:`_probabilities` without the arg-max, for an answer that has its labels."""
    for out in floats:
        shape = out.get("shape")
        if type(shape) is list and len(shape) == 2 and type(width := shape[1]) is int and width >= 2:
            data = _flat(out["data"])
            if data and not len(data) % width and _numbers(data):
                return width
    return 0


def _probabilities(floats: list[dict[str, Any]]) -> tuple[int, list[str | None] | None]:
    """The width of a float ``[rows, classes]`` output and its arg-max class per row, if there is one; a row
    with a ``null`` (NaN or ±Inf) has no class (None)."""
    for out in floats:
        shape = out.get("shape")
        if type(shape) is not list or len(shape) != 2 or type(shape[1]) is not int or shape[1] < 2:
            continue
        width, data = shape[1], _flat(out["data"])
        if data and len(data) % width == 0 and _numbers(data):
            rows = [data[i : i + width] for i in range(0, len(data), width)]
            return width, [None if None in row else str(max(range(width), key=row.__getitem__)) for row in rows]
    return 0, None


def _flat(data: list[Any]) -> list[Any]:
    """The items of nested lists in order; a loop, not recursion (orjson nests up to 1024 deep, deeper than
    Python's recursion limit)."""
    for item in data:
        if type(item) is list:
            break
    else:
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if type(item) is list:
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def header_value(predicted: Predicted, plain: bool) -> bytes | None:
    """The :data:`PREDICTED_HEADER` value for an answer that predicted ``predicted`` (the model server's side;
    ``plain``: see :data:`PLAIN`), or None when it has no rows, more than a token ever carries, or a class
    label longer than one carries (:func:`~.feedback.carried_rows`; the answer is then read, as without it)."""
    values = predicted.values
    if not values or len(values) > MAX_ROWS or carried_rows(predicted.classes, values) < len(values):
        return None
    flags = CLASSES if predicted.classes else 0
    packed = section(flags, predicted.values, predicted.class_count)
    return binascii.b2a_base64(bytes((flags | (PLAIN if plain else 0),)) + packed, newline=False)


@dataclass(slots=True)
class Section:
    """A header's predictions as a token carries them: ``packed`` is the token's field (rows, classes,
    predictions), cut to ``rows`` rows; ``truncated`` when the answer had more; ``plain``: :data:`PLAIN`.
    Never changed once made (a gateway keeps the ones it sees often)."""

    flags: int
    rows: int
    truncated: bool
    packed: bytes
    plain: bool


def read_header(value: bytes, max_rows: int) -> Section | None:
    """The predictions a :data:`PREDICTED_HEADER` value carries, at most ``max_rows`` of them; None when it is
    not such a value (or has no rows): the gateway then reads the answer. Every length is checked and every
    label must be UTF-8, so a bad value can never make a token that fails to verify."""
    try:
        raw = binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) < _SECTION_HEAD + 1:
        return None
    flags, plain, rows = raw[0] & ~PLAIN, raw[0] >= PLAIN, raw[1] | raw[2] << 8
    if not rows or rows > MAX_ROWS:
        return None
    carried = min(rows, max_rows)
    if flags == CLASSES:
        at, end, cut = _SECTION_HEAD, len(raw), 0
        for row in range(rows):
            if row == carried:
                cut = at
            if at >= end:
                return None
            size = raw[at]
            if size == NO_PREDICTION:
                at += 1
                continue
            label = raw[at + 1 : at + 1 + size]
            if not label.isascii():  # a token's label must decode as verification decodes it
                try:
                    label.decode()
                except UnicodeDecodeError:
                    return None
            at += 1 + size
        if at != end:
            return None
    elif flags == 0:
        if len(raw) != _SECTION_HEAD + 4 * rows:
            return None
        cut = _SECTION_HEAD + 4 * carried if carried < rows else 0
    else:
        return None
    if not cut:
        return Section(flags, rows, False, raw[1:], plain)
    packed = bytes((carried & 0xFF, carried >> 8, raw[3])) + raw[_SECTION_HEAD:cut]
    return Section(flags, carried, True, packed, plain)


def read_predicted(value: bytes) -> Predicted | None:
    """What a :data:`PREDICTED_HEADER` value says its answer predicted, every row of it: :func:`read_answer` of
    that answer, except that a regressor's values are float32 (as the header and a token carry them). None
    when it is not such a value (:func:`read_header`). What the gateway keeps of a shadow's answer from our
    model server, unread (gateway/feedback.py ``shadow_predictions``)."""
    read = read_header(value, MAX_ROWS)
    if read is None:
        return None
    classes = read.flags == CLASSES
    values, _ = unpack_predictions(classes, read.rows, read.packed, _SECTION_HEAD - 1)
    return Predicted(classes, list(values), read.packed[2])
