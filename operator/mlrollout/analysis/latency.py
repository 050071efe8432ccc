"""Latency from histogram buckets: harm (candidate slower), quantile non-inferiority and a quantile SLO.

Everything is computed from bucket counts, which are exact integers, so the tests are about proportions of
requests above a bucket bound. A quantile's uncertainty comes from confidence sequences on the cumulative
fraction at the bounds around it, interpolated linearly inside the bucket as ``histogram_quantile`` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from mlrollout.analysis.histogram import Histogram, interpolate_quantile
from mlrollout.analysis.result import harm_decision, metric_result, slo_decision, within_margin
from mlrollout.analysis.sequential import beta_mixture_proportion_cs, harm_log_e, log_to_e
from mlrollout.api.analysis import MetricDecision, MetricResult
from mlrollout.api.rolloutpolicy import Margin

__all__ = ["HarmPair", "LatencySettings", "harm_pairs", "latency_results", "quantile_bounds"]

HARM_TEST = "exceedance above stable's median and quantile, widened by the margin; conditional binomial mixture SPRT"
NI_TEST = "quantile confidence sequence from bucket counts (beta-binomial)"
SLO_TEST = "beta-binomial confidence sequence on the share above the SLO"


@dataclass(frozen=True)
class LatencySettings:
    quantile: float
    max_seconds: float | None
    compare_with_stable: bool
    margin: Margin
    alpha_harm: float
    alpha_slo: float
    alpha_promote: float
    min_samples: int
    carry: Callable[[float], float] = float  # the step's e-value -> the rollout's (carry.py); alone: itself


def _sec(x: float) -> str:
    return f"{x:.4g}s" if math.isfinite(x) else "unbounded (beyond the last bucket)"


# Prior strength of the Beta mixture behind the quantile confidence sequences: centred on the quantile's
# level and as informative as ~1000 observations, so the sequence is tightest at the sample sizes a canary
# step collects (minutes at tens of requests per second) instead of at n = 1 like Jeffreys' prior. Any
# prior fixed in advance keeps the sequence valid (Howard et al. 2021, section 3); this one is ~30% narrower
# than Jeffreys' at n = 3000-12000 around p99.
QUANTILE_PRIOR_STRENGTH = 1000.0


def _prior(level: float) -> tuple[float, float]:
    return QUANTILE_PRIOR_STRENGTH * level, QUANTILE_PRIOR_STRENGTH * (1.0 - level)


def _cdf(h: Histogram) -> list[float]:
    return [c / h.total for c in h.cumulative]


def quantile_bounds(h: Histogram, q: float, alpha: float) -> tuple[float, float, float]:
    """(lower, point, upper) for the ``q`` quantile; the bounds hold at every look with probability 1-alpha.

    The lower bound interpolates the upper confidence limits of the cumulative fraction at the bounds and
    vice versa. Only the few bounds around the quantile are evaluated (the limits are monotone in the
    count, so a walk outwards from the point estimate's bucket finds the crossing).
    """
    n = h.total
    cache: dict[tuple[int, bool], float] = {}

    def limit(i: int, upper: bool) -> float:
        if i < 0:
            return 0.0
        if math.isinf(h.bounds[i]):
            return 1.0
        if (i, upper) not in cache:
            cs = beta_mixture_proportion_cs(h.cumulative[i], n, alpha, *_prior(q))
            cache[(i, upper)] = cs.hi if upper else cs.lo
        return cache[(i, upper)]

    def within(i: int, upper: bool) -> float:
        lo_bound = h.bounds[i - 1] if i > 0 else 0.0
        if math.isinf(h.bounds[i]):
            return math.inf
        lo_val, hi_val = limit(i - 1, upper), limit(i, upper)
        if hi_val <= lo_val:
            return h.bounds[i]
        return lo_bound + (h.bounds[i] - lo_bound) * (q - lo_val) / (hi_val - lo_val)

    point_cdf = _cdf(h)
    start = next(i for i, v in enumerate(point_cdf) if v >= q)
    i = start
    while i > 0 and limit(i - 1, True) >= q:
        i -= 1
    lower = within(i, True)
    j = start
    while limit(j, False) < q:
        j += 1
    upper = within(j, False)
    return lower, interpolate_quantile(h.bounds, point_cdf, q), upper


@dataclass(frozen=True)
class HarmPair:
    """Stable's threshold and the candidate's: the candidate is held to ``candidate_bound``, at least
    ``(1 + margin)`` times (or ``margin`` seconds above) ``stable_bound``."""

    stable_bound: float
    candidate_bound: float


def harm_pairs(bounds: tuple[float, ...], stable_cdf: list[float], levels: tuple[float, ...],
               allowed: Callable[[float], float]) -> list[HarmPair]:  # fmt: skip
    """One threshold pair per stable level (median and the SLO quantile), in latency units.

    For each level, stable's threshold is one of the two bounds around its quantile, the candidate's the
    smallest bound at or above ``allowed(stable threshold)``. Of the two, the pair whose candidate bound is
    closest to its allowed latency wins (bucket edges rarely fall exactly one margin apart, and every step
    beyond it is lost power), then the one nearer the level.
    """
    finite = [b for b in bounds if math.isfinite(b)]
    pairs: list[HarmPair] = []
    for level in levels:
        at = next(i for i, v in enumerate(stable_cdf) if v >= level)
        options = []  # (steps lost beyond the margin, distance from the level, pair)
        for i in (at - 1, at):
            if 0 <= i < len(finite) and finite[i] > 0:
                target = allowed(finite[i])
                above = next((b for b in finite if b >= target), None)
                if above is not None:
                    options.append((above / target, abs(stable_cdf[i] - level), HarmPair(finite[i], above)))
        if options:
            best = min(options, key=lambda o: o[:2])[2]
            if best not in pairs:
                pairs.append(best)
    return pairs


def _harm(stable: Histogram, candidate: Histogram, q: float, s: LatencySettings) -> tuple[float, list[HarmPair]]:
    """Mean e-value against "the candidate is no slower than stable plus the margin, in distribution".

    The null is ``P(candidate > limit(t)) <= P(stable > t)`` for every ``t``, with the margin's ``limit(t)
    = t + max(relative * t, floor)`` (or ``t + absolute``): slower by more than the margin is harm, slower by
    less is not (two processes sharing a core differ by a few percent; effect size before any claim). Under
    it the candidate's rate above ``candidate_bound`` is at most stable's above ``stable_bound``, so each
    slow request comes from the candidate with probability at most its share of requests: the conditional
    binomial e-process applies unchanged, at stable's median and at the SLO quantile.
    """
    pairs = harm_pairs(stable.bounds, _cdf(stable), (0.5, q), s.margin.limit)
    if not pairs:
        return 0.0, []
    share = candidate.total / (candidate.total + stable.total)
    e_values = []
    for pair in pairs:
        slow_c = candidate.total - candidate.count_le(pair.candidate_bound)
        slow_s = stable.total - stable.count_le(pair.stable_bound)
        e_values.append(log_to_e(harm_log_e(slow_c, slow_c + slow_s, share)))
    return sum(e_values) / len(e_values), pairs


def latency_results(stable: Histogram, candidate: Histogram, s: LatencySettings) -> list[MetricResult]:
    """The latency metrics: ``latency.harm`` and ``latency.nonInferiority`` (when comparing with stable)
    and ``latency.slo`` (when ``maxSeconds`` is set)."""
    samples = (float(stable.total), float(candidate.total))
    names = (["latency.harm", "latency.nonInferiority"] if s.compare_with_stable else []) + (
        ["latency.slo"] if s.max_seconds is not None else []
    )
    if stable.total == 0 or candidate.total == 0:
        reason = "no latency observations for " + ("stable" if stable.total == 0 else "the candidate")
        return [metric_result(n, "inconclusive", reason, samples=samples) for n in names]
    q = s.quantile
    enough = min(stable.total, candidate.total) >= s.min_samples
    # Promotion holds the candidate's upper bound against stable's lower one (`within_margin`): each
    # sequence at half the promotion alpha, so both cover at once with probability 1 - alpha.
    s_lo, s_point, s_hi = quantile_bounds(stable, q, s.alpha_promote / 2)
    c_lo, c_point, c_hi = quantile_bounds(candidate, q, s.alpha_promote / 2)
    estimate = (s_point, c_point)
    label = f"p{q * 100:g}"
    out: list[MetricResult] = []

    if s.compare_with_stable:
        ratio = c_point / s_point if s_point > 0 else math.nan
        interval = (
            c_lo / s_hi - 1.0 if s_hi > 0 and math.isfinite(s_hi) else -1.0,
            c_hi / s_lo - 1.0 if s_lo > 0 else math.inf,
        )
        step_e, pairs = _harm(stable, candidate, q, s)
        e_value = s.carry(step_e)
        harm, threshold = harm_decision(e_value, s.alpha_harm)
        where = ", ".join(f"{p.candidate_bound:g}s (stable: {p.stable_bound:g}s)" for p in pairs) or "no finite bucket"
        out.append(
            metric_result(
                "latency.harm",
                harm,
                (
                    f"candidate is slower than stable beyond the margin: more requests above {where}"
                    f" (e-value >= {threshold:.0f})"
                    if harm == "fail"
                    else f"no evidence the candidate is slower ({label} {c_point:.4g}s vs {s_point:.4g}s)"
                ),
                test=HARM_TEST,
                samples=samples,
                estimate=estimate,
                effect=ratio - 1.0,
                interval=interval,
                e_value=e_value,
                threshold=threshold,
            )
        )
        margin_text = s.margin.describe(lambda x: f"{x:g}s")
        within = enough and math.isfinite(c_hi) and within_margin(c_hi, s_lo, s.margin)
        non_inferiority: MetricDecision = "pass" if within else "inconclusive"
        relative = s.margin.absolute is None
        out.append(
            metric_result(
                "latency.nonInferiority",
                non_inferiority,
                (
                    f"candidate {label} at most {_sec(c_hi)} vs stable at least {_sec(s_lo)}: within {margin_text}"
                    if non_inferiority == "pass"
                    else f"candidate {label} up to {_sec(c_hi)} vs stable from {_sec(s_lo)}: not within {margin_text}"
                    + ("" if enough else f" (fewer than {s.min_samples} observations)")
                ),
                test=NI_TEST,
                samples=samples,
                estimate=estimate,
                effect=ratio - 1.0 if relative else c_point - s_point,
                interval=interval if relative else (c_lo - s_hi, c_hi - s_lo),
                threshold=(s.margin.allowed(s_lo) / s_lo if s_lo > 0 else None) if relative else s.margin.least,
            )
        )

    if s.max_seconds is not None:
        out.append(_slo(candidate, s, samples, estimate, label))
    return out


def _slo(
    candidate: Histogram,
    s: LatencySettings,
    samples: tuple[float, float],
    estimate: tuple[float, float],
    label: str,
) -> MetricResult:
    """Pass when the share above the SLO is shown below ``1-q``; fail when shown above it.

    The bucket bounds rarely equal the SLO, so the pass side counts from the largest bound at or below it
    and the fail side from the smallest bound at or above it: both errors are in the safe direction.
    """
    assert s.max_seconds is not None
    budget = 1.0 - s.quantile
    n = candidate.total
    below = [b for b in candidate.bounds if b <= s.max_seconds]
    above = [b for b in candidate.bounds if b >= s.max_seconds and not math.isinf(b)]
    prior = _prior(budget)
    upper_share = (
        beta_mixture_proportion_cs(n - candidate.count_le(below[-1]), n, s.alpha_slo, *prior).hi if below else 1.0
    )
    lower_share = (
        beta_mixture_proportion_cs(n - candidate.count_le(above[0]), n, s.alpha_slo, *prior).lo if above else 0.0
    )
    decision = slo_decision(lower_share, upper_share, budget, n >= s.min_samples)
    reason = {
        "fail": f"at least {lower_share:.2%} of requests slower than {s.max_seconds:g}s (SLO: {label})",
        "pass": f"at most {upper_share:.2%} of requests slower than {s.max_seconds:g}s: {label} SLO met",
        "inconclusive": f"{lower_share:.2%} to {upper_share:.2%} slower than {s.max_seconds:g}s; budget {budget:.2%}",
    }[decision]
    return metric_result(
        "latency.slo",
        decision,
        reason,
        test=SLO_TEST,
        samples=samples,
        estimate=estimate,
        effect=estimate[1] - s.max_seconds,
        interval=(lower_share - budget, upper_share - budget),
        threshold=s.max_seconds,
    )
