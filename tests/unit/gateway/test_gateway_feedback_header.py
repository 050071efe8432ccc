"""The model server's predictions header (contract.predicted): a gateway that signs it gets byte for byte the
token it would have minted by reading the answer the header came with; a header that does not parse is
ignored (the answer is read); rows beyond the gateway's bound are cut exactly as from a read answer."""

from __future__ import annotations

import base64
import itertools
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.feedback_samples import KEY, NOW
from tests.support.served_answers import Outputs, drawn_labels, server_answer, spec

from mlrollout_serving.contract.feedback import MAX_ROWS, FeedbackKeys, seal_section, verify
from mlrollout_serving.contract.predicted import Predicted, header_value, read_header
from mlrollout_serving.gateway.feedback import Feedback, FeedbackConfig, Minted, predictions_of


def _feedback(tmp_path: Any, max_rows: int = 4) -> Feedback:
    path = tmp_path / "keys"
    path.write_text(json.dumps({"3": base64.b64encode(KEY).decode()}))
    return Feedback(FeedbackConfig(str(path), replica=7, max_rows=max_rows))


def _both(feedback: Feedback, body: bytes, header: bytes | None) -> tuple[Any, Any]:
    """``stamp`` of ``body`` read, and with ``header``, from the same nonce: (body, id, rows, truncated) each."""
    assert feedback.minter is not None
    out: list[tuple[bytes, bytes, int, bool] | None] = []
    for predicted in (None, header):
        feedback.minter._nonces = itertools.count(1234)
        stamped = feedback.stamp("candidate", "rev-1", body, True, NOW, predicted)
        if stamped is None:
            out.append(None)
            continue
        body_out, minted = stamped
        assert minted is not None  # every row of these answers can be carried
        out.append((body_out, minted.id, minted.rows, minted.truncated))
    return out[0], out[1]


_PROBS = st.lists(
    st.one_of(st.floats(0, 1, width=32), st.sampled_from([math.nan, math.inf, -math.inf, 0.5])), min_size=1
)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.integers(1, 9),
    width=st.integers(1, 4),
    probs=st.data(),
    label_kind=st.sampled_from(["INT64", "BYTES", "BOOL", None]),
    regressor=st.booleans(),
    fp64=st.booleans(),
)
def test_the_header_mints_the_token_reading_the_answer_mints(
    tmp_path_factory: pytest.TempPathFactory,
    rows: int,
    width: int,
    probs: st.DataObject,
    label_kind: str | None,
    regressor: bool,
    fp64: bool,
) -> None:
    feedback = _feedback(tmp_path_factory.mktemp("k"))
    floats = "FP64" if fp64 else "FP32"
    outputs: Outputs = []
    if label_kind is not None and not regressor:
        outputs.append((spec("label", label_kind), drawn_labels(probs, rows, label_kind), False))
    shape = (rows,) if regressor else (rows, width)
    size = rows if regressor else rows * width
    flat = probs.draw(st.lists(_PROBS.map(lambda x: x[0]), min_size=size, max_size=size))
    array = np.array(flat, dtype=np.float64 if fp64 else np.float32).reshape(shape)
    if fp64 and regressor:
        array[0] = 1e39  # beyond float32: carried as +Inf
    outputs.append((spec("probabilities", floats), array, False))
    body, header = server_answer(outputs)
    read, signed = _both(feedback, body, header)
    assert (header is None) == (read is None)  # the server sends one exactly when the answer can be read
    assert read == signed  # the same answer and the same id, byte for byte
    if header is not None:
        answer = predictions_of(body)
        assert answer is not None
        assert read_header(header, MAX_ROWS) is not None


def test_the_wine_answer_is_signed_unread_and_identically(tmp_path: Any) -> None:
    outputs: Outputs = [
        (spec("label", "INT64"), np.array([1], dtype=np.int64), False),
        (spec("probabilities", "FP32"), np.array([[0.1, 0.7, 0.2]], dtype=np.float32), False),
    ]
    body, header = server_answer(outputs)
    assert header is not None
    feedback = _feedback(tmp_path)
    read, signed = _both(feedback, body, header)
    assert read is not None and read == signed
    token = verify(FeedbackKeys({3: KEY}), signed[1].decode(), NOW, 60)
    assert (token.predictions, token.class_count, token.mirrored, token.track) == (("1",), 3, True, "candidate")


def test_rows_beyond_the_bound_are_cut_as_from_a_readserver_answer(tmp_path: Any) -> None:
    feedback = _feedback(tmp_path, max_rows=4)
    ints = np.array([0, 2, 1, 1, 0, 2], dtype=np.int64)
    for labels in (ints, np.array([b"a", b"bb", b"", b"c", b"d"], dtype=object)):
        datatype = "INT64" if labels.dtype != object else "BYTES"
        outputs = [(spec("label", datatype), labels, False)]
        body, header = server_answer(outputs)
        read, signed = _both(feedback, body, header)
        assert read is not None and read == signed and signed[2:] == (4, True)
        assert b'"feedback_rows":4' in signed[0]
    regressor = [(spec("value", "FP32"), np.arange(7, dtype=np.float32), False)]
    read, signed = _both(feedback, *server_answer(regressor))
    assert read is not None and read == signed and signed[2:] == (4, True)


