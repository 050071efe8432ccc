"""``file://`` URIs and plain paths: the file is read where it is, never copied."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from mlrollout_serving.server.sources import Opened, SourceError


class LocalSource:
    def __init__(self, uri: str) -> None:
        parsed = urllib.parse.urlsplit(uri)
        self.uri = uri
        self.path = Path(urllib.parse.unquote(parsed.path)) if parsed.scheme == "file" else Path(uri)

    @property
    def local(self) -> Path | None:
        return self.path

    def open(self, timeout: float) -> Opened:
        try:
            handle = self.path.open("rb")
            size = self.path.stat().st_size
        except OSError as e:
            raise SourceError(f"cannot read model {self.path}: {e.strerror or e}", transient=False) from None
        return Opened(handle, size)
