"""A shadow's answer from our model server is kept for pairing from its predictions header, unread
(``shadow_predictions``): the rows kept are byte for byte the ones reading the answer gives, for every kind of
answer the server sends; a regressor's values are float32 either way, as the client answer's token carries
them, so two identical models tie on every labelled row. The same for the routed track's own answer that a
fallback replaced (``stamp_rescued``): its id is the one reading that answer gives."""

from __future__ import annotations

import base64
import itertools
import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.feedback_samples import KEY, NOW
from tests.support.served_answers import Outputs, drawn_labels, server_answer, spec

from mlrollout_serving.contract.predicted import Predicted, header_value, read_predicted
from mlrollout_serving.gateway.feedback import (
    Answer,
    Feedback,
    FeedbackConfig,
    predictions_of,
    shadow_predictions,
)


def _exact(values: tuple[Any, ...] | None) -> list[tuple[str, Any]] | None:
    """``values`` with each float as its 8 bytes (so NaN equals NaN, and 0.1 differs from float32's 0.1)."""
    if values is None:
        return None
    return [("f", struct.pack("<d", v)) if type(v) is float else (type(v).__name__, v) for v in values]


def _feedback(tmp_path: Path) -> Feedback:
    path = tmp_path / "keys"
    path.write_text(json.dumps({"3": base64.b64encode(KEY).decode()}))
    return Feedback(FeedbackConfig(str(path), replica=7, max_rows=4))


_FLOATS = st.one_of(st.floats(-1e6, 1e6, width=32), st.sampled_from([math.nan, math.inf, -math.inf, 0.1, 1e39]))


@settings(max_examples=400, deadline=None)
@given(
    rows=st.integers(1, 9),
    width=st.integers(1, 4),
    data=st.data(),
    label_kind=st.sampled_from(["INT64", "BYTES", "BOOL", None]),
    regressor=st.booleans(),
    fp64=st.booleans(),
)
def test_the_shadow_rows_from_the_header_are_the_rows_reading_gives(
    rows: int, width: int, data: st.DataObject, label_kind: str | None, regressor: bool, fp64: bool
) -> None:
    outputs: Outputs = []
    if label_kind is not None and not regressor:
        outputs.append((spec("label", label_kind), drawn_labels(data, rows, label_kind), False))
    shape = (rows,) if regressor else (rows, width)
    size = rows if regressor else rows * width
    flat = data.draw(st.lists(_FLOATS, min_size=size, max_size=size))
    with np.errstate(over="ignore"):  # 1e39 as float32 is inf: the server then answers null, as for NaN
        array = np.array(flat, dtype=np.float64 if fp64 else np.float32).reshape(shape)
    outputs.append((spec("y", "FP64" if fp64 else "FP32"), array, False))
    body, header = server_answer(outputs)
    read = shadow_predictions(body, None)
    if header is None:  # the server sends none exactly when the answer shows no prediction
        assert read is None or read == ()
        return
    unread = shadow_predictions(body, header)
    assert unread is not None and _exact(unread) == _exact(read)  # byte for byte the same rows
    parsed = predictions_of(body)
    assert parsed is not None and len(unread) == len(parsed.values)
    if parsed.classes:
        assert unread == tuple(parsed.values)  # class rows exactly as before
    else:  # float32 of the answer's values
        assert _exact(unread) == _exact(struct.unpack(f"<{rows}f", struct.pack(f"<{rows}f", *parsed.values)))


def test_a_header_that_does_not_parse_leaves_the_answer_read() -> None:
    body = b'{"outputs":[{"name":"label","datatype":"INT64","shape":[2],"data":[2,0]}]}'
    for header in (None, b"", b"not base64!", base64.b64encode(b"\x02\x02\x00\x03\x01a")):
        assert shadow_predictions(body, header) == ("2", "0")
    assert shadow_predictions(b"[1]", None) is None and shadow_predictions(b"\xff", b"junk") is None
    honest = header_value(Predicted(True, ["2", "0"], 3), plain=True)
    assert honest is not None and shadow_predictions(b"unread", honest) == ("2", "0")
    assert read_predicted(honest) == Predicted(True, ["2", "0"], 3)


@pytest.mark.parametrize("regressor", [False, True])
def test_a_label_pairs_the_same_whichever_way_the_shadow_answer_was_kept(tmp_path: Path, regressor: bool) -> None:
    """Two identical models in a shadow step, one of the pair's answers kept from its header and the other's
    twin read: the same pairs, and identical regressors tie on every row (both right)."""
    if regressor:
        outputs: Outputs = [(spec("y", "FP32"), np.array([0.1, 2.7, 1e6 / 3], dtype=np.float32), False)]
        labels: list[Any] = [0.3, 2.0, 5.0]
    else:
        probs = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]], dtype=np.float32)
        outputs = [(spec("label", "INT64"), np.array([1, 0, 2]), False), (spec("p", "FP32"), probs, False)]
        labels = ["1", "2", "2"]
    body, header = server_answer(outputs)
    assert header is not None
    pairs = []
    for shadow_header in (header, None):
        feedback = _feedback(tmp_path)
        stamped = feedback.stamp("stable", "r1", body, True, NOW, header)
        assert stamped is not None and stamped[1] is not None
        minted = stamped[1]
        feedback.shadow_answered(minted.nonce, "r2", body, NOW, shadow_header)
        counted = feedback.receive(orjson.dumps({"feedback_id": minted.token, "labels": labels}), NOW)
        assert isinstance(counted, Answer) and counted.status == 202 and counted.body["paired"] is True, counted
        pairs.append(feedback.snapshot()[0].pairs)
    assert pairs[0] == pairs[1]
    if regressor:
        assert pairs[0] == {("r2", "both_right"): 3}  # the same float32 values: ties, never split by rounding
    else:
        assert pairs[0] == {("r2", "both_right"): 2, ("r2", "both_wrong"): 1}


@pytest.mark.parametrize("regressor", [False, True])
def test_a_rescued_answer_is_scored_on_the_tracks_own_answer_from_its_header_as_if_read(
    tmp_path: Path, regressor: bool
) -> None:
    """The routed track's own answer a fallback replaced (low confidence, held for review): its predictions
    taken from its header give byte for byte the id reading it gives; a header that does not parse is
    ignored and the answer read."""
    if regressor:
        outputs: Outputs = [(spec("y", "FP64"), np.array([0.1, math.nan, 1e39]), False)]
    else:
        probs = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]], dtype=np.float32)
        outputs = [(spec("label", "INT64"), np.array([1, 0]), False), (spec("p", "FP32"), probs, False)]
    own, header = server_answer(outputs)
    served, _ = server_answer([(spec("label", "INT64"), np.array([2, 2]), False)])  # stable's answer, served
    assert header is not None
    feedback = _feedback(tmp_path)
    assert feedback.minter is not None
    stamped = []
    for own_predicted in (None, header, b"not a header"):
        feedback.minter._nonces = itertools.count(99)
        stamped.append(feedback.stamp_rescued("candidate", "r2", served, own, NOW, own_predicted))
    assert stamped[0] is not None and stamped[0][1] is not None and not stamped[0][1].truncated
    assert stamped[0] == stamped[1] == stamped[2]  # the same body and the same id, byte for byte
