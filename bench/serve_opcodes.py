"""Python work per request, before and after a change: bytecodes and calls, counted, not timed.

On a shared 2-core machine wrk's numbers move by 10-20 % between runs, more than a small change to the hot
path costs. This counts instead what the interpreter executes for one request: a wine-row inference
request fed to the HTTP layer in-process (``HttpConnection.data_received``, the real httptools parser and,
with ``--app``, the real application, codec, batcher and metrics), through a trace function that sees every
opcode, Python call and C call. The counts are exact and the same on every run.

Usage (from the repository root):

    .venv/bin/python bench/serve_opcodes.py --base main           # the HTTP layer, trivial handler
    .venv/bin/python bench/serve_opcodes.py --base main --app     # the whole synchronous request path
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def count(app: bool, n: int = 1000) -> dict[str, Any]:
    """Run in a child whose PYTHONPATH picks the server version; prints JSON."""
    from mlrollout_serving.server import config, loading
    from mlrollout_serving.server import http as h
    from mlrollout_serving.server.app import App
    from mlrollout_serving.server.metrics import ServerMetrics

    sys.path.insert(0, str(ROOT))
    from tests.support.models import wine

    class Transport:
        def write(self, data: bytes) -> None: ...
        def write_eof(self) -> None: ...
        def close(self) -> None: ...
        def abort(self) -> None: ...
        def pause_reading(self) -> None: ...
        def resume_reading(self) -> None: ...

    model = wine()
    row = model.samples[0].tolist()
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 13], "data": row}]}).encode()
    head = b"POST /v2/models/wine/infer HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n"
    request = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    counts: collections.Counter[str] = collections.Counter()
    per_function: collections.Counter[str] = collections.Counter()

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        counts[event] += 1
        if event == "opcode":
            per_function[f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}"] += 1
        return tracer

    def profiler(frame: Any, event: str, arg: Any) -> None:
        if event == "c_call":
            counts["c_call"] += 1

    async def run() -> None:
        settings = config.parse(["--model-uri", model.uri, "--model-name", "wine"], {})
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            application = App(settings, ServerMetrics(settings.identity, "wine", "1"), pool)
            application.set_model(loading.load(model.path.read_bytes(), model.sha256, 1, 1, 64), None)
            reply = h.Reply(200, b"{}")
            handler = application.handle if app else (lambda req: reply)
            try:
                server = h.HttpServer(handler, application.too_large, 1 << 24)
            except TypeError:  # versions before the limits took a keep-alive timeout
                server = h.HttpServer(handler, application.too_large, 1 << 24, 75.0)  # type: ignore[arg-type]
            conn = h.HttpConnection(server)
            conn.connection_made(Transport())  # type: ignore[arg-type]
            for _ in range(300):  # warm-up: metrics queues, caches
                conn.data_received(request)
                await asyncio.sleep(0)
            counts.clear()
            per_function.clear()
            for _ in range(n):
                sys.settrace(tracer)
                sys.setprofile(profiler)
                conn.data_received(request)
                sys.settrace(None)
                sys.setprofile(None)
                await asyncio.sleep(0)

    asyncio.run(run())
    return {
        "opcodes": counts["opcode"] / n,
        "python_calls": counts["call"] / n,
        "c_calls": counts["c_call"] / n,
        "per_function": {k: v / n for k, v in per_function.most_common()},
    }


def measure(source: Path | None, app: bool) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(source)} if source else dict(os.environ)
    code = f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import serve_opcodes, json; "
    code += f"print(json.dumps(serve_opcodes.count({app})))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="main", help="git revision to compare against")
    p.add_argument("--app", action="store_true", help="the whole request path, not only the HTTP layer")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from serve_ab import export

    with tempfile.TemporaryDirectory(prefix="serve-opcodes-") as tmp:
        base = measure(export(args.base, Path(tmp)), args.app)
    new = measure(None, args.app)
    for key in ("opcodes", "python_calls", "c_calls"):
        print(f"{key:>13}: base {base[key]:7.1f}  new {new[key]:7.1f}  ({new[key] - base[key]:+.1f})")
    functions = sorted(set(base["per_function"]) | set(new["per_function"]))
    for name in functions:
        b, n = base["per_function"].get(name, 0.0), new["per_function"].get(name, 0.0)
        if abs(n - b) >= 1:
            print(f"  {name:<45} {b:6.1f} -> {n:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
