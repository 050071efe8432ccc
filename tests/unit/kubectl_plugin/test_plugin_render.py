"""The status and history views: pure functions of the object, the steps and the clock."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from tests.support.argocd import CUSTOMIZATION

from mlrollout.api import RolloutPolicySpec
from mlrollout.api.modeldeployment import AnalysisStatus, ModelDeployment
from mlrollout.api.rolloutpolicy import Step
from mlrollout.kubectl_plugin import render

FIXTURES = CUSTOMIZATION / "testdata"  # ModelDeployments at every stage, shared with the Argo CD tests
NOW = datetime(2026, 11, 26, 6, 24, 0, tzinfo=UTC)
DEFAULT_STEPS = [s.to_dict() for s in RolloutPolicySpec().strategy.steps]


def status_view(md: dict[str, Any], steps: list[dict[str, Any]] | None, now: datetime) -> str:
    """The view of an object as the API stores it, with the policy's steps as written."""
    typed = [Step.model_validate(s) for s in steps] if steps is not None else None
    return render.render_status(ModelDeployment.model_validate(md), typed, now)


def fixture(name: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())
    return obj


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.9, "59s"), (60, "1m"), (200, "3m20s"), (3600, "1h"), (7500, "2h5m"), (90000, "1d1h"), (-5, "0s")],
)
def test_duration(seconds: float, text: str) -> None:
    assert render.duration(seconds) == text


def test_bar_clamps_and_rounds() -> None:
    assert render.bar(0.5, width=10) == "[#####.....]  50%"
    assert render.bar(1.7, width=4) == "[####] 100%"
    assert render.bar(-1, width=4) == "[....]   0%"


def test_times() -> None:
    assert render.ago("2026-11-26T06:20:40Z", NOW) == "3m20s ago"
    assert render.ago(None, NOW) == "-"
    assert render.clock("2026-11-26T07:24:00+01:00") == "06:24:00"
    assert render.parse_time("yesterday") is None and render.parse_time(None) is None


def test_table_aligns_columns() -> None:
    assert render.table(["A", "LONGER"], [["xyz", "1"], ["", "22"]]) == [
        "  A    LONGER",
        "  xyz  1",
        "       22",
    ]


def test_canary_view_marks_the_current_step_with_progress() -> None:
    text = status_view(fixture("04-canary-20"), DEFAULT_STEPS, NOW)
    lines = text.splitlines()
    assert lines[0] == "ModelDeployment ml/wine   Progressing"
    assert "Traffic:    stable 80%  candidate 20%  mirror 0%" in lines
    start = lines.index("Steps:      [############............]  50%  step 2 of 4")
    assert lines[start + 1 : start + 6] == [
        "    #  KIND    WHAT                           STATE",
        "    1  shadow  mirror 100%, min 200 requests  done",
        "  > 2  canary  weight 5%, min 200 requests    running (requests 452/200, 2m20s of max 1h)",
        "    3  canary  weight 25%, min 500 requests",
        "    4  canary  weight 50%, min 500 requests",
    ]


def test_canary_view_explains_each_metric() -> None:
    text = status_view(fixture("04-canary-20"), DEFAULT_STEPS, NOW)
    assert "Analysis:   CONTINUE at 06:23:10 (50s ago): errorRate inconclusive" in text
    row = next(line for line in text.splitlines() if line.startswith("  errorRate"))
    assert row.split() == ["errorRate", "inconclusive", "1840/452", "0.0049", "0.0066", "+0.0017",
                           "[-0.0071,", "+0.0139]", "0.01", "e=1.8", "p=0.41"]  # fmt: skip
    assert "      mSPRT two-proportion (non-inferiority) - interval still crosses the 1pp margin" in text
    assert (
        "Conditions: Available=True (StableReady)  Progressing=True (CanaryStep)  Degraded=False (AsExpected)" in text
    )


@pytest.mark.parametrize(("alpha", "shown"), [(0.05, "0.05"), (0.0125, "0.0125"), (0.05 / 3, "0.01667")])
def test_verdict_shows_the_alpha_it_was_judged_at(alpha: float, shown: str) -> None:
    md = fixture("04-canary-20")
    md["status"]["lastAnalysis"]["alpha"] = alpha
    text = status_view(md, DEFAULT_STEPS, NOW)
    assert f"Analysis:   CONTINUE (alpha {shown}) at 06:23:10 (50s ago): errorRate inconclusive" in text


