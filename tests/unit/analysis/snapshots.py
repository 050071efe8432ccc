"""Snapshot builders for the analysis unit tests: counts computed from distributions, not hard-coded."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import stats

from mlrollout.analysis import Snapshot, judge, parse_snapshot
from mlrollout.api.analysis import Judgement
from mlrollout.api.rolloutpolicy import RolloutPolicySpec
from mlrollout_serving.contract.metrics import LATENCY_BUCKETS

BOUNDS = tuple(b for b in LATENCY_BUCKETS if math.isfinite(b))  # the contract's, as the servers export them


def buckets(n: int, median: float = 0.02, sigma: float = 0.5) -> dict[str, int]:
    """Expected cumulative bucket counts of ``n`` log-normal latencies (rounded)."""
    cdf = stats.lognorm(sigma, scale=median).cdf(BOUNDS)
    out = {f"{b:g}": round(float(c) * n) for b, c in zip(BOUNDS, cdf, strict=True)}
    out["+Inf"] = n
    return out


def sampled_buckets(rng: np.random.Generator, n: int, median: float = 0.02, sigma: float = 0.5) -> dict[str, int]:
    """Cumulative bucket counts of ``n`` random log-normal latencies."""
    cdf = stats.lognorm(sigma, scale=median).cdf(BOUNDS)
    probs = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    cum = np.cumsum(rng.multinomial(n, probs))
    out = {f"{b:g}": int(c) for b, c in zip(BOUNDS, cum[:-1], strict=True)}
    out["+Inf"] = int(cum[-1])
    return out


def track(
    requests: int,
    error_rate: float = 0.01,
    median: float = 0.02,
    classes: tuple[float, ...] = (0.3, 0.4, 0.3),
) -> dict[str, Any]:
    errors = round(requests * error_rate)
    served = requests - errors
    predictions = {str(i): round(served * p) for i, p in enumerate(classes)}
    return {
        "requests": requests,
        "errors": errors,
        "latency_buckets": buckets(requests, median),
        "predictions": predictions,
    }


def healthy(stable: int = 108_000, candidate: int = 12_000) -> dict[str, Any]:
    """An A/A snapshot with exactly proportional counts: the ideal healthy candidate.

    20 minutes at 100 requests/s with 10% to the candidate: about what showing p99 within a 10% margin
    takes, and, at this 1% error rate, right at what showing the error rate within the default 30% of
    stable's takes (`PROMOTABLE` is twice as long: every default check passes with room to spare).
    """
    return {"stable": track(stable), "candidate": track(candidate), "elapsed_seconds": 1200.0}


PROMOTABLE = {"stable": 216_000, "candidate": 24_000}
"""40 minutes of a 10% canary at 100 requests/s: a healthy candidate at 1% errors passes every check."""


def judged(
    snapshot: Mapping[str, Any] | Snapshot, policy: Mapping[str, Any] | RolloutPolicySpec | None = None
) -> Judgement:
    """``judge`` on a snapshot and policy written as JSON (a RolloutPolicy manifest or its spec), the way
    ``mlrollout analyze`` and recorded files hand them over."""
    snap = snapshot if isinstance(snapshot, Snapshot) else parse_snapshot(snapshot)
    if isinstance(policy, Mapping):
        raw = policy["spec"] if policy.get("kind") == "RolloutPolicy" else policy
        policy = RolloutPolicySpec.model_validate(raw)
    return judge(snap, policy)
