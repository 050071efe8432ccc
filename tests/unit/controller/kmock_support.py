"""KMock's Kubernetes emulator with the few API-server rules the operator relies on."""

from __future__ import annotations

from typing import Any

import aiohttp.web
import kmock


class ApplyingEmulator(kmock.KubernetesEmulator):
    """KMock's emulator plus two rules of the real API server it lacks: applying a missing object creates
    it (server-side apply), and a PUT to `/status` replaces only the status."""

    posted_events: list[dict[str, Any]]

    async def _handle(self, request: Any) -> Any:
        if request.method == kmock.method.POST and request.url.path.endswith("/events"):
            self.__dict__.setdefault("posted_events", []).append(request.data)
        if request.method == kmock.method.PUT and request.url.path.endswith("/status"):
            key = (request.resource, request.namespace, request.name)  # the status subresource: status only
            async with self._lock:
                self._objects[key] = {**self._objects[key].raw, "status": request.data["status"]}
                return aiohttp.web.json_response(self._objects[key].raw)
        if request.action == kmock.action.UPDATE and request.resource is not None and request.name:
            key = (request.resource, request.namespace, request.name)
            if request.method == kmock.method.PATCH and (key not in self._objects or self._objects[key].deleted):
                self._objects[key] = request.data
        return await super()._handle(request)
