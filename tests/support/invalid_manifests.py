"""Invalid manifests, each with the field it must be refused on.

One table for two layers: `tests/unit/api/test_validation.py` checks the offline validator (the pydantic
models) refuses each with `message`; `tests/cluster/` checks the real API server (CRD schema and CEL rules)
refuses each case with `server=True` and names `path` in its error. Cases with `server=False` need
knowledge the API server does not have (the policy an override is compared with).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

SHA = "3b0d2c71a5b8a3f6e19a7c0b52f3ad0e4c11a9f2b6d7e8c9a0b1c2d3e4f5a6b7"


def model_deployment(**spec: Any) -> dict[str, Any]:
    """A valid minimal ModelDeployment with `spec` fields replaced (None deletes a field)."""
    base: dict[str, Any] = {
        "apiVersion": "mlrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "bad", "namespace": "default"},
        "spec": {"model": {"name": "wine", "version": "v1", "uri": "http://store/wine.onnx", "sha256": SHA}},
    }
    for key, value in spec.items():
        if value is None:
            base["spec"].pop(key, None)
        else:
            base["spec"][key] = value
    return base


def with_model(**model: Any) -> dict[str, Any]:
    """A ModelDeployment whose spec.model has these fields replaced (None deletes)."""
    doc = model_deployment()
    for key, value in model.items():
        if value is None:
            doc["spec"]["model"].pop(key, None)
        else:
            doc["spec"]["model"][key] = value
    return doc


def rollout_policy(**spec: Any) -> dict[str, Any]:
    """A RolloutPolicy with this spec."""
    return {"apiVersion": "mlrollout.io/v1alpha1", "kind": "RolloutPolicy", "metadata": {"name": "bad"}, "spec": spec}


def hook(**fields: Any) -> dict[str, Any]:
    """A valid approval hook with these fields replaced (None deletes)."""
    return replaced({"name": "ops", "type": "confirmPromotion", "secretRef": {"name": "hooks", "key": "url"}}, fields)


def steps(*items: dict[str, Any]) -> dict[str, Any]:
    """A strategy made of these steps."""
    return {"steps": list(items)}


def custom(*metrics: dict[str, Any]) -> dict[str, Any]:
    """An analysis with these custom metrics."""
    return {"metrics": {"custom": list(metrics)}}


def replaced(base: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``fields`` replaced (None deletes)."""
    out = dict(base)
    for key, value in fields.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def sink(**fields: Any) -> dict[str, Any]:
    """A valid notification sink with these fields replaced (None deletes)."""
    base = {
        "name": "team",
        "kind": "webhook",
        "secretRef": {"name": "hooks", "key": "url"},
        "events": ["Promoted", "RolledBack"],
    }
    return replaced(base, fields)


def fallback_policy(**spec: Any) -> dict[str, Any]:
    """A FallbackPolicy with this spec."""
    return {"apiVersion": "mlrollout.io/v1alpha1", "kind": "FallbackPolicy", "metadata": {"name": "bad"}, "spec": spec}


@dataclass(frozen=True)
class Case:
    """One invalid manifest: where it is wrong and what the offline validator says."""

    id: str
    manifest: dict[str, Any]
    path: str
    message: str
    server: bool = True
    extra: list[dict[str, Any]] = field(default_factory=list)  # documents validated together with it
    keep_namespace: bool = False  # the cluster tier sends it to its own namespace unless this is set
    server_says: str = ""  # what the server's refusal names instead of `path` (refused before any schema)

    def documents(self) -> list[dict[str, Any]]:
        """The extra documents first (policies), then the manifest, as deep copies."""
        return [copy.deepcopy(d) for d in (*self.extra, self.manifest)]


CANARY_5 = {"canary": {"weight": 5}}
EVALUATE: dict[str, Any] = {
    "dataset": {"uri": "http://store/holdout.csv", "sha256": SHA, "label": "quality"},
    "metric": "accuracy",
    "maxDuration": "10m",
}
STRICT_POLICY = rollout_policy(
    strategy=steps({"shadow": {}}, {"canary": {"weight": 5}}, {"canary": {"weight": 25}}, {"canary": {"weight": 50}}),
    significance={"alpha": 0.01},
)
STRICT_POLICY["metadata"]["name"] = "strict"

