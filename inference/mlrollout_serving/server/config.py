"""Settings of ``mlrollout-serve``: every flag has an ``MLROLLOUT_*`` environment variable for pods.

Precedence: command-line flag, then environment variable, then default.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlrollout_serving.contract.process import REGISTRY_URI_FLAG, REGISTRY_URI_HELP, SERVER_PORT, ServerEnv
from mlrollout_serving.server.limits import Limits
from mlrollout_serving.server.signature import PredictionKind


@dataclass(frozen=True)
class Settings:
    model_uri: str
    sha256: str | None
    model_name: str
    model_version: str
    host: str
    port: int
    reference_profile: str | None
    namespace: str
    model_deployment: str
    track: str
    revision: str
    intra_op_threads: int
    inter_op_threads: int
    batching: str
    max_batch_size: int
    max_batch_wait_ms: float
    inline_elements: int
    inline_max_ms: float
    max_body_bytes: int
    max_inflight: int
    keepalive_timeout: float
    max_url_bytes: int
    max_header_bytes: int
    header_timeout: float
    body_timeout: float
    send_timeout: float
    max_connections: int
    download_timeout: float
    download_max_bytes: int
    download_retries: int
    download_dir: str
    registry_uri: str | None
    shutdown_grace: float
    allow_non_finite: bool
    prediction_kind: PredictionKind
    prediction_buckets: tuple[float, ...]
    termination_log: str | None
    log_level: str

    @property
    def limits(self) -> Limits:
        """What one client may hold of the server (the HTTP layer's limits)."""
        return Limits(
            max_url_bytes=self.max_url_bytes,
            max_header_bytes=self.max_header_bytes,
            header_timeout=self.header_timeout,
            body_timeout=self.body_timeout,
            keepalive_timeout=self.keepalive_timeout,
            send_timeout=self.send_timeout,
            max_connections=self.max_connections,
        )

    @property
    def identity(self) -> dict[str, str]:
        return {
            "namespace": self.namespace,
            "model_deployment": self.model_deployment,
            "track": self.track,
            "revision": self.revision,
        }


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(sorted(float(v) for v in text.split(",") if v.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None


_L = Limits()  # the HTTP limits' defaults (0 s = no timeout)
# (flag, environment variable, type, default, help)
_OPTIONS: list[tuple[str, ServerEnv, Callable[[str], Any], Any, str]] = [
    ("--model-uri", ServerEnv.MODEL_URI, str, None, "model location: file://, http(s)://, s3:// or gs:// (or a path)"),
    ("--sha256", ServerEnv.MODEL_SHA256, str, None, "expected sha256 of the model file; checked before loading"),
    ("--model-name", ServerEnv.MODEL_NAME, str, "model", "name in the Open Inference Protocol paths"),
    ("--model-version", ServerEnv.MODEL_VERSION, str, "1", "version reported and accepted in paths"),
    ("--host", ServerEnv.HOST, str, "0.0.0.0", "address to listen on"),
    ("--port", ServerEnv.PORT, int, SERVER_PORT, "port to listen on"),
    ("--reference-profile", ServerEnv.REFERENCE_PROFILE, str, None, "reference profile (path or URI) for input bins"),
    ("--namespace", ServerEnv.NAMESPACE, str, "", "metrics label: namespace of the ModelDeployment"),
    ("--model-deployment", ServerEnv.MODEL_DEPLOYMENT, str, "", "metrics label: ModelDeployment name"),
    ("--track", ServerEnv.TRACK, str, "", "metrics label: stable, candidate or shadow"),
    ("--revision", ServerEnv.REVISION, str, "", "metrics label: revision hash"),
    ("--intra-op-threads", ServerEnv.INTRA_OP_THREADS, int, 1, "onnxruntime threads per operator (0 = one per core)"),
    ("--inter-op-threads", ServerEnv.INTER_OP_THREADS, int, 1, "onnxruntime threads across operators"),
    ("--batching", ServerEnv.BATCHING, str, "auto", "auto (on if the model has a batch dimension), on or off"),
    ("--max-batch-size", ServerEnv.MAX_BATCH_SIZE, int, 64, "most rows merged into one run"),
    ("--max-batch-wait-ms", ServerEnv.MAX_BATCH_WAIT_MS, float, 0.0, "extra wait to fill a batch under concurrency"),
    ("--inline-elements", ServerEnv.INLINE_ELEMENTS, int, 8192, "batches up to this many values run on the loop"),
    ("--inline-max-ms", ServerEnv.INLINE_MAX_MS, float, 1.0, "larger lone requests too, if their runs take this long"),
    ("--max-body-bytes", ServerEnv.MAX_BODY_BYTES, int, 16 << 20, "larger request bodies get 413"),
    ("--max-inflight", ServerEnv.MAX_INFLIGHT, int, 4096, "more queued inference requests get 503"),
    ("--keepalive-timeout", ServerEnv.KEEPALIVE_TIMEOUT, float, _L.keepalive_timeout, "idle seconds before closing"),
    ("--max-url-bytes", ServerEnv.MAX_URL_BYTES, int, _L.max_url_bytes, "longer request targets get 414"),
    ("--max-header-bytes", ServerEnv.MAX_HEADER_BYTES, int, _L.max_header_bytes, "larger request heads get 431"),
    ("--header-timeout", ServerEnv.HEADER_TIMEOUT, float, _L.header_timeout, "seconds for a request head (408)"),
    ("--body-timeout", ServerEnv.BODY_TIMEOUT, float, _L.body_timeout, "seconds a body may stall (408)"),
    ("--send-timeout", ServerEnv.SEND_TIMEOUT, float, _L.send_timeout, "seconds replies may stay unread"),
    ("--max-connections", ServerEnv.MAX_CONNECTIONS, int, _L.max_connections, "open connections at most"),
    ("--download-timeout", ServerEnv.DOWNLOAD_TIMEOUT, float, 60.0, "seconds to connect and per read, per attempt"),
    ("--download-max-bytes", ServerEnv.DOWNLOAD_MAX_BYTES, int, 2 << 30, "largest model file accepted"),
    ("--download-retries", ServerEnv.DOWNLOAD_RETRIES, int, 3, "download attempts before giving up"),
    ("--download-dir", ServerEnv.DOWNLOAD_DIR, str, tempfile.gettempdir(), "where downloads are streamed to"),
    (REGISTRY_URI_FLAG, ServerEnv.REGISTRY_URI, str, None, REGISTRY_URI_HELP),
    ("--shutdown-grace", ServerEnv.SHUTDOWN_GRACE, float, 20.0, "seconds to finish in-flight requests on SIGTERM"),
    ("--allow-non-finite", ServerEnv.ALLOW_NON_FINITE, _bool, False, "accept NaN/Infinity in float inputs"),
    ("--prediction-kind", ServerEnv.PREDICTION_KIND, str, "auto", "auto, classification or regression (metrics)"),
    ("--prediction-buckets", ServerEnv.PREDICTION_BUCKETS, _floats, (), "regression histogram buckets (a,b,...)"),
    ("--termination-log", ServerEnv.TERMINATION_LOG, str, None, "file for the one-line reason of a failed start"),
    ("--log-level", ServerEnv.LOG_LEVEL, str, "INFO", "DEBUG, INFO, WARNING or ERROR"),
]
_CHOICES = {"batching": ("auto", "on", "off"), "prediction_kind": ("auto", "classification", "regression")}


def parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if env is None else env
    p = argparse.ArgumentParser(
        prog="mlrollout-serve",
        description="Serve one ONNX model over the Open Inference Protocol v2 (REST).",
    )
    for flag, var, typ, default, text in _OPTIONS:
        dest = flag[2:].replace("-", "_")
        value = default
        if var in env:
            try:
                value = typ(env[var])
            except (ValueError, argparse.ArgumentTypeError) as e:
                p.error(f"{var}: {e}")
        kwargs: dict[str, Any] = {"type": typ, "default": value, "help": f"{text} [${var}]", "dest": dest}
        if dest in _CHOICES:
            kwargs["choices"] = _CHOICES[dest]
        p.add_argument(flag, **kwargs)
    return p


def parse(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    p = parser(env)
    ns = p.parse_args(argv)
    if not ns.model_uri:
        p.error("--model-uri (or MLROLLOUT_MODEL_URI) is required")
    if ns.batching not in _CHOICES["batching"] or ns.prediction_kind not in _CHOICES["prediction_kind"]:
        p.error("invalid --batching or --prediction-kind")
    if ns.sha256 is not None:
        ns.sha256 = ns.sha256.strip().lower().removeprefix("sha256:") or None
    if min(ns.max_batch_size, ns.max_body_bytes, ns.download_retries, ns.max_connections) < 1:
        p.error("--max-batch-size, --max-body-bytes, --download-retries and --max-connections must be >= 1")
    if min(ns.max_url_bytes, ns.max_header_bytes) < 64:
        p.error("--max-url-bytes and --max-header-bytes must be >= 64")
    if min(ns.keepalive_timeout, ns.header_timeout, ns.body_timeout, ns.send_timeout) < 0:
        p.error("timeouts must be >= 0 (0 = never)")
    return Settings(**vars(ns))
