"""The ConfigMap route-table source through the real `kubernetes` client against KMock's Kubernetes
emulator (an in-memory API server over HTTP): initial list, watch events, an invalid table rejected.

The emulator does not implement field selectors or resource versions; RBAC and those semantics are for
the cluster tier against a real API server.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest
from kubernetes import client
from tests.component.gateway.gateway_helpers import BODY, INFER, Proc, RouteFile, gateway, request, table
from tests.support.waiting import wait_for

pytestmark = pytest.mark.component

NS = "shop"


@pytest.fixture
def api_server() -> Iterator[str]:
    """A KMock Kubernetes emulator served on a loopback port from a background event loop."""
    started = threading.Event()
    stop: list[asyncio.Event] = []
    url: list[str] = []

    async def serve() -> None:
        async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator):
            url.append(str(emulator.url).rstrip("/"))
            stop.append(asyncio.Event())
            started.set()
            await stop[0].wait()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(30), "the emulator did not start"
    try:
        yield url[0]
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(30)
        loop.close()


def _kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "gateway", "user": {}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "gateway", "namespace": NS}}],
        "current-context": "kmock",
    }
    path.write_text(json.dumps(config))
    return path


def _core(server: str) -> client.CoreV1Api:
    cfg = client.Configuration()
    cfg.host = server
    return client.CoreV1Api(client.ApiClient(cfg))


def _configmap(data: str) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name="iris-routes", namespace=NS),
                              data={"routes.yaml": data})  # fmt: skip


def _patch(data: str) -> dict[str, Any]:
    """A merge patch (the emulator implements PATCH, not PUT)."""
    return {"data": {"routes.yaml": data}}


def _yaml(t: dict[str, Any]) -> str:
    return json.dumps(t)  # JSON is YAML


def test_configmap_source_lists_watches_and_rejects(tmp_path: Path, api_server: str, up_a: Proc, up_b: Proc) -> None:
    core = _core(api_server)
    core.create_namespaced_config_map(NS, _configmap(_yaml(table(1, up_a.url, up_b.url, 0))))
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", api_server)
    unused = RouteFile(tmp_path)  # the gateway helper wants a file; the ConfigMap flags replace it
    extra = ("--routes-configmap", "iris-routes", "--kubeconfig", str(kubeconfig))
    with gateway(unused, *extra, file_source=False, namespace=NS) as gw:
        first = request(gw.url + INFER, BODY)
        assert (first.version, first.track) == (1, "stable")
        assert f"ConfigMap {NS}/iris-routes" in gw.output()

        core.patch_namespaced_config_map("iris-routes", NS, _patch(_yaml(table(2, up_a.url, up_b.url, 100))))
        wait_for(lambda: request(gw.url + INFER, BODY).version == 2, what="version 2 from the watch")
        assert request(gw.url + INFER, BODY).track == "candidate"

        core.patch_namespaced_config_map("iris-routes", NS, _patch("version: 3\ntracks: {}\n"))
        wait_for(lambda: "rejected, keeping version 2" in gw.output(), what="the rejection")
        assert request(gw.url + INFER, BODY).version == 2
        assert "relisting" not in gw.output()  # the changes came through the watch, not a relist
