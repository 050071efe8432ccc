"""Start real ``mlrollout-serve`` processes for tests, and small network helpers.

Stable API (other test suites import it):

- ``free_port() -> int``
- ``wait_http_ok(url, timeout=...) -> None``
- ``serve_model(model, ...)``: context manager yielding a :class:`ServerProcess` once
  ``/v2/health/ready`` answers 200; always stops the process on exit (SIGTERM, then SIGKILL).
- ``start_server(...)`` / ``ServerProcess.stop()``: the same without the context manager.
- ``run_server_until_exit(...)``: run a server that is expected to exit (e.g. sha256 mismatch) and
  return its exit code and output.
- ``running(cmd, port, ready_path)``: any other test process (gateways, fake upstreams): a context
  manager yielding a :class:`ManagedProcess` once ``ready_path`` answers 200, always stopped on exit;
  ``spawn`` and ``wait_ready`` are its two halves.

The server runs as ``python -m mlrollout_serving.server`` with the test interpreter, which is the same
program as the ``mlrollout-serve`` console script but needs no reinstall after code changes. Output goes
to a log file rather than a pipe, so a chatty server can never block on a full pipe.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

DEFAULT_READY_TIMEOUT = 90.0
LABEL_FLAGS = {
    "namespace": "--namespace",
    "model_deployment": "--model-deployment",
    "track": "--track",
    "revision": "--revision",
}


def terminate(proc: subprocess.Popen[bytes], grace: float = 15.0) -> int:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


class ModelLike(Protocol):
    """Anything with a path and digest, e.g. :class:`tests.support.models.BuiltModel`."""

    @property
    def path(self) -> Path: ...

    @property
    def sha256(self) -> str: ...


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the caller retries if it is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """Status code of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status: int = resp.status
            return status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def wait_http_ok(url: str, timeout: float = DEFAULT_READY_TIMEOUT, interval: float = 0.05) -> None:
    """Poll ``url`` until it answers 200; raise TimeoutError naming the last status."""
    deadline = time.monotonic() + timeout
    last: int | None = None
    while time.monotonic() < deadline:
        last = http_status(url)
        if last == 200:
            return
        time.sleep(interval)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f}s (last status: {last})")


@dataclass
class ManagedProcess:
    """A child process of a test, listening on a loopback port, its output in a log file."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    host: str = "127.0.0.1"  # another loopback address lets two processes share a port (two replicas)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def stop(self, grace: float = 15.0) -> int:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Returns the exit code."""
        return terminate(self.proc, grace)

    def kill(self) -> None:
        """SIGKILL at once (a crash, as far as its peers can tell)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class ServerProcess(ManagedProcess):
    """A running model server."""

    args: list[str] = field(default_factory=list)

    @property
    def host_port(self) -> str:
        """``127.0.0.1:PORT``, the form tritonclient takes."""
        return f"127.0.0.1:{self.port}"


def spawn(
    cmd: Sequence[str], *, prefix: str = "mlrollout-test-", env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``cmd`` with unbuffered output into a fresh log file (never a pipe: a chatty child cannot
    block on it); the caller stops the process and removes the log."""
    fd, log = tempfile.mkstemp(prefix=prefix, suffix=".log")
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with os.fdopen(fd, "wb") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, env=full_env)
    return proc, Path(log)


