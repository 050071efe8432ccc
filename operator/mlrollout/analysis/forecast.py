"""Time to a decision: how many requests a step's checks need, how long that takes, and how likely they decide.

One model serves ``mlrollout plan`` and ``mlrollout validate --rps`` (assumed traffic) and the forecast the
judge attaches to every look (the traffic seen so far). Each check is a sequential test whose statistic
after ``n`` counted requests is about normal, ``Z_n = drift * sqrt(n) + N(0, 1)``, and it decides once
``Z_n`` reaches the normal-mixture boundary ``widen * sqrt(2 * (bar + penalty(n)))``, where ``bar`` is
``log(1/alpha_i)`` in nats and ``penalty(n)`` the price of the mixture's spread (Howard et al. 2021). The
median number of requests is where the drift meets the boundary; the chance to decide by ``N`` requests is
``Phi(drift * sqrt(N) - boundary(N))``. A Brownian approximation read at the last look: it ignores earlier
crossings and the bucket layout of latencies, so it is checked against simulations of the judge itself
(``tests/unit/analysis/test_analysis_forecast.py``, ``bench/forecast_check.py``; docs/analysis.md, "Time
to decision").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from scipy import special, stats

from mlrollout.analysis.carry import StepEvidence
from mlrollout.analysis.errors import BOUND_SHARE, NI_LOG_RATIO_SD
from mlrollout.analysis.histogram import interpolate_quantile
from mlrollout.analysis.latency import QUANTILE_PRIOR_STRENGTH, harm_pairs
from mlrollout.analysis.sequential import HARM_LOG_RATIO_SD, beta_mixture_proportion_cs
from mlrollout.analysis.snapshot import Snapshot
from mlrollout.api.analysis import Forecast
from mlrollout.api.common import parse_duration
from mlrollout.api.rolloutpolicy import Margin, RolloutPolicySpec
from mlrollout_serving.contract.metrics import LATENCY_BUCKETS

__all__ = [
    "REGRESSIONS",
    "Check",
    "LatencyShape",
    "Regression",
    "StepForecast",
    "StepTraffic",
    "forecast_look",
    "forecast_step",
    "promotion_checks",
    "promotion_probability",
    "requests_to_promote",
    "rollback_checks",
    "rollback_probability",
    "traffic_seen",
]

NEVER = math.inf
YEAR = 365 * 24 * 3600.0  # a forecast beyond this says "never"
_MAX_REQUESTS = 1e13  # beyond this a check is "never" (years of traffic)
MIN_SAMPLES = 100  # judge.MIN_SAMPLES (judge imports this module, so it cannot be imported from there)


@dataclass(frozen=True)
class Check:
    """One sequential check seen as a drifting normal statistic (see the module docstring)."""

    name: str
    drift: float  # per sqrt(counted request); <= 0 never decides
    bar: float  # log(1/alpha_i) in nats
    penalty: Callable[[float], float] = lambda n: 0.0
    widen: float = 1.0
    least: float = 0.0  # counted requests below which the check cannot decide (minimum samples)
    # the statistic's distance from the null as a function of n, relative to ``drift`` (a margin that is
    # converted with a bound on stable's level grows towards its value as that bound tightens)
    growth: Callable[[float], float] = lambda n: 1.0

    def boundary(self, n: float) -> float:
        """In units of the statistic's standard deviation, net of the drift's shortfall at ``n``."""
        return self.widen * math.sqrt(2.0 * max(self.bar + self.penalty(n), 0.0)) / max(self.growth(n), 1e-12)

    def requests(self) -> float:
        """Median counted requests until the check decides: the ``n`` where ``drift * sqrt(n)`` meets the
        boundary (the boundary grows like ``sqrt(log n)``, the drift like ``sqrt(n)``: one crossing)."""
        if self.drift <= 0 or not math.isfinite(self.drift):
            return NEVER if self.drift <= 0 else self.least
        lo, hi = 1.0, _MAX_REQUESTS
        if self.drift * math.sqrt(hi) < self.boundary(hi):
            return NEVER
        for _ in range(40):  # geometric bisection: within 1e-5 relative of the crossing
            mid = math.sqrt(lo * hi)
            if self.drift * math.sqrt(mid) >= self.boundary(mid):
                hi = mid
            else:
                lo = mid
        return max(hi, self.least)

    def probability(self, n: float) -> float:
        """Chance the check has decided after ``n`` counted requests."""
        if n < self.least or n <= 0:
            return 0.0
        if not math.isfinite(self.drift):
            return 1.0
        return float(special.ndtr(self.drift * math.sqrt(n) - self.boundary(n)))


@dataclass(frozen=True)
class LatencyShape:
    """A log-normal latency: its median (seconds) and the spread of log latency."""

    median: float
    sigma: float

    @classmethod
    def from_quantile(cls, value: float, q: float, median: float | None = None) -> LatencyShape:
        """From the ``q`` quantile (and the median if known; else the spread of the benchmark, 0.5)."""
        z = float(special.ndtri(q))
        if median is None or not 0 < median < value:
            return cls(value / math.exp(0.5 * z), 0.5)
        return cls(median, math.log(value / median) / z)

    def quantile(self, q: float) -> float:
        return self.median * math.exp(self.sigma * float(special.ndtri(q)))

    def cdf(self, x: float, factor: float = 1.0) -> float:
        """P(latency <= x) for latencies ``factor`` times this shape's."""
        if x <= 0:
            return 0.0
        if math.isinf(x):
            return 1.0
        return float(special.ndtr(math.log(x / (self.median * factor)) / self.sigma))

    def relative_spread(self, q: float) -> float:
        """Relative standard error of the ``q`` quantile per sqrt(observation): ``sqrt(q(1-q)) / (f(Q) Q)``."""
        z = float(special.ndtri(q))
        return math.sqrt(q * (1 - q)) * self.sigma / float(stats.norm.pdf(z))


