"""Routes of the data plane, driven in-process with a real (small) model and no network."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import Iterator

import pytest
from tests.support.models import BuiltModel

from mlrollout_serving.server import config, loading
from mlrollout_serving.server.app import App
from mlrollout_serving.server.http import Reply, Request
from mlrollout_serving.server.metrics import ServerMetrics


@pytest.fixture
def app(wine_model: BuiltModel) -> Iterator[App]:
    settings = config.parse(["--model-uri", wine_model.uri, "--model-name", "wine", "--model-version", "4"], {})
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        yield App(settings, ServerMetrics(settings.identity, "wine", "4"), pool)


def call(app: App, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Reply:
    async def go() -> Reply:
        result = app.handle(Request(method, path, "", headers or {}, body, 0.0))
        return result if isinstance(result, Reply) else await result

    return asyncio.run(go())


def test_readiness_follows_loading_and_draining(app: App, wine_model: BuiltModel) -> None:
    assert call(app, "GET", "/v2/health/live").status == 200
    assert call(app, "GET", "/v2/health/ready").status == 503
    assert call(app, "GET", "/v2/models/wine").status == 503
    body = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 13], "data": [0.0] * 13}]}
    ).encode()
    assert call(app, "POST", "/v2/models/wine/infer", body).status == 503
    data = wine_model.path.read_bytes()
    app.set_model(loading.load(data, wine_model.sha256, 1, 1, 8), None)
    assert call(app, "GET", "/v2/health/ready").status == 200
    assert call(app, "GET", "/v2/models/wine/versions/4/ready").status == 200
    app.draining = True
    assert call(app, "GET", "/v2/health/ready").status == 503
    assert call(app, "GET", "/v2/models/wine/ready").status == 503
    assert call(app, "POST", "/v2/models/wine/infer", body).status == 200  # still served while draining


def test_routes_and_methods(app: App, wine_model: BuiltModel) -> None:
    app.set_model(loading.load(wine_model.path.read_bytes(), wine_model.sha256, 1, 1, 8), None)
    meta = json.loads(call(app, "GET", "/v2/models/wine/versions/4").body)
    assert meta["platform"] == "onnx_onnxv1" and meta["versions"] == ["4"]
    assert json.loads(call(app, "GET", "/v2").body)["extensions"] == ["binary_tensor_data"]
    assert call(app, "GET", "/v2/").status == 200
    assert call(app, "POST", "/v2/health/ready").status == 405
    assert call(app, "GET", "/v2/models/wine/infer").status == 405
    assert dict(call(app, "DELETE", "/v2/models/wine").headers) == {"allow": "GET"}  # RFC 9110 wants it
    assert dict(call(app, "GET", "/v2/models/wine/versions/4/infer").headers) == {"allow": "POST"}
    assert call(app, "GET", "/v2/models/wine/explain").status == 404
    assert call(app, "GET", "/v2/models/red/ready").status == 400
    assert call(app, "GET", "/v2/models/wine/versions/5").status == 400
    assert call(app, "GET", "/metrics").content_type.startswith("text/plain")


@pytest.mark.parametrize("length", ["\u00b2", "1" * 5000, "-3", "ten"])
def test_a_bad_binary_header_length_is_a_400_not_a_crash(app: App, wine_model: BuiltModel, length: str) -> None:
    """``"²".isdigit()`` is true and ``int("1" * 5000)`` raises: both were 500s."""
    app.set_model(loading.load(wine_model.path.read_bytes(), wine_model.sha256, 1, 1, 8), None)
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 13], "data": [0.5] * 13}]})
    reply = call(app, "POST", "/v2/models/wine/infer", body.encode(), {"inference-header-content-length": length})
    assert reply.status == 400
    message = json.loads(reply.body)["error"]
    assert message.startswith("Inference-Header-Content-Length must be a byte count") and len(message) < 160


def test_paths_and_names_are_quoted_briefly(app: App, wine_model: BuiltModel) -> None:
    app.set_model(loading.load(wine_model.path.read_bytes(), wine_model.sha256, 1, 1, 8), None)
    long = "x" * 20_000
    for method, path in [
        ("GET", f"/{long}"),
        ("DELETE", f"/v2/{long}"),
        ("GET", f"/v2/models/{long}"),
        ("GET", f"/v2/models/wine/versions/{long}"),
        ("PUT", f"/v2/models/wine/{long}"),
    ]:
        reply = call(app, method, path)
        assert reply.status in (400, 404, 405) and len(reply.body) < 250, (method, reply.body[:300])
