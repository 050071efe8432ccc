"""Pure routing decisions: which track, which sticky bucket, what the breaker allows, which fallback next.

No I/O and no clock reads here: the proxy passes in the random draw, the time and the observed outcome,
so every branch is unit-tested on plain values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

from ..contract.routes import CircuitBreaker, FallbackStep, Sticky

__all__ = [
    "MAX_REMEMBERED",
    "Blame",
    "BreakerState",
    "Failure",
    "admit",
    "counts",
    "fallback_plan",
    "low_confidence",
    "on_failure",
    "on_success",
    "pick_track",
    "status_blame",
    "sticky_bucket",
    "sticky_key",
    "top_probability",
]

_T = TypeVar("_T")
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


Blame = Literal["upstream", "request", "answer"]
"""Whom a failed exchange may be blamed on; it decides how the circuit breaker counts the failure.

- ``upstream``: nothing of the request reached a working upstream (connect refused, reset, unreachable or
  timed out), or the upstream said it cannot serve (502, 503, 504). No request can cause that, so it
  always counts.
- ``request``: the request was sent and then lost: no answer within the timeout, the connection closed
  or broke HTTP before the answer. A request that is slow or crashes the upstream's handler can do that,
  so it counts once per distinct request (method, target, body) in a streak of failures.
- ``answer``: the upstream answered another 5xx, or more than the gateway holds. An upstream bug that
  some content triggers looks exactly like that, and one client can send that content again and again
  (or vary it), so it counts once per distinct client address *and* distinct request in a streak: one
  client, or one poison request from many clients, can never open the breaker for everybody.
"""

MAX_REMEMBERED = 1024
"""Clients and requests a breaker remembers per streak (beyond, new ones count without being remembered)."""


@dataclass(frozen=True, slots=True)
class Failure:
    """What the breaker learns of one failed exchange: whom to blame, the client's address, the request."""

    blame: Blame
    client: str
    request: bytes  # a digest of method, target and body


def status_blame(status: int) -> Blame:
    """Blame for an upstream's 5xx answer: 502/503/504 say the upstream cannot serve; others may be the
    request's doing."""
    return "upstream" if status in (502, 503, 504) else "answer"


@dataclass(frozen=True, slots=True)
class BreakerState:
    """Circuit breaker of one upstream: `closed` (normal), `open` (refusing), `half_open` (one probe out).

    A streak of failures (no success in between) remembers the clients and requests whose failures it
    counted, so a repeated one is not counted twice (`counts`).
    """

    state: Literal["closed", "open", "half_open"] = "closed"
    failures: int = 0
    opened_at: float = 0.0
    clients: frozenset[str] = frozenset()
    requests: frozenset[bytes] = frozenset()


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


def counts(state: BreakerState, failure: Failure) -> bool:
    """Does this failure add to the streak? See `Blame`."""
    if failure.blame == "upstream":
        return True
    if failure.request in state.requests:
        return False
    return failure.blame == "request" or failure.client not in state.clients


def _remember(known: frozenset[_T], item: _T) -> frozenset[_T]:
    return known if item in known or len(known) >= MAX_REMEMBERED else known | {item}


def on_failure(state: BreakerState, config: CircuitBreaker, now: float, failure: Failure) -> BreakerState:
    """Count a failure (if it `counts`); open after `consecutiveFailures` counted in a row, and at once when
    the half-open probe fails in a way that counts. A probe failure that does not count (the same client's
    or request's again) says nothing new: the next request probes."""
    if state.state == "open":
        return state
    if not counts(state, failure):
        return replace(state, state="open") if state.state == "half_open" else state  # opened_at is long past
    counted = replace(
        state,
        failures=state.failures + 1,
        clients=_remember(state.clients, failure.client),
        requests=_remember(state.requests, failure.request),
    )
    if state.state == "half_open" or counted.failures >= config.consecutive_failures:
        return replace(counted, state="open", opened_at=now)
    return counted


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
