"""A tiny OIP-shaped upstream for gateway tests: instant by default, slowed or failing on demand.

Run as a script: `python fake_upstream.py PORT NAME`. It answers every /v2/... request with a fixed OIP
response naming itself (`model_name` = NAME), so a test sees which upstream answered. `POST /control`
with `{"delay": seconds, "status": code}` changes its behaviour at run time (a slow or failing upstream).
"""

from __future__ import annotations

import asyncio
import json
import sys

import httptools


class _State:
    delay = 0.0
    status = 200
    count = 0


class _Proto(asyncio.Protocol):
    def __init__(self, name: str) -> None:
        self.name = name
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        url, body = self.url, b"".join(self.body)
        keep = self.parser.should_keep_alive()
        if url == b"/control":
            conf = json.loads(body)
            _State.delay = float(conf.get("delay", _State.delay))
            _State.status = int(conf.get("status", _State.status))
            self.reply(200, b'{"ok": true}', keep)
            return
        if url == b"/count":
            self.reply(200, json.dumps({"count": _State.count}).encode(), keep)
            return
        _State.count += 1
        status = _State.status
        payload = {
            "model_name": self.name,
            "path": url.decode(),
            "outputs": [{"name": "label", "shape": [1], "datatype": "INT64", "data": [1]}],
        }
        out = json.dumps(payload).encode() if status == 200 else b'{"error": "configured failure"}'
        if _State.delay > 0:
            asyncio.get_running_loop().call_later(_State.delay, self.reply, status, out, keep)
        else:
            self.reply(status, out, keep)

    def reply(self, status: int, body: bytes, keep: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        head = b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (status, len(body))
        self.transport.write(head + (b"\r\n" if keep else b"connection: close\r\n\r\n") + body)
        if not keep:
            self.transport.close()


async def _main(port: int, name: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Proto(name), "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1]), sys.argv[2]))
