"""``mlrollout plan``: how long each step of a policy takes to decide at a given traffic, and how well it decides.

A sample-size calculation for sequential tests: from the policy, the expected traffic and the levels stable
shows (error rate, latency), each analysed step gets the candidate requests and the time a candidate like
stable needs to pass every check, the chance it does within the step's ``maxDuration``, and the chance the
step rolls back x1.5 and x2 error rates and a 20% slowdown within it (``mlrollout.analysis.forecast``;
docs/analysis.md, "Time to decision"). ``mlrollout validate --rps`` warns with the same numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mlrollout.analysis.carry import StepEvidence
from mlrollout.analysis.forecast import REGRESSIONS, LatencyShape, StepTraffic, forecast_step
from mlrollout.analysis.judge import alpha_shares
from mlrollout.analysis.snapshot import parse_snapshot
from mlrollout.api.common import parse_duration
from mlrollout.api.rolloutpolicy import RolloutPolicySpec, Step
from mlrollout.policy import analysed_index, analysed_steps

__all__ = ["Assumptions", "PlanError", "StepPlan", "main", "plan", "render", "warnings"]

DEFAULT_ERROR_RATE = 0.01
DEFAULT_P99 = 0.05


class PlanError(ValueError):
    """An assumption no plan can be made from; the message names the option."""


@dataclass(frozen=True)
class Assumptions:
    """The traffic and the stable levels a plan assumes."""

    rps: float
    error_rate: float = DEFAULT_ERROR_RATE
    latency_p99: float = DEFAULT_P99
    latency_p50: float | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.rps) or self.rps <= 0:
            raise PlanError(
                f"--rps: expected traffic must be a positive number of requests per second, got {self.rps:g}"
            )
        if not 0 <= self.error_rate < 1:
            raise PlanError(f"--base-error-rate: must be a rate in [0, 1), got {self.error_rate:g}")
        if not math.isfinite(self.latency_p99) or self.latency_p99 <= 0:
            raise PlanError(f"--latency-p99: must be a positive number of seconds, got {self.latency_p99:g}")
        if self.latency_p50 is not None and not 0 < self.latency_p50 < self.latency_p99:
            raise PlanError(f"--latency-p50: must be positive and below the p99, got {self.latency_p50:g}")

    def latency(self) -> LatencyShape:
        return LatencyShape.from_quantile(self.latency_p99, 0.99, self.latency_p50)


@dataclass(frozen=True)
class StepPlan:
    """One analysed step at the assumed traffic (times in seconds; ``inf``: never)."""

    index: int
    kind: str
    summary: str
    max_duration: str
    candidate_requests: float
    seconds: float
    slowest: str
    promote: float
    rollback: dict[str, float]

    @property
    def decides(self) -> bool:
        """Whether a candidate like stable is expected to pass before ``maxDuration`` runs out."""
        return self.seconds <= parse_duration(self.max_duration)


def _traffic(step: Step, a: Assumptions) -> StepTraffic | None:
    """What the step's checks count per second: canary weights split live traffic; shadow and blue-green
    preview copy a share of it to the candidate while stable answers all of it."""
    shape, p = a.latency(), a.error_rate
    if step.canary is not None:
        w = step.canary.weight / 100
        return StepTraffic(a.rps * (1 - w), a.rps * w, p, shape)
    if step.shadow is not None:
        return StepTraffic(a.rps, a.rps * step.shadow.mirror_percent / 100, p, shape)
    if step.blue_green is not None and step.blue_green.preview_analysis:
        return StepTraffic(a.rps, a.rps * step.blue_green.preview_mirror_percent / 100, p, shape)
    return None


def _shares(spec: RolloutPolicySpec) -> dict[str, float]:
    """The alpha budget of a look with latency histograms and predictions on both tracks (a classifier
    without a reference profile), as the judge spends it."""
    track = {"requests": 1, "latency_buckets": {"+Inf": 1}, "predictions": {"0": 1}}
    return alpha_shares(parse_snapshot({"stable": track, "candidate": track}), spec)


def plan(spec: RolloutPolicySpec, a: Assumptions) -> list[StepPlan]:
    """Every analysed step of the policy at the assumed traffic (pauses and unanalysed switches left out).

    Evidence carried from earlier steps is taken as none (the most a step can need on its own).
    """
    shares = _shares(spec)
    steps = spec.strategy.steps
    total = max(analysed_steps(spec.strategy), 1)
    out = []
    for index, step in enumerate(steps):
        analysed = step.shadow or step.canary or step.blue_green
        traffic = _traffic(step, a)
        if analysed is None or traffic is None:
            continue
        evidence = StepEvidence(step=analysed_index(spec.strategy, index), steps=total)
        f = forecast_step(spec, traffic, shares, parse_duration(analysed.max_duration), analysed.min_requests,
                          evidence)  # fmt: skip
        out.append(StepPlan(index, step.kind, step.summary(), analysed.max_duration, f.candidate_requests, f.seconds,
                            f.slowest, f.promote, f.rollback))  # fmt: skip
    return out


def _minutes(seconds: float) -> str:
    return "never" if not math.isfinite(seconds) else f"{seconds / 60:.1f}"


def _count(n: float) -> str:
    return "-" if not math.isfinite(n) else f"{n:,.0f}"


def warnings(plans: Sequence[StepPlan], a: Assumptions, field: str = "spec.strategy.steps") -> list[tuple[str, str]]:
    """(field path, message) for every step that cannot decide within its maxDuration at this traffic."""
    out = []
    for p in plans:
        if p.decides:
            continue
        need = f"never passes {p.slowest} at this traffic" if not math.isfinite(p.seconds) else (
            f"passes after about {_minutes(p.seconds)} min ({_count(p.candidate_requests)} candidate requests; "
            f"slowest {p.slowest})"
        )  # fmt: skip
        kind = "blueGreen" if p.kind == "blueGreen" else p.kind
        out.append((
            f"{field}[{p.index}].{kind}.maxDuration",
            f"{p.max_duration} cannot decide at {a.rps:g} requests/s, {a.error_rate:.3g} errors and a "
            f"{a.latency_p99 * 1000:g} ms p99: a candidate like stable {need}; the step would end by the policy's "
            "onInconclusive",
        ))  # fmt: skip
    return out


def render(spec: RolloutPolicySpec, plans: Sequence[StepPlan], a: Assumptions, name: str) -> str:
    """The plan as a table, the assumptions first and the warnings last."""
    shape = a.latency()
    margins = spec.significance.margins
    errors = margins.error_rate.describe(lambda x: f"{x * 100:g} pp")
    latency = margins.latency.describe(lambda x: f"{x * 1000:g} ms")
    lines = [
        f"Plan for {name} at {a.rps:g} requests/s: stable error rate {a.error_rate:.3g}, p99 {a.latency_p99 * 1000:g}"
        f" ms (log-normal, median {shape.median * 1000:.3g} ms); one look every {spec.analysis.interval}",
        f"alpha {spec.significance.alpha:g}; margins: errors {errors}, latency {latency}",
        "",
    ]
    labels = [r.label for r in REGRESSIONS]
    headers = ["STEP", "KIND", "WHAT", "CANDIDATE REQUESTS", "MINUTES", "MAX", "PROMOTED (A/A)",
               *(f"ROLLED BACK ({label})" for label in labels)]  # fmt: skip
    rows = [
        [str(p.index + 1), p.kind, p.summary, _count(p.candidate_requests), _minutes(p.seconds), p.max_duration,
         f"{p.promote:.0%}", *(f"{p.rollback[label]:.0%}" for label in labels)]
        for p in plans
    ]  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    lines += [
        "",
        "MINUTES: median time until a candidate like stable passes every check; PROMOTED / ROLLED BACK: the chance",
        "within the step's maxDuration (a forecast: docs/analysis.md, 'Time to decision').",
    ]
    for path, message in warnings(plans, a):
        lines.append(f"warning: {path}: {message}")
    return "\n".join(lines) + "\n"


def _policy(path: str | None) -> tuple[RolloutPolicySpec, str]:
    if path is None:
        return RolloutPolicySpec(), "the built-in default policy"
    raw = yaml.safe_load(Path(path).read_text())
    if not isinstance(raw, dict):
        raise ValueError("the policy file must hold a RolloutPolicy manifest or its spec")
    name = f"policy {path}"
    if raw.get("kind") == "RolloutPolicy" and "spec" in raw:
        name = f"RolloutPolicy {(raw.get('metadata') or {}).get('name', path)}"
        raw = raw["spec"]
    return RolloutPolicySpec.model_validate(raw), name


def main(argv: Sequence[str] | None = None) -> int:
    """Print the plan (or JSON); exit 0, or 2 with a one-line error naming the bad option or file."""
    parser = argparse.ArgumentParser(prog="mlrollout plan", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--policy", help="RolloutPolicy manifest or its spec (default: the built-in policy)")
    parser.add_argument("--rps", type=float, required=True, help="expected live requests per second")
    parser.add_argument("--base-error-rate", type=float, default=DEFAULT_ERROR_RATE, help="stable's error rate")
    parser.add_argument("--latency-p99", type=float, default=DEFAULT_P99, help="stable's p99 latency, seconds")
    parser.add_argument("--latency-p50", type=float, help="stable's median latency (default: a log-normal spread 0.5)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        assumptions = Assumptions(args.rps, args.base_error_rate, args.latency_p99, args.latency_p50)
        spec, name = _policy(args.policy)
    except PlanError as exc:
        print(f"mlrollout plan: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, yaml.YAMLError) as exc:
        kind = "invalid policy" if isinstance(exc, ValidationError) else "cannot read the policy"
        print(f"mlrollout plan: {kind}: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    plans = plan(spec, assumptions)
    if args.json:
        print(json.dumps({"assumptions": asdict(assumptions), "steps": [_json(p) for p in plans],
                          "warnings": [{"path": p, "message": m} for p, m in warnings(plans, assumptions)]},
                         indent=2))  # fmt: skip
    else:
        sys.stdout.write(render(spec, plans, assumptions, name))
    return 0


def _json(p: StepPlan) -> dict[str, Any]:
    out = asdict(p)
    for key in ("seconds", "candidate_requests"):
        out[key] = out[key] if math.isfinite(out[key]) else None
    out["decides"] = p.decides
    return out
