"""Prometheus requests per analysis interval against N ModelDeployments, looks alone and batched (issue 19).

    .venv/bin/python bench/analysis_batching.py [--alone 10,100,300] [--batched 10,100,300,1000]

A real Prometheus (the Debian binary, as the component tests start it) scrapes a loopback exporter (its own
process) of every ModelDeployment's gateway and model-server series: both tracks' requests by code, latency
buckets, predictions by class, counters that grow at each scrape. The operator's own verdict source,
``PrometheusVerdicts`` (alone: ``MLROLLOUT_ANALYSIS_BATCH_WINDOW=0``, the default; batched: a window of the
reconcile interval), takes the looks, paced like the operator: each ModelDeployment's timer ticks every
``--tick`` seconds (10 s, the operator's default) at its own phase, a look is taken at a tick once the
policy's ``analysis.interval`` (30 s, the default) has passed since the last, on a pool of 8 threads
(kopf's default). Every ModelDeployment is in a canary step whose split is checked (22 queries a look
alone) and whose step started at its own time, so no two windows are equal.

After one interval of warm-up (first looks know no one to batch with), ``--intervals`` intervals are
measured: the requests Prometheus served (its own ``prometheus_http_requests_total`` for
``/api/v1/query``), the looks taken, the look latency, the CPU of this process (the analysis side) and of
Prometheus. Then, at one instant, every ModelDeployment's batched snapshot is compared with a look taken
alone for a sample of them: equal. Writes ``bench/results/analysis-batching.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import http.server
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.procs import free_port  # noqa: E402
from tests.support.prometheus import PrometheusProcess, run_prometheus  # noqa: E402

from mlrollout.analysis import AnalysisTarget, PrometheusProvider, collect_snapshot  # noqa: E402
from mlrollout.analysis.batch import LookRequest, collect_snapshots  # noqa: E402
from mlrollout.analysis.carry import StepEvidence  # noqa: E402
from mlrollout.analysis.snapshot import Split  # noqa: E402
from mlrollout.api.rolloutpolicy import RolloutPolicySpec  # noqa: E402
from mlrollout.controller.verdicts import PrometheusVerdicts  # noqa: E402
from mlrollout_serving.contract.metrics import (  # noqa: E402
    GATEWAY_DURATION,
    GATEWAY_REQUESTS,
    MODEL_DURATION,
    MODEL_PREDICTIONS,
    MODEL_REQUESTS,
)

RESULTS = ROOT / "bench" / "results" / "analysis-batching.json"
NAMESPACE = "bench"
REVISIONS = {"stable": "r1", "candidate": "r2"}
BUCKETS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "+Inf")
WORKERS = 8


def md_name(i: int) -> str:
    return f"md-{i:04d}"


# -- the exporter (its own process) ------------------------------------------------------------------------


def exposition(n: int, elapsed: float) -> bytes:
    """Every ModelDeployment's series, grown by ``elapsed`` seconds of traffic (about 5 rps per track)."""
    lines = []
    for i in range(n):
        for track, revision in REVISIONS.items():
            rate = (2.0 if track == "stable" else 0.5) * (1 + i % 7)
            total = int(rate * elapsed)
            sel = f'namespace="{NAMESPACE}",model_deployment="{md_name(i)}",track="{track}",revision="{revision}"'
            lines.append(f'{GATEWAY_REQUESTS.name}{{{sel},code="200"}} {total}')
            lines.append(f'{GATEWAY_REQUESTS.name}{{{sel},code="503"}} {total // 200}')
            lines.append(f'{MODEL_REQUESTS.name}{{{sel},code="200"}} {total}')
            for k, le in enumerate(BUCKETS):
                share = min(1.0, 0.2 + 0.1 * k) if le != "+Inf" else 1.0
                lines.append(f'{GATEWAY_DURATION.name}_bucket{{{sel},le="{le}"}} {int(total * share)}')
                lines.append(f'{MODEL_DURATION.name}_bucket{{{sel},le="{le}"}} {int(total * share)}')
            for cls in ("0", "1", "2"):
                lines.append(f'{MODEL_PREDICTIONS.name}{{{sel},output="label",class="{cls}"}} {total // 3}')
    return ("\n".join(lines) + "\n").encode()


def serve_exporter(port: int, n: int) -> None:
    started = time.time()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = exposition(n, time.time() - started)
            self.send_response(200)
            self.send_header("content-type", "text/plain; version=0.0.4")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


