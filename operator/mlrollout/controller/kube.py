"""The only module that talks to the Kubernetes API (through the official client's ApiClient).

Generic on purpose: server-side apply and delete work for any namespaced kind from its apiVersion and kind
(the plural by the English rule every kind the operator writes follows: `plural`), so routers may return
HTTPRoutes or VirtualServices without this module knowing them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mlrollout import kubehttp
from mlrollout.api.common import GROUP, VERSION
from mlrollout.controller import naming
from mlrollout.traffic.base import Manifest

MD_PLURAL = "modeldeployments"
LOG_TAIL_LINES = 20
LOG_TAIL_BYTES = 8192
LOG_TIMEOUT = 5.0


def cut_short(text: str, limit: int) -> bool:
    """Whether a log read with `limitBytes=limit` was cut: it reached the limit or ends inside a line (pure)."""
    return len(text.encode()) >= limit or (text != "" and not text.endswith("\n"))


class Conflict(Exception):
    """The object changed since it was read (HTTP 409): read again and decide again."""


class KubeApi(Protocol):
    """What the reconciler needs from the cluster; `Kube` is the real one."""

    def get_model_deployment(self, namespace: str, name: str) -> Manifest | None: ...
    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Manifest | None: ...
    def replace_status(self, obj: Manifest) -> Manifest: ...
    def namespace_labels(self, namespace: str) -> dict[str, str]: ...
    def list_policies(self, plural: str) -> list[Manifest]: ...
    def list_children(self, namespace: str, md: str) -> tuple[list[Manifest], list[Manifest]]: ...
    def list_services(self, namespace: str, md: str) -> list[Manifest]: ...
    def pod_log_tail(self, namespace: str, pod: str, container: str) -> str: ...
    def apply(self, manifest: Manifest, field_manager: str = naming.FIELD_MANAGER) -> Manifest | None: ...
    def create(self, manifest: Manifest) -> bool: ...
    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None: ...
    def delete_labelled(self, api_version: str, kind: str, namespace: str, selector: str) -> None: ...
    def has_crd(self, name: str) -> bool: ...
    def post_event(self, obj: Manifest, type_: str, reason: str, message: str) -> None: ...


def plural(kind: str) -> str:
    """The resource name of a kind: `deployments`, `networkpolicies` (a consonant before y: -ies),
    `gatewayclasses` (after s, x, z, ch, sh: -es)."""
    lower = kind.lower()
    if lower.endswith("y") and lower[-2:-1] not in ("a", "e", "i", "o", "u"):
        return lower[:-1] + "ies"
    if lower.endswith(("s", "x", "z", "ch", "sh")):
        return lower + "es"
    return lower + "s"


def _path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    resource = plural(kind)
    path = f"{base}/namespaces/{namespace}/{resource}" if namespace else f"{base}/{resource}"
    return f"{path}/{name}" if name else path


class Kube:
    """KubeApi on the official client (sync; kopf runs sync handlers in its thread pool)."""

    def __init__(self, api_client: client.ApiClient, crd_ttl: float = 300.0, timeout: float = 30.0) -> None:
        self.api = api_client
        self.timeout = timeout
        self._crd_cache: dict[str, tuple[float, bool]] = {}
        self._crd_ttl = crd_ttl

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        resp = kubehttp.request(
            self.api, method, path, body=body, query=query, content_type=content_type, timeout=self.timeout
        )
        if not resp.ok:
            if resp.status == 409:
                raise Conflict(resp.text()[:300])
            raise resp.error()
        return json.loads(resp.data) if resp.data else None

    def get_model_deployment(self, namespace: str, name: str) -> Manifest | None:
        try:
            obj: Manifest = self._call("GET", _path(f"{GROUP}/{VERSION}", "ModelDeployment", namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Manifest | None:
        """Any object by apiVersion, kind and name (None when it does not exist; 403 raises)."""
        try:
            obj: Manifest = self._call("GET", _path(api_version, kind, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def replace_status(self, obj: Manifest) -> Manifest:
        meta = obj["metadata"]
        path = _path(f"{GROUP}/{VERSION}", "ModelDeployment", meta["namespace"], meta["name"]) + "/status"
        out: Manifest = self._call("PUT", path, body=obj)
        return out

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        ns = self._call("GET", f"/api/v1/namespaces/{namespace}")
        return dict((ns.get("metadata") or {}).get("labels") or {})

    def list_policies(self, plural: str) -> list[Manifest]:
        data = self._call("GET", f"/apis/{GROUP}/{VERSION}/{plural}")
        return list(data.get("items") or [])

    def list_children(self, namespace: str, md: str) -> tuple[list[Manifest], list[Manifest]]:
        query = [("labelSelector", naming.child_selector(md))]
        deps = self._call("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments", query=query)
        pods = self._call("GET", f"/api/v1/namespaces/{namespace}/pods", query=query)
        return list(deps.get("items") or []), list(pods.get("items") or [])

    def list_services(self, namespace: str, md: str) -> list[Manifest]:
        """The ModelDeployment's Services (one label-selected list): a pass sees one deleted by someone else
        and applies it again at once, where the memo of applies would wait for its resync."""
        query = [("labelSelector", naming.child_selector(md))]
        return list(self._call("GET", f"/api/v1/namespaces/{namespace}/services", query=query).get("items") or [])

    def pod_log_tail(self, namespace: str, pod: str, container: str) -> str:
        """The last LOG_TAIL_LINES lines of a container's log, at most LOG_TAIL_BYTES (both bounded by the
        API server, so a chatty pod costs the same as a quiet one), with a short timeout: the log is only
        the start-up progress for status, never worth holding a pass up. `limitBytes` keeps the *start* of
        the tail (the API reference: it "may not display a complete final line"), so a tail it cut has lost
        its newest lines: it is asked again with a quarter of the lines, down to the newest one (at most
        three reads, only for long lines)."""
        lines = LOG_TAIL_LINES
        while True:
            text = self._log_tail(namespace, pod, container, lines)
            if lines == 1 or not cut_short(text, LOG_TAIL_BYTES):
                return text
            lines = max(1, lines // 4)

    def _log_tail(self, namespace: str, pod: str, container: str, lines: int) -> str:
        query = [("container", container), ("tailLines", str(lines)), ("limitBytes", str(LOG_TAIL_BYTES))]
        path = f"/api/v1/namespaces/{namespace}/pods/{pod}/log"
        resp = kubehttp.request(self.api, "GET", path, query=query, timeout=LOG_TIMEOUT)
        if not resp.ok:
            raise resp.error()
        return resp.text()

    def apply(self, manifest: Manifest, field_manager: str = naming.FIELD_MANAGER) -> Manifest | None:
        """Server-side apply; the object as the server stored it (its generation tells later drift)."""
        meta = manifest["metadata"]
        path = _path(manifest["apiVersion"], manifest["kind"], meta.get("namespace"), meta["name"])
        query = [("fieldManager", field_manager), ("force", "true")]
        out = self._call("PATCH", path, body=manifest, query=query, content_type="application/apply-patch+yaml")
        return out if isinstance(out, dict) else None

    def create(self, manifest: Manifest) -> bool:
        """Create the object unless one of its name exists (then False, and the existing one is untouched)."""
        meta = manifest["metadata"]
        path = _path(manifest["apiVersion"], manifest["kind"], meta.get("namespace"))
        try:
            self._call("POST", path, body=manifest, query=[("fieldManager", naming.FIELD_MANAGER)])
        except Conflict:
            return False
        return True

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            body = {"propagationPolicy": "Background"}
            self._call("DELETE", _path(api_version, kind, namespace, name), body=body)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def delete_labelled(self, api_version: str, kind: str, namespace: str, selector: str) -> None:
        """Every object of a kind in a namespace that the label selector matches, in one call (none: a no-op)."""
        body = {"propagationPolicy": "Background"}
        query = [("labelSelector", selector)]
        self._call("DELETE", _path(api_version, kind, namespace), body=body, query=query)

    def has_crd(self, name: str) -> bool:
        cached = self._crd_cache.get(name)
        if cached is not None and time.monotonic() - cached[0] < self._crd_ttl:
            return cached[1]
        try:
            self._call("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            found = True
        except ApiException as exc:
            if exc.status not in (403, 404):
                raise
            found = False
        self._crd_cache[name] = (time.monotonic(), found)
        return found

    def post_event(self, obj: Manifest, type_: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", f"{GROUP}/{VERSION}"),
                "kind": obj.get("kind", "ModelDeployment"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason[:128],
            "message": message[:1024],
            "source": {"component": "mlrollout-operator"},
            "reportingComponent": "mlrollout.io/operator",
            "reportingInstance": "mlrollout-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._call("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=event)


def crd_name(api_version: str, kind: str) -> str:
    """`<plural>.<group>` of a kind, as its CRD is named."""
    return f"{plural(kind)}.{api_version.split('/')[0]}"


def api_error_message(exc: BaseException) -> str:
    """One line from an ApiException's JSON body (the server's own words)."""
    if isinstance(exc, ApiException) and exc.body:
        try:
            body: Mapping[str, Any] = json.loads(exc.body)
            return f"{exc.status}: {body.get('message', exc.reason)}"
        except (TypeError, ValueError):
            pass
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
