"""Run a real Prometheus (the Debian ``prometheus`` binary) for tests, on loopback, with its own config.

Stable API (the operator's tests may reuse it):

- ``run_prometheus(targets, ...)``: context manager yielding a ready :class:`PrometheusProcess` that scrapes
  ``targets`` (``host:port`` strings, ``/metrics``) every ``scrape_interval``; storage in a temporary
  directory; always stopped (SIGTERM, then SIGKILL) and cleaned up on exit.
- ``start_prometheus(...)`` / ``PrometheusProcess.stop()``: the same without the context manager.
- ``PrometheusProcess.set_targets(targets)``: change the scraped targets at run time (file-based service
  discovery; Prometheus notices the rewrite within a second or two).
- ``PrometheusProcess.query(promql)`` and ``wait_for(promql, predicate, timeout)``: instant queries over
  HTTP with the standard library, for readiness checks in tests.
- ``PrometheusProcess.api(path, params)``: any GET of the HTTP API as ``(status, parsed body)``, a 4xx
  included (a query that does not parse is a 400 whose body says why).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.procs import free_port, http_status, terminate

DEFAULT_READY_TIMEOUT = 90.0
JOB = "mlrollout"


def prometheus_binary() -> str:
    """Path of the ``prometheus`` binary (Debian package ``prometheus``; see scripts/system-deps)."""
    path = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(path).exists():
        raise FileNotFoundError("the prometheus binary is missing: install the Debian package (make deps)")
    return path


def _config(scrape_interval: str, targets_file: Path) -> str:
    return json.dumps(
        {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "scrape_interval": scrape_interval,
                    "scrape_timeout": scrape_interval,
                    "metrics_path": "/metrics",
                    # keep the labels our processes set themselves (track, revision, namespace, ...)
                    "honor_labels": True,
                    "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
                }
            ],
        },
        indent=2,
    )


@dataclass
class PrometheusProcess:
    """A running Prometheus and its files."""

    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def targets_file(self) -> Path:
        return self.workdir / "targets.json"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.proc.poll() is None

    def set_targets(self, targets: Sequence[str]) -> None:
        """Atomically replace the scraped ``host:port`` list."""
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": list(targets), "labels": {}}]))
        os.replace(tmp, self.targets_file)

    def query(self, promql: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Result of an instant query (raises on HTTP or API errors: this is test plumbing)."""
        status, body = self.api("query", [("query", promql)], timeout)
        if status != 200 or body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def api(self, path: str, params: Sequence[tuple[str, str]], timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
        """``GET /api/v1/<path>`` with ``params``: the HTTP status and the JSON body, errors included."""
        url = f"{self.url}/api/v1/{path}?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            with err:
                text = err.read().decode(errors="replace")
            try:
                return err.code, json.loads(text)
            except ValueError:
                return err.code, {"status": "error", "error": text}

    def value(self, promql: str) -> float | None:
        """Sum of an instant vector's values, or None when it is empty."""
        result = self.query(promql)
        return sum(float(r["value"][1]) for r in result) if result else None

    def wait_for(
        self, promql: str, predicate: Callable[[float | None], bool], timeout: float = 60.0, interval: float = 0.5
    ) -> float | None:
        """Poll ``promql`` until ``predicate(value)`` holds; raise TimeoutError with the last value."""
        deadline = time.monotonic() + timeout
        last: float | None = None
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, RuntimeError, urllib.error.URLError):
                last = self.value(promql)
                if predicate(last):
                    return last
            time.sleep(interval)
        raise TimeoutError(f"{promql!r} did not satisfy the condition within {timeout:.0f}s (last: {last})")

    def wait_scraped(self, targets: Sequence[str], timeout: float = 60.0) -> None:
        """Wait until every target has been scraped successfully (``up == 1``)."""
        for target in targets:
            self.wait_for(f'up{{job="{JOB}",instance="{target}"}}', lambda v: v == 1.0, timeout)

    def stop(self, grace: float = 15.0) -> int:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Returns the exit code."""
        return terminate(self.proc, grace)


def start_prometheus(
    targets: Sequence[str] = (),
    *,
    scrape_interval: str = "1s",
    timeout: float = DEFAULT_READY_TIMEOUT,
    attempts: int = 3,
) -> PrometheusProcess:
    """Start Prometheus on a free loopback port and wait for ``/-/ready``; the caller must ``stop()`` it."""
    binary = prometheus_binary()
    for attempt in range(attempts):
        workdir = Path(tempfile.mkdtemp(prefix="mlrollout-prometheus-"))
        (workdir / "prometheus.yml").write_text(_config(scrape_interval, workdir / "targets.json"))
        port = free_port()
        log_path = workdir / "prometheus.log"
        cmd = [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        with log_path.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
        prom = PrometheusProcess(proc, port, workdir, log_path)
        prom.set_targets(targets)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if http_status(f"{prom.url}/-/ready", timeout=1.0) == 200:
                return prom
            time.sleep(0.1)
        output = prom.output()
        prom.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        if "address already in use" in output and attempt + 1 < attempts:
            continue
        raise RuntimeError(f"prometheus did not become ready within {timeout:.0f}s:\n{output[-3000:]}")
    raise AssertionError("unreachable")


@contextlib.contextmanager
def run_prometheus(
    targets: Sequence[str] = (), *, scrape_interval: str = "1s", timeout: float = DEFAULT_READY_TIMEOUT
) -> Iterator[PrometheusProcess]:
    """A ready Prometheus for the ``with`` block; always stopped and its storage removed afterwards."""
    prom = start_prometheus(targets, scrape_interval=scrape_interval, timeout=timeout)
    try:
        yield prom
    finally:
        prom.stop()
        shutil.rmtree(prom.workdir, ignore_errors=True)
