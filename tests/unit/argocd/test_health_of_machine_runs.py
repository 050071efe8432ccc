"""The health check and the status view on statuses the operator's own state machine writes.

The fixtures pin the contract; these runs keep it honest: a simulated world drives the real
`mlrollout.rollout.decide` through a whole life (first deployment, shadow, canary, a human pause, a
rollback, a retry, a promotion, spec.paused), and at every stage the Argo CD status (from Argo CD's own
evaluator, with the chart's argocd-cm installed) must be the one a person would expect, whatever words the
machine chose for its messages.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from tests.support import argocd
from tests.unit.rollout.world import World, policy, spec

from mlrollout.api.modeldeployment import ModelDeployment
from mlrollout.kubectl_plugin import render


def as_object(world: World, generation: int | None = None) -> dict[str, Any]:
    """The ModelDeployment as Argo CD would fetch it at this moment of the run."""
    obj: dict[str, Any] = {
        "apiVersion": "mlrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "wine", "namespace": "ml", "generation": generation or world.generation},
        "spec": world.md_spec.to_dict(),
    }
    if world.status is not None:
        obj["status"] = world.status.to_dict()
    return obj


def a_life() -> list[tuple[str, dict[str, Any], str]]:
    """(moment, object, expected Argo CD status) along one ModelDeployment's life."""
    w = World()
    seen: list[tuple[str, dict[str, Any], str]] = [("created, no status", as_object(w), "Progressing")]
    w.tick()
    seen.append(("first revision starting", as_object(w), "Progressing"))
    w.make_ready()
    w.tick()
    seen.append(("first revision serving", as_object(w), "Healthy"))

    w.md_spec, w.generation = spec("2", "b"), 2
    seen.append(("new spec not yet observed", as_object(w), "Progressing"))
    w.tick()
    w.make_ready()
    w.tick()
    assert w.s.current_step is not None and w.s.current_step.kind == "shadow"
    seen.append(("shadow step", as_object(w), "Progressing"))
    w.give_verdict("promote", requests=20)
    assert w.s.current_step is not None and w.s.current_step.kind == "canary"
    seen.append(("canary 10%", as_object(w), "Progressing"))
    w.send("pause")
    seen.append(("paused by a human", as_object(w), "Suspended"))
    w.send("resume")
    seen.append(("resumed", as_object(w), "Progressing"))
    w.give_verdict("rollback", requests=40)
    seen.append(("rolled back", as_object(w), "Degraded"))
    w.send("retry")
    w.make_ready()
    w.tick()
    seen.append(("retrying the held-back revision", as_object(w), "Progressing"))
    w.send("promoteFull")
    w.tick(600)
    seen.append(("promoted by a human", as_object(w), "Healthy"))

    w.md_spec, w.generation, w.paused = spec("3", "c", paused=True), 3, True
    w.tick()
    w.make_ready()
    w.tick()
    seen.append(("spec.paused during a rollout", as_object(w), "Suspended"))
    return seen


LIFE = a_life()


@pytest.fixture(scope="module")
def argo_health() -> dict[str, tuple[str, str]]:
    """Argo CD's health at every moment, in one run of the harness."""
    return dict(zip([m for m, _, _ in LIFE], argocd.health([obj for _, obj, _ in LIFE]), strict=True))


@pytest.mark.parametrize(("moment", "obj", "expected"), LIFE, ids=[m for m, _, _ in LIFE])
def test_argo_status_along_a_rollout(
    argo_health: dict[str, tuple[str, str]], moment: str, obj: dict[str, Any], expected: str
) -> None:
    status, message = argo_health[moment]
    assert status == expected, (moment, message, obj.get("status", {}).get("phase"))
    assert message


@pytest.mark.parametrize(("moment", "obj", "expected"), LIFE, ids=[m for m, _, _ in LIFE])
def test_status_view_renders_every_moment(moment: str, obj: dict[str, Any], expected: str) -> None:
    steps = policy().strategy.steps
    text = render.render_status(ModelDeployment.model_validate(obj), steps, datetime(2026, 11, 26, 7, 0, tzinfo=UTC))
    status = obj.get("status") or {}
    assert text.startswith(f"ModelDeployment ml/wine   {status.get('phase') or 'Unknown'}\n")
    if status.get("currentStep"):
        index = status["currentStep"]["index"]
        assert f"step {index + 1} of {len(steps)}" in text
        assert any(line.startswith(f"  > {index + 1}  {status['currentStep']['kind']}") for line in text.splitlines())
