"""Hostile load: does a steady client keep its latency while 2,000 connections, some hostile, hold a server?

Three processes besides the target: a *steady* client (one keep-alive connection, a fixed request rate,
every latency recorded), a *crowd* (asyncio) holding the other connections, and this one, which samples
the watched process's memory and descriptors. Each repeat measures the steady client alone (unloaded),
then again while the crowd holds its connections (loaded); the report gives medians over the repeats and
the verdict: no failed steady request, and loaded p99 at most ``--p99-ratio`` times the unloaded p99.

The crowd, by default 2,000 connections:

- ``--idle``: ordinary keep-alive clients that send a light request (``GET /v2/health/live``) every few
  seconds, as a large client pool does;
- ``--slow-heads`` / ``--slow-bodies``: slowloris, a request head (or a head and part of a body) that
  grows by one byte a second; ``--silent``: connections that never send a byte;
- ``--flooders``: clients that send a request head of ``--flood-bytes`` (a header line that never ends),
  then reconnect ``--flood-pause`` seconds after the server cut them off.

Hostile connections the server closes are reopened (after ``--reconnect-pause``), so their number stays
bounded. On one machine the crowd runs on ``--client-core`` at ``nice 10``, and the steady client beside
the server it measures (``--server-core``): the kernel's loopback work for 2,000 connections, which
``nice`` does not lower, runs on the crowd's core, and on a shared core it kept the steady client from
being scheduled for seconds (it then measures the load generator, not the server).

Usage (from the repository root):

    .venv/bin/python bench/hostile_load.py                     # starts a wine model server itself
    .venv/bin/python bench/hostile_load.py --server-arg=--max-connections=1000 --label capped
    .venv/bin/python bench/hostile_load.py --through-gateway --label gateway   # the gateway is the target
    .venv/bin/python bench/hostile_load.py --anchor-nginx --label nginx        # the anchor: one nginx worker
    .venv/bin/python bench/hostile_load.py --url http://127.0.0.1:8080/v2/models/wine/infer --pid 1234

With ``--url`` and ``--pid`` the target is any server (a gateway in front of a model server, say); the
request body is then ``--body`` (a file), by default one wine row. Results: a table on stdout and JSON
under bench/results/ (``--output``).

File descriptors: the crowd raises its own soft ``ulimit -n`` to the hard limit and refuses to start
if that cannot hold its connections; a server started here inherits this shell's limits and raises its
soft limit itself to fit ``--max-connections`` (both are recorded in the JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import multiprocessing
import multiprocessing.connection
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import models  # noqa: E402
from tests.support.hostile import SLOW_PARTS, SlowKind, fd_count, rss_mib  # noqa: E402
from tests.support.procs import (  # noqa: E402
    ManagedProcess,
    ServerProcess,
    free_port,
    running,
    spawn,
    start_server,
    wait_ready,
)

from gateway_bench import instant_conf  # noqa: E402
from serve_bench import cpu_seconds  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "hostile-serve.json"
LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"


# --- the steady client --------------------------------------------------------------------------------


@dataclass
class Steady:
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] if lat else float("nan")

        return {
            "sent": self.sent,
            "failed": len(self.failures),
            "p50_ms": pct(50),
            "p99_ms": pct(99),
            "max_ms": lat[-1] if lat else float("nan"),
            "first_failures": self.failures[:5],
        }


def steady_client(
    url: str,
    body: bytes,
    headers: dict[str, str],
    rate: float,
    duration: float,
    core: int | None,
    out: multiprocessing.connection.Connection,
) -> None:
    """Send ``rate`` requests a second on one keep-alive connection for ``duration`` seconds; a failed
    request (an error, a non-200, a dropped connection) is recorded and the connection reopened."""
    if core is not None:
        os.sched_setaffinity(0, {core})
    target = urllib.parse.urlsplit(url)
    host = target.hostname or "127.0.0.1"
    result = Steady()
    conn = http.client.HTTPConnection(host, target.port, timeout=10)
    start = time.perf_counter()
    n = 0
    while (now := time.perf_counter()) - start < duration:
        due = start + n / rate
        if due > now:
            time.sleep(due - now)
        n += 1
        t0 = time.perf_counter()
        try:
            conn.request("POST", target.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                result.failures.append(f"{resp.status} {data[:200]!r}")
            else:
                result.latencies_ms.append((time.perf_counter() - t0) * 1000)
        except (OSError, http.client.HTTPException) as e:
            result.failures.append(repr(e))
            conn.close()
            conn = http.client.HTTPConnection(host, target.port, timeout=10)
        result.sent += 1
    conn.close()
    out.send(asdict(result))


# --- the crowd ----------------------------------------------------------------------------------------


@dataclass
class CrowdPlan:
    idle: int
    slow_heads: int
    slow_bodies: int
    silent: int
    flooders: int
    flood_bytes: int
    flood_pause: float
    reconnect_pause: float

    @property
    def hostile(self) -> int:
        return self.slow_heads + self.slow_bodies + self.silent + self.flooders

    @property
    def total(self) -> int:
        return self.idle + self.hostile


class Crowd:
    """Holds the connections; counts what the server did to them."""

    def __init__(self, host: str, port: int, plan: CrowdPlan) -> None:
        self.host, self.port, self.plan = host, port, plan
        self.counts: Counter[str] = Counter()
        self.open = 0
        self.stopping = False

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            pair = await asyncio.open_connection(self.host, self.port)
        except OSError as e:
            self.counts[f"connect failed: {e.strerror or e}"] += 1
            await asyncio.sleep(0.5)
            return None
        self.open += 1
        return pair

    async def _closed(self, writer: asyncio.StreamWriter) -> None:
        self.open -= 1
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def _repeat(self, session: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
                      pause: float) -> None:  # fmt: skip
        """Connect, run ``session`` on the connection, close it, wait ``pause`` seconds; again."""
        while not self.stopping:
            pair = await self._connect()
            if pair is None:
                continue
            try:
                await session(*pair)
            finally:
                await self._closed(pair[1])
            await asyncio.sleep(pause)

    def _answered(self, who: str, reply: bytes) -> None:
        status_line = reply.split(b"\r\n", 1)[0].decode(errors="replace")
        self.counts[f"{who}: {status_line or 'closed'}"] += 1

    async def idle(self) -> None:
        """A pooled keep-alive client: a light request at once, then one every 2-8 s on the same connection.
        Like any pool it reopens a connection the server closed while idle (counted, not a failure)."""

        async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while not self.stopping:
                    if reader.at_eof():
                        self.counts["idle connection closed by the server between requests"] += 1
                        return
                    writer.write(LIVE)
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                    self.counts["idle requests answered"] += 1
                    await asyncio.sleep(random.uniform(2, 8))
            except (OSError, asyncio.IncompleteReadError, TimeoutError, IndexError, ValueError) as e:
                if not self.stopping:
                    self.counts[f"idle request failed: {type(e).__name__}"] += 1

        await self._repeat(session, 0.0)

    async def slow(self, kind: SlowKind) -> None:
        """Slowloris: the start of a request, then one more byte a second, until the server hangs up."""

        async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            answer = asyncio.ensure_future(reader.read(65536))
            try:
                writer.write(SLOW_PARTS[kind])
                while not self.stopping:
                    done, _ = await asyncio.wait([answer], timeout=1.0)
                    if done:
                        self._answered(kind, answer.result())
                        return
                    if kind != "silent":
                        writer.write(b"a")
                        await writer.drain()
            except OSError:
                self.counts[f"{kind}: reset"] += 1
            finally:
                answer.cancel()

        await self._repeat(session, self.plan.reconnect_pause)

    async def flood(self) -> None:
        """A request head that never ends: ``flood_bytes`` of one header line, then reconnect."""
        chunk = b"a" * 65536

        async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Flood: ")
                sent = 0
                while sent < self.plan.flood_bytes and not reader.at_eof():
                    writer.write(chunk)
                    await writer.drain()
                    sent += len(chunk)
                self.counts["flood bytes sent"] += sent
                self._answered("flood", await asyncio.wait_for(reader.read(65536), 10))
            except (OSError, TimeoutError):
                self.counts["flood: reset"] += 1

        await self._repeat(session, self.plan.flood_pause)

    async def run(self, ready: Any, stop: Any) -> dict[str, Any]:
        p = self.plan
        tasks = [asyncio.ensure_future(self.idle()) for _ in range(p.idle)]
        slow: list[tuple[SlowKind, int]] = [("head", p.slow_heads), ("body", p.slow_bodies), ("silent", p.silent)]
        for kind, count in slow:
            tasks += [asyncio.ensure_future(self.slow(kind)) for _ in range(count)]
        tasks += [asyncio.ensure_future(self.flood()) for _ in range(p.flooders)]
        started = time.monotonic()
        while self.open < p.total - p.flooders and time.monotonic() - started < 60:
            await asyncio.sleep(0.1)
        ramp = time.monotonic() - started
        ready.set()
        peak = self.open
        while not stop.is_set():
            await asyncio.sleep(0.1)
            peak = max(peak, self.open)
        self.stopping = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return {"ramp_s": round(ramp, 2), "open_peak": peak, "events": dict(sorted(self.counts.items()))}


def crowd_process(
    host: str,
    port: int,
    plan: CrowdPlan,
    core: int | None,
    ready: Any,
    stop: Any,
    out: multiprocessing.connection.Connection,
) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})
    os.nice(10)  # the load generator must not starve the steady client that measures
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < plan.total + 64:
        out.send({"error": f"ulimit -n is {hard}, the crowd needs {plan.total + 64}"})
        ready.set()
        return
    import uvloop

    result = uvloop.run(Crowd(host, port, plan).run(ready, stop))
    out.send({**result, "nofile": [soft, hard], "nofile_set": hard})


# --- watching the target process ----------------------------------------------------------------------


class Watcher(threading.Thread):
    """Samples the target's resident memory and descriptors twice a second, and its CPU time."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.rss: list[float] = []
        self.fds: list[int] = []
        self.stop = threading.Event()
        self.cpu0, self.t0 = cpu_seconds(pid), time.monotonic()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            with contextlib.suppress(OSError, KeyError):
                self.rss.append(rss_mib(self.pid))
                self.fds.append(fd_count(self.pid))

    def cpu_share(self) -> float:
        """The target's CPU time over wall time since the watcher started (1.0 = one core)."""
        return (cpu_seconds(self.pid) - self.cpu0) / (time.monotonic() - self.t0)


