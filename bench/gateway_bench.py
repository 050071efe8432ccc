"""Gateway benchmark: direct call vs nginx vs mlrollout-gateway, side by side in one run.

    .venv/bin/python bench/gateway_bench.py [--duration 5] [--repeats 3] [--profile]
    .venv/bin/python bench/gateway_bench.py --feedback [--repeats 7]   # what feedback costs: bench/feedback_bench.py

Two upstreams: an *instant* one (a separate nginx answering a fixed OIP body, so the proxy's own cost is
what is measured) and the *real model server* (`mlrollout-serve` with the wine logistic regression).
Proxies under test: nginx (Debian package, one worker, `split_clients` 90/10 between two keep-alive
upstream groups) and `mlrollout-gateway` (the same 90/10 canary table). Each proxy is pinned to one core
with taskset; the upstreams and the load generator (wrk, a separate process) share the other core.
For every (upstream, concurrency) the three targets run interleaved, `--repeats` times, and medians are
reported: throughput, p50/p99 latency, latency added over the direct call, ratios to nginx, and the CPU
time the proxy process spent per request (from /proc; robust to other load on the machine).
Results: a table on stdout and bench/results/gateway.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.support.models builds the real ONNX model
from tests.support.procs import free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "gateway.json"
PROFILE_OUT = ROOT / "bench" / "results" / "gateway-profile.txt"
CANDIDATE_PERCENT = 10
CLK_TCK = os.sysconf("SC_CLK_TCK")


def wait_ok(url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready within {timeout}s")


def pin(core: int | None) -> list[str]:
    return ["taskset", "-c", str(core)] if core is not None and shutil.which("taskset") else []


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]

    def cpu_pid(self) -> int:
        """The process doing the work: nginx's single worker, or the process itself."""
        if self.name.startswith("nginx"):
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            return int(children[0])
        return self.proc.pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.cpu_pid()}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


