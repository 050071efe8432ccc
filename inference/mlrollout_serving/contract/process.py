"""How the operator runs the data plane's processes: commands, environment, ports, probes, exit codes.

The operator writes these into pod specs and reads exit codes and termination messages back; the model
server and the gateway read their settings from the same names. Every flag of both programs also has an
environment variable (flag first, then environment, then default); the ones here are those the operator
sets or reads.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from enum import IntEnum, StrEnum
from typing import Final

__all__ = [
    "FEEDBACK_KEYS_DIR",
    "FEEDBACK_KEYS_FILE",
    "GATEWAY_COMMAND",
    "GATEWAY_PORT",
    "HEALTH_LIVE",
    "HEALTH_READY",
    "METRICS_PATH",
    "REGISTRY_URI_FLAG",
    "REGISTRY_URI_HELP",
    "SERVER_COMMAND",
    "SERVER_PORT",
    "TERMINATION_LOG",
    "ExitCode",
    "GatewayEnv",
    "RegistryEnv",
    "ServerEnv",
    "feedback_secret_name",
    "registry_authorization",
    "registry_header",
    "under",
]

SERVER_COMMAND: Final = "mlrollout-serve"
GATEWAY_COMMAND: Final = "mlrollout-gateway"

SERVER_PORT: Final = 8080
"""The model server's default port (``spec.serving.port`` overrides it per ModelDeployment)."""
GATEWAY_PORT: Final = 8080
"""The gateway's port: the address clients call is ``http://<md>.<namespace>.svc:8080``."""

HEALTH_LIVE: Final = "/v2/health/live"
"""200 while the process runs (Open Inference Protocol)."""
HEALTH_READY: Final = "/v2/health/ready"
"""200 once the model is verified and loaded (server) or a route table is applied (gateway); 503 while
draining."""
METRICS_PATH: Final = "/metrics"

TERMINATION_LOG: Final = "/dev/termination-log"
"""Kubernetes' default terminationMessagePath: the model server writes why it exits there, one line."""

FEEDBACK_KEYS_DIR: Final = "/var/run/mlrollout/feedback"
FEEDBACK_KEYS_FILE: Final = "keys"
"""Where the gateway finds the feedback keys: the Secret ``<md>-feedback`` mounted read-only, key ``keys``."""


def feedback_secret_name(model_deployment: str) -> str:
    """The Secret holding a ModelDeployment's feedback keys; the operator creates it once and never rewrites
    it (rotation is adding a key, see docs/gateway.md)."""
    return f"{model_deployment}-feedback"


class ExitCode(IntEnum):
    """Exit codes of ``mlrollout-serve``; the operator tells a refused model file by ``INTEGRITY``."""

    OK = 0
    LOAD_FAILED = 1  # the model or profile cannot be loaded, or the port is taken
    USAGE = 2  # invalid flags
    INTEGRITY = 3  # the model file's sha256 is not the expected one


class ServerEnv(StrEnum):
    """Environment variables of ``mlrollout-serve`` (one per flag)."""

    MODEL_URI = "MLROLLOUT_MODEL_URI"
    MODEL_SHA256 = "MLROLLOUT_MODEL_SHA256"
    MODEL_NAME = "MLROLLOUT_MODEL_NAME"
    MODEL_VERSION = "MLROLLOUT_MODEL_VERSION"
    HOST = "MLROLLOUT_HOST"
    PORT = "MLROLLOUT_PORT"
    REFERENCE_PROFILE = "MLROLLOUT_REFERENCE_PROFILE"
    NAMESPACE = "MLROLLOUT_NAMESPACE"
    MODEL_DEPLOYMENT = "MLROLLOUT_MODEL_DEPLOYMENT"
    TRACK = "MLROLLOUT_TRACK"
    REVISION = "MLROLLOUT_REVISION"
    INTRA_OP_THREADS = "MLROLLOUT_INTRA_OP_THREADS"
    INTER_OP_THREADS = "MLROLLOUT_INTER_OP_THREADS"
    BATCHING = "MLROLLOUT_BATCHING"
    MAX_BATCH_SIZE = "MLROLLOUT_MAX_BATCH_SIZE"
    MAX_BATCH_WAIT_MS = "MLROLLOUT_MAX_BATCH_WAIT_MS"
    INLINE_ELEMENTS = "MLROLLOUT_INLINE_ELEMENTS"
    INLINE_MAX_MS = "MLROLLOUT_INLINE_MAX_MS"
    MAX_BODY_BYTES = "MLROLLOUT_MAX_BODY_BYTES"
    MAX_INFLIGHT = "MLROLLOUT_MAX_INFLIGHT"
    KEEPALIVE_TIMEOUT = "MLROLLOUT_KEEPALIVE_TIMEOUT"
    MAX_URL_BYTES = "MLROLLOUT_MAX_URL_BYTES"
    MAX_HEADER_BYTES = "MLROLLOUT_MAX_HEADER_BYTES"
    HEADER_TIMEOUT = "MLROLLOUT_HEADER_TIMEOUT"
    BODY_TIMEOUT = "MLROLLOUT_BODY_TIMEOUT"
    SEND_TIMEOUT = "MLROLLOUT_SEND_TIMEOUT"
    MAX_CONNECTIONS = "MLROLLOUT_MAX_CONNECTIONS"
    DOWNLOAD_TIMEOUT = "MLROLLOUT_DOWNLOAD_TIMEOUT"
    DOWNLOAD_MAX_BYTES = "MLROLLOUT_DOWNLOAD_MAX_BYTES"
    DOWNLOAD_RETRIES = "MLROLLOUT_DOWNLOAD_RETRIES"
    DOWNLOAD_DIR = "MLROLLOUT_DOWNLOAD_DIR"
    REGISTRY_URI = "MLROLLOUT_REGISTRY_URI"
    SHUTDOWN_GRACE = "MLROLLOUT_SHUTDOWN_GRACE"
    ALLOW_NON_FINITE = "MLROLLOUT_ALLOW_NON_FINITE"
    PREDICTION_KIND = "MLROLLOUT_PREDICTION_KIND"
    PREDICTION_BUCKETS = "MLROLLOUT_PREDICTION_BUCKETS"
    TERMINATION_LOG = "MLROLLOUT_TERMINATION_LOG"
    LOG_LEVEL = "MLROLLOUT_LOG_LEVEL"


