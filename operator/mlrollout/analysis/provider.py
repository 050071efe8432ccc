"""The metrics provider seam: one method, answers as values.

Decision code never sees an exception from a backend: a failed query is a :class:`Measurement` with
``error`` set, an empty result is one with no samples. (Argo Rollouts' ``MarkMeasurementError`` idea.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Measurement", "MetricsProvider", "NullProvider", "Sample", "StaticProvider"]


@dataclass(frozen=True)
class Sample:
    """One series of an instant-vector result."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Measurement:
    """The answer to one query: samples, or the error that prevented them."""

    samples: tuple[Sample, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def no_data(self) -> bool:
        return self.error is None and not self.samples

    def scalar(self) -> float:
        """Sum of all sample values (0 when there is no data)."""
        return sum(s.value for s in self.samples)


class MetricsProvider(Protocol):
    """Anything that answers PromQL instant queries at a time (``None`` = now)."""

    def query(self, promql: str, at: float | None = None) -> Measurement: ...


@dataclass
class NullProvider:
    """Knows nothing: every query has no data (the judge then says ``inconclusive``)."""

    def query(self, promql: str, at: float | None = None) -> Measurement:
        return Measurement()


@dataclass
class StaticProvider:
    """Answers from a function or a map of query to measurement; for tests of the gatherer."""

    answers: Mapping[str, Measurement] | Callable[[str], Measurement] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)

    def query(self, promql: str, at: float | None = None) -> Measurement:
        self.queries.append(promql)
        if callable(self.answers):
            return self.answers(promql)
        return self.answers.get(promql, Measurement())
