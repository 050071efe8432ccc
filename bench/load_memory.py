"""Peak memory of the model server while it loads a large model: is a model in memory once, or twice?

Issue #18: "a large model must not need twice its size in memory". The anchor is the naive loader: read
the whole file into a ``bytes`` object, then ``onnxruntime.InferenceSession(bytes)`` (the bytes and the
session's copy are alive together). Ours is the real model server (``mlrollout-serve``), the model
fetched by its download loop from ``file://`` (hashed in place), ``http://`` (a loopback server),
``s3://`` (moto's server) and ``gs://`` (gcp-storage-emulator), streamed to disk and loaded by
onnxruntime from the path.

Each run is a fresh process; its peak resident set (``VmHWM`` from /proc, read once it is ready) minus
the same process's peak with a tiny model (its fixed cost: Python, onnxruntime, the server) is what
loading the model cost. Medians over ``--repeats``; the ratio is that cost over the model's size
(1.0 = in memory once; about 2.0 = twice).

Usage (from the repository root):

    .venv/bin/python bench/load_memory.py [--mib 160] [--repeats 3]

Results: a table on stdout and bench/results/load-memory.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import models  # noqa: E402
from tests.support.gcs import run_gcs  # noqa: E402
from tests.support.httpd import QuietHandler, serving  # noqa: E402
from tests.support.procs import serve_model  # noqa: E402
from tests.support.s3 import run_s3  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "load-memory.json"
MIB = 1 << 20

ANCHOR = """
import sys, onnxruntime as ort
data = open(sys.argv[1], "rb").read()
session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
print(next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")))
"""


def hwm(pid: int) -> int:
    """The process's peak resident set in bytes."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


def anchor(path: Path) -> int:
    out = subprocess.run([sys.executable, "-c", ANCHOR, str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.strip())


def server(uri: str, sha256: str, env: dict[str, str] | None = None) -> int:
    with serve_model(uri, sha256=sha256, env=env, timeout=300) as proc:
        return hwm(proc.proc.pid)


def median_of(repeats: int, run: Callable[[], int]) -> tuple[float, list[int]]:
    values = [run() for _ in range(repeats)]
    return statistics.median(values), values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=160, help="size of the large model's padding, MiB")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    small = models.wine()
    large_path = models.padded(small, args.mib * MIB)
    large_sha = models.sha256_file(large_path)
    size = large_path.stat().st_size
    rows: dict[str, Any] = {}

    def record(name: str, big: Callable[[], int], tiny: Callable[[], int]) -> None:
        peak, peaks = median_of(args.repeats, big)
        base, bases = median_of(args.repeats, tiny)
        rows[name] = {
            "peak_mib": peak / MIB,
            "fixed_mib": base / MIB,
            "model_cost_mib": (peak - base) / MIB,
            "ratio_to_model_size": (peak - base) / size,
            "peaks": peaks,
            "fixed": bases,
        }
        cost = peak - base
        line = f"{name:<28} peak {peak / MIB:8.1f} MiB  fixed {base / MIB:7.1f}  model cost {cost / MIB:8.1f} MiB"
        print(f"{line}  = {cost / size:.2f} x model", flush=True)

    record("anchor: read bytes, load", lambda: anchor(large_path), lambda: anchor(small.path))
    record("ours: file://", lambda: server(large_path.as_uri(), large_sha), lambda: server(small.uri, small.sha256))
    with serving(lambda *a, **k: QuietHandler(*a, directory=str(large_path.parent), **k)) as url:
        record(
            "ours: http://",
            lambda: server(f"{url}/{large_path.name}", large_sha),
            lambda: server(f"{url}/{small.path.name}", small.sha256),
        )
    with run_s3() as s3:
        big_uri, small_uri = s3.put("models", "large.onnx", large_path), s3.put("models", "small.onnx", small.path)
        env = s3.env()
        record("ours: s3://", lambda: server(big_uri, large_sha, env), lambda: server(small_uri, small.sha256, env))
    with run_gcs() as gcs:
        big_uri, small_uri = gcs.put("models", "large.onnx", large_path), gcs.put("models", "small.onnx", small.path)
        env = gcs.env()
        record("ours: gs://", lambda: server(big_uri, large_sha, env), lambda: server(small_uri, small.sha256, env))

    report = {"model_mib": size / MIB, "repeats": args.repeats, "results": rows}
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"model {size / MIB:.1f} MiB; wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
