"""The verdict: every metric's evidence combined into promote / continue / rollback / inconclusive.

Combination rule (docs/analysis.md): the false-rollback budget ``alpha`` is split over the statistical tests
that can roll back (harm tests, SLO breaches, drift), by fixed weights that favour the harm tests; the
rollout rolls back as soon as any of them fires. It promotes only when every enabled guardrail has
*passed*: non-inferiority shown, every SLO shown met, no drift. Missing evidence gives ``inconclusive``,
never ``promote``. Over a rollout of several analysed steps, each e-value test's share covers the whole
rollout: the snapshot's ``evidence`` says which step this is and what earlier steps showed (carry.py).

One table (:data:`FAMILIES`) lists the evidence families; the same entries decide which tests share the
alpha budget at this look and run them, so a test is never budgeted without running or run unbudgeted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from mlrollout.analysis import forecast
from mlrollout.analysis.carry import CARRIED_TESTS
from mlrollout.analysis.custom import custom_result
from mlrollout.analysis.drift import DriftSettings, input_drift_result, prediction_drift_result
from mlrollout.analysis.errors import ErrorRateSettings, error_rate_results
from mlrollout.analysis.histogram import Histogram, align
from mlrollout.analysis.latency import LatencySettings, latency_results
from mlrollout.analysis.quality import QualitySettings, quality_results
from mlrollout.analysis.snapshot import Labels, Snapshot
from mlrollout.analysis.split import split_result
from mlrollout.api.analysis import Judgement, MetricResult, Samples, Verdict
from mlrollout.api.rolloutpolicy import Metrics, RolloutPolicySpec

__all__ = ["FAMILIES", "HARM_WEIGHT", "MIN_SAMPLES", "Family", "alpha_shares", "judge", "split_alpha"]

MIN_SAMPLES = forecast.MIN_SAMPLES
"""Requests per track (and latency observations, predictions) below which nothing is promoted."""

HARM_WEIGHT = 2.0
"""Share of the alpha budget for a harm test (candidate vs stable) relative to an SLO or drift test (1).

A test's time to a verdict grows with ``log(1/alpha_i)`` over the evidence per look. SLO breaches and drift
roll back only gross effects (shown beyond an absolute limit, PSI above ``maxPsi``), whose evidence grows
fast, so a smaller share delays them little; the harm tests must catch modest regressions (a doubled error
rate) within a few looks, where every nat of threshold counts. Fixed in advance, so the union bound holds.
"""

Test = tuple[str, bool]
"""A test that can roll back: its name and whether it is a harm test (weight ``HARM_WEIGHT``)."""


def split_alpha(alpha: float, tests: Sequence[Test]) -> dict[str, float]:
    """Each test's share of ``alpha``, by weight: ``HARM_WEIGHT`` for harm tests, 1 for the others.

    ``tests`` lists the tests that can roll back at this look. The shares add up to ``alpha``, so by the
    union bound identical tracks are rolled back with probability at most ``alpha``.
    """
    weights = {name: HARM_WEIGHT if harm else 1.0 for name, harm in tests}
    total = sum(weights.values())
    return {name: alpha * w / total for name, w in weights.items()}


class _Carry:
    """One test's step e-value -> the rollout's, remembering what the next analysed step would start from."""

    def __init__(self, snap: Snapshot, test: str) -> None:
        self.evidence, self.test = snap.evidence, test
        self.out: float | None = None

    def __call__(self, step_e: float) -> float:
        self.out = self.evidence.carry_out(self.test, step_e)
        return self.evidence.combined(self.test, step_e)


@dataclass
class _Look:
    """One look being judged: the snapshot, the policy, and what the families share."""

    snap: Snapshot
    spec: RolloutPolicySpec
    warnings: list[str]
    carries: dict[str, _Carry] = field(init=False)
    shares: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.carries = {name: _Carry(self.snap, name) for name in CARRIED_TESTS}

    @property
    def metrics(self) -> Metrics:
        return self.spec.analysis.metrics

    @cached_property
    def latency(self) -> tuple[Histogram, Histogram] | None:
        """Both tracks' latency histograms on their shared bounds, when both were counted."""
        if self.snap.stable.latency is None or self.snap.candidate.latency is None:
            return None
        stable, candidate, dropped = align(self.snap.stable.latency, self.snap.candidate.latency)
        if dropped:
            self.warnings.append("latency bucket bounds differ between tracks; compared on the shared bounds")
        return stable, candidate

    def alpha(self, test: str) -> float:
        """The test's share; an SLO test (no e-value to carry) splits it evenly over the analysed steps."""
        share = self.shares.get(test, self.spec.significance.alpha)
        return share if test in CARRIED_TESTS else self.snap.evidence.slo_alpha(share)


