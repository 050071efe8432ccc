"""What feedback costs the gateway (issue #14): minting ids, taking labels, inference beside a label flood.

    .venv/bin/python bench/gateway_bench.py --feedback [--duration 5] [--repeats 7] [--profile]

One real model server (the wine classifier, `mlrollout-serve`) behind two `mlrollout-gateway` processes with
the same 90/10 table, both pinned to one core: one without `--feedback-keys` (answers carry no id) and one
with (every answer is read and gets a signed id). The model server, wrk and the other clients share the
other core. CPU time of a gateway comes from the scheduler (`/proc/<pid>/task/*/schedstat`, nanoseconds),
not from clock ticks: a 10 ms tick is ~3 µs per request in a 5 s run at c=1, the size of what is measured.

1. Minting: wrk against each gateway, interleaved (the order alternates per repeat), at each concurrency;
   CPU µs per request for both and the paired difference (with - without) per repeat, median over repeats.
2. Ingestion: wrk POSTs labels to `/feedback` on the gateway with keys, every request with an id never sent
   before (minted here with the same key, the Lua script walks a file of them; the gateway's counters
   confirm each was counted, not refused as a replay). Labels/s and CPU µs per label. Then the same ids
   again: the replay refusal (409), measured separately.
3. Inference beside a label flood: a steady client (a fixed rate on one keep-alive connection) measures
   inference latency through the gateway with and without a wrk label flood on the same gateway, and as a
   control directly at the model server with and without that flood (the flood's client shares the model
   server's core: that part of any delay is not the gateway's event loop). Conditions interleaved.
4. Micro-benchmarks (timeit, in this process, on the gateway's core): `Feedback.stamp` on a real answer of
   the model server and its parts, `Feedback.receive` of a valid label and of a replay.

Results: a table on stdout and bench/results/feedback.json (`--profile`: bench/results/feedback-profile.txt).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict
from itertools import count
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.gateway_bench import (  # noqa: E402
    Proc,
    Run,
    median,
    parse_wrk,
    pin,
    profile_gateway,
    route_table,
    running,
    wait_ok,
    wrk,
    wrk_command,
    wrk_script,
)
from bench.hostile_load import Steady, steady_client  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tests.support.procs import free_port  # noqa: E402

from mlrollout_serving.contract import metrics as series  # noqa: E402
from mlrollout_serving.contract.feedback import FeedbackKeys, Token, mint, verify  # noqa: E402
from mlrollout_serving.gateway.feedback import (  # noqa: E402
    Feedback,
    FeedbackConfig,
    check,
    inject,
    load_keys,
    predictions_of,
)

RESULTS = ROOT / "bench" / "results" / "feedback.json"
PROFILE_OUT = ROOT / "bench" / "results" / "feedback-profile.txt"
INFER = "/v2/models/wine/infer"
FEEDBACK = "/v2/models/wine/feedback"
JSON_HEADERS = {"Content-Type": "application/json"}


class ExactProc(Proc):
    """A Python process whose CPU time is the scheduler's sum over its threads, in nanoseconds."""

    def cpu_seconds(self) -> float:
        total = 0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9


class Ids:
    """Label bodies for `/feedback`, each with an id minted here with the gateway's key and never used twice
    (a fresh nonce each), for one-row answers of the wine classifier (3 classes) served by stable."""

    def __init__(self, keys: FeedbackKeys, revision: str = "") -> None:
        self.keys = keys
        self.revision = revision
        self._nonces = count(int.from_bytes(os.urandom(6), "little") << 16)

    def bodies(self, n: int) -> list[bytes]:
        now = int(time.time())
        out = []
        for _ in range(n):
            nonce = next(self._nonces)
            token = Token(track="stable", revision=self.revision, issued=now, nonce=nonce, replica=0,
                          predictions=("0",), classes=True, class_count=3)  # fmt: skip
            out.append(b'{"feedback_id":"%s","labels":[%d]}' % (mint(self.keys, token).encode(), nonce % 3))
        return out

    def script(self, tmp: Path, name: str, n: int) -> tuple[Path, list[bytes]]:
        """A wrk script POSTing ``n`` fresh label bodies in order (then again from the first: replays)."""
        bodies = self.bodies(n)
        return replay_script(tmp, name, bodies), bodies