def test_verdict_without_a_recorded_alpha_omits_it() -> None:
    """Verdicts written before the operator recorded alpha have none; the line then names no alpha."""
    assert (
        "alpha"
        not in render.render_analysis(
            AnalysisStatus.model_validate(fixture("04-canary-20")["status"]["lastAnalysis"]), NOW
        )[0]
    )


def test_evidence_carried_from_earlier_steps_is_shown_under_the_steps() -> None:
    md = fixture("04-canary-20")
    assert "evidence carried" not in status_view(md, DEFAULT_STEPS, NOW)  # the first analysed step
    md["status"]["currentStep"]["carriedIn"] = {"latency.harm": 0.412, "errorRate.harm": 3.25}
    text = status_view(md, DEFAULT_STEPS, NOW)
    assert "  evidence carried from earlier steps: errorRate.harm 3.25, latency.harm 0.412" in text


def test_the_forecast_is_shown_under_the_steps_against_max_duration() -> None:
    md = fixture("04-canary-20")
    assert "forecast" not in status_view(md, DEFAULT_STEPS, NOW)  # an older status has none
    md["status"]["lastAnalysis"]["forecast"] = {"seconds": 1020, "candidateRequests": 10153, "candidateRate": 10.0,
                                                "slowest": "errorRate.nonInferiority"}  # fmt: skip
    lines = status_view(md, DEFAULT_STEPS, NOW).splitlines()
    assert (
        "  forecast: a candidate like stable passes after 17m (10,153 candidate requests at 10 candidate requests/s,"
        " slowest errorRate.nonInferiority)"
    ) in lines
    md["status"]["lastAnalysis"]["forecast"]["seconds"] = 4500
    assert (
        "  forecast: a candidate like stable passes after 1h15m (10,153 candidate requests at 10 candidate"
        " requests/s, slowest errorRate.nonInferiority); beyond maxDuration 1h"
    ) in status_view(md, DEFAULT_STEPS, NOW).splitlines()
    md["status"]["lastAnalysis"]["forecast"] = {"seconds": None, "candidateRate": 0.5}
    assert (
        "  forecast: a candidate like stable would not pass this step at 0.5 candidate requests/s"
        in status_view(md, DEFAULT_STEPS, NOW).splitlines()
    )


def test_requests_are_counted_per_step() -> None:
    md = fixture("04-canary-20")
    md["status"]["currentStep"]["requestsAtStart"] = 400
    steps = copy.deepcopy(DEFAULT_STEPS)
    steps[1]["canary"]["minRequests"] = 100
    text = status_view(md, steps, NOW)
    assert "running (requests 52/100, 2m20s of max 1h)" in text
    assert "Steps:      [#########...............]  38%  step 2 of 4" in text


def test_paused_and_holding_states() -> None:
    paused = status_view(fixture("07-paused-by-human"), DEFAULT_STEPS, NOW)
    assert "  > 2  canary  weight 5%, min 200 requests    paused (" in paused
    assert "Command:    pause accepted at 06:23:30: paused at step 2" in paused
    md = fixture("04-canary-20")
    md["status"]["hold"] = "inconclusive for 30m: waiting for a human (onInconclusive: hold)"
    held = status_view(md, DEFAULT_STEPS, NOW)
    assert "> 2  canary  weight 5%, min 200 requests    holding (" in held
    assert "  holding: inconclusive for 30m: waiting for a human (onInconclusive: hold)" in held


def test_waiting_for_approval_is_shown_with_the_last_answer() -> None:
    md = fixture("04-canary-20")
    revision = md["status"]["candidate"]["revision"]
    md["status"]["approvals"] = [
        {"hook": "ops", "type": "confirmRollout", "revision": revision, "state": "approved",
         "since": "2026-11-26T06:00:00Z", "time": "2026-11-26T06:01:00Z", "message": "approved: HTTP 200"},
        {"hook": "release-board", "type": "confirmPromotion", "revision": revision, "state": "waiting",
         "since": "2026-11-26T06:20:00Z", "time": "2026-11-26T06:21:00Z",
         "message": "refused: HTTP 403 Forbidden: change freeze"},
        {"hook": "old", "type": "confirmPromotion", "revision": "another", "state": "waiting",
         "since": "2026-11-26T06:20:00Z"},
    ]  # fmt: skip
    text = status_view(md, DEFAULT_STEPS, NOW)
    assert "Approval:   confirmRollout hook ops approved " in text
    assert "Approval:   waiting for approval from confirmPromotion hook release-board (since " in text
    assert "refused: HTTP 403 Forbidden: change freeze" in text
    assert "hook old" not in text


