"""s3:// models from a real S3-compatible server (moto's server mode) through boto3's standard chain.

Each bad input ends the server's start with one clear line (exit 1, or 3 for a digest mismatch), without
ever becoming ready, and a final error (missing object, denied, wrong keys) is not retried.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.component.server.conftest import get, infer_body, outputs_of, post, reference
from tests.support.httpd import silent_listener
from tests.support.models import BuiltModel
from tests.support.procs import ServerProcess, free_port, run_server_until_exit, serve_model, server_command, spawn
from tests.support.s3 import NO_AMBIENT_CREDENTIALS, SETUP_KEYS, S3Server, read_all, run_s3
from tests.support.waiting import wait_for

pytestmark = pytest.mark.component


@dataclass(frozen=True)
class Store:
    s3: S3Server
    reader: dict[str, str]  # may read bucket `models`
    nobody: dict[str, str]  # known keys, no permissions

    def env(self, keys: dict[str, str] | None, **extra: str) -> dict[str, str]:
        return self.s3.env(keys, **extra)


@pytest.fixture(scope="module")
def store(wine_model: BuiltModel) -> Iterator[Store]:
    """moto with the wine model in bucket `models`, a reader, a user without rights, then auth enforced."""
    with run_s3() as s3:
        s3.put("models", "wine/v1/model.onnx", wine_model.path)
        s3.put("models", "garbage.onnx", b"not a model")
        s3.put("private", "wine.onnx", wine_model.path)
        # the reader may read `no-such-bucket` too: a missing bucket is then NoSuchBucket, not AccessDenied
        made = Store(s3, s3.user("reader", read_all("models", "no-such-bucket")), s3.user("nobody", None))
        s3.enforce_auth()
        yield made


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if " ERROR " in line]


def test_serves_a_model_from_s3_with_keys_in_the_environment(store: Store, wine_model: BuiltModel) -> None:
    env = store.env(store.reader)
    uri = "s3://models/wine/v1/model.onnx"
    with serve_model(uri, sha256=wine_model.sha256, name="wine", env=env) as server:
        status, body, _ = post(server.port, "/v2/models/wine/infer", infer_body(wine_model, wine_model.samples))
        assert status == 200
        assert (outputs_of(body)["label"] == reference(wine_model, wine_model.samples)[0]).all()
        assert f"downloaded {uri}" in server.output()
        assert f"ready: model wine version 1 sha256 {wine_model.sha256}" in server.output()


def test_web_identity_token_is_exchanged_for_credentials(wine_model: BuiltModel, tmp_path: Path) -> None:
    """IRSA's way: no keys, AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE; boto3 calls STS
    AssumeRoleWithWebIdentity and signs with what it returns (a store without enforced auth: moto 5.2
    answers unsigned STS calls with a 500 once auth is on). Without the token it has no credentials."""
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtb2RlbC1zZXJ2ZXIifQ.c2ln")
    with run_s3() as s3:
        uri = s3.put("models", "wine.onnx", wine_model.path)
        sts = {"AWS_ROLE_ARN": s3.role("model-reader", read_all("models")), "AWS_ENDPOINT_URL_STS": s3.url}
        env = s3.env(None, AWS_WEB_IDENTITY_TOKEN_FILE=str(token), **sts)
        debug = ["--log-level", "DEBUG"]
        with serve_model(uri, sha256=wine_model.sha256, name="wine", env=env, extra_args=debug) as server:
            status, _, _ = post(server.port, "/v2/models/wine/infer", infer_body(wine_model, wine_model.samples[:2]))
            assert status == 200
            assert "assume-role-with-web-identity" in server.output()
        code, output, _ = run_server_until_exit(uri, sha256=wine_model.sha256, env=s3.env(None, **sts))
        assert code == 1 and "no usable AWS credentials" in output


@pytest.mark.parametrize(
    ("uri", "keys", "expected"),
    [
        ("s3://models/wine/v2/model.onnx", "reader", "the object does not exist (NoSuchKey"),
        ("s3://no-such-bucket/wine.onnx", "reader", "the bucket does not exist (NoSuchBucket"),
        ("s3://private/wine.onnx", "reader", "access denied"),
        ("s3://models/wine/v1/model.onnx", "nobody", "access denied"),
        ("s3://models/wine/v1/model.onnx", "unknown", "the store does not know the access key id"),
        ("s3://models/wine/v1/model.onnx", "bad-secret", "the store refused the signature"),
        ("s3://models/wine/v1/model.onnx", "none", "no usable AWS credentials"),
    ],
)
def test_final_errors_are_clear_and_not_retried(
    store: Store, wine_model: BuiltModel, uri: str, keys: str, expected: str
) -> None:
    reader = store.reader
    chosen = {
        "reader": reader,
        "nobody": store.nobody,
        "unknown": {"AWS_ACCESS_KEY_ID": "AKIAUNKNOWNUNKNOWN00", "AWS_SECRET_ACCESS_KEY": "x" * 40},
        "bad-secret": {**reader, "AWS_SECRET_ACCESS_KEY": "wrong" * 8},
        "none": None,
    }[keys]
    started = time.monotonic()
    code, output, ready = run_server_until_exit(
        uri, sha256=wine_model.sha256, env=store.env(chosen), extra_args=["--download-retries", "3"]
    )
    assert code == 1 and not ready, output
    errors = _error_lines(output)
    assert len(errors) == 1 and expected in errors[0] and uri in errors[0], output
    assert "retry" not in output, "a final error must not be retried"
    assert time.monotonic() - started < 30


def test_digest_mismatch_exits_with_the_integrity_code(store: Store, wine_model: BuiltModel) -> None:
    code, output, ready = run_server_until_exit(
        "s3://models/garbage.onnx", sha256=wine_model.sha256, env=store.env(store.reader)
    )
    assert code == 3 and not ready
    assert f"expected sha256 {wine_model.sha256}" in output


def test_object_larger_than_the_limit_is_refused_before_download(store: Store, wine_model: BuiltModel) -> None:
    code, output, ready = run_server_until_exit(
        "s3://models/wine/v1/model.onnx",
        sha256=wine_model.sha256,
        env=store.env(store.reader),
        extra_args=["--download-max-bytes", "100"],
    )
    assert code == 1 and not ready, output
    assert "more than the limit of 100 " in output


def test_download_is_streamed_to_the_download_dir_and_removed(
    store: Store, wine_model: BuiltModel, tmp_path: Path
) -> None:
    downloads = tmp_path / "downloads"
    with serve_model(
        "s3://models/wine/v1/model.onnx",
        sha256=wine_model.sha256,
        env=store.env(store.reader),
        extra_args=["--download-dir", str(downloads)],
    ):
        assert downloads.is_dir() and list(downloads.iterdir()) == []  # loaded into onnxruntime, file gone


def test_an_endpoint_that_hangs_times_out_is_retried_and_says_why_while_not_ready(wine_model: BuiltModel) -> None:
    with silent_listener() as url:
        port = free_port()
        cmd = server_command(
            "s3://models/wine.onnx",
            wine_model.sha256,
            port,
            extra_args=["--download-timeout", "1", "--download-retries", "2"],
        )
        proc, log = spawn(cmd, env={**NO_AMBIENT_CREDENTIALS, **SETUP_KEYS, "AWS_REGION": "us-east-1",
                                    "AWS_ENDPOINT_URL_S3": url})  # fmt: skip
        server = ServerProcess(proc=proc, port=port, log_path=log)
        try:

            def reason() -> str | None:
                status, body = _ready(server.port)
                return body.get("reason") if status == 503 else None

            first = wait_for(reason, timeout=30, what="a 503 with a reason")
            assert "s3://models/wine.onnx" in first
            assert proc.wait(timeout=60) == 1
            output = server.output()
            assert "retry 1/1" in output
            errors = _error_lines(output)
            assert len(errors) == 1 and "after 2 attempts" in errors[0] and "timeout" in errors[0].lower(), output
        finally:
            server.stop()
            log.unlink(missing_ok=True)


def _ready(port: int) -> tuple[int, dict[str, str]]:
    try:
        status, body = get(port, "/v2/health/ready", timeout=2)
    except OSError:
        return 0, {}
    return status, json.loads(body or b"{}")
