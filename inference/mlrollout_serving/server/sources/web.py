"""``http(s)://`` URIs through the standard library: 4xx other than 408 and 429 is final, the rest is
retried by the download loop."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from mlrollout_serving.contract.process import REGISTRY_URI_FLAG, RegistryEnv, ServerEnv
from mlrollout_serving.server.sources import Opened, SourceError

USER_AGENT = "mlrollout-serve"


class _Refuse(urllib.request.HTTPRedirectHandler):
    """With credentials a redirect is an answer (a final error), never a place to send them to."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_NO_REDIRECTS = urllib.request.build_opener(_Refuse)


def _note(code: int, authorization: str | None) -> str:
    """What a refusal says about the credentials: the only ones an http(s) download sends are a registry's."""
    if code < 400:
        return " (a redirect: not followed with registry credentials)"
    if code == 401 and authorization is None:
        return (
            f" (sent without credentials: MLflow's {RegistryEnv.TOKEN}, or {RegistryEnv.USERNAME} and "
            f"{RegistryEnv.PASSWORD}, go only to URLs under {REGISTRY_URI_FLAG} / {ServerEnv.REGISTRY_URI}; "
            "in a cluster, the ModelDeployment's registry.credentials)"
        )
    if code == 401:
        return " (the registry refused the credentials)"
    if code == 403 and authorization is not None:
        return " (the registry does not allow this to the credentials)"
    return ""


class HttpSource:
    def __init__(self, uri: str, authorization: str | None = None) -> None:
        self.uri = uri
        self._authorization = authorization

    @property
    def local(self) -> Path | None:
        return None

    def open(self, timeout: float) -> Opened:
        headers = {"User-Agent": USER_AGENT}
        if self._authorization is not None:
            headers["Authorization"] = self._authorization
        request = urllib.request.Request(self.uri, headers=headers)
        try:
            if self._authorization is not None:  # urllib would re-send the header wherever a redirect points
                resp = _NO_REDIRECTS.open(request, timeout=timeout)
            else:
                resp = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            final = 300 <= e.code < 500 and e.code not in (408, 429)
            e.close()
            note = _note(e.code, self._authorization)
            raise SourceError(f"HTTP {e.code} {e.reason}{note}", transient=not final) from None
        except (OSError, ValueError) as e:
            raise SourceError(str(getattr(e, "reason", None) or e), transient=True) from None
        declared = resp.headers.get("Content-Length")
        size = int(declared) if declared is not None and declared.isdigit() else None
        return Opened(resp, size)
