"""Pure routing decisions: which track, which sticky bucket, what the breaker allows, which fallback next.

No I/O and no clock reads here: the proxy passes in the random draw, the time and the observed outcome,
so every branch is unit-tested on plain values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from ..contract.routes import CircuitBreaker, FallbackStep, Sticky

__all__ = [
    "BreakerState",
    "admit",
    "fallback_plan",
    "low_confidence",
    "on_failure",
    "on_success",
    "pick_track",
    "sticky_bucket",
    "sticky_key",
    "top_probability",
]

_TWO_64 = float(1 << 64)
_MISSING = object()


def sticky_bucket(key: bytes) -> float:
    """Map a sticky key to [0, 1) with blake2b: identical on every replica and after every restart.

    (Python's hash() is salted per process, so it would move users between tracks on restart.)
    """
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / _TWO_64


def pick_track(weights: Sequence[tuple[str, float]], draw: float) -> str:
    """Pick the track whose cumulative-weight interval holds `draw` in [0, 1).

    A 0% track owns an empty interval, so it is never picked; a 100% track owns all of [0, 1).
    """
    point = draw * 100.0
    cumulative = 0.0
    last = weights[0][0]
    for name, weight in weights:
        if weight <= 0.0:
            continue
        cumulative += weight
        last = name
        if point < cumulative:
            return name
    return last  # rounding at the top end: the last track with weight owns it


def sticky_key(sticky: Sticky, headers: Mapping[str, str], body: bytes) -> bytes | None:
    """The sticky key of a request, or None when the request does not carry one."""
    if sticky.header is not None:
        value = headers.get(sticky.header)
        return None if value is None or value == "" else value.encode()
    assert sticky.json_field is not None
    try:
        node: Any = json.loads(body)
    except ValueError:
        return None
    for part in sticky.json_field.split("."):
        if isinstance(node, dict):
            node = node.get(part, _MISSING)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
        if node is _MISSING:
            return None
    if node is None or isinstance(node, dict | list):
        return None
    return str(node).encode()


@dataclass(frozen=True, slots=True)
class BreakerState:
    """Circuit breaker of one upstream: `closed` (normal), `open` (refusing), `half_open` (one probe out)."""

    state: Literal["closed", "open", "half_open"] = "closed"
    failures: int = 0
    opened_at: float = 0.0


CLOSED = BreakerState()


def admit(state: BreakerState, config: CircuitBreaker, now: float) -> tuple[bool, BreakerState]:
    """May a request go to this upstream now? An open breaker lets exactly one probe through after the delay."""
    if state.state == "closed":
        return True, state
    if state.state == "open" and now - state.opened_at >= config.open_seconds:
        return True, replace(state, state="half_open")
    return False, state


def on_success(state: BreakerState) -> BreakerState:
    """Any success closes the breaker and forgets past failures."""
    return CLOSED if state is not CLOSED else state


def on_failure(state: BreakerState, config: CircuitBreaker, now: float) -> BreakerState:
    """Count a failure; open after `consecutiveFailures` in a row, and at once when the probe fails."""
    if state.state == "half_open":
        return BreakerState("open", state.failures + 1, now)
    if state.state == "open":
        return state
    failures = state.failures + 1
    if failures >= config.consecutive_failures:
        return BreakerState("open", failures, now)
    return BreakerState("closed", failures, 0.0)


def fallback_plan(chain: Sequence[FallbackStep], failed_track: str) -> tuple[FallbackStep, ...]:
    """The chain steps to try, in order, after `failed_track` failed (retrying stable on stable is skipped)."""
    return tuple(step for step in chain if not (step.action == "stable" and failed_track == "stable"))


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list) and data and isinstance(data[0], list):
        return [x for row in data for x in _flatten(row)]
    return data if isinstance(data, list) else [data]


_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64", "BF16"})


def top_probability(response: Mapping[str, Any]) -> float | None:
    """The lowest per-row top probability in an OIP response, or None if it has no probability output.

    A probability output is a floating-point output of shape [rows, classes] with classes > 1; with
    several rows the least confident row decides (the request is only as good as its weakest row).
    """
    for output in response.get("outputs") or ():
        if not isinstance(output, dict) or output.get("datatype") not in _FLOAT_TYPES:
            continue
        shape: list[Any] = list(output.get("shape") or ())
        if len(shape) != 2 or int(shape[1]) < 2:
            continue
        values = _flatten(output.get("data"))
        width = int(shape[1])
        rows = [values[i : i + width] for i in range(0, len(values), width)]
        if not rows or any(len(r) != width for r in rows):
            continue
        return min(max(float(v) for v in row) for row in rows)
    return None


def low_confidence(response: Mapping[str, Any], threshold: float) -> bool:
    """True when the model's top probability is below the threshold (no probability output: never low)."""
    top = top_probability(response)
    return top is not None and top < threshold
