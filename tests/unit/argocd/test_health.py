"""The health check through Argo CD's own code (`util/lua`, built from Argo CD's Go module), two ways:

- as installed today: the chart's argocd-cm snippet, read by Argo CD's settings manager, evaluated by
  `ResourceHealthOverrides.GetResourceHealth` in the sandbox of user overrides (no string or math library);
- as a built-in: the upstream folder's health.lua, run with the standard libraries as Argo CD runs built-ins.

Every fixture in the upstream folder's testdata/ (several recorded from the real operator) must give the
status and message its health_test.yaml names, both ways; bad objects must give a status, never an error.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from tests.support import argocd

from mlrollout.api import ModelDeployment

FOLDER = argocd.CUSTOMIZATION
TESTS = yaml.safe_load((FOLDER / "health_test.yaml").read_text())["tests"]
MODES = ("argocd-cm", "builtin")


def run(cases: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """mode -> case id -> Argo CD's health answer."""
    by_mode = {
        "argocd-cm": argocd.evaluate(cases, config_map=argocd.CONFIG_MAP.read_text()),
        "builtin": argocd.evaluate(cases, builtin=argocd.customization()),
    }
    return {mode: {a["id"]: a["health"] for a in answers} for mode, answers in by_mode.items()}


def fixture(path: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((FOLDER / path).read_text())
    return obj


@pytest.fixture(scope="module")
def fixtures_health() -> dict[str, dict[str, dict[str, Any]]]:
    return run([argocd.case(t["inputPath"], fixture(t["inputPath"]), health=True) for t in TESTS])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("test", TESTS, ids=[t["inputPath"].removeprefix("testdata/") for t in TESTS])
def test_fixture(fixtures_health: dict[str, dict[str, dict[str, Any]]], mode: str, test: dict[str, Any]) -> None:
    assert fixtures_health[mode][test["inputPath"]] == test["healthStatus"]


def test_every_fixture_is_tested_and_is_a_valid_object() -> None:
    tested = {t["inputPath"] for t in TESTS}
    assert tested == {f"testdata/{p.name}" for p in (FOLDER / "testdata").glob("*.yaml")}
    for path in tested:
        ModelDeployment.model_validate(fixture(path))  # an object of today's API, as the operator writes it


def test_fixtures_cover_every_phase_and_every_argo_status() -> None:
    statuses = {t["healthStatus"]["status"] for t in TESTS}
    assert statuses == {"Healthy", "Progressing", "Degraded", "Suspended"}
    real_phases = {
        (fixture(p).get("status") or {}).get("phase") for p in {t["inputPath"] for t in TESTS} if "real-" in p
    }
    assert real_phases == {"Pending", "Progressing", "Paused", "Healthy", "Degraded"}


def test_message_names_versions_split_and_step(fixtures_health: dict[str, dict[str, dict[str, Any]]]) -> None:
    assert fixtures_health["argocd-cm"]["testdata/04-canary-20.yaml"] == {
        "status": "Progressing",
        "message": "canary 20%: analysis continues [stable v1, candidate v2, split 80/20, step 2 (canary)]",
    }


HUGE = "x" * (1 << 20)
META = {"apiVersion": "mlrollout.io/v1alpha1", "kind": "ModelDeployment"}


def md(status: Any = None, generation: Any = 1, **metadata: Any) -> dict[str, Any]:
    obj: dict[str, Any] = META | {"metadata": {"name": "wine", "namespace": "ml", "generation": generation} | metadata}
    if generation is None:
        del obj["metadata"]["generation"]
    if status is not None:
        obj["status"] = status
    return obj


def ok(phase: Any, **status: Any) -> dict[str, Any]:
    return {"observedGeneration": 1, "phase": phase} | status


BAD: list[tuple[str, dict[str, Any], tuple[str, str]]] = [
    ("no status", md(), ("Progressing", "Waiting for the mlrollout operator to report status")),
    ("status a string", md("broken"), ("Unknown", "status is not an object")),
    ("status a list", md([1, 2]), ("Progressing", "Waiting for the mlrollout operator to report status")),
    ("phase a number", md(ok(7)), ("Unknown", "status.phase is not a string")),
    ("phase an object", md(ok({"a": 1})), ("Unknown", "status.phase is not a string")),
    ("unknown phase", md(ok("Reticulating")), ("Progressing", "Reticulating")),
    ("huge unknown phase", md(ok(HUGE)), ("Progressing", f"({len(HUGE)} characters, too long to show)")),
    ("no metadata, no generation", {"status": {"phase": "Healthy"}} | META,
     ("Progressing", "Waiting for the mlrollout operator to observe the latest spec")),
    ("no generation", md(ok("Healthy", observedGeneration=4), generation=None), ("Healthy", "Serving")),
    ("generations as strings", md(ok("Healthy", observedGeneration="3"), generation="3"), ("Healthy", "Serving")),
    ("older generation as a string", md(ok("Healthy", observedGeneration="2"), generation="3"),
     ("Progressing", "Waiting for the mlrollout operator to observe generation 3")),
    ("observedGeneration not a number", md(ok("Healthy", observedGeneration="two")),
     ("Progressing", "Waiting for the mlrollout operator to observe generation 1")),
    ("generation a fraction", md(ok("Healthy"), generation=1.5), ("Healthy", "Serving")),
    ("generation too big to be exact", md(ok("Healthy"), generation=1e300), ("Healthy", "Serving")),
    ("step index as a string", md(ok("Progressing", currentStep={"index": "1", "kind": "canary"})),
     ("Progressing", "Progressing [step 2 (canary)]")),
    ("step a string", md(ok("Progressing", currentStep="canary")), ("Progressing", "Progressing")),
    ("step index not a number", md(ok("Progressing", currentStep={"index": "one", "kind": "canary"})),
     ("Progressing", "Progressing")),
    ("versions as numbers", md(ok("Healthy", stableVersion=2, candidateVersion=3.5)),
     ("Healthy", "Serving [stable 2, candidate 3.5]")),
    ("conditions a string", md(ok("Healthy", conditions="Degraded")), ("Healthy", "Serving")),
    ("conditions missing fields", md(ok("Healthy", conditions=[1, "x", {}, {"type": "Degraded"}, {"status": "True"}])),
     ("Healthy", "Serving")),
    ("Degraded condition with a message of the wrong type",
     md(ok("Progressing", conditions=[{"type": "Degraded", "status": "True", "message": {"a": 1}}])),
     ("Degraded", "Rolled back")),
    ("Available False without a message", md(ok("Healthy", conditions=[{"type": "Available", "status": "False"}])),
     ("Progressing", "Not available: no reason given")),
    ("huge message", md(ok("Degraded", message=HUGE, stableVersion="v1")),
     ("Degraded", f"({len(HUGE)} characters, too long to show) [stable v1]")),
    ("huge condition message",
     md(ok("Progressing", conditions=[{"type": "Degraded", "status": "True", "message": HUGE}])),
     ("Degraded", f"({len(HUGE)} characters, too long to show)")),
    ("message a number", md(ok("Paused", message=42)), ("Suspended", "42")),
    ("non-ASCII text", md(ok("Degraded", message="Δ > 1pp, naïve")), ("Degraded", "Δ > 1pp, naïve")),
    ("many conditions", md(ok("Healthy", conditions=[{"type": f"T{i}", "status": "True"} for i in range(5000)])),
     ("Healthy", "Serving")),
]  # fmt: skip


@pytest.fixture(scope="module")
def bad_health() -> dict[str, dict[str, dict[str, Any]]]:
    return run([argocd.case(name, obj, health=True) for name, obj, _ in BAD])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("name", "obj", "expected"), BAD, ids=[name for name, _, _ in BAD])
def test_bad_input_gives_a_status_never_an_error(
    bad_health: dict[str, dict[str, dict[str, Any]]],
    mode: str,
    name: str,
    obj: dict[str, Any],
    expected: tuple[str, str],
) -> None:
    got = bad_health[mode][name]
    assert (got.get("status"), got.get("message")) == expected, json.dumps(got)[:500]
