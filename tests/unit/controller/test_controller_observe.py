"""Facts from Kubernetes objects, judgements from their sources, analysis timing."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from tests.unit.rollout.world import World, policy

from mlrollout.analysis import AnalysisTarget, Snapshot, judge
from mlrollout.analysis.carry import StepEvidence
from mlrollout.api.analysis import Judgement
from mlrollout.api.modeldeployment import ModelDeploymentStatus
from mlrollout.controller import naming
from mlrollout.controller.observe import facts_by_revision, gateway_facts, one_line, starting_pods, track_facts
from mlrollout.controller.verdicts import PrometheusVerdicts, RecordedVerdicts
from mlrollout.rollout import analysis_due
from mlrollout.rollout.timefmt import fmt


def deployment(rev: str, replicas: int = 2, ready: int = 2, updated: int = 2, gen: int = 1, seen: int = 1) -> Any:
    return {
        "metadata": {
            "name": f"wine-{rev}",
            "generation": gen,
            "labels": {naming.REVISION: rev, naming.COMPONENT: naming.SERVER_COMPONENT},
        },
        "spec": {"replicas": replicas},
        "status": {"readyReplicas": ready, "updatedReplicas": updated, "observedGeneration": seen},
    }


def pod(rev: str, **container: Any) -> Any:
    return {
        "metadata": {"labels": {naming.REVISION: rev}},
        "status": {"containerStatuses": [{"name": "server", "restartCount": 0, **container}]},
    }


def test_ready_needs_every_replica_updated_and_ready_at_the_current_generation() -> None:
    assert track_facts(deployment("a"), []).ready
    assert not track_facts(deployment("a", ready=1), []).ready
    assert track_facts(deployment("a", ready=1), []).available
    assert not track_facts(deployment("a", updated=1), []).ready
    assert not track_facts(deployment("a", gen=2, seen=1), []).ready
    assert not track_facts(None, []).exists


def test_crash_loop_and_refused_digest_come_from_container_statuses() -> None:
    crash = pod("a", restartCount=4, state={"waiting": {"reason": "CrashLoopBackOff"}})
    facts = track_facts(deployment("a", ready=0), [crash])
    assert facts.crash_looping and "CrashLoopBackOff" in facts.detail
    refused = pod(
        "a",
        restartCount=1,
        lastState={"terminated": {"exitCode": 3, "message": "model integrity check failed: expected sha256 ..."}},
    )
    facts = track_facts(deployment("a", ready=0), [refused])
    assert facts.digest_mismatch and "integrity" in facts.detail
    assert not track_facts(deployment("a"), [pod("a")]).crash_looping


def test_termination_messages_become_one_line_for_people() -> None:
    logged = (
        "2026-12-04 03:52:40,101 INFO mlrollout_serving.server: listening on 0.0.0.0:8080\n"
        "2026-12-04 03:52:41,215 ERROR mlrollout_serving.server: model integrity check failed for "
        "http://store/wine.onnx: expected sha256 00, actual sha256 ff\n"
    )
    assert (
        one_line(logged)
        == "model integrity check failed for http://store/wine.onnx: expected sha256 00, actual sha256 ff"
    )
    long = "word " * 100
    cut = one_line(long, limit=40)
    assert len(cut) <= 40 and cut.endswith("word…")
    assert one_line("") == ""


def test_facts_are_keyed_by_revision_and_ignore_the_gateway() -> None:
    gateway = deployment("x")
    gateway["metadata"]["labels"][naming.COMPONENT] = naming.GATEWAY_COMPONENT
    facts = facts_by_revision([deployment("a"), deployment("b", ready=0), gateway], [pod("b", restartCount=5)])
    assert set(facts) == {"a", "b"} and facts["a"].ready and facts["b"].crash_looping


def test_gateway_facts_come_from_the_gateway_deployment_and_its_pods_only() -> None:
    def gateway(ready: int) -> Any:
        dep = deployment("x", replicas=1, ready=ready, updated=1)
        dep["metadata"]["labels"] = {naming.COMPONENT: naming.GATEWAY_COMPONENT}
        return dep

    gw_pod = {"metadata": {"labels": {naming.COMPONENT: naming.GATEWAY_COMPONENT}},
              "status": {"containerStatuses": [{"name": "gateway", "restartCount": 4}]}}  # fmt: skip
    assert not gateway_facts([deployment("a")], [pod("a")]).available  # not created yet
    assert not gateway_facts([deployment("a"), gateway(0)], [pod("a")]).available
    up = gateway_facts([deployment("a", ready=0), gateway(1)], [pod("a", restartCount=9)])
    assert up.available and not up.crash_looping  # the model server's pods are not the gateway's
    down = gateway_facts([gateway(0)], [gw_pod])
    assert not down.available and down.crash_looping and "gateway" in down.detail


def test_a_recorded_judgement_knows_the_candidates_requests() -> None:
    with_samples = Judgement.model_validate(
        {"verdict": "promote", "reason": "ok", "samples": {"stable": 900, "candidate": 321}}
    )
    assert with_samples.candidate_requests == 321
    from_metrics = Judgement.model_validate(
        {
            "verdict": "continue",
            "reason": "",
            "metrics": [{"name": "x", "decision": "pass", "samples": {"candidate": 7}}],
        }
    )
    assert from_metrics.candidate_requests == 7


TARGET = AnalysisTarget(namespace="ml", model_deployment="wine", stable_revision="a", candidate_revision="b")
ALONE = StepEvidence()


def test_no_prometheus_means_inconclusive_never_promote() -> None:
    result = PrometheusVerdicts("").look(TARGET, policy(), 60, ALONE)
    assert result.verdict == "inconclusive" and "MLROLLOUT_PROMETHEUS_URL" in result.reason
    # an address where nothing listens: still inconclusive, and the reason says where, in one line
    result = PrometheusVerdicts("http://127.0.0.1:9").look(TARGET, policy(), 60, ALONE)
    assert result.verdict == "inconclusive"
    assert result.reason == "no evidence: Prometheus at http://127.0.0.1:9 is unreachable: Connection refused"


def test_recorded_verdicts_read_judgements_or_judge_snapshots(tmp_path: Path) -> None:
    source = RecordedVerdicts(str(tmp_path))
    missing = source.look(TARGET, policy(), 60, ALONE)
    assert missing.verdict == "inconclusive" and "no usable recorded verdict" in missing.reason  # no file yet
    path = tmp_path / "ml.wine.json"
    path.write_text(json.dumps({"verdict": "rollback", "reason": "recorded", "metrics": []}))
    recorded = source.look(TARGET, policy(), 60, ALONE)
    assert recorded.reason == "recorded" and recorded.alpha == policy().significance.alpha
    path.write_text(json.dumps({"snapshot": {"error": "recorded outage", "elapsed_seconds": 60}}))
    assert source.look(TARGET, policy(), 60, ALONE) == judge(Snapshot.failed("recorded outage", 60), policy())
    path.write_text(json.dumps({"verdict": "maybe", "reason": "?"}))
    assert source.look(TARGET, policy(), 60, ALONE).verdict == "inconclusive"  # not a judgement: no evidence


def test_the_rollouts_evidence_reaches_the_judge_and_comes_back_in_the_judgement(tmp_path: Path) -> None:
    """The operator's step context goes into the snapshot; the judge's carry-out comes back with the verdict."""
    snapshot = {
        "stable": {"requests": 54_000, "errors": 540},
        "candidate": {"requests": 6_000, "errors": 75},
    }
    (tmp_path / "ml.wine.json").write_text(json.dumps({"snapshot": snapshot}))
    pol = policy(analysis={"metrics": {"latency": {"enabled": False}, "predictionDrift": {"enabled": False}}})
    source = RecordedVerdicts(str(tmp_path))
    alone = source.look(TARGET, pol, 60, ALONE)
    assert alone.verdict != "rollback" and set(alone.evidence) == {"errorRate.harm"}
    carried = {"errorRate.harm": 1e4}  # earlier steps already showed strong evidence of harm
    later = source.look(TARGET, pol, 60, StepEvidence(step=2, steps=3, carried=carried))
    assert later.verdict == "rollback", later.reason
    assert later.evidence["errorRate.harm"] > alone.evidence["errorRate.harm"]
    with pytest.raises(ValidationError):  # carried evidence is a finite number >= 0, or the file is refused
        Judgement.model_validate({"verdict": "continue", "reason": "", "evidence": {"y": -1.0}})


def test_a_recorded_snapshot_is_judged_in_the_design_of_the_step_it_is_read_for(tmp_path: Path) -> None:
    """A snapshot file that does not name its quality design takes the step's, as the operator's own do: in a
    mirroring step the candidate's own labelled rows (the moment before the gateway loaded the table) are not
    a test's rows; one that names it keeps it."""
    labels = {"stable": {"labelled": 2700, "incorrect": 270}, "candidate": {"labelled": 300, "incorrect": 60}}
    snapshot = {track: {"requests": 10_000, "errors": 100, "labels": labels[track]} for track in labels}
    path = tmp_path / "ml.wine.json"
    path.write_text(json.dumps({"snapshot": snapshot}))
    pol = policy(analysis={"metrics": {"latency": {"enabled": False}, "quality": {"enabled": True}}})
    source = RecordedVerdicts(str(tmp_path))
    canary = source.look(TARGET, pol, 60, ALONE)  # TARGET reads the gateway's series: a canary step
    assert canary.verdict == "rollback" and "quality.harm" in canary.reason
    shadow = source.look(dataclasses.replace(TARGET, design="paired"), pol, 60, ALONE)
    assert shadow.verdict != "rollback" and "quality.harm" not in shadow.evidence
    path.write_text(json.dumps({"snapshot": {**snapshot, "quality_design": "unpaired"}}))
    assert source.look(dataclasses.replace(TARGET, design="paired"), pol, 60, ALONE).verdict == "rollback"


