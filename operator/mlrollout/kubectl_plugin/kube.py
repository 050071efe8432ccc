"""The plugin's only contact with the cluster: read, patch and watch ModelDeployments.

Uses the user's kubeconfig (KUBECONFIG or ~/.kube/config, or --kubeconfig) and context, like kubectl, so
the API server authenticates and authorizes the human, not the operator.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, Final, cast

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from mlrollout import kubehttp
from mlrollout.api.common import GROUP, VERSION

PLURAL: Final = "modeldeployments"
Obj = dict[str, Any]


class KubeError(Exception):
    """An API call failed in a way the user must see (not found, forbidden, invalid)."""


def _explain(exc: ApiException, what: str) -> KubeError:
    reasons = {401: "unauthorized", 403: "forbidden", 404: "not found", 409: "conflict", 422: "invalid"}
    detail = str(exc.body or exc.reason or "").strip()
    try:
        parsed = json.loads(detail)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("message"):
        detail = str(parsed["message"])
    return KubeError(f"{what}: {reasons.get(int(exc.status or 0), f'HTTP {exc.status}')}: {detail}")


class Cluster:
    """ModelDeployments of one cluster, as the user's kubeconfig sees them."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        try:
            self.api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
            _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        except (config.ConfigException, OSError) as exc:
            raise KubeError(f"cannot load kubeconfig: {exc}") from exc
        chosen = active
        if context is not None:
            contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
            chosen = next((c for c in contexts if c.get("name") == context), active)
        self.default_namespace: str = str(((chosen or {}).get("context") or {}).get("namespace") or "default")
        self.custom = client.CustomObjectsApi(self.api_client)

    def close(self) -> None:
        self.api_client.close()

    def get(self, namespace: str, name: str) -> Obj:
        """The ModelDeployment as stored."""
        try:
            obj = cast(Obj, self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
        except ApiException as exc:
            raise _explain(exc, f"get modeldeployment {namespace}/{name}") from exc
        return obj

    def merge_patch(self, namespace: str, name: str, patch: Obj) -> Obj:
        """A JSON merge patch on the ModelDeployment (metadata only: the plugin never writes spec)."""
        try:
            obj = cast(
                Obj,
                self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, patch, _content_type="application/merge-patch+json"
                ),
            )
        except ApiException as exc:
            raise _explain(exc, f"patch modeldeployment {namespace}/{name}") from exc
        return obj

    def rollout_policies(self) -> list[Obj]:
        """Every RolloutPolicy (cluster-scoped); raises KubeError when the user may not list them."""
        try:
            listed = cast(Obj, self.custom.list_cluster_custom_object(GROUP, VERSION, "rolloutpolicies"))
        except ApiException as exc:
            raise _explain(exc, "list rolloutpolicies") from exc
        return list(listed.get("items") or [])

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        """The namespace's labels (policies select by them); raises KubeError when not allowed.

        A plain GET rather than CoreV1Api, whose generated models take seconds to load.
        """
        response = kubehttp.request(self.api_client, "GET", f"/api/v1/namespaces/{urllib.parse.quote(namespace)}")
        if not response.ok:
            exc = response.error()
            raise _explain(exc, f"get namespace {namespace}") from exc
        ns = cast(Obj, json.loads(response.data))
        labels = (ns.get("metadata") or {}).get("labels") or {}
        return {str(k): str(v) for k, v in labels.items()}

    def changes(self, namespace: str, name: str, timeout: float) -> Iterator[Obj]:
        """The ModelDeployment now, then again at every change, until `timeout` seconds have passed.

        A watch may end early (the server closes it); it is re-opened from the last resourceVersion
        seen, so no change is missed and none is reported twice.
        """
        current = self.get(namespace, name)
        yield current
        version = str((current.get("metadata") or {}).get("resourceVersion", ""))
        for kind, obj in self.events(namespace, version, timeout, name=name):
            if kind == "DELETED":
                raise KubeError(f"modeldeployment {namespace}/{name} was deleted")
            yield obj if kind != "RELISTED" else self.get(namespace, name)

    def list(self, namespace: str | None) -> tuple[list[Obj], str]:
        """Every ModelDeployment of one namespace (None: of all namespaces), and the list's resourceVersion."""
        where = f"in namespace {namespace}" if namespace else "in all namespaces"
        try:
            if namespace:
                listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
            else:
                listed = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        except ApiException as exc:
            raise _explain(exc, f"list modeldeployments {where}") from exc
        listed = cast(Obj, listed)
        return list(listed.get("items") or []), str((listed.get("metadata") or {}).get("resourceVersion", ""))

    def events(
        self, namespace: str | None, version: str, timeout: float, name: str | None = None
    ) -> Iterator[tuple[str, Obj]]:
        """(type, object) of every change to ModelDeployments after `version`, until `timeout` seconds have
        passed: one namespace or all (None), one object (`name`) or all. A watch the server ends is re-opened
        from the last resourceVersion seen; when that is too old (410 Gone) a ("RELISTED", {}) event says the
        caller must read again, and the watch goes on from now."""
        deadline = time.monotonic() + timeout
        where = f"{namespace}/{name or '*'}" if namespace else "in all namespaces"
        while (remaining := deadline - time.monotonic()) > 0:
            stream = watch.Watch()
            scope: list[Any] = [namespace] if namespace else []
            call = self.custom.list_namespaced_custom_object if namespace else self.custom.list_cluster_custom_object
            selector = {"field_selector": f"metadata.name={name}"} if name else {}
            try:
                for event in stream.stream(
                    call,
                    GROUP,
                    VERSION,
                    *scope,
                    PLURAL,
                    resource_version=version,
                    timeout_seconds=max(1, int(remaining)),
                    _request_timeout=remaining + 5,
                    **selector,
                ):
                    obj: Obj = event["object"]
                    version = str((obj.get("metadata") or {}).get("resourceVersion", version))
                    if event["type"] != "BOOKMARK":
                        yield str(event["type"]), obj
                    if time.monotonic() >= deadline:
                        return
            except ApiException as exc:
                if exc.status != 410:
                    raise _explain(exc, f"watch modeldeployments {where}") from exc
                # 410 Gone: our resourceVersion is too old; the caller reads again, we go on from now.
                version = ""
                yield "RELISTED", {}
            except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError):
                pass  # the connection ended before the server closed the watch: re-open it
            finally:
                stream.stop()

    def looks(self, namespace: str, name: str) -> str | None:
        """The operator's per-look history of the current rollout (ConfigMap `<md>-looks`, key `looks.json`);
        None when there is none yet; KubeError when the user may not read it."""
        from mlrollout.rollout import lookhistory

        configmap = lookhistory.configmap_name(name)
        path = f"/api/v1/namespaces/{urllib.parse.quote(namespace)}/configmaps/{urllib.parse.quote(configmap)}"
        response = kubehttp.request(self.api_client, "GET", path)
        if response.status == 404:
            return None
        if not response.ok:
            exc = response.error()
            raise _explain(exc, f"get configmap {namespace}/{configmap}") from exc
        data = (cast(Obj, json.loads(response.data)).get("data")) or {}
        text = data.get(lookhistory.DATA_KEY)
        return str(text) if text is not None else None

    def wait_for(self, namespace: str, name: str, timeout: float, done: Callable[[Obj], bool]) -> Obj | None:
        """The first state of the ModelDeployment for which `done` holds, or None after `timeout`."""
        for obj in self.changes(namespace, name, timeout):
            if done(obj):
                return obj
        return None
