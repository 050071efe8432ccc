"""Strict input handling: a table of bad requests, answered with the right status and message, while a
parallel stream of good requests keeps succeeding with correct results."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from tests.component.server.conftest import GoodStream, get, infer_body, outputs_of, post
from tests.support.models import BuiltModel
from tests.support.procs import ServerProcess, serve_model

pytestmark = pytest.mark.component

MAX_BODY = 64 * 1024
INFER = "/v2/models/wine/infer"


@pytest.fixture(scope="module")
def server(wine_model: BuiltModel) -> Iterator[ServerProcess]:
    with serve_model(wine_model, name="wine", extra_args=["--max-body-bytes", str(MAX_BODY)]) as s:
        yield s


def entry(**override: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "input", "datatype": "FP32", "shape": [1, 13], "data": [0.5] * 13}
    return {**base, **override}


def doc(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


BINARY_HEADER = doc(entry(data=None) | {"parameters": {"binary_data_size": 52}})
# (case, method, path, body, extra headers, status, message fragment)
CASES: list[tuple[str, str, str, bytes, dict[str, str], int, str]] = [
    ("malformed JSON", "POST", INFER, b'{"inputs": [{"name": ', {}, 400, "malformed JSON"),
    ("body is not an object", "POST", INFER, b'"hello"', {}, 400, "must be a JSON object"),
    ("empty inputs", "POST", INFER, doc(), {}, 400, "'inputs' must be a non-empty list"),
    ("unknown input", "POST", INFER, doc(entry(name="x")), {}, 400, "unknown input 'x'"),
    (
        "wrong datatype",
        "POST",
        INFER,
        doc(entry(datatype="INT64", data=[1] * 13)),
        {},
        400,
        "datatype INT64 does not match the model's FP32",
    ),
    ("unknown datatype", "POST", INFER, doc(entry(datatype="FLOAT32")), {}, 400, "unknown datatype"),
    (
        "wrong feature count",
        "POST",
        INFER,
        doc(entry(shape=[1, 12], data=[0.5] * 12)),
        {},
        400,
        "shape [1, 12] does not match the model's [-1, 13]",
    ),
    ("wrong rank", "POST", INFER, doc(entry(shape=[13])), {}, 400, "shape [13] does not match"),
    (
        "element count differs from shape",
        "POST",
        INFER,
        doc(entry(shape=[2, 13])),
        {},
        400,
        "needs 26 elements, got 13",
    ),
    (
        "ragged nested data",
        "POST",
        INFER,
        doc(entry(shape=[2, 13], data=[[0.5] * 13, [0.5] * 12])),
        {},
        400,
        "ragged: lists at depth 1 hold 12 and 13 values",
    ),
    ("string values", "POST", INFER, doc(entry(data=["0.5"] * 13)), {}, 400, "FP32 data must be numbers, got str"),
    ("NaN value", "POST", INFER, doc(entry()).replace(b"0.5", b"NaN", 1), {}, 400, "non-finite value NaN"),
    ("infinite value", "POST", INFER, doc(entry(data=[1e300] + [0.5] * 12)), {}, 400, "out of range for FP32"),
    ("id is not a string", "POST", INFER, doc(entry(), id=42), {}, 400, "'id' must be a string"),
    ("duplicate input", "POST", INFER, doc(entry(), entry()), {}, 400, "given more than once"),
    ("unknown output", "POST", INFER, doc(entry(), outputs=[{"name": "proba"}]), {}, 400, "unknown output 'proba'"),
    ("unknown model", "POST", "/v2/models/beer/infer", doc(entry()), {}, 400, "unknown model 'beer'"),
    ("unknown version", "POST", "/v2/models/wine/versions/9/infer", doc(entry()), {}, 400, "unknown version '9'"),
    (
        "binary size mismatch",
        "POST",
        INFER,
        BINARY_HEADER + b"\0" * 40,
        {"Inference-Header-Content-Length": str(len(BINARY_HEADER))},
        400,
        "exceeds the binary data sent",
    ),
    (
        "bad binary header length",
        "POST",
        INFER,
        doc(entry()),
        {"Inference-Header-Content-Length": "ten"},
        400,
        "must be a byte count",
    ),
    (
        "unsupported encoding",
        "POST",
        INFER,
        doc(entry()),
        {"Content-Encoding": "br"},
        400,
        "unsupported Content-Encoding",
    ),
    (
        "body over the limit",
        "POST",
        INFER,
        doc(entry(shape=[3000, 13], data=[0.5] * 39000)),
        {},
        413,
        "larger than the limit",
    ),
    ("GET on infer", "GET", INFER, b"", {}, 405, "not allowed"),
    ("unknown path", "GET", "/v3/models", b"", {}, 404, "no such path"),
]


def request(port: int, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body or None, headers={"Content-Type": "application/json", **headers})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_bad_inputs_get_clear_errors_while_good_requests_keep_succeeding(
    server: ServerProcess, wine_model: BuiltModel
) -> None:
    assert len(CASES) >= 15
    stream = GoodStream(server.port, wine_model)
    stream.start()
    try:
        for case, method, path, body, headers, status, message in CASES:
            got_status, got_body = request(server.port, method, path, body, headers)
            assert got_status == status, (case, got_body)
            assert message in json.loads(got_body)["error"], (case, got_body)
        # Malformed HTTP and an abrupt disconnect mid-body must not hurt the server either.
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
            raw.sendall(b"POST /v2/models/wine/infer HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
            assert raw.recv(4096).startswith(b"HTTP/1.1 400")
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
            raw.sendall(b'POST /v2/models/wine/infer HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{"inputs"')
    finally:
        while stream.ok < 20 and stream.is_alive() and not stream.failures:
            stream.join(0.05)
        stream.stop.set()
        stream.join(60)
    assert stream.failures == []
    assert stream.ok >= 20
    assert server.proc.poll() is None
    assert get(server.port, "/v2/health/ready")[0] == 200
    status, body, _ = post(server.port, INFER, infer_body(wine_model, wine_model.samples[:2]))
    assert status == 200 and outputs_of(body)["label"].shape == (2,)
