"""An upstream whose predictions header says ``PLAIN`` (contract.predicted) of an answer that is not one plain
JSON object: the gateway checks the answer's bytes before it splices the id in unread (``_plain``), so a
valid answer always stays valid JSON with exactly one more member (merged into an existing ``parameters``,
never beside it), and bytes that are not JSON never become JSON that says something else."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.feedback_samples import KEY, KEYS, NOW, WINE
from tests.support.strict_json import strict_loads

from mlrollout_serving.contract.feedback import verify
from mlrollout_serving.contract.predicted import Predicted, header_value, read_header
from mlrollout_serving.gateway.feedback import Feedback, FeedbackConfig, Minted

LYING: bytes = header_value(Predicted(True, ["1", "2"], 3), plain=True) or b""
"""Our model server's header for WINE, PLAIN set: what an upstream lying about its answer would send."""


@pytest.fixture(scope="module")
def feedback(tmp_path_factory: pytest.TempPathFactory) -> Feedback:
    path = tmp_path_factory.mktemp("feedback") / "keys"
    path.write_text(json.dumps({"3": base64.b64encode(KEY).decode()}))
    return Feedback(FeedbackConfig(str(path), replica=7, max_rows=4))


def _stamp(feedback: Feedback, body: bytes) -> tuple[bytes, Minted] | None:
    section = read_header(LYING, 4)
    assert section is not None and section.plain  # the header does say PLAIN
    stamped = feedback.stamp("stable", "r1", body, False, NOW, LYING)
    if stamped is None:
        return None
    out, minted = stamped
    assert minted is not None  # the header's rows are carried
    return out, minted


def _is_json(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True


def test_the_honest_answer_is_still_spliced_unread(feedback: Feedback) -> None:
    stamped = _stamp(feedback, WINE)
    assert stamped is not None
    out, minted = stamped
    assert out == WINE[:-1] + b',"parameters":{"feedback_id":"%s"}}' % minted.id
    assert verify(KEYS, minted.token, NOW, 60).predictions == ("1", "2")


@pytest.mark.parametrize(
    "body",
    [
        b"[" + WINE + b"]",  # a JSON array of the answer
        b"[" + WINE + b"," + WINE + b"]",
        b"[]",
        b'"{}"',  # a JSON string
        b"  " + WINE,  # the object after whitespace: read (and stamped as read)
    ],
)
def test_json_that_is_not_one_object_with_the_flag_is_read_not_spliced(feedback: Feedback, body: bytes) -> None:
    stamped = _stamp(feedback, body)
    parsed = orjson.loads(body)
    if type(parsed) is not dict:
        assert stamped is None  # passed on untouched, no id
        return
    assert stamped is not None
    assert strict_loads(stamped[0]) == {**parsed, "parameters": {"feedback_id": stamped[1].token}}


@pytest.mark.parametrize(
    "body",
    [
        WINE + b"}",  # one brace too many
        WINE[:-1] + b",}",  # a trailing comma
        WINE[:-2] + b"}",  # the outputs array never closed
        b'{"outputs":"}',  # the closing brace inside an unterminated string
        b'{"a":1}{"b":2}',  # two objects
        b"{not json}",
        b"<html>error {500}",  # not even starting with a brace
        b"\xff\xfe{}",
        b"{\xff}",
    ],
)
def test_bytes_that_are_not_json_never_become_json(feedback: Feedback, body: bytes) -> None:
    assert not _is_json(body)
    stamped = _stamp(feedback, body)
    if stamped is not None:  # spliced unread (it looked like a plain object): still not JSON
        out, minted = stamped
        assert out == body[:-1] + b',"parameters":{"feedback_id":"%s"}}' % minted.id
        assert not _is_json(out)


@pytest.mark.parametrize(
    "body",
    [
        WINE[:-1] + b',"parameters":{"theirs":1}}',  # an existing parameters object
        WINE[:-1] + b',"parameters":{"feedback_id":"theirs","content_type":"x"}}',
        WINE[:-1] + b',"parameters":7}',  # a parameters that is not an object
        WINE[:-1] + b',"param\\u0065ters":{"theirs":1}}',  # spelled with an escape
        b'{"parameters":{"a":[1]},' + WINE[1:],  # first, not last
        b"{}",  # nothing for the member to follow
        b"{ \n}",
        b'{"outputs":[] }',  # whitespace before the closing brace
    ],
)
def test_a_valid_object_the_flag_is_wrong_about_stays_valid_with_one_parameters(
    feedback: Feedback, body: bytes
) -> None:
    parsed = orjson.loads(body)
    stamped = _stamp(feedback, body)
    assert stamped is not None
    out, minted = stamped
    answer = strict_loads(out)  # no member named twice: the upstream's parameters are merged, not shadowed
    params = parsed.get("parameters")
    expected = {**(params if type(params) is dict else {}), "feedback_id": minted.token}
    assert answer == {**parsed, "parameters": expected}


_KEYS = st.sampled_from(["a", "parameters", "b}", "{"])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)


def _mutated(data: st.DataObject, body: bytes) -> bytes:
    """``body`` with a few bytes deleted, inserted or replaced (JSON's structural bytes preferred)."""
    out = bytearray(body)
    for _ in range(data.draw(st.integers(0, 3))):
        at = data.draw(st.integers(0, len(out)))
        what = data.draw(st.sampled_from(["delete", "insert", "replace"]))
        byte = data.draw(st.sampled_from(list(b'{}[],:" \\a0')))
        if what == "delete" and at < len(out):
            del out[at]
        elif what == "insert":
            out.insert(at, byte)
        elif at < len(out):
            out[at] = byte
    return bytes(out)


@settings(max_examples=1500, deadline=None)
@given(value=_JSON, wrap=st.booleans(), data=st.data())
def test_whatever_the_body_the_flag_never_makes_json_say_something_else(
    feedback: Feedback, value: Any, wrap: bool, data: st.DataObject
) -> None:
    """Property: a body that parses as an object comes out as that object with the id in ``parameters`` (no
    duplicate member); one that parses as anything else passes untouched; one that does not parse comes out
    untouched or spliced and still not parsing."""
    body = orjson.dumps({"outputs": [], "v": value} if wrap else value)
    body = _mutated(data, body)
    stamped = _stamp(feedback, body)
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        assert stamped is None or not _is_json(stamped[0])
        return
    if type(parsed) is not dict:
        assert stamped is None
        return
    assert stamped is not None
    out, minted = stamped
    params = parsed.get("parameters")
    expected = {**parsed, "parameters": {**(params if type(params) is dict else {}), "feedback_id": minted.token}}
    assert orjson.loads(out) == expected
    try:
        strict_loads(body)
    except AssertionError:  # the upstream's own body names a member twice (a mutation made it so)
        return
    assert strict_loads(out) == expected  # and ours never adds a second parameters
