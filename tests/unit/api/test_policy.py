"""Policy resolution and stricter-only overrides: pure functions, tested exhaustively on small cases."""

from __future__ import annotations

from typing import Any

import pytest
from tests.support.invalid_manifests import SHA

from mlrollout.api import FallbackPolicy, ModelDeployment, RolloutPolicy, parse_duration
from mlrollout.api.common import LabelSelector
from mlrollout.api.rolloutpolicy import RolloutPolicySpec
from mlrollout.policy import PolicyError, resolve_fallback_policy, resolve_rollout_policy, step_seconds


def md(labels: dict[str, str] | None = None, **spec: Any) -> ModelDeployment:
    return ModelDeployment.model_validate(
        {
            "metadata": {"name": "wine", "namespace": "ml", "labels": labels or {}},
            "spec": {"model": {"name": "wine", "version": "v1", "uri": "file:///m.onnx", "sha256": SHA}, **spec},
        }
    )


def rp(name: str, priority: int = 0, selector: dict[str, Any] | None = None, **spec: Any) -> RolloutPolicy:
    body: dict[str, Any] = {"priority": priority, **spec}
    if selector is not None:
        body["selector"] = selector
    return RolloutPolicy.model_validate({"metadata": {"name": name}, "spec": body})


PROD = {"namespaceSelector": {"matchLabels": {"tier": "production"}}}


def test_minimal_manifest_gets_safe_defaults() -> None:
    resolved = resolve_rollout_policy(md(), {}, [])
    assert resolved.source == "default" and resolved.name is None
    assert [s.kind for s in resolved.spec.strategy.steps] == ["shadow", "canary", "canary", "canary"]
    assert resolved.spec.strategy.canary_weights() == [5, 25, 50]
    assert resolved.spec.significance.alpha == 0.05
    assert resolved.spec.on_inconclusive.action == "rollback"


def test_explicit_reference_wins_over_any_selector() -> None:
    policies = [rp("platform", 1000, PROD), rp("mine", 0)]
    resolved = resolve_rollout_policy(md(rolloutPolicyRef={"name": "mine"}), {"tier": "production"}, policies)
    assert (resolved.source, resolved.name) == ("reference", "mine")


def test_missing_reference_is_an_error_naming_the_policy() -> None:
    with pytest.raises(PolicyError, match=r"spec.rolloutPolicyRef: RolloutPolicy 'nope' does not exist"):
        resolve_rollout_policy(md(rolloutPolicyRef={"name": "nope"}), {}, [])
    with pytest.raises(PolicyError, match=r"spec.fallbackPolicyRef: FallbackPolicy 'nope' does not exist"):
        resolve_fallback_policy(md(fallbackPolicyRef={"name": "nope"}), {}, [])


def test_highest_priority_matching_selector_wins_and_ties_are_stable() -> None:
    policies = [rp("low", 1, PROD), rp("high", 10, PROD), rp("b-tie", 10, PROD), rp("other", 99, {
        "namespaceSelector": {"matchLabels": {"tier": "dev"}}})]  # fmt: skip
    resolved = resolve_rollout_policy(md(), {"tier": "production"}, policies)
    assert (resolved.source, resolved.name) == ("selector", "b-tie")
    assert resolve_rollout_policy(md(), {"tier": "production"}, list(reversed(policies))).name == "b-tie"


def test_model_selector_and_namespace_selector_must_both_match() -> None:
    policy = rp("both", 5, {**PROD, "modelSelector": {"matchLabels": {"risk": "high"}}})
    assert resolve_rollout_policy(md({"risk": "high"}), {"tier": "production"}, [policy]).name == "both"
    assert resolve_rollout_policy(md({"risk": "low"}), {"tier": "production"}, [policy]).source == "default"
    assert resolve_rollout_policy(md({"risk": "high"}), {}, [policy]).source == "default"


def test_a_policy_without_selector_never_applies_implicitly() -> None:
    assert resolve_rollout_policy(md(), {"tier": "production"}, [rp("orphan", 100)]).source == "default"


@pytest.mark.parametrize(
    ("expressions", "labels", "expected"),
    [
        ([{"key": "tier", "operator": "In", "values": ["a", "b"]}], {"tier": "b"}, True),
        ([{"key": "tier", "operator": "In", "values": ["a"]}], {}, False),
        ([{"key": "tier", "operator": "NotIn", "values": ["a"]}], {"tier": "c"}, True),
        ([{"key": "tier", "operator": "NotIn", "values": ["a"]}], {}, True),
        ([{"key": "tier", "operator": "Exists"}], {"tier": ""}, True),
        ([{"key": "tier", "operator": "DoesNotExist"}], {"tier": "x"}, False),
    ],
)
def test_label_selector_expressions(expressions: list[dict[str, Any]], labels: dict[str, str], expected: bool) -> None:
    assert LabelSelector.model_validate({"matchExpressions": expressions}).matches(labels) is expected


