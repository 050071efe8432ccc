"""Processes and clients for the gateway's component tests: the gateway, fake upstreams, a load client.

Real processes on loopback only; every process started here is stopped by its context manager.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import os
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from tests.support.procs import ManagedProcess, free_port, running

Proc = ManagedProcess  # the gateway tests' name for a process they start
FAKE_UPSTREAM = Path(__file__).with_name("fake_upstream.py")
READY_TIMEOUT = 90.0
INFER = "/v2/models/iris/infer"
"""The inference path every fake upstream answers."""
BODY: dict[str, Any] = {"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}
"""A request body the fake upstreams accept (they echo, they do not run a model)."""


@contextlib.contextmanager
def fake_upstream(name: str) -> Iterator[Proc]:
    """An instant OIP-shaped upstream whose answers name it; `control(...)` slows it or makes it fail."""
    port = free_port()
    with running([sys.executable, str(FAKE_UPSTREAM), str(port), name], port, "/count", prefix="fake-upstream-",
                 timeout=READY_TIMEOUT) as proc:  # fmt: skip
        yield proc


def control(upstream: Proc, **settings: float) -> None:
    post_json(upstream.url + "/control", settings)


def upstream_count(upstream: Proc) -> int:
    count: int = get_json(upstream.url + "/count")["count"]
    return count


class RouteFile:
    """The route-table file a gateway polls; writes are atomic renames (like kubelet's volume updates)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "routes.yaml"

    def write(self, table: Mapping[str, Any] | str) -> None:
        text = table if isinstance(table, str) else json.dumps(table)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)


# Runs the gateway under an open-file limit (soft and hard), as `ulimit -n` would.
_LIMITED = (
    "import resource, runpy, sys; n = int(sys.argv.pop(1)); resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); "
    "runpy.run_module('mlrollout_serving.gateway', run_name='__main__', alter_sys=True)"
)


@contextlib.contextmanager
def gateway(
    routes: RouteFile, *extra: str, file_source: bool = True, namespace: str = "test-ns", nofile: int | None = None,
    host: str = "127.0.0.1", port: int | None = None, model_deployment: str = "iris",
) -> Iterator[Proc]:  # fmt: skip
    """A `mlrollout-gateway` process reading `routes`, ready (a table loaded) when yielded.

    With `file_source=False` the route source comes from `extra` (e.g. `--routes-configmap NAME`);
    `nofile` runs it under that open-file limit. Two replicas can share a `port` on different loopback
    `host`s (127.0.0.2, 127.0.0.3), as two pods share a container port.
    """
    port = port or free_port()
    start = [sys.executable, "-m", "mlrollout_serving.gateway"]
    if nofile is not None:
        start = [sys.executable, "-c", _LIMITED, str(nofile)]
    cmd = [*start, "--host", host, "--port", str(port)]
    if file_source:
        cmd += ["--routes-file", str(routes.path)]
    cmd += ["--namespace", namespace, "--model-deployment", model_deployment, *extra]
    with running(cmd, port, "/v2/health/ready", prefix="mlrollout-gateway-", timeout=READY_TIMEOUT, host=host) as proc:
        yield proc


def table(
    version: int,
    stable: str,
    candidate: str | None = None,
    weight: float = 0.0,
    **extra: Any,
) -> dict[str, Any]:
    """A route table dict: `weight` percent to candidate, the rest to stable."""
    tracks: dict[str, Any] = {"stable": {"upstream": stable, "revision": "rev-stable", "weight": 100 - weight}}
    if candidate is not None:
        tracks["candidate"] = {"upstream": candidate, "revision": "rev-candidate", "weight": weight}
    return {"version": version, "mode": "canary", "tracks": tracks, **extra}


def shadow_table(stable: str, shadow: str) -> dict[str, Any]:
    """A route table of a shadow step: every request to stable (``r-stable``), a copy of each to the shadow
    (``r-candidate``)."""
    return {
        "version": 1, "mode": "canary",
        "tracks": {"stable": {"upstream": stable, "revision": "r-stable", "weight": 100}},
        "mirror": {"upstream": shadow, "revision": "r-candidate", "percent": 100},
    }  # fmt: skip


def feedback_keys(directory: Path) -> Path:
    """A feedback key file with one fresh key (id 1), as the operator's Secret is mounted."""
    keys = directory / "keys"
    keys.write_text(json.dumps({"1": base64.b64encode(os.urandom(32)).decode()}))
    return keys


def fallback(*steps: Mapping[str, object], timeout: float = 5.0, **extra: object) -> dict[str, Any]:
    """The `fallback` part of a route table: a chain of steps, the request timeout, anything else (a
    `circuitBreaker`)."""
    return {"fallback": {"requestTimeoutSeconds": timeout, "chain": list(steps), **extra}}


# -- HTTP --
@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def track(self) -> str:
        return self.headers.get("x-mlrollout-track", "")

    @property
    def version(self) -> int:
        return int(self.headers.get("x-mlrollout-route-version", "-1"))


