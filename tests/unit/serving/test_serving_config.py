"""Flags and their MLROLLOUT_* environment variables."""

from __future__ import annotations

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


def test_every_flag_documents_its_env_var() -> None:
    text = config.parser({}).format_help()
    for flag, var, *_ in config._OPTIONS:
        assert flag in text and f"${var}" in text


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        ([], {}),
        (["--model-uri", "x", "--batching", "sometimes"], {}),
        (["--model-uri", "x"], {"MLROLLOUT_PORT": "eighty"}),
        (["--model-uri", "x", "--max-batch-size", "0"], {}),
    ],
)
def test_invalid_settings_exit_with_usage_error(argv: list[str], env: dict[str, str]) -> None:
    with pytest.raises(SystemExit) as info:
        config.parse(argv, env)
    assert info.value.code == 2
