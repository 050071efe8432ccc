"""Sample-ratio mismatch: the realised split against the configured one makes a look inconclusive."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.analysis.snapshots import PROMOTABLE, healthy, judged, track

from mlrollout.analysis import SnapshotError, parse_snapshot
from mlrollout.analysis.split import SPLIT_ALPHA, split_log_e


def with_split(snap: dict[str, Any], candidate: float, observed: dict[str, int], **configured: Any) -> dict[str, Any]:
    conf = {"stable": round(1 - candidate, 12), "candidate": candidate, **configured}
    return {**snap, "split": {"configured": conf, "observed": observed}}


def routed(snap: dict[str, Any]) -> dict[str, int]:
    return {"stable": snap["stable"]["requests"], "candidate": snap["candidate"]["requests"]}


def split_metric(result: Any) -> Any:
    return next(m for m in result.metrics if m.name == "split")


def test_a_correct_split_passes_and_promotion_stays_possible() -> None:
    snap = healthy(**PROMOTABLE)
    result = judged(with_split(snap, 0.1, routed(snap)))
    assert result.verdict == "promote", result.reason
    m = split_metric(result)
    assert m.decision == "pass" and "traffic split 10% observed vs 10% configured: within 10%" in m.reason
    assert m.threshold == pytest.approx(1 / SPLIT_ALPHA)


def test_seven_percent_of_a_ten_percent_weight_is_inconclusive_never_promoted() -> None:
    snap = healthy(**PROMOTABLE)
    broken = with_split(snap, 0.1, {"stable": 223_000, "candidate": 17_000})  # 7.08% realised
    result = judged(broken)
    assert result.verdict == "inconclusive"
    assert result.reason.startswith("traffic split 7.08% observed vs 10% configured (SRM, e=")
    assert split_metric(result).e_value > 1e6


def test_a_rollback_still_rolls_back_under_a_broken_split() -> None:
    snap = healthy(**PROMOTABLE)
    snap["candidate"]["errors"] = 1200  # x5
    result = judged(with_split(snap, 0.1, {"stable": 223_000, "candidate": 17_000}))
    assert result.verdict == "rollback" and "errorRate.harm" in result.reason


def test_mirror_share_is_tested_on_copies_of_eligible_requests() -> None:
    snap = {"stable": track(20_000), "candidate": track(14_000)}
    short = with_split(snap, 0.0, {"stable": 20_000, "candidate": 0, "mirrored": 14_000, "mirror_eligible": 19_800},
                       mirror=1.0)  # fmt: skip
    result = judged(short)
    assert result.verdict == "inconclusive" and "mirror share 70.7% observed vs 100% configured (SRM" in result.reason
    full = with_split(snap, 0.0, {"stable": 20_000, "candidate": 0, "mirrored": 19_800, "mirror_eligible": 19_800},
                      mirror=1.0)  # fmt: skip
    assert split_metric(judged(full)).decision == "pass"


def test_live_traffic_reaching_the_candidate_in_a_shadow_step_is_a_mismatch() -> None:
    """A stuck route table still sending a canary's share during the shadow step."""
    snap = {"stable": track(20_000), "candidate": track(20_000)}
    stuck = with_split(snap, 0.0, {"stable": 19_000, "candidate": 1_000, "mirrored": 19_000, "mirror_eligible": 19_000},
                       mirror=1.0)  # fmt: skip
    assert judged(stuck).reason.startswith("traffic split 5% observed vs 0% configured (SRM, e=")


def test_sticky_ab_does_not_test_request_shares() -> None:
    """One busy key moves the request share without anything being wrong: no alarm, and it says why."""
    snap = healthy(**PROMOTABLE)
    skewed = with_split(snap, 0.1, {"stable": 200_000, "candidate": 40_000}, sticky=True)
    m = split_metric(judged(skewed))
    assert m.decision == "pass" and "sticky A/B assigns keys, not requests" in m.reason


def test_the_check_can_be_turned_off_and_its_tolerance_set() -> None:
    snap = healthy(**PROMOTABLE)
    broken = with_split(snap, 0.1, {"stable": 223_000, "candidate": 17_000})
    assert "split" not in {
        m.name for m in judged(broken, {"analysis": {"metrics": {"split": {"enabled": False}}}}).metrics
    }
    loose = {"analysis": {"metrics": {"split": {"tolerance": 0.5}}}}
    assert split_metric(judged(broken, loose)).decision == "pass"


def test_without_routed_counts_the_check_is_listed_as_skipped() -> None:
    result = judged(healthy(**PROMOTABLE))
    assert "split: no routed counts in the snapshot" in result.skipped


@pytest.mark.parametrize(
    ("split", "where"),
    [
        ({"configured": {"stable": 0.85, "candidate": 0.1}}, "split.configured: stable 0.85 + candidate 0.1"),
        ({"configured": {"stable": 1.5, "candidate": -0.5}}, "split.configured.stable"),
        ({"configured": {"stable": 0.9, "candidate": "10%"}}, "split.configured.candidate"),
        ({"configured": {"stable": 0.9, "candidate": 0.1, "mirror": 2}}, "split.configured.mirror"),
        ({"configured": {"stable": 0.9, "candidate": 0.1, "sticky": "yes"}}, "split.configured.sticky"),
        ({"configured": {"stable": 0.9, "candidate": 0.1}, "observed": {"candidate": -3}}, "split.observed.candidate"),
        ({"configured": {"stable": 1, "candidate": 0, "mirror": 1}, "observed": {"mirrored": 5, "mirror_eligible": 4}},
         "split.observed.mirrored (5) exceeds"),
        ({"observed": {}}, "split must be an object with configured shares"),
        ([0.9, 0.1], "split must be an object"),
    ],
)  # fmt: skip
def test_a_split_that_does_not_add_up_is_refused_naming_the_field(split: Any, where: str) -> None:
    with pytest.raises(SnapshotError, match=None) as error:
        parse_snapshot({**healthy(), "split": split})
    assert where in str(error.value)


@settings(max_examples=6, deadline=None)
@given(share=st.sampled_from([0.05, 0.1, 0.5, 0.9]), per_look=st.integers(100, 6000), seed=st.integers(0, 2**31))
def test_a_correct_split_is_flagged_in_at_most_alpha_of_runs_however_long_we_look(
    share: float, per_look: int, seed: int
) -> None:
    """Routing at the configured share (and at the tolerance's edge): 400 runs of 60 looks each."""
    rng = np.random.default_rng(seed)
    runs, looks, alpha = 400, 60, 0.01
    for realised in (share, share * 0.9):
        k = np.cumsum(rng.binomial(per_look, realised, (runs, looks)), axis=1)
        n = per_look * np.arange(1, looks + 1)
        fired = sum(
            any(split_log_e(int(k[r, t]), int(n[t]), share, 0.1) >= math.log(1 / alpha) for t in range(looks))
            for r in range(runs)
        )
        assert fired / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)
