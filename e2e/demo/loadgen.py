"""A bounded load generator that runs as a pod and calls a ModelDeployment through its gateway Service.

Standard library only (it runs in the serving image). It sends Open Inference Protocol requests at a
fixed total rate from a few threads with keep-alive connections, one held-out row per request, and
prints one JSON line per second with cumulative counts: requests sent, answered 200, failed (by
status code or error), answers by model version, and latency quantiles of the last second. Tests and
the demo read the last line of the pod's log; the rate and the duration bound the load.

Environment: TARGET (http://host:port), MODEL (OIP model name), RATE (requests/s, total), WORKERS,
DURATION (seconds, 0 = until stopped), ROWS (path to a JSON list of rows), WARMUP (seconds: before
counting, wait at most this long for the first successful answer, so the counts start once the Service
routes; a target that never answers fails the run).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import threading
import time
import urllib.parse
from collections import Counter


class Stats:
    """Counters shared by the workers; `snapshot` is what one log line shows."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.ok = 0
        self.failed = 0
        self.codes: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.window: list[float] = []
        self.first_failures: list[tuple[float, str]] = []  # when the first failures happened, and why

    def record(self, code: str, version: str | None, seconds: float) -> None:
        with self.lock:
            self.sent += 1
            self.codes[code] += 1
            if code == "200":
                self.ok += 1
                if version:
                    self.versions[version] += 1
            else:
                self.failed += 1
                if len(self.first_failures) < 20:
                    self.first_failures.append((round(time.time(), 3), code))
            self.window.append(seconds)

    def snapshot(self) -> dict[str, object]:
        with self.lock:
            lat = sorted(self.window)
            self.window = []
            # a second without answers (e.g. the last one, after SIGTERM) has no quantiles
            q = (
                {f"p{int(p * 100)}_ms": round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) for p in (0.5, 0.99)}
                if lat
                else {}
            )
            return {
                "t": round(time.time(), 3),
                "sent": self.sent,
                "ok": self.ok,
                "failed": self.failed,
                "codes": dict(self.codes),
                "versions": dict(self.versions),
                **({"first_failures": list(self.first_failures)} if self.first_failures else {}),
                **q,
            }


def worker(
    target: str, model: str, rows: list[list[float]], period: float, stop: threading.Event, stats: Stats
) -> None:
    url = urllib.parse.urlsplit(target)
    path = f"/v2/models/{model}/infer"
    conn: http.client.HTTPConnection | None = None
    i = 0
    next_at = time.monotonic()
    while not stop.is_set():
        row = rows[i % len(rows)]
        i += 1
        body = json.dumps(
            {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}
        ).encode()
        start = time.monotonic()
        code, version = "error", None
        try:
            if conn is None:
                conn = http.client.HTTPConnection(url.hostname or "", url.port or 80, timeout=10)
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            code = str(resp.status)
            if resp.status == 200:
                version = json.loads(data).get("model_version")
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            code = f"error:{type(exc).__name__}"
            if conn is not None:
                conn.close()
            conn = None
        stats.record(code, version, time.monotonic() - start)
        next_at += period
        delay = next_at - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        else:
            next_at = time.monotonic()  # behind schedule: do not burst to catch up


def warm_up(target: str, model: str, row: list[float], timeout: float) -> bool:
    """Waits (uncounted) for the first 200 from the target; False if none came within TIMEOUT seconds."""
    url = urllib.parse.urlsplit(target)
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": row}]})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(url.hostname or "", url.port or 80, timeout=5)
            conn.request("POST", f"/v2/models/{model}/infer", body=body, headers={"Content-Type": "application/json"})
            ok = conn.getresponse().status == 200
            conn.close()
            if ok:
                return True
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.5)
    return False


def main() -> int:
    target = os.environ["TARGET"]
    model = os.environ["MODEL"]
    rate = float(os.environ.get("RATE", "20"))
    workers = int(os.environ.get("WORKERS", "4"))
    duration = float(os.environ.get("DURATION", "0"))
    with open(os.environ.get("ROWS", "/config/rows.json")) as fh:
        rows = json.load(fh)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if not warm_up(target, model, rows[0], float(os.environ.get("WARMUP", "180"))):
        print(json.dumps({"error": f"{target} did not answer during the warm-up"}), flush=True)
        return 1
    stats = Stats()
    threads = [
        threading.Thread(
            target=worker, args=(target, model, rows[k::workers] or rows, workers / rate, stop, stats), daemon=True
        )
        for k in range(workers)
    ]
    for t in threads:
        t.start()
    started = time.monotonic()
    try:
        while not stop.is_set():
            stop.wait(1.0)
            print(json.dumps(stats.snapshot()), flush=True)
            if duration and time.monotonic() - started >= duration:
                stop.set()
    except KeyboardInterrupt:
        stop.set()
    for t in threads:
        t.join(timeout=15)
    print(json.dumps({**stats.snapshot(), "done": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
