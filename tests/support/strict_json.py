"""JSON parsed strictly for tests of what a gateway writes into bodies."""

from __future__ import annotations

import json
from typing import Any


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate members {keys}"
    return dict(pairs)


def strict_loads(body: bytes) -> Any:
    """``body`` parsed, failing on an object that names a member twice (parsers disagree on which one wins,
    so a client could read the upstream's member where we meant ours)."""
    return json.loads(body, object_pairs_hook=_unique)
