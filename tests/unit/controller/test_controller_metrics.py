"""The operator's own series: docs/metrics.md ("Operator") documents exactly the registry's, with their types."""

from __future__ import annotations

from tests.support.metrics_doc import METRICS_DOC, OPERATOR_PREFIX, documented_series, operator_series


def test_docs_list_every_operator_series_with_its_type() -> None:
    rows = documented_series(METRICS_DOC.read_text())
    documented = {name: row.kind for name, row in rows.items() if name.startswith(OPERATOR_PREFIX)}
    assert documented == operator_series()
