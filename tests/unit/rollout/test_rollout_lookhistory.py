"""The per-look history the operator keeps for the dashboard: bounded in looks and bytes, per candidate."""

from __future__ import annotations

import json

from mlrollout.api.analysis import MetricResult, TrackPair
from mlrollout.api.modeldeployment import AnalysisStatus, ModelDeploymentStatus, StepStatus, TrafficStatus
from mlrollout.rollout import lookhistory
from mlrollout.rollout.lookhistory import LookHistory, LookPoint, MetricPoint


def point(i: int, metrics: int = 1) -> LookPoint:
    return LookPoint(
        time=f"2026-12-04T10:{i // 60:02d}:{i % 60:02d}Z",
        verdict="continue",
        metrics=[MetricPoint(name=f"metric{m}", decision="inconclusive", e_value=float(i)) for m in range(metrics)],
    )


def test_point_of_the_last_look_carries_step_split_and_metrics() -> None:
    status = ModelDeploymentStatus(
        current_step=StepStatus(index=1, kind="canary", started_at="2026-12-04T10:00:00Z"),
        traffic=TrafficStatus(stable=80, candidate=20, mirror=5),
        last_analysis=AnalysisStatus(
            time="2026-12-04T10:01:00Z", verdict="continue", reason="not yet", alpha=0.05,
            metrics=[MetricResult(name="errorRate", decision="pass", estimate=TrackPair(stable=0.01, candidate=0.02),
                                  effect=0.01, interval=[-0.01, 0.03], e_value=3.5, threshold=0.05)],
        ),
    )  # fmt: skip
    p = lookhistory.point_of(status)
    assert p is not None
    assert (p.step, p.step_kind, p.stable_percent, p.candidate_percent, p.mirror_percent) == (1, "canary", 80, 20, 5)
    assert p.metrics == [
        MetricPoint(name="errorRate", decision="pass", stable=0.01, candidate=0.02, effect=0.01,
                    interval=(-0.01, 0.03), e_value=3.5, threshold=0.05)
    ]  # fmt: skip
    assert lookhistory.point_of(ModelDeploymentStatus()) is None


def test_a_new_candidate_starts_a_new_history_and_a_repeated_look_is_not_added() -> None:
    h = lookhistory.append(None, "rev-a", point(1))
    h = lookhistory.append(h, "rev-a", point(2))
    assert [p.time for p in lookhistory.append(h, "rev-a", point(2)).looks] == [point(1).time, point(2).time]
    fresh = lookhistory.append(h, "rev-b", point(3))
    assert (fresh.candidate, [p.time for p in fresh.looks]) == ("rev-b", [point(3).time])


def test_at_most_200_looks_the_oldest_go_first() -> None:
    h: LookHistory | None = None
    for i in range(250):
        h = lookhistory.append(h, "rev", point(i))
    assert h is not None and len(h.looks) == lookhistory.LOOKS_LIMIT
    assert h.looks[0].time == point(50).time and h.looks[-1].time == point(249).time
    assert lookhistory.decode(lookhistory.encode(h)) == h


def test_the_encoded_history_stays_under_the_byte_limit_with_many_metrics() -> None:
    h = LookHistory(candidate="rev", looks=[point(i, metrics=32) for i in range(200)])
    text = lookhistory.encode(h)
    assert len(text.encode()) <= lookhistory.BYTES_LIMIT < 1024 * 1024 // 2
    kept = lookhistory.decode(text)
    assert kept is not None and 0 < len(kept.looks) < 200
    assert kept.looks[-1] == h.looks[-1]  # the newest looks are kept
    assert "null" not in text  # absent values are left out, not spelled


def test_unreadable_stored_history_is_none() -> None:
    assert lookhistory.decode(None) is None
    assert lookhistory.decode("") is None
    assert lookhistory.decode("{not json") is None
    assert lookhistory.decode(json.dumps({"looks": []})) is None  # no candidate