def test_rolled_back_view_shows_verdict_history_and_held_back() -> None:
    md = fixture("06-rolled-back")
    md["status"]["heldBack"] = {"revision": "c81f03aa92de", "number": 2, "outcome": "rolledBack",
                                "reason": "errorRate failed", "time": "2026-11-26T06:22:00Z"}  # fmt: skip
    text = status_view(md, DEFAULT_STEPS, NOW)
    assert text.startswith("ModelDeployment ml/wine   Degraded\n  rolled back v2: errorRate failed (8.47% vs 0.45%)\n")
    assert "Steps:" not in text and "Candidate:" not in text
    assert "Held back:  revision 2 (rolledBack, 2m ago): errorRate failed" in text
    assert "Analysis:   ROLLBACK at 06:24:40 (0s ago): errorRate failed" in text
    recent = text.split("Recent rollouts:\n")[1].splitlines()
    assert recent[1].split()[:3] == ["2", "v2", "rolledBack"]
    assert recent[2].split()[:3] == ["1", "v1", "promoted"]


def test_healthy_without_rollout() -> None:
    text = status_view(fixture("03-healthy-stable"), DEFAULT_STEPS, NOW)
    assert "Rollout:    none in progress" in text
    assert "Analysis:   none yet" in text
    assert "Stable:     v1  (revision 1, 5d2c9a41e0b7, sha256 3f1d0c6bd0a2...)" in text


def test_stale_generation_and_no_status() -> None:
    assert "(the operator has not yet acted on generation 2; it last saw 1)" in status_view(
        fixture("08-healthy-but-new-spec"), None, NOW
    )
    text = status_view(fixture("01-created-no-status"), None, NOW)
    assert text.startswith("ModelDeployment ml/wine   Unknown\n")
    assert "it last saw none" in text


def test_unknown_steps_still_show_the_current_one() -> None:
    text = status_view(fixture("05-shadow"), None, NOW)
    assert "Step:       1 (shadow), started 8m58s ago (policy steps unknown)" in text


def test_step_summaries() -> None:
    assert Step.model_validate({"pause": {}}).summary() == "hold until resumed"
    assert Step.model_validate({"pause": {"duration": "5m"}}).summary() == "hold 5m"
    bg = Step.model_validate({"blueGreen": {"previewAnalysis": False, "scaleDownDelay": "1h"}})
    assert bg.summary() == "switch all, keep old 1h"
    assert Step.model_validate({"blueGreen": {}}).summary() == "preview mirror 100%, switch all, keep old 10m"


def test_timed_pause_progress() -> None:
    md = fixture("04-canary-20")
    md["status"]["currentStep"] = {"index": 1, "kind": "pause", "startedAt": "2026-11-26T06:21:30Z"}
    steps: list[dict[str, Any]] = [{"shadow": {}}, {"pause": {"duration": "10m"}}]
    text = status_view(md, steps, NOW)
    assert "Steps:      [###############.........]  62%  step 2 of 2" in text
    assert "> 2  pause   hold 10m                       running (2m30s of 10m)" in text


