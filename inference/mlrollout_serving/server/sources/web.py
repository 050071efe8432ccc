"""``http(s)://`` URIs through the standard library: 4xx other than 408 and 429 is final, the rest is
retried by the download loop."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from mlrollout_serving.server.sources import Opened, SourceError

USER_AGENT = "mlrollout-serve"


class HttpSource:
    def __init__(self, uri: str) -> None:
        self.uri = uri

    @property
    def local(self) -> Path | None:
        return None

    def open(self, timeout: float) -> Opened:
        request = urllib.request.Request(self.uri, headers={"User-Agent": USER_AGENT})
        try:
            resp = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            final = 400 <= e.code < 500 and e.code not in (408, 429)
            e.close()
            raise SourceError(f"HTTP {e.code} {e.reason}", transient=not final) from None
        except (OSError, ValueError) as e:
            raise SourceError(str(getattr(e, "reason", None) or e), transient=True) from None
        declared = resp.headers.get("Content-Length")
        size = int(declared) if declared is not None and declared.isdigit() else None
        return Opened(resp, size)
