"""`kubectl mlrollout` against a real API server, found by the real kubectl's plugin discovery.

The operator is not running here: each test plays its part by patching status.lastCommand through the
status subresource, which is exactly what the plugin waits for. What is checked is the plugin's side of
the contract: the annotation it writes, that it never touches the spec, how it waits, what it prints, and
that RBAC decides who may command.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.cluster.kube import Kubectl
from tests.cluster.operator_support import token_kubeconfig

# `env` (the operator under the chart's ServiceAccount) is the operator tests' fixture, imported to be used here
from tests.cluster.test_operator import CANARY_STEPS, Env, env, md_manifest, steps_policy, unique  # noqa: F401
from tests.support import argocd

pytestmark = pytest.mark.cluster

VENV_BIN = Path(sys.executable).parent
FIXTURES = argocd.CUSTOMIZATION / "testdata"
MD = """
apiVersion: mlrollout.io/v1alpha1
kind: ModelDeployment
metadata: {name: wine}
spec:
  model:
    name: wine
    version: v2
    uri: file:///models/wine-v2.onnx
    sha256: 9b2e7c4d1a0f3e5b6c7d8e9f00112233445566778899aabbccddeeff00112233
"""


class Plugin:
    """Runs `kubectl mlrollout ...`: the pinned kubectl finds kubectl-mlrollout on PATH."""

    def __init__(self, kubectl: Kubectl, kubeconfig: Path | None = None) -> None:
        self.kubectl_bin = kubectl.control_plane.binary("kubectl")
        self.env = dict(kubectl.control_plane.env)
        self.env["PATH"] = f"{VENV_BIN}{os.pathsep}{self.env.get('PATH', '')}"
        self.env["KUBECONFIG"] = str(kubeconfig or kubectl.control_plane.kubeconfig)

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.kubectl_bin, "mlrollout", *args], capture_output=True, text=True, env=self.env, timeout=timeout
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [self.kubectl_bin, "mlrollout", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )


@pytest.fixture
def plugin(kubectl: Kubectl) -> Plugin:
    return Plugin(kubectl)


@pytest.fixture
def wine(kubectl: Kubectl, namespace: str) -> str:
    """A ModelDeployment named wine in the test's namespace; returns the namespace."""
    kubectl("apply", "-n", namespace, "-f", "-", input=MD)
    return namespace


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; whatever is still running at the end is stopped."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def get_md(kubectl: Kubectl, ns: str) -> dict[str, Any]:
    md: dict[str, Any] = kubectl.json("get", "modeldeployment", "wine", "-n", ns)
    return md


def command_annotation(kubectl: Kubectl, ns: str) -> dict[str, Any] | None:
    raw = (get_md(kubectl, ns)["metadata"].get("annotations") or {}).get("mlrollout.io/command")
    return None if raw is None else dict(json.loads(raw))


def wait_for_annotation(kubectl: Kubectl, ns: str, proc: subprocess.Popen[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while (found := command_annotation(kubectl, ns)) is None:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the plugin never wrote the annotation"
        time.sleep(0.2)
    return found


def answer(kubectl: Kubectl, ns: str, command_id: str, verb: str, result: str, message: str) -> None:
    """Play the operator: record the answer to a command in status.lastCommand."""
    status = {"lastCommand": {"id": command_id, "verb": verb, "result": result, "message": message,
                              "time": "2026-11-26T06:30:00Z"}}  # fmt: skip
    kubectl("patch", "modeldeployment", "wine", "-n", ns, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}))  # fmt: skip


VERB_CASES: list[tuple[list[str], str, int | None]] = [
    (["promote"], "promote", None),
    (["promote", "--full"], "promoteFull", None),
    (["abort"], "abort", None),
    (["pause"], "pause", None),
    (["resume"], "resume", None),
    (["retry"], "retry", None),
    (["undo"], "undo", None),
    (["undo", "--to-revision", "2"], "undo", 2),
]