# --- one measurement ----------------------------------------------------------------------------------


def measure(
    args: argparse.Namespace, body: bytes, headers: dict[str, str], pid: int, plan: CrowdPlan | None
) -> dict[str, Any]:
    target = urllib.parse.urlsplit(args.url)
    ctx = multiprocessing.get_context("spawn")
    watcher = Watcher(pid)
    watcher.start()
    fds_before = fd_count(pid)
    crowd_result: dict[str, Any] = {}
    crowd = None
    if plan is not None:
        crowd_out, crowd_in = ctx.Pipe(duplex=False)
        ready, stop = ctx.Event(), ctx.Event()
        crowd = ctx.Process(
            target=crowd_process, args=(target.hostname, target.port, plan, args.client_core, ready, stop, crowd_in)
        )
        crowd.start()
        ready.wait(120)
        time.sleep(args.settle)
    steady_out, steady_in = ctx.Pipe(duplex=False)
    steady_core = args.steady_core
    if steady_core is None:  # beside the server it measures, away from the crowd's kernel work
        steady_core = args.server_core if args.pid is None else args.client_core
    client = ctx.Process(
        target=steady_client, args=(args.url, body, headers, args.rate, args.duration, steady_core, steady_in)
    )
    client.start()
    steady = Steady(**steady_out.recv())
    client.join()
    if crowd is not None:
        stop.set()
        crowd_result = crowd_out.recv()
        crowd.join(60)
    watcher.stop.set()
    watcher.join()
    cpu = watcher.cpu_share()
    deadline = time.monotonic() + 30
    while fd_count(pid) > fds_before and time.monotonic() < deadline:
        time.sleep(0.2)
    return {
        "steady": steady.summary(),
        "crowd": crowd_result,
        "target": {
            "cpu_share": round(cpu, 2),
            "rss_mib_max": round(max(watcher.rss, default=float("nan")), 1),
            "fds_before": fds_before,
            "fds_max": max(watcher.fds, default=0),
            "fds_after": fd_count(pid),
        },
        "load": round(os.getloadavg()[0], 2),
    }


