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
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
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


@dataclass
class MlflowServer:
    process: ManagedProcess

    @property
    def url(self) -> str:
        return self.process.url

    def _client(self, *args: str) -> dict[str, str]:
        done = subprocess.run(
            [sys.executable, "-c", _CLIENT, self.url, *args], capture_output=True, text=True, timeout=300, check=False
        )
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


@contextlib.contextmanager
def run_mlflow() -> Iterator[MlflowServer]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="mlrollout-mlflow-") as root:
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
            "--artifacts-destination", f"{root}/artifacts",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ]  # fmt: skip
        with running(cmd, port, "/health", prefix="mlrollout-mlflow-", timeout=180) as process:
            yield MlflowServer(process)
