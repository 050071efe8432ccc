"""Human review, pure parts: the route table's review settings, the review body and its schema, the mark.

The body is validated with `jsonschema` (a validator we did not write) against `REVIEW_BODY_SCHEMA`, the
schema docs/gateway.md documents.
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlrollout_serving.contract.routes import (
    REVIEW_DEFAULT_NEEDS_RESPONSE,
    REVIEW_NEEDS_A_TRIGGER,
    REVIEW_NEEDS_SETTINGS,
    REVIEW_NOT_IN_CHAIN,
    RouteTableError,
    Sticky,
)
from mlrollout_serving.gateway.review_body import (
    REVIEW_BODY_SCHEMA,
    high_stakes,
    mark_pending,
    model_name,
    retry_delay,
    review_body,
)
from mlrollout_serving.gateway.routes import parse_route_table

BASE = """
version: 1
tracks:
  stable: {upstream: "http://10.0.0.1:8080", revision: aaa, weight: 100}
"""
HOOK = 'url: "http://10.0.0.9:9000/reviews"'
REQUEST = {"id": "req-1", "inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1.5, 2.5]}]}
ANSWER = {
    "model_name": "wine",
    "outputs": [
        {"name": "label", "shape": [1], "datatype": "INT64", "data": [2]},
        {"name": "probabilities", "shape": [1, 3], "datatype": "FP32", "data": [0.2, 0.35, 0.45]},
    ],
}


def _body(**changes: object) -> bytes | str:
    args: dict[str, object] = {
        "review_id": "r1", "namespace": "ns", "model_deployment": "wine", "target": b"/v2/models/wine/infer",
        "track": "candidate", "revision": "bbb", "reason": "low_confidence", "request": json.dumps(REQUEST).encode(),
        "answer": json.dumps(ANSWER).encode(), "now": 1700000000.5, "max_bytes": 65536,
    }  # fmt: skip
    args.update(changes)
    return review_body(**args)  # type: ignore[arg-type]


# -- the route table --
def test_review_settings_parse_with_defaults() -> None:
    low = "confidenceThreshold: 0.6\n  lowConfidenceAction: {action: review}"
    table = parse_route_table(BASE + f"fallback:\n  {low}\n  review: {{{HOOK}}}\n")
    review = table.fallback.review
    assert review is not None and review.respond == "model"
    assert (review.queue_size, review.concurrency, review.retries, review.max_body_bytes) == (256, 2, 2, 65536)
    assert table.fallback.low_confidence_action is not None and table.fallback.low_confidence_action.action == "review"


@pytest.mark.parametrize(
    ("fallback", "message"),
    [
        ("chain: [{action: review}]", REVIEW_NOT_IN_CHAIN),
        ("chain: [{action: stable}, {action: review}]", REVIEW_NOT_IN_CHAIN),
        ("confidenceThreshold: 0.6\n  lowConfidenceAction: {action: review}", REVIEW_NEEDS_SETTINGS),
        (f"review: {{{HOOK}}}", REVIEW_NEEDS_A_TRIGGER),
        (
            f"confidenceThreshold: 0.6\n  lowConfidenceAction: {{action: stable}}\n  review: {{{HOOK}}}",
            REVIEW_NEEDS_A_TRIGGER,
        ),
        (f"review: {{{HOOK}, respond: default, highStakes: {{header: x-risk}}}}", REVIEW_DEFAULT_NEEDS_RESPONSE),
        (f"review: {{{HOOK}, message: later, highStakes: {{header: x-risk}}}}", "must not carry a message"),
        ('review: {url: "https://h:1/x", highStakes: {header: x-risk}}', "http://host:port/path"),
        ('review: {url: "http://h/x", highStakes: {header: x-risk}}', "explicit port"),
        (f"review: {{{HOOK}, queueSize: 0, highStakes: {{header: x-risk}}}}", "greater than or equal to 1"),
        (f"review: {{{HOOK}, maxBodyBytes: 10, highStakes: {{header: x-risk}}}}", "greater than or equal to 1024"),
        (f"review: {{{HOOK}, highStakes: {{header: x, jsonField: y}}}}", "exactly one of header or jsonField"),
    ],
)
def test_bad_review_settings_are_refused_with_the_reason(fallback: str, message: str) -> None:
    with pytest.raises(RouteTableError, match=re.escape(message)):
        parse_route_table(BASE + f"fallback:\n  {fallback}\n")


def test_high_stakes_alone_is_a_trigger() -> None:
    table = parse_route_table(
        BASE + f"fallback:\n  review: {{{HOOK}, respond: refuse, message: later, highStakes: {{header: X-Risk}}}}\n"
    )
    assert table.fallback.review is not None and table.fallback.review.high_stakes == Sticky(header="x-risk")


# -- which requests are high-stakes --
@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("TRUE", True), ("1", True), (" true ", True), ("false", False), ("0", False), ("", False)],
)
def test_high_stakes_header_value(value: str, expected: bool) -> None:
    assert high_stakes(Sticky(header="x-risk"), {"x-risk": value}, b"") is expected


def test_high_stakes_json_field_and_absent_marker() -> None:
    marker = Sticky(json_field="parameters.high_stakes")
    assert high_stakes(marker, {}, b'{"parameters": {"high_stakes": true}}')
    assert not high_stakes(marker, {}, b'{"parameters": {"high_stakes": false}}')
    assert not high_stakes(marker, {}, b'{"parameters": {}}')
    assert not high_stakes(marker, {}, b"\x00binary tensors")
    assert not high_stakes(None, {"x-risk": "true"}, b"")


# -- the body --
def test_body_matches_the_documented_schema_and_carries_this_request() -> None:
    body = _body()
    assert isinstance(body, bytes)
    document = json.loads(body)
    jsonschema.validate(document, REVIEW_BODY_SCHEMA)
    assert document["request_id"] == "req-1" and document["inputs"] == REQUEST["inputs"]
    assert document["outputs"] == ANSWER["outputs"] and document["confidence"] == pytest.approx(0.45)
    assert (document["model"], document["track"], document["revision"]) == ("wine", "candidate", "bbb")


def test_body_of_a_binary_request_and_an_odd_answer_still_matches_the_schema() -> None:
    body = _body(request=b"\x00\x01binary", answer=b'{"outputs": {"not": "a list"}}', reason="high_stakes")
    assert isinstance(body, bytes)
    document = json.loads(body)
    jsonschema.validate(document, REVIEW_BODY_SCHEMA)
    assert document["inputs"] is None and document["outputs"] is None and document["confidence"] is None
    assert document["request_id"] is None


def test_body_over_the_limit_is_not_built() -> None:
    big = {"inputs": [{"name": "input", "shape": [1, 4000], "datatype": "FP32", "data": [0.5] * 4000}]}
    assert _body(request=json.dumps(big).encode(), max_bytes=4096) == "too_large"


def test_body_nested_deeper_than_the_encoder_takes_is_refused_not_raised() -> None:
    deep = b'{"inputs": [' + b"[" * 600 + b"]" * 600 + b"]}"
    assert _body(request=deep) == "unencodable"


def test_outputs_that_look_like_probabilities_but_are_not_numbers_give_no_confidence() -> None:
    odd = {"outputs": [{"name": "p", "shape": [1, "x"], "datatype": "FP32", "data": ["a", "b"]}]}
    body = _body(answer=json.dumps(odd).encode())
    assert isinstance(body, bytes) and json.loads(body)["confidence"] is None


@given(marker=st.text(max_size=40))
def test_a_body_holds_exactly_its_own_request_and_answer(marker: str) -> None:
    mine = {"id": marker, "inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": [marker]}]}
    body = _body(request=json.dumps(mine).encode())
    assert isinstance(body, bytes)
    document = json.loads(body)
    jsonschema.validate(document, REVIEW_BODY_SCHEMA)
    assert document["request_id"] == marker and document["inputs"] == mine["inputs"]
    assert document["outputs"] == ANSWER["outputs"]


# -- the client's answer --
def test_mark_pending_keeps_the_answer_and_its_parameters() -> None:
    answer = {**ANSWER, "parameters": {"feedback_id": "abc"}}
    marked = json.loads(mark_pending(json.dumps(answer).encode(), "r9"))
    assert marked["outputs"] == ANSWER["outputs"]
    assert marked["parameters"] == {"feedback_id": "abc", "pending_review": True, "review_id": "r9"}
    replaced = json.loads(mark_pending(json.dumps({**ANSWER, "parameters": "odd"}).encode(), "r9"))
    assert replaced["parameters"] == {"pending_review": True, "review_id": "r9"}


def test_mark_pending_leaves_what_is_not_a_json_object_alone() -> None:
    for raw in (b"[1, 2]", b"not json", b""):
        assert mark_pending(raw, "r9") == raw


def test_model_name_and_retry_delays() -> None:
    assert model_name(b"/v2/models/wine/versions/3/infer") == "wine"
    assert model_name(b"/v2/models/wine/infer?x=1") == "wine"
    assert model_name(b"/v2/health/ready") == ""
    assert [retry_delay(n, 0.2) for n in (1, 2, 3)] == [0.2, 0.4, 0.8]
