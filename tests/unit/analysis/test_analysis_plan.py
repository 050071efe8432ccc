"""`mlrollout plan` and the planning warnings of `mlrollout validate --rps` / `kubectl mlrollout lint --rps`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from mlrollout.api.rolloutpolicy import RolloutPolicySpec
from mlrollout.cli import main as mlrollout
from mlrollout.kubectl_plugin.cli import main as plugin
from mlrollout.plan import Assumptions, PlanError, plan

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_the_default_policy_plans_every_analysed_step() -> None:
    plans = plan(RolloutPolicySpec(), Assumptions(rps=100))
    assert [(p.index, p.kind) for p in plans] == [(0, "shadow"), (1, "canary"), (2, "canary"), (3, "canary")]
    shadow, five, twenty_five, fifty = plans
    assert shadow.seconds < twenty_five.seconds < five.seconds  # the 5% canary sees the fewest requests
    assert fifty.seconds <= twenty_five.seconds
    assert all(p.decides for p in plans) and all(0 <= p.promote <= 1 for p in plans)
    assert all(p.rollback["errors x2"] >= p.rollback["errors x1.5"] for p in plans)


def test_low_traffic_cannot_decide_within_max_duration() -> None:
    plans = plan(RolloutPolicySpec(), Assumptions(rps=5))
    assert not plans[1].decides and plans[1].promote < 0.5


@pytest.mark.parametrize(
    ("fields", "option"),
    [({"rps": 0}, "--rps"), ({"rps": -3}, "--rps"), ({"rps": math.nan}, "--rps"), ({"rps": 10, "error_rate": 1.5},
     "--base-error-rate"), ({"rps": 10, "latency_p99": 0}, "--latency-p99"), ({"rps": 10, "latency_p50": 0.1},
     "--latency-p50")],
)  # fmt: skip
def test_impossible_assumptions_are_refused_naming_the_option(fields: dict[str, float], option: str) -> None:
    with pytest.raises(PlanError, match=option):
        Assumptions(**fields)


def test_cli_prints_a_table_and_warns(capsys: pytest.CaptureFixture[str]) -> None:
    assert mlrollout(["plan", "--rps", "20"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Plan for the built-in default policy at 20 requests/s: stable error rate 0.01, p99 50 ms")
    header = next(line for line in out.splitlines() if line.startswith("STEP"))
    assert header.split()[:3] == ["STEP", "KIND", "WHAT"] and "ROLLED BACK (errors x2)" in header
    assert "warning: spec.strategy.steps[1].canary.maxDuration: 1h cannot decide at 20 requests/s" in out


def test_cli_json_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump({"kind": "RolloutPolicy", "metadata": {"name": "fast"},
                                      "spec": {"strategy": {"steps": [{"canary": {"weight": 50}}]}}}))  # fmt: skip
    assert mlrollout(["plan", "--policy", str(policy), "--rps", "100", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["assumptions"]["rps"] == 100 and len(doc["steps"]) == 1 and doc["steps"][0]["decides"] is True
    assert mlrollout(["plan", "--rps", "0"]) == 2
    assert "--rps: expected traffic must be a positive number" in capsys.readouterr().err
    policy.write_text(yaml.safe_dump({"spec": {"significance": {"margins": {"errorRate": {"relative": 0}}}}}))
    assert mlrollout(["plan", "--policy", str(policy), "--rps", "100"]) == 2
    assert "invalid policy" in capsys.readouterr().err


def test_validate_warns_without_failing_when_steps_cannot_decide(capsys: pytest.CaptureFixture[str]) -> None:
    example = str(EXAMPLES / "04-platform-policy.yaml")
    assert mlrollout(["validate", example]) == 0
    assert "warning" not in capsys.readouterr().err  # no traffic stated: no planning
    assert mlrollout(["validate", example, "--rps", "100"]) == 0
    err = capsys.readouterr().err
    assert (
        "warning: " + example + ": document 2 (RolloutPolicy production-default): "
        "spec.strategy.steps[1].canary.maxDuration: 30m cannot decide at 100 requests/s"
    ) in err
    assert plugin(["lint", example, "--rps", "100"]) == 0
    assert "steps[1].canary.maxDuration" in capsys.readouterr().err
    assert mlrollout(["validate", example, "--rps", "-1"]) == 2
