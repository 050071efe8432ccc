"""Where route tables come from: a local file (polled) or one Kubernetes ConfigMap (watched).

Both hand every candidate table to the gateway through two callbacks: `apply(table, origin)` for a valid
table and `reject(origin, reason)` for an invalid one, so the gateway alone decides what becomes active.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from ..contract.routes import CONFIGMAP_KEY, RouteTable, RouteTableError
from .routes import parse_route_table, route_table_from_configmap

__all__ = ["Apply", "ConfigMapSource", "FileSource", "Reject"]

log = logging.getLogger("mlrollout.gateway.sources")

Apply = Callable[[RouteTable, str], object]
Reject = Callable[[str, str], None]


class FileSource:
    """Polls a file (default every 0.2 s, so a change applies well within 1 s); re-reads on any change.

    Polling rather than inotify: it sees atomic renames, Kubernetes' projected-volume symlink swaps and
    edits alike, costs one stat() per interval, and needs no extra dependency.
    """

    def __init__(self, path: str, apply: Apply, reject: Reject, interval: float = 0.2) -> None:
        self.path = path
        self._apply = apply
        self._reject = reject
        self._interval = interval
        self._seen: bytes | None = None
        self._stat: tuple[int, int, int] | None = None
        self._error: str | None = None

    def poll(self) -> None:
        """Check the file once; apply or reject its content if it changed."""
        origin = f"file {self.path}"
        try:
            st = os.stat(self.path)
            signature = (st.st_ino, st.st_mtime_ns, st.st_size)
            if signature == self._stat:
                return
            with open(self.path, "rb") as handle:
                content = handle.read()
        except OSError as exc:
            error = f"cannot read: {exc.strerror or exc}"
            if error != self._error:  # log a missing file once, not on every poll
                self._reject(origin, error)
                self._error = error
            self._stat = None
            return
        self._error = None
        self._stat = signature
        digest = hashlib.sha256(content).digest()
        if digest == self._seen:
            return
        self._seen = digest
        try:
            table = parse_route_table(content)
        except RouteTableError as exc:
            self._reject(origin, str(exc))
            return
        self._apply(table, origin)

    async def run(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(self._interval)


def handle_configmap_event(event_type: str, configmap: dict[str, Any], key: str, apply: Apply, reject: Reject) -> None:
    """React to one watch event on the route-table ConfigMap (pure apart from the two callbacks)."""
    name = (configmap.get("metadata") or {}).get("name", "?")
    namespace = (configmap.get("metadata") or {}).get("namespace", "?")
    origin = f"ConfigMap {namespace}/{name}"
    if event_type == "DELETED":
        reject(origin, "the ConfigMap was deleted")
        return
    try:
        table = route_table_from_configmap(configmap, key)
    except RouteTableError as exc:
        reject(origin, str(exc))
        return
    apply(table, origin)


class ConfigMapSource:
    """Watches one named ConfigMap through the Kubernetes API (get/list/watch on that name only).

    The kubernetes client is synchronous, so the watch runs in a daemon thread and hands each event to
    the event loop with call_soon_threadsafe.
    """

    def __init__(
        self,
        name: str,
        namespace: str,
        apply: Apply,
        reject: Reject,
        key: str = CONFIGMAP_KEY,
        kubeconfig: str | None = None,
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.key = key
        self._apply = apply
        self._reject = reject
        self._kubeconfig = kubeconfig
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._thread = threading.Thread(target=self._run, args=(loop,), name="configmap-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        from kubernetes import client, config, watch

        if self._kubeconfig:
            config.load_kube_config(config_file=self._kubeconfig)
        else:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
        api = client.CoreV1Api()
        selector = f"metadata.name={self.name}"

        def deliver(event_type: str, obj: Any) -> None:
            body = api.api_client.sanitize_for_serialization(obj)
            loop.call_soon_threadsafe(handle_configmap_event, event_type, body, self.key, self._apply, self._reject)

        while not self._stop.is_set():
            try:
                listing = api.list_namespaced_config_map(self.namespace, field_selector=selector)
                for item in listing.items:
                    deliver("ADDED", item)
                if not listing.items:
                    log.warning("ConfigMap %s/%s not found yet; waiting for it", self.namespace, self.name)
                version = listing.metadata.resource_version if listing.metadata else None
                stream = watch.Watch().stream(
                    api.list_namespaced_config_map, self.namespace, field_selector=selector,
                    resource_version=version, timeout_seconds=60,
                )  # fmt: skip
                for event in stream:
                    if self._stop.is_set():
                        return
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        deliver(event["type"], event["object"])
            except Exception as exc:  # 410 Gone, API restarts, network: relist after a pause
                if self._stop.is_set():
                    return
                log.warning("watching ConfigMap %s/%s failed (%s); relisting", self.namespace, self.name, exc)
                self._stop.wait(1.0)