def test_history_newest_first_with_revisions() -> None:
    md = fixture("06-rolled-back")
    md["status"]["revisions"] = [
        {"revision": "5d2c9a41e0b7", "number": 1, "modelVersion": "v1", "modelUri": "file:///models/wine-v1.onnx",
         "sha256": "3f"},
        {"revision": "c81f03aa92de", "number": 2, "modelVersion": "v2", "modelUri": "file:///models/wine-v2.onnx",
         "sha256": "9b"},
    ]  # fmt: skip
    lines = render.render_history(ModelDeployment.model_validate(md), NOW).splitlines()
    assert lines[0] == "History of ml/wine:"
    assert lines[1].split() == ["REV", "VERSION", "OUTCOME", "WHEN", "TOOK", "SHA256", "REASON"]
    assert lines[2].split()[:5] == ["2", "v2", "rolledBack", "0s", "ago"]
    assert lines[2].split()[5] == "9m40s"
    assert lines[3].split()[:3] == ["1", "v1", "promoted"]
    revisions = lines[lines.index("Revisions (kubectl mlrollout undo NAME --to-revision N):") + 1 :]
    assert [r.split()[:4] for r in revisions[1:]] == [["2", "v2", "c81f03aa92de", "file:///models/wine-v2.onnx"],
                                                     ["1", "v1", "5d2c9a41e0b7", "stable"]]  # fmt: skip


def test_history_empty() -> None:
    assert (
        render.render_history(ModelDeployment.model_validate(fixture("01-created-no-status")), NOW)
        == "History of ml/wine:\n  no rollouts yet"
    )


def test_real_run_route_version_and_scale_downs() -> None:
    """An object the operator wrote in a cluster test (Argo CD testdata real-aborted.yaml)."""
    md = fixture("real-aborted")
    text = status_view(md, None, NOW)
    assert "Traffic:    stable 100%  candidate 0%  mirror 0%  (route table v7)" in text
    assert "Scale-down: revision a61c9e00d639 at 07:00:15 (aborted: Aborted)" in text
    assert "      recorded\n" in text  # test and reason are the same words: said once


def test_an_offline_evaluation_shows_both_scores_the_paired_effect_and_the_baseline() -> None:
    md = fixture("06-rolled-back")
    md["status"]["lastEvaluation"] = {
        "revision": "c81f03aa92de", "step": 0, "attempt": 1, "job": "wine-eval-0123456789", "phase": "Failed",
        "startedAt": "2026-11-26T06:20:00Z", "finishedAt": "2026-11-26T06:22:00Z",
        "reason": "FAIL: worse beyond the margin 0.008", "metric": "accuracy", "rows": 2000,
        "datasetSha256": "6614a8a9761a" + "0" * 52,
        "checks": [
            {"kind": "stable", "name": "stable", "decision": "fail", "rows": 2000, "reference": 0.8,
             "candidate": 0.75, "effect": -0.05, "interval": [-0.07, -0.03], "alpha": 0.05,
             "test": "exact McNemar (discordant pairs), Bonett-Price interval", "pValue": 2.1e-6, "margin": 0.008},
            {"kind": "baseline", "name": "majority", "decision": "pass", "rows": 2000, "reference": 0.6875,
             "candidate": 0.75, "effect": 0.0625, "interval": [0.04, 0.08], "alpha": 0.05, "pValue": 1e-9},
        ],
    }  # fmt: skip
    text = status_view(md, DEFAULT_STEPS, NOW)
    assert "Evaluation: FAILED (Job wine-eval-0123456789, attempt 1) at 06:22:00 (2m ago): FAIL: worse" in text
    assert "accuracy on n=2000 holdout rows, dataset sha256 6614a8a9761a..." in text
    rows = text.split("Evaluation: ")[1].splitlines()
    assert rows[2].split() == ["CHECK", "DECISION", "N", "REFERENCE", "CANDIDATE", "EFFECT", "INTERVAL", "LEVEL", "P",
                               "MARGIN"]  # fmt: skip
    assert rows[3].split() == ["vs", "stable", "fail", "2000", "0.8", "0.75", "-0.05", "[-0.07,", "-0.03]", "95%",
                               "2.1e-06", "0.008"]  # fmt: skip
    assert "exact McNemar" in rows[4]
    assert rows[5].split()[:5] == ["majority", "pass", "2000", "0.6875", "0.75"]


EVALUATE_FIRST = [
    {
        "evaluate": {
            "dataset": {"uri": "s3://data/holdout.csv", "sha256": "c" * 64, "label": "quality"},
            "maxDuration": "10m",
        }
    },
    *DEFAULT_STEPS,
]


def _evaluation(started: str, phase: str, job: str) -> dict[str, Any]:
    return {"revision": "c81f03aa92de", "step": 0, "attempt": 1, "job": job, "phase": phase, "startedAt": started,
            "reason": f"{phase}: the verdict"}  # fmt: skip


