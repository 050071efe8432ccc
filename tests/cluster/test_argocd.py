"""Argo CD's resource actions steering the real operator.

Each action runs as Argo CD's API server runs it (server/application.RunResourceActionV2): read the live
object, run the action's Lua with Argo CD's own evaluator (the chart's argocd-cm snippet, through the
harness in e2e/argocd), and send the merge patch between the two as Argo CD's ServiceAccount, which may
only get and patch ModelDeployments. The operator runs as `kopf run` under the chart's ServiceAccount and
must answer every command in status.lastCommand; the spec and the generation never change (no drift).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from tests.cluster.kube import Kubectl
from tests.cluster.operator_support import token_kubeconfig

# `env` (the operator under the chart's ServiceAccount) is the operator tests' fixture, imported to be used here
from tests.cluster.test_operator import CANARY_STEPS, Env, env, md_manifest, steps_policy, unique  # noqa: F401
from tests.support import argocd

from mlrollout.api.commands import ANNOTATION, parse

pytestmark = pytest.mark.cluster


class ArgoCD:
    """Argo CD's API server for one ModelDeployment: discovery and actions on the live object."""

    def __init__(self, kubectl: Kubectl, namespace: str, workdir: Path) -> None:
        kubectl("create", "serviceaccount", "argocd-server", "-n", namespace)
        kubectl("create", "role", "argocd-actions", "-n", namespace, "--verb=get,patch",
                "--resource=modeldeployments.mlrollout.io")  # fmt: skip
        kubectl("create", "rolebinding", "argocd-actions", "-n", namespace, "--role=argocd-actions",
                f"--serviceaccount={namespace}:argocd-server")  # fmt: skip
        kubeconfig = token_kubeconfig(kubectl.control_plane, kubectl, namespace, "argocd-server", workdir / "argocd")
        self.kubectl = Kubectl(dataclasses.replace(kubectl.control_plane, kubeconfig=kubeconfig))
        self.config_map = argocd.CONFIG_MAP.read_text()

    def live(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.kubectl.json("get", "md", name)
        return obj

    def run(self, name: str, action: str, params: dict[str, str] | None = None) -> tuple[dict[str, Any], str | None]:
        """(what discovery offered, the command id sent or None when the action refused); sends the patch."""
        live = self.live(name)
        [answer] = argocd.evaluate(
            [argocd.case(action, live, discovery=True, actions=[(action, params)])], config_map=self.config_map
        )
        [offer] = [a for a in answer["discovery"]["actions"] if a["name"] == action]
        [result] = answer["actions"]
        if "error" in result:
            return offer, None
        [impacted] = result["impacted"]
        assert impacted["operation"] == "patch" and not impacted["touchesStatus"], impacted
        assert set(impacted["mergePatch"]) == {"metadata"}, impacted["mergePatch"]
        self.kubectl("patch", "md", name, "--type=merge", "-p", json.dumps(impacted["mergePatch"]))
        command = parse(impacted["mergePatch"]["metadata"]["annotations"][ANNOTATION])
        return offer, command.id


def steer(e: Env, argo: ArgoCD, action: str, params: dict[str, str] | None = None) -> dict[str, Any]:
    """Run an offered action and wait for the operator to accept it; returns the status then."""
    before = e.md("wine")
    offer, command_id = argo.run("wine", action, params)
    assert not offer.get("disabled") and command_id is not None, (action, offer, before.get("status"))
    st = e.wait_status("wine", f"{action} answered", lambda s: (s.get("lastCommand") or {}).get("id") == command_id)
    assert st["lastCommand"]["result"] == "accepted", st["lastCommand"]
    after = e.md("wine")
    assert after["spec"] == before["spec"] and after["metadata"]["generation"] == before["metadata"]["generation"]
    return st


def refused(e: Env, argo: ArgoCD, action: str) -> None:
    """An action that does not apply is not offered and, run anyway, changes nothing."""

    def command() -> str | None:
        return (e.md("wine")["metadata"].get("annotations") or {}).get(ANNOTATION)

    before = command()
    offer, command_id = argo.run("wine", action)
    assert offer.get("disabled") and command_id is None, (action, offer)
    assert command() == before  # no patch was sent (the operator's own status writes go on)


def argo_health(e: Env, moment: str, expected: str) -> None:
    obj = e.md("wine")
    argocd.capture(obj, moment)
    [(status, message)] = argocd.health([obj])
    assert status == expected, (moment, message, obj.get("status"))


def test_argo_cd_actions_drive_the_real_operator(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    world: Env = request.getfixturevalue("env")
    argo = ArgoCD(world.kubectl, world.namespace, tmp_path)
    policy = world.policy(steps_policy(unique("steps"), CANARY_STEPS))

    world.pods.withheld.add("gateway")  # the first revision is ready, the gateway not yet: Pending
    world.apply(md_manifest("wine", "1", policy))
    world.wait_status("wine", "Pending", lambda s: "waiting for the gateway" in (s.get("message") or ""))
    argo_health(world, "pending", "Progressing")
    for action in ("promote", "pause", "abort", "retry", "undo"):
        refused(world, argo, action)
    world.pods.withheld.clear()
    world.wait_status("wine", "Healthy v1", lambda s: s.get("phase") == "Healthy")

    world.verdict("wine", "continue", 0)
    world.apply(md_manifest("wine", "2", policy))
    world.step("wine", 0)
    refused(world, argo, "resume")
    assert steer(world, argo, "promote")["currentStep"]["index"] == 1
    steer(world, argo, "pause")
    world.wait_status("wine", "Paused", lambda s: s.get("phase") == "Paused")
    argo_health(world, "paused-by-argocd", "Suspended")
    refused(world, argo, "pause")
    steer(world, argo, "resume")
    world.wait_status("wine", "Progressing", lambda s: s.get("phase") == "Progressing")
    steer(world, argo, "promote-full")
    world.wait_status("wine", "v2 stable", lambda s: (s.get("stable") or {}).get("modelVersion") == "2")

    steer(world, argo, "undo")  # to the previous promoted revision: 1
    st = world.wait_status("wine", "v1 back", lambda s: (s.get("stable") or {}).get("modelVersion") == "1"
                           and not s.get("candidate"))  # fmt: skip
    assert st["heldBack"]["outcome"] == "undone" and st["phase"] == "Healthy"
    argo_health(world, "undone", "Healthy")

    world.apply(md_manifest("wine", "3", policy))
    world.step("wine", 0)
    steer(world, argo, "abort")
    world.wait_status("wine", "Degraded", lambda s: s.get("phase") == "Degraded")
    argo_health(world, "aborted-by-argocd", "Degraded")
    refused(world, argo, "abort")
    steer(world, argo, "retry")
    world.step("wine", 0)
    argo_health(world, "retried", "Progressing")
    steer(world, argo, "undo", {"toRevision": "2"})  # stops the retried rollout and goes back to v2
    world.wait_status("wine", "v2 back", lambda s: (s.get("stable") or {}).get("modelVersion") == "2"
                      and not s.get("candidate"))  # fmt: skip
