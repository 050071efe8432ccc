"""Reference profiles fetched over real HTTP on loopback (a stdlib server in a thread)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from tests.support.httpd import serving

from mlrollout.controller.profiles import MAX_BYTES, ProfileCache, fetch
from mlrollout_serving.contract.profile import from_dict

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
    with serving(Handler) as url:
        yield url


def test_http_profiles_are_fetched_once_and_cached(server: str) -> None:
    Handler.hits.clear()
    cache = ProfileCache()
    assert cache.get(f"{server}/profile.json") == from_dict(PROFILE)
    assert cache.get(f"{server}/profile.json") == from_dict(PROFILE)
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