@contextlib.contextmanager
def target(args: argparse.Namespace) -> Iterator[tuple[str, int, bytes, dict[str, str]]]:
    """The URL, the pid to watch, the body and its headers: given, or a wine model server started here."""
    headers = {"Content-Type": "application/json"}
    if args.url:
        body = Path(args.body).read_bytes() if args.body else wine_body()
        yield args.url, args.pid, body, headers
        return
    wrapper = ["taskset", "-c", str(args.server_core)] if args.server_core is not None else []
    if args.anchor_nginx:
        with nginx_instant(wrapper) as (url, pid):
            args.url = url
            yield url, pid, wine_body(), headers
        return
    wine = models.wine()
    # Through the gateway, the gateway is the target on the server's core and the model server behind it
    # runs on the crowd's core (it sees only the steady client's requests).
    server_wrapper = ["taskset", "-c", str(args.client_core)] if args.through_gateway else wrapper
    server: ServerProcess = start_server(
        wine, name="wine", wrapper=server_wrapper, extra_args=["--log-level", "WARNING", *args.server_arg]
    )
    try:
        with contextlib.ExitStack() as stack:
            pid, base = server.proc.pid, server.url
            if args.through_gateway:
                gateway = stack.enter_context(gateway_in_front(server.url, wrapper, args.gateway_arg))
                pid, base = gateway.proc.pid, gateway.url
            args.url = f"{base}/v2/models/wine/infer"
            yield args.url, pid, wine_body(), headers
    finally:
        server.stop()
        args.server_log_tail = server.tail(200)
        server.log_path.unlink(missing_ok=True)


