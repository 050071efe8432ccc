"""Which policy governs a ModelDeployment, and what its stricter-only overrides make of it.

Pure functions of the objects involved: the controller lists the policies and the namespace's labels and
calls these; `mlrollout validate` calls them on the files it is given.

Resolution order: an explicit reference wins; otherwise the highest-priority policy whose selector matches
the namespace's and the ModelDeployment's labels (ties broken by name, so the choice never flaps); otherwise
the built-in default. Overrides may only make a policy stricter; the rules are in `apply_overrides`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from mlrollout.api.common import PolicySelector, parse_duration
from mlrollout.api.fallbackpolicy import FallbackAction, FallbackPolicy, FallbackPolicySpec
from mlrollout.api.modeldeployment import ModelDeployment, StrategyOverride
from mlrollout.api.rolloutpolicy import Margin, RolloutPolicy, RolloutPolicySpec, Step, Strategy
from mlrollout_serving.contract.routes import (
    BackupModel,
    CircuitBreaker,
    FallbackSettings,
    FallbackStep,
    Review,
    Sticky,
)

Source = Literal["reference", "selector", "default"]


class PolicyError(ValueError):
    """A ModelDeployment cannot be governed as written; the message names the field and the policy."""


@dataclass(frozen=True)
class ResolvedRolloutPolicy:
    """The effective rollout policy (overrides applied) and where it came from."""

    spec: RolloutPolicySpec
    source: Source
    name: str | None


@dataclass(frozen=True)
class ResolvedFallbackPolicy:
    """The effective fallback policy and where it came from."""

    spec: FallbackPolicySpec
    source: Source
    name: str | None


P = TypeVar("P", RolloutPolicy, FallbackPolicy)


def _name(policy: RolloutPolicy | FallbackPolicy) -> str:
    return str(policy.metadata.get("name", ""))


def _labels(md: ModelDeployment) -> dict[str, str]:
    labels = md.metadata.get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _pick(
    md: ModelDeployment,
    namespace_labels: dict[str, str],
    policies: Sequence[P],
    ref_name: str | None,
    kind: str,
) -> tuple[P | None, Source]:
    if ref_name is not None:
        for policy in policies:
            if _name(policy) == ref_name:
                return policy, "reference"
        raise PolicyError(f"spec.{kind[0].lower()}{kind[1:]}Ref: {kind} {ref_name!r} does not exist")
    model_labels = _labels(md)
    matching = [
        p
        for p in policies
        if isinstance(p.spec.selector, PolicySelector) and p.spec.selector.matches(namespace_labels, model_labels)
    ]
    if not matching:
        return None, "default"
    best = max(matching, key=lambda p: (p.spec.priority, _reverse_name(_name(p))))
    return best, "selector"


def _reverse_name(name: str) -> tuple[int, ...]:
    """Sort key that makes `max` prefer the alphabetically first name among equal priorities."""
    return tuple(-ord(c) for c in name)


def resolve_rollout_policy(
    md: ModelDeployment, namespace_labels: dict[str, str], policies: Sequence[RolloutPolicy]
) -> ResolvedRolloutPolicy:
    """The rollout policy that governs `md`, with its overrides applied."""
    ref = md.spec.rollout_policy_ref.name if md.spec.rollout_policy_ref else None
    policy, source = _pick(md, namespace_labels, policies, ref, "RolloutPolicy")
    spec = policy.spec if policy is not None else RolloutPolicySpec()
    name = _name(policy) if policy is not None else None
    if md.spec.strategy is not None:
        spec = apply_overrides(spec, md.spec.strategy, name or "the built-in default policy")
    return ResolvedRolloutPolicy(spec=spec, source=source, name=name)


def resolve_fallback_policy(
    md: ModelDeployment, namespace_labels: dict[str, str], policies: Sequence[FallbackPolicy]
) -> ResolvedFallbackPolicy:
    """The fallback policy that governs `md`."""
    ref = md.spec.fallback_policy_ref.name if md.spec.fallback_policy_ref else None
    policy, source = _pick(md, namespace_labels, policies, ref, "FallbackPolicy")
    if policy is None:
        return ResolvedFallbackPolicy(spec=FallbackPolicySpec(), source=source, name=None)
    return ResolvedFallbackPolicy(spec=policy.spec, source=source, name=_name(policy))


def _looser(field: str, policy_name: str, detail: str) -> PolicyError:
    return PolicyError(f"spec.strategy.{field}: looser than RolloutPolicy {policy_name!r}: {detail}")


def _margin_text(margin: Margin) -> str:
    parts = [f"{name} {value:g}" for name, value in (("absolute", margin.absolute), ("relative", margin.relative),
                                                     ("floor", margin.floor)) if value is not None]  # fmt: skip
    return ", ".join(parts)


def _check_steps(steps: list[Step], policy: Strategy, policy_name: str) -> None:
    """Stricter steps: same kind of strategy, keep shadow, start no higher, jump no further, wait no less."""
    override = Strategy(steps=steps)
    if override.is_blue_green != policy.is_blue_green:
        raise _looser("steps", policy_name, "cannot change between blue-green and progressive steps")
    if any(s.shadow for s in policy.steps) and not any(s.shadow for s in steps):
        raise _looser("steps", policy_name, "the policy's shadow step cannot be removed")
    mine, theirs = override.canary_weights(), policy.canary_weights()
    if mine and theirs and mine[0] > theirs[0]:
        raise _looser("steps", policy_name, f"first canary weight {mine[0]} exceeds the policy's {theirs[0]}")

    def largest_jump(weights: list[int]) -> int:
        points = [0, *weights, 100]
        return max(b - a for a, b in itertools.pairwise(points))

    if theirs and largest_jump(mine) > largest_jump(theirs):
        raise _looser(
            "steps",
            policy_name,
            f"largest traffic jump {largest_jump(mine)}% exceeds the policy's {largest_jump(theirs)}%",
        )
    for kind in ("shadow", "canary", "blue_green"):
        floor = [getattr(s, kind).min_requests for s in policy.steps if getattr(s, kind) is not None]
        for index, step in enumerate(steps):
            sub = getattr(step, kind)
            if sub is not None and floor and sub.min_requests < min(floor):
                raise _looser(
                    f"steps[{index}].{kind.replace('_g', 'G')}.minRequests",
                    policy_name,
                    f"{sub.min_requests} is below the policy's minimum {min(floor)}",
                )


def apply_overrides(spec: RolloutPolicySpec, override: StrategyOverride, policy_name: str) -> RolloutPolicySpec:
    """The policy with `override` applied; raises PolicyError naming the field if any part is looser."""
    data = spec.model_copy(deep=True)
    if override.steps is not None:
        _check_steps(override.steps, spec.strategy, policy_name)
        data.strategy = Strategy(steps=override.steps)
    if override.alpha is not None:
        if override.alpha > spec.significance.alpha:
            raise _looser("alpha", policy_name, f"{override.alpha} > {spec.significance.alpha}")
        data.significance.alpha = override.alpha
    if override.margins is not None:
        for field, mine, theirs in (
            ("errorRate", override.margins.error_rate, spec.significance.margins.error_rate),
            ("latency", override.margins.latency, spec.significance.margins.latency),
        ):
            # stricter at every level of stable: no larger relative part and no larger absolute part
            if not mine.at_most(theirs):
                detail = f"{_margin_text(mine)} allows more than the policy's {_margin_text(theirs)} at some level"
                raise _looser(f"margins.{field}", policy_name, detail)
        data.significance.margins = override.margins
    if override.slos is not None:
        _apply_slos(data, override, policy_name)
    return data


def _apply_slos(data: RolloutPolicySpec, override: StrategyOverride, policy_name: str) -> None:
    slos = override.slos
    assert slos is not None
    metrics = data.analysis.metrics
    pairs: list[tuple[str, float | None, float | None]] = [
        ("errorRateMax", slos.error_rate_max, metrics.error_rate.max_rate),
        ("latencyMaxSeconds", slos.latency_max_seconds, metrics.latency.max_seconds),
        ("predictionDriftMaxPsi", slos.prediction_drift_max_psi, metrics.prediction_drift.max_psi),
        ("inputDriftMaxPsi", slos.input_drift_max_psi, metrics.input_drift.max_psi),
    ]
    for field, mine, theirs in pairs:
        if mine is not None and theirs is not None and mine > theirs:
            raise _looser(f"slos.{field}", policy_name, f"{mine} > {theirs}")
    if slos.error_rate_max is not None:
        metrics.error_rate.max_rate = slos.error_rate_max
    if slos.latency_max_seconds is not None:
        metrics.latency.max_seconds = slos.latency_max_seconds
    if slos.prediction_drift_max_psi is not None:
        metrics.prediction_drift.max_psi = slos.prediction_drift_max_psi
    if slos.input_drift_max_psi is not None:
        metrics.input_drift.max_psi = slos.input_drift_max_psi


def step_seconds(step: Step) -> float | None:
    """A step's time limit in seconds (pause: its duration), or None when it waits for a human."""
    if step.pause is not None:
        return parse_duration(step.pause.duration) if step.pause.duration else None
    for sub in (step.shadow, step.canary, step.blue_green):
        if sub is not None:
            return parse_duration(sub.max_duration)
    return None


