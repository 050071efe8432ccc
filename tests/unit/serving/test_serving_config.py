"""Flags and their MLROLLOUT_* environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlrollout_serving.server import config


def test_env_vars_are_defaults_and_flags_win() -> None:
    env = {
        "MLROLLOUT_MODEL_URI": "file:///m.onnx",
        "MLROLLOUT_MODEL_SHA256": "SHA256:ABC",
        "MLROLLOUT_PORT": "9000",
        "MLROLLOUT_TRACK": "candidate",
        "MLROLLOUT_ALLOW_NON_FINITE": "true",
        "MLROLLOUT_PREDICTION_BUCKETS": "10,1,5",
        "MLROLLOUT_BATCHING": "off",
    }
    s = config.parse(["--port", "9100"], env)
    assert s.model_uri == "file:///m.onnx"
    assert s.sha256 == "abc"
    assert s.port == 9100
    assert s.track == "candidate"
    assert s.allow_non_finite is True
    assert s.prediction_buckets == (1.0, 5.0, 10.0)
    assert s.batching == "off"
    assert s.identity == {"namespace": "", "model_deployment": "", "track": "candidate", "revision": ""}


def test_the_http_limits_come_from_their_flags() -> None:
    s = config.parse(
        ["--model-uri", "x", "--max-header-bytes", "4096", "--body-timeout", "0"], {"MLROLLOUT_MAX_CONNECTIONS": "99"}
    )
    assert (s.limits.max_header_bytes, s.limits.body_timeout, s.limits.max_connections) == (4096, 0.0, 99)
    assert s.limits.header_timeout == 10.0 and s.limits.max_url_bytes == 8192


def test_every_flag_documents_its_env_var() -> None:
    text = config.parser({}).format_help()
    for flag, var, *_ in config._OPTIONS:
        assert flag in text and f"${var}" in text


def test_docs_list_every_flag_with_its_variable() -> None:
    rows = (Path(__file__).parents[3] / "docs" / "serving.md").read_text().splitlines()
    for flag, var, *_ in config._OPTIONS:
        assert any(row.startswith(f"| `{flag}` | `{var}` |") for row in rows), flag


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        ([], {}),
        (["--model-uri", "x", "--batching", "sometimes"], {}),
        (["--model-uri", "x"], {"MLROLLOUT_PORT": "eighty"}),
        (["--model-uri", "x", "--max-batch-size", "0"], {}),
        (["--model-uri", "x", "--max-connections", "0"], {}),
        (["--model-uri", "x", "--max-header-bytes", "10"], {}),
        (["--model-uri", "x"], {"MLROLLOUT_HEADER_TIMEOUT": "-1"}),
    ],
)
def test_invalid_settings_exit_with_usage_error(argv: list[str], env: dict[str, str]) -> None:
    with pytest.raises(SystemExit) as info:
        config.parse(argv, env)
    assert info.value.code == 2