def test_each_verb_writes_the_command_annotation_and_nothing_else(kubectl: Kubectl, plugin: Plugin, wine: str) -> None:
    """One namespace for all verbs (namespaces are slow to make); every command gets a fresh id."""
    before = get_md(kubectl, wine)
    ids = set()
    for args, verb, to_revision in VERB_CASES:
        proc = plugin(*args, "wine", "-n", wine, "--no-wait")
        assert proc.returncode == 0, (args, proc.stderr)
        after = get_md(kubectl, wine)
        command = json.loads(after["metadata"]["annotations"]["mlrollout.io/command"])
        expected = {"id": command["id"], "verb": verb} | ({"toRevision": to_revision} if to_revision else {})
        assert command == expected, args
        assert str(uuid.UUID(command["id"])) == command["id"]
        assert command["id"] in proc.stdout
        assert after["spec"] == before["spec"], args
        assert after["metadata"]["generation"] == before["metadata"]["generation"], args
        ids.add(command["id"])
    assert len(ids) == len(VERB_CASES)


def test_waits_for_the_answer_to_its_own_command(
    kubectl: Kubectl, plugin: Plugin, wine: str, procs: list[subprocess.Popen[str]]
) -> None:
    proc = plugin.start("promote", "wine", "-n", wine, "--timeout", "90")
    procs.append(proc)
    command = wait_for_annotation(kubectl, wine, proc)
    answer(kubectl, wine, "an-older-command", "pause", "accepted", "paused at step 1")
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=3)  # an answer to another command does not end the wait
    answer(kubectl, wine, command["id"], "promote", "accepted", "step 2 passed by a human")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"promote accepted by the operator for {wine}/wine: step 2 passed by a human" in out


def test_a_refusal_exits_nonzero_with_the_reason(
    kubectl: Kubectl, plugin: Plugin, wine: str, procs: list[subprocess.Popen[str]]
) -> None:
    proc = plugin.start("undo", "wine", "-n", wine, "--to-revision", "7")
    procs.append(proc)
    command = wait_for_annotation(kubectl, wine, proc)
    assert command["toRevision"] == 7
    answer(kubectl, wine, command["id"], "undo", "refused", "revision 7 is unknown (known: 1, 2)")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "undo REFUSED by the operator" in out and "revision 7 is unknown (known: 1, 2)" in out


def test_no_answer_times_out(kubectl: Kubectl, plugin: Plugin, wine: str) -> None:
    proc = plugin("abort", "wine", "-n", wine, "--timeout", "2")
    assert proc.returncode == 3
    assert "no answer from the operator within 2s" in proc.stderr
    annotation = command_annotation(kubectl, wine)
    assert annotation is not None and annotation["verb"] == "abort"


def test_missing_object_is_an_error(plugin: Plugin, namespace: str) -> None:
    proc = plugin("promote", "nope", "-n", namespace)
    assert proc.returncode == 1
    assert "not found" in proc.stderr


def _viewer_kubeconfig(kubectl: Kubectl, ns: str, path: Path) -> Path:
    """A kubeconfig for a ServiceAccount that may read ModelDeployments in `ns` but not patch them."""
    kubectl("create", "serviceaccount", "viewer", "-n", ns)
    kubectl(
        "create", "role", "md-viewer", "-n", ns, "--verb=get,list,watch", "--resource=modeldeployments.mlrollout.io"
    )
    kubectl("create", "rolebinding", "md-viewer", "-n", ns, "--role=md-viewer", f"--serviceaccount={ns}:viewer")
    token_kubeconfig(kubectl.control_plane, kubectl, ns, "viewer", path)
    cluster = yaml.safe_load(path.read_text())["clusters"][0]["cluster"]
    assert base64.b64decode(cluster["certificate-authority-data"])  # the real CA, not insecure mode
    return path


def test_rbac_decides_who_may_command(kubectl: Kubectl, wine: str, tmp_path: Path) -> None:
    viewer = Plugin(kubectl, _viewer_kubeconfig(kubectl, wine, tmp_path / "viewer.kubeconfig"))
    denied = viewer("promote", "wine", "--no-wait")  # namespace from the viewer's context
    assert denied.returncode == 1
    assert "forbidden" in denied.stderr
    assert command_annotation(kubectl, wine) is None
    shown = viewer("status", "wine")  # reading is allowed; policies are not, so steps come from the spec only
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"ModelDeployment {wine}/wine   Unknown")


