"""The metrics contract: docs/metrics.md documents exactly the contract's series, with their labels."""

from __future__ import annotations

from tests.support.metrics_doc import METRICS_DOC, OPERATOR_PREFIX, documented_series

from mlrollout_serving.contract.metrics import IDENTITY_LABELS, SERIES


def test_docs_list_every_series_with_its_extra_labels() -> None:
    rows = documented_series(METRICS_DOC.read_text())
    documented = {name: row.labels for name, row in rows.items() if not name.startswith(OPERATOR_PREFIX)}
    assert set(documented) == {s.name for s in SERIES}
    for series in SERIES:
        assert documented[series.name] == series.labels, series.name


def test_identity_labels_come_first_and_are_never_repeated() -> None:
    for series in SERIES:
        assert series.label_names[: len(IDENTITY_LABELS)] == list(IDENTITY_LABELS)
        assert len(set(series.label_names)) == len(series.label_names), series.name
        assert series.help.endswith("."), series.name