ANSWER = {"outputs": [{"name": "y", "datatype": "FP32", "shape": [1], "data": [0]}]}

CASES: list[Case] = [
    # ModelDeployment
    Case("sha256-short", with_model(sha256="abc123"), "spec.model.sha256", "64 lowercase hex"),
    Case("sha256-uppercase", with_model(sha256=SHA.upper()), "spec.model.sha256", "64 lowercase hex"),
    Case("uri-unknown-scheme", with_model(uri="ftp://store/m.onnx"), "spec.model.uri", "http(s)://HOST[:PORT]/PATH"),
    Case("uri-s3-short-bucket", with_model(uri="s3://b/m.onnx"), "spec.model.uri", "s3://BUCKET/KEY"),
    Case("uri-gs-no-object", with_model(uri="gs://models/"), "spec.model.uri", "gs://BUCKET/OBJECT"),
    Case("uri-models-no-version", with_model(uri="models:/wine"), "spec.model.uri", "models:/NAME/VERSION"),
    Case(
        "registry-without-models-uri",
        with_model(registry={"uri": "http://mlflow:5000"}),
        "spec.model",
        "registry is only for models:/ uris",
    ),
    Case(
        "models-uri-without-registry",
        with_model(uri="models:/wine/2", sha256=None),
        "spec.model",
        "a models:/ uri needs registry.uri",
    ),
    Case(
        "registry-with-credentials-in-url",
        with_model(uri="models:/wine/2", sha256=None, registry={"uri": "http://u:p@mlflow:5000"}),
        "spec.model.registry.uri",
        "should match pattern",
    ),
    Case("uri-no-scheme", with_model(uri="/models/m.onnx"), "spec.model.uri", "http(s)://HOST[:PORT]/PATH"),
    Case("uri-newline-injection", with_model(uri="http://store/x.onnx\n--sha256=0"), "spec.model.uri", "no spaces"),
    Case("uri-spaces", with_model(uri="http://a b c"), "spec.model.uri", "no spaces"),
    Case("uri-tab", with_model(uri="http://store/x\t.onnx"), "spec.model.uri", "no spaces"),
    Case("uri-no-path", with_model(uri="http://store"), "spec.model.uri", "http(s)://HOST[:PORT]/PATH"),
    Case("uri-credentials", with_model(uri="http://user:pw@store/x.onnx"), "spec.model.uri", "user:password@"),
    Case("uri-file-with-host", with_model(uri="file://models/x.onnx"), "spec.model.uri", "file:///PATH"),
    Case("uri-pvc-no-claim", with_model(uri="pvc:///x.onnx"), "spec.model.uri", "pvc://CLAIM/PATH"),
    Case("uri-pvc-claim-not-dns", with_model(uri="pvc://Bad_Claim/x.onnx"), "spec.model.uri", "pvc://CLAIM/PATH"),
    Case("uri-pvc-dotdot", with_model(uri="pvc://claim/../../etc/passwd"), "spec.model.uri", "'..'"),
    Case("uri-pvc-encoded-dotdot", with_model(uri="pvc://claim/%2e%2e/etc/passwd"), "spec.model.uri", "'..'"),
    Case("uri-pvc-absolute-path", with_model(uri="pvc://claim//etc/passwd"), "spec.model.uri", "relative"),
    Case(
        "profile-pvc-dotdot",
        with_model(referenceProfile="pvc://claim/models/../../p.json"),
        "spec.model.referenceProfile",
        "'..'",
    ),
    Case(
        "namespace-invalid",
        {**model_deployment(), "metadata": {"name": "bad", "namespace": "Bad_NS"}},
        "metadata.namespace",
        "DNS label",
        keep_namespace=True,
        server_says='namespaces "Bad_NS" not found',
    ),
    Case("model-missing", model_deployment(model=None), "spec.model", "required field is missing"),
    Case("sha256-missing", with_model(sha256=None), "spec.model", "sha256 is required unless"),
    Case("format-unknown", with_model(format="tensorflow"), "spec.model.format", "'onnx'"),
    Case("model-name-uppercase", with_model(name="Wine"), "spec.model.name", "DNS label"),
    Case("replicas-zero", model_deployment(replicas=0), "spec.replicas", "greater than or equal to 1"),
    Case("port-privileged", model_deployment(serving={"port": 80}), "spec.serving.port", "greater than or equal"),
    Case(
        "batch-size-zero",
        model_deployment(serving={"batching": {"maxBatchSize": 0}}),
        "spec.serving.batching.maxBatchSize",
        "greater than or equal to 1",
    ),
    Case(
        "timeout-negative",
        model_deployment(serving={"requestTimeout": "-1s"}),
        "spec.serving.requestTimeout",
        "duration",
    ),
    Case("provider-unknown", model_deployment(traffic={"provider": "nginx"}), "spec.traffic.provider", "'builtin'"),
    Case(
        "sticky-both",
        model_deployment(traffic={"sticky": {"header": "x-user", "jsonField": "user"}}),
        "spec.traffic.sticky",
        "exactly one of header, jsonField",
    ),
    Case(
        "sticky-without-builtin-gateway",
        model_deployment(traffic={"provider": "gatewayAPI", "sticky": {"header": "x-user"}}),
        "spec.traffic",
        "sticky needs traffic.provider builtin",
    ),
    Case(
        "fallback-without-builtin-gateway",
        model_deployment(traffic={"provider": "istio"}, fallbackPolicyRef={"name": "safe"}),
        "spec",
        "fallbackPolicyRef needs traffic.provider builtin",
    ),
    Case(
        "autoscaling-min-above-max",
        model_deployment(autoscaling={"minReplicas": 5, "maxReplicas": 2, "metric": "requestsPerSecond", "target": 50}),
        "spec.autoscaling",
        "minReplicas must not exceed autoscaling.maxReplicas",
    ),
    Case(
        "autoscaling-target-zero",
        model_deployment(autoscaling={"maxReplicas": 4, "metric": "concurrency", "target": 0}),
        "spec.autoscaling.target",
        "greater than 0",
    ),
    Case(
        "autoscaling-target-negative",
        model_deployment(autoscaling={"maxReplicas": 4, "metric": "requestsPerSecond", "target": -3}),
        "spec.autoscaling.target",
        "greater than 0",
    ),
    Case(
        "autoscaling-max-zero",
        model_deployment(autoscaling={"maxReplicas": 0, "metric": "concurrency", "target": 2}),
        "spec.autoscaling.maxReplicas",
        "greater than or equal to 1",
    ),
    Case(
        "autoscaling-unknown-metric",
        model_deployment(autoscaling={"maxReplicas": 4, "metric": "gpu", "target": 2}),
        "spec.autoscaling.metric",
        "'cpu'",
    ),
    Case(
        "autoscaling-cpu-without-request",
        model_deployment(autoscaling={"maxReplicas": 4, "metric": "cpu", "target": 70}),
        "spec",
        "needs resources.requests.cpu",
    ),
    Case("gateway-replicas-zero", model_deployment(gateway={"replicas": 0}), "spec.gateway.replicas", "greater than"),
    Case(
        "gateway-autoscaling-min-above-max",
        model_deployment(
            gateway={"autoscaling": {"minReplicas": 5, "maxReplicas": 2, "metric": "concurrency", "target": 4}}
        ),
        "spec.gateway.autoscaling",
        "minReplicas must not exceed autoscaling.maxReplicas",
    ),
    Case(
        "gateway-autoscaling-target-zero",
        model_deployment(gateway={"autoscaling": {"maxReplicas": 4, "metric": "requestsPerSecond", "target": 0}}),
        "spec.gateway.autoscaling.target",
        "greater than 0",
    ),
    Case(
        "gateway-autoscaling-max-above-limit",
        model_deployment(gateway={"autoscaling": {"maxReplicas": 101, "metric": "requestsPerSecond", "target": 5}}),
        "spec.gateway.autoscaling.maxReplicas",
        "less than or equal to 100",
    ),
    Case(
        "gateway-autoscaling-unknown-metric",
        model_deployment(gateway={"autoscaling": {"maxReplicas": 4, "metric": "latency", "target": 2}}),
        "spec.gateway.autoscaling.metric",
        "'cpu'",
    ),
    Case(
        "gateway-autoscaling-cpu-without-request",
        # the model servers' cpu request is not the gateway's
        model_deployment(
            resources={"requests": {"cpu": "1"}},
            gateway={"autoscaling": {"maxReplicas": 4, "metric": "cpu", "target": 70}},
        ),
        "spec.gateway",
        "needs gateway.resources.requests.cpu",
    ),
    Case(
        "network-client-selects-nothing",
        model_deployment(networkPolicy={"enabled": True, "clients": [{}]}),
        "spec.networkPolicy.clients[0]",
        "namespaceSelector or podSelector",
    ),
    Case("unknown-field", model_deployment(modelUri="http://x/m.onnx"), "spec.modelUri", "unknown field"),
    Case(
        "memory-not-quantity",
        model_deployment(resources={"requests": {"memory": "lots"}}),
        "spec.resources.requests.memory",
        "quantity",
    ),
    Case("override-alpha-too-high", model_deployment(strategy={"alpha": 0.5}), "spec.strategy.alpha", "less than"),
    Case(
        "override-weights-decreasing",
        model_deployment(strategy=steps({"canary": {"weight": 20}}, {"canary": {"weight": 10}})),
        "spec.strategy",
        "strictly increasing",
    ),
    Case(
        "override-looser-first-weight",
        model_deployment(strategy=steps({"shadow": {}}, {"canary": {"weight": 50}})),
        "spec.strategy.steps",
        "looser than RolloutPolicy 'the built-in default policy'",
        server=False,
    ),
    Case(
        "override-looser-alpha",
        model_deployment(rolloutPolicyRef={"name": "strict"}, strategy={"alpha": 0.05}),
        "spec.strategy.alpha",
        "looser than RolloutPolicy 'strict'",
        server=False,
        extra=[STRICT_POLICY],
    ),
    Case(
        "override-drops-shadow",
        model_deployment(
            rolloutPolicyRef={"name": "strict"},
            strategy=steps({"canary": {"weight": 1}}, {"canary": {"weight": 10}}, {"canary": {"weight": 50}}),
        ),
        "spec.strategy.steps",
        "shadow step cannot be removed",
        server=False,
        extra=[STRICT_POLICY],
    ),
    # RolloutPolicy
    Case(
        "quality-mae-without-error-bound",
        rollout_policy(analysis={"metrics": {"quality": {"enabled": True, "metric": "mae"}}}),
        "spec.analysis.metrics.quality",
        "errorBound is required with metric mae",
    ),
    Case(
        "weights-decreasing",
        rollout_policy(strategy=steps({"canary": {"weight": 25}}, CANARY_5)),
        "spec.strategy",
        "strictly increasing",
    ),
    Case(
        "weights-equal",
        rollout_policy(strategy=steps(CANARY_5, CANARY_5)),
        "spec.strategy",
        "strictly increasing",
    ),
    Case(
        "weight-over-100",
        rollout_policy(strategy=steps({"canary": {"weight": 150}})),
        "spec.strategy.steps[0].canary.weight",
        "less than or equal to 100",
    ),
    Case(
        "weight-zero",
        rollout_policy(strategy=steps({"canary": {"weight": 0}})),
        "spec.strategy.steps[0].canary.weight",
        "greater than or equal to 1",
    ),
    Case(
        "step-two-kinds",
        rollout_policy(strategy=steps({"canary": {"weight": 5}, "pause": {}})),
        "spec.strategy.steps[0]",
        "exactly one of shadow, canary, pause, blueGreen",
    ),
    Case(
        "evaluate-after-traffic",
        rollout_policy(strategy=steps({"shadow": {}}, {"evaluate": EVALUATE})),
        "spec.strategy",
        "evaluate steps must come before every traffic step",
    ),
    Case(
        "evaluate-mean-baseline-for-accuracy",
        rollout_policy(strategy=steps({"evaluate": {**EVALUATE, "baseline": "mean"}})),
        "spec.strategy.steps[0].evaluate",
        "baseline mean is for mae and rmse",
    ),
    Case(
        "evaluate-dataset-bad-sha256",
        rollout_policy(strategy=steps({"evaluate": {**EVALUATE, "dataset": {**EVALUATE["dataset"], "sha256": "x"}}})),
        "spec.strategy.steps[0].evaluate.dataset.sha256",
        "must be 64 lowercase hex characters",
    ),
    Case(
        "evaluate-dataset-registry-uri",
        rollout_policy(
            strategy=steps({"evaluate": {**EVALUATE, "dataset": {**EVALUATE["dataset"], "uri": "models:/wine/1"}}})
        ),
        "spec.strategy.steps[0].evaluate.dataset.uri",
        "String should match pattern",
    ),
    Case(
        "strategy-unknown",
        rollout_policy(strategy=steps({"rolling": {"maxSurge": 1}})),
        "spec.strategy.steps[0].rolling",
        "unknown field",
    ),
    Case(
        "duration-negative",
        rollout_policy(strategy=steps({"canary": {"weight": 5, "maxDuration": "-5m"}})),
        "spec.strategy.steps[0].canary.maxDuration",
        "duration",
    ),
    Case(
        "duration-words",
        rollout_policy(analysis={"interval": "5 minutes"}),
        "spec.analysis.interval",
        "duration",
    ),
    Case("alpha-zero", rollout_policy(significance={"alpha": 0}), "spec.significance.alpha", "greater than 0"),
    Case(
        "margin-both",
        rollout_policy(significance={"margins": {"errorRate": {"absolute": 0.01, "relative": 0.1}}}),
        "spec.significance.margins.errorRate",
        "exactly one of absolute, relative",
    ),
    Case(
        "margin-relative-zero",
        rollout_policy(significance={"margins": {"errorRate": {"relative": 0}}}),
        "spec.significance.margins.errorRate",
        "makes promotion impossible",
    ),
    Case(
        "margin-absolute-below-minimum",
        rollout_policy(significance={"margins": {"errorRate": {"absolute": 0.00001}}}),
        "spec.significance.margins.errorRate.absolute",
        "promotion would be impossible",
    ),
    Case(
        "margin-floor-below-minimum",
        rollout_policy(significance={"margins": {"latency": {"relative": 0.1, "floor": 0.00001}}}),
        "spec.significance.margins.latency.floor",
        "promotion would be impossible",
    ),
    Case(
        "margin-floor-without-relative",
        rollout_policy(significance={"margins": {"errorRate": {"absolute": 0.01, "floor": 0.001}}}),
        "spec.significance.margins.errorRate",
        "floor goes with a relative margin",
    ),
    Case(
        "margin-error-rate-above-one",
        rollout_policy(significance={"margins": {"errorRate": {"absolute": 1.5}}}),
        "spec.significance.margins",
        "of a rate or fraction",
    ),
    Case(
        "quality-accuracy-margin-above-one",
        rollout_policy(analysis={"metrics": {"quality": {"enabled": True, "margin": {"absolute": 2}}}}),
        "spec.analysis.metrics.quality",
        "of a rate or fraction",
    ),
    Case(
        "evaluate-accuracy-floor-above-one",
        rollout_policy(strategy=steps({"evaluate": {**EVALUATE, "margin": {"relative": 0.1, "floor": 2}}})),
        "spec.strategy.steps[0].evaluate",
        "of a rate or fraction",
    ),
    Case(
        "blue-green-with-canary",
        rollout_policy(strategy=steps({"blueGreen": {}}, CANARY_5)),
        "spec.strategy",
        "exactly one blueGreen step and no canary",
    ),
    Case(
        "custom-no-threshold",
        rollout_policy(analysis={"metrics": {"custom": [{"name": "p", "query": "up"}]}}),
        "spec.analysis.metrics.custom[0]",
        "needs min or max",
    ),
    Case(
        "custom-unknown-placeholder",
        rollout_policy(analysis=custom({"name": "p", "query": 'up{ns="{{bogus}}"}', "max": 1})),
        "spec.analysis.metrics.custom[0].query",
        "unknown placeholder",
    ),
    Case(
        "custom-unbalanced-placeholder",
        rollout_policy(analysis=custom({"name": "p", "query": 'up{ns="{{namespace}"}', "max": 1})),
        "spec.analysis.metrics.custom[0].query",
        "not part of a placeholder",
    ),
    Case(
        "custom-query-empty",
        rollout_policy(analysis=custom({"name": "p", "query": "", "max": 1})),
        "spec.analysis.metrics.custom[0].query",
        "must not be blank",
    ),
    Case(
        "custom-query-blank",
        rollout_policy(analysis=custom({"name": "p", "query": " \t ", "max": 1})),
        "spec.analysis.metrics.custom[0].query",
        "must not be blank",
    ),
    Case(
        "custom-duplicate-names",
        rollout_policy(analysis=custom({"name": "p", "query": "up", "max": 1}, {"name": "p", "query": "up", "min": 0})),
        "spec.analysis.metrics.custom",
        "custom metric names must be unique",
    ),
    Case(
        "custom-min-above-max",
        rollout_policy(analysis=custom({"name": "p", "query": "up", "min": 2, "max": 1})),
        "spec.analysis.metrics.custom[0]",
        "min must not be above max",
    ),
    Case("on-failure-unknown", rollout_policy(onFailure="explode"), "spec.onFailure", "'rollback'"),
    Case("steps-empty", rollout_policy(strategy={"steps": []}), "spec.strategy.steps", "at least 1 item"),
    Case(
        "mirror-over-100",
        rollout_policy(strategy=steps({"shadow": {"mirrorPercent": 101}})),
        "spec.strategy.steps[0].shadow.mirrorPercent",
        "less than or equal to 100",
    ),
    # RolloutPolicy notifications (docs/notifications.md)
    Case(
        "notify-no-events",
        rollout_policy(notifications={"sinks": [sink(events=[])]}),
        "spec.notifications.sinks[0].events",
        "at least 1 item",
    ),
    Case(
        "notify-unknown-kind",
        rollout_policy(notifications={"sinks": [sink(kind="teams")]}),
        "spec.notifications.sinks[0].kind",
        "'webhook' or 'slack'",
    ),
    Case(
        "notify-unknown-event",
        rollout_policy(notifications={"sinks": [sink(events=["Exploded"])]}),
        "spec.notifications.sinks[0].events[0]",
        "'RolloutStarted'",
    ),
    Case(
        "notify-no-secret-ref",
        rollout_policy(notifications={"sinks": [sink(secretRef=None)]}),
        "spec.notifications.sinks[0].secretRef",
        "required field is missing",
    ),
    Case(
        "notify-plain-url",
        rollout_policy(notifications={"sinks": [sink(url="https://hooks.example/x")]}),
        "spec.notifications.sinks[0].url",
        "unknown field",
    ),
    Case(
        "notify-secret-ref-no-key",
        rollout_policy(notifications={"sinks": [sink(secretRef={"name": "hooks"})]}),
        "spec.notifications.sinks[0].secretRef.key",
        "required field is missing",
    ),
    Case(
        "notify-repeated-event",
        rollout_policy(notifications={"sinks": [sink(events=["Promoted", "Promoted"])]}),
        "spec.notifications.sinks[0].events",
        "events must be unique",
    ),
    Case(
        "notify-repeated-sink",
        rollout_policy(notifications={"sinks": [sink(), sink()]}),
        "spec.notifications.sinks",
        "notification sink names must be unique",
    ),
    Case("notify-no-sinks", rollout_policy(notifications={"sinks": []}), "spec.notifications.sinks", "at least 1 item"),
    Case(
        "notify-timeout-too-long",
        rollout_policy(notifications={"sinks": [sink(timeout="5m")]}),
        "spec.notifications.sinks[0]",
        "timeout must be between 100ms and 60s",
        server=False,
    ),
    # RolloutPolicy approval hooks (docs/notifications.md, "Approval hooks")
    Case(
        "hook-unknown-type",
        rollout_policy(hooks=[hook(type="confirmEverything")]),
        "spec.hooks[0].type",
        "'confirmRollout'",
    ),
    Case(
        "hook-plain-url",
        rollout_policy(hooks=[hook(url="https://approve.example/x")]),
        "spec.hooks[0].url",
        "unknown field",
    ),
    Case("hook-no-secret-ref", rollout_policy(hooks=[hook(secretRef=None)]), "spec.hooks[0].secretRef", "required"),
    Case("hook-repeated-name", rollout_policy(hooks=[hook(), hook()]), "spec.hooks", "hook names must be unique"),
    Case(
        "hook-timeout-too-long",
        rollout_policy(hooks=[hook(timeout="2m")]),
        "spec.hooks[0]",
        "timeout must be between 100ms and 60s",
        server=False,
    ),
    Case(
        "hook-max-wait-too-short",
        rollout_policy(hooks=[hook(maxWait="1s")]),
        "spec.hooks[0]",
        "maxWait must be between 10s and 7d",
        server=False,
    ),
    # FallbackPolicy
    Case("backup-without-name", fallback_policy(chain=[{"action": "backup"}]), "spec.chain[0]", "needs backup"),
    Case("default-without-response", fallback_policy(chain=[{"action": "default"}]), "spec.chain[0]", "needs response"),
    Case("action-unknown", fallback_policy(chain=[{"action": "retry"}]), "spec.chain[0].action", "'stable'"),
    Case("confidence-over-1", fallback_policy(confidenceThreshold=1.5), "spec.confidenceThreshold", "less than"),
    Case("chain-empty", fallback_policy(chain=[]), "spec.chain", "at least 1 item"),
    Case(
        "chain-repeats-stable",
        fallback_policy(chain=[{"action": "stable"}, {"action": "stable"}]),
        "spec.chain",
        "fallback chain repeats an action",
    ),
    Case(
        "chain-repeats-backup",
        fallback_policy(chain=[{"action": "backup", "backup": "lite"}, {"action": "backup", "backup": "lite"}]),
        "spec.chain",
        "fallback chain repeats an action",
    ),
    Case(
        "chain-refuse-not-last",
        fallback_policy(chain=[{"action": "refuse"}, {"action": "stable"}]),
        "spec.chain",
        "fallback action refuse always answers, so it must be last",
    ),
    Case(
        "chain-default-not-last",
        fallback_policy(chain=[{"action": "default", "response": ANSWER}, {"action": "refuse"}]),
        "spec.chain",
        "fallback action default always answers, so it must be last",
    ),
    Case(
        "low-confidence-without-threshold",
        fallback_policy(lowConfidenceAction={"action": "refuse"}),
        "spec.lowConfidenceAction",
        "lowConfidenceAction needs a confidenceThreshold",
    ),
    Case(
        "review-in-chain",
        fallback_policy(chain=[{"action": "stable"}, {"action": "review"}]),
        "spec.chain",
        "fallback action review needs the model's answer",
    ),
    Case(
        "review-without-settings",
        fallback_policy(confidenceThreshold=0.6, lowConfidenceAction={"action": "review"}),
        "spec",
        "lowConfidenceAction review needs review settings",
    ),
    Case(
        "review-without-trigger",
        fallback_policy(review={"url": "http://reviews.ops.svc:8080/in"}),
        "spec",
        "review is set but nothing sends to it",
    ),
    Case(
        "review-default-without-response",
        fallback_policy(
            review={"url": "http://reviews.ops.svc:8080/in", "respond": "default", "highStakes": {"header": "x-risk"}}
        ),
        "spec.review",
        "review.respond default needs review.defaultResponse",
    ),
    Case(
        "review-message-without-respond",  # respond unset: its default (model) takes no message
        fallback_policy(
            review={"url": "http://reviews.ops.svc:8080/in", "message": "later", "highStakes": {"header": "x-risk"}}
        ),
        "spec.review",
        "review.message is only for respond refuse",
    ),
    Case(
        "review-url-https",
        fallback_policy(review={"url": "https://reviews.ops.svc:8443/in", "highStakes": {"header": "x-risk"}}),
        "spec.review.url",
        "should match pattern",
    ),
    Case(
        "breaker-zero",
        fallback_policy(circuitBreaker={"consecutiveFailures": 0}),
        "spec.circuitBreaker.consecutiveFailures",
        "greater than or equal to 1",
    ),
    Case(
        "default-bad-datatype",
        fallback_policy(
            chain=[
                {
                    "action": "default",
                    "response": {"outputs": [{"name": "y", "datatype": "FLOAT", "shape": [1], "data": [0]}]},
                }
            ]
        ),
        "spec.chain[0].response.outputs[0].datatype",
        "'FP32'",
    ),
]


