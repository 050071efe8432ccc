"""The hostile-input suite: a real server takes well over 200 malformed or abusive requests and is none the
worse for them.

Every request goes on its own raw connection (so malformed HTTP reaches the server as sent). Each refusal
must be a 4xx whose JSON ``error`` is a short message naming the problem; a good stream runs beside the
whole suite and must see only correct answers; afterwards a good request is answered within 100 ms, the
process holds no more descriptors than before, and its memory stays within ``RSS_BOUND_MIB`` of where it
started (the suite's largest bodies are 64 KiB, its largest heads 40 KiB, its floods 8 MB).
"""

from __future__ import annotations

import gzip
import json
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from tests.component.server.conftest import GoodStream, infer_body
from tests.support.hostile import (
    closed_by_peer,
    connect,
    exchange,
    fd_count,
    flood,
    read_replies,
    read_reply,
    rss_mib,
    slowloris,
)
from tests.support.models import BuiltModel
from tests.support.procs import ServerProcess, serve_model
from tests.support.waiting import wait_for

pytestmark = pytest.mark.component

INFER = "/v2/models/wine/infer"
MAX_BODY = 64 * 1024
RSS_BOUND_MIB = 32
"""Growth of the server's resident memory over the whole suite (it starts near 75 MiB)."""
GOOD_WITHIN = 0.1
"""Seconds a good request may take right after the suite."""


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    status: int
    message: str
    """A fragment the ``error`` message must contain."""


