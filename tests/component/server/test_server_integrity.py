"""Loading with integrity: the digest is checked before loading, and a bad model never becomes ready."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.component.server.conftest import infer_body, outputs_of, post, reference
from tests.support.httpd import QuietHandler, serving
from tests.support.models import BuiltModel
from tests.support.procs import run_server_until_exit, serve_model

pytestmark = pytest.mark.component


@pytest.fixture(scope="module")
def file_server(wine_model: BuiltModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A plain HTTP file server on loopback holding the wine model and a corrupt file."""
    root = tmp_path_factory.mktemp("models")
    (root / "wine.onnx").write_bytes(wine_model.path.read_bytes())
    (root / "garbage.onnx").write_bytes(b"this is not an onnx model")
    with serving(functools.partial(QuietHandler, directory=str(root))) as url:
        yield url


def test_sha256_mismatch_refuses_to_start(wine_model: BuiltModel) -> None:
    wrong = "0" * 64
    code, output, ever_ready = run_server_until_exit(wine_model, sha256=wrong)
    assert code == 3
    assert not ever_ready
    lines = [line for line in output.splitlines() if "sha256" in line and "ERROR" in line]
    assert len(lines) == 1, output
    assert f"expected sha256 {wrong}" in lines[0] and f"actual sha256 {wine_model.sha256}" in lines[0]


def test_refusal_leaves_one_line_for_the_termination_message(wine_model: BuiltModel, tmp_path: Path) -> None:
    """Kubernetes shows this file as the container's termination message; the operator quotes it."""
    message = tmp_path / "termination-log"
    code, _, _ = run_server_until_exit(wine_model, sha256="0" * 64, extra_args=["--termination-log", str(message)])
    assert code == 3
    text = message.read_text()
    assert "\n" not in text and text.startswith(f"model integrity check failed for {wine_model.uri}")
    assert f"actual sha256 {wine_model.sha256}" in text


def test_unreadable_model_refuses_to_start(tmp_path: Path) -> None:
    code, output, ever_ready = run_server_until_exit((tmp_path / "missing.onnx").as_uri(), sha256="0" * 64)
    assert code == 1 and not ever_ready
    assert "cannot read model" in output


def test_corrupt_model_with_matching_digest_is_not_loaded(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "corrupt.onnx"
    path.write_bytes(b"\x08\x07garbage")
    code, output, ever_ready = run_server_until_exit(
        path.as_uri(), sha256=hashlib.sha256(path.read_bytes()).hexdigest()
    )
    assert code == 1 and not ever_ready
    assert "onnxruntime cannot load the model" in output


def test_http_download_with_digest_serves(file_server: str, wine_model: BuiltModel) -> None:
    with serve_model(f"{file_server}/wine.onnx", sha256=wine_model.sha256, name="wine") as server:
        status, body, _ = post(server.port, "/v2/models/wine/infer", infer_body(wine_model, wine_model.samples))
        assert status == 200
        assert (outputs_of(body)["label"] == reference(wine_model, wine_model.samples)[0]).all()
        assert re.search(f"ready: model wine version 1 sha256 {wine_model.sha256}", server.output())


def test_http_download_mismatch_and_failures(file_server: str, wine_model: BuiltModel) -> None:
    code, output, ready = run_server_until_exit(f"{file_server}/garbage.onnx", sha256=wine_model.sha256)
    assert code == 3 and not ready and f"expected sha256 {wine_model.sha256}" in output
    code, output, ready = run_server_until_exit(
        f"{file_server}/absent.onnx", sha256=wine_model.sha256, extra_args=["--download-retries", "2"]
    )
    assert code == 1 and not ready and "HTTP 404" in output
    code, output, ready = run_server_until_exit(
        f"{file_server}/wine.onnx", sha256=wine_model.sha256, extra_args=["--download-max-bytes", "100"]
    )
    assert code == 1 and not ready and "limit of 100" in output