@pytest.fixture
def policy(kubectl: Kubectl) -> Iterator[str]:
    """A cluster-scoped RolloutPolicy with a unique name, deleted afterwards."""
    name = f"t-plugin-{secrets.token_hex(3)}"
    manifest = {
        "apiVersion": "mlrollout.io/v1alpha1",
        "kind": "RolloutPolicy",
        "metadata": {"name": name},
        "spec": {"strategy": {"steps": [
            {"shadow": {"mirrorPercent": 50, "minRequests": 100}},
            {"canary": {"weight": 20, "minRequests": 400}},
            {"pause": {}},
            {"canary": {"weight": 60, "minRequests": 400}},
        ]}},
    }  # fmt: skip
    kubectl("apply", "-f", "-", input=json.dumps(manifest))
    yield name
    kubectl("delete", "rolloutpolicy", name, "--ignore-not-found", "--wait=false", check=False)


def canary_status() -> dict[str, Any]:
    """The status of a rollout at its 20% canary step, shaped like the operator writes it."""
    fixture = yaml.safe_load((FIXTURES / "04-canary-20.yaml").read_text())
    status: dict[str, Any] = copy.deepcopy(fixture["status"])
    status["observedGeneration"] = 1
    for condition in status["conditions"]:
        condition["observedGeneration"] = 1
    status["currentStep"]["requestsAtStart"] = 150
    return status


def set_status(kubectl: Kubectl, ns: str, status: dict[str, Any]) -> None:
    kubectl("patch", "modeldeployment", "wine", "-n", ns, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}))  # fmt: skip


def test_status_of_a_real_object_with_its_policy_steps(
    kubectl: Kubectl, plugin: Plugin, wine: str, policy: str
) -> None:
    kubectl("patch", "modeldeployment", "wine", "-n", wine, "--type=merge",
            "-p", json.dumps({"spec": {"rolloutPolicyRef": {"name": policy}}}))  # fmt: skip
    set_status(kubectl, wine, canary_status() | {"observedGeneration": 2})
    proc = plugin("status", "wine", "-n", wine)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"ModelDeployment {wine}/wine   Progressing"
    assert "Traffic:    stable 80%  candidate 20%  mirror 0%" in lines
    assert "Candidate:  v2  (revision 2, c81f03aa92de, sha256 9b2e7c4d1a0f...)" in lines
    start = next(i for i, line in enumerate(lines) if line.startswith("Steps:"))
    assert "step 2 of 4" in lines[start]
    steps = [
        line.split(None, 2) if not line.startswith("  >") else line.split(None, 3)[1:]
        for line in lines[start + 2 : start + 6]
    ]
    assert [s[:2] for s in steps] == [["1", "shadow"], ["2", "canary"], ["3", "pause"], ["4", "canary"]]
    assert lines[start + 3].startswith("  > 2  canary  weight 20%, min 400 requests")
    assert "running (requests 302/400" in lines[start + 3]
    assert any(line.split()[:2] == ["errorRate", "inconclusive"] for line in lines)


def test_history_of_a_real_object(kubectl: Kubectl, plugin: Plugin, wine: str) -> None:
    fixture = yaml.safe_load((FIXTURES / "06-rolled-back.yaml").read_text())
    status = fixture["status"] | {"observedGeneration": 1}
    set_status(kubectl, wine, status)
    proc = plugin("history", "wine", "-n", wine)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"History of {wine}/wine:"
    assert lines[2].split()[:3] == ["2", "v2", "rolledBack"]
    assert lines[3].split()[:3] == ["1", "v1", "promoted"]


def test_status_watch_redraws_on_change(
    kubectl: Kubectl, plugin: Plugin, wine: str, procs: list[subprocess.Popen[str]]
) -> None:
    set_status(kubectl, wine, canary_status())
    proc = plugin.start("status", "wine", "-n", wine, "--watch", "--timeout", "90")
    procs.append(proc)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()

    def wait_for_line(predicate: Any) -> str:
        deadline = time.monotonic() + 60
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "the watch never showed the change"
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if predicate(line):
                return line

    wait_for_line(lambda line: line.startswith(f"ModelDeployment {wine}/wine   Progressing"))
    set_status(kubectl, wine, {"phase": "Paused", "message": "paused by kubectl mlrollout pause"})
    wait_for_line(lambda line: line.startswith(f"ModelDeployment {wine}/wine   Paused"))
    wait_for_line(lambda line: line.startswith("  > 2") and "paused (" in line)


