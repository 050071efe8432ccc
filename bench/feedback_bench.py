"""What feedback costs the gateway (issue #14): minting ids, taking labels, inference beside a label flood.

    .venv/bin/python bench/gateway_bench.py --feedback [--duration 5] [--repeats 7] [--profile]

One real model server (the wine classifier, `mlrollout-serve`) behind two `mlrollout-gateway` processes with
the same 90/10 table, both pinned to one core: one without `--feedback-keys` (answers carry no id) and one
with (every answer is read and gets a signed id). The model server, wrk and the other clients share the
other core. CPU time of a gateway comes from the scheduler (`/proc/<pid>/task/*/schedstat`, nanoseconds),
not from clock ticks: a 10 ms tick is ~3 µs per request in a 5 s run at c=1, the size of what is measured.

1. Minting: wrk against each gateway, interleaved (the order alternates per repeat), at each concurrency;
   CPU µs per request for each and the paired difference (with - without) per repeat: its median and mean
   with 95% intervals (bench/paired.py: order statistics and bootstrap), judged against the 5 µs goal.
   `--feedback-floors` adds gateways cut down to what minting cannot go below (bench/feedback_floor.py):
   the call to mint answering no id, a constant id (carrying it, no work), and the HMAC alone (OpenSSL's
   SHA-256 and CPython's); and a second gateway without ids, the A/A control. `--feedback-base REV` adds
   the gateway of REV.
1b. Minting, alternating (`--feedback-parts alternating`): the same gateways at c=1, taking turns (one
   client on the model server's core, one request at a time, each round in a random order), each gateway's
   CPU per request read every `--alternating-rounds` requests: one paired difference per block,
   `--alternating-blocks` of them. Runs of wrk one after the other meet different loads on the machine
   (their differences range over ±16 µs at c=1); turns close in time meet the same, so a few µs are
   resolved in minutes. `--alternating-sets [BURST:]A,B,...`: which gateways take turns, and how many
   requests each gets in a row per turn: 1, each request meets caches the other gateways' requests left
   (a colder regime than a lone gateway's); 100, a gateway's requests follow each other as with wrk -c1.
2. Ingestion: wrk POSTs labels to `/feedback` on the gateway with keys, every request with an id never sent
   before (minted here with the same key, the Lua script walks a file of them; the gateway's counters
   confirm each was counted, not refused as a replay). Labels/s and CPU µs per label. Then the same ids
   again: the replay refusal (409), measured separately.
3. Inference beside a label flood: a steady client (a fixed rate on one keep-alive connection) measures
   inference latency through the gateway with and without a wrk label flood on the same gateway, and as a
   control directly at the model server with and without that flood (the flood's client shares the model
   server's core: that part of any delay is not the gateway's event loop). Conditions interleaved.
   `--flood-pause-ms N` paces each flood connection (N ms after each answer): wrk is closed-loop, so without
   it a faster label path draws a heavier flood, and two versions would not face the same one.
4. Micro-benchmarks (in this process, on the gateway's core; thread CPU time, `time.thread_time`, so that
   other processes holding the core are not counted): `Feedback.stamp` on a real answer of the model
   server and its parts, `Feedback.receive` of a valid label and of a replay. With `--feedback-base REV`,
   also `Feedback.stamp` and the header line of this worktree against REV's, a fresh process per version
   and round, alternating (bench/stamp_cpu.py; `--repeats` rounds): the paired micro-benchmark.

Results: a table on stdout and bench/results/feedback.json (`--profile`: bench/results/feedback-profile.txt).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import multiprocessing
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from itertools import count
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import orjson  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tests.support.procs import free_port  # noqa: E402

from gateway_bench import (  # noqa: E402
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
from hostile_load import Steady, steady_client  # noqa: E402
from mlrollout_serving.contract import metrics as series  # noqa: E402
from mlrollout_serving.contract.feedback import FeedbackKeys, Token, _hmac_states, mint, verify  # noqa: E402
from mlrollout_serving.contract.predicted import PREDICTED_HEADER, read_header  # noqa: E402
from mlrollout_serving.gateway.feedback import (  # noqa: E402
    Answer,
    Feedback,
    FeedbackConfig,
    _splice,
    check,
    inject,
    load_keys,
    predictions_of,
)
from paired import paired_summary  # noqa: E402
from serve_ab import export  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "feedback.json"
GOAL_US = 5.0
"""Issue #14's bound on what minting may add: CPU µs per request at c=1 (intervals are judged against it)."""
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

    def script(self, tmp: Path, name: str, n: int, pause_ms: int = 0) -> tuple[Path, list[bytes]]:
        """A wrk script POSTing ``n`` fresh label bodies in order (then again from the first: replays)."""
        bodies = self.bodies(n)
        return replay_script(tmp, name, bodies, pause_ms), bodies


