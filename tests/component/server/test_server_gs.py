"""gs:// models from a real Cloud Storage JSON API server (gcp-storage-emulator) and google-auth's chain.

The emulator enforces no authentication, so credentials are tested where they fail before the store is
asked: no credentials at all, and a service-account key whose token endpoint (a loopback server) refuses
it. Each bad input ends the server's start with one clear line, and a final error is not retried.
"""

from __future__ import annotations

import http.server
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.component.server.conftest import infer_body, outputs_of, post, reference
from tests.support.gcs import NO_AMBIENT_CREDENTIALS, GcsServer, run_gcs
from tests.support.httpd import serving, silent_listener
from tests.support.models import BuiltModel
from tests.support.procs import run_server_until_exit, serve_model

pytestmark = pytest.mark.component

URI = "gs://models/wine/v1/model.onnx"


@pytest.fixture(scope="module")
def gcs(wine_model: BuiltModel) -> Iterator[GcsServer]:
    with run_gcs() as server:
        server.put("models", "wine/v1/model.onnx", wine_model.path)
        server.put("models", "garbage.onnx", b"not a model")
        yield server


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if " ERROR " in line]


def test_serves_a_model_from_gcs(gcs: GcsServer, wine_model: BuiltModel, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    extra = ["--download-dir", str(downloads)]
    with serve_model(URI, sha256=wine_model.sha256, name="wine", env=gcs.env(), extra_args=extra) as server:
        status, body, _ = post(server.port, "/v2/models/wine/infer", infer_body(wine_model, wine_model.samples))
        assert status == 200
        assert (outputs_of(body)["label"] == reference(wine_model, wine_model.samples)[0]).all()
        assert f"downloaded {URI}" in server.output()
        assert downloads.is_dir() and list(downloads.iterdir()) == []  # streamed to disk, loaded, removed


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("gs://models/wine/v2/model.onnx", "the object or the bucket does not exist (HTTP 404"),
        ("gs://no-such-bucket/wine.onnx", "the object or the bucket does not exist (HTTP 404"),
    ],
)
def test_missing_objects_are_final_and_clear(gcs: GcsServer, wine_model: BuiltModel, uri: str, expected: str) -> None:
    started = time.monotonic()
    code, output, ready = run_server_until_exit(
        uri, sha256=wine_model.sha256, env=gcs.env(), extra_args=["--download-retries", "3"]
    )
    assert code == 1 and not ready, output
    errors = _error_lines(output)
    assert len(errors) == 1 and expected in errors[0] and uri in errors[0], output
    assert "retry" not in output, "a final error must not be retried"
    assert time.monotonic() - started < 30


def test_digest_mismatch_exits_with_the_integrity_code(gcs: GcsServer, wine_model: BuiltModel) -> None:
    code, output, ready = run_server_until_exit("gs://models/garbage.onnx", sha256=wine_model.sha256, env=gcs.env())
    assert code == 3 and not ready
    assert f"expected sha256 {wine_model.sha256}" in output


def test_object_larger_than_the_limit_is_refused(gcs: GcsServer, wine_model: BuiltModel) -> None:
    code, output, ready = run_server_until_exit(
        URI, sha256=wine_model.sha256, env=gcs.env(), extra_args=["--download-max-bytes", "100"]
    )
    assert code == 1 and not ready, output
    assert "more than the limit of 100 " in output


def test_an_emulator_that_hangs_times_out_and_is_retried(wine_model: BuiltModel) -> None:
    with silent_listener() as url:
        code, output, ready = run_server_until_exit(
            URI,
            sha256=wine_model.sha256,
            env={**NO_AMBIENT_CREDENTIALS, "STORAGE_EMULATOR_HOST": url},
            extra_args=["--download-timeout", "1", "--download-retries", "2"],
        )
    assert code == 1 and not ready, output
    assert "retry 1/1" in output
    errors = _error_lines(output)
    assert len(errors) == 1 and "after 2 attempts" in errors[0] and "timed out" in errors[0].lower(), output


def test_no_credentials_is_final_and_says_what_to_set(wine_model: BuiltModel) -> None:
    code, output, ready = run_server_until_exit(URI, sha256=wine_model.sha256, env=NO_AMBIENT_CREDENTIALS)
    assert code == 1 and not ready, output
    errors = _error_lines(output)
    assert (
        len(errors) == 1
        and "no usable Google credentials" in errors[0]
        and "GOOGLE_APPLICATION_CREDENTIALS" in errors[0]
    )
    assert "retry" not in output


def test_a_secret_without_its_key_file_names_the_missing_file(wine_model: BuiltModel, tmp_path: Path) -> None:
    """What a credentials Secret without key.json gives: the mounted directory lacks the file that
    GOOGLE_APPLICATION_CREDENTIALS names (docs/sources.md)."""
    missing = tmp_path / "model-store" / "key.json"
    env = {**NO_AMBIENT_CREDENTIALS, "GOOGLE_APPLICATION_CREDENTIALS": str(missing)}
    code, output, ready = run_server_until_exit(URI, sha256=wine_model.sha256, env=env)
    assert code == 1 and not ready, output
    errors = _error_lines(output)
    assert len(errors) == 1 and "no usable Google credentials" in errors[0] and str(missing) in errors[0], output
    assert "retry" not in output


class _RefusingTokenEndpoint(http.server.BaseHTTPRequestHandler):
    """Google's OAuth token endpoint refusing a service-account key (as it does for a deleted key)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_refused_service_account_key_is_final(wine_model: BuiltModel, tmp_path: Path) -> None:
    """A key file (GOOGLE_APPLICATION_CREDENTIALS, as the operator mounts a Secret) whose token endpoint
    refuses it: google-auth's RefreshError is final, named, and not retried."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    with serving(_RefusingTokenEndpoint) as url:
        key = tmp_path / "key.json"
        key.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": "test",
                    "private_key_id": "k1",
                    "private_key": pem,
                    "client_email": "model-reader@test.iam.gserviceaccount.com",
                    "client_id": "1",
                    "token_uri": f"{url}/token",
                }
            )
        )
        env = {**NO_AMBIENT_CREDENTIALS, "GOOGLE_APPLICATION_CREDENTIALS": str(key)}
        code, output, ready = run_server_until_exit(
            URI, sha256=wine_model.sha256, env=env, extra_args=["--download-retries", "3"]
        )
    assert code == 1 and not ready, output
    errors = _error_lines(output)
    assert len(errors) == 1 and "the credentials were refused" in errors[0] and "invalid_grant" in errors[0], output
    assert "retry" not in output
