"""A tiny OIP-shaped upstream for gateway tests: instant by default, slowed or failing on demand.

Run as a script: `python fake_upstream.py PORT NAME`. It answers every /v2/... request with a fixed OIP
response naming itself (`model_name` = NAME), so a test sees which upstream answered. `POST /control`
with `{"delay": seconds, "status": code, "fail_every": n}` changes its behaviour at run time (a slow or failing
upstream; with `fail_every` n > 0, every n-th model request is answered 500 and the others with `status`: a
model that fails a share of its requests).

Hostile-upstream cases, per request:
- a body containing `"poison"` is answered 500 (a bug some content triggers);
- the request header `x-misbehave: <mode>` picks a broken answer (`MODES` lists them), so one upstream
  can misbehave for one request and answer the next one properly.
"""

from __future__ import annotations

import asyncio
import json
import sys

import httptools

MODES = (
    "extra",  # a second, unsolicited response right behind the real one (one write)
    "extra-later",  # the same, 50 ms after the real one (arrives on an idle connection)
    "continue",  # 100 Continue, then the response
    "early-hints",  # 103 Early Hints with headers, then the response
    "switch",  # 101 Switching Protocols
    "huge",  # a 300 MB body, streamed
    "endless",  # a chunked body that never ends
    "short-length",  # content-length smaller than the body
    "long-length",  # content-length larger than the body, then silence
    "close-mid-body",  # half the body, then the connection closes
    "track-header",  # the upstream's own x-mlrollout-* headers (track, route version, ids), and one of its own
    "garbage",  # bytes that are not HTTP
    "huge-header",  # a 10 MB header value
    "stall",  # never answers
    "unframed",  # no content-length, no chunking: the body ends when the connection closes
)
HUGE = 300 * 1024 * 1024


class _State:
    delay = 0.0
    status = 200
    fail_every = 0
    count = 0


class _Proto(asyncio.Protocol):
    def __init__(self, name: str) -> None:
        self.name = name
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.mode = b""
        self.transport: asyncio.Transport | None = None
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()  # let a streaming task see the end

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []
        self.mode = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"x-misbehave":
            self.mode = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        url, body = self.url, b"".join(self.body)
        keep = self.parser.should_keep_alive()
        if url == b"/control":
            conf = json.loads(body)
            _State.delay = float(conf.get("delay", _State.delay))
            _State.status = int(conf.get("status", _State.status))
            _State.fail_every = int(conf.get("fail_every", _State.fail_every))
            self.reply(200, b'{"ok": true}', keep)
            return
        if url == b"/count":
            self.reply(200, json.dumps({"count": _State.count}).encode(), keep)
            return
        _State.count += 1
        every = _State.fail_every
        failing = b'"poison"' in body or (every > 0 and _State.count % every == 0)
        status = 500 if failing else _State.status
        payload = {
            "model_name": self.name,
            "path": url.decode(),
            "outputs": [{"name": "label", "shape": [1], "datatype": "INT64", "data": [1]}],
        }
        out = json.dumps(payload).encode() if status == 200 else b'{"error": "configured failure"}'
        if self.mode:
            self.misbehave(self.mode.decode(), out)
        elif _State.delay > 0:
            asyncio.get_running_loop().call_later(_State.delay, self.reply, status, out, keep)
        else:
            self.reply(status, out, keep)

    def reply(self, status: int, body: bytes, keep: bool, extra_headers: bytes = b"") -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(self.response(status, body, keep, extra_headers))
        if not keep:
            self.transport.close()

    @staticmethod
    def response(status: int, body: bytes, keep: bool = True, extra_headers: bytes = b"") -> bytes:
        head = b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (status, len(body))
        return head + extra_headers + (b"\r\n" if keep else b"connection: close\r\n\r\n") + body

    def misbehave(self, mode: str, out: bytes) -> None:
        transport = self.transport
        assert transport is not None
        stale = self.response(200, b'{"stale": "an answer nobody asked for"}')
        if mode == "extra":
            transport.write(self.response(200, out) + stale)
        elif mode == "extra-later":
            transport.write(self.response(200, out))
            asyncio.get_running_loop().call_later(
                0.05, lambda: None if transport.is_closing() else transport.write(stale)
            )
        elif mode == "continue":
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n" + self.response(200, out))
        elif mode == "early-hints":
            transport.write(b"HTTP/1.1 103 Early Hints\r\nlink: </x>; rel=preload\r\n\r\n" + self.response(200, out))
        elif mode == "switch":
            transport.write(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n")
        elif mode == "huge":
            transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % HUGE)
            asyncio.get_running_loop().create_task(self.stream(HUGE))
        elif mode == "endless":
            transport.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            asyncio.get_running_loop().create_task(self.stream(None))
        elif mode == "short-length":
            transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n" + out)
        elif mode == "long-length":
            transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (len(out) + 100) + out)
        elif mode == "close-mid-body":
            transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(out) + out[: len(out) // 2])
            transport.close()
        elif mode == "track-header":
            self.reply(200, out, True, b"x-mlrollout-track: evil\r\nx-mlrollout-route-version: 999\r\n"
                       b"X-MLRollout-Feedback-Id: forged\r\nx-mlrollout-review-id: forged\r\n"
                       b"x-mlrollout-anything: evil\r\nx-model-note: kept\r\n")  # fmt: skip
        elif mode == "garbage":
            transport.write(b"\x00\xffNOT HTTP AT ALL\r\n\r\n")
        elif mode == "huge-header":
            transport.write(
                b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (10 * 1024 * 1024) + b"\r\ncontent-length: 2\r\n\r\n{}"
            )
        elif mode == "unframed":
            transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + out)
            transport.close()
        elif mode != "stall":
            self.reply(400, b'{"error": "unknown x-misbehave mode"}', True)

    async def stream(self, total: int | None) -> None:
        """Write `total` bytes of body (None: chunks forever) while the peer reads them."""
        piece = b"x" * (1024 * 1024)
        sent = 0
        while self.transport is not None and not self.transport.is_closing() and (total is None or sent < total):
            await self.writable.wait()
            if self.transport.is_closing():
                return
            if total is None:
                self.transport.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            else:
                self.transport.write(piece[: total - sent])
            sent += len(piece)
            await asyncio.sleep(0)


async def _main(port: int, name: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Proto(name), "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1]), sys.argv[2]))
