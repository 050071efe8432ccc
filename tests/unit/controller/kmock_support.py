"""KMock's Kubernetes emulator with the few API-server rules the operator relies on."""

from __future__ import annotations

from typing import Any

import aiohttp.web
import kmock


class ApplyingEmulator(kmock.KubernetesEmulator):
    """KMock's emulator plus three rules of the real API server it lacks: applying a missing object creates
    it (server-side apply), a PUT to `/status` replaces only the status, and a DELETE of a collection with
    a label selector (equality terms) deletes the matching objects."""

    posted_events: list[dict[str, Any]]

    async def _handle(self, request: Any) -> Any:
        if request.method == kmock.method.POST and request.url.path.endswith("/events"):
            self.__dict__.setdefault("posted_events", []).append(request.data)
        if request.method == kmock.method.PUT and request.url.path.endswith("/status"):
            key = (request.resource, request.namespace, request.name)  # the status subresource: status only
            async with self._lock:
                self._objects[key] = {**self._objects[key].raw, "status": request.data["status"]}
                return aiohttp.web.json_response(self._objects[key].raw)
        if request.method == kmock.method.DELETE and request.resource is not None and not request.name:
            wanted = dict(term.split("=", 1) for term in request.params.get("labelSelector", "").split(",") if term)
            deleted = []
            async with self._lock:
                for key in list(self._objects):
                    obj = self._objects[key]
                    labels = obj.get("metadata", {}).get("labels") or {}
                    same_place = key[:2] == (request.resource, request.namespace)
                    if same_place and not obj.deleted and all(labels.get(k) == v for k, v in wanted.items()):
                        deleted.append(obj.raw)
                        obj.delete()
            return aiohttp.web.json_response({"kind": "List", "apiVersion": "v1", "items": deleted})
        if request.action == kmock.action.UPDATE and request.resource is not None and request.name:
            key = (request.resource, request.namespace, request.name)
            if request.method == kmock.method.PATCH and (key not in self._objects or self._objects[key].deleted):
                self._objects[key] = request.data
        return await super()._handle(request)


def declare_operator_resources(emulator: Any) -> None:
    """The resources the operator lists, declared to the emulator (it answers a listing only of those)."""
    emulator.resources["mlrollout.io/v1alpha1/rolloutpolicies"].kind = "RolloutPolicy"
    emulator.resources["mlrollout.io/v1alpha1/fallbackpolicies"].kind = "FallbackPolicy"
    emulator.resources["v1/pods"].kind = "Pod"
    emulator.resources["v1/services"].kind = "Service"
    emulator.resources["apps/v1/deployments"].kind = "Deployment"
