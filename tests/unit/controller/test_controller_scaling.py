"""Replica arithmetic (pure), the HPA, budgets and spread the operator renders, and the adapter rules it relies on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.controller.test_controller_children import MD
from tests.unit.rollout.world import IMAGE, spec

from mlrollout.api.modeldeployment import Autoscaling, GatewayAutoscaling, TrafficStatus
from mlrollout.controller import children, naming, scaling
from mlrollout.controller.settings import OperatorSettings
from mlrollout.revision import revision_of
from mlrollout_serving.contract.metrics import GATEWAY_DURATION, GATEWAY_REQUESTS, MODEL_DURATION, MODEL_REQUESTS

ROOT = Path(__file__).resolve().parents[3]
HPA_RANGE = Autoscaling(min_replicas=2, max_replicas=20, metric="requestsPerSecond", target=50)


def traffic(candidate: int = 0, mirror: int = 0) -> TrafficStatus:
    return TrafficStatus(stable=100 - candidate, candidate=candidate, mirror=mirror)


def test_candidate_follows_its_share_rounded_up_and_never_below_one_pod() -> None:
    assert scaling.candidate_replicas(10, 5) == 1  # 0.5 pods rounds up to one
    assert scaling.candidate_replicas(10, 25) == 3  # 2.5 -> 3
    assert scaling.candidate_replicas(10, 50) == 5
    assert scaling.candidate_replicas(10, 100) == 10
    assert scaling.candidate_replicas(1, 1) == 1
    assert scaling.candidate_replicas(7, 0) == 1  # a shadow without mirror (rolled back) keeps one pod


def test_rounding_at_one_percent_weights_is_exact() -> None:
    # integers only: 1 % of 100 is exactly one pod, of 101 two (ceil), of 300 three; floats would give 1.0000001
    assert scaling.candidate_replicas(100, 1) == 1
    assert scaling.candidate_replicas(101, 1) == 2
    assert scaling.candidate_replicas(300, 1) == 3
    assert scaling.candidate_replicas(1000, 1) == 10
    assert scaling.candidate_replicas(1000, 99) == 990
    assert scaling.candidate_replicas(29, 100) == 29  # 29 * 100 / 100 must not become 30 through 0.29 * 100


@given(st.integers(min_value=0, max_value=1000), st.integers(min_value=0, max_value=100))
def test_candidate_replicas_is_the_smallest_fleet_covering_the_share(stable: int, share: int) -> None:
    n = scaling.candidate_replicas(stable, share)
    assert n >= 1
    assert n * 100 >= stable * share  # enough for its share
    assert n == 1 or (n - 1) * 100 < stable * share  # and not a pod more
    assert n <= max(stable, 1)  # a candidate never outgrows the stable it is measured against


def test_share_is_weight_or_mirror_and_a_blue_green_candidate_gets_the_full_fleet() -> None:
    assert scaling.share_percent("canary", traffic(candidate=5)) == 5
    assert scaling.share_percent("shadow", traffic(mirror=20)) == 20  # shadow sized for the mirrored copies
    assert scaling.share_percent("pause", traffic(candidate=25, mirror=0)) == 25
    assert scaling.share_percent("blueGreen", traffic(mirror=10)) == 100  # it takes everything at the switch
    assert scaling.share_percent(None, None) == 0


def sizing(current: dict[str, int], before: str | None, after: str | None, share: int = 0,
           autoscaling: Autoscaling | None = HPA_RANGE) -> scaling.Sizing:  # fmt: skip
    return scaling.Sizing(
        spec_replicas=3, autoscaling=autoscaling, current=current, stable_before=before, stable_after=after,
        share=share,
    )  # fmt: skip


def test_without_autoscaling_every_track_runs_spec_replicas() -> None:
    s = sizing({"old": 9, "new": 1}, "old", "old", share=5, autoscaling=None)
    assert s.replicas("old", "stable") == s.replicas("new", "candidate") == 3


def test_stable_keeps_what_the_hpa_chose_and_a_new_one_starts_at_min() -> None:
    assert sizing({"old": 9}, "old", "old").replicas("old", "stable") == 9
    assert sizing({}, None, "first").replicas("first", "stable") == 2  # minReplicas
    assert sizing({"old": 1}, "old", "old").replicas("old", "stable") == 2  # clamped into the HPA's range
    assert sizing({"old": 50}, "old", "old").replicas("old", "stable") == 20


def test_candidate_is_sized_from_the_stables_current_count() -> None:
    assert sizing({"old": 9, "new": 1}, "old", "old", share=5).replicas("new", "candidate") == 1
    assert sizing({"old": 9, "new": 1}, "old", "old", share=25).replicas("new", "candidate") == 3
    assert sizing({"old": 9, "new": 3}, "old", "old", share=20).replicas("new", "candidate") == 2  # shrinks too


def test_promotion_hands_the_old_stables_count_to_the_new_stable() -> None:
    # the pass that promotes: status said `old` was stable, the decision says `new`; the new stable starts at
    # the old stable's count (never at its canary size), so ready capacity does not shrink
    handover = sizing({"old": 12, "new": 6}, "old", "new")
    assert handover.replicas("new", "stable") == 12
    # a new stable the HPA had already scaled higher keeps its own count
    assert sizing({"old": 4, "new": 6}, "old", "new").replicas("new", "stable") == 6
    # the next pass: `new` is stable before and after; its own count (the HPA's from now on) is kept
    assert sizing({"old": 12, "new": 12}, "new", "new").replicas("new", "stable") == 12
    assert sizing({"new": 15}, "new", "new").replicas("new", "stable") == 15


def test_spread_and_budgets_follow_the_spec_not_the_pods_running_now() -> None:
    assert sizing({}, None, None).may_scale_out()  # maxReplicas 20
    assert not sizing({}, None, None, autoscaling=Autoscaling(max_replicas=1, metric="cpu", target=50)).may_scale_out()
    assert sizing({"a": 1}, "a", "a", autoscaling=None).may_scale_out()  # spec_replicas 3


def test_current_replicas_reads_the_model_servers_deployments_only() -> None:
    server = {naming.REVISION: "r1", naming.COMPONENT: naming.SERVER_COMPONENT}
    gateway = {naming.COMPONENT: naming.GATEWAY_COMPONENT}
    deployments: list[dict[str, Any]] = [
        {"metadata": {"labels": server}, "spec": {"replicas": 7}},
        {"metadata": {"labels": gateway}, "spec": {"replicas": 3}},
    ]
    assert scaling.current_replicas(deployments) == {"r1": 7}


def test_hpa_status_says_when_the_hpa_cannot_get_its_metric() -> None:
    hpa = {
        "status": {
            "currentReplicas": 4,
            "desiredReplicas": 4,
            "conditions": [
                {"type": "AbleToScale", "status": "True"},
                {
                    "type": "ScalingActive",
                    "status": "False",
                    "reason": "FailedGetPodsMetric",
                    "message": "unable to get metric mlrollout_model_inference_requests_per_second: no matches",
                },
            ],
        }
    }
    status = scaling.hpa_status(hpa, "wine-abc")
    assert (status.scaling_active, status.current_replicas, status.target) == ("False", 4, "wine-abc")
    assert status.message.startswith("FailedGetPodsMetric: unable to get metric")
    assert scaling.hpa_status(None, "wine-abc").scaling_active == "Unknown"  # not reported yet
    ok = {"status": {"conditions": [{"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound"}]}}
    assert scaling.hpa_status(ok, "wine-abc").message == ""


@pytest.mark.parametrize(
    ("metric", "target", "expected"),
    [
        ("cpu", 70, {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                               "averageUtilization": 70}}}),
        ("requestsPerSecond", 50, {"type": "Pods", "pods": {
            "metric": {"name": "mlrollout_model_inference_requests_per_second"},
            "target": {"type": "AverageValue", "averageValue": "50000m"}}}),
        ("concurrency", 0.5, {"type": "Pods", "pods": {
            "metric": {"name": "mlrollout_model_inference_concurrency"},
            "target": {"type": "AverageValue", "averageValue": "500m"}}}),
    ],
)  # fmt: skip
def test_the_hpa_targets_the_stable_deployment_with_its_metric(metric: str, target: float, expected: Any) -> None:
    spec_ = Autoscaling.model_validate({"minReplicas": 2, "maxReplicas": 9, "metric": metric, "target": target})
    hpa = children.autoscaler(MD, "abc123", spec_)
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["metadata"]["name"] == "wine"
    assert hpa["metadata"]["ownerReferences"][0]["uid"] == "1234-uid"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "wine-abc123"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 9)
    assert hpa["spec"]["metrics"] == [expected]


def test_the_chart_adapter_rules_serve_the_metrics_the_hpas_ask_for() -> None:
    values = yaml.safe_load((ROOT / "charts/mlrollout/values.yaml").read_text())
    rules = {rule["name"]["as"]: rule for rule in values["prometheusAdapter"]["rules"]}
    assert set(rules) == {
        scaling.REQUESTS_PER_SECOND_METRIC,
        scaling.CONCURRENCY_METRIC,
        scaling.GATEWAY_REQUESTS_PER_SECOND_METRIC,
        scaling.GATEWAY_CONCURRENCY_METRIC,
    }
    # each Pods metric is computed from the series its exporter writes (the contract's names)
    sources = {
        scaling.REQUESTS_PER_SECOND_METRIC: MODEL_REQUESTS.name,
        scaling.CONCURRENCY_METRIC: MODEL_DURATION.name + "_sum",
        scaling.GATEWAY_REQUESTS_PER_SECOND_METRIC: GATEWAY_REQUESTS.name,
        scaling.GATEWAY_CONCURRENCY_METRIC: GATEWAY_DURATION.name + "_sum",
    }
    for name, rule in rules.items():
        assert rule["seriesQuery"].split("{")[0] == sources[name]
        assert rule["name"]["matches"] == f"^{sources[name]}$"
        assert 'pod!=""' in rule["seriesQuery"] and rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
        assert "rate(<<.Series>>" in rule["metricsQuery"]  # counters: per-second, per pod


def test_track_budget_is_owned_by_its_deployment_and_never_blocks_a_drain() -> None:
    pdb = children.track_budget(MD, "abc123", "stable", "dep-uid")
    assert pdb["metadata"]["name"] == "wine-abc123"
    owner = pdb["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["blockOwnerDeletion"]) == ("Deployment", "dep-uid", False)
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert pdb["spec"]["selector"]["matchLabels"] == naming.selector("wine", **{naming.REVISION: "abc123"})


def test_the_gateway_budget_selects_the_gateway_only() -> None:
    # a pod under two budgets cannot be evicted at all: the `<md>` budget no longer covers the model servers
    pdb = children.disruption_budget(MD)
    assert pdb["metadata"]["name"] == "wine"
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector[naming.COMPONENT] == naming.GATEWAY_COMPONENT
    assert pdb["spec"]["maxUnavailable"] == 1


def test_gateway_replicas_come_from_the_spec_else_the_operator_and_spread_above_one() -> None:
    def gateway(md: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
        return next(o for o in children.gateway_children(md, settings) if o["kind"] == "Deployment")

    default = gateway(MD, OperatorSettings(gateway_replicas=2))
    assert default["spec"]["replicas"] == 2
    constraints = default["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert [(c["topologyKey"], c["whenUnsatisfiable"]) for c in constraints] == [
        ("kubernetes.io/hostname", "ScheduleAnyway"),
        ("topology.kubernetes.io/zone", "ScheduleAnyway"),
    ]
    selector = default["spec"]["selector"]["matchLabels"]
    assert all(c["labelSelector"]["matchLabels"] == selector for c in constraints)
    own = gateway({**MD, "spec": {"gateway": {"replicas": 1}}}, OperatorSettings(gateway_replicas=2))
    assert own["spec"]["replicas"] == 1
    assert children.strip_none(own)["spec"]["template"]["spec"].get("topologySpreadConstraints") is None


def test_tracks_spread_over_nodes_softly_when_they_may_have_more_than_one_pod() -> None:
    rev = revision_of(spec("2", "b"), IMAGE)
    wide = children.track_deployment(MD, rev, "candidate", 1, spread_out=True)
    node, zone = wide["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert (node["topologyKey"], zone["topologyKey"]) == ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
    for constraint in (node, zone):
        assert constraint["maxSkew"] == 1
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"  # never leaves a pod unscheduled
        assert constraint["labelSelector"]["matchLabels"] == wide["spec"]["selector"]["matchLabels"]
    narrow = children.strip_none(children.track_deployment(MD, rev, "candidate", 1))
    assert "topologySpreadConstraints" not in narrow["spec"]["template"]["spec"]


def deployment(replicas: int, *managers: tuple[str, str, bool]) -> dict[str, Any]:
    """A Deployment whose managedFields list (manager, operation, owns spec.replicas)."""
    fields = [
        {"manager": m, "operation": op, "fieldsV1": {"f:spec": {"f:replicas": {}} if owns else {"f:template": {}}}}
        for m, op, owns in managers
    ]
    return {"metadata": {"managedFields": fields}, "spec": {"replicas": replicas}}


def test_the_hpa_is_handed_the_replicas_without_a_dip_and_then_left_alone() -> None:
    ours, handover = naming.FIELD_MANAGER, naming.REPLICAS_FIELD_MANAGER
    # still the operator's own field (a promoted candidate): set it through the second manager first, so that
    # leaving it out of the operator's apply cannot reset it to one pod
    assert scaling.replicas_handover(deployment(5, (ours, "Apply", True)), 5) == 5
    # the promotion hand-over raises it to the old stable's count
    assert scaling.replicas_handover(deployment(3, (ours, "Apply", True)), 12) == 12
    # the HPA (or kubectl scale) took the field: the operator sends nothing, so it never races the HPA
    hpa_owned = deployment(7, (ours, "Apply", False), ("kube-controller-manager", "Update", True))
    assert scaling.replicas_handover(hpa_owned, 7) is None
    # ... unless the count must change (clamped into a narrowed range)
    assert scaling.replicas_handover(hpa_owned, 4) == 4
    # the second manager's own ownership does not count as the operator's
    assert scaling.replicas_handover(deployment(2, (handover, "Apply", True)), 2) is None
    assert scaling.replicas_handover(None, 2) is None  # not created yet: the first apply carries replicas


GATEWAY_HPA = {"minReplicas": 2, "maxReplicas": 6, "metric": "requestsPerSecond", "target": 100}


def gateway_deployment(md: dict[str, Any], settings: OperatorSettings, hpa_owned: bool = False) -> dict[str, Any]:
    objs = children.gateway_children(md, settings, hpa_owned)
    return dict(children.strip_none(next(o for o in objs if o["kind"] == "Deployment")))


def with_gateway(**gateway: Any) -> dict[str, Any]:
    return {**MD, "spec": {**MD.get("spec", {}), "gateway": gateway}}


@pytest.mark.parametrize(
    ("metric", "target", "expected"),
    [
        ("requestsPerSecond", 100, {"type": "Pods", "pods": {
            "metric": {"name": "mlrollout_gateway_requests_per_second"},
            "target": {"type": "AverageValue", "averageValue": "100000m"}}}),
        ("concurrency", 2.5, {"type": "Pods", "pods": {
            "metric": {"name": "mlrollout_gateway_concurrency"},
            "target": {"type": "AverageValue", "averageValue": "2500m"}}}),
        ("cpu", 70, {"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}),
    ],
)  # fmt: skip
def test_the_gateway_hpa_targets_the_gateway_deployment_with_the_gateways_own_series(
    metric: str, target: float, expected: Any
) -> None:
    spec_ = GatewayAutoscaling.model_validate({**GATEWAY_HPA, "metric": metric, "target": target})
    hpa = children.gateway_autoscaler(MD, spec_)
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["kind"] == "HorizontalPodAutoscaler"
    assert hpa["metadata"]["name"] == "wine-gateway"  # the stable track's is `wine`
    [owner] = hpa["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("ModelDeployment", "1234-uid", True)
    assert hpa["metadata"]["labels"][naming.COMPONENT] == naming.GATEWAY_COMPONENT
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "wine"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"] == [expected]


def test_gateway_autoscaling_comes_from_the_spec_else_the_operator_unless_replicas_are_fixed() -> None:
    chart = GatewayAutoscaling.model_validate({**GATEWAY_HPA, "maxReplicas": 4})
    own = with_gateway(autoscaling={**GATEWAY_HPA, "maxReplicas": 9})
    assert children.gateway_autoscaling(MD, OperatorSettings()) is None
    assert children.gateway_autoscaling(MD, OperatorSettings(gateway_autoscaling=chart)) == chart
    found = children.gateway_autoscaling(own, OperatorSettings(gateway_autoscaling=chart))
    assert found is not None and found.max_replicas == 9  # the spec wins over the chart
    fixed = with_gateway(replicas=3)
    assert children.gateway_autoscaling(fixed, OperatorSettings(gateway_autoscaling=chart)) is None  # opted out
    assert gateway_deployment(fixed, OperatorSettings(gateway_autoscaling=chart))["spec"]["replicas"] == 3


def test_an_autoscaled_gateway_starts_at_min_replicas_then_leaves_them_to_its_hpa_and_spreads() -> None:
    md = with_gateway(autoscaling={**GATEWAY_HPA, "minReplicas": 1})
    created = gateway_deployment(md, OperatorSettings())
    assert created["spec"]["replicas"] == 1  # a new Deployment: the operator sets minReplicas
    # one pod now, up to 6 under the HPA: spread from the start, so the HPA's choices never roll the pods
    keys = [c["topologyKey"] for c in created["spec"]["template"]["spec"]["topologySpreadConstraints"]]
    assert keys == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    held = gateway_deployment(md, OperatorSettings(), hpa_owned=True)
    assert "replicas" not in held["spec"]  # the apply leaves the field to the HPA
    assert held["spec"]["template"] == created["spec"]["template"]
    # a gateway that can never have more than one pod is not spread
    single = gateway_deployment(with_gateway(autoscaling={**GATEWAY_HPA, "minReplicas": 1, "maxReplicas": 1}),
                                OperatorSettings())  # fmt: skip
    assert "topologySpreadConstraints" not in single["spec"]["template"]["spec"]


def test_gateway_resources_reach_its_container() -> None:
    md = with_gateway(resources={"requests": {"cpu": "250m"}, "limits": {"memory": "256Mi"}})
    [container] = gateway_deployment(md, OperatorSettings())["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == {"requests": {"cpu": "250m"}, "limits": {"memory": "256Mi"}}
    [plain] = gateway_deployment(MD, OperatorSettings())["spec"]["template"]["spec"]["containers"]
    assert "resources" not in plain


def test_the_gateways_held_replicas_are_the_hpas_choice_clamped_into_its_range() -> None:
    scaling_ = GatewayAutoscaling.model_validate(GATEWAY_HPA)  # 2..6
    assert scaling.held_replicas(None, scaling_) == 2
    assert scaling.held_replicas(1, scaling_) == 2
    assert scaling.held_replicas(5, scaling_) == 5
    assert scaling.held_replicas(9, scaling_) == 6
    ours = naming.FIELD_MANAGER
    # autoscaling switched on over a fixed gateway of 4 (the operator's field): handed over at 4, no dip
    assert scaling.replicas_handover(deployment(4, (ours, "Apply", True)), scaling.held_replicas(4, scaling_)) == 4
    # the HPA holds it at 5: nothing is sent
    hpa_owned = deployment(5, (ours, "Apply", False), ("kube-controller-manager", "Update", True))
    assert scaling.replicas_handover(hpa_owned, scaling.held_replicas(5, scaling_)) is None


def test_the_operators_gateway_autoscaling_default_is_checked_json() -> None:
    env = {"MLROLLOUT_GATEWAY_AUTOSCALING": json.dumps(GATEWAY_HPA)}
    assert OperatorSettings.from_env(env).gateway_autoscaling == GatewayAutoscaling.model_validate(GATEWAY_HPA)
    for absent in ({}, {"MLROLLOUT_GATEWAY_AUTOSCALING": ""}, {"MLROLLOUT_GATEWAY_AUTOSCALING": "{}"}):
        assert OperatorSettings.from_env(absent).gateway_autoscaling is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("min: 2", "MLROLLOUT_GATEWAY_AUTOSCALING must be a JSON object"),
        (json.dumps({**GATEWAY_HPA, "minReplicas": 9}), "minReplicas must not exceed autoscaling.maxReplicas"),
        (json.dumps({**GATEWAY_HPA, "target": 0}), "target: Input should be greater than 0"),
        (json.dumps({**GATEWAY_HPA, "metric": "cpu"}), "metric cpu cannot be the operator's default"),
    ],
)
def test_a_bad_gateway_autoscaling_default_stops_the_operator_naming_the_variable(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        OperatorSettings.from_env({"MLROLLOUT_GATEWAY_AUTOSCALING": value})
    assert str(err.value).startswith("MLROLLOUT_GATEWAY_AUTOSCALING")


def test_zone_spread_can_be_left_out_for_clusters_without_zone_labels() -> None:
    # there the scheduler would ignore every node for the pod's soft spread, the node rule included
    rev = revision_of(spec("2", "b"), IMAGE)
    track = children.track_deployment(MD, rev, "stable", 3, spread_out=True, zones=False)
    [node] = track["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert (node["topologyKey"], node["whenUnsatisfiable"]) == ("kubernetes.io/hostname", "ScheduleAnyway")
    settings = OperatorSettings.from_env({"MLROLLOUT_ZONE_SPREAD": "false"})
    assert settings.zone_spread is False and OperatorSettings.from_env({}).zone_spread is True
    gateway = gateway_deployment(with_gateway(replicas=2), settings)
    keys = [c["topologyKey"] for c in gateway["spec"]["template"]["spec"]["topologySpreadConstraints"]]
    assert keys == ["kubernetes.io/hostname"]