def poll_ready(process: ManagedProcess, path: str, timeout: float = DEFAULT_READY_TIMEOUT) -> bool:
    """Poll ``GET path`` until it answers 200 (True), or the process exits or time runs out (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            return False
        if http_status(process.url + path, timeout=1.0) == 200:
            return True
        time.sleep(0.05)
    return False


def wait_ready(process: ManagedProcess, path: str, timeout: float = DEFAULT_READY_TIMEOUT) -> None:
    """Like :func:`poll_ready`, but a process that never got ready is stopped and reported."""
    if poll_ready(process, path, timeout):
        return
    code = process.stop()
    raise RuntimeError(f"{process.proc.args!r} not ready within {timeout:.0f}s (exit code {code}):\n{process.tail()}")


@contextlib.contextmanager
def running(
    cmd: Sequence[str],
    port: int,
    ready_path: str,
    *,
    prefix: str = "mlrollout-test-",
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_READY_TIMEOUT,
    host: str = "127.0.0.1",
) -> Iterator[ManagedProcess]:
    """Run ``cmd`` (listening on ``host:port``) for the ``with`` block once ``ready_path`` answers 200;
    always stopped afterwards, its log removed."""
    proc, log = spawn(cmd, prefix=prefix, env=env)
    process = ManagedProcess(proc, port, log, host)
    try:
        wait_ready(process, ready_path, timeout)
        yield process
    finally:
        process.stop()
        log.unlink(missing_ok=True)


def server_command(
    model_uri: str,
    sha256: str | None,
    port: int,
    *,
    name: str = "model",
    version: str = "1",
    labels: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    wrapper: Sequence[str] = (),
) -> list[str]:
    """The argument vector of a server process (``wrapper`` goes first, e.g. ``prlimit --nofile=256``)."""
    cmd = [*wrapper, sys.executable, "-m", "mlrollout_serving.server", "--model-uri", model_uri, "--port", str(port)]
    cmd += ["--host", "127.0.0.1", "--model-name", name, "--model-version", version]
    if sha256 is not None:
        cmd += ["--sha256", sha256]
    for key, value in (labels or {}).items():
        cmd += [LABEL_FLAGS[key], value]
    cmd += list(extra_args)
    return cmd


def _uri(model: ModelLike | str) -> tuple[str, str | None]:
    if isinstance(model, str):
        return model, None
    return model.path.as_uri(), model.sha256


def start_server(
    model: ModelLike | str,
    *,
    sha256: str | None = None,
    name: str = "model",
    version: str = "1",
    labels: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_READY_TIMEOUT,
    attempts: int = 3,
    wrapper: Sequence[str] = (),
) -> ServerProcess:
    """Start a server and wait until it is ready; the caller must ``stop()`` it.

    ``model`` is a built model (its digest is passed unless ``sha256`` overrides it) or a URI string.
    A port taken by someone else between ``free_port()`` and bind is retried on a new port.
    """
    uri, digest = _uri(model)
    digest = sha256 if sha256 is not None else digest
    for attempt in range(attempts):
        port = free_port()
        cmd = server_command(
            uri, digest, port, name=name, version=version, labels=labels, extra_args=extra_args, wrapper=wrapper
        )
        proc, log = spawn(cmd, prefix="mlrollout-serve-", env=env)
        server = ServerProcess(proc=proc, port=port, log_path=log, args=cmd)
        if poll_ready(server, "/v2/health/ready", timeout):
            return server
        server.stop()
        if "Address already in use" in server.output() and attempt + 1 < attempts:
            continue
        raise RuntimeError(
            f"model server did not become ready within {timeout:.0f}s "
            f"(exit code {proc.returncode}); output tail:\n{server.tail()}"
        )
    raise AssertionError("unreachable")


@contextlib.contextmanager
def serve_model(
    model: ModelLike | str,
    *,
    sha256: str | None = None,
    name: str = "model",
    version: str = "1",
    labels: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_READY_TIMEOUT,
    wrapper: Sequence[str] = (),
) -> Iterator[ServerProcess]:
    """Run a ready server for the ``with`` block; always stopped afterwards."""
    server = start_server(
        model,
        sha256=sha256,
        name=name,
        version=version,
        labels=labels,
        extra_args=extra_args,
        env=env,
        timeout=timeout,
        wrapper=wrapper,
    )
    try:
        yield server
    finally:
        server.stop()
        server.log_path.unlink(missing_ok=True)


def run_server_until_exit(
    model: ModelLike | str,
    *,
    sha256: str | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_READY_TIMEOUT,
) -> tuple[int, str, bool]:
    """Run a server expected to refuse to start.

    Returns ``(exit code, output, was_ever_ready)``; a process still running after ``timeout`` is killed
    and reported with its (negative) exit code.
    """
    uri, digest = _uri(model)
    digest = sha256 if sha256 is not None else digest
    port = free_port()
    proc, log = spawn(server_command(uri, digest, port, extra_args=extra_args), prefix="mlrollout-serve-", env=env)
    server = ServerProcess(proc=proc, port=port, log_path=log)
    ready = False
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            ready = ready or http_status(f"{server.url}/v2/health/ready", timeout=0.5) == 200
            time.sleep(0.05)
        code = server.stop(grace=5.0)
        return code, server.output(), ready
    finally:
        log.unlink(missing_ok=True)


def send_inferences(port: int, rows: Any, count: int, rows_per_request: int) -> Iterator[int]:
    """``count`` sequential wine inferences of ``rows_per_request`` rows (cycling through ``rows``) to
    ``127.0.0.1:port`` on one keep-alive connection; yields each answer's status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for i in range(count):
            batch = rows[[(i * rows_per_request + k) % len(rows) for k in range(rows_per_request)]]
            body = json.dumps({"inputs": [{"name": "input", "shape": list(batch.shape), "datatype": "FP32",
                                           "data": batch.ravel().tolist()}]})  # fmt: skip
            conn.request("POST", "/v2/models/wine/infer", body, {"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            yield resp.status
    finally:
        conn.close()
