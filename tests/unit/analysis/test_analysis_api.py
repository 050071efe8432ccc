"""The public surface: everything in __all__ exists."""

from __future__ import annotations

import mlrollout.analysis as analysis


def test_all_is_complete() -> None:
    public = {n for n in dir(analysis) if not n.startswith("_")} - {
        "batch", "carry", "cli", "collect", "custom", "drift", "errors", "histogram", "judge", "latency", "prometheus",
        "provider", "quality", "queries", "result", "sequential", "snapshot", "split", "forecast",
    }  # fmt: skip
    assert set(analysis.__all__) == public | {"judge"}
    for name in analysis.__all__:
        assert getattr(analysis, name) is not None
