"""The gateway's ConfigMap route-table source against a real API server, under the documented Role.

The gateway runs as a ServiceAccount that may only get/list/watch its one ConfigMap (docs/gateway.md),
with a token from `kubectl create token`: the initial list, changes arriving through the watch, an invalid
table rejected while the previous one stays, and a deleted ConfigMap are exercised; the Role is checked
to grant nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tests.cluster.kube import REPO, ControlPlane, Kubectl
from tests.support.procs import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

FAKE_UPSTREAM = REPO / "tests" / "component" / "gateway" / "fake_upstream.py"
CM = "iris-routes"
SA = "iris-gateway"

RBAC = """
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {sa}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: iris-gateway-routes}}
rules:
  - apiGroups: [""]
    resources: [configmaps]
    resourceNames: [{cm}]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: iris-gateway-routes}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: iris-gateway-routes}}
subjects: [{{kind: ServiceAccount, name: {sa}, namespace: {ns}}}]
"""


def _get(url: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}
    except OSError:
        return 0, {}


class _Proc:
    def __init__(self, cmd: list[str]) -> None:
        fd, name = tempfile.mkstemp(prefix="cluster-gateway-", suffix=".log")
        self.log = Path(name)
        with os.fdopen(fd, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.unlink(missing_ok=True)


@pytest.fixture
def upstream() -> Iterator[str]:
    port = free_port()
    proc = _Proc([sys.executable, str(FAKE_UPSTREAM), str(port), "up"])
    try:
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/count")[0] == 200, timeout=60, what="the fake upstream")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def _sa_kubeconfig(cp: ControlPlane, kubectl: Kubectl, namespace: str, path: Path) -> Path:
    """A kubeconfig for the ServiceAccount: the admin's cluster entry, the SA's token as the user."""
    token = kubectl("create", "token", SA, "-n", namespace, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cp.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": SA, "user": {"token": token}}],
        "contexts": [
            {"name": SA, "context": {"cluster": admin["clusters"][0]["name"], "user": SA, "namespace": namespace}}
        ],
        "current-context": SA,
    }
    path.write_text(json.dumps(config))
    return path


def _table(version: int, upstream: str) -> str:
    return json.dumps({"version": version, "tracks": {"stable": {"upstream": upstream, "weight": 100}}})


def _configmap(namespace: str, routes: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CM, "namespace": namespace},
                       "data": {"routes.yaml": routes}})  # fmt: skip


def test_gateway_follows_its_configmap_with_minimal_rbac(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str, upstream: str, tmp_path: Path
) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=RBAC.format(sa=SA, cm=CM, ns=namespace))
    who = f"--as=system:serviceaccount:{namespace}:{SA}"
    for verb in ("get", "list", "watch"):
        assert kubectl("auth", "can-i", verb, f"configmaps/{CM}", "-n", namespace, who, check=False).returncode == 0
    for denied in (("get", "configmaps/other"), ("update", f"configmaps/{CM}"), ("list", "secrets")):
        assert kubectl("auth", "can-i", *denied, "-n", namespace, who, check=False).returncode != 0, denied

    kubectl("apply", "-f", "-", input=_configmap(namespace, _table(1, upstream)))
    kubeconfig = _sa_kubeconfig(control_plane, kubectl, namespace, tmp_path / "kubeconfig")
    port = free_port()
    gateway = _Proc([sys.executable, "-m", "mlrollout_serving.gateway", "--host", "127.0.0.1", "--port", str(port),
                     "--routes-configmap", CM, "--namespace", namespace, "--model-deployment", "iris",
                     "--kubeconfig", str(kubeconfig)])  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def version() -> str:
        status, headers = _get(url + "/v2/models/iris")
        return headers.get("x-mlrollout-route-version", "") if status == 200 else ""

    try:
        wait_for(lambda: _get(url + "/v2/health/ready")[0] == 200, timeout=60, what="the gateway to load its table")
        assert version() == "1"

        kubectl("apply", "-f", "-", input=_configmap(namespace, _table(2, upstream)))
        wait_for(lambda: version() == "2", timeout=20, what="version 2 through the watch")

        kubectl("apply", "-f", "-", input=_configmap(namespace, "version: 3\ntracks: {}\n"))
        wait_for(lambda: "rejected, keeping version 2" in gateway.output(), timeout=20, what="the rejection")
        assert version() == "2"

        kubectl("delete", "configmap", CM, "-n", namespace)
        wait_for(lambda: "the ConfigMap was deleted" in gateway.output(), timeout=20, what="the deletion")
        assert version() == "2"

        kubectl("apply", "-f", "-", input=_configmap(namespace, _table(4, upstream)))
        wait_for(lambda: version() == "4", timeout=20, what="version 4 after re-creation")
        assert "Forbidden" not in gateway.output(), gateway.output()
    finally:
        output = gateway.output()
        gateway.stop()
        print(output[-3000:])