def _analysed(step: Step) -> bool:
    return (
        step.shadow is not None
        or step.canary is not None
        or (step.blue_green is not None and step.blue_green.preview_analysis)
    )


def analysed_steps(strategy: Strategy) -> int:
    """Steps that judge evidence: shadow, canary, and blue-green with preview analysis (never pauses)."""
    return sum(1 for s in strategy.steps if _analysed(s))


def analysed_index(strategy: Strategy, index: int) -> int:
    """Which analysed step the step at ``index`` is (0-based), counting only analysed steps before it.

    The analysis weighs the rollout's evidence by it (mlrollout.analysis.carry): the policy's alpha covers
    every analysed step together, so a false rollback over the whole rollout stays within it.
    """
    return sum(1 for s in strategy.steps[:index] if _analysed(s))


def fallback_settings(spec: FallbackPolicySpec, backups: Mapping[str, BackupModel]) -> FallbackSettings:
    """The FallbackPolicy as the gateway applies it, in the route table's own format.

    ``backups`` gives each backup ModelDeployment the chain names as the gateway calls it (its address and
    the model name it serves); resolving those is the controller's job. Validating the result here means
    a chain the gateway would refuse is refused before the route table is written.
    """

    def step(link: FallbackAction) -> FallbackStep:
        if link.action == "backup" and link.backup:
            return FallbackStep(action="backup", backup=backups[link.backup])
        if link.action == "default" and link.response is not None:
            return FallbackStep(action="default", default_response=link.response.to_dict())
        if link.action == "refuse":
            return FallbackStep(action="refuse", message=link.message)
        return FallbackStep(action=link.action)

    low = spec.low_confidence_action
    review = spec.review
    return FallbackSettings(
        request_timeout_seconds=parse_duration(spec.request_timeout),
        circuit_breaker=CircuitBreaker(
            consecutive_failures=spec.circuit_breaker.consecutive_failures,
            open_seconds=parse_duration(spec.circuit_breaker.open_duration),
        ),
        confidence_threshold=spec.confidence_threshold,
        chain=tuple(step(link) for link in spec.chain),
        low_confidence_action=step(low) if low is not None else None,
        review=None
        if review is None
        else Review(
            url=review.url,
            respond=review.respond,
            default_response=review.response.to_dict() if review.response is not None else None,
            message=review.message,
            high_stakes=None
            if review.high_stakes is None
            else Sticky(header=review.high_stakes.header, json_field=review.high_stakes.json_field),
            queue_size=review.queue_size,
            concurrency=review.concurrency,
            timeout_seconds=parse_duration(review.timeout),
            retries=review.retries,
            backoff_seconds=parse_duration(review.backoff),
            max_body_bytes=review.max_body_bytes,
        ),
    )
