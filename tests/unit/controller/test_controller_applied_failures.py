"""`Reconciler._apply` when an apply fails: the memo of what this process applied must not outlive what it
knows. A timed-out apply may still have been taken by the API server, so the child's state is unknown, and
the next apply of it must be sent whatever was applied before."""

from __future__ import annotations

from typing import Any, cast

import pytest

from mlrollout.controller.kube import KubeApi
from mlrollout.controller.reconcile import Reconciler
from mlrollout.controller.settings import OperatorSettings

MD = {"apiVersion": "mlrollout.io/v1alpha1", "kind": "ModelDeployment",
      "metadata": {"name": "wine", "namespace": "ml", "uid": "u-1"}}  # fmt: skip


def routes(stable: int) -> dict[str, Any]:
    """A route table: the weights a rollback or a step writes."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "wine-routes", "namespace": "ml"},
            "data": {"stable": str(stable), "candidate": str(100 - stable)}}  # fmt: skip


class _Server:
    """The API server's copy of each child; `lose_answer` makes the next apply be taken and its answer lost
    (a read timeout, a connection reset after the write)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.lose_answer = False

    def apply(self, manifest: dict[str, Any], field_manager: str = "") -> dict[str, Any]:
        self.objects[manifest["metadata"]["name"]] = manifest
        if self.lose_answer:
            self.lose_answer = False
            raise TimeoutError("read timed out")
        return manifest


def test_an_apply_whose_answer_was_lost_does_not_let_the_previous_intent_be_skipped() -> None:
    server = _Server()
    reconciler = Reconciler(cast(KubeApi, server), cast(Any, None), OperatorSettings())
    reconciler._apply(MD, routes(stable=100))  # the stable revision takes everything
    server.lose_answer = True
    with pytest.raises(TimeoutError):
        reconciler._apply(MD, routes(stable=50))  # a step: the server took it, we never heard
    reconciler._apply(MD, routes(stable=100))  # then a rollback: everything back to stable
    assert server.objects["wine-routes"]["data"]["stable"] == "100", "the rollback's routes were never sent"
