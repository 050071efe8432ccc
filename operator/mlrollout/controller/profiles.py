"""Reference profiles for input-drift analysis, fetched by the operator when it can reach them.

`http(s)://` profiles are downloaded (bounded size and time) and cached per URI; `file://` and `pvc://`
URIs name files inside the model-server pods, which the operator cannot read: for those the analysis
reports input drift as skipped ("no reference profile") rather than guessing.
"""

from __future__ import annotations

import threading
import urllib.request
from typing import Final

from mlrollout_serving.contract.profile import Profile, ProfileError, loads

MAX_BYTES: Final = 10 * 1024 * 1024
TIMEOUT_SECONDS: Final = 5.0


class ProfileCache:
    """URI -> parsed profile; a failed fetch is retried on the next look, a good one is kept."""

    def __init__(self, max_entries: int = 256) -> None:
        self._cache: dict[str, Profile] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def get(self, uri: str | None) -> Profile | None:
        if not uri or not uri.startswith(("http://", "https://")):
            return None
        with self._lock:
            if uri in self._cache:
                return self._cache[uri]
        profile = fetch(uri)
        if profile is not None:
            with self._lock:
                if len(self._cache) >= self._max:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[uri] = profile
        return profile


def fetch(uri: str) -> Profile | None:
    """The profile at `uri`, or None if it cannot be fetched or is not a valid profile."""
    try:
        with urllib.request.urlopen(uri, timeout=TIMEOUT_SECONDS) as resp:
            data = resp.read(MAX_BYTES + 1)
    except (OSError, ValueError):
        return None
    if len(data) > MAX_BYTES:
        return None
    try:
        return loads(data)
    except ProfileError:
        return None
