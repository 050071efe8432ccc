"""The verdict: every metric's evidence combined into promote / continue / rollback / inconclusive.

Combination rule (docs/analysis.md): the false-rollback budget ``alpha`` is split over the statistical tests
that can roll back (harm tests, SLO breaches, drift), by fixed weights that favour the harm tests; the
rollout rolls back as soon as any of them fires. It promotes only when every enabled guardrail has
*passed*: non-inferiority shown, every SLO shown met, no drift. Missing evidence gives ``inconclusive``,
never ``promote``. Over a rollout of several analysed steps, each e-value test's share covers the whole
rollout: the snapshot's ``evidence`` says which step this is and what earlier steps showed (carry.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict

from mlrollout.analysis.carry import CARRIED_TESTS, StepEvidence
from mlrollout.analysis.custom import custom_result
from mlrollout.analysis.drift import DriftSettings, input_drift_result, prediction_drift_result
from mlrollout.analysis.errors import ErrorRateSettings, error_rate_results
from mlrollout.analysis.histogram import align
from mlrollout.analysis.latency import LatencySettings, latency_results
from mlrollout.analysis.result import MetricDict
from mlrollout.analysis.snapshot import Snapshot, SnapshotError, parse_snapshot
from mlrollout.api.rolloutpolicy import RolloutPolicySpec

__all__ = ["HARM_WEIGHT", "MIN_SAMPLES", "Verdict", "VerdictDict", "judge", "split_alpha"]

MIN_SAMPLES = 100
"""Requests per track (and latency observations, predictions) below which nothing is promoted."""

HARM_WEIGHT = 2.0
"""Share of the alpha budget for a harm test (candidate vs stable) relative to an SLO or drift test (1).