def test_stricter_overrides_apply() -> None:
    strict = md(strategy={
        "steps": [{"shadow": {"minRequests": 400}}, {"canary": {"weight": 2, "minRequests": 300}},
                  {"canary": {"weight": 10, "minRequests": 600}}, {"pause": {}},
                  {"canary": {"weight": 30, "minRequests": 600}}, {"canary": {"weight": 50, "minRequests": 600}}],
        "alpha": 0.01,
        "margins": {"errorRate": {"absolute": 0.002}, "latency": {"relative": 0.05}},
        "slos": {"errorRateMax": 0.01, "latencyMaxSeconds": 0.1},
    })  # fmt: skip
    spec = resolve_rollout_policy(strict, {}, []).spec
    assert spec.strategy.canary_weights() == [2, 10, 30, 50]
    assert spec.significance.alpha == 0.01
    assert spec.significance.margins.error_rate.absolute == 0.002
    assert spec.analysis.metrics.error_rate.max_rate == 0.01
    assert spec.analysis.metrics.latency.max_seconds == 0.1
    assert RolloutPolicySpec().significance.alpha == 0.05  # the default itself is untouched


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"alpha": 0.1}, "spec.strategy.alpha"),
        ({"margins": {"errorRate": {"absolute": 0.05}, "latency": {"relative": 0.1}}}, "margins.errorRate"),
        ({"margins": {"errorRate": {"relative": 0.5}, "latency": {"relative": 0.1}}}, "allows more than"),
        ({"margins": {"errorRate": {"relative": 0.2, "floor": 0.005}}}, "floor 0.005 allows more"),
        ({"slos": {"errorRateMax": 0.5}}, "slos.errorRateMax"),
        ({"slos": {"predictionDriftMaxPsi": 1.0}}, "slos.predictionDriftMaxPsi"),
        ({"steps": [{"canary": {"weight": 5}}, {"canary": {"weight": 25}}]}, "shadow step cannot be removed"),
        ({"steps": [{"shadow": {}}, {"canary": {"weight": 10}}]}, "first canary weight 10"),
        ({"steps": [{"shadow": {}}, {"canary": {"weight": 5}}, {"canary": {"weight": 90}}]}, "largest traffic jump"),
        ({"steps": [{"shadow": {}}]}, "largest traffic jump 100%"),
        ({"steps": [{"shadow": {"minRequests": 10}}, {"canary": {"weight": 5}}, {"canary": {"weight": 25}},
                    {"canary": {"weight": 50}}]}, "steps[0].shadow.minRequests"),
        ({"steps": [{"blueGreen": {}}]}, "blue-green"),
    ],
)  # fmt: skip
def test_looser_overrides_are_refused_naming_field_and_policy(override: dict[str, Any], field: str) -> None:
    with pytest.raises(PolicyError) as error:
        resolve_rollout_policy(md(strategy=override), {}, [])
    assert field in str(error.value)
    assert "looser than RolloutPolicy 'the built-in default policy'" in str(error.value)


def test_an_override_keeps_the_policys_evaluate_step_and_its_time_limit_is_max_duration() -> None:
    gate = {"evaluate": {"dataset": {"uri": "http://store/holdout.csv", "sha256": SHA, "label": "quality"},
                         "maxDuration": "7m"}}  # fmt: skip
    shadow = {"shadow": {"mirrorPercent": 100}}
    policy = rp("gated", 0, None, strategy={"steps": [gate, shadow]})
    kept = md(rolloutPolicyRef={"name": "gated"}, strategy={"steps": [gate, {"pause": {}}, shadow]})
    steps = resolve_rollout_policy(kept, {}, [policy]).spec.strategy.steps
    assert [s.kind for s in steps] == ["evaluate", "pause", "shadow"] and step_seconds(steps[0]) == 420
    for steps_without in ([shadow], [{"evaluate": {**gate["evaluate"], "metric": "logLoss"}}, shadow]):
        with pytest.raises(PolicyError, match=r"evaluate step .* cannot be removed or changed"):
            resolve_rollout_policy(
                md(rolloutPolicyRef={"name": "gated"}, strategy={"steps": steps_without}), {}, [policy]
            )


def test_blue_green_policy_accepts_longer_minimums_only() -> None:
    policy = rp("bg", 0, None, strategy={"steps": [{"blueGreen": {"minRequests": 500}}]})
    ok = md(rolloutPolicyRef={"name": "bg"}, strategy={"steps": [{"blueGreen": {"minRequests": 900}}]})
    assert resolve_rollout_policy(ok, {}, [policy]).spec.strategy.is_blue_green
    bad = md(rolloutPolicyRef={"name": "bg"}, strategy={"steps": [{"blueGreen": {"minRequests": 100}}]})
    with pytest.raises(PolicyError, match=r"steps\[0\].blueGreen.minRequests"):
        resolve_rollout_policy(bad, {}, [policy])


def test_fallback_policy_resolution_and_default() -> None:
    fp = FallbackPolicy.model_validate({"metadata": {"name": "safe"}, "spec": {"priority": 1, "selector": PROD}})
    assert resolve_fallback_policy(md(), {"tier": "production"}, [fp]).name == "safe"
    default = resolve_fallback_policy(md(), {}, [fp])
    assert default.source == "default"
    assert [a.action for a in default.spec.chain] == ["stable", "refuse"]


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "-5m", "5 minutes", "1d", "m"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_step_seconds() -> None:
    steps = RolloutPolicySpec.model_validate(
        {"strategy": {"steps": [{"canary": {"weight": 5, "maxDuration": "2m"}}, {"pause": {}},
                                {"pause": {"duration": "10s"}}]}}
    ).strategy.steps  # fmt: skip
    assert [step_seconds(s) for s in steps] == [120, None, 10]
