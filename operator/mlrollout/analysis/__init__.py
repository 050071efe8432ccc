"""Analysis engine: Prometheus evidence -> anytime-valid statistics -> an explainable verdict.

Pure core: :func:`judge` (snapshot + policy -> ``Judgement``). I/O edge: :func:`collect_snapshot` asks a
:class:`MetricsProvider` (:class:`PrometheusProvider`, or :class:`NullProvider` in tests). The method and
its assumptions are in docs/analysis.md.
"""

from mlrollout.analysis.cli import cli_main
from mlrollout.analysis.collect import AnalysisTarget, collect_snapshot
from mlrollout.analysis.judge import MIN_SAMPLES, judge
from mlrollout.analysis.prometheus import PrometheusProvider
from mlrollout.analysis.provider import Measurement, MetricsProvider, NullProvider, Sample, StaticProvider
from mlrollout.analysis.queries import QueryError
from mlrollout.analysis.snapshot import Snapshot, SnapshotError, parse_snapshot

__all__ = [
    "MIN_SAMPLES",
    "AnalysisTarget",
    "Measurement",
    "MetricsProvider",
    "NullProvider",
    "PrometheusProvider",
    "QueryError",
    "Sample",
    "Snapshot",
    "SnapshotError",
    "StaticProvider",
    "cli_main",
    "collect_snapshot",
    "judge",
    "parse_snapshot",
]