@contextlib.contextmanager
def nginx_instant(wrapper: list[str]) -> Iterator[tuple[str, int]]:
    """The anchor: one nginx worker answering every request with a fixed inference answer (no upstream),
    the same server gateway_bench.py measures; yields its infer URL and the worker's pid."""
    with tempfile.TemporaryDirectory(prefix="hostile-nginx-") as tmp:
        port = free_port()
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(instant_conf(Path(tmp), (port, free_port())))
        proc, log = spawn([*wrapper, "nginx", "-c", str(conf), "-p", tmp], prefix="hostile-nginx-")
        master = ManagedProcess(proc, port, log)
        try:
            wait_ready(master, "/v2/health/ready")
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            yield f"{master.url}/v2/models/wine/infer", int(children[0])
        finally:
            master.stop()
            log.unlink(missing_ok=True)


@contextlib.contextmanager
def gateway_in_front(upstream: str, wrapper: list[str], extra: list[str]) -> Iterator[ManagedProcess]:
    """A `mlrollout-gateway` sending every request to ``upstream`` (one stable track), ready when yielded."""
    table = {
        "version": 1,
        "mode": "canary",
        "tracks": {"stable": {"upstream": upstream, "weight": 100}},
        "fallback": {"requestTimeoutSeconds": 5, "chain": []},
    }
    with tempfile.TemporaryDirectory(prefix="hostile-gateway-") as tmp:
        routes = Path(tmp) / "routes.json"
        routes.write_text(json.dumps(table))
        port = free_port()
        cmd = [*wrapper, sys.executable, "-m", "mlrollout_serving.gateway", "--host", "127.0.0.1", "--port",
               str(port), "--routes-file", str(routes), "--log-level", "WARNING", *extra]  # fmt: skip
        with running(cmd, port, "/v2/health/ready", prefix="hostile-gateway-") as gateway:
            yield gateway


def wine_body() -> bytes:
    row = models.wine().samples[:1]
    return json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 13], "data": row.ravel().tolist()}]}
    ).encode()