@dataclass(frozen=True)
class Family:
    """One evidence family: when it applies, which of its tests share the alpha budget, how to run it.

    ``available`` false with ``enabled`` true means the family's data is missing: ``blocking`` families
    (latency) then keep the verdict inconclusive, the others (drift) are listed as skipped. A ``guards``
    family checks the evidence itself (the traffic split): a result of it that is not ``pass`` makes the
    verdict inconclusive whatever the others say, unless one of them rolls back.
    """

    name: str
    enabled: Callable[[Metrics], bool]
    tests: Callable[[_Look], list[Test]]
    run: Callable[[_Look], list[MetricResult]]
    available: Callable[[_Look], bool] = lambda look: True
    missing: str | Callable[[_Look], str] = ""
    blocking: bool = False
    guards: bool = False


def _error_rate(look: _Look) -> list[MetricResult]:
    m, margins = look.metrics.error_rate, look.spec.significance.margins.error_rate
    settings = ErrorRateSettings(
        look.alpha("errorRate.harm"), look.alpha("errorRate.slo"), look.spec.significance.alpha, margins,
        m.max_rate, MIN_SAMPLES, look.carries["errorRate.harm"],
    )  # fmt: skip
    return error_rate_results(look.snap.stable, look.snap.candidate, settings)


def _latency(look: _Look) -> list[MetricResult]:
    assert look.latency is not None
    m, margins = look.metrics.latency, look.spec.significance.margins.latency
    settings = LatencySettings(
        m.quantile, m.max_seconds, m.compare_with_stable, margins, look.alpha("latency.harm"),
        look.alpha("latency.slo"), look.spec.significance.alpha, MIN_SAMPLES, look.carries["latency.harm"],
    )  # fmt: skip
    return latency_results(*look.latency, settings)


def _prediction_drift(look: _Look) -> list[MetricResult]:
    snap = look.snap
    settings = DriftSettings(
        look.metrics.prediction_drift.max_psi, look.alpha("predictionDrift"), MIN_SAMPLES,
        look.carries["predictionDrift"],
    )  # fmt: skip
    rows = sum((snap.stable.predictions or {}).values()) + sum((snap.candidate.predictions or {}).values())
    per_request = rows / max(snap.stable.requests + snap.candidate.requests, 1)
    return [prediction_drift_result(snap.stable.predictions, snap.candidate.predictions, settings, per_request)]


def _input_drift(look: _Look) -> list[MetricResult]:
    snap = look.snap
    assert snap.reference is not None
    settings = DriftSettings(
        look.metrics.input_drift.max_psi, look.alpha("inputDrift"), MIN_SAMPLES, look.carries["inputDrift"]
    )
    binned = [sum(bins) for bins in (snap.candidate.features or {}).values()]
    per_request = (max(binned) if binned else 0) / max(snap.candidate.requests, 1)
    return [input_drift_result(snap.candidate.features, snap.reference, settings, per_request)]


def _quality(look: _Look) -> list[MetricResult]:
    q, snap = look.metrics.quality, look.snap
    settings = QualitySettings(
        q.metric, look.alpha("quality.harm"), look.spec.significance.alpha, q.margin, q.min_labels,
        look.carries["quality.harm"], q.clip_bound,
    )  # fmt: skip
    stable, candidate = snap.stable.labels or Labels(), snap.candidate.labels or Labels()
    return quality_results(stable, candidate, snap.pairs, settings, design=snap.design)


def _split(look: _Look) -> list[MetricResult]:
    assert look.snap.split is not None
    return [split_result(look.snap.split, look.metrics.split.tolerance)]


def _custom(look: _Look) -> list[MetricResult]:
    return [custom_result(metric, look.snap.custom.get(metric.name)) for metric in look.metrics.custom or []]


