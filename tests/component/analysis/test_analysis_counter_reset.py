"""A model server restarted mid-window (a counter reset) is counted through ``increase()``, not as a drop."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.models import BuiltModel
from tests.support.procs import free_port, server_command, wait_http_ok
from tests.support.prometheus import run_prometheus

from mlrollout.analysis import AnalysisTarget, PrometheusProvider, collect_snapshot

pytestmark = pytest.mark.component

LABELS = {"namespace": "reset-test", "model_deployment": "wine", "track": "stable", "revision": "r1"}


class Server:
    """A model server on a fixed port, so it can be restarted where Prometheus expects it."""

    def __init__(self, model: BuiltModel, port: int) -> None:
        self.cmd = server_command(model.uri, model.sha256, port, name="wine", labels=LABELS)
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        fd, log = tempfile.mkstemp(prefix="reset-server-", suffix=".log")
        os.close(fd)
        self.log = Path(log)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT)
        wait_http_ok(f"http://127.0.0.1:{self.port}/v2/health/ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def server(wine_model: BuiltModel) -> Iterator[Server]:
    s = Server(wine_model, free_port())
    try:
        s.start()
        yield s
    finally:
        s.stop()
        s.log.unlink(missing_ok=True)


def send(port: int, model: BuiltModel, count: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for i in range(count):
            row = model.samples[i % len(model.samples)]
            body = json.dumps({"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32",
                                           "data": row.tolist()}]})  # fmt: skip
            conn.request("POST", "/v2/models/wine/infer", body, {"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
    finally:
        conn.close()


def test_restart_inside_the_window_is_counted(server: Server, wine_model: BuiltModel) -> None:
    target_addr = f"127.0.0.1:{server.port}"
    total = 'sum(mlrollout_model_inference_requests_total{namespace="reset-test"})'
    with run_prometheus([target_addr]) as prom:
        prom.wait_scraped([target_addr], timeout=120)
        send(server.port, wine_model, 100)  # before the window
        prom.wait_for(total, lambda v: v == 100)
        time.sleep(2.0)
        started = time.time()
        time.sleep(2.0)
        send(server.port, wine_model, 50)
        prom.wait_for(total, lambda v: v == 150)
        server.stop()
        server.start()  # the counter starts again from zero
        send(server.port, wine_model, 30)
        prom.wait_for(total, lambda v: v == 30)
        time.sleep(2.0)
        target = AnalysisTarget("reset-test", "wine", "r1", "r2", "model", None)
        snap = collect_snapshot(PrometheusProvider(prom.url), target, time.time() - started)
        naive = prom.value(
            f"{total} - sum(mlrollout_model_inference_requests_total offset {time.time() - started:.0f}s)"
        )
    assert snap.error is None, snap
    assert naive is not None and naive < 0, naive  # what a plain "now minus then" would have said
    # 50 + 30 requests inside the window. increase() only ever scales its sum up (extrapolating to the
    # window edges, at most about one scrape interval of a window of ~10-20 s), so 80 to about 100.
    assert 78 <= snap.stable.requests <= 100, snap
    assert snap.stable.errors == 0