# -- the plugin driving the real operator ------------------------------------------------------------------
# The operator runs as `kopf run` under the chart's ServiceAccount (tests/cluster/test_operator.py's `env`).
# At every moment the real object also goes through the Argo CD health check: statuses from a real run.


def argo_health(e: Env, moment: str, expected: str) -> None:
    """Argo CD's health of the live object (the chart's argocd-cm, Argo CD's evaluator); saved as a fixture
    when MLROLLOUT_CAPTURE_ARGOCD_FIXTURES is set."""
    obj = e.md("wine")
    argocd.capture(obj, moment)
    [(status, message)] = argocd.health([obj])
    assert status == expected, (moment, message, obj.get("status"))


def test_plugin_drives_the_real_operator(request: pytest.FixtureRequest) -> None:
    world: Env = request.getfixturevalue("env")
    plugin = Plugin(world.kubectl)
    ns = world.namespace
    policy = world.policy(steps_policy(unique("steps"), CANARY_STEPS))
    world.healthy_v1("wine", policy)
    argo_health(world, "healthy", "Healthy")
    world.verdict("wine", "continue", 0)
    world.apply(md_manifest("wine", "2", policy))
    world.step("wine", 0)
    argo_health(world, "shadow", "Progressing")

    shown = plugin("status", "wine", "-n", ns)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"ModelDeployment {ns}/wine   Progressing")
    assert any(line.startswith("  > 1  shadow  mirror 100%, min 100 requests") for line in shown.stdout.splitlines())

    promoted = plugin("promote", "wine", "-n", ns, "--timeout", "120")
    assert promoted.returncode == 0, promoted.stderr
    assert f"promote accepted by the operator for {ns}/wine: step 0 (shadow) passed by command" in promoted.stdout
    assert world.status("wine")["currentStep"]["index"] == 1
    argo_health(world, "canary", "Progressing")

    paused = plugin("pause", "wine", "-n", ns, "--timeout", "120")
    assert paused.returncode == 0 and "pause accepted" in paused.stdout, paused.stdout + paused.stderr
    world.wait_status("wine", "Paused", lambda s: s.get("phase") == "Paused")
    argo_health(world, "paused", "Suspended")
    resumed = plugin("resume", "wine", "-n", ns, "--timeout", "120")
    assert resumed.returncode == 0 and "resume accepted" in resumed.stdout, resumed.stdout + resumed.stderr

    full = plugin("promote", "wine", "-n", ns, "--full", "--timeout", "120")
    assert full.returncode == 0 and "promoteFull accepted" in full.stdout, full.stdout + full.stderr
    world.wait_status("wine", "v2 stable", lambda s: (s.get("stable") or {}).get("modelVersion") == "2")
    argo_health(world, "promoted", "Healthy")

    undone = plugin("undo", "wine", "-n", ns, "--to-revision", "1", "--timeout", "120")
    assert undone.returncode == 0 and "undo accepted" in undone.stdout, undone.stdout + undone.stderr
    world.wait_status("wine", "v1 back", lambda s: (s.get("stable") or {}).get("modelVersion") == "1"
                    and not s.get("candidate"))  # fmt: skip
    refused = plugin("undo", "wine", "-n", ns, "--to-revision", "99", "--timeout", "120")
    assert refused.returncode == 1 and "undo REFUSED by the operator" in refused.stdout, refused.stdout

    world.apply(md_manifest("wine", "3", policy))
    world.step("wine", 0)
    aborted = plugin("abort", "wine", "-n", ns, "--timeout", "120")
    assert aborted.returncode == 0 and "abort accepted" in aborted.stdout, aborted.stdout + aborted.stderr
    world.wait_status("wine", "Degraded", lambda s: s.get("phase") == "Degraded")
    argo_health(world, "aborted", "Degraded")

    history = plugin("history", "wine", "-n", ns)
    assert history.returncode == 0, history.stderr
    outcomes = [line.split()[2] for line in history.stdout.splitlines()[2:] if line.strip() and line[2].isdigit()]
    assert "aborted" in outcomes and "promoted" in outcomes, history.stdout