def replay_script(tmp: Path, name: str, bodies: list[bytes]) -> Path:
    data = tmp / f"{name}.bodies"
    data.write_bytes(b"\n".join(bodies) + b"\n")
    script = tmp / f"{name}.lua"
    script.write_text(
        f"""local bodies = {{}}
for line in io.lines("{data}") do bodies[#bodies + 1] = line end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
"""
    )
    return script


def feedback_counts(base: str) -> dict[str, float]:
    """Labels counted and feedback refused (by reason) so far, from the gateway's own series."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    counts: dict[str, float] = {"counted": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == series.GATEWAY_FEEDBACK_LABELS.name:
                counts["counted"] += sample.value
            elif sample.name == series.GATEWAY_FEEDBACK_REFUSED.name:
                reason = "refused_" + sample.labels["reason"]
                counts[reason] = counts.get(reason, 0.0) + sample.value
    return counts


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    return {k: int(v - before.get(k, 0.0)) for k, v in after.items() if v - before.get(k, 0.0)}


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def post(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, body, JSON_HEADERS)
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.status, resp.read()


# -- 1. minting ----------------------------------------------------------------------------------------


def measure_minting(
    urls: dict[str, str], procs: dict[str, Proc], script: Path, concurrency: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    names = ("without_ids", "with_ids")
    for conc in concurrency:
        for name in names:  # warm up connections and caches
            wrk(urls[name], conc, 1, script, args.other_core, None)
        runs: dict[str, list[Run]] = {name: [] for name in names}
        for repeat in range(args.repeats):
            for name in names if repeat % 2 == 0 else names[::-1]:
                runs[name].append(wrk(urls[name], conc, args.duration, script, args.other_core, procs[name]))
        summary: dict[str, Any] = {name: _wrk_summary(rs) for name, rs in runs.items()}
        pairs = list(zip(runs["without_ids"], runs["with_ids"], strict=True))
        cpu = [w.cpu_us_per_request - o.cpu_us_per_request for o, w in pairs]  # type: ignore[operator]
        summary["paired_difference"] = {
            "cpu_us_per_request": _spread(cpu),
            "p50_ms": _spread([(w.p50 - o.p50) * 1e3 for o, w in pairs]),
            "throughput_ratio": _spread([w.rps / o.rps for o, w in pairs]),
        }
        out[f"c{conc}"] = summary
        d = summary["paired_difference"]["cpu_us_per_request"]
        print(
            f"[minting c={conc}] CPU µs/req without {summary['without_ids']['cpu_us_per_request']:.1f}, "
            f"with {summary['with_ids']['cpu_us_per_request']:.1f}; paired difference {d['median']:+.1f} "
            f"(runs {d['min']:+.1f} to {d['max']:+.1f})",
            flush=True,
        )
    return out


def _wrk_summary(runs: list[Run]) -> dict[str, Any]:
    return {
        "rps": median([r.rps for r in runs]),
        "p50_ms": median([r.p50 * 1e3 for r in runs]),
        "p99_ms": median([r.p99 * 1e3 for r in runs]),
        "cpu_us_per_request": median([r.cpu_us_per_request for r in runs]),
        "errors": sum(r.errors for r in runs),
        "runs": [asdict(r) for r in runs],
    }


# -- 2. ingestion --------------------------------------------------------------------------------------


def measure_ingestion(
    base: str, proc: Proc, ids: Ids, tmp: Path, args: argparse.Namespace
) -> tuple[dict[str, Any], dict[int, float]]:
    """Fresh labels at each concurrency, then (at the highest) the same ids again right after each run."""
    url = base + FEEDBACK
    out: dict[str, Any] = {}
    rates: dict[int, float] = {}
    top = max(args.ingest_concurrency)
    replays: list[dict[str, Any]] = []
    for conc in args.ingest_concurrency:
        warm, _ = ids.script(tmp, "labels-warm", int(args.ids_per_second))
        wrk(url, conc, 1, warm, args.other_core, None)
        runs: list[dict[str, Any]] = []
        for repeat in range(args.repeats):
            script, bodies = ids.script(tmp, "labels", int(args.ids_per_second * args.duration))
            fresh = _counted_run(base, url, conc, script, proc, args)
            runs.append(fresh)
            if conc == top:  # the ids just counted, sent again: every one is a replay (409)
                sent = bodies[: fresh["requests"] - conc]  # surely sent and answered before wrk stopped
                replays.append(_counted_run(base, url, conc, replay_script(tmp, f"replay-{repeat}", sent), proc, args))
        out[f"c{conc}"] = _ingest_summary(runs, "counted")
        rates[conc] = out[f"c{conc}"]["per_second"]
        s = out[f"c{conc}"]
        print(
            f"[ingestion c={conc}] {s['per_second']:.0f} labels/s counted (gateway CPU share "
            f"{s['gateway_cpu_share']:.2f}), {s['cpu_us_per_item']:.1f} CPU µs/label, refused {s['refused']}",
            flush=True,
        )
    out[f"replay_c{top}"] = _ingest_summary(replays, "refused_replayed")
    s = out[f"replay_c{top}"]
    print(
        f"[replays c={top}] {s['per_second']:.0f} refusals/s (409), {s['cpu_us_per_item']:.1f} CPU µs each", flush=True
    )
    return out, rates


def _counted_run(base: str, url: str, conc: int, script: Path, proc: Proc, args: argparse.Namespace) -> dict[str, Any]:
    before = feedback_counts(base)
    run = wrk(url, conc, args.duration, script, args.other_core, proc)
    delta = _delta(feedback_counts(base), before)
    return {**asdict(run), "gateway_counts": delta}


def _ingest_summary(runs: list[dict[str, Any]], outcome: str) -> dict[str, Any]:
    """Per second and CPU per item of ``outcome`` (wrk's rate times the share of requests with that outcome)."""
    per_second = [r["rps"] * r["gateway_counts"].get(outcome, 0) / r["requests"] for r in runs]
    refused = {}
    for r in runs:
        for k, v in r["gateway_counts"].items():
            if k != outcome:
                refused[k] = refused.get(k, 0) + v
    cpu = median([r["cpu_us_per_request"] for r in runs])
    return {
        "per_second": statistics.median(per_second),
        "per_second_runs": per_second,
        "cpu_us_per_item": cpu,
        # what a core of its own would take, from the CPU time each costs (the gateway's share of its pinned
        # core is below 1 while other processes run there: per_second is then bounded by the scheduler)
        "per_second_per_dedicated_core": 1e6 / cpu if cpu else None,
        "gateway_cpu_share": statistics.median(r["rps"] * r["cpu_us_per_request"] / 1e6 for r in runs),
        "p50_ms": median([r["p50"] * 1e3 for r in runs]),
        "p99_ms": median([r["p99"] * 1e3 for r in runs]),
        "refused": refused,  # anything else than the measured outcome (must be empty)
        "runs": runs,
    }


# -- 3. inference beside a flood -----------------------------------------------------------------------


def steady(url: str, body: bytes, rate: float, duration: float, core: int | None) -> dict[str, Any]:
    """The steady client of bench/hostile_load.py, in its own process: latency at a fixed request rate."""
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    client = ctx.Process(target=steady_client, args=(url, body, JSON_HEADERS, rate, duration, core, send))
    client.start()
    result = Steady(**receive.recv())
    client.join()
    return result.summary()


@contextlib.contextmanager
def flood(url: str, conc: int, duration: float, script: Path, core: int | None, proc: Proc) -> Iterator[dict[str, Any]]:
    """wrk POSTing labels for ``duration`` seconds from one second before the body of the block."""
    report: dict[str, Any] = {}
    cpu0 = proc.cpu_seconds()
    wrk_proc = subprocess.Popen(wrk_command(url, conc, duration, script, core), stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    try:
        yield report
    finally:
        out, _ = wrk_proc.communicate(timeout=duration + 30)
        run = parse_wrk(out, proc.cpu_seconds() - cpu0)
        report.update(rps=run.rps, errors=run.errors, cpu_share=run.rps * (run.cpu_us_per_request or 0.0) / 1e6)


def measure_interference(
    gateway: str, direct: str, proc: Proc, body: bytes, ids: Ids, rates: dict[int, float], tmp: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    floods = args.flood_concurrency
    conditions = [("gateway", None), *(("gateway", c) for c in floods), ("direct", None), ("direct", max(floods))]
    results: dict[str, list[dict[str, Any]]] = {_name(t, c): [] for t, c in conditions}
    flood_seconds = args.duration + 2.0
    for repeat in range(args.repeats):
        shift = repeat % len(conditions)
        for target, conc in conditions[shift:] + conditions[:shift]:
            url = (gateway if target == "gateway" else direct) + INFER
            if conc is None:
                results[_name(target, conc)].append(
                    {**steady(url, body, args.steady_rate, args.duration, args.other_core), "load": os.getloadavg()[0]}
                )
                continue
            n = int(rates.get(conc, args.ids_per_second) * 1.5 * flood_seconds) + 1000
            script, _ = ids.script(tmp, "flood", n)
            with flood(gateway + FEEDBACK, conc, flood_seconds, script, args.other_core, proc) as labels:
                latency = steady(url, body, args.steady_rate, args.duration, args.other_core)
            results[_name(target, conc)].append({**latency, "flood": labels, "load": os.getloadavg()[0]})
    out: dict[str, Any] = {}
    for name, runs in results.items():
        out[name] = {
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "failed": sum(r["failed"] for r in runs),
            "runs": runs,
        }
        if "flood" in runs[0]:
            out[name]["flood_labels_per_second"] = statistics.median(r["flood"]["rps"] for r in runs)
            out[name]["flood_gateway_cpu_share"] = statistics.median(r["flood"]["cpu_share"] for r in runs)
    for target, conc in conditions:
        if conc is None:
            continue
        quiet, busy = results[_name(target, None)], results[_name(target, conc)]
        out[_name(target, conc)]["paired_difference"] = {
            key: _spread([b[key] - q[key] for q, b in zip(quiet, busy, strict=True)]) for key in ("p50_ms", "p99_ms")
        }
    for name, s in out.items():
        extra = ""
        if "paired_difference" in s:
            d = s["paired_difference"]
            extra = f" (vs quiet p50 {d['p50_ms']['median']:+.3f}, p99 {d['p99_ms']['median']:+.3f})"
        if "flood_labels_per_second" in s:
            extra += f"; flood {s['flood_labels_per_second']:.0f} labels/s"
        print(f"[inference {name}] p50 {s['p50_ms']:.3f} ms, p99 {s['p99_ms']:.3f} ms{extra}", flush=True)
    return out


def _name(target: str, conc: int | None) -> str:
    return f"{target}_quiet" if conc is None else f"{target}_label_flood_c{conc}"


# -- 4. micro-benchmarks -------------------------------------------------------------------------------


def _timed(fn: Callable[[], object], number: int, repeats: int = 7) -> dict[str, float]:
    """µs per call: the minimum over repeats (the least disturbed) and the median."""
    per_call = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(number):
            fn()
        per_call.append((time.perf_counter() - started) / number * 1e6)
    return {"min_us": min(per_call), "median_us": statistics.median(per_call)}


def _timed_each(fn: Callable[[bytes], object], make: Callable[[], list[bytes]], repeats: int = 7) -> dict[str, float]:
    """µs per call of ``fn`` over fresh inputs (one list per repeat, made outside the timing)."""
    per_call = []
    for _ in range(repeats):
        inputs = make()
        started = time.perf_counter()
        for item in inputs:
            fn(item)
        per_call.append((time.perf_counter() - started) / len(inputs) * 1e6)
    return {"min_us": min(per_call), "median_us": statistics.median(per_call)}


def micro(answer: bytes, keys_path: Path, ids: Ids, core: int | None) -> dict[str, Any]:
    """The pure functions on this process's core, the gateway's (nothing else of the bench runs meanwhile)."""
    affinity = os.sched_getaffinity(0)
    if core is not None:
        os.sched_setaffinity(0, {core})
    try:
        feedback = Feedback(FeedbackConfig(str(keys_path)))
        assert feedback.minter is not None and feedback.keys is not None
        now = int(time.time())
        stamped = feedback.stamp("stable", "", answer, False, now)
        assert stamped is not None, "the model server's answer carries no feedback id"
        predicted = predictions_of(answer)
        assert predicted is not None
        minter, keys = feedback.minter, feedback.keys
        minted = minter.mint("stable", "", predicted, now)
        label = ids.bodies(1)[0]
        token_text = json.loads(label)["feedback_id"]
        assert feedback.receive(ids.bodies(1)[0], now).status == 202  # type: ignore[union-attr]
        n = 20000
        fresh = _timed_each(lambda b: feedback.receive(b, now), lambda: ids.bodies(n))
        seen = ids.bodies(n)
        for b in seen:
            feedback.receive(b, now)
        return {
            "answer": answer.decode(),
            "stamp": _timed(lambda: feedback.stamp("stable", "", answer, False, now), n),
            "stamp_parts": {
                "predictions_of": _timed(lambda: predictions_of(answer), n),
                "Minter.mint": _timed(lambda: minter.mint("stable", "", predicted, now), n),
                "inject": _timed(lambda: inject(answer, minted), n),
            },
            "receive_valid": fresh,
            "receive_replay": _timed_each(lambda b: feedback.receive(b, now), lambda: seen),
            "receive_parts": {
                "verify": _timed(lambda: verify(keys, token_text, now, 86400.0), n),
                "check": _timed(lambda: check(keys, {"feedback_id": token_text, "labels": [1]}, now, 86400.0), n),
            },
        }
    finally:
        os.sched_setaffinity(0, affinity)


# -- the run -------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, model: Any, body: dict[str, Any], proxy_core: int | None) -> None:
    """Start the model server and both gateways, measure the four parts, write the JSON."""
    load_at_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="feedback-bench-"))
    keys_path = tmp / "keys.json"
    keys_path.write_text(json.dumps({"1": base64.b64encode(os.urandom(32)).decode()}))
    keys = load_keys(str(keys_path))
    assert keys is not None
    ids = Ids(keys)
    infer_script = wrk_script(tmp, body)
    ports = {k: free_port() for k in ("model", "without_ids", "with_ids")}
    routes = tmp / "routes.json"
    routes.write_text(route_table(ports["model"], ports["model"]))
    other = args.other_core

    def gateway_cmd(name: str, *flags: str) -> list[str]:
        return [*pin(proxy_core), sys.executable, "-m", "mlrollout_serving.gateway", "--host", "127.0.0.1",
                "--port", str(ports[name]), "--routes-file", str(routes), "--log-level", "WARNING", *flags]  # fmt: skip

    server_cmd = [*pin(other), sys.executable, "-m", "mlrollout_serving.server", "--model-uri", model.uri,
                  "--sha256", model.sha256, "--model-name", "wine", "--host", "127.0.0.1", "--port",
                  str(ports["model"]), "--log-level", "WARNING"]  # fmt: skip
    base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(running("model-server", server_cmd, tmp / "server.log"))
        procs: dict[str, Proc] = {}
        for name, flags in (("without_ids", ()), ("with_ids", ("--feedback-keys", str(keys_path)))):
            started = stack.enter_context(running("gateway", gateway_cmd(name, *flags), tmp / f"{name}.log"))
            procs[name] = ExactProc(started.name, started.proc)
        for url in base.values():
            wait_ok(url + "/v2/health/ready")
        payload = json.dumps(body).encode()
        _, answer = post(base["model"] + INFER, payload)
        _, plain = post(base["without_ids"] + INFER, payload)
        _, stamped = post(base["with_ids"] + INFER, payload)
        if b"feedback_id" in plain or b"feedback_id" not in stamped:
            sys.exit(f"expected an id only from the gateway with keys: {plain!r} / {stamped!r}")
        urls = {name: base[name] + INFER for name in ("without_ids", "with_ids")}
        results["minting"] = measure_minting(urls, procs, infer_script, args.feedback_concurrency, args)
        results["ingestion"], rates = measure_ingestion(base["with_ids"], procs["with_ids"], ids, tmp, args)
        results["inference_beside_label_flood"] = measure_interference(
            base["with_ids"], base["model"], procs["with_ids"], payload, ids, rates, tmp, args
        )
        results["micro"] = micro(answer, keys_path, ids, proxy_core)
        print(f"[micro] {json.dumps({k: v for k, v in results['micro'].items() if k != 'answer'})}", flush=True)
        if args.profile:
            flags = ("--feedback-keys", str(keys_path))
            labels, _ = ids.script(tmp, "profile", int(args.ids_per_second * args.duration))
            text = "## labels at c=16 (fresh ids)\n" + profile_gateway(
                tmp, routes, labels, proxy_core, other, args.duration, flags, FEEDBACK
            )
            text += "\n## inference with ids at c=16 (model server upstream)\n" + profile_gateway(
                tmp, routes, infer_script, proxy_core, other, args.duration, flags, INFER
            )
            PROFILE_OUT.write_text(text)
            results["profile_file"] = str(PROFILE_OUT.relative_to(ROOT))
    meta: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
        "settings": {
            "duration_s": args.duration,
            "repeats": args.repeats,
            "minting_concurrency": args.feedback_concurrency,
            "ingest_concurrency": args.ingest_concurrency,
            "flood_concurrency": args.flood_concurrency,
            "steady_rate": args.steady_rate,
            "gateway_core": proxy_core,
            "model_server_and_clients_core": other,
            "cpu_time": "schedstat (ns), summed over the gateway's threads",
        },
    }
    out = args.out or RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print_table(results)
    print(f"\nload average at the end: {meta['machine']['load_average_at_end']}; JSON: {out}")
    shutil.rmtree(tmp, ignore_errors=True)