def progress(repeat: int, unloaded: dict[str, Any], loaded: dict[str, Any]) -> str:
    u, lo, t = unloaded["steady"], loaded["steady"], loaded["target"]
    return (
        f"repeat {repeat}: unloaded p50 {u['p50_ms']:.2f} p99 {u['p99_ms']:.2f} ms, failed {u['failed']}; "
        f"loaded p50 {lo['p50_ms']:.2f} p99 {lo['p99_ms']:.2f} ms, failed {lo['failed']}; "
        f"crowd open {loaded['crowd'].get('open_peak')}, target CPU {unloaded['target']['cpu_share']:.2f} / "
        f"{t['cpu_share']:.2f}, RSS max {t['rss_mib_max']} MiB, fds {t['fds_before']} -> max {t['fds_max']} -> "
        f"{t['fds_after']}"
    )


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="infer URL of the target (default: start a wine model server)")
    p.add_argument("--pid", type=int, help="process to watch (with --url)")
    p.add_argument("--body", help="request body file for --url (default: one wine row, JSON)")
    p.add_argument("--server-arg", action="append", default=[], help="extra flag for the server started here")
    p.add_argument(
        "--through-gateway",
        action="store_true",
        help="put a mlrollout-gateway (the target, on --server-core) in front of the model server started here",
    )
    p.add_argument("--gateway-arg", action="append", default=[], help="extra flag for that gateway")
    p.add_argument(
        "--anchor-nginx",
        action="store_true",
        help="the target is one nginx worker answering a fixed inference answer (the anchor), on --server-core",
    )
    p.add_argument("--label", default="default", help="name of this scenario in the JSON")
    p.add_argument("--idle", type=int, default=1600)
    p.add_argument("--slow-heads", type=int, default=100)
    p.add_argument("--slow-bodies", type=int, default=100)
    p.add_argument("--silent", type=int, default=100)
    p.add_argument("--flooders", type=int, default=100)
    p.add_argument("--flood-bytes", type=int, default=1 << 20)
    p.add_argument("--flood-pause", type=float, default=1.0, help="seconds before a flooder reconnects")
    p.add_argument("--reconnect-pause", type=float, default=0.1, help="seconds before a slow client reconnects")
    p.add_argument("--rate", type=float, default=200.0, help="steady requests per second")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of steady requests per run")
    p.add_argument("--settle", type=float, default=2.0, help="seconds between the crowd's ramp-up and measuring")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--p99-ratio", type=float, default=2.0)
    p.add_argument("--server-core", type=int, default=1, help="core the started server is pinned to")
    p.add_argument("--client-core", type=int, default=0, help="core of the crowd")
    p.add_argument(
        "--steady-core", type=int, help="core of the steady client (default: the server's, when started here)"
    )
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args()
    if bool(args.url) != bool(args.pid):
        p.error("--url and --pid go together")
    plan = CrowdPlan(
        args.idle,
        args.slow_heads,
        args.slow_bodies,
        args.silent,
        args.flooders,
        args.flood_bytes,
        args.flood_pause,
        args.reconnect_pause,
    )
    runs: list[dict[str, Any]] = []
    with target(args) as (url, pid, body, headers):
        for i in range(args.repeats):
            unloaded = measure(args, body, headers, pid, None)
            loaded = measure(args, body, headers, pid, plan)
            runs.append({"repeat": i + 1, "unloaded": unloaded, "loaded": loaded})
            print(progress(i + 1, unloaded, loaded), flush=True)
    unloaded_p99 = median([r["unloaded"]["steady"]["p99_ms"] for r in runs])
    loaded_p99 = median([r["loaded"]["steady"]["p99_ms"] for r in runs])
    failed = sum(r["loaded"]["steady"]["failed"] + r["unloaded"]["steady"]["failed"] for r in runs)
    summary = {
        "unloaded_p50_ms": median([r["unloaded"]["steady"]["p50_ms"] for r in runs]),
        "unloaded_p99_ms": unloaded_p99,
        "loaded_p50_ms": median([r["loaded"]["steady"]["p50_ms"] for r in runs]),
        "loaded_p99_ms": loaded_p99,
        "p99_ratio": round(loaded_p99 / unloaded_p99, 2),
        "steady_failed": failed,
        "rss_mib_max": max(r["loaded"]["target"]["rss_mib_max"] for r in runs),
        "fds_leaked": max(r["loaded"]["target"]["fds_after"] - r["loaded"]["target"]["fds_before"] for r in runs),
        "passed": failed == 0 and loaded_p99 <= args.p99_ratio * unloaded_p99,
    }
    doc = {
        "label": args.label,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "nofile_soft_hard": resource.getrlimit(resource.RLIMIT_NOFILE),
        },
        "target": {
            "url": url,
            "server_args": args.server_arg,
            "started_here": not args.pid,
            "through_gateway": args.through_gateway,
            "anchor_nginx": args.anchor_nginx,
            "gateway_args": args.gateway_arg,
        },
        "crowd_plan": {**asdict(plan), "total": plan.total, "hostile": plan.hostile},
        "steady": {"rate_per_s": args.rate, "duration_s": args.duration},
        "summary": summary,
        "server_log": [line for line in getattr(args, "server_log_tail", "").splitlines() if "connection" in line],
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    existing: dict[str, Any] = json.loads(args.output.read_text()) if args.output.exists() else {}
    existing[args.label] = doc
    args.output.write_text(json.dumps(existing, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