# -- measuring ---------------------------------------------------------------------------------------------


def served_queries(prometheus: PrometheusProcess) -> float:
    with urllib.request.urlopen(f"{prometheus.url}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def target(i: int) -> AnalysisTarget:
    return AnalysisTarget(NAMESPACE, md_name(i), REVISIONS["stable"], REVISIONS["candidate"], split=Split(0.9, 0.1))


@dataclass
class Row:
    mode: str
    n: int
    queries_per_interval: float
    looks_per_interval: float
    queries_per_look: float
    batches_per_interval: float | None
    look_p50_s: float
    look_p99_s: float
    analysis_cpu_s_per_interval: float
    prometheus_cpu_s_per_interval: float
    inconclusive_reasons: list[str]
    # batched, in the measured span: looks that read a batch taken ahead of time, looks taken alone
    looks_served_from_batches: int | None = None
    looks_taken_alone: int | None = None


def run(prometheus: PrometheusProcess, mode: str, n: int, tick: float, interval: float, intervals: int) -> Row:
    """N ModelDeployments' looks paced like the operator's timers for 1 + ``intervals`` intervals."""
    policy = RolloutPolicySpec.model_validate(
        {"strategy": {"steps": [{"canary": {"weight": 10}}]}, "analysis": {"interval": f"{interval:g}s"}}
    )
    verdicts = PrometheusVerdicts(prometheus.url, batch_ttl=tick if mode == "batched" else 0.0)
    rng = random.Random(n)
    t0 = time.time()
    step_start = [t0 - rng.uniform(60.0, 900.0) for _ in range(n)]
    last_look = [-1e18] * n
    durations: list[tuple[float, float]] = []
    reasons: dict[str, int] = {}
    lock = threading.Lock()

    def look(i: int) -> None:
        started = time.monotonic()
        now = time.time()
        result = verdicts.look(target(i), policy, max(now - step_start[i], 1.0), StepEvidence())
        with lock:
            durations.append((now, time.monotonic() - started))
            if result.verdict == "inconclusive" and result.reason.startswith("no evidence"):
                reasons[result.reason] = reasons.get(result.reason, 0) + 1

    ticks = [(t0 + tick * i / n, i) for i in range(n)]
    heapq.heapify(ticks)
    running: dict[int, Future[None]] = {}
    warm, end = t0 + interval, t0 + interval * (1 + intervals)
    marks: dict[str, tuple[float, float, float, float]] = {}
    batches_at_warm = 0
    with contextlib.closing(verdicts), ThreadPoolExecutor(WORKERS) as pool:  # closing: the batcher's thread
        while True:
            at, i = heapq.heappop(ticks)
            if "warm" not in marks and at >= warm:
                marks["warm"] = (time.time(), served_queries(prometheus), cpu_seconds(os.getpid()),
                                 cpu_seconds(prometheus.proc.pid))  # fmt: skip
                batches_at_warm = verdicts.batcher.batches if verdicts.batcher else 0
                counted_at_warm = (
                    (verdicts.batcher.counts.served, verdicts.batcher.counts.alone) if verdicts.batcher else (0, 0)
                )
            if at >= end:
                break
            time.sleep(max(0.0, at - time.time()))
            if (i not in running or running[i].done()) and time.time() - last_look[i] >= interval:
                last_look[i] = time.time()
                running[i] = pool.submit(look, i)
            heapq.heappush(ticks, (at + tick, i))
        marks["end"] = (time.time(), served_queries(prometheus), cpu_seconds(os.getpid()),
                        cpu_seconds(prometheus.proc.pid))  # fmt: skip
        batches_at_end = verdicts.batcher.batches if verdicts.batcher else 0
        counts = verdicts.batcher.counts if verdicts.batcher else None
        served, alone = (counts.served - counted_at_warm[0], counts.alone - counted_at_warm[1]) if counts else (0, 0)
        verdicts.close()  # no batches after the end mark
        # looks still queued or running are not waited for in the figures (a backlog is the finding)
        for future in running.values():
            future.cancel()
    (tw, qw, cw, pw), (te, qe, ce, pe) = marks["warm"], marks["end"]
    spans = (te - tw) / interval
    with lock:  # looks that finished inside the measured span (a look waiting for its batch counts then)
        measured = [d for when, d in durations if tw <= when + d <= te]
    looks = len(measured)
    q = (qe - qw) / spans
    batches = None if verdicts.batcher is None else (batches_at_end - batches_at_warm) / spans
    ordered = sorted(measured)
    return Row(
        mode=mode,
        n=n,
        queries_per_interval=round(q, 1),
        looks_per_interval=round(looks / spans, 1),
        queries_per_look=round((qe - qw) / max(looks, 1), 2),
        batches_per_interval=None if batches is None else round(batches, 1),
        look_p50_s=round(statistics.median(ordered), 3) if ordered else 0.0,
        look_p99_s=round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3) if ordered else 0.0,
        analysis_cpu_s_per_interval=round((ce - cw) / spans, 2),
        prometheus_cpu_s_per_interval=round((pe - pw) / spans, 2),
        inconclusive_reasons=sorted(reasons),
        looks_served_from_batches=None if counts is None else served,
        looks_taken_alone=None if counts is None else alone,
    )