def http(method: str, path: str, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", *[f"{k}: {v}" for k, v in headers]]
    if not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


def infer(doc: Any, headers: tuple[tuple[str, str], ...] = (), path: str = INFER) -> bytes:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return http("POST", path, body, headers)


def entry(**override: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "input", "datatype": "FP32", "shape": [1, 13], "data": [0.5] * 13}
    return {**base, **override}


def inputs(*entries: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"inputs": list(entries), **extra}


def with_value(value: bytes) -> bytes:
    """A good request whose first value is replaced by ``value`` as written."""
    return json.dumps(inputs(entry(data=[123.25] + [0.5] * 12))).encode().replace(b"123.25", value)


def binary(header_doc: dict[str, Any], tail: bytes, header_length: str | None = None) -> bytes:
    header = json.dumps(header_doc).encode()
    length = str(len(header)) if header_length is None else header_length
    return infer(header + tail, (("Inference-Header-Content-Length", length),))


FLOATS = struct.pack("<13f", *([0.5] * 13))
BINARY = {"inputs": [entry(data=None) | {"parameters": {"binary_data_size": 52}}]}
for item in BINARY["inputs"]:
    del item["data"]


def cases() -> list[Case]:
    c: list[Case] = []

    def add(name: str, raw: bytes, status: int, message: str) -> None:
        c.append(Case(name, raw, status, message))

    # --- issue #17's five ---
    add("2000 nested [", infer(b"[" * 2000), 400, "malformed JSON")
    add("2000 nested [ closed", infer(b"[" * 2000 + b"]" * 2000), 400, "nested too deeply")
    add("lone surrogate id", infer(b'{"id":"\\ud800",' + json.dumps(inputs(entry()))[1:].encode()), 400, "surrogate")
    add(
        "length superscript two",
        infer(inputs(entry()), (("Inference-Header-Content-Length", "\u00b2"),)),
        400,
        "Inference-Header-Content-Length must be a byte count",
    )
    add(
        "length of 5000 digits",
        infer(inputs(entry()), (("Inference-Header-Content-Length", "1" * 5000),)),
        400,
        "Inference-Header-Content-Length must be a byte count",
    )
    add("ragged 12 and 14", infer(inputs(entry(shape=[2, 13], data=[[0.5] * 12, [0.5] * 14]))), 400, "ragged")

    # --- methods ---
    for method in ("GETT", "get", "BREW", "G\x00T", "PRI"):
        add(f"method {method!r}", http(method, "/v2/health/live"), 400, "malformed HTTP request")
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "LINK", "PURGE"):
        for path in (INFER, "/v2/health/ready", "/v2/models/wine", "/v2"):
            add(f"{method} {path}", http(method, path), 405, "is not allowed on")
    for path in ("/v2/health/live", "/v2/models/wine/ready", "/metrics"):
        add(f"POST {path}", http("POST", path, b"{}"), 405, "POST is not allowed")
    add("GET infer", http("GET", INFER), 405, "GET is not allowed")
    add("HEAD infer", http("HEAD", INFER), 405, "")
    add("CONNECT", b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", 405, "CONNECT is not allowed")
    add(
        "websocket upgrade ignored",
        http("GET", "/", headers=(("Connection", "Upgrade"), ("Upgrade", "websocket"))),
        404,
        "no such path",
    )

    # --- paths ---
    for path in (
        "/v3/models",
        "/v2/models/wine/explain",
        "/v2/models/wine/versions/1/infer/x",
        "//v2",
        "/",
        "/v2/models",
        "/../../etc/passwd",
        "/v2/%zz",
        "/v2/models/wine/versions",
        "/" + "z" * 7000,
    ):
        add(f"path {path[:30]}", http("GET", path), 404, "no such path")
    for path in (
        "/v2/models/beer/infer",
        "/v2/models/%00/infer",
        "/v2/models/" + "w" * 5000 + "/infer",
        "/v2/models/%ff%fe/infer",
        "/v2/models/wine%2F/infer",
    ):
        add(f"model {path[:30]}", infer(inputs(entry()), path=path), 400, "unknown model")
    add("unknown version", infer(inputs(entry()), path="/v2/models/wine/versions/9/infer"), 400, "unknown version")
    add("absolute-form target", http("GET", "http://x/v2/health/live"), 404, "no such path")

    # --- JSON documents ---
    for name, body in [
        ("empty", b""),
        ("garbage", b"\x00\x01\x02"),
        ("truncated", b'{"inputs": [{"name": '),
        ("trailing garbage", json.dumps(inputs(entry())).encode() + b"}}"),
        ("single quote", b"{'a': 1}"),
        ("BOM", b"\xef\xbb\xbf" + json.dumps(inputs(entry())).encode()),
        ("comment", b"// x\n{}"),
        ("invalid UTF-8", b'{"inputs": [], "id": "\xff\xfe"}'),
        ("overlong UTF-8", b'{"id": "\xc0\xaf"}'),
        ("encoded surrogate", b'{"id": "\xed\xa0\x80"}'),
        ("tab in string", b'{"id": "a\tb"}'),
    ]:
        add(f"JSON {name}", infer(body), 400, "malformed JSON")
    documents: list[tuple[str, Any, str]] = [
        ("null", None, "must be a JSON object"),
        ("list", [], "must be a JSON object"),
        ("number", 7, "must be a JSON object"),
        ("no inputs", {}, "'inputs' must be a non-empty list"),
        ("inputs object", {"inputs": {"name": "input"}}, "'inputs' must be a non-empty list"),
        ("inputs empty", {"inputs": []}, "'inputs' must be a non-empty list"),
        ("input not object", {"inputs": [1]}, "must be a JSON object"),
        ("input no name", inputs({"datatype": "FP32"}), "needs a string 'name'"),
        ("input name number", inputs(entry(name=5)), "needs a string 'name'"),
        ("unknown input", inputs(entry(name="x" * 10000)), "unknown input"),
        ("twice", inputs(entry(), entry()), "more than once"),
        ("missing data", inputs({"name": "input", "datatype": "FP32", "shape": [1, 13]}), "missing 'data'"),
        ("data not list", inputs(entry(data="0.5")), "'data' must be a list"),
        ("data object", inputs(entry(data={"a": 1})), "'data' must be a list"),
        ("id number", inputs(entry(), id=5), "'id' must be a string"),
        ("id object", inputs(entry(), id={}), "'id' must be a string"),
        ("parameters list", inputs(entry(), parameters=[]), "'parameters' must be a JSON object"),
        ("binary_data_output string", inputs(entry(), parameters={"binary_data_output": "yes"}), "true or false"),
        ("input parameters list", inputs(entry(parameters=[])), "must be a JSON object"),
        ("outputs object", inputs(entry(), outputs={}), "'outputs' must be a list"),
        ("output not object", inputs(entry(), outputs=[1]), "must be a JSON object"),
        ("output no name", inputs(entry(), outputs=[{}]), "needs a string 'name'"),
        ("unknown output", inputs(entry(), outputs=[{"name": "y" * 9000}]), "unknown output"),
        (
            "output binary_data string",
            inputs(entry(), outputs=[{"name": "label", "parameters": {"binary_data": 1}}]),
            "true or false",
        ),
        ("both data and binary", inputs(entry(parameters={"binary_data_size": 0})), "has both 'data' and"),
    ]
    for name, doc, message in documents:
        add(f"doc {name}", infer(json.dumps(doc).encode()), 400, message)

    # --- shapes ---
    shapes: list[Any] = [
        [],
        [13],
        [0, 13],
        [-1, 13],
        [1, -13],
        [1, 12],
        [1, 14],
        [1, 13, 1],
        [2, 13],
        [13, 1],
        [2**31, 13],
        [2**63, 13],
        [10**30, 13],
        [1.5, 13],
        ["1", 13],
        [True, 13],
        [None, 13],
        None,
        {},
        "1,13",
        [[1, 13]],
        list(range(1, 5000)),
    ]
    for shape in shapes:
        add(f"shape {str(shape)[:30]}", infer(inputs(entry(shape=shape))), 400, "shape")

    # --- datatypes ---
    unknown: list[Any] = ["fp32", "FLOAT32", "BF16", "", "FP32\x00", None, 32, [], {}, [[[["FP32"]]]], "x" * 10000]
    for datatype in unknown:
        add(f"datatype {str(datatype)[:20]!r}", infer(inputs(entry(datatype=datatype))), 400, "unknown datatype")
    for datatype in ("FP64", "FP16", "INT64", "INT32", "INT8", "UINT8", "UINT64", "BOOL", "BYTES", "UINT16"):
        add(f"datatype {datatype}", infer(inputs(entry(datatype=datatype))), 400, "does not match the model's FP32")

    # --- numbers ---
    for value, message in [
        (b"1e39", "out of range for FP32"),
        (b"-1e39", "out of range for FP32"),
        (b"3.5e38", "out of range"),
        (b"1e400", "NaN or infinite"),
        (b"-1e400", "NaN or infinite"),
        (b"1e999999", "NaN or infinite"),
        (b"NaN", "non-finite value NaN"),
        (b"Infinity", "non-finite value Infinity"),
        (b"-Infinity", "non-finite value -Infinity"),
        (b"nan", "malformed JSON"),
        (b"inf", "malformed JSON"),
        (b'"0.5"', "must be numbers, got str"),
        (b"true", "got bool"),
        (b"null", "got NoneType"),
        (b"[]", "mixes lists and scalars"),
        (b"{}", "got dict"),
        (b"0x10", "malformed JSON"),
        (b"01", "malformed JSON"),
        (b"+1", "malformed JSON"),
        (b".5", "malformed JSON"),
        (b"1.", "malformed JSON"),
        (b"1e", "malformed JSON"),
        (b"-", "malformed JSON"),
        (b"1" * 400, "out of range"),
        (b"1" * 5000, "more than 4300 digits"),
        (b"--1", "malformed JSON"),
        (b"1e+", "malformed JSON"),
    ]:
        add(f"value {value[:20]!r}", infer(with_value(value)), 400, message)

    # --- the binary tensor extension ---
    for name, raw, message in [
        ("header past the body", binary(BINARY, FLOATS, "999999"), "outside the body"),
        ("negative length", binary(BINARY, FLOATS, "-1"), "must be a byte count"),
        ("length with spaces", binary(BINARY, FLOATS, "1 2"), "must be a byte count"),
        ("length hex", binary(BINARY, FLOATS, "0x20"), "must be a byte count"),
        ("length empty", binary(BINARY, FLOATS, ""), "must be a byte count"),
        ("length zero", binary(BINARY, FLOATS, "0"), "malformed JSON"),
        ("length mid-JSON", binary(BINARY, FLOATS, "20"), "malformed JSON"),
        ("binary too short", binary(BINARY, FLOATS[:40]), "exceeds the binary data sent"),
        ("binary too long", binary(BINARY, FLOATS + b"\0" * 8), "not claimed"),
        (
            "size not int",
            binary({"inputs": [entry(data=None, parameters={"binary_data_size": "52"})]}, FLOATS),
            "exceeds the binary data sent",
        ),
        (
            "size negative",
            binary({"inputs": [entry(parameters={"binary_data_size": -4})]}, FLOATS),
            "exceeds the binary data sent",
        ),
        (
            "size huge",
            binary({"inputs": [entry(parameters={"binary_data_size": 10**40})]}, FLOATS),
            "exceeds the binary data sent",
        ),
        (
            "size fits, shape does not",
            binary(
                {
                    "inputs": [
                        {"name": "input", "datatype": "FP32", "shape": [2, 13], "parameters": {"binary_data_size": 52}}
                    ]
                },
                FLOATS,
            ),
            "needs 104",
        ),
        ("binary without length header", infer(json.dumps(BINARY).encode() + FLOATS), "malformed JSON"),
    ]:
        add(f"binary {name}", raw, 400, message)

    # --- Content-Encoding ---
    good = json.dumps(inputs(entry())).encode()
    bomb = gzip.compress(b" " * (4 << 20))  # 4 MiB of spaces in 4 KiB: over the 64 KiB body limit once inflated
    for name, body, encoding, status, message in [
        ("br", good, "br", 400, "unsupported Content-Encoding"),
        ("gzip twice", gzip.compress(good), "gzip, gzip", 400, "unsupported Content-Encoding"),
        ("not gzip", good, "gzip", 400, "cannot decompress"),
        ("not deflate", good, "deflate", 400, "cannot decompress"),
        ("truncated gzip", gzip.compress(good)[:20], "gzip", 400, "malformed JSON"),
        ("gzip bomb", bomb, "gzip", 413, "over the limit"),
        ("deflate bomb", zlib.compress(b"[" * (4 << 20)), "deflate", 413, "over the limit"),
        ("gzip of garbage JSON", gzip.compress(b"{"), "gzip", 400, "malformed JSON"),
    ]:
        add(f"encoding {name}", infer(body, (("Content-Encoding", encoding),)), status, message)

    # --- HTTP framing ---
    line = b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\n"
    for name, raw in [
        ("two lengths", line + b"Content-Length: 10\r\nContent-Length: 20\r\n\r\n" + b"x" * 20),
        ("listed lengths", line + b"Content-Length: 10, 20\r\n\r\n" + b"x" * 20),
        ("negative length", line + b"Content-Length: -1\r\n\r\n"),
        ("length 1e3", line + b"Content-Length: 1e3\r\n\r\n"),
        ("length overflow", line + b"Content-Length: 99999999999999999999999\r\n\r\n"),
        ("length superscript", line + b"Content-Length: \xb2\r\n\r\n"),
        ("length and chunked", line + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("chunk size not hex", line + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n"),
        ("chunk size overflow", line + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nab\r\n"),
        ("chunk without CRLF", line + b"Transfer-Encoding: chunked\r\n\r\n2\r\nabcd0\r\n\r\n"),
        ("chunked not last", line + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
        ("header without colon", line + b"Content-Length 5\r\n\r\n"),
        ("space before colon", line + b"Content-Length : 0\r\n\r\n"),
        ("NUL in header", line + b"X-A: a\x00b\r\nContent-Length: 0\r\n\r\n"),
        ("obsolete folding", line + b"X-A: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
        ("bare LF", b"GET /v2/health/live HTTP/1.1\nHost: x\n\n"),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        ("HTTP/9.9", b"GET /v2/health/live HTTP/9.9\r\n\r\n"),
        ("space in target", b"GET /v2/health live HTTP/1.1\r\n\r\n"),
        ("control in target", b"GET /v2/\x01 HTTP/1.1\r\n\r\n"),
        ("h2c upgrade with a body", line + b"Connection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\n{}"),
        ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),  # a TLS ClientHello
    ]:
        add(f"http {name}", raw, 400, "protocol upgrades" if "upgrade" in name else "malformed HTTP request: ")
    add("head over 32 KiB", b"GET / HTTP/1.1\r\n" + b"X-A: " + b"a" * 40000 + b"\r\n\r\n", 431, "larger than")
    add(
        "5000 small headers",
        b"GET / HTTP/1.1\r\n" + b"".join(b"A%d: b\r\n" % i for i in range(5000)) + b"\r\n",
        431,
        "larger than the limit",
    )
    add("target over 8 KiB", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414, "longer than the limit")
    add("query over 8 KiB", b"GET /v2?" + b"q" * 9000 + b" HTTP/1.1\r\n\r\n", 414, "longer than the limit")
    add("body over the limit", infer(b"[" + b"0," * MAX_BODY + b"0]"), 413, "larger than the limit")
    add("declared body over the limit", line + b"Content-Length: 99999999\r\n\r\n", 413, "larger than the limit")
    add(
        "expect 100 over the limit",
        line + b"Expect: 100-continue\r\nContent-Length: 99999999\r\n\r\n",
        413,
        "larger than the limit",
    )
    return c


CASES = cases()


@pytest.fixture(scope="module")
def server(wine_model: BuiltModel) -> Iterator[ServerProcess]:
    args = ["--max-body-bytes", str(MAX_BODY), "--header-timeout", "1", "--body-timeout", "1", "--send-timeout", "2"]
    with serve_model(wine_model, name="wine", extra_args=args) as s:
        yield s


def check_refusal(case: Case, raw: bytes) -> list[str]:
    """Problems with the reply to ``case`` (empty when it is right)."""
    with connect(SERVER_PORT[0]) as sock:
        sock.sendall(raw)
        reply = read_reply(sock)
    if reply is None:
        return [f"{case.name}: no reply"]
    problems = []
    if reply.status != case.status:
        problems.append(f"{case.name}: {reply.status} instead of {case.status}: {reply.body[:200]!r}")
    if reply.status < 400 or reply.status >= 500:
        problems.append(f"{case.name}: not a 4xx ({reply.status})")
    if case.raw.startswith(b"HEAD "):
        return problems
    try:
        message = json.loads(reply.body)["error"]
    except (ValueError, KeyError, TypeError):
        return [*problems, f"{case.name}: no JSON error: {reply.body[:200]!r}"]
    if not isinstance(message, str) or not message or len(message) > 200 or case.message not in message:
        problems.append(f"{case.name}: message {message!r} (wanted {case.message!r})")
    return problems


SERVER_PORT: list[int] = [0]


def test_the_server_survives_the_hostile_suite(server: ServerProcess, wine_model: BuiltModel) -> None:
    SERVER_PORT[0] = server.port
    pid = server.proc.pid
    fds, rss = fd_count(pid), rss_mib(pid)
    stream = GoodStream(server.port, wine_model)
    stream.start()
    problems: list[str] = []
    sent = 0
    try:
        for case in CASES:
            problems += check_refusal(case, case.raw)
            sent += 1
        sent += abrupt_and_slow(server.port, problems)
    finally:
        stream.stop.set()
        stream.join(60)
    assert sent >= 200 and len(CASES) >= 200, (sent, len(CASES))
    assert problems == [], "\n".join(problems)
    assert stream.failures == [] and stream.ok > 0
    wait_for(lambda: fd_count(pid) <= fds, timeout=15, what=f"descriptors back to {fds}")
    assert rss_mib(pid) - rss < RSS_BOUND_MIB, f"RSS grew from {rss:.0f} to {rss_mib(pid):.0f} MiB"
    body = infer_body(wine_model, wine_model.samples[:1])
    start = time.monotonic()
    reply = exchange(server.port, http("POST", INFER, body))
    took = time.monotonic() - start
    assert reply is not None and reply.status == 200
    assert took < GOOD_WITHIN, f"a good request took {took * 1000:.0f} ms after the suite"
    assert server.proc.poll() is None


def abrupt_and_slow(port: int, problems: list[str]) -> int:
    """Requests that end without an answer to read (the client hangs up) or never end (the server times
    them out): pipelining floods, truncated bodies, slow heads and bodies. Returns how many were sent."""
    sent = 0
    line = b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\n"
    good = json.dumps(inputs(entry())).encode()
    for cut in (1, 10, len(line) + 5, len(line) + 30):  # hang up mid-request
        with connect(port) as sock:
            sock.sendall((line + b"Content-Length: %d\r\n\r\n" % len(good) + good)[:cut])
        sent += 1
    with connect(port) as sock:  # a body shorter than declared, then hang up
        sock.sendall(line + b"Content-Length: 1000\r\n\r\n" + good)
        sent += 1
    # Pipelining: 2000 requests in one write, every reply read, in order.
    with connect(port) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n" * 2000)
        statuses = [r.status if r else None for r in read_replies(sock, 2000)]
        if statuses != [200] * 2000:
            problems.append(f"pipelined: {sorted(set(map(str, statuses)))}")
        sent += 2000
    # Pipelined bad requests between good ones: each answered, the malformed one last (it ends the connection).
    with connect(port) as sock:
        bad = [infer(b"[" * 2000), infer(with_value(b"NaN")), http("DELETE", INFER), b"GET / HTTP/1.1\r\nA\r\n\r\n"]
        sock.sendall(b"".join(bad))
        statuses = [r.status if r else None for r in read_replies(sock, len(bad))]
        if statuses != [400, 400, 405, 400] or not closed_by_peer(sock):
            problems.append(f"pipelined bad requests: {statuses}")
        sent += len(bad)
    # A client pipelining without ever reading: dropped after the send timeout.
    _, flooded = flood(
        port, b"", b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n" * 1000, 8 << 20, until_answered=False, timeout=15
    )
    sent += flooded // 40
    # Slow clients: heads, bodies and chunked bodies that never end get 408; silent connections are closed.
    chunked = line + b"Transfer-Encoding: chunked\r\n\r\n4\r\n[1,2\r\n"
    with (
        slowloris(port, "head", 20) as heads,
        slowloris(port, "body", 20) as bodies,
        slowloris(port, "silent", 10) as silent,
    ):
        with connect(port) as sock:
            sock.sendall(chunked)
            reply408 = read_reply(sock)
            if reply408 is None or reply408.status != 408:
                problems.append(f"never-ending chunked body: {reply408}")
        for sock in heads + bodies:
            r = read_reply(sock)
            if r is None or r.status != 408 or not json.loads(r.body)["error"].endswith(("within 1 s", "for 1 s")):
                problems.append(f"slow client: {r}")
        if not all(closed_by_peer(sock) for sock in silent):
            problems.append("a silent connection stayed open")
        sent += 51
    return sent
