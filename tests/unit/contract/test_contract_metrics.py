"""The metrics contract: docs/metrics.md documents exactly the contract's series, with their labels."""

from __future__ import annotations

import re
from pathlib import Path

from mlrollout_serving.contract.metrics import IDENTITY_LABELS, SERIES

DOC = Path(__file__).resolve().parents[3] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(mlrollout_\w+)` \| (\w+) \|([^|]*)\|", re.MULTILINE)


def test_docs_list_every_series_with_its_extra_labels() -> None:
    documented = {name: re.findall(r"`(\w+)`", labels) for name, _, labels in ROW.findall(DOC.read_text())}
    assert set(documented) == {s.name for s in SERIES}
    for series in SERIES:
        assert documented[series.name] == list(series.labels), series.name


def test_identity_labels_come_first_and_are_never_repeated() -> None:
    for series in SERIES:
        assert series.label_names[: len(IDENTITY_LABELS)] == list(IDENTITY_LABELS)
        assert len(set(series.label_names)) == len(series.label_names), series.name
        assert series.help.endswith("."), series.name