def equal_at_one_instant(prometheus: PrometheusProcess, n: int, sample: int) -> dict[str, object]:
    """Every ModelDeployment's batched snapshot at one instant against ``sample`` of them taken alone."""
    provider = PrometheusProvider(prometheus.url, timeout=60)
    at = time.time() - 5.0
    looks = [LookRequest(target(i), 300.0 + i) for i in range(n)]
    batched = collect_snapshots(provider, looks, at)
    chosen = sorted(random.Random(1).sample(range(n), min(sample, n)))
    alone = [collect_snapshot(provider, looks[i].target, looks[i].window_seconds, at=at) for i in chosen]
    equal = all(batched[i] == snap for i, snap in zip(chosen, alone, strict=True))
    with_data = sum(1 for i in chosen if batched[i].error is None and batched[i].candidate.requests > 0)
    return {"n": n, "compared": len(chosen), "equal": equal, "with_data": with_data}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alone", default="10,100,300")
    parser.add_argument("--batched", default="10,100,300,1000")
    parser.add_argument("--tick", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--intervals", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--merge", action="store_true", help="keep the rows of other (mode, N) already in --out")
    parser.add_argument("--serve-exporter", nargs=2, type=int, metavar=("PORT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_exporter:
        serve_exporter(*args.serve_exporter)
        return
    sizes = [("alone", int(s)) for s in args.alone.split(",") if s] + [
        ("batched", int(s)) for s in args.batched.split(",") if s
    ]
    biggest = max(n for _, n in sizes)
    port = free_port()
    exporter = subprocess.Popen([sys.executable, __file__, "--serve-exporter", str(port), str(biggest)])
    rows: list[Row] = []
    try:
        with run_prometheus([f"127.0.0.1:{port}"], scrape_interval="5s") as prometheus:
            prometheus.wait_scraped([f"127.0.0.1:{port}"], timeout=120)
            time.sleep(12.0)  # a few scrapes, so windows have a start
            for mode, n in sizes:
                rows.append(run(prometheus, mode, n, args.tick, args.interval, args.intervals))
                print(json.dumps(asdict(rows[-1])), flush=True)
            check = equal_at_one_instant(prometheus, biggest, 50)
            print(json.dumps(check), flush=True)
    finally:
        exporter.terminate()
        exporter.wait(timeout=10)
    if args.merge and args.out.exists():
        done = {(r.mode, r.n) for r in rows}
        kept = [Row(**r) for r in json.loads(args.out.read_text())["rows"] if (r["mode"], r["n"]) not in done]
        rows = sorted(kept + rows, key=lambda r: (r.mode, r.n))
    args.out.write_text(json.dumps({
        "bench": "analysis_batching",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "tick_s": args.tick, "analysis_interval_s": args.interval, "measured_intervals": args.intervals,
        "workers": WORKERS, "look": "canary step with its split checked (22 queries alone)",
        "series_per_md": len(exposition(1, 1.0).splitlines()),
        "rows": [asdict(r) for r in rows],
        "batched_equals_alone": check,
    }, indent=2) + "\n")  # fmt: skip
    print(" | ".join(("mode", "N", "queries/interval", "looks/interval", "queries/look", "batches/interval",
                      "look p50/p99 s", "analysis CPU s/interval", "Prometheus CPU s/interval")))  # fmt: skip
    for r in rows:
        print(" | ".join(str(x) for x in (r.mode, r.n, r.queries_per_interval, r.looks_per_interval,
              r.queries_per_look, r.batches_per_interval, f"{r.look_p50_s}/{r.look_p99_s}",
              r.analysis_cpu_s_per_interval, r.prometheus_cpu_s_per_interval)))  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
