"""Handles on the test control plane: where it is, and the pinned kubectl bound to it.

Imported by the cluster tier's fixtures (conftest.py) and tests, and by other tiers that need a real
API server (e.g. the operator's tests).
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER_DIR = REPO / "e2e" / "cluster"
CRD_DIR = REPO / "crds"
CHART = REPO / "charts" / "mlrollout"
# Namespace labels: the PodSecurity admission plugin refuses pods that break the "restricted" profile.
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
KUBECTL_TIMEOUT = 120.0
# A cold build compiles Kubernetes, etcd and helm: allow far more than it takes on 2 cores.
UP_TIMEOUT = 75 * 60.0


@dataclass(frozen=True)
class ControlPlane:
    """Where the running control plane and its pinned binaries are."""

    kubeconfig: Path
    bin_dir: Path
    state_dir: Path
    env: Mapping[str, str] = field(repr=False)

    def binary(self, name: str) -> str:
        return str(self.bin_dir / name)


class KubectlError(AssertionError):
    """kubectl exited non-zero where success was expected; carries its output for the report."""


@dataclass(frozen=True)
class Kubectl:
    """The pinned kubectl, bound to the admin kubeconfig."""

    control_plane: ControlPlane

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = KUBECTL_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.control_plane.binary("kubectl"), "--kubeconfig", str(self.control_plane.kubeconfig)]
        cmd += args
        proc = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(self.control_plane.env),
            check=False,
        )
        if check and proc.returncode != 0:
            raise KubectlError(
                f"kubectl {shlex.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def json(self, *args: str, input: str | None = None) -> Any:
        """``kubectl ... -o json`` parsed."""
        return json.loads(self(*args, "-o", "json", input=input).stdout)


@dataclass(frozen=True)
class Helm:
    """The pinned helm binary with its own config/cache dirs and the test kubeconfig."""

    binary: str
    env: Mapping[str, str]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.binary, *args], capture_output=True, text=True, env=dict(self.env), timeout=180, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def template(self, *sets: str, namespace: str = "mlrollout-system", release: str = "mlr") -> list[Any]:
        """`helm template` of the chart with these `--set` values, as parsed documents."""
        args = ["template", release, str(CHART), "--namespace", namespace]
        for s in sets:
            args += ["--set", s]
        return [d for d in yaml.safe_load_all(self(*args).stdout) if d]
