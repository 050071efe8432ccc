"""A real MLflow tracking server with its Model Registry for tests (PyPI ``mlflow``), on loopback.

Stable API:

- ``run_mlflow()``: context manager yielding a ready :class:`MlflowServer` (SQLite backend and a local
  artifact root in a temporary directory, artifacts served by the tracking server: ``mlflow-artifacts:/``);
  always stopped on exit.
- ``MlflowServer.register_onnx(name, path)`` / ``register_sklearn(name)``: log a model with MLflow's own
  client (``mlflow.onnx.log_model`` / ``mlflow.sklearn.log_model``) and register it as the next version of
  ``name``; returns (version, run id). The client runs in a child process, so mlflow's import-time
  warnings and global tracking state stay out of the test process.
- ``MlflowServer.set_alias(name, alias, version)``.
- ``run_mlflow(auth=BasicAuth(...))``: the same server with MLflow's own authentication on (``mlflow server
  --app-name basic-auth``, PyPI ``mlflow[auth]``): that user is its admin, every call (REST and artifacts)
  needs HTTP basic credentials, and the test's own client calls send them (``MLFLOW_TRACKING_USERNAME`` /
  ``MLFLOW_TRACKING_PASSWORD``, as any MLflow client does).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.procs import ManagedProcess, free_port, running

_CLIENT = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
action, name = sys.argv[2], sys.argv[3]
if action == "alias":
    mlflow.MlflowClient().set_registered_model_alias(name, sys.argv[4], sys.argv[5])
    print(json.dumps({}))
    sys.exit(0)
mlflow.set_experiment("mlrollout-tests")
with mlflow.start_run() as run:
    if action == "onnx":
        import onnx
        info = mlflow.onnx.log_model(onnx.load(sys.argv[4]), name="model", registered_model_name=name)
    else:
        from sklearn.datasets import load_wine
        from sklearn.linear_model import LogisticRegression
        X, y = load_wine(return_X_y=True)
        info = mlflow.sklearn.log_model(LogisticRegression(max_iter=50).fit(X, y), name="model",
                                        registered_model_name=name)
print(json.dumps({"version": str(info.registered_model_version), "run_id": run.info.run_id}))
"""


@dataclass(frozen=True)
class BasicAuth:
    username: str
    password: str = field(repr=False)


@dataclass
class MlflowServer:
    process: ManagedProcess
    auth: BasicAuth | None = None

    @property
    def url(self) -> str:
        return self.process.url

    def _client(self, *args: str) -> dict[str, str]:
        env = dict(os.environ)
        if self.auth is not None:
            env |= {"MLFLOW_TRACKING_USERNAME": self.auth.username, "MLFLOW_TRACKING_PASSWORD": self.auth.password}
        done = subprocess.run(
            [sys.executable, "-c", _CLIENT, self.url, *args], capture_output=True, text=True, timeout=300, check=False,
            env=env,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"mlflow client failed ({done.returncode}):\n{done.stderr[-3000:]}")
        result: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def register_onnx(self, name: str, path: Path) -> tuple[str, str]:
        out = self._client("onnx", name, str(path))
        return out["version"], out["run_id"]

    def register_sklearn(self, name: str) -> tuple[str, str]:
        out = self._client("sklearn", name)
        return out["version"], out["run_id"]

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._client("alias", name, alias, version)


_AUTH_INI = """[mlflow]
default_permission = READ
database_uri = sqlite:///{root}/auth.db
admin_username = {username}
admin_password = {password}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
"""


@contextlib.contextmanager
def run_mlflow(auth: BasicAuth | None = None) -> Iterator[MlflowServer]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="mlrollout-mlflow-") as root:
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
            "--artifacts-destination", f"{root}/artifacts",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ]  # fmt: skip
        env: dict[str, str] = {}
        if auth is not None:
            ini = Path(root) / "auth.ini"
            ini.write_text(_AUTH_INI.format(root=root, username=auth.username, password=auth.password))
            cmd += ["--app-name", "basic-auth"]
            # the auth app's config, and the static key its CSRF protection insists on
            env = {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
        with running(cmd, port, "/health", prefix="mlrollout-mlflow-", env=env, timeout=180) as process:
            yield MlflowServer(process, auth)