@dataclass(frozen=True)
class StepTraffic:
    """What one step's checks count per second, and stable's levels (docs/analysis.md, "Time to decision").

    Canary: live requests split by the weight. Shadow and blue-green preview: stable answers every live
    request and the candidate the copies. ``error_rate`` is stable's; ``latency`` None leaves latency out.
    """

    stable_rps: float
    candidate_rps: float
    error_rate: float
    latency: LatencyShape | None = None

    @property
    def rps(self) -> float:
        return self.stable_rps + self.candidate_rps

    @property
    def share(self) -> float:
        """The candidate's share of counted requests."""
        return self.candidate_rps / self.rps if self.rps > 0 else 0.0


def _mixture_penalty(spread2_per_request: float) -> Callable[[float], float]:
    return lambda n: 0.5 * math.log1p(spread2_per_request * n)


def _jeffreys_penalty(events_per_request: float) -> Callable[[float], float]:
    """The Beta(1/2, 1/2) mixture's price: about ``log(n p (1 - p) * pi / 2) / 2`` nats."""
    return lambda n: 0.5 * math.log(max(1.0, math.pi / 2 * events_per_request * n))


def _share_widen(w: float) -> tuple[float, float]:
    """``1/w + 1/(1-w)`` and how much a sum of two per-track bounds is wider than one joint bound."""
    inverse = 1 / w + 1 / (1 - w)
    return inverse, (1 / math.sqrt(w) + 1 / math.sqrt(1 - w)) / math.sqrt(inverse)


@dataclass(frozen=True)
class OwnBound:
    """The error rate's floor route, ``U_c <= limit(L_s)`` on the two tracks' beta-binomial bounds, worked
    out with the judge's own bounds at the expected counts (at a handful of errors a normal approximation
    of these bounds is far too optimistic): the median needs the expected counts to pass; the chance to
    pass by ``n`` is the chance the candidate's errors stay at or below the most that still passes."""

    traffic: StepTraffic
    margin: Margin
    alpha: float  # each bound's
    least: float
    name: str = "errorRate.nonInferiority"

    def _passes(self, n: float, candidate_errors: float | None = None) -> bool:
        t, w = self.traffic, self.traffic.share
        n_c, n_s = max(round(n * w), 1), max(round(n * (1 - w)), 1)
        k_c = round(t.error_rate * n_c) if candidate_errors is None else round(candidate_errors)
        upper = beta_mixture_proportion_cs(k_c, n_c, self.alpha).hi
        lower = beta_mixture_proportion_cs(round(t.error_rate * n_s), n_s, self.alpha).lo
        return upper <= self.margin.limit(lower)

    def requests(self) -> float:
        lo, hi = 1.0, 1e10
        if not self._passes(hi):
            return NEVER
        for _ in range(30):  # within 1e-3 relative: each step costs two confidence sequences
            mid = math.sqrt(lo * hi)
            lo, hi = (lo, mid) if self._passes(mid) else (mid, hi)
        return max(hi, self.least)

    def probability(self, n: float) -> float:
        if n < self.least:
            return 0.0
        expected = self.traffic.error_rate * n * self.traffic.share
        if not self._passes(n, 0):
            return 0.0
        lo, hi = 0, int(10 * expected + 50)  # the most candidate errors that still pass
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if self._passes(n, mid) else (lo, mid - 1)
        return float(stats.poisson.cdf(lo, expected))