def print_table(results: dict[str, Any]) -> None:
    print("\n| minting | CPU µs/req without ids | with ids | paired difference (median, runs) | rps ratio |")
    print("|---|---|---|---|---|")
    for key, s in results["minting"].items():
        d = s["paired_difference"]
        print(
            f"| {key} | {s['without_ids']['cpu_us_per_request']:.1f} | {s['with_ids']['cpu_us_per_request']:.1f} | "
            f"{d['cpu_us_per_request']['median']:+.1f} ({d['cpu_us_per_request']['min']:+.1f} to "
            f"{d['cpu_us_per_request']['max']:+.1f}) | {d['throughput_ratio']['median']:.3f} |"
        )
    print("\n| ingestion | per second | gateway CPU share | CPU µs each | per dedicated core | p50 | p99 | other |")
    print("|---|---|---|---|---|---|---|---|")
    for key, s in results["ingestion"].items():
        print(
            f"| {key} | {s['per_second']:.0f} | {s['gateway_cpu_share']:.2f} | {s['cpu_us_per_item']:.1f} | "
            f"{s['per_second_per_dedicated_core']:.0f} | {s['p50_ms']:.3f} ms | {s['p99_ms']:.3f} ms | "
            f"{s['refused'] or '-'} |"
        )
    print("\n| inference at a fixed rate | p50 | p99 | paired p50 diff | paired p99 diff | labels/s | failed |")
    print("|---|---|---|---|---|---|---|")
    for key, s in results["inference_beside_label_flood"].items():
        d = s.get("paired_difference")
        print(
            f"| {key} | {s['p50_ms']:.3f} ms | {s['p99_ms']:.3f} ms | "
            f"{'-' if d is None else format(d['p50_ms']['median'], '+.3f')} | "
            f"{'-' if d is None else format(d['p99_ms']['median'], '+.3f')} | "
            f"{s.get('flood_labels_per_second', 0):.0f} | {s['failed']} |"
        )