# Families of inputs on which the offline rules and the API server's rules must agree one by one (the unit
# tier checks the offline side against a reference, the cluster tier the server against the offline side).
QUERY_PIECES = ["{", "}", " ", "a", '"', "{{namespace}}", "{{ window }}", "{{bogus}}", "{{", "}}", "{{track"]


def custom_queries(longest: int = 3) -> list[str]:
    """Every distinct query of up to `longest` QUERY_PIECES (the empty one included)."""
    found = {"".join(p) for n in range(longest + 1) for p in itertools.product(QUERY_PIECES, repeat=n)}
    return sorted(found)


FALLBACK_LINKS: dict[str, dict[str, Any]] = {
    "stable": {"action": "stable"},
    "refuse": {"action": "refuse"},
    "default": {"action": "default", "response": ANSWER},
    "backup-lite": {"action": "backup", "backup": "lite"},
    "backup-other": {"action": "backup", "backup": "other"},
    "backup-stable": {"action": "backup", "backup": "stable"},  # a backup ModelDeployment named "stable"
    "review": {"action": "review"},  # needs the model's answer: never in a chain
}


def fallback_chains(longest: int = 3) -> list[tuple[str, ...]]:
    """Every chain of up to `longest` links drawn from FALLBACK_LINKS, by link names."""
    return [chain for n in range(1, longest + 1) for chain in itertools.product(FALLBACK_LINKS, repeat=n)]