Route = Check | OwnBound


def _error_ni(t: StepTraffic, margin: Margin, alpha: float) -> list[Route]:
    """errorRate.nonInferiority for a candidate like stable: the rate-ratio route and, with an absolute part,
    the candidate's own bound below the floor (the faster of the two decides)."""
    w, p = t.share, t.error_rate
    inverse, _ = _share_widen(w)
    routes: list[Route] = []
    has_floor = margin.least > 0
    ratio_alpha = alpha * (1 - 2 * BOUND_SHARE) if has_floor else alpha
    least = MIN_SAMPLES / min(w, 1 - w)
    if p > 0:
        variance = (1 - p) / p * inverse  # of log(rate ratio), per counted request
        full = math.log1p(max(margin.scale, margin.least / p))
        stable_bar = math.log(1 / (alpha * BOUND_SHARE))

        def growth(n: float) -> float:
            """The floor is converted with stable's upper bound, which tightens as stable's errors add up."""
            if not has_floor:
                return 1.0
            events = max(n * (1 - w) * p, 1e-9)
            upper = p * (1 + math.sqrt(2 * (stable_bar + 0.5 * math.log1p(events)) / events))
            return math.log1p(max(margin.scale, margin.least / upper)) / full

        routes.append(Check("errorRate.nonInferiority", full / math.sqrt(variance), math.log(1 / ratio_alpha),
                            _mixture_penalty(NI_LOG_RATIO_SD**2 / variance), least=least, growth=growth))  # fmt: skip
    if has_floor:
        routes.append(OwnBound(t, margin, alpha * BOUND_SHARE, least))
    return routes


def _latency_ni(t: StepTraffic, margin: Margin, q: float, alpha: float) -> Check:
    assert t.latency is not None
    w = t.share
    inverse, widen = _share_widen(w)
    value = t.latency.quantile(q)
    variance = t.latency.relative_spread(q) ** 2 * inverse
    allowed = margin.allowed(value) / value
    return Check("latency.nonInferiority", math.log1p(allowed) / math.sqrt(variance), math.log(2 / alpha),
                 _mixture_penalty(min(w, 1 - w) / QUANTILE_PRIOR_STRENGTH), widen=widen,
                 least=MIN_SAMPLES / min(w, 1 - w))  # fmt: skip


def _slo(name: str, level: float, limit: float, w: float, alpha: float, prior: Callable[[float], float],
         fails: bool = False) -> Check:  # fmt: skip
    """An SLO on the candidate's rate (of errors, or of requests slower than the SLO): it passes once the rate
    is shown below ``limit``, or (``fails``) fails once it is shown above."""
    level = min(max(level, 1e-9), 1 - 1e-9)
    sd = math.sqrt(level * (1 - level) / w)
    gap = level - limit if fails else limit - level
    return Check(name, gap / sd, math.log(1 / alpha), prior, least=MIN_SAMPLES / w)


def promotion_checks(spec: RolloutPolicySpec, t: StepTraffic, shares: Mapping[str, float],
                     evidence: StepEvidence | None = None) -> list[list[Route]]:  # fmt: skip
    """The checks a candidate like stable must all pass; each inner list holds alternative routes."""
    m, alpha = spec.analysis.metrics, spec.significance.alpha
    margins = spec.significance.margins
    evidence = evidence or StepEvidence()
    w = t.share
    out: list[list[Route]] = []
    if not 0 < w < 1:
        return [[Check("traffic", 0.0, 0.0)]]
    if m.error_rate.enabled:
        out.append(_error_ni(t, margins.error_rate, alpha))
        if m.error_rate.max_rate is not None:
            slo_alpha = evidence.slo_alpha(shares.get("errorRate.slo", alpha))
            out.append([_slo("errorRate.slo", t.error_rate, m.error_rate.max_rate, w, slo_alpha,
                             _jeffreys_penalty(w * max(t.error_rate, 1e-9)))])  # fmt: skip
    if m.latency.enabled and t.latency is not None:
        if m.latency.compare_with_stable:
            out.append([_latency_ni(t, margins.latency, m.latency.quantile, alpha)])
        if m.latency.max_seconds is not None:
            slow = 1 - t.latency.cdf(m.latency.max_seconds)
            slo_alpha = evidence.slo_alpha(shares.get("latency.slo", alpha))
            out.append([_slo("latency.slo", slow, 1 - m.latency.quantile, w, slo_alpha,
                             _mixture_penalty(w / QUANTILE_PRIOR_STRENGTH))])  # fmt: skip
    return out