def request(url: str, body: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
            timeout: float = 30.0, client: str | None = None) -> Answer:  # fmt: skip
    """POST `body` (GET without one) on a new connection; `client` is the loopback address to send from
    (127.0.0.2, 127.0.0.3, ...: another client, as far as the gateway can tell)."""
    parts = urllib.parse.urlsplit(url)
    source = None if client is None else (client, 0)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout, source_address=source)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        data = None if body is None else json.dumps(body).encode()
        conn.request("GET" if data is None else "POST", target, data, {"content-type": "application/json",
                                                                         **(headers or {})})  # fmt: skip
        resp = conn.getresponse()
        raw = resp.read()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(raw or b"{}"))
    finally:
        conn.close()


def post_json(url: str, body: Mapping[str, Any]) -> dict[str, Any]:
    return request(url, body).body


def get_json(url: str) -> dict[str, Any]:
    return request(url).body


def read_until(sock: socket.socket, predicate: Callable[[bytes], bool], timeout: float = 20.0) -> bytes:
    """Read until `predicate(everything read)` holds, the peer closes, or `timeout` passes."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate(data):
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    return data


def one_response(data: bytes) -> bool:
    """`read_until` predicate: a whole response with a content-length has arrived."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def exchange(port: int, data: bytes, *, until: Callable[[bytes], bool] = one_response, timeout: float = 20.0,
             client: str = "127.0.0.1") -> bytes:  # fmt: skip
    """Send raw bytes on a new connection and read the answer (`until` it is complete, or the close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(client, 0)) as sock:
        sock.sendall(data)
        return read_until(sock, until, timeout)


def memory_kib(proc: Proc, field: str = "VmHWM") -> int:
    """A process's memory from /proc/<pid>/status in KiB: `VmHWM` its peak resident size, `VmRSS` now."""
    for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{proc.proc.pid}/status")


def open_fds(proc: Proc) -> int:
    """How many file descriptors the process has open now."""
    return len(os.listdir(f"/proc/{proc.proc.pid}/fd"))


def infer_body(rows: Any, input_name: str = "input") -> dict[str, Any]:
    """An OIP request for float32 rows (a numpy array or nested lists)."""
    data = [[float(v) for v in row] for row in rows]
    return {"inputs": [{"name": input_name, "shape": [len(data), len(data[0])], "datatype": "FP32",
                        "data": [v for row in data for v in row]}]}  # fmt: skip


def metric_samples(url: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a /metrics page as (name, labels, value)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return [
        (s.name, dict(s.labels), s.value) for family in text_string_to_metric_families(text) for s in family.samples
    ]


def metric_sum(url: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(
        value for n, lab, value in metric_samples(url) if n == name and all(lab.get(k) == v for k, v in labels.items())
    )


# -- concurrent load (aiohttp client, keep-alive) --
@dataclass
class LoadResult:
    statuses: dict[int, int]
    tracks: dict[str, int]
    versions: dict[int, int]
    errors: list[str]

    @property
    def failed(self) -> int:
        return sum(n for code, n in self.statuses.items() if code != 200) + len(self.errors)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + len(self.errors)


async def _load(url: str, bodies: list[dict[str, Any]], concurrency: int, count: int | None,
                stop: threading.Event | None, headers: list[dict[str, str]] | None) -> LoadResult:  # fmt: skip
    import aiohttp

    result = LoadResult({}, {}, {}, [])
    sent = 0
    payloads = [json.dumps(b).encode() for b in bodies]

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while (count is None or sent < count) and (stop is None or not stop.is_set()):
            index = sent
            sent += 1
            hdrs = {"content-type": "application/json", **(headers[index % len(headers)] if headers else {})}
            try:
                async with session.post(url, data=payloads[index % len(payloads)], headers=hdrs) as resp:
                    await resp.read()
                    result.statuses[resp.status] = result.statuses.get(resp.status, 0) + 1
                    track = resp.headers.get("x-mlrollout-track", "")
                    result.tracks[track] = result.tracks.get(track, 0) + 1
                    version = int(resp.headers.get("x-mlrollout-route-version", "-1"))
                    result.versions[version] = result.versions.get(version, 0) + 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                result.errors.append(repr(exc))

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))
    return result


def load(url: str, bodies: list[dict[str, Any]], *, count: int, concurrency: int = 8,
         headers: list[dict[str, str]] | None = None) -> LoadResult:  # fmt: skip
    """Send `count` requests with `concurrency` keep-alive connections; tally statuses, tracks, versions."""
    return asyncio.run(_load(url, bodies, concurrency, count, None, headers))


def load_until(url: str, bodies: list[dict[str, Any]], stop: threading.Event, concurrency: int = 8) -> LoadResult:
    """Steady traffic until `stop` is set (run it in a thread)."""
    return asyncio.run(_load(url, bodies, concurrency, None, stop, None))
