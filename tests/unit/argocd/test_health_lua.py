"""The Argo CD health check, run by the real Lua interpreter against ModelDeployment fixtures.

Argo CD evaluates `resource.customizations.health.<group>_<kind>` with the object in the global `obj` and
reads the returned table. The harness does the same: it turns a fixture into a Lua table literal, sets
`obj`, runs the chart's health.lua with `dofile` and prints what came back.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mlrollout.api import ModelDeployment

ROOT = Path(__file__).resolve().parents[3]
HEALTH_LUA = ROOT / "charts" / "mlrollout" / "argocd" / "health.lua"
FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.json"))
LUA = shutil.which("lua5.4") or "lua5.4"


def lua_literal(value: Any, floats: bool = False) -> str:
    """A Lua expression for a JSON value. `floats` writes integers as 3.0, as gopher-lua holds JSON numbers."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}.0" if floats else str(value)
    if isinstance(value, float):
        assert math.isfinite(value)
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(_lua_char(b) for b in value.encode()) + '"'
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v, floats) for v in value) + "}"
    if isinstance(value, dict):
        items = (f"[{lua_literal(k)}] = {lua_literal(v, floats)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"not a JSON value: {value!r}")


def _lua_char(byte: int) -> str:
    if 32 <= byte < 127 and chr(byte) not in '"\\':
        return chr(byte)
    return f"\\{byte:03d}"


def health(obj: dict[str, Any], floats: bool = False) -> tuple[str, str]:
    """(status, message) that health.lua returns for `obj`."""
    chunk = (
        f"obj = {lua_literal(obj, floats)}\n"
        f"local hs = dofile({lua_literal(str(HEALTH_LUA))})\n"
        'io.write(hs.status, "\\0", hs.message)\n'
    )
    proc = subprocess.run([LUA, "-"], input=chunk, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    status, message = proc.stdout.split("\0")
    return status, message


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
@pytest.mark.parametrize("floats", [False, True], ids=["ints", "floats"])
def test_fixture(path: Path, floats: bool) -> None:
    fixture = json.loads(path.read_text())
    ModelDeployment.model_validate(fixture["object"])  # the fixture is a valid object of today's API
    status, message = health(fixture["object"], floats)
    assert status == fixture["expect"]["status"]
    assert fixture["expect"]["messageContains"] in message


def test_fixtures_cover_every_argo_status() -> None:
    statuses = {json.loads(p.read_text())["expect"]["status"] for p in FIXTURES}
    assert statuses == {"Healthy", "Progressing", "Degraded", "Suspended"}


def test_message_names_versions_split_and_step() -> None:
    obj = json.loads((Path(__file__).parent / "fixtures" / "04-canary-20.json").read_text())["object"]
    assert health(obj) == (
        "Progressing",
        "canary 20%: analysis continues [stable v1, candidate v2, split 80/20, step 2 (canary)]",
    )


def test_unknown_phase_is_progressing_not_an_error() -> None:
    obj = {"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "phase": "Reticulating"}}
    assert health(obj) == ("Progressing", "Reticulating")


def test_missing_metadata_and_generation() -> None:
    assert health({"status": {"phase": "Healthy"}}) == (
        "Progressing",
        "Waiting for the mlrollout operator to observe the latest spec",
    )
    assert health({"status": {"phase": "Healthy", "observedGeneration": 4}}) == ("Healthy", "Serving")


def test_non_ascii_text_survives() -> None:
    obj = {
        "metadata": {"generation": 1},
        "status": {"observedGeneration": 1, "phase": "Degraded", "message": "Δ > 1pp"},
    }
    assert health(obj) == ("Degraded", "Δ > 1pp")


def test_script_stays_within_lua_5_1_for_gopher_lua() -> None:
    """Argo CD embeds gopher-lua (Lua 5.1): no goto, integer division, bitwise operators or 5.3+ libraries."""
    code = "\n".join(line.split("--", 1)[0] for line in HEALTH_LUA.read_text().splitlines())
    for construct in ("goto ", "//", "&", "<<", ">>", "utf8.", "table.unpack", "math.tointeger"):
        assert construct not in code, construct
    assert re.search(r"^return hs\s*$", HEALTH_LUA.read_text(), re.MULTILINE)


def test_lua_literal_is_what_lua_reads() -> None:
    value = {"a": [1, 2.5, 'x"y\\z\n'], "b": True, "c": {"d-e": None}}
    chunk = f"local t = {lua_literal(value)}\nio.write(#t.a, t.a[2], t.a[3], tostring(t.b), tostring(t.c['d-e']))"
    out = subprocess.run([LUA, "-"], input=chunk, capture_output=True, text=True, timeout=30, check=True).stdout
    assert out == '32.5x"y\\z\ntruenil'
