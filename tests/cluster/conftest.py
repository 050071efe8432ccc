"""Fixtures for the cluster tier: a real control plane built from the pinned Kubernetes release.

- ``control_plane`` (session): reuses a running control plane (``e2e/cluster/status``) or starts one
  with ``e2e/cluster/up``, building the pinned binaries first when the cache is cold (long: progress is
  printed to the terminal). Stops it at the end only if this session started it and
  ``MLROLLOUT_KEEP_CLUSTER`` is not set.
- ``crds`` (session): our CRDs from ``crds/`` installed with ``kubectl apply`` and Established.
- ``kubectl`` (session): a :class:`Kubectl` bound to the admin kubeconfig and the pinned binary.
- ``namespace``: a fresh namespace per test, deleted afterwards (without waiting).
- ``helm`` (session): a :class:`Helm`, the pinned helm with its own config and cache directories.

A missing prerequisite (go, openssl, ...) makes the scripts fail loudly, and with them every test of
the tier: never a skip.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
import yaml
from tests.cluster.kube import CLUSTER_DIR, CRD_DIR, UP_TIMEOUT, ControlPlane, Helm, Kubectl


def _script_env() -> dict[str, str]:
    return {**os.environ, "GOFLAGS": os.environ.get("GOFLAGS", "-p=2")}


def _paths(env: Mapping[str, str]) -> dict[str, str]:
    """KEY=VALUE exports printed by ``e2e/cluster/env``."""
    out = subprocess.run(
        ["bash", str(CLUSTER_DIR / "env")], capture_output=True, text=True, env=dict(env), check=True
    ).stdout
    found = dict(re.findall(r"^export (\w+)=(\S+)$", out, flags=re.MULTILINE))
    return {k: shlex.split(v)[0] for k, v in found.items() if k != "PATH"}


def _run_visible(request: pytest.FixtureRequest, cmd: Sequence[str], env: Mapping[str, str]) -> None:
    """Run a long script with its progress on the terminal despite pytest's output capture."""
    capman = request.config.pluginmanager.getplugin("capturemanager")
    assert capman is not None
    with capman.global_and_fixture_disabled():
        print(f"\n[cluster fixture] running {shlex.join(cmd)}", flush=True)
        subprocess.run(list(cmd), env=dict(env), timeout=UP_TIMEOUT, check=True)


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    env = _script_env()
    running = (
        subprocess.run(
            ["bash", str(CLUSTER_DIR / "status")], capture_output=True, text=True, env=env, check=False
        ).returncode
        == 0
    )
    if not running:
        _run_visible(request, ["bash", str(CLUSTER_DIR / "up")], env)
    paths = _paths(env)
    cp = ControlPlane(
        kubeconfig=Path(paths["KUBECONFIG"]),
        bin_dir=Path(paths["MLROLLOUT_CLUSTER_BIN"]),
        state_dir=Path(paths["MLROLLOUT_STATE"]),
        env={**env, "KUBECONFIG": paths["KUBECONFIG"]},
    )
    try:
        yield cp
    finally:
        if not running and not os.environ.get("MLROLLOUT_KEEP_CLUSTER"):
            subprocess.run(["bash", str(CLUSTER_DIR / "down")], env=env, timeout=120, check=False)


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    return Kubectl(control_plane)


@pytest.fixture(scope="session")
def crds(kubectl: Kubectl) -> list[str]:
    """Install crds/*.yaml with the real client; returns the CRD names, all Established."""
    files = sorted(CRD_DIR.glob("*.yaml"))
    assert files, f"no CRDs in {CRD_DIR}: run `make crds`"
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    names = [str(yaml.safe_load(f.read_text())["metadata"]["name"]) for f in files]
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names))
    return names


def _namespace_name(nodeid: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", nodeid.rsplit("::", 1)[-1].lower()).strip("-")[:40].strip("-")
    return f"t-{base}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kubectl: Kubectl, crds: list[str]) -> Iterator[str]:
    """A fresh namespace for one test; deleted afterwards (the namespace controller finishes it)."""
    name = _namespace_name(request.node.nodeid)
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture(scope="session")
def dry_run_namespace(kubectl: Kubectl, crds: list[str]) -> Iterator[str]:
    """One namespace shared by tests that only send server-side dry runs (nothing is stored)."""
    name = f"t-dry-run-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture(scope="session")
def helm(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    home = tmp_path_factory.mktemp("helm")
    env = {
        **control_plane.env,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    return Helm(control_plane.binary("helm"), env)


TRAFFIC_CRDS = ("httproutes.gateway.networking.k8s.io", "gateways.gateway.networking.k8s.io",
                "gatewayclasses.gateway.networking.k8s.io", "virtualservices.networking.istio.io")  # fmt: skip


@pytest.fixture(scope="session")
def traffic_crds(kubectl: Kubectl) -> list[str]:
    """The official Gateway API and Istio CRD files, downloaded (cached) and installed; returns their paths."""
    out = subprocess.run(
        [str(CLUSTER_DIR / "fetch-traffic-crds")], capture_output=True, text=True, timeout=600, check=True
    ).stdout
    files = out.split()
    assert any("gateway-api@" in f for f in files) and any("istio.io/api@" in f for f in files), files
    for f in files:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", f, timeout=300)
    kubectl("wait", "--for=condition=Established", "--timeout=120s", *(f"crd/{n}" for n in TRAFFIC_CRDS))
    return files