def test_an_answer_the_id_cannot_be_spliced_into_plainly_is_read_for_where_it_goes(tmp_path: Any) -> None:
    """The header spares reading the predictions, never the check of where the id goes: from an upstream that
    does not say its answer is plain, an answer with a ``parameters`` member (however its name is written) is
    read and the id merged into them; one that ends in whitespace is read even when said to be plain."""
    feedback = _feedback(tmp_path)
    label = b'{"name":"label","datatype":"INT64","shape":[1],"data":[2]}'
    probs = b'{"name":"p","datatype":"FP32","shape":[1,3],"data":[0.1,0.2,0.7]}'
    for plain, body in (
        (False, b'{"outputs":[%s,%s],"parameters":{"a":1}}' % (label, probs)),
        (False, b'{"outputs":[%s,%s],"param\\u0065ters":{"a":1}}' % (label, probs)),
        (False, b'{"outputs":[%s,%s]}' % (label, probs)),
        (True, b'{"outputs":[%s,%s]} \n' % (label, probs)),
        (True, b'{"outputs":[%s,%s]}' % (label, probs)),
    ):
        header = header_value(Predicted(True, ["2"], 3), plain)
        assert header is not None
        read, signed = _both(feedback, body, header)
        assert read is not None and read == signed, body
        assert json.loads(signed[0])["parameters"]["feedback_id"] == signed[1].decode()


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"not base64!",
        b"AgEAAzI=x",  # trailing junk
        base64.b64encode(b"\x02\x01\x00\x03\x05ab"),  # a label longer than the bytes left
        base64.b64encode(b"\x02\x02\x00\x03\x01a"),  # two rows announced, one present
        base64.b64encode(b"\x02\x01\x00\x03\x01ab"),  # a byte beyond the rows
        base64.b64encode(b"\x00\x02\x00\x00\x00\x00\x80\x3f"),  # two float rows, one present
        base64.b64encode(b"\x04\x01\x00\x03\x01a"),  # a flag that is not CLASSES (nor PLAIN)
        base64.b64encode(b"\x02\x01\x00\x03\x01\xff"),  # a label that is not UTF-8
        base64.b64encode(b"\x02\x02\x00\x03\x02\xc3\xa9\x02\xc3("),  # the second label's é cut short
        base64.b64encode(b"\x02\x00\x00\x03"),  # no rows
        base64.b64encode(b"\x02" + (MAX_ROWS + 1).to_bytes(2, "little") + b"\x03" + b"\x01a" * (MAX_ROWS + 1)),
    ],
)
def test_a_header_that_does_not_parse_is_ignored_and_the_answer_read(tmp_path: Any, value: bytes) -> None:
    assert read_header(value, 64) is None
    feedback = _feedback(tmp_path)
    body = b'{"outputs":[{"name":"label","datatype":"INT64","shape":[1],"data":[2]}]}'
    read, signed = _both(feedback, body, value)
    assert read is not None and read == signed


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80), st.integers(1, 300))
def test_no_header_value_raises_and_what_parses_verifies(value: bytes, max_rows: int) -> None:
    """Whatever an upstream sends, reading it never raises; what parses is signed into a token that verifies."""
    for candidate in (value, base64.b64encode(value)):
        section = read_header(candidate, max_rows)
        if section is None:
            continue
        announced = int.from_bytes(base64.b64decode(candidate)[1:3], "little")
        assert section.rows == min(announced, max_rows) and section.truncated == (announced > max_rows)
        keys = FeedbackKeys({3: KEY})
        token = seal_section(keys, section.flags, 0, NOW, 1, 7, b"\x01r", section.packed).decode()
        assert len(verify(keys, token, NOW, 60).predictions) == section.rows


def test_no_rows_and_more_than_a_token_carries_send_no_header() -> None:
    assert header_value(Predicted(True, [], 0), True) is None
    assert header_value(Predicted(False, [0.5] * (MAX_ROWS + 1)), True) is None
    assert header_value(Predicted(True, ["1"] * MAX_ROWS, 3), True) is not None


def test_the_header_is_the_upstreams_word_for_what_it_predicted(tmp_path: Any) -> None:
    """Only the gateway's upstreams can send it (it is a response header): its predictions are signed as they
    are, even for an answer whose outputs show none."""
    feedback = _feedback(tmp_path)
    header = header_value(Predicted(True, ["0"], 3), True)
    stamped = feedback.stamp("stable", "rev-1", b'{"outputs":[]}', False, NOW, header)
    assert stamped is not None and isinstance(stamped[1], Minted) and isinstance(stamped[1].id, bytes)