def test_analysis_is_due_one_interval_after_the_step_started_and_after_each_look() -> None:
    w = World(pol=policy(analysis={"interval": "30s"}))
    w.start_rollout()
    status: ModelDeploymentStatus = w.s
    assert status.current_step is not None
    started = status.current_step.started_at
    assert not analysis_due(status, w.pol, w.now + timedelta(seconds=29))
    assert analysis_due(status, w.pol, w.now + timedelta(seconds=30))
    w.give_verdict("continue", requests=1, seconds=30)
    assert w.s.current_step is not None and w.s.current_step.started_at == started
    assert not analysis_due(w.s, w.pol, w.now + timedelta(seconds=10))
    assert analysis_due(w.s, w.pol, w.now + timedelta(seconds=30))
    assert fmt(w.now).endswith("Z")


def starting_pod(rev: str, name: str, created: str = "2026-12-05T03:00:00Z", **container: Any) -> Any:
    """A scheduled pod whose model server runs and is not ready (unless ``container`` says otherwise)."""
    state = {"name": naming.SERVER_CONTAINER, "ready": False, "state": {"running": {"startedAt": created}}}
    return {
        "metadata": {"name": name, "creationTimestamp": created, "labels": {naming.REVISION: rev}},
        "spec": {"nodeName": "node-1"},
        "status": {"containerStatuses": [{**state, **container}]},
    }


def test_one_starting_pod_is_read_per_revision_that_is_not_ready() -> None:
    tracks = facts_by_revision([deployment("a", ready=0), deployment("b", ready=0), deployment("c")], [])
    pods = [
        starting_pod("a", "a-young", "2026-12-05T03:05:00Z"),
        starting_pod("a", "a-old", "2026-12-05T03:01:00Z"),
        starting_pod("b", "b-ready", ready=True),
        starting_pod("b", "b-waiting", state={"waiting": {"reason": "ContainerCreating"}}),
        {**starting_pod("b", "b-unscheduled"), "spec": {}},
        starting_pod("c", "c-starting"),  # its track is ready: nothing to explain
        starting_pod("d", "d-starting"),  # not a revision we were asked about
    ]
    assert starting_pods(tracks, pods, ["a", "b", "c", "d", None]) == {"a": "a-old"}
    assert starting_pods(tracks, pods, [None, None]) == {}
    terminating = starting_pod("a", "a-going")
    terminating["metadata"]["deletionTimestamp"] = "2026-12-05T03:06:00Z"
    assert starting_pods(tracks, [terminating], ["a"]) == {}