def requests_to_promote(checks: list[list[Route]]) -> tuple[float, str]:
    """Median counted requests until every check has passed (the slowest decides), and which one that is."""
    needed = [(min(route.requests() for route in routes), routes[0].name) for routes in checks]
    return max(needed, default=(float(MIN_SAMPLES), ""))


def promotion_probability(checks: list[list[Route]], n: float) -> float:
    """Chance that every check has passed after ``n`` counted requests (checks taken as independent)."""
    p = 1.0
    for routes in checks:
        p *= max(route.probability(n) for route in routes)
    return p


@dataclass(frozen=True)
class Regression:
    """A regression the plan asks about: error rate ``error_ratio`` times stable's, latency ``latency_factor``."""

    label: str
    error_ratio: float = 1.0
    latency_factor: float = 1.0


REGRESSIONS = (
    Regression("errors x1.5", error_ratio=1.5),
    Regression("errors x2", error_ratio=2.0),
    Regression("latency +20%", latency_factor=1.2),
)


def _harm(name: str, ratio: float, candidate_rate: float, stable_rate: float, w: float, bar: float) -> Check:
    """A conditional-binomial harm e-process on events (errors, slow requests) at rate ``ratio`` times
    stable's, with the harm mixture's spread."""
    if ratio <= 1 or candidate_rate <= 0 or stable_rate <= 0:
        return Check(name, 0.0, bar)
    variance = 1 / (w * candidate_rate) + 1 / ((1 - w) * stable_rate)
    return Check(name, math.log(ratio) / math.sqrt(variance), bar, _mixture_penalty(HARM_LOG_RATIO_SD**2 / variance))


def rollback_checks(spec: RolloutPolicySpec, t: StepTraffic, regression: Regression, shares: Mapping[str, float],
                    evidence: StepEvidence | None = None) -> list[Check]:  # fmt: skip
    """The checks that can roll this regression back; any one firing is enough."""
    m, alpha = spec.analysis.metrics, spec.significance.alpha
    evidence = evidence or StepEvidence()
    w, p = t.share, t.error_rate
    out: list[Check] = []
    if not 0 < w < 1:
        return out

    def bar(test: str) -> float:
        return math.log(max(evidence.step_bar(test, shares.get(test, alpha)), 1.0))

    if m.error_rate.enabled and regression.error_ratio > 1 and p > 0:
        bad = min(p * regression.error_ratio, 1.0)
        out.append(_harm("errorRate.harm", regression.error_ratio, bad, p, w, bar("errorRate.harm")))
        if m.error_rate.max_rate is not None and bad > m.error_rate.max_rate:
            slo_alpha = evidence.slo_alpha(shares.get("errorRate.slo", alpha))
            out.append(
                _slo("errorRate.slo", bad, m.error_rate.max_rate, w, slo_alpha, _jeffreys_penalty(w * bad), True)
            )
    if m.latency.enabled and t.latency is not None and regression.latency_factor > 1:
        shape, factor, q = t.latency, regression.latency_factor, m.latency.quantile
        if m.latency.compare_with_stable:
            cdf = [shape.cdf(b) for b in LATENCY_BUCKETS]  # the contract's buckets, as the servers export them
            pairs = harm_pairs(LATENCY_BUCKETS, cdf, (0.5, q), spec.significance.margins.latency.limit)
            harm_bar = bar("latency.harm") + math.log(max(len(pairs), 1))  # the pairs' e-values are averaged
            best = Check("latency.harm", 0.0, harm_bar)
            for pair in pairs:
                slow_s, slow_c = 1 - shape.cdf(pair.stable_bound), 1 - shape.cdf(pair.candidate_bound, factor)
                check = _harm("latency.harm", slow_c / slow_s if slow_s > 0 else 1.0, slow_c, slow_s, w, harm_bar)
                best = check if check.drift > best.drift else best
            out.append(best)
        if m.latency.max_seconds is not None:
            slow = 1 - shape.cdf(m.latency.max_seconds, factor)
            if slow > 1 - q:
                slo_alpha = evidence.slo_alpha(shares.get("latency.slo", alpha))
                prior = _mixture_penalty(w / QUANTILE_PRIOR_STRENGTH)
                out.append(_slo("latency.slo", slow, 1 - q, w, slo_alpha, prior, fails=True))
    return out


