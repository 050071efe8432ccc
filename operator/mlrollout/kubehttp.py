"""One raw request to the Kubernetes API through the official client's connection pool and credentials.

The operator and the plugin speak to arbitrary paths (server-side apply of any kind, the status
subresource) with JSON bodies; this goes through what every version of the official client has in common
(its urllib3 pool, TLS settings and ``Configuration.auth_settings()``), not the request builders whose
signatures changed between client versions (37 replaced ``call_api``'s; mlrollout runs on 36 beside
botocore, see pyproject.toml).
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    data: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def error(self) -> ApiException:
        """The client's own exception for a failed call, its body the server's words."""
        return api_exception(self.status, self.reason, self.text())


def api_exception(status: int, reason: str, body: str) -> ApiException:
    """An ApiException carrying ``body`` (client 36's constructor takes no body, 37's does)."""
    exc = ApiException(status=status, reason=reason)
    exc.body = body
    return exc


def request(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    body: Any = None,
    query: list[tuple[str, str]] | None = None,
    content_type: str = "application/json",
    timeout: float = 30.0,
) -> Response:
    """``method path?query`` with ``body`` as JSON (also for apply patches: JSON is YAML), authenticated as
    the client is (bearer token, refreshed by the client's hook; client certificates through the pool)."""
    cfg = api.configuration
    url = cfg.host.rstrip("/") + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
    headers = {"Accept": "application/json", "Content-Type": content_type, "User-Agent": api.user_agent}
    for setting in cfg.auth_settings().values():
        if setting.get("in") == "header" and setting.get("value"):
            headers[setting["key"]] = setting["value"]
    payload = None if body is None else json.dumps(body).encode()
    resp = api.rest_client.pool_manager.request(
        method, url, body=payload, headers=headers, timeout=timeout, preload_content=True
    )
    return Response(int(resp.status), str(resp.reason or ""), bytes(resp.data or b""))
