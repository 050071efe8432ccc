"""The feedback id spliced into the upstream's bytes (``Feedback.stamp`` / ``inject``): whatever the upstream
sends, the client gets exactly that answer plus ``parameters.feedback_id``, or exactly that answer with no id;
never an exception, never bytes that are not the upstream's or ours."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.feedback_samples import KEY, NOW
from tests.support.strict_json import strict_loads

from mlrollout_serving.contract.feedback import FeedbackKeys, verify
from mlrollout_serving.gateway.feedback import Feedback, FeedbackConfig, Minted, inject

LABEL = {"name": "label", "datatype": "INT64", "shape": [1], "data": [2]}
PROBS = {"name": "probabilities", "datatype": "FP32", "shape": [1, 3], "data": [0.1, 0.2, 0.7]}


@pytest.fixture(scope="module")
def feedback(tmp_path_factory: pytest.TempPathFactory) -> Feedback:
    path = tmp_path_factory.mktemp("feedback") / "keys"
    path.write_text(json.dumps({"3": base64.b64encode(KEY).decode()}))
    return Feedback(FeedbackConfig(str(path), replica=7, max_rows=4))


def stamped_or_untouched(feedback: Feedback, body: bytes) -> Any:
    """Stamp ``body``; check the id is in it exactly once, with everything else as the upstream sent it.
    Returns the parsed answer with the id removed (None when the body carries no id)."""
    result = feedback.stamp("stable", "rev-1", body, False, NOW)
    if result is None:
        return None
    out, minted = result
    assert minted is not None  # every row of these answers can be carried
    answer = strict_loads(out)
    assert answer["parameters"].pop("feedback_id") == minted.token
    if minted.truncated:
        assert answer["parameters"].pop("feedback_rows") == minted.rows
    token = verify(FeedbackKeys({3: KEY}), minted.token, NOW, 60)
    assert (token.track, token.revision, token.nonce, token.replica) == ("stable", "rev-1", minted.nonce, 7)
    original = orjson.loads(body)
    if "parameters" not in original:
        assert answer.pop("parameters") == {}
        end = body.rindex(b"}")
        assert out[:end] == body[:end]  # every byte before the splice is the upstream's, in place
    return answer


def test_the_common_answer_gets_the_id_spliced_before_its_closing_brace(feedback: Feedback) -> None:
    body = orjson.dumps({"model_name": "wine", "outputs": [LABEL, PROBS]})
    result = feedback.stamp("stable", "rev-1", body, False, NOW)
    assert result is not None
    out, minted = result
    assert minted is not None
    assert out == body[:-1] + b',"parameters":{"feedback_id":"' + minted.token.encode() + b'"}}'
    assert stamped_or_untouched(feedback, body) == orjson.loads(body)


@pytest.mark.parametrize(
    "body",
    [
        b'\r\n { "outputs" :\t[ {"name":"label","datatype":"INT64","shape":[1],"data":[ 2 ]} ] }\n\t \r\n',
        '{"model_name":"w\u00e9in \U0001f377","outputs":[{"name":"label","datatype":"BYTES","shape":[1],'
        '"data":["\u00e9t\u00e9 \\" } \\\\"]}]}'.encode(),
        b'{"model_name":"\\u0070arameters }","outputs":[{"name":"label","datatype":"BYTES","data":["}"]}]}',
        b'{"outputs":[{"name":"label","datatype":"INT64","shape":[1],"data":[2]}],"id":"parameters"}',
        b'{"outputs":[{"datatype":"FP32","shape":5,"data":[0.5]}]}',  # shapes that raised before: a regressor
        b'{"outputs":[{"datatype":"FP32","shape":{"a":1,"b":3},"data":[0.5, 0.5, 0.5]}]}',
    ],
    ids=[
        "whitespace",
        "unicode-and-escapes",
        "parameters-and-braces-inside-strings",
        "parameters-as-a-value",
        "shape-not-a-list",
        "shape-an-object",
    ],
)
def test_odd_but_valid_answers_keep_every_upstream_byte(feedback: Feedback, body: bytes) -> None:
    assert stamped_or_untouched(feedback, body) == orjson.loads(body)


@pytest.mark.parametrize(
    ("parameters", "kept"),
    [
        ({"request_id": "r", "feedback_id": "the upstream's"}, {"request_id": "r"}),  # ours wins, theirs kept
        ({"request_id": "r", "feedback_rows": 0}, {"request_id": "r"}),  # every row can be labelled: theirs gone
        ([1, 2], {}),  # not an object: replaced
        ("text", {}),
        (None, {}),
        (3, {}),
    ],
)
def test_an_answer_with_parameters_is_merged_never_duplicated(
    feedback: Feedback, parameters: object, kept: dict[str, Any]
) -> None:
    body = orjson.dumps({"outputs": [LABEL], "parameters": parameters})
    answer = stamped_or_untouched(feedback, body)
    assert answer == {"outputs": [LABEL], "parameters": kept}


def test_an_escaped_parameters_key_is_the_same_member_not_a_second_one(feedback: Feedback) -> None:
    body = b'{"outputs":[{"name":"label","datatype":"INT64","shape":[1],"data":[2]}],"param\\u0065ters":{"a":1}}'
    assert stamped_or_untouched(feedback, body) == {"outputs": [LABEL], "parameters": {"a": 1}}


def test_a_huge_answer_carries_its_first_rows(feedback: Feedback) -> None:
    rows = 200_000
    body = orjson.dumps({"outputs": [{"name": "label", "datatype": "INT64", "shape": [rows], "data": [1] * rows}]})
    result = feedback.stamp("stable", "rev-1", body, False, NOW)
    assert result is not None and result[1] is not None and result[1].truncated and result[1].rows == 4
    assert stamped_or_untouched(feedback, body) == orjson.loads(body)
    assert len(result[0]) - len(body) < 200


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00\xff\xfe binary }",
        b"not json}",
        b'{"outputs":[{"datatype":"INT64","data":[1]}]} trailing',
        b'{"outputs":[{"datatype":"INT64","data":[1]}]}}',
        b'\xef\xbb\xbf{"outputs":[{"datatype":"INT64","data":[1]}]}',  # a byte-order mark
        b'{"outputs":[{"datatype":"INT64","data":[1]}]}\x0c',  # form feed: not JSON whitespace
        b'{"outputs":[{"datatype":"BYTES","data":["\\ud800"]}]}',  # a lone surrogate
        b'{"outputs":[{"datatype":"INT64","data":[1]}]' + b" " * 100,  # cut short
        b'[{"outputs":[{"datatype":"INT64","data":[1]}]}]',
        b"{}",
        b'{"outputs":{}}',
        b'{"outputs":[{"datatype":"INT64","data":[]}]}',  # nothing predicted: nothing to label
        b'{"outputs":[{"datatype":"FP32","shape":{"a":1,"b":3},"data":["x"]}]}',
        b'{"outputs":[{"datatype":"FP32","shape":[1,3],"data":["a","b","c"]}]}',
        b'{"outputs":[{"datatype":"FP32","shape":[1,"3"],"data":[true]}]}',
    ],
)
def test_anything_else_passes_untouched_without_an_id(feedback: Feedback, body: bytes) -> None:
    assert feedback.stamp("stable", "rev-1", body, False, NOW) is None


def test_nesting_deeper_than_pythons_recursion_limit_is_read_without_recursion(feedback: Feedback) -> None:
    depth = 1020  # orjson parses up to 1024 levels
    data = b"[" * depth + b"2" + b"]" * depth
    body = b'{"outputs":[{"name":"label","datatype":"INT64","data":' + data + b"}]}"
    result = feedback.stamp("stable", "rev-1", body, False, NOW)
    assert result is not None and result[1] is not None
    assert result[0] == body[:-1] + b',"parameters":{"feedback_id":"%s"}}' % (result[1].token.encode())
    assert verify(FeedbackKeys({3: KEY}), result[1].token, NOW, 60).predictions == ("2",)


def test_inject_alone_parses_what_it_is_not_given() -> None:
    minted = Minted(b"AQID", 1, 1, False)
    assert inject(b'{"a":1}', minted) == b'{"a":1,"parameters":{"feedback_id":"AQID"}}'
    assert inject(b"{}", minted) == b'{"parameters":{"feedback_id":"AQID"}}'  # no member to follow: encoded
    assert inject(b"[1]", minted) is None and inject(b"\xff", minted) is None


_SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
)
_JSON = st.recursive(
    _SCALARS | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


_ABSENT = object()
_PARAMETER_NAMES = ["feedback_id", "feedback_rows", "a", "\u00e9"]


@settings(max_examples=300, deadline=None)
@given(
    extra=st.dictionaries(st.text(max_size=12), _JSON, max_size=4),
    parameters=st.just(_ABSENT) | _JSON | st.dictionaries(st.sampled_from(_PARAMETER_NAMES), _JSON),
    label=st.lists(st.integers(0, 5) | st.text(max_size=6), min_size=1, max_size=4),
    indent=st.sampled_from([None, 1, "\t", " \r\n "]),
    ensure_ascii=st.booleans(),
    tail=st.text(alphabet=" \t\r\n", max_size=4),
)
def test_any_answer_is_stamped_exactly_or_left_alone(
    feedback: Feedback,
    extra: dict[str, Any],
    parameters: object,
    label: list[Any],
    indent: Any,
    ensure_ascii: bool,
    tail: str,
) -> None:
    """Arbitrary members (a ``parameters`` of any kind, or none), any JSON formatting and unicode."""
    answer = {**extra, "outputs": [{"name": "label", "datatype": "BYTES", "shape": [len(label)], "data": label}]}
    if parameters is not _ABSENT:
        answer["parameters"] = parameters
    body = (json.dumps(answer, indent=indent, ensure_ascii=ensure_ascii) + tail).encode()
    got = stamped_or_untouched(feedback, body)
    expected = orjson.loads(body)
    if "parameters" in expected:
        params = expected["parameters"]
        ours = ("feedback_id", "feedback_rows")  # the gateway's names: an upstream's own values never reach the client
        expected["parameters"] = {k: v for k, v in params.items() if k not in ours} if type(params) is dict else {}
    assert got == expected
