"""Error rate: harm (candidate worse than stable), non-inferiority within a margin, and an absolute SLO."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from mlrollout.analysis.result import harm_decision, metric_result, non_inferiority_decision, slo_decision
from mlrollout.analysis.sequential import (
    beta_mixture_proportion_cs,
    gaussian_mixture_cs,
    harm_log_e,
    log_to_e,
)
from mlrollout.analysis.snapshot import TrackCounts
from mlrollout.api.analysis import MetricResult

__all__ = ["ErrorRateSettings", "error_rate_results"]

HARM_TEST = "conditional binomial mixture SPRT (one-sided)"
NI_TEST = "normal-mixture confidence sequence on the rate difference"
SLO_TEST = "beta-binomial confidence sequence"


@dataclass(frozen=True)
class ErrorRateSettings:
    alpha_harm: float
    alpha_slo: float
    alpha_promote: float
    margin_absolute: float | None
    margin_relative: float | None
    max_rate: float | None
    min_samples: int
    carry: Callable[[float], float] = float  # the step's e-value -> the rollout's (carry.py); alone: itself


def _smoothed(errors: int, requests: int) -> float:
    return (errors + 0.5) / (requests + 1.0)


def difference_interval(stable: TrackCounts, candidate: TrackCounts, alpha: float, tau: float) -> tuple[float, float]:
    """Anytime-valid interval for ``p_candidate - p_stable`` (asymptotic; Jeffreys-smoothed variance)."""
    ps, pc = _smoothed(stable.errors, stable.requests), _smoothed(candidate.errors, candidate.requests)
    variance = ps * (1 - ps) / max(stable.requests, 1) + pc * (1 - pc) / max(candidate.requests, 1)
    estimate = candidate.errors / max(candidate.requests, 1) - stable.errors / max(stable.requests, 1)
    cs = gaussian_mixture_cs(estimate, variance, alpha, tau * tau)
    return max(cs.lo, -1.0), min(cs.hi, 1.0)


def error_rate_results(stable: TrackCounts, candidate: TrackCounts, s: ErrorRateSettings) -> list[MetricResult]:
    """The error-rate metrics: ``errorRate.harm``, ``errorRate.nonInferiority`` and ``errorRate.slo``."""
    samples = (float(stable.requests), float(candidate.requests))
    if stable.requests == 0 or candidate.requests == 0:
        reason = "no requests recorded for " + ("stable" if stable.requests == 0 else "the candidate")
        names = ["errorRate.harm", "errorRate.nonInferiority"] + (["errorRate.slo"] if s.max_rate is not None else [])
        return [metric_result(n, "inconclusive", reason, samples=samples) for n in names]
    ps, pc = stable.errors / stable.requests, candidate.errors / candidate.requests
    estimate = (ps, pc)
    margin = s.margin_absolute if s.margin_absolute is not None else (s.margin_relative or 0.0) * ps
    tau = max(margin, 1e-4) / 2.0
    interval = difference_interval(stable, candidate, s.alpha_promote, tau)
    enough = min(stable.requests, candidate.requests) >= s.min_samples
    out: list[MetricResult] = []

    share = candidate.requests / (candidate.requests + stable.requests)
    e_value = s.carry(log_to_e(harm_log_e(candidate.errors, candidate.errors + stable.errors, share)))
    harm, threshold = harm_decision(e_value, s.alpha_harm)
    ratio = pc / ps if ps > 0 else (math.inf if pc > 0 else 1.0)
    out.append(
        metric_result(
            "errorRate.harm",
            harm,
            (
                f"candidate error rate {pc:.3%} is higher than stable's {ps:.3%} (e-value >= {threshold:.0f})"
                if harm == "fail"
                else f"no evidence that the candidate errs more ({pc:.3%} vs {ps:.3%})"
            ),
            test=HARM_TEST,
            samples=samples,
            estimate=estimate,
            effect=pc - ps,
            interval=interval,
            statistic=ratio,
            e_value=e_value,
            threshold=threshold,
        )
    )

    non_inferiority = non_inferiority_decision(interval[1], margin, enough)
    out.append(
        metric_result(
            "errorRate.nonInferiority",
            non_inferiority,
            (
                f"difference at most {interval[1]:+.3%}, within the margin {margin:.3%}"
                if non_inferiority == "pass"
                else f"difference up to {interval[1]:+.3%} not yet shown within the margin {margin:.3%}"
                + ("" if enough else f" (fewer than {s.min_samples} requests)")
            ),
            test=NI_TEST,
            samples=samples,
            estimate=estimate,
            effect=pc - ps,
            interval=interval,
            threshold=margin,
        )
    )

    if s.max_rate is not None:
        cs = beta_mixture_proportion_cs(candidate.errors, candidate.requests, s.alpha_slo)
        decision = slo_decision(cs.lo, cs.hi, s.max_rate, enough)
        reason = {
            "fail": f"candidate error rate at least {cs.lo:.3%}, above the SLO {s.max_rate:.3%}",
            "pass": f"candidate error rate at most {cs.hi:.3%}, within the SLO {s.max_rate:.3%}",
            "inconclusive": f"candidate error rate in [{cs.lo:.3%}, {cs.hi:.3%}] vs SLO {s.max_rate:.3%}",
        }[decision]
        out.append(
            metric_result(
                "errorRate.slo",
                decision,
                reason,
                test=SLO_TEST,
                samples=samples,
                estimate=estimate,
                effect=pc - s.max_rate,
                interval=(cs.lo - s.max_rate, cs.hi - s.max_rate),
                threshold=s.max_rate,
            )
        )
    return out