A test's time to a verdict grows with ``log(1/alpha_i)`` over the evidence per look. SLO breaches and drift
roll back only gross effects (shown beyond an absolute limit, PSI above ``maxPsi``), whose evidence grows
fast, so a smaller share delays them little; the harm tests must catch modest regressions (a doubled error
rate) within a few looks, where every nat of threshold counts. Fixed in advance, so the union bound holds.
"""

Verdict = Literal["promote", "continue", "rollback", "inconclusive"]


class VerdictDict(TypedDict):
    verdict: Verdict
    reason: str
    metrics: list[MetricDict]
    alpha: float
    samples: dict[str, int]
    warnings: list[str]
    skipped: list[str]
    evidence: dict[str, float]


class _Carry:
    """One test's step e-value -> the rollout's, remembering what the next analysed step would start from."""

    def __init__(self, evidence: StepEvidence, test: str) -> None:
        self.evidence, self.test = evidence, test
        self.out: float | None = None

    def __call__(self, step_e: float) -> float:
        self.out = self.evidence.carry_out(self.test, step_e)
        return self.evidence.combined(self.test, step_e)


def split_alpha(alpha: float, tests: Sequence[tuple[str, bool]]) -> dict[str, float]:
    """Each test's share of ``alpha``, by weight: ``HARM_WEIGHT`` for harm tests, 1 for the others.

    ``tests`` lists the tests that can roll back at this look as ``(name, is_harm)``. The shares add up to
    ``alpha``, so by the union bound identical tracks are rolled back with probability at most ``alpha``.
    """
    weights = {name: HARM_WEIGHT if harm else 1.0 for name, harm in tests}
    total = sum(weights.values())
    return {name: alpha * w / total for name, w in weights.items()}


def _policy(policy: Mapping[str, Any] | RolloutPolicySpec | None) -> RolloutPolicySpec:
    if policy is None:
        return RolloutPolicySpec()
    if isinstance(policy, RolloutPolicySpec):
        return policy
    if policy.get("kind") == "RolloutPolicy" and "spec" in policy:
        policy = policy["spec"]
    return RolloutPolicySpec.model_validate(policy)


def _verdict(verdict: Verdict, reason: str, metrics: list[MetricDict], alpha: float, snap: Snapshot | None,
             warnings: list[str], skipped: list[str],
             evidence: dict[str, float] | None = None) -> VerdictDict:  # fmt: skip
    samples = {"stable": snap.stable.requests, "candidate": snap.candidate.requests} if snap else {}
    return {
        "verdict": verdict,
        "reason": reason[:1024],
        "metrics": metrics,
        "alpha": alpha,
        "samples": samples,
        "warnings": warnings,
        "skipped": skipped,
        "evidence": evidence or {},
    }


def judge(snapshot: Mapping[str, Any], policy: Mapping[str, Any] | RolloutPolicySpec | None = None) -> VerdictDict:
    """Judge one look at the evidence. ``snapshot`` as in docs/analysis.md; ``policy`` a RolloutPolicy spec.

    Pass the spec as a dict (camelCase, as stored, e.g. ``RolloutPolicySpec.to_dict()``, which keeps the
    meaningful nulls such as ``maxRate: null``, no error SLO) or as the parsed ``RolloutPolicySpec``.

    Never raises for bad or missing evidence (that is an ``inconclusive`` verdict); raises
    ``pydantic.ValidationError`` for a policy that does not validate.
    """
    spec = _policy(policy)
    alpha = spec.significance.alpha
    try:
        snap = parse_snapshot(snapshot)
    except SnapshotError as exc:
        return _verdict("inconclusive", f"invalid snapshot: {exc}", [], alpha, None, [], [])
    warnings = list(snap.warnings)
    if snap.error is not None:
        return _verdict("inconclusive", f"no evidence: {snap.error}", [], alpha, None, warnings, [])

    m = spec.analysis.metrics
    margins = spec.significance.margins
    skipped: list[str] = []
    missing: list[str] = []
    latency_pair = None
    if m.latency.enabled:
        if snap.stable.latency is None or snap.candidate.latency is None:
            missing.append("latency histogram")
        else:
            s_hist, c_hist, dropped = align(snap.stable.latency, snap.candidate.latency)
            if dropped:
                warnings.append("latency bucket bounds differ between tracks; compared on the shared bounds")
            latency_pair = (s_hist, c_hist)
    has_predictions = snap.stable.predictions is not None or snap.candidate.predictions is not None
    if m.prediction_drift.enabled and not has_predictions:
        skipped.append("predictionDrift: no prediction counts in the snapshot")
    reference_features = bool(snap.reference and snap.reference.features)
    if m.input_drift.enabled and not reference_features:
        skipped.append("inputDrift: no reference profile")

    # The alpha budget is shared by every test that can roll back.
    tests: list[tuple[str, bool]] = []
    if m.error_rate.enabled:
        tests += [("errorRate.harm", True)] + ([("errorRate.slo", False)] if m.error_rate.max_rate is not None else [])
    if latency_pair is not None:
        tests += [("latency.harm", True)] if m.latency.compare_with_stable else []
        tests += [("latency.slo", False)] if m.latency.max_seconds is not None else []
    if m.prediction_drift.enabled and has_predictions:
        tests.append(("predictionDrift", False))
    if m.input_drift.enabled and reference_features:
        tests.append(("inputDrift", False))
    shares = split_alpha(alpha, tests)
    ctx = snap.evidence
    carries = {name: _Carry(ctx, name) for name in CARRIED_TESTS}

    def each(name: str) -> float:
        share = shares.get(name, alpha)  # a test not in the budget is not run, so its share is never used
        return share if name in CARRIED_TESTS else ctx.slo_alpha(share)

    results: list[MetricDict] = []
    if m.error_rate.enabled:
        results += error_rate_results(
            snap.stable,
            snap.candidate,
            ErrorRateSettings(
                each("errorRate.harm"),
                each("errorRate.slo"),
                alpha,
                margins.error_rate.absolute,
                margins.error_rate.relative,
                m.error_rate.max_rate,
                MIN_SAMPLES,
                carries["errorRate.harm"],
            ),
        )
    if latency_pair is not None:
        results += latency_results(
            *latency_pair,
            LatencySettings(m.latency.quantile, m.latency.max_seconds, m.latency.compare_with_stable,
                            margins.latency.absolute, margins.latency.relative, each("latency.harm"),
                            each("latency.slo"), alpha, MIN_SAMPLES, carries["latency.harm"]),
        )  # fmt: skip
    if m.prediction_drift.enabled and has_predictions:
        drift = DriftSettings(
            m.prediction_drift.max_psi, each("predictionDrift"), MIN_SAMPLES, carries["predictionDrift"]
        )
        rows = sum((snap.stable.predictions or {}).values()) + sum((snap.candidate.predictions or {}).values())
        per_request = rows / max(snap.stable.requests + snap.candidate.requests, 1)
        results.append(prediction_drift_result(snap.stable.predictions, snap.candidate.predictions, drift, per_request))
    if m.input_drift.enabled and reference_features and snap.reference is not None:
        drift = DriftSettings(m.input_drift.max_psi, each("inputDrift"), MIN_SAMPLES, carries["inputDrift"])
        binned = [sum(bins) for bins in (snap.candidate.features or {}).values()]
        per_request = (max(binned) if binned else 0) / max(snap.candidate.requests, 1)
        results.append(input_drift_result(snap.candidate.features, snap.reference, drift, per_request))
    for custom in m.custom or []:
        results.append(custom_result(custom, snap.custom.get(custom.name)))
    # What the next analysed step would start from if this step ended now, for each e-value test that ran.
    evidence = {name: c.out for name, c in carries.items() if c.out is not None}

    failed = [r for r in results if r["decision"] == "fail"]
    if failed:
        why = "; ".join(f"{r['name']}: {r['reason']}" for r in failed[:3])
        return _verdict("rollback", f"rollback: {why}", results, alpha, snap, warnings, skipped, evidence)
    for track, counts in (("stable", snap.stable), ("candidate", snap.candidate)):
        if counts.requests < MIN_SAMPLES:
            missing.append(f"{track} has {counts.requests} requests (need {MIN_SAMPLES})")
    if missing:
        return _verdict("inconclusive", "not enough evidence: " + "; ".join(missing), results, alpha, snap,
                        warnings, skipped, evidence)  # fmt: skip
    if not results:
        return _verdict("inconclusive", "no metric is enabled", results, alpha, snap, warnings, skipped, evidence)
    waiting = [r for r in results if r["decision"] != "pass"]
    if waiting:
        why = "; ".join(f"{r['name']}: {r['reason']}" for r in waiting[:3])
        return _verdict("continue", f"collecting evidence: {why}", results, alpha, snap, warnings, skipped, evidence)
    return _verdict(
        "promote",
        f"promote: every guardrail non-inferior and every SLO met ({len(results)} checks, alpha {alpha:g})",
        results, alpha, snap, warnings, skipped, evidence,
    )  # fmt: skip
