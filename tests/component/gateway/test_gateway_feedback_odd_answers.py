"""Feedback ids on whatever an upstream answers, through a real gateway process: concurrent clients, each
request with its own marker, an upstream that answers each in one of many odd shapes (parameters of every
kind, whitespace, unicode, a huge answer, binary, not an object, a shape that is not a list, a first class
label too long to carry; and, with a predictions header falsely saying ``PLAIN``, an array, an object with
its own ``parameters``, ``{}`` and bytes that are not JSON). Every client gets exactly its own answer: with
the id (header and body agreeing, the rest as the upstream sent it), byte for byte untouched without one,
or, when no row can be labelled, with ``parameters.feedback_rows: 0`` and no id; bytes that are not JSON
never come out as JSON.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.component.gateway.gateway_helpers import INFER, RouteFile, gateway, table
from tests.support.httpd import serving
from tests.support.strict_json import strict_loads

from mlrollout_serving.contract.feedback import FeedbackKeys, verify
from mlrollout_serving.contract.predicted import PREDICTED_HEADER, Predicted, header_value

pytestmark = pytest.mark.component

LABEL = {"name": "label", "datatype": "INT64", "shape": [1], "data": [2]}
TOO_LONG = {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["\u00e9" * 128, "0"]}  # 256 bytes first
CLIENTS, EACH = 8, 45
NO_ROWS = "no_rows"  # an answer no row of which can be labelled: feedback_rows 0, no id
NOT_JSON = "not_json"  # bytes that are not JSON, spliced unread (the header's word): still not JSON
LYING = (header_value(Predicted(True, ["2"], 3), plain=True) or b"").decode()
"""A predictions header saying PLAIN (one object, no parameters) of whatever answer it comes with."""


def _odd_answers(marker: str) -> list[tuple[bytes, bool | str, str | None]]:
    """The upstream's answers for a request with ``marker``, whether the gateway can put an id on each
    (:data:`NO_ROWS`: it says none of its rows can be labelled instead; :data:`NOT_JSON`: see there), and
    the predictions header the upstream sends with it."""
    m = json.dumps(marker)
    raw = orjson.dumps(marker)  # UTF-8, no escape: what our model server writes, spliced unread
    lying: list[tuple[bytes, bool | str, str | None]] = [
        (b'[{"m":%s,"outputs":[%s]}]' % (raw, orjson.dumps(LABEL)), False, LYING),
        (orjson.dumps({"outputs": [LABEL], "parameters": {"marker": marker, "feedback_id": "theirs"}}), True, LYING),
        (b'{"m":%s,"outputs":[%s],"param\\u0065ters":{"a":1}}' % (raw, orjson.dumps(LABEL)), True, LYING),
        (b'{"m":%s,"outputs":[%s]}}' % (raw, orjson.dumps(LABEL)), NOT_JSON, LYING),
        (b'{"m":%s,"outputs":[%s]}' % (raw, orjson.dumps(LABEL)), True, LYING),  # the truth, spliced unread
        (b'<html>%s {"error": 500}' % marker.encode(), False, LYING),
        (b"{}", True, LYING),
    ]
    return [(body, kind, None) for body, kind in _read_answers(m, marker)] + lying


def _read_answers(m: str, marker: str) -> list[tuple[bytes, bool | str]]:
    """The answers sent without a predictions header (the gateway reads them)."""
    return [
        (b'{"model_name":"iris","model_version":%s,"outputs":[%s]}' % (m.encode(), orjson.dumps(LABEL)), True),
        (orjson.dumps({"outputs": [LABEL], "parameters": {"marker": marker, "feedback_id": "theirs"}}), True),
        (orjson.dumps({"outputs": [LABEL], "parameters": marker}), True),
        (json.dumps({"m": marker, "outputs": [LABEL]}, indent="\t", ensure_ascii=False).encode() + b" \r\n", True),
        (b'{"m":%s,"outputs":[{"datatype":"INT64","data":%s}]}' % (m.encode(), orjson.dumps([1] * 30_000)), True),
        (b'{"m":%s,"outputs":[{"datatype":"FP32","shape":5,"data":[0.5]}]}' % m.encode(), True),
        (b'{"m":%s,"outputs":[%s],"param\\u0065ters":{"a":1}}' % (m.encode(), orjson.dumps(LABEL)), True),
        (b"\x00\xff binary " + marker.encode() + b"}", False),
        (b'[{"m":%s,"outputs":[%s]}]' % (m.encode(), orjson.dumps(LABEL)), False),
        (b'{"m":%s,"outputs":[%s]}}' % (m.encode(), orjson.dumps(LABEL)), False),
        (b'{"m":%s,"outputs":[{"datatype":"INT64","data":[]}]}' % m.encode(), False),
        (b'{"m":%s,"outputs":[%s]}' % (m.encode(), orjson.dumps(TOO_LONG)), NO_ROWS),
        (orjson.dumps({"outputs": [TOO_LONG], "parameters": {"marker": marker, "feedback_id": "theirs"}}), NO_ROWS),
    ]


CASES = len(_odd_answers(""))


class OddUpstream(http.server.BaseHTTPRequestHandler):
    """Answers each request with the odd answer its ``parameters`` ask for (case, marker)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        body, _, header = _odd_answers(request["parameters"]["marker"])[request["parameters"]["case"]]
        self.send_response(200)
        self.send_header("content-type", "application/json")
        if header is not None:
            self.send_header(PREDICTED_HEADER, header)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _send(port: int, case: int, marker: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body = {"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}],
                "parameters": {"case": case, "marker": marker}}  # fmt: skip
        conn.request("POST", INFER, json.dumps(body), {"content-type": "application/json"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _check(keys: FeedbackKeys, case: int, marker: str, got: tuple[int, dict[str, str], bytes]) -> None:
    status, headers, body = got
    sent, stampable, _ = _odd_answers(marker)[case]
    assert status == 200, (case, body[:200])
    assert PREDICTED_HEADER not in headers, case
    if not stampable:
        assert body == sent and "x-mlrollout-feedback-id" not in headers, case
        return
    if stampable == NO_ROWS:
        assert "x-mlrollout-feedback-id" not in headers, case
        expected = orjson.loads(sent)
        params = expected.get("parameters", {})
        expected["parameters"] = {**{k: v for k, v in params.items() if k != "feedback_id"}, "feedback_rows": 0}
        assert strict_loads(body) == expected, case
        if "parameters" not in orjson.loads(sent):
            assert body == sent[:-1] + b',"parameters":{"feedback_rows":0}}', case  # the upstream's bytes
        return
    if stampable == NOT_JSON:
        feedback_id = headers["x-mlrollout-feedback-id"]
        assert body == sent[:-1] + b',"parameters":{"feedback_id":"%s"}}' % feedback_id.encode(), case
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(body)
        return
    answer = strict_loads(body)
    feedback_id = answer["parameters"].pop("feedback_id")
    assert feedback_id == headers["x-mlrollout-feedback-id"], case
    rows = answer["parameters"].pop("feedback_rows", None)
    token = verify(keys, feedback_id, int(time.time()), 60)
    assert (token.track, token.revision, rows is not None) == ("stable", "rev-stable", token.truncated), case
    expected = orjson.loads(sent)
    params = expected.get("parameters")
    expected["parameters"] = {k: v for k, v in params.items() if k != "feedback_id"} if type(params) is dict else {}
    assert answer == expected, case
    if "parameters" not in orjson.loads(sent):
        end = sent.rindex(b"}")
        assert body[:end] == sent[:end], case  # the upstream's bytes, in place


def test_every_client_gets_its_own_answer_stamped_exactly_or_untouched(routes: RouteFile, tmp_path: Path) -> None:
    key = os.urandom(32)
    keys_file = tmp_path / "keys"
    keys_file.write_text(json.dumps({"1": base64.b64encode(key).decode()}))
    keys = FeedbackKeys({1: key})
    with serving(OddUpstream) as upstream:
        routes.write(table(1, upstream))
        with gateway(routes, "--feedback-keys", str(keys_file)) as gw:
            port = gw.port
            errors: list[BaseException] = []
            lock = threading.Lock()

            def client(n: int) -> Callable[[], None]:
                def run() -> None:
                    for i in range(EACH):
                        case, marker = (n + i) % CASES, f"client {n} request {i} \u00e9\U0001f377"
                        try:
                            _check(keys, case, marker, _send(port, case, marker))
                        except BaseException as exc:
                            with lock:
                                errors.append(exc)

                return run

            with ThreadPoolExecutor(CLIENTS) as pool:
                for done in [pool.submit(client(n)) for n in range(CLIENTS)]:
                    done.result()
            assert not errors, errors[:3]
