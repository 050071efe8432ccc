"""When the timer reconciles (`controller/pacing.py`): an idle ModelDeployment less often, nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from mlrollout.api.modeldeployment import ModelDeploymentStatus
from mlrollout.controller import pacing

REVISION = {"revision": "r2", "number": 2, "modelVersion": "2", "modelUri": "file:///m.onnx", "sha256": "b" * 64}
T = "2026-12-05T03:00:00Z"
APPROVAL = {"revision": "r2", "hook": "h", "type": "confirmRollout", "state": "waiting", "since": T}


def status(**fields: Any) -> ModelDeploymentStatus:
    return ModelDeploymentStatus.model_validate({"phase": "Healthy", "observedGeneration": 2, **fields})


def test_a_healthy_model_deployment_with_nothing_in_motion_is_idle() -> None:
    assert pacing.idle(status(stable={**REVISION}), generation=2)


@pytest.mark.parametrize(
    ("why", "fields", "generation"),
    [
        ("not Healthy", {"phase": "Progressing"}, 2),
        ("degraded (a held-back revision, a lost gateway)", {"phase": "Degraded"}, 2),
        ("a spec not acted upon yet", {}, 3),
        ("a candidate", {"candidate": REVISION}, 2),
        ("a step", {"currentStep": {"index": 0, "kind": "canary", "startedAt": T}}, 2),
        ("a scheduled scale-down", {"scaleDowns": [{"revision": "r1", "at": T}]}, 2),
        ("a models:/ URI being resolved", {"resolving": {"revision": "r3", "since": T}}, 2),
        ("a hold", {"hold": "held"}, 2),
        ("an approval awaited", {"approvals": [APPROVAL]}, 2),
    ],
)
def test_anything_waiting_for_the_clock_keeps_the_short_timer(
    why: str, fields: dict[str, Any], generation: int
) -> None:
    assert not pacing.idle(status(**fields), generation), why


def test_the_timer_skips_an_idle_model_deployment_until_the_idle_interval_passed() -> None:
    assert pacing.timer_due(None, now=1000.0, idle_interval=60.0)  # never idle (or restarted): every tick
    assert not pacing.timer_due(990.0, now=1000.0, idle_interval=60.0)
    assert pacing.timer_due(940.0, now=1000.0, idle_interval=60.0)
    assert pacing.timer_due(1000.0, now=1000.0, idle_interval=0.0)  # 0: every tick, as before


def test_a_deployment_change_since_the_idle_pass_started_makes_the_tick_due() -> None:
    # the pass that found it idle started at 990; a change at 995 happened during it (after its list)
    assert pacing.timer_due(990.0, now=1000.0, idle_interval=60.0, touched=995.0)
    assert pacing.timer_due(990.0, now=1000.0, idle_interval=60.0, touched=990.0)
    assert not pacing.timer_due(990.0, now=1000.0, idle_interval=60.0, touched=980.0)  # seen by that pass
