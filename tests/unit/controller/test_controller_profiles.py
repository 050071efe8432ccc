"""Reference profiles fetched over real HTTP on loopback (a stdlib server in a thread)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from mlrollout.controller.profiles import MAX_BYTES, ProfileCache, fetch

PROFILE = {"version": 1, "features": [{"name": "f0", "edges": [0.5], "proportions": [0.5, 0.5]}]}


class Handler(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        Handler.hits.append(self.path)
        body = {
            "/profile.json": json.dumps(PROFILE).encode(),
            "/list.json": b"[1, 2]",
            "/broken.json": b"{not json",
            "/huge.json": b" " * (MAX_BYTES + 10),
        }.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_http_profiles_are_fetched_once_and_cached(server: str) -> None:
    Handler.hits.clear()
    cache = ProfileCache()
    assert cache.get(f"{server}/profile.json") == PROFILE
    assert cache.get(f"{server}/profile.json") == PROFILE
    assert Handler.hits == ["/profile.json"]


def test_unreachable_or_invalid_profiles_are_none(server: str) -> None:
    for path in ("/missing.json", "/list.json", "/broken.json", "/huge.json"):
        assert fetch(f"{server}{path}") is None, path
    assert fetch("http://127.0.0.1:9/none.json") is None


def test_pod_local_uris_are_not_fetched() -> None:
    cache = ProfileCache()
    assert cache.get("file:///profiles/wine.json") is None
    assert cache.get("pvc://models/wine/profile.json") is None
    assert cache.get(None) is None
