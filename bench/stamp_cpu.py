"""CPU time of ``Feedback.stamp`` (reading an answer, minting its id, splicing it in) and of the header line, in
this process, for bench/feedback_bench.py's paired micro-benchmark:

    python bench/stamp_cpu.py KEYS_FILE ANSWER_FILE [CORE|none] [PREDICTED_FILE]

Run once per version and round with ``PYTHONPATH`` naming the version's ``inference/`` tree (the base's from
``git archive``), so the two versions alternate in fresh processes on the same core. Prints one JSON line:
µs of thread CPU time per call (``time.thread_time``: time this thread ran, not the wall clock, which on a
shared machine also counts the time other processes held the core), hot (the minimum over 7 loops of
20,000 calls, and their median) and cold (the CPU caches emptied before each call; the median of 300).
``PREDICTED_FILE``: the model server's predictions header for the answer (contract.predicted); a version whose
``Feedback.stamp`` takes it is given it, as its gateway is (``stamp_and_header``), and is also timed reading
the answer, as for an upstream without the header (``read_stamp_and_header``).
"""

from __future__ import annotations

import inspect
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlrollout_serving.gateway.feedback import Feedback, FeedbackConfig

_EVICT = bytearray(16 << 20)  # four times this machine's L2: writing it leaves the caches cold


def header(minted: Any) -> bytes:
    """The response header line, however the version's ``Minted`` holds the id (bytes ``id``, or the older
    text ``token`` only)."""
    raw: bytes = minted.id if hasattr(minted, "id") else minted.token.encode()
    return b"x-mlrollout-feedback-id: " + raw + b"\r\n"


def hot(call: Callable[[], object], number: int = 20_000, loops: int = 7) -> dict[str, float]:
    per_call = []
    for _ in range(loops):
        started = time.thread_time()
        for _ in range(number):
            call()
        per_call.append((time.thread_time() - started) / number * 1e6)
    return {"min_us": min(per_call), "median_us": statistics.median(per_call)}


def cold(call: Callable[[], object], calls: int = 300) -> dict[str, float]:
    per_call = []
    for _ in range(calls):
        _EVICT[::64] = bytes(len(_EVICT) // 64)  # one write per cache line
        started = time.thread_time()
        call()
        per_call.append((time.thread_time() - started) * 1e6)
    return {"median_us": statistics.median(per_call)}


def main(keys_path: str, answer_path: str, core: int | None, predicted_path: str | None) -> dict[str, object]:
    if core is not None:
        os.sched_setaffinity(0, {core})
    answer = Path(answer_path).read_bytes()
    feedback = Feedback(FeedbackConfig(keys_path, replica=0x0A000105))
    now = int(time.time())
    takes_header = "predicted" in inspect.signature(feedback.stamp).parameters
    predicted = Path(predicted_path).read_bytes() if predicted_path and takes_header else None

    def read() -> None:
        stamped = feedback.stamp("stable", "27d8bf81b807fff7", answer, False, now)
        assert stamped is not None
        header(stamped[1])

    def unread() -> None:
        stamped = feedback.stamp("stable", "27d8bf81b807fff7", answer, False, now, predicted)
        assert stamped is not None
        header(stamped[1])

    stamp = read if predicted is None else unread
    stamp()
    out: dict[str, object] = {"stamp_and_header": hot(stamp), "stamp_and_header_cold": cold(stamp)}
    if predicted is not None:
        out |= {"read_stamp_and_header": hot(read), "read_stamp_and_header_cold": cold(read)}
    return out


if __name__ == "__main__":
    keys, answer, core, predicted = (*sys.argv[1:], "none", "")[:4] if len(sys.argv) < 4 else (*sys.argv[1:], "")[:4]
    print(json.dumps(main(keys, answer, None if core == "none" else int(core), predicted or None)))
