"""Argo CD's own Lua evaluator for tests: the harness in ``e2e/argocd`` (a Go program linking Argo CD's
``util/lua`` and ``util/settings``), built once into the cache and run on batches of objects.

Stable API:

- ``harness() -> Path``: the built binary; builds it on first use (minutes when cold) and fails loudly
  when it cannot be built. Never skips.
- ``evaluate(cases, config_map=...)`` / ``evaluate(cases, builtin=...)``: one answer per case (health,
  discovery, actions with the merge patch Argo CD's API server would send).
- ``upstream(folder) -> CompletedProcess``: the folder's own ``health_test.yaml`` and
  ``actions/action_test.yaml``, run the way Argo CD's tests run them.
- ``customization(folder) -> dict``: the files of a ``resource_customizations/<group>/<Kind>`` folder, in
  the shape of ``builtin=``.
- ``health(objects) -> list[(status, message)]``: what Argo CD shows for each object with the chart's
  argocd-cm snippet installed; a Lua error fails the test.
- ``capture(obj, moment)``: with ``MLROLLOUT_CAPTURE_ARGOCD_FIXTURES=DIR``, saves a live object as
  ``DIR/real-<moment>.yaml``, shaped like the fixtures in the customization's testdata/.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "e2e" / "argocd" / "build"
CUSTOMIZATION = ROOT / "argocd" / "resource_customizations" / "mlrollout.io" / "ModelDeployment"
CONFIG_MAP = ROOT / "charts" / "mlrollout" / "argocd" / "argocd-cm.yaml"
BUILD_TIMEOUT = 3600.0


@functools.cache
def harness() -> Path:
    """The harness binary, built from the pinned module on first use (cached by content by the build)."""
    proc = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"cannot build the Argo CD harness ({BUILD}):\n{proc.stderr[-4000:]}")
    path = Path(proc.stdout.strip().splitlines()[-1])
    if not path.is_file():
        raise RuntimeError(f"the Argo CD harness build printed {path}, which is not a file")
    return path


def case(
    case_id: str,
    obj: dict[str, Any],
    *,
    health: bool = False,
    discovery: bool = False,
    actions: Sequence[tuple[str, dict[str, str] | None]] = (),
) -> dict[str, Any]:
    """One object and what Argo CD should do with it."""
    calls = [{"name": name} | ({"params": params} if params else {}) for name, params in actions]
    return {"id": case_id, "object": obj, "health": health, "discovery": discovery, "actions": calls}


def evaluate(
    cases: Sequence[dict[str, Any]], *, config_map: str | None = None, builtin: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Run the cases through Argo CD: as user overrides from an argocd-cm manifest, or as a built-in."""
    request: dict[str, Any] = {"cases": list(cases)}
    if config_map is not None:
        request["configMap"] = config_map
    if builtin is not None:
        request["builtin"] = builtin
    proc = subprocess.run(
        [str(harness()), "eval"], input=json.dumps(request), capture_output=True, text=True, timeout=300, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"argocd-lua eval failed: {proc.stderr[-4000:]}")
    answers: list[dict[str, Any]] = json.loads(proc.stdout)
    return answers


def upstream(folder: Path) -> subprocess.CompletedProcess[str]:
    """The folder's own tests in Argo CD's format, run as Argo CD's util/lua tests run them."""
    return subprocess.run(
        [str(harness()), "upstream", str(folder)], capture_output=True, text=True, timeout=300, check=False
    )


def customization(folder: Path = CUSTOMIZATION) -> dict[str, Any]:
    """health.lua, actions/discovery.lua and every actions/<name>/action.lua of an upstream folder."""
    actions = {p.parent.name: p.read_text() for p in sorted((folder / "actions").glob("*/action.lua"))}
    return {
        "health": (folder / "health.lua").read_text(),
        "discovery": (folder / "actions" / "discovery.lua").read_text(),
        "actions": actions,
    }


def health(objects: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """Argo CD's health of each object, with charts/mlrollout/argocd/argocd-cm.yaml installed."""
    cases = [case(str(i), obj, health=True) for i, obj in enumerate(objects)]
    answers = evaluate(cases, config_map=CONFIG_MAP.read_text())
    out = []
    for answer in answers:
        result = answer["health"]
        assert "error" not in result, result
        out.append((result["status"], result["message"]))
    return out


def capture(obj: dict[str, Any], moment: str) -> None:
    """Save an object the real operator wrote as a fixture, when MLROLLOUT_CAPTURE_ARGOCD_FIXTURES names a
    directory (tests/cluster record them; the testdata/ fixtures named real-* came from such runs)."""
    directory = os.environ.get("MLROLLOUT_CAPTURE_ARGOCD_FIXTURES")
    if not directory:
        return
    metadata = obj["metadata"]
    kept = {"name": metadata["name"], "namespace": "ml", "resourceVersion": metadata["resourceVersion"]}
    kept |= {key: metadata[key] for key in ("finalizers", "generation") if key in metadata}
    body = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": kept}
    body |= {key: value for key, value in obj.items() if key not in body}
    text = yaml.safe_dump(body, sort_keys=False, width=120, allow_unicode=True)
    (Path(directory) / f"real-{moment}.yaml").write_text(text)
