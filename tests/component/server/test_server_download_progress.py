"""Download progress from a slow HTTP source: bounded log lines and the readiness reason while downloading,
both in the format the operator parses (contract.startup).

A real ONNX model of 4 MiB is served by a loopback HTTP server that trickles it over about 8 s; the model
server reports at most one progress line per PROGRESS_SECONDS and answers /v2/health/ready with a 503
whose reason says how far the download is, then serves the model.
"""

from __future__ import annotations

import http.server
import json
import re
import time
from pathlib import Path

import pytest
from tests.component.server.conftest import get, infer_body, post
from tests.support.httpd import serving
from tests.support.models import BuiltModel, padded, sha256_file
from tests.support.procs import ServerProcess, free_port, server_command, spawn
from tests.support.waiting import wait_for

from mlrollout_serving.contract import startup
from mlrollout_serving.contract.startup import Stage
from mlrollout_serving.server.download import PROGRESS_SECONDS

pytestmark = pytest.mark.component

PIECE = 256 * 1024
PAUSE = 0.5


def _trickling(body: bytes) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for start in range(0, len(body), PIECE):
                self.wfile.write(body[start : start + PIECE])
                self.wfile.flush()
                time.sleep(PAUSE)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def _reason(port: int) -> str | None:
    try:
        status, body = get(port, "/v2/health/ready", timeout=2)
    except OSError:
        return None
    return str(json.loads(body or b"{}").get("reason")) if status == 503 else None


def test_a_slow_download_reports_bounded_progress_and_a_readiness_reason(
    wine_model: BuiltModel, tmp_path: Path
) -> None:
    path = padded(wine_model, 4 << 20)
    body = path.read_bytes()
    total_mib = f"{len(body) / (1 << 20):.1f} MiB"
    with serving(_trickling(body)) as url:
        uri = f"{url}/models/wine.onnx"
        port = free_port()
        proc, log = spawn(server_command(uri, sha256_file(path), port, name="wine"))
        server = ServerProcess(proc=proc, port=port, log_path=log)
        try:
            started = time.monotonic()
            reason = wait_for(
                lambda: r if (r := _reason(port)) and " MiB of " in r else None,
                timeout=60,
                what="a readiness reason with the download's progress",
            )
            assert re.fullmatch(rf"downloading {re.escape(uri)}: \d+\.\d MiB of {total_mib} \(\d+%\)", reason), reason
            wait_for(lambda: get(port, "/v2/health/ready", timeout=2)[0] == 200, timeout=60, what="ready")
            elapsed = time.monotonic() - started
            status, _, _ = post(port, "/v2/models/wine/infer", infer_body(wine_model, wine_model.samples[:2]))
            assert status == 200
            lines = [line for line in server.output().splitlines() if f"downloading {uri}: " in line]
            assert lines and all(re.search(r"MiB of .* \(\d+%\), [\d.]+ MiB/s$", line) for line in lines), lines
            assert len(lines) <= elapsed / PROGRESS_SECONDS + 1, lines  # bounded, not one per chunk
            assert f"downloaded {uri} ({total_mib})" in server.output()
            # the operator reads these lines back from the pod's log: every one parses with its parser
            parsed = [found for line in server.output().splitlines() if (found := startup.parse(line))]
            stages = [p.stage for p in parsed]
            assert stages == [Stage.DOWNLOADING] * len(lines) + [Stage.DOWNLOADED, Stage.LOADING], stages
            assert all(p.uri == uri for p in parsed)
            percents = [p.percent or 0 for p in parsed if p.stage is Stage.DOWNLOADING]
            assert all(p.percent is not None for p in parsed if p.stage is Stage.DOWNLOADING)
            assert percents == sorted(percents) and all(p.total_mib == float(total_mib.split()[0]) for p in parsed[:-2])
            from_probe = startup.parse(reason)  # the 503's reason is the same message without the rate
            assert from_probe is not None and from_probe.uri == uri and from_probe.percent is not None
        finally:
            server.stop()
            log.unlink(missing_ok=True)
