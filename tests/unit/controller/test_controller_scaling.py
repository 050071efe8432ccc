"""Replica arithmetic (pure), the HPA, budgets and spread the operator renders, and the adapter rules it relies on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.controller.test_controller_children import MD
from tests.unit.rollout.world import IMAGE, spec

from mlrollout.api.modeldeployment import Autoscaling, TrafficStatus
from mlrollout.controller import children, naming, scaling
from mlrollout.controller.settings import OperatorSettings
from mlrollout.revision import revision_of

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
    served = {rule["name"]["as"] for rule in values["prometheusAdapter"]["rules"]}
    assert served == {scaling.REQUESTS_PER_SECOND_METRIC, scaling.CONCURRENCY_METRIC}
    for rule in values["prometheusAdapter"]["rules"]:
        assert rule["seriesQuery"].split("{")[0].startswith("mlrollout_model_inference_")
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
    assert default["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["whenUnsatisfiable"] == "ScheduleAnyway"
    own = gateway({**MD, "spec": {"gateway": {"replicas": 1}}}, OperatorSettings(gateway_replicas=2))
    assert own["spec"]["replicas"] == 1
    assert children.strip_none(own)["spec"]["template"]["spec"].get("topologySpreadConstraints") is None


def test_tracks_spread_over_nodes_softly_when_they_may_have_more_than_one_pod() -> None:
    rev = revision_of(spec("2", "b"), IMAGE)
    wide = children.track_deployment(MD, rev, "candidate", 1, spread_out=True)
    (constraint,) = wide["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert constraint["topologyKey"] == "kubernetes.io/hostname"
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