FAMILIES: tuple[Family, ...] = (
    Family(
        "errorRate",
        enabled=lambda m: m.error_rate.enabled,
        tests=lambda look: (
            [("errorRate.harm", True)]
            + ([("errorRate.slo", False)] if look.metrics.error_rate.max_rate is not None else [])
        ),
        run=_error_rate,
    ),
    Family(
        "latency",
        enabled=lambda m: m.latency.enabled,
        available=lambda look: look.latency is not None,
        missing="latency histogram",
        blocking=True,
        tests=lambda look: (
            ([("latency.harm", True)] if look.metrics.latency.compare_with_stable else [])
            + ([("latency.slo", False)] if look.metrics.latency.max_seconds is not None else [])
        ),
        run=_latency,
    ),
    Family(
        "predictionDrift",
        enabled=lambda m: m.prediction_drift.enabled,
        available=lambda look: look.snap.stable.predictions is not None or look.snap.candidate.predictions is not None,
        missing="predictionDrift: no prediction counts in the snapshot",
        tests=lambda look: [("predictionDrift", False)],
        run=_prediction_drift,
    ),
    Family(
        "inputDrift",
        enabled=lambda m: m.input_drift.enabled,
        available=lambda look: bool(look.snap.reference and look.snap.reference.features),
        missing="inputDrift: no reference profile",
        tests=lambda look: [("inputDrift", False)],
        run=_input_drift,
    ),
    Family(
        "quality",  # labels joined to predictions; inconclusive (so never a promotion) until labels come
        enabled=lambda m: m.quality.enabled,
        tests=lambda look: [("quality.harm", True)],
        run=_quality,
    ),
    # thresholds, not statistical tests: outside the alpha budget (docs/analysis.md)
    Family("custom", enabled=lambda m: bool(m.custom), tests=lambda look: [], run=_custom),
    # the evidence itself: a mismatch never rolls back, so it has its own alpha (split.SPLIT_ALPHA)
    Family(
        "split",
        enabled=lambda m: m.split.enabled,
        available=lambda look: look.snap.split is not None and look.snap.split.observed is not None,
        missing=lambda look: (
            f"split: {look.snap.split.uncounted}"
            if look.snap.split is not None and look.snap.split.uncounted
            else "split: no routed counts in the snapshot"
        ),
        tests=lambda look: [],
        run=_split,
        guards=True,
    ),
)


def _active(look: _Look) -> tuple[list[Family], list[str], list[str]]:
    """The families that run at this look, and what is missing: blocking (inconclusive) or skipped."""
    missing: list[str] = []
    skipped: list[str] = []
    active: list[Family] = []
    for family in FAMILIES:
        if not family.enabled(look.metrics):
            continue
        if family.available(look):
            active.append(family)
        else:
            why = family.missing if isinstance(family.missing, str) else family.missing(look)
            (missing if family.blocking else skipped).append(why)
    return active, missing, skipped


def alpha_shares(snap: Snapshot, spec: RolloutPolicySpec | None = None) -> dict[str, float]:
    """Each rollback test's share of alpha at a look at ``snap``: the budget ``judge`` spends (plans use it)."""
    spec = spec or RolloutPolicySpec()
    look = _Look(snap, spec, [])
    active, _, _ = _active(look)
    return split_alpha(spec.significance.alpha, [test for family in active for test in family.tests(look)])


def judge(snap: Snapshot, spec: RolloutPolicySpec | None = None) -> Judgement:
    """Judge one look at the evidence with the policy's spec (the built-in default when None).

    Never raises for bad or missing evidence: that is an ``inconclusive`` verdict.
    """
    spec = spec or RolloutPolicySpec()
    alpha = spec.significance.alpha
    warnings = list(snap.warnings)
    if snap.error is not None:
        return Judgement(verdict="inconclusive", reason=f"no evidence: {snap.error}", alpha=alpha, warnings=warnings)
    look = _Look(snap, spec, warnings)
    active, missing, skipped = _active(look)
    # The alpha budget is shared by every test that can roll back at this look, and only by those.
    look.shares = split_alpha(alpha, [test for family in active for test in family.tests(look)])
    ran = [(family, family.run(look)) for family in active]
    results = [result for _, found in ran for result in found]
    # What the next analysed step would start from if this step ended now, for each e-value test that ran.
    evidence = {name: c.out for name, c in look.carries.items() if c.out is not None}

    def verdict(name: Verdict, reason: str) -> Judgement:
        samples = Samples(stable=snap.stable.requests, candidate=snap.candidate.requests)
        return Judgement(verdict=name, reason=reason, metrics=results, alpha=alpha, samples=samples,
                         warnings=warnings, skipped=skipped, evidence=evidence,
                         forecast=forecast.forecast_look(snap, spec, look.shares))  # fmt: skip

    failed = [r for r in results if r.decision == "fail"]
    if failed:
        return verdict("rollback", "rollback: " + "; ".join(f"{r.name}: {r.reason}" for r in failed[:3]))
    suspect = [r for family, found in ran if family.guards for r in found if r.decision != "pass"]
    if suspect:  # a broken split makes every comparison suspect: never promote on it
        return verdict("inconclusive", "; ".join(r.reason or r.name for r in suspect))
    for track, counts in (("stable", snap.stable), ("candidate", snap.candidate)):
        if counts.requests < MIN_SAMPLES:
            missing.append(f"{track} has {counts.requests} requests (need {MIN_SAMPLES})")
    if missing:
        return verdict("inconclusive", "not enough evidence: " + "; ".join(missing))
    if not results:
        return verdict("inconclusive", "no metric is enabled")
    waiting = [r for r in results if r.decision != "pass"]
    if waiting:
        return verdict("continue", "collecting evidence: " + "; ".join(f"{r.name}: {r.reason}" for r in waiting[:3]))
    return verdict(
        "promote",
        f"promote: every guardrail non-inferior and every SLO met ({len(results)} checks, alpha {alpha:g})",
    )
