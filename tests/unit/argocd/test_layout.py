"""The Argo CD customization in Argo CD's own layout, ready to be proposed upstream as a built-in, and the
chart's argocd-cm snippet for Argo CD as it is today: both generated from argocd/src by `make argocd`.

The folder's health_test.yaml and actions/action_test.yaml run as Argo CD's util/lua tests run them
(TestLuaHealthScript, TestLuaResourceActionsScript), through the harness built from Argo CD's module.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml
from tests.support import argocd

from mlrollout import argocdgen

FOLDER = argocd.CUSTOMIZATION


def test_generated_files_are_up_to_date() -> None:
    stale = [str(path) for path, text in argocdgen.render().items() if not path.is_file() or path.read_text() != text]
    assert not stale, f"run `make argocd`: {stale}"


def test_folder_has_argo_cds_layout() -> None:
    """resource_customizations/<group>/<Kind>/ as Argo CD ships Argo Rollouts' Rollout."""
    assert FOLDER.parts[-3:] == ("resource_customizations", "mlrollout.io", "ModelDeployment")
    for name in ("health.lua", "health_test.yaml", "actions/discovery.lua", "actions/action_test.yaml"):
        assert (FOLDER / name).is_file(), name
    assert sorted(p.parent.name for p in FOLDER.glob("actions/*/action.lua")) == sorted(argocdgen.ACTIONS)
    # One copy of each input object: the action tests read the health tests' testdata.
    tests = yaml.safe_load((FOLDER / "actions" / "action_test.yaml").read_text())
    inputs = {t["inputPath"] for section in tests.values() for t in section}
    assert all(path.startswith("../testdata/") for path in inputs)
    outputs = {p.name for p in (FOLDER / "actions" / "testdata").iterdir()}
    assert outputs == {Path(p).name for p in argocdgen.outputs()}


def test_upstream_tests_pass_as_argo_cd_runs_them() -> None:
    proc = argocd.upstream(FOLDER)
    health = len(yaml.safe_load((FOLDER / "health_test.yaml").read_text())["tests"])
    actions = yaml.safe_load((FOLDER / "actions" / "action_test.yaml").read_text())
    total = health + len(actions["discoveryTests"]) + len(actions["actionTests"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == f"{total} passed, 0 failed"


def test_upstream_runner_catches_a_wrong_expectation(tmp_path: Path) -> None:
    copy = shutil.copytree(FOLDER, tmp_path / "ModelDeployment")
    health = copy / "health_test.yaml"
    health.write_text(health.read_text().replace("status: Suspended", "status: Healthy", 1))
    output = next((copy / "actions" / "testdata").glob("*-pause.yaml"))
    output.write_text(output.read_text().replace('"verb":"pause"', '"verb":"resume"'))
    proc = argocd.upstream(copy)
    assert proc.returncode == 1
    failed = [line.split(":")[0] for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 2 and failed[1].startswith("FAIL actions/pause/"), proc.stdout


# What the sandbox of user overrides and actions lacks; the runs through Argo CD prove the lines they
# execute, this guards the ones no fixture reaches.
OUTSIDE_SANDBOX = re.compile(
    r"\b(string|math|io|debug|coroutine|utf8)\s*\.|\bos\.(?!time\b)|\bload(string)?\s*\(|:\w+\("
)


def lua_code(text: str) -> str:
    """The code of a Lua file without comments and string literals."""
    text = re.sub(r'"(\\.|[^"\\])*"' + r"|'(\\.|[^'\\])*'", '""', text)
    return re.sub(r"--.*", "", text)


def test_scripts_use_only_what_the_sandbox_loads() -> None:
    for path in [*FOLDER.glob("**/*.lua"), *(argocdgen.SOURCES).glob("*.lua")]:
        found = OUTSIDE_SANDBOX.search(lua_code(path.read_text()))
        assert found is None, (path, found.group(0) if found else "")


def test_sandbox_check_sees_what_it_forbids() -> None:
    for line in ('string.format("%d", n)', "math.floor(x)", "os.exit(1)", "s:sub(1, 2)", "io.write(x)"):
        assert OUTSIDE_SANDBOX.search(lua_code(line)), line
    for line in ('local os = require("os")', "os.time()", '"string.format" -- math.floor', "tostring(n)"):
        assert OUTSIDE_SANDBOX.search(lua_code(line)) is None, line


def test_chart_snippet_needs_no_open_libraries() -> None:
    data = yaml.safe_load(argocd.CONFIG_MAP.read_text())["data"]
    assert set(data) == {
        "resource.customizations.health.mlrollout.io_ModelDeployment",
        "resource.customizations.actions.mlrollout.io_ModelDeployment",
    }
