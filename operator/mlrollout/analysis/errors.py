"""Error rate: harm (candidate worse than stable), non-inferiority within a margin, and an absolute SLO."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from mlrollout.analysis.result import (
    harm_decision,
    metric_result,
    slo_decision,
    within_margin,
)
from mlrollout.analysis.sequential import (
    Interval,
    beta_mixture_proportion_cs,
    gaussian_mixture_cs,
    harm_log_e,
    harm_prior,
    log_to_e,
)
from mlrollout.analysis.snapshot import TrackCounts
from mlrollout.api.analysis import MetricDecision, MetricResult
from mlrollout.api.rolloutpolicy import Margin

__all__ = ["BOUND_SHARE", "NI_LOG_RATIO_SD", "ErrorRateSettings", "error_rate_results", "ratio_interval"]

HARM_TEST = "conditional binomial mixture SPRT (one-sided)"
NI_TEST = "rate-ratio confidence sequence (conditional binomial); floor: beta-binomial confidence sequences"
SLO_TEST = "beta-binomial confidence sequence"

NI_LOG_RATIO_SD = 0.05
"""Spread of the non-inferiority mixture on the log rate ratio, centred on equal rates (ratio 1).

The promotion side is won by a candidate *like* stable, so the mixture sits there: a point mass would be
Wald's SPRT against "equal rates", the most direct route to the margin for an identical candidate; a spread
of 5% keeps it robust for candidates a little better or worse (at a 1% error rate and the benchmark's
traffic, 72% of identical candidates are promoted within 20 looks with it, 68% with a 10% spread, against
the 78% no mixture can exceed: bench/margin_power.py). Fixed in advance, so any value keeps the confidence
sequence valid; it only moves power (docs/analysis.md, "Margins").
"""

BOUND_SHARE = 0.05
"""Share of the promotion alpha for each per-track confidence sequence when the margin has an absolute part
(stable's rate bound turns the floor into a ratio; the candidate's own bound shows a rate below the floor
when there are too few errors to compare). The rate-ratio sequence keeps the rest (90%)."""


@dataclass(frozen=True)
class ErrorRateSettings:
    alpha_harm: float
    alpha_slo: float
    alpha_promote: float
    margin: Margin
    max_rate: float | None
    min_samples: int
    carry: Callable[[float], float] = float  # the step's e-value -> the rollout's (carry.py); alone: itself


def _smoothed(errors: int, requests: int) -> float:
    return (errors + 0.5) / (requests + 1.0)


def difference_interval(stable: TrackCounts, candidate: TrackCounts, alpha: float, tau: float) -> tuple[float, float]:
    """Anytime-valid interval for ``p_candidate - p_stable`` (asymptotic; Jeffreys-smoothed variance); shown
    with the harm test so a human sees the difference in rate units."""
    ps, pc = _smoothed(stable.errors, stable.requests), _smoothed(candidate.errors, candidate.requests)
    variance = ps * (1 - ps) / max(stable.requests, 1) + pc * (1 - pc) / max(candidate.requests, 1)
    estimate = candidate.errors / max(candidate.requests, 1) - stable.errors / max(stable.requests, 1)
    cs = gaussian_mixture_cs(estimate, variance, alpha, tau * tau)
    return max(cs.lo, -1.0), min(cs.hi, 1.0)


def ratio_interval(candidate_events: int, total_events: int, share: float, alpha: float) -> Interval:
    """Anytime-valid interval for the rate ratio ``r = p_candidate / p_stable`` (exact, non-asymptotic).

    Given the events seen so far, each is the candidate's with probability ``theta = r*share / (r*share +
    1 - share)`` whatever the common base rate (the conditioning of the harm test), so a confidence sequence
    for ``theta`` (a Beta mixture centred on ``r = 1``) maps to one for ``r`` through ``odds(theta) = r *
    odds(share)``. No estimate of stable's rate enters, which is what makes a relative margin safe here.
    """
    if total_events <= 0 or not 0.0 < share < 1.0:
        return Interval(0.0, math.inf)
    a, b = harm_prior(share, 1.0, NI_LOG_RATIO_SD)
    cs = beta_mixture_proportion_cs(candidate_events, total_events, alpha, a, b)
    odds = share / (1.0 - share)

    def ratio(theta: float) -> float:
        return math.inf if theta >= 1.0 else theta / (1.0 - theta) / odds

    return Interval(ratio(cs.lo), ratio(cs.hi))


def _pct(x: float) -> str:
    return f"{x:+.0%}" if math.isfinite(x) else "unbounded"


def _pp(x: float) -> str:
    return f"{x * 100:.3g} pp"


@dataclass(frozen=True)
class _NonInferiority:
    decision: MetricDecision
    ratio: Interval
    allowed: float  # the relative excess allowed at this look
    reason: str


def _non_inferiority(stable: TrackCounts, candidate: TrackCounts, s: ErrorRateSettings) -> _NonInferiority:
    """Show ``p_c - p_s <= max(relative * p_s, floor)``: by the rate ratio (``r <= 1 + relative``, or ``1 +
    floor / U_s`` where the floor is larger, ``U_s`` bounding stable's rate from above) or, with an absolute
    part, by the candidate's own rate (``U_c <= limit(L_s)``, which needs no errors at all to pass).

    Either route shows the candidate within the margin only if its confidence sequences cover; the alpha is
    split between them (90% the ratio, 5% each per-track bound), so a candidate beyond the margin is promoted
    with probability at most ``alpha_promote``.
    """
    margin, alpha = s.margin, s.alpha_promote
    events = candidate.errors + stable.errors
    share = candidate.requests / (candidate.requests + stable.requests)
    has_floor = margin.least > 0
    ratio = ratio_interval(candidate.errors, events, share, alpha * (1 - 2 * BOUND_SHARE) if has_floor else alpha)
    allowed, own = margin.scale, False
    if has_floor:
        stable_cs = beta_mixture_proportion_cs(stable.errors, stable.requests, alpha * BOUND_SHARE)
        candidate_upper = beta_mixture_proportion_cs(candidate.errors, candidate.requests, alpha * BOUND_SHARE).hi
        allowed = max(allowed, margin.least / stable_cs.hi if stable_cs.hi > 0 else math.inf)
        own = within_margin(candidate_upper, stable_cs.lo, margin)
    by_ratio = ratio.hi <= 1.0 + allowed
    enough = min(stable.requests, candidate.requests) >= s.min_samples
    decision: MetricDecision = "pass" if enough and (by_ratio or own) else "inconclusive"
    words = margin.describe(_pp)
    if decision == "pass" and by_ratio:
        reason = f"error rate at most {_pct(ratio.hi - 1)} relative to stable's: within {words}"
    elif decision == "pass":
        reason = (
            f"candidate error rate at most {candidate_upper:.3%}, stable's at least {stable_cs.lo:.3%}: within {words}"
        )
    else:
        reason = f"error rate up to {_pct(ratio.hi - 1)} relative to stable's, not yet within {words}"
        if allowed != margin.scale:
            reason += f" (here {_pct(allowed)})"
        if not enough:
            reason += f" (fewer than {s.min_samples} requests)"
    return _NonInferiority(decision, ratio, allowed, reason)


def error_rate_results(stable: TrackCounts, candidate: TrackCounts, s: ErrorRateSettings) -> list[MetricResult]:
    """The error-rate metrics: ``errorRate.harm``, ``errorRate.nonInferiority`` and ``errorRate.slo``."""
    samples = (float(stable.requests), float(candidate.requests))
    if stable.requests == 0 or candidate.requests == 0:
        reason = "no requests recorded for " + ("stable" if stable.requests == 0 else "the candidate")
        names = ["errorRate.harm", "errorRate.nonInferiority"] + (["errorRate.slo"] if s.max_rate is not None else [])
        return [metric_result(n, "inconclusive", reason, samples=samples) for n in names]
    ps, pc = stable.errors / stable.requests, candidate.errors / candidate.requests
    estimate = (ps, pc)
    enough = min(stable.requests, candidate.requests) >= s.min_samples
    out: list[MetricResult] = []

    share = candidate.requests / (candidate.requests + stable.requests)
    e_value = s.carry(log_to_e(harm_log_e(candidate.errors, candidate.errors + stable.errors, share)))
    harm, threshold = harm_decision(e_value, s.alpha_harm)
    ratio = pc / ps if ps > 0 else (math.inf if pc > 0 else 1.0)
    tau = max(s.margin.allowed(ps), 1e-4) / 2.0
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
            interval=difference_interval(stable, candidate, s.alpha_promote, tau),
            statistic=ratio,
            e_value=e_value,
            threshold=threshold,
        )
    )

    ni = _non_inferiority(stable, candidate, s)
    out.append(
        metric_result(
            "errorRate.nonInferiority",
            ni.decision,
            ni.reason,
            test=NI_TEST,
            samples=samples,
            estimate=estimate,
            effect=ratio - 1.0,
            interval=(ni.ratio.lo - 1.0, ni.ratio.hi - 1.0),
            statistic=ratio,
            threshold=ni.allowed,
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