def rollback_probability(checks: list[Check], n: float) -> float:
    """Chance that at least one check has fired after ``n`` counted requests (taken as independent)."""
    missed = 1.0
    for check in checks:
        missed *= 1 - check.probability(n)
    return 1 - missed


@dataclass(frozen=True)
class StepForecast:
    """A step's forecast: the median time until a candidate like stable passes every check, the chance it
    does within ``horizon`` seconds, and the chance each regression is rolled back within it."""

    seconds: float  # median seconds from the step's start to passing every check (inf: never)
    candidate_requests: float
    slowest: str
    promote: float
    rollback: dict[str, float] = field(default_factory=dict)


def forecast_step(spec: RolloutPolicySpec, t: StepTraffic, shares: Mapping[str, float], horizon: float,
                  min_requests: int = 0, evidence: StepEvidence | None = None,
                  regressions: tuple[Regression, ...] = REGRESSIONS) -> StepForecast:  # fmt: skip
    """Everything the plan and the status show for one analysed step at this traffic."""
    interval = max(parse_duration(spec.analysis.interval), 1.0)
    checks = promotion_checks(spec, t, shares, evidence)
    needed, slowest = requests_to_promote(checks)
    if t.candidate_rps > 0 and min_requests / t.candidate_rps * t.rps > needed:
        needed, slowest = min_requests / t.candidate_rps * t.rps, "minRequests"
    seconds = _at_look(needed / t.rps, interval) if t.rps > 0 and needed / t.rps < YEAR else NEVER
    last_look = math.floor(horizon / interval) * interval
    n = last_look * t.rps
    enough = t.candidate_rps * last_look >= min_requests
    promote = promotion_probability(checks, n) if enough else 0.0
    rollback = {r.label: rollback_probability(rollback_checks(spec, t, r, shares, evidence), n) for r in regressions}
    return StepForecast(seconds, needed * t.share, slowest, promote, rollback)


def _at_look(seconds: float, interval: float) -> float:
    """The first look at or after ``seconds`` (looks come one interval apart from the step's start)."""
    return max(math.ceil(seconds / interval - 1e-9), 1) * interval


def traffic_seen(snap: Snapshot, quantile: float) -> StepTraffic | None:
    """The step's traffic as the snapshot shows it: counted requests per second since the step started,
    stable's error rate and a log-normal fitted to stable's median and ``quantile``; None without data."""
    elapsed = snap.elapsed_seconds
    stable, candidate = snap.stable, snap.candidate
    if not elapsed or elapsed <= 0 or stable.requests <= 0 or candidate.requests <= 0:
        return None
    shape = None
    if stable.latency is not None and stable.latency.total > 0:
        h = stable.latency
        cdf = [c / h.total for c in h.cumulative]
        median, value = interpolate_quantile(h.bounds, cdf, 0.5), interpolate_quantile(h.bounds, cdf, quantile)
        if 0 < median < value < math.inf:
            shape = LatencyShape.from_quantile(value, quantile, median)
    error_rate = (stable.errors + 0.5) / (stable.requests + 1.0)
    return StepTraffic(stable.requests / elapsed, candidate.requests / elapsed, error_rate, shape)


def forecast_look(snap: Snapshot, spec: RolloutPolicySpec, shares: Mapping[str, float]) -> Forecast | None:
    """When a candidate like stable would pass every check of this step, at the traffic seen so far."""
    t = traffic_seen(snap, spec.analysis.metrics.latency.quantile)
    if t is None:
        return None
    needed, slowest = requests_to_promote(promotion_checks(spec, t, shares, snap.evidence))
    finite = math.isfinite(needed) and needed / t.rps < YEAR
    seconds = _at_look(needed / t.rps, max(parse_duration(spec.analysis.interval), 1.0)) if finite else NEVER
    return Forecast(
        seconds=round(seconds) if finite else None,
        candidate_requests=round(needed * t.share) if finite else None,
        candidate_rate=round(t.candidate_rps, 4),
        slowest=slowest or None,
    )
