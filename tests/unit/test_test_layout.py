"""Every test module's file name is unique across tests/ and e2e/: pytest's default import mode imports a
test file by its base name, so a second file of the same name (in another tier) stops the whole run at
collection ("import file mismatch") - which is how a CI run of 4 Dec failed."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_test_module_names_are_unique() -> None:
    places: defaultdict[str, list[str]] = defaultdict(list)
    for folder in ("tests", "e2e"):
        for path in (ROOT / folder).rglob("test_*.py"):
            if ".venv" not in path.parts:
                places[path.name].append(str(path.relative_to(ROOT)))
    assert len(places) > 100  # the tiers were found
    twice = {name: paths for name, paths in places.items() if len(paths) > 1}
    assert twice == {}