@contextlib.contextmanager
def running(name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[Proc]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield Proc(name, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


NGINX_COMMON = """
worker_processes 1;
daemon off;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/{name}-body; proxy_temp_path {tmp}/{name}-proxy;
  fastcgi_temp_path {tmp}/{name}-fcgi; uwsgi_temp_path {tmp}/{name}-uwsgi; scgi_temp_path {tmp}/{name}-scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
{body}
}}
"""

INSTANT_BODY = (
    '{"model_name":"wine","model_version":"1","outputs":[{"name":"label","datatype":"INT64","shape":[1],'
    '"data":[0]},{"name":"probabilities","datatype":"FP32","shape":[1,3],"data":[0.98,0.01,0.01]}]}'
)


def instant_conf(tmp: Path, ports: tuple[int, int]) -> str:
    body = f"""
  server {{
    listen 127.0.0.1:{ports[0]}; listen 127.0.0.1:{ports[1]};
    location / {{ default_type application/json; return 200 '{INSTANT_BODY}'; }}
  }}"""
    return NGINX_COMMON.format(tmp=tmp, name="instant", body=body)


def proxy_conf(tmp: Path, listen: dict[str, int], upstreams: dict[str, tuple[int, int]]) -> str:
    blocks = []
    for kind, port in listen.items():
        stable, candidate = upstreams[kind]
        blocks.append(f"""
  upstream {kind}_stable {{ server 127.0.0.1:{stable}; keepalive 256; }}
  upstream {kind}_candidate {{ server 127.0.0.1:{candidate}; keepalive 256; }}
  split_clients "${{request_id}}" ${kind}_track {{ {CANDIDATE_PERCENT}% {kind}_candidate; * {kind}_stable; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://${kind}_track;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}""")
    return NGINX_COMMON.format(tmp=tmp, name="proxy", body="".join(blocks))


def route_table(stable: int, candidate: int) -> str:
    return json.dumps(
        {
            "version": 1,
            "mode": "canary",
            "tracks": {
                "stable": {"upstream": f"http://127.0.0.1:{stable}", "weight": 100 - CANDIDATE_PERCENT},
                "candidate": {"upstream": f"http://127.0.0.1:{candidate}", "weight": CANDIDATE_PERCENT},
            },
            "fallback": {"requestTimeoutSeconds": 5, "chain": [{"action": "stable"}]},
        }
    )


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass
class Run:
    rps: float
    p50: float
    p99: float
    requests: int
    errors: int
    cpu_us_per_request: float | None
    load: float = 0.0
    """1-minute load average right after the run: how busy the rest of the machine was."""


def wrk_command(url: str, concurrency: int, duration: float, script: Path, core: int | None) -> list[str]:
    return [*pin(core), "wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--latency", "-s", str(script), url]


def wrk(url: str, concurrency: int, duration: float, script: Path, core: int | None, proc: Proc | None) -> Run:
    cpu0 = proc.cpu_seconds() if proc else 0.0
    cmd = wrk_command(url, concurrency, duration, script, core)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    cpu1 = proc.cpu_seconds() if proc else 0.0
    return parse_wrk(out, cpu1 - cpu0 if proc else None)


def parse_wrk(out: str, cpu_seconds: float | None) -> Run:
    """wrk's report as a Run; ``cpu_seconds``: what the watched process spent meanwhile (None: not watched)."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = _seconds(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _seconds(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    for pattern in (
        r"Non-2xx or 3xx responses: (\d+)",
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
    ):
        match = re.search(pattern, out)
        if match:
            errors += sum(int(g) for g in match.groups())
    cpu = cpu_seconds / requests * 1e6 if cpu_seconds is not None and requests else None
    return Run(rps, p50, p99, requests, errors, cpu, os.getloadavg()[0])


def wrk_script(tmp: Path, body: dict[str, Any]) -> Path:
    path = tmp / "post.lua"
    payload = json.dumps(body).replace("\\", "\\\\").replace("'", "\\'")
    path.write_text(f"wrk.method = 'POST'\nwrk.body = '{payload}'\nwrk.headers['Content-Type'] = 'application/json'\n")
    return path


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def profile_gateway(
    tmp: Path,
    routes: Path,
    script: Path,
    proxy_core: int | None,
    other: int | None,
    duration: float,
    flags: tuple[str, ...] = (),
    path: str = "/v2/models/wine/infer",
) -> str:
    """Run the gateway (with ``flags``) under cProfile at concurrency 16, wrk POSTing ``script``'s requests to
    ``path``; the top functions by own time."""
    import pstats

    port = free_port()
    prof = tmp / "gateway.prof"
    cmd = [
        *pin(proxy_core),
        sys.executable,
        "-m",
        "cProfile",
        "-o",
        str(prof),
        "-m",
        "mlrollout_serving.gateway",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--routes-file",
        str(routes),
        "--log-level",
        "WARNING",
        *flags,
    ]
    with running("gateway-profiled", cmd, tmp / "gateway-profiled.log"):
        wait_ok(f"http://127.0.0.1:{port}/v2/health/ready")
        wrk(f"http://127.0.0.1:{port}{path}", 16, duration, script, other, None)
    stats = pstats.Stats(str(prof))
    stats.sort_stats("tottime")
    import io

    buffer = io.StringIO()
    stats.stream = buffer  # type: ignore[attr-defined]
    stats.print_stats(18)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--upstreams", nargs="+", default=["instant", "model"], choices=["instant", "model"])
    parser.add_argument("--profile", action="store_true", help="also profile the gateway (cProfile)")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON results (default {RESULTS.name})")
    group = parser.add_argument_group("feedback (issue #14; bench/feedback_bench.py, results in feedback.json)")
    group.add_argument("--feedback", action="store_true", help="measure what feedback ids and labels cost instead")
    group.add_argument("--feedback-concurrency", type=int, nargs="+", default=[1, 16], help="minting: wrk -c")
    group.add_argument("--ingest-concurrency", type=int, nargs="+", default=[1, 16], help="labels: wrk -c")
    group.add_argument("--flood-concurrency", type=int, nargs="+", default=[16], help="label flood: wrk -c")
    group.add_argument(
        "--flood-pause-ms", type=int, default=0, help="label flood: each connection's pause between labels (0: none)"
    )
    group.add_argument("--steady-rate", type=float, default=200.0, help="inference requests/s beside the flood")
    group.add_argument(
        "--ids-per-second", type=float, default=40000.0, help="fresh ids minted per second of a label run"
    )
    group.add_argument(
        "--feedback-parts", nargs="+", default=["minting", "ingestion", "inference", "micro"],
        choices=["minting", "alternating", "ingestion", "inference", "micro"],
        help="which measurements to run (alternating: minting at c=1, the gateways taking turns per request)",
    )  # fmt: skip
    group.add_argument("--alternating-blocks", type=int, default=200, help="alternating: blocks (paired differences)")
    group.add_argument("--alternating-rounds", type=int, default=100, help="alternating: requests per gateway a block")
    group.add_argument(
        "--alternating-sets",
        nargs="+",
        metavar="[BURST:]A,B,...",
        help="alternating: which gateways take turns, one measurement per set, each starting with without_ids "
        "(default: all of them together; the more take turns, the colder each one's caches), and how many "
        "requests each gets in a row per turn (BURST, default 1: each request after the others' turns; e.g. "
        "100: its own requests in a row, as with wrk -c1; a block then has --alternating-rounds / BURST rounds)",
    )
    group.add_argument(
        "--feedback-base",
        metavar="REV",
        help="also run the gateway of git revision REV (minting, labels, inference), interleaved",
    )
    group.add_argument(
        "--feedback-floors",
        action="store_true",
        help="minting: also gateways cut down to no id (its call only), a constant id and the HMAC alone "
        "(bench/feedback_floor.py), and a second gateway without ids (the A/A control)",
    )
    args = parser.parse_args()
    load_at_start = os.getloadavg()
    for tool in ("wrk",) if args.feedback else ("nginx", "wrk"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is needed (Debian package {tool}; see scripts/system-deps)")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    cores = os.cpu_count() or 1
    proxy_core, other_core = (0, 1) if cores >= 2 else (None, None)
    args.other_core = other_core

    from tests.support.models import wine

    model = wine()
    body = {
        "inputs": [
            {
                "name": model.input_name,
                "shape": [1, model.n_features],
                "datatype": "FP32",
                "data": [float(v) for v in model.samples[0]],
            }
        ]
    }
    if args.feedback:
        from feedback_bench import run

        run(args, model, body, proxy_core)
        return
    args.out = args.out or RESULTS
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    script = wrk_script(tmp, body)
    ports = {k: free_port() for k in ("i1", "i2", "model", "nginx_instant", "nginx_model", "gw_instant", "gw_model")}
    upstreams = {"instant": (ports["i1"], ports["i2"]), "model": (ports["model"], ports["model"])}
    (tmp / "instant.conf").write_text(instant_conf(tmp, (ports["i1"], ports["i2"])))
    listen = {"instant": ports["nginx_instant"], "model": ports["nginx_model"]}
    (tmp / "proxy.conf").write_text(proxy_conf(tmp, listen, upstreams))
    for kind in ("instant", "model"):
        (tmp / f"routes-{kind}.json").write_text(route_table(*upstreams[kind]))

    def gateway_cmd(kind: str) -> list[str]:
        return [
            *pin(proxy_core),
            sys.executable,
            "-m",
            "mlrollout_serving.gateway",
            "--host",
            "127.0.0.1",
            "--port",
            str(ports[f"gw_{kind}"]),
            "--routes-file",
            str(tmp / f"routes-{kind}.json"),
            "--log-level",
            "WARNING",
        ]

    server_cmd = [
        *pin(other_core),
        sys.executable,
        "-m",
        "mlrollout_serving.server",
        "--model-uri",
        model.uri,
        "--sha256",
        model.sha256,
        "--model-name",
        "wine",
        "--host",
        "127.0.0.1",
        "--port",
        str(ports["model"]),
        "--log-level",
        "WARNING",
    ]
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            running(
                "nginx-instant",
                [*pin(other_core), nginx, "-c", str(tmp / "instant.conf"), "-p", str(tmp)],
                tmp / "instant.log",
            )
        )
        stack.enter_context(running("model-server", server_cmd, tmp / "server.log"))
        proxies = {
            "nginx": stack.enter_context(
                running(
                    "nginx-proxy",
                    [*pin(proxy_core), nginx, "-c", str(tmp / "proxy.conf"), "-p", str(tmp)],
                    tmp / "proxy.log",
                )
            ),
            "gateway_instant": stack.enter_context(running("gateway", gateway_cmd("instant"), tmp / "gw-i.log")),
            "gateway_model": stack.enter_context(running("gateway", gateway_cmd("model"), tmp / "gw-m.log")),
        }
        wait_ok(f"http://127.0.0.1:{ports['model']}/v2/health/ready")
        for port in (ports["i1"], ports["nginx_instant"], ports["nginx_model"], ports["gw_instant"], ports["gw_model"]):
            wait_ok(f"http://127.0.0.1:{port}/v2/health/ready")
        path = "/v2/models/wine/infer"
        for kind in args.upstreams:
            targets = {
                "direct": (f"http://127.0.0.1:{upstreams[kind][0]}{path}", None),
                "nginx": (f"http://127.0.0.1:{ports[f'nginx_{kind}']}{path}", proxies["nginx"]),
                "gateway": (f"http://127.0.0.1:{ports[f'gw_{kind}']}{path}", proxies[f"gateway_{kind}"]),
            }
            for conc in args.concurrency:
                for url, _ in targets.values():  # warm up connections and caches
                    wrk(url, conc, 1, script, other_core, None)
                runs: dict[str, list[Run]] = {name: [] for name in targets}
                for _ in range(args.repeats):
                    for name, (url, proc) in targets.items():
                        runs[name].append(wrk(url, conc, args.duration, script, other_core, proc))
                summary: dict[str, Any] = {}
                for name, rs in runs.items():
                    summary[name] = {
                        "rps": median([r.rps for r in rs]),
                        "p50_ms": median([r.p50 * 1e3 for r in rs]),
                        "p99_ms": median([r.p99 * 1e3 for r in rs]),
                        "cpu_us_per_request": median([r.cpu_us_per_request for r in rs]),
                        "errors": sum(r.errors for r in rs),
                        "runs": [asdict(r) for r in rs],
                    }
                for name in ("nginx", "gateway"):
                    s, d = summary[name], summary["direct"]
                    s["added_p50_ms"] = s["p50_ms"] - d["p50_ms"]
                    s["added_p99_ms"] = s["p99_ms"] - d["p99_ms"]
                g, n = summary["gateway"], summary["nginx"]
                summary["gateway_vs_nginx"] = {
                    "throughput_ratio": g["rps"] / n["rps"] if n["rps"] else None,
                    "cpu_per_request_ratio": (
                        n["cpu_us_per_request"] / g["cpu_us_per_request"]
                        if g["cpu_us_per_request"] and n["cpu_us_per_request"]
                        else None
                    ),
                }
                results[f"{kind}/c{conc}"] = summary
                print_row(kind, conc, summary, flush=True)
        if args.profile and "instant" in args.upstreams:
            results["profile_top"] = profile_gateway(
                tmp, tmp / "routes-instant.json", script, proxy_core, other_core, args.duration
            )
            PROFILE_OUT.write_text(results["profile_top"])
    meta: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cores": cores,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
        "settings": {
            "duration_s": args.duration,
            "repeats": args.repeats,
            "candidate_percent": CANDIDATE_PERCENT,
            "proxy_core": proxy_core,
            "upstream_and_wrk_core": other_core,
        },
        "nginx": subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print_table(results)
    print(f"\nload average at the end: {meta['machine']['load_average_at_end']}; JSON: {args.out}")
    if "profile_top" in results:
        print(f"profile (top functions by own time) in {PROFILE_OUT}")
    shutil.rmtree(tmp, ignore_errors=True)


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def print_row(kind: str, conc: int, s: dict[str, Any], flush: bool = False) -> None:
    g, n, d = s["gateway"], s["nginx"], s["direct"]
    print(
        f"[{kind} c={conc}] direct {d['rps']:.0f} rps, nginx {n['rps']:.0f}, gateway {g['rps']:.0f} "
        f"(ratio {_f(s['gateway_vs_nginx']['throughput_ratio'], '.2f')})",
        flush=flush,
    )


def print_table(results: dict[str, Any]) -> None:
    header = (
        "| upstream | conc | direct rps | nginx rps | gateway rps | gw/nginx rps | added p50 nginx | "
        "added p50 gw | added p99 nginx | added p99 gw | CPU µs/req nginx | CPU µs/req gw |"
    )
    print("\n" + header)
    print("|" + "|".join(["---"] * 12) + "|")
    for key, s in results.items():
        if "/" not in key:
            continue
        kind, conc = key.split("/c")
        g, n, d = s["gateway"], s["nginx"], s["direct"]
        print(
            f"| {kind} | {conc} | {d['rps']:.0f} | {n['rps']:.0f} | {g['rps']:.0f} | "
            f"{_f(s['gateway_vs_nginx']['throughput_ratio'], '.2f')} | {n['added_p50_ms']:.3f} ms | "
            f"{g['added_p50_ms']:.3f} ms | {n['added_p99_ms']:.3f} ms | {g['added_p99_ms']:.3f} ms | "
            f"{_f(n['cpu_us_per_request'], '.0f')} | {_f(g['cpu_us_per_request'], '.0f')} |"
        )


if __name__ == "__main__":
    main()