def test_a_retried_rollout_never_shows_the_earlier_attempts_evaluation() -> None:
    """`retry` starts a new rollout of the same revision; until its evaluate step asks for its own Job, status
    still holds the last attempt's evaluation: the view says this rollout has none yet (the history's rule)."""
    md = fixture("05-shadow")
    md["status"]["candidate"]["startedAt"] = "2026-11-26T06:20:00Z"  # the retry
    md["status"]["currentStep"] = {"index": 0, "kind": "evaluate", "startedAt": "2026-11-26T06:20:00Z"}
    md["status"]["lastEvaluation"] = _evaluation("2026-11-26T05:40:00Z", "Failed", "wine-eval-c81f03aa92de-old")
    text = status_view(md, EVALUATE_FIRST, NOW)
    assert "Evaluation: not yet evaluated in this rollout" in text
    assert "FAILED" not in text and "wine-eval-c81f03aa92de-old" not in text
    assert "its Job: 4m of max 10m" in text  # the step's progress names no Job either
    md["status"]["lastEvaluation"] = _evaluation("2026-11-26T06:20:01Z", "Running", "wine-eval-c81f03aa92de-new")
    text = status_view(md, EVALUATE_FIRST, NOW)
    assert "Evaluation: RUNNING (Job wine-eval-c81f03aa92de-new, attempt 1)" in text
    assert "wine-eval-c81f03aa92de-new: 4m of max 10m" in text and "not yet evaluated" not in text


def test_after_a_rollout_only_its_own_evaluation_is_shown() -> None:
    """No rollout runs: the evaluation shown is the last rollout's (the newest history entry's), not an older
    rollout's of the same revision whose policy had no evaluate step this time."""
    md = fixture("06-rolled-back")  # the last rollout, of c81f03aa92de, started at 06:15
    md["status"]["lastEvaluation"] = _evaluation("2026-11-26T06:15:01Z", "Failed", "wine-eval-c81f03aa92de-new")
    assert "Evaluation: FAILED (Job wine-eval-c81f03aa92de-new" in status_view(md, DEFAULT_STEPS, NOW)
    md["status"]["lastEvaluation"] = _evaluation("2026-11-26T05:40:00Z", "Failed", "wine-eval-c81f03aa92de-old")
    text = status_view(md, DEFAULT_STEPS, NOW)
    assert "Evaluation:" not in text and "wine-eval-c81f03aa92de-old" not in text


def test_both_hpas_are_shown_with_their_counts_and_why_one_does_not_scale() -> None:
    """The stable's HPA and the gateway's, each on one line: the pods it saw, the pods it wants, and the HPA's own
    words when it cannot read its metric (then its replicas are held)."""
    md = copy.deepcopy(fixture("03-healthy-stable"))
    md["status"]["autoscaling"] = {
        "target": "wine-5d2c9a41e0b7", "currentReplicas": 3, "desiredReplicas": 4, "scalingActive": "True",
    }  # fmt: skip
    md["status"]["gatewayAutoscaling"] = {
        "target": "wine", "currentReplicas": 2, "desiredReplicas": 2, "scalingActive": "False",
        "message": "FailedGetPodsMetric: unable to get metric mlrollout_gateway_requests_per_second",
    }  # fmt: skip
    lines = status_view(md, DEFAULT_STEPS, NOW).splitlines()
    assert "Scaling:    stable HPA on wine-5d2c9a41e0b7: 3 pods, wants 4" in lines
    assert (
        "            gateway HPA on wine: 2 pods, wants 2; NOT scaling, replicas held: "
        "FailedGetPodsMetric: unable to get metric mlrollout_gateway_requests_per_second"
    ) in lines


def test_an_hpa_that_has_not_reported_says_so_and_none_shows_no_autoscaling_section() -> None:
    md = copy.deepcopy(fixture("03-healthy-stable"))
    assert "Scaling:" not in status_view(md, DEFAULT_STEPS, NOW)
    md["status"]["gatewayAutoscaling"] = {"target": "wine"}
    assert (
        "Scaling:    gateway HPA on wine: ? pods, wants ? (the HPA has not reported yet)"
        in status_view(md, DEFAULT_STEPS, NOW).splitlines()
    )