class GatewayEnv(StrEnum):
    """Environment variables of ``mlrollout-gateway`` (one per flag the operator sets)."""

    HOST = "MLROLLOUT_GATEWAY_HOST"
    PORT = "MLROLLOUT_GATEWAY_PORT"
    NAMESPACE = "MLROLLOUT_NAMESPACE"
    MODEL_DEPLOYMENT = "MLROLLOUT_MODEL_DEPLOYMENT"
    ROUTES_CONFIGMAP = "MLROLLOUT_ROUTES_CONFIGMAP"
    FEEDBACK_KEYS = "MLROLLOUT_FEEDBACK_KEYS"
    POD_IP = "MLROLLOUT_POD_IP"
    LOG_LEVEL = "MLROLLOUT_LOG_LEVEL"


class RegistryEnv(StrEnum):
    """The MLflow client's own variables: the keys of a registry credentials Secret. The operator reads them
    from the Secret when it resolves a models:/ URI; the model server from its environment (the same
    Secret as envFrom) when it downloads the resolved file from that tracking server."""

    TOKEN = "MLFLOW_TRACKING_TOKEN"
    USERNAME = "MLFLOW_TRACKING_USERNAME"
    PASSWORD = "MLFLOW_TRACKING_PASSWORD"


REGISTRY_URI_FLAG: Final = "--registry-uri"
"""The flag of ``ServerEnv.REGISTRY_URI``, in every program that downloads a registry's files (the model
server and ``mlrollout-evaluate``): one spelling, one rule (:func:`registry_header`)."""
REGISTRY_URI_HELP: Final = "MLflow server that gets $MLFLOW_TRACKING_* credentials"

_NEWLINES: Final = "\r\n"


def registry_authorization(values: Mapping[str, str]) -> str | None:
    """The ``Authorization`` header MLflow's client sends for these variables: the token as a bearer token,
    else user and password as HTTP basic; None without a usable set."""
    token = (values.get(RegistryEnv.TOKEN) or "").strip()
    if token:
        return f"Bearer {token}"
    user, password = (values.get(RegistryEnv.USERNAME) or "").strip(), values.get(RegistryEnv.PASSWORD)
    if user and password is not None:
        pair = f"{user}:{password.rstrip(_NEWLINES)}"  # a Secret made from a file often ends in a newline
        return "Basic " + base64.b64encode(pair.encode()).decode()
    return None


def under(url: str, base: str | None) -> bool:
    """``url`` is on the server at ``base`` (the only place its credentials may go)."""
    return base is not None and url.startswith(f"{base.rstrip('/')}/")


def registry_header(url: str, registry_uri: str | None, values: Mapping[str, str]) -> str | None:
    """The ``Authorization`` header a download of ``url`` sends: the registry's credentials in ``values``
    (the process's environment, MLflow's variables) when ``url`` is under ``registry_uri``, else none."""
    return registry_authorization(values) if under(url, registry_uri) else None