ACCEPTED_URIS: list[str] = [
    "http://model-store.ml-demo.svc/wine-v1.onnx",
    "http://model-store.ml-demo.svc.cluster.local:8080/models/wine-v1.onnx",
    "https://bucket.s3.amazonaws.com/m/wine.onnx?X-Amz-Signature=ab%2Fcd&X-Amz-Expires=600",
    "http://10.0.0.7:9000/wine.onnx",
    "http://[fd00::7]:9000/wine.onnx",
    "file:///models/wine-v1.onnx",
    "file:///models/with%20space.onnx",
    "pvc://models/wine/v2.onnx",
    "pvc://team-a.models/.hidden/wine..v2.onnx",
    "s3://models/wine/v2.onnx",
    "s3://team-a.models/wine%20v2/model.onnx",
    "gs://models/wine/v2.onnx",
    "gs://team_a-models/wine%20v2/model.onnx",
]
REFUSED_URIS: list[str] = [
    "pvc://models/...",
    "http://store/x.onnx\n--sha256=0",
    "http://a b c",
    "http://store",
    "http://store/",
    "http://user:pw@store/x.onnx",
    "HTTP://store/x.onnx",
    "http://store/x.onnx#frag",
    "http://store/caf\u00e9.onnx",
    "http://store/100%.onnx",
    "s3://b/m.onnx",
    "s3://Bucket/m.onnx",
    "s3://bucket/",
    "s3://bucket",
    "s3://user:pw@bucket/m.onnx",
    "models:/wine",
    "models:/wine/",
    "models:/wine/v2",
    "models:/wine@",
    "models:/wine/2/extra",
    "gs://b/m.onnx",
    "gs://Bucket/m.onnx",
    "gs://bucket/",
    "gs://bucket",
    "gs://user:pw@bucket/m.onnx",
    "gs://_bucket/m.onnx",
    "/models/m.onnx",
    "file://models/x.onnx",
    "file:///",
    "pvc:///x.onnx",
    "pvc://claim",
    "pvc://claim/",
    "pvc://Bad_Claim/x.onnx",
    "pvc://-claim/x.onnx",
    "pvc://claim/../../etc/passwd",
    "pvc://claim/a/./b.onnx",
    "pvc://claim/a/b/..",
    "pvc://claim//etc/passwd",
    "pvc://claim/a//b.onnx",
    "pvc://claim/%2e%2e/etc/passwd",
    "pvc://claim/..%2f..%2fetc/passwd",
    "pvc://claim/x.onnx?y=1",
]
"""Model URIs around the edges of the pattern (docs/api.md, 'Model URIs')."""
