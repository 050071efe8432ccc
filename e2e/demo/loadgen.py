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

Ground truth (optional): LABELS (path to a JSON list of each row's true class), LABEL_DELAY (seconds
between an answer and its label, as when the truth is learnt later), LABEL_SHARE (the share of answers
labelled, 0-1). A labelled answer's feedback id goes back to the gateway with the true class
(POST /v2/models/<model>/feedback); the log line counts labels sent and the gateway's statuses.
"""

from __future__ import annotations

import heapq
import http.client
import json
import os
import random
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
        self.first_failures: list[tuple[float, str, str]] = []  # when the first failures happened, and why
        self.labels: Counter[str] = Counter()  # feedback statuses from the gateway ("202", "409", "error:...")

    def record(self, code: str, version: str | None, seconds: float, why: str = "") -> None:
        """One answer; ``why``: for a failure, what the gateway said (its track header and the start of its
        body), so a failed run's report names the cause (a fallback's refusal, a limit, an upstream's error)."""
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
                    self.first_failures.append((round(time.time(), 3), code, why))
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
                **({"labels": dict(self.labels)} if self.labels else {}),
                **q,
            }


class Labeller:
    """Sends each labelled answer's true class back after LABEL_DELAY seconds, from one thread with one
    keep-alive connection; labels still due when the run stops are dropped (counted as "unsent")."""

    def __init__(self, target: str, model: str, delay: float, share: float, stats: Stats) -> None:
        self.url = urllib.parse.urlsplit(target)
        self.path = f"/v2/models/{model}/feedback"
        self.delay, self.share, self.stats = delay, share, stats
        self.due: list[tuple[float, int, str, int]] = []
        self.cond = threading.Condition()
        self.seq = 0

    def answered(self, feedback_id: str | None, label: int | None) -> None:
        if feedback_id is None or label is None or random.random() >= self.share:
            return
        with self.cond:
            self.seq += 1
            heapq.heappush(self.due, (time.monotonic() + self.delay, self.seq, feedback_id, label))
            self.cond.notify()

    def run(self, stop: threading.Event) -> None:
        conn: http.client.HTTPConnection | None = None
        while not stop.is_set():
            with self.cond:
                wait = self.due[0][0] - time.monotonic() if self.due else 0.5
                if wait > 0:
                    self.cond.wait(min(wait, 0.5))
                    continue
                _, _, feedback_id, label = heapq.heappop(self.due)
            body = json.dumps({"feedback_id": feedback_id, "label": label}).encode()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.url.hostname or "", self.url.port or 80, timeout=10)
                conn.request("POST", self.path, body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                code = str(resp.status)
            except (OSError, http.client.HTTPException) as exc:
                code = f"error:{type(exc).__name__}"
                if conn is not None:
                    conn.close()
                conn = None
            with self.stats.lock:
                self.stats.labels[code] += 1
        with self.cond, self.stats.lock:
            if self.due:
                self.stats.labels["unsent"] += len(self.due)


def worker(
    target: str,
    model: str,
    rows: list[tuple[list[float], int | None]],
    period: float,
    stop: threading.Event,
    stats: Stats,
    labeller: Labeller | None,
) -> None:
    url = urllib.parse.urlsplit(target)
    path = f"/v2/models/{model}/infer"
    conn: http.client.HTTPConnection | None = None
    i = 0
    next_at = time.monotonic()
    while not stop.is_set():
        row, label = rows[i % len(rows)]
        i += 1
        body = json.dumps(
            {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}
        ).encode()
        start = time.monotonic()
        code, version, why = "error", None, ""
        try:
            if conn is None:
                conn = http.client.HTTPConnection(url.hostname or "", url.port or 80, timeout=10)
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            code = str(resp.status)
            if resp.status != 200:
                why = f"track {resp.getheader('x-mlrollout-track', '-')}: {data[:300].decode(errors='replace')}"
            if resp.status == 200:
                answer = json.loads(data)
                version = answer.get("model_version")
                if labeller is not None:
                    labeller.answered((answer.get("parameters") or {}).get("feedback_id"), label)
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            code = f"error:{type(exc).__name__}"
            why = str(exc)[:300]
            if conn is not None:
                conn.close()
            conn = None
        stats.record(code, version, time.monotonic() - start, why)
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
    labels: list[int | None] = [None] * len(rows)
    if os.environ.get("LABELS"):
        with open(os.environ["LABELS"]) as fh:
            labels = json.load(fh)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if not warm_up(target, model, rows[0], float(os.environ.get("WARMUP", "180"))):
        print(json.dumps({"error": f"{target} did not answer during the warm-up"}), flush=True)
        return 1
    stats = Stats()
    labeller = None
    if os.environ.get("LABELS"):
        delay, share = float(os.environ.get("LABEL_DELAY", "2")), float(os.environ.get("LABEL_SHARE", "1"))
        labeller = Labeller(target, model, delay, share, stats)
    pairs = list(zip(rows, labels, strict=True))
    threads = [
        threading.Thread(
            target=worker,
            args=(target, model, pairs[k::workers] or pairs, workers / rate, stop, stats, labeller),
            daemon=True,
        )
        for k in range(workers)
    ]
    if labeller is not None:
        threads.append(threading.Thread(target=labeller.run, args=(stop,), daemon=True))
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