def replay_script(tmp: Path, name: str, bodies: list[bytes], pause_ms: int = 0) -> Path:
    """``pause_ms``: each connection waits that long after an answer before its next request, so that a flood
    has about the same rate whatever the gateway's speed (wrk is closed-loop: a faster gateway gets more)."""
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
        + (f"delay = function() return {pause_ms} end\n" if pause_ms else "")
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


def post_answer(url: str, body: bytes) -> tuple[bytes, bytes | None]:
    """The model server's answer and its predictions header (contract.predicted; None when it sent none)."""
    request = urllib.request.Request(url, body, JSON_HEADERS)
    with urllib.request.urlopen(request, timeout=10) as resp:
        predicted = resp.headers.get(PREDICTED_HEADER)
        return resp.read(), None if predicted is None else predicted.encode()


# -- 1. minting ----------------------------------------------------------------------------------------


def measure_minting(
    urls: dict[str, str], procs: dict[str, Proc], script: Path, concurrency: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    """Each gateway in ``urls`` (``without_ids`` first: the others are paired against it), interleaved."""
    out: dict[str, Any] = {}
    names = list(urls)
    for conc in concurrency:
        for name in names:  # warm up connections and caches
            wrk(urls[name], conc, 1, script, args.other_core, None)
        runs: dict[str, list[Run]] = {name: [] for name in names}
        for repeat in range(args.repeats):
            for name in names if repeat % 2 == 0 else names[::-1]:
                runs[name].append(wrk(urls[name], conc, args.duration, script, args.other_core, procs[name]))
        summary: dict[str, Any] = {name: _wrk_summary(rs) for name, rs in runs.items()}
        summary["paired_difference"] = {}
        for name in names[1:]:
            pairs = list(zip(runs["without_ids"], runs[name], strict=True))
            cpu = [w.cpu_us_per_request - o.cpu_us_per_request for o, w in pairs]  # type: ignore[operator]
            summary["paired_difference"][name] = {
                "cpu_us_per_request": paired_summary(cpu, GOAL_US),
                "p50_ms": _spread([(w.p50 - o.p50) * 1e3 for o, w in pairs]),
                "throughput_ratio": _spread([w.rps / o.rps for o, w in pairs]),
            }
            d = summary["paired_difference"][name]["cpu_us_per_request"]
            print(
                f"[minting c={conc}] CPU µs/req without ids {summary['without_ids']['cpu_us_per_request']:.1f}, "
                f"{name} {summary[name]['cpu_us_per_request']:.1f}; paired difference {_interval_text(d)}",
                flush=True,
            )
        out[f"c{conc}"] = summary
    return out


def _interval_text(d: dict[str, Any]) -> str:
    """A paired difference's median with its intervals, and its mean (paired.paired_summary)."""
    sign, boot, mean = d["median_ci95_sign_test"], d["median_ci95_bootstrap"], d["mean_ci95_bootstrap"]
    text = f"median {d['median']:+.1f}"
    if sign is not None:
        text += f" [{sign[0]:+.1f}, {sign[1]:+.1f}] (sign test)"
    if boot is not None:
        text += f" [{boot[0]:+.1f}, {boot[1]:+.1f}] (bootstrap); mean {d['mean']:+.1f} [{mean[0]:+.1f}, {mean[1]:+.1f}]"
    return text + f", {d['positive']} of {d['n']} above 0, range {d['min']:+.1f} to {d['max']:+.1f}"


# -- 1b. minting, the gateways alternating request by request ------------------------------------------


class _Client:
    """One keep-alive connection POSTing a fixed request and reading the whole answer (content-length)."""

    _LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)

    def __init__(self, port: int, path: str, body: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = b"POST %s HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n" % (
            path.encode(), port)  # fmt: skip
        self.request += b"content-length: %d\r\n\r\n%s" % (len(body), body)

    def exchange(self) -> bool:
        """One request and its answer; whether it was a 200 with a feedback id, or without."""
        self.sock.sendall(self.request)
        data = b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the gateway closed the connection")
            data += chunk
            end = data.find(b"\r\n\r\n")
            if end < 0:
                continue
            length = self._LENGTH.search(data, 0, end + 2)
            if length is None:
                raise ValueError(f"an answer without content-length: {data[:200]!r}")
            if len(data) >= end + 4 + int(length.group(1)):
                return data.startswith(b"HTTP/1.1 200")

    def close(self) -> None:
        self.sock.close()


def _alternating_set(text: str) -> tuple[int, list[str]]:
    """``[BURST:]A,B,...`` (--alternating-sets): the requests a gateway gets in a row per turn, and the gateways."""
    burst, _, names = text.rpartition(":")
    return int(burst or 1), names.split(",")


def measure_alternating(
    ports: dict[str, int],
    procs: dict[str, Proc],
    body: bytes,
    blocks: int,
    rounds: int,
    core: int | None,
    burst: int = 1,
) -> dict[str, Any]:
    """Minting at c=1 with the gateways taking turns, so that whatever else the machine does meets them alike:
    in each round every gateway gets ``burst`` requests in a row (one at a time; the gateways in a fresh
    random order each round), and every ``rounds`` rounds (a block) each gateway's CPU time per request is
    read. One paired difference (gateway - ``without_ids``) per block; their median and mean with 95%
    intervals (bench/paired.py). This process is the client, on ``core`` (the model server's), not the
    gateways'. ``burst`` 1: between two of its requests every other gateway ran one on the same core (its
    caches as another process leaves them); a long burst: a gateway's requests follow each other as with
    one wrk connection (its caches as its own previous request left them), the turns still close in time."""
    affinity = os.sched_getaffinity(0)
    if core is not None:
        os.sched_setaffinity(0, {core})
    names = list(ports)
    clients = {name: _Client(ports[name], INFER, body) for name in names}
    rng = random.Random(14)
    per_block: dict[str, list[float]] = {name: [] for name in names}
    loads: list[float] = []
    failed = 0
    try:
        for block in range(blocks + 1):  # block 0 warms the connections and caches up, and is not kept
            before = {name: procs[name].cpu_seconds() for name in names}
            for _ in range(rounds):
                rng.shuffle(names)
                for name in names:
                    client = clients[name]
                    for _ in range(burst):
                        failed += not client.exchange()
            after = {name: procs[name].cpu_seconds() for name in names}
            if block:
                for name in names:
                    per_block[name].append((after[name] - before[name]) / (rounds * burst) * 1e6)
                loads.append(os.getloadavg()[0])
    finally:
        for client in clients.values():
            client.close()
        os.sched_setaffinity(0, affinity)
    out: dict[str, Any] = {
        "blocks": blocks,
        "rounds_per_block": rounds,
        "burst": burst,
        "failed": failed,
        "load_1min": _spread(loads),
        "cpu_us_per_request": {name: _spread(values) for name, values in per_block.items()},
        "per_block": per_block,
        "paired_difference": {},
    }
    for name in ports:
        if name == "without_ids":
            continue
        diffs = [w - o for o, w in zip(per_block["without_ids"], per_block[name], strict=True)]
        d = out["paired_difference"][name] = paired_summary(diffs, GOAL_US)
        cpu = out["cpu_us_per_request"]
        print(
            f"[minting alternating c=1, {len(names)} gateways, bursts of {burst}] {name} {cpu[name]['median']:.1f} "
            f"CPU µs/req, without ids {cpu['without_ids']['median']:.1f}; paired difference {_interval_text(d)}",
            flush=True,
        )
    if "with_ids_base" in per_block:  # this code against the base's, block by block: what the change did
        diffs = [n - b for b, n in zip(per_block["with_ids_base"], per_block["with_ids"], strict=True)]
        d = out["with_ids_minus_base"] = paired_summary(diffs)
        print(f"[minting alternating c=1] with_ids - with_ids_base: {_interval_text(d)}", flush=True)
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


@dataclass(frozen=True)
class Target:
    """A gateway with feedback keys that labels are sent to."""

    name: str
    base: str
    proc: Proc


def measure_ingestion(targets: list[Target], ids: Ids, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Fresh labels at each concurrency, then (at the highest) the same ids again right after each run; the
    targets interleaved (their order alternates per repeat)."""
    out: dict[str, Any] = {t.name: {} for t in targets}
    top = max(args.ingest_concurrency)
    replays: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    for conc in args.ingest_concurrency:
        for target in targets:
            warm, _ = ids.script(tmp, "labels-warm", int(args.ids_per_second))
            wrk(target.base + FEEDBACK, conc, 1, warm, args.other_core, None)
        runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
        fastest = 0.0  # requests/s of the fastest run so far: the next runs get 2.5 times as many ids
        for repeat in range(args.repeats):
            for target in targets if repeat % 2 == 0 else targets[::-1]:
                pace = 2.5 * fastest if fastest else args.ids_per_second
                script, bodies = ids.script(tmp, "labels", int(pace * args.duration) + 1000)
                fresh = _counted_run(target, conc, script, args)
                fastest = max(fastest, fresh["rps"])
                runs[target.name].append(fresh)
                if conc == top:  # the ids just counted, sent again: every one is a replay (409)
                    sent = bodies[: fresh["requests"] - conc]  # surely sent and answered before wrk stopped
                    again = replay_script(tmp, "replay", sent)
                    replays[target.name].append(_counted_run(target, conc, again, args))
        for target in targets:
            s = out[target.name][f"c{conc}"] = _ingest_summary(runs[target.name], "counted")
            print(
                f"[ingestion {target.name} c={conc}] {s['per_second']:.0f} labels/s counted (gateway CPU share "
                f"{s['gateway_cpu_share']:.2f}), {s['cpu_us_per_item']:.1f} CPU µs/label, other {s['refused']}",
                flush=True,
            )
    for target in targets:
        s = out[target.name][f"replay_c{top}"] = _ingest_summary(replays[target.name], "refused_replayed")
        print(
            f"[replays {target.name} c={top}] {s['per_second']:.0f} refusals/s (409), {s['cpu_us_per_item']:.1f} "
            "CPU µs each",
            flush=True,
        )
    return out


def _counted_run(target: Target, conc: int, script: Path, args: argparse.Namespace) -> dict[str, Any]:
    before = feedback_counts(target.base)
    run = wrk(target.base + FEEDBACK, conc, args.duration, script, args.other_core, target.proc)
    delta = _delta(feedback_counts(target.base), before)
    return {**asdict(run), "gateway_counts": delta}


def _ingest_summary(runs: list[dict[str, Any]], outcome: str) -> dict[str, Any]:
    """Per second and CPU per item of ``outcome`` (wrk's rate times the share of requests with that outcome)."""
    per_second = [r["rps"] * r["gateway_counts"].get(outcome, 0) / r["requests"] for r in runs]
    other: dict[str, int] = {}
    for r in runs:
        for k, v in r["gateway_counts"].items():
            if k != outcome:
                other[k] = other.get(k, 0) + v
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
        "refused": other,  # any outcome but the measured one (expected: none, or a few in-flight at the end)
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
    targets: list[Target], direct: str, body: bytes, ids: Ids, rate: float, tmp: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """The steady client's latency through each target, quiet and beside a label flood on that target; and
    directly at the model server, quiet and beside a flood on the first target (the control)."""
    floods = args.flood_concurrency
    first = targets[0]
    conditions: list[tuple[str, str, Target | None, int | None]] = []  # (name, url, flooded target, wrk -c)
    for t in targets:
        conditions.append((_name(t.name, None), t.base + INFER, None, None))
        conditions += [(_name(t.name, c), t.base + INFER, t, c) for c in floods]
    conditions.append((_name("direct", None), direct + INFER, None, None))
    conditions.append((_name("direct", max(floods)), direct + INFER, first, max(floods)))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in conditions}
    flood_seconds = args.duration + 2.0
    for repeat in range(args.repeats):
        shift = repeat % len(conditions)
        for name, url, flooded, conc in conditions[shift:] + conditions[:shift]:
            if flooded is None or conc is None:
                latency = steady(url, body, args.steady_rate, args.duration, args.other_core)
                results[name].append({**latency, "load": os.getloadavg()[0]})
                continue
            script, _ = ids.script(tmp, "flood", int(rate * 1.5 * flood_seconds) + 1000, args.flood_pause_ms)
            with flood(flooded.base + FEEDBACK, conc, flood_seconds, script, args.other_core, flooded.proc) as labels:
                latency = steady(url, body, args.steady_rate, args.duration, args.other_core)
            results[name].append({**latency, "flood": labels, "load": os.getloadavg()[0]})
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
            quiet = results[name.split("_label_flood_")[0] + "_quiet"]
            out[name]["paired_difference"] = {
                key: _spread([b[key] - q[key] for q, b in zip(quiet, runs, strict=True)])
                for key in ("p50_ms", "p99_ms")
            }
    for name, s in out.items():
        extra = ""
        if "paired_difference" in s:
            d = s["paired_difference"]
            extra = f" (vs quiet p50 {d['p50_ms']['median']:+.3f}, p99 {d['p99_ms']['median']:+.3f})"
            extra += f"; flood {s['flood_labels_per_second']:.0f} labels/s"
        print(f"[inference {name}] p50 {s['p50_ms']:.3f} ms, p99 {s['p99_ms']:.3f} ms{extra}", flush=True)
    return out


def _name(target: str, conc: int | None) -> str:
    return f"{target}_quiet" if conc is None else f"{target}_label_flood_c{conc}"


# -- 4. micro-benchmarks -------------------------------------------------------------------------------


def _timed(fn: Callable[[], object], number: int, repeats: int = 7) -> dict[str, float]:
    """µs of thread CPU time per call: the minimum over repeats (the least disturbed) and the median."""
    per_call = []
    for _ in range(repeats):
        started = time.thread_time()
        for _ in range(number):
            fn()
        per_call.append((time.thread_time() - started) / number * 1e6)
    return {"min_us": min(per_call), "median_us": statistics.median(per_call)}


def _timed_each(fn: Callable[[bytes], object], make: Callable[[], list[bytes]], repeats: int = 7) -> dict[str, float]:
    """µs of thread CPU time per call of ``fn`` over fresh inputs (one list per repeat, made outside the timing)."""
    per_call = []
    for _ in range(repeats):
        inputs = make()
        started = time.thread_time()
        for item in inputs:
            fn(item)
        per_call.append((time.thread_time() - started) / len(inputs) * 1e6)
    return {"min_us": min(per_call), "median_us": statistics.median(per_call)}


_EVICT = bytearray(16 << 20)  # four times this machine's L2: writing it leaves the caches cold


def _cold(fn: Callable[[bytes], object], inputs: list[bytes]) -> dict[str, float]:
    """µs per call with the CPU caches emptied before each (as in a gateway that was idle or ran something
    else since its last request: the case at c=1); the median of the calls."""
    per_call = []
    for item in inputs:
        _EVICT[::64] = bytes(len(_EVICT) // 64)  # one write per cache line
        started = time.thread_time()
        fn(item)
        per_call.append((time.thread_time() - started) * 1e6)
    return {"median_us": statistics.median(per_call)}


def _b64url(signed: bytes) -> bytes:
    """What contract.feedback.seal_section does after the HMAC."""
    return binascii.b2a_base64(signed, newline=False).translate(_URLSAFE).rstrip(b"=")


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def micro(answer: bytes, predicted_header: bytes | None, keys_path: Path, ids: Ids, core: int | None) -> dict[str, Any]:
    """The pure functions on the gateway's core (nothing else of the bench runs meanwhile), in a loop (hot:
    what the code costs) and with the caches emptied before each call (cold)."""
    affinity = os.sched_getaffinity(0)
    if core is not None:
        os.sched_setaffinity(0, {core})
    try:
        feedback = Feedback(FeedbackConfig(str(keys_path)))
        assert feedback.minter is not None and feedback.keys is not None
        now = int(time.time())
        assert feedback.stamp("stable", "", answer, False, now) is not None, "the answer would carry no id"
        predicted = predictions_of(answer)
        assert predicted is not None
        minter, keys = feedback.minter, feedback.keys
        minted = minter.mint("stable", "", predicted, now)
        parsed = orjson.loads(answer)
        token_text = json.loads(ids.bodies(1)[0])["feedback_id"]
        first = feedback.receive(ids.bodies(1)[0], now)
        assert isinstance(first, Answer) and first.status == 202, first
        n = 20000
        fresh = _timed_each(lambda b: feedback.receive(b, now), lambda: ids.bodies(n))
        seen = ids.bodies(n)
        for b in seen:
            feedback.receive(b, now)
        key = keys.keys[keys.current]
        payload = base64.urlsafe_b64decode(token_text + "=" * (-len(token_text) % 4))[:-16]
        inner, outer = _hmac_states(key, hashlib.sha256)  # what FeedbackKeys held before CPython's SHA-256

        def openssl_mac(message: bytes) -> bytes:
            digest = inner.copy()
            digest.update(message)
            mac = outer.copy()
            mac.update(digest.digest())
            return mac.digest()[:16]

        assert openssl_mac(payload) == keys.mac(keys.current, payload)
        unread: dict[str, Any] = {}
        if predicted_header is not None:  # what the gateway does with the model server's answers
            section = read_header(predicted_header, minter.max_rows)
            assert section is not None
            unread = {
                "stamp_with_predicted_header": _timed(
                    lambda: feedback.stamp("stable", "", answer, False, now, predicted_header), n
                ),
                "stamp_with_predicted_header_cold": _cold(
                    lambda a: feedback.stamp("stable", "", a, False, now, predicted_header), [answer] * 300
                ),
                "stamp_with_predicted_header_parts": {
                    "read_header": _timed(lambda: read_header(predicted_header, 64), n),
                    "Minter.mint_section": _timed(lambda: minter.mint_section("stable", "", section, now), n),
                },
            }
        return {
            "answer": answer.decode(),
            "predicted_header": None if predicted_header is None else predicted_header.decode(),
            **unread,
            "stamp": _timed(lambda: feedback.stamp("stable", "", answer, False, now), n),
            "stamp_cold": _cold(lambda a: feedback.stamp("stable", "", a, False, now), [answer] * 300),
            "stamp_parts": {
                "orjson.loads": _timed(lambda: orjson.loads(answer), n),
                "predictions_of (orjson.loads and reading it)": _timed(lambda: predictions_of(answer), n),
                "Minter.mint": _timed(lambda: minter.mint("stable", "", predicted, now), n),
                "inject (the parsed answer given)": _timed(lambda: inject(answer, minted, parsed), n),
                "FeedbackKeys.mac (in mint and verify)": _timed(lambda: keys.mac(keys.current, payload), n),
                "the same HMAC from OpenSSL's SHA-256 states": _timed(lambda: openssl_mac(payload), n),
                "hmac.digest (what FeedbackKeys.mac replaces)": _timed(lambda: hmac.digest(key, payload, "sha256"), n),
            },
            "stamp_parts_cold": {
                "predictions_of": _cold(predictions_of, [answer] * 300),
                "Minter.mint": _cold(lambda _: minter.mint("stable", "", predicted, now), [answer] * 300),
                "FeedbackKeys.mac": _cold(lambda m: keys.mac(keys.current, m), [payload] * 300),
                "the same HMAC from OpenSSL's SHA-256 states": _cold(openssl_mac, [payload] * 300),
                "base64url of the signed payload": _cold(_b64url, [payload + bytes(16)] * 300),
                "_splice": _cold(lambda b: _splice(b, minted), [answer] * 300),
                "hmac.digest": _cold(lambda m: hmac.digest(key, m, "sha256"), [payload] * 300),
            },
            "receive_valid": fresh,
            "receive_valid_cold": _cold(lambda b: feedback.receive(b, now), ids.bodies(300)),
            "receive_replay": _timed_each(lambda b: feedback.receive(b, now), lambda: seen),
            "receive_parts": {
                "verify": _timed(lambda: verify(keys, token_text, now, 86400.0), n),
                "check": _timed(lambda: check(keys, {"feedback_id": token_text, "labels": [1]}, now, 86400.0), n),
            },
        }
    finally:
        os.sched_setaffinity(0, affinity)


def micro_paired(
    answer: bytes, predicted: bytes | None, keys_path: Path, source: Path, tmp: Path, core: int | None, rounds: int
) -> dict[str, Any]:
    """``Feedback.stamp`` and the header line, this worktree's against the base's (``source``: its ``inference/``
    tree), each round in a fresh process per version (bench/stamp_cpu.py), the order alternating per round:
    thread CPU time per call, hot and cold; the medians over rounds and the paired differences."""
    answer_file = tmp / "answer.json"
    answer_file.write_bytes(answer)
    command = [sys.executable, str(ROOT / "bench" / "stamp_cpu.py"), str(keys_path), str(answer_file)]
    command += ["none" if core is None else str(core)]
    if predicted is not None:  # given to a version whose stamp takes it (stamp_cpu.py)
        (tmp / "predicted").write_bytes(predicted)
        command += [str(tmp / "predicted")]
    envs = {"with_ids": None, "with_ids_base": {**os.environ, "PYTHONPATH": str(source)}}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in envs}
    for repeat in range(rounds):
        for name in list(envs) if repeat % 2 == 0 else list(envs)[::-1]:
            done = subprocess.run(command, env=envs[name], capture_output=True, text=True, check=True)
            runs[name].append(json.loads(done.stdout))
    out: dict[str, Any] = {}
    for name, rs in runs.items():
        out[name] = {
            "hot_us": _spread([r["stamp_and_header"]["min_us"] for r in rs]),
            "cold_us": _spread([r["stamp_and_header_cold"]["median_us"] for r in rs]),
            "runs": rs,
        }
        if "read_stamp_and_header" in rs[0]:  # the same version reading the answer (no predictions header)
            out[name]["read_hot_us"] = _spread([r["read_stamp_and_header"]["min_us"] for r in rs])
            out[name]["read_cold_us"] = _spread([r["read_stamp_and_header_cold"]["median_us"] for r in rs])
    pairs = list(zip(runs["with_ids_base"], runs["with_ids"], strict=True))
    out["paired_difference"] = {
        "hot_us": paired_summary([n["stamp_and_header"]["min_us"] - b["stamp_and_header"]["min_us"] for b, n in pairs]),
        "cold_us": paired_summary(
            [n["stamp_and_header_cold"]["median_us"] - b["stamp_and_header_cold"]["median_us"] for b, n in pairs]
        ),
    }
    for name in envs:
        print(
            f"[micro paired] {name}: stamp and header {out[name]['hot_us']['median']:.2f} µs CPU hot, "
            f"{out[name]['cold_us']['median']:.1f} cold (medians over {rounds} rounds)",
            flush=True,
        )
    for key, d in out["paired_difference"].items():
        print(f"[micro paired] with_ids - with_ids_base, {key}: {_interval_text(d)}", flush=True)
    return out


# -- the run -------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, model: Any, body: dict[str, Any], proxy_core: int | None) -> None:
    """Start the model server and the gateways, measure the parts asked for, write the JSON."""
    load_at_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="feedback-bench-"))
    keys_path = tmp / "keys.json"
    keys_path.write_text(json.dumps({"1": base64.b64encode(os.urandom(32)).decode()}))
    keys = load_keys(str(keys_path))
    assert keys is not None
    ids = Ids(keys)
    infer_script = wrk_script(tmp, body)
    routes = tmp / "routes.json"
    model_port = free_port()
    routes.write_text(route_table(model_port, model_port))
    other = args.other_core
    with_keys = ("--feedback-keys", str(keys_path))
    gateways: dict[str, tuple[tuple[str, ...], dict[str, str] | None]] = {
        "without_ids": ((), None),
        "with_ids": (with_keys, None),
    }
    # the floors of minting (bench/feedback_floor.py): minting only, never labelled
    modes = {"floor_no_id": "none", "floor_constant_id": "constant", "floor_hmac_only": "hmac",
             "floor_hmac_builtin": "hmac_builtin"}  # fmt: skip
    floors = modes if args.feedback_floors else {}
    gateways.update({name: (with_keys, None) for name in floors})
    if floors:  # a second gateway without ids (an A/A pair): how far two identical processes differ
        gateways["without_ids_again"] = ((), None)
    base_commit = None
    source: Path | None = None
    if args.feedback_base:
        base_commit = subprocess.run(["git", "rev-parse", args.feedback_base], cwd=ROOT, capture_output=True,
                                     text=True, check=True).stdout.strip()  # fmt: skip
        source = export(base_commit, tmp)  # the child imports mlrollout_serving from there (PYTHONPATH first)
        gateways["with_ids_base"] = (with_keys, {**os.environ, "PYTHONPATH": str(source)})
    ports = {name: free_port() for name in gateways}
    sets = args.alternating_sets or [",".join(gateways)]
    for chosen in sets:
        names = _alternating_set(chosen)[1]
        if names[0] != "without_ids" or not set(names) <= set(gateways):
            sys.exit(f"--alternating-sets: {chosen!r}: [BURST:]without_ids,... naming some of {list(gateways)}")

    def gateway_cmd(name: str, flags: tuple[str, ...]) -> list[str]:
        entry = ["-m", "mlrollout_serving.gateway"]
        if name in floors:
            entry = [str(ROOT / "bench" / "feedback_floor.py"), floors[name]]
        return [*pin(proxy_core), sys.executable, *entry, "--host", "127.0.0.1",
                "--port", str(ports[name]), "--routes-file", str(routes), "--log-level", "WARNING", *flags]  # fmt: skip

    server_cmd = [*pin(other), sys.executable, "-m", "mlrollout_serving.server", "--model-uri", model.uri,
                  "--sha256", model.sha256, "--model-name", "wine", "--host", "127.0.0.1", "--port",
                  str(model_port), "--log-level", "WARNING"]  # fmt: skip
    model_base = f"http://127.0.0.1:{model_port}"
    base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(running("model-server", server_cmd, tmp / "server.log"))
        procs: dict[str, Proc] = {}
        for name, (flags, env) in gateways.items():
            started = stack.enter_context(running("gateway", gateway_cmd(name, flags), tmp / f"{name}.log", env))
            procs[name] = ExactProc(started.name, started.proc)
        for url in (model_base, *base.values()):
            wait_ok(url + "/v2/health/ready")
        payload = json.dumps(body).encode()
        answer, predicted = post_answer(model_base + INFER, payload)
        stamped = {name: b"feedback_id" in post(url + INFER, payload)[1] for name, url in base.items()}
        if stamped != {name: bool(flags) and name != "floor_no_id" for name, (flags, _) in gateways.items()}:
            sys.exit(f"expected an id from the gateways with keys only: {stamped}")
        unlabelled = ("without_ids", "without_ids_again", *floors)
        targets = [Target(name, base[name], procs[name]) for name in gateways if name not in unlabelled]
        rate = args.ids_per_second
        if "minting" in args.feedback_parts:
            urls = {name: base[name] + INFER for name in gateways}  # without_ids first: the others paired with it
            results["minting"] = measure_minting(urls, procs, infer_script, args.feedback_concurrency, args)
        if "alternating" in args.feedback_parts:
            results["minting_alternating"] = {}
            for chosen in sets:
                burst, names = _alternating_set(chosen)
                results["minting_alternating"][f"bursts of {burst}: {','.join(names)}"] = measure_alternating(
                    {name: ports[name] for name in names}, procs, payload, args.alternating_blocks,
                    max(1, args.alternating_rounds // burst), other, burst,
                )  # fmt: skip
        if "ingestion" in args.feedback_parts:
            results["ingestion"] = measure_ingestion(targets, ids, tmp, args)
            rate = max(s["per_second"] for t in results["ingestion"].values() for s in t.values())
        if "inference" in args.feedback_parts:
            results["inference_beside_label_flood"] = measure_interference(
                targets, model_base, payload, ids, rate, tmp, args
            )
        if "micro" in args.feedback_parts:
            if source is not None:
                results["micro_paired"] = micro_paired(
                    answer, predicted, keys_path, source, tmp, proxy_core, args.repeats
                )
            results["micro"] = micro(answer, predicted, keys_path, ids, proxy_core)
            print(f"[micro] {json.dumps({k: v for k, v in results['micro'].items() if k != 'answer'})}", flush=True)
        if args.profile:
            labels, _ = ids.script(tmp, "profile", int(args.ids_per_second * args.duration))
            text = "## labels at c=16 (fresh ids)\n" + profile_gateway(
                tmp, routes, labels, proxy_core, other, args.duration, with_keys, FEEDBACK
            )
            text += "\n## inference with ids at c=16 (model server upstream)\n" + profile_gateway(
                tmp, routes, infer_script, proxy_core, other, args.duration, with_keys, INFER
            )
            PROFILE_OUT.write_text(text)
            results["profile_file"] = str(PROFILE_OUT.relative_to(ROOT))
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    meta: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
        "code": {"with_ids": f"worktree at {head}", "with_ids_base": base_commit},
        "settings": {
            "duration_s": args.duration,
            "repeats": args.repeats,
            "parts": args.feedback_parts,
            "minting_concurrency": args.feedback_concurrency,
            "alternating_blocks": args.alternating_blocks,
            "alternating_rounds_per_block": args.alternating_rounds,
            "alternating_sets": args.alternating_sets,
            "goal_us": GOAL_US,
            "ingest_concurrency": args.ingest_concurrency,
            "flood_concurrency": args.flood_concurrency,
            "steady_rate": args.steady_rate,
            "flood_pause_ms": args.flood_pause_ms,
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
    if "minting" in results:
        print("\n| minting | gateway | CPU µs/req | without ids | paired difference (95% intervals) | rps ratio |")
        print("|---|---|---|---|---|---|")
        for key, s in results["minting"].items():
            for name, d in s["paired_difference"].items():
                print(
                    f"| {key} | {name} | {s[name]['cpu_us_per_request']:.1f} | "
                    f"{s['without_ids']['cpu_us_per_request']:.1f} | {_interval_text(d['cpu_us_per_request'])} | "
                    f"{d['throughput_ratio']['median']:.3f} |"
                )
    for a in results.get("minting_alternating", {}).values():
        blocks = f"{a['blocks']} blocks of {a['rounds_per_block']} rounds, bursts of {a['burst']}"
        print(f"\n| alternating c=1, {len(a['per_block'])} gateways ({blocks}) | CPU µs/req | paired difference |")
        print("|---|---|---|")
        for name, cpu in a["cpu_us_per_request"].items():
            d = a["paired_difference"].get(name)
            print(f"| {name} | {cpu['median']:.1f} | {'-' if d is None else _interval_text(d)} |")
        if "with_ids_minus_base" in a:
            print(f"| with_ids - with_ids_base | | {_interval_text(a['with_ids_minus_base'])} |")
    if "ingestion" in results:
        print("\n| ingestion | per second | gateway CPU share | CPU µs each | per dedicated core | p50 | p99 | other |")
        print("|---|---|---|---|---|---|---|---|")
        for name, by_key in results["ingestion"].items():
            for key, s in by_key.items():
                print(
                    f"| {name} {key} | {s['per_second']:.0f} | {s['gateway_cpu_share']:.2f} | "
                    f"{s['cpu_us_per_item']:.1f} | {s['per_second_per_dedicated_core']:.0f} | {s['p50_ms']:.3f} ms | "
                    f"{s['p99_ms']:.3f} ms | {s['refused'] or '-'} |"
                )
    if "inference_beside_label_flood" in results:
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
