"""Where judgements come from: Prometheus (production) or recorded files (tests), behind one small protocol.

Prometheus: `collect_snapshot` over the window since the current step started, then `judge`. No URL, an
unreachable server, a failed query: the snapshot carries the error and the verdict is `inconclusive`
(no evidence, no promotion). With a batch window (`ttl`, the reconcile interval by default) the looks
due within it share requests (controller/lookbatch.py), taken ahead of time on a thread of the batcher's
own: the same snapshots, from a few requests per interval. The step's `evidence` (which analysed step
this is, and what earlier steps carried) goes into the snapshot, so the judge holds the whole rollout to
the policy's alpha.

Recorded (`MLROLLOUT_VERDICTS_DIR`, for the cluster tier): the file `<namespace>.<name>.json` holds either
`{"snapshot": {...}}` (judged by the real `judge` with the policy in force; a recorded `evidence` wins) or a
judgement as `mlrollout analyze` prints it. Tests change the file to make the next look say something
else. No file, or one that does not read: inconclusive, saying why.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Protocol

from pydantic import ValidationError

from mlrollout.analysis import AnalysisTarget, PrometheusProvider, Snapshot, collect_snapshot, judge
from mlrollout.analysis.carry import StepEvidence
from mlrollout.analysis.snapshot import SnapshotError, parse_snapshot
from mlrollout.api.analysis import Judgement
from mlrollout.api.common import parse_duration
from mlrollout.api.rolloutpolicy import RolloutPolicySpec
from mlrollout.controller.lookbatch import LookBatcher


class VerdictSource(Protocol):
    """Takes one look at the evidence for a candidate."""

    def look(
        self, target: AnalysisTarget, policy: RolloutPolicySpec, window_seconds: float, evidence: StepEvidence
    ) -> Judgement:
        """The judgement of this look; never raises for missing evidence."""
        ...


class PrometheusVerdicts:
    """Snapshots from Prometheus, judged by the analysis engine."""

    def __init__(self, url: str, batch_ttl: float = 0.0, tick: float | None = None) -> None:
        self.url = url
        self._provider = PrometheusProvider(url) if url else None
        self.batcher = (
            LookBatcher(self._provider, batch_ttl, time.monotonic, tick=tick, wall=time.time)
            if self._provider is not None and batch_ttl > 0
            else None
        )
        if self.batcher is not None:
            self.batcher.start()  # batches are taken on its own thread, ahead of the looks

    def close(self) -> None:
        """Stops the batcher's thread (the operator's cleanup, tests, benches); looks after it go alone."""
        if self.batcher is not None:
            self.batcher.stop()

    def look(
        self, target: AnalysisTarget, policy: RolloutPolicySpec, window_seconds: float, evidence: StepEvidence
    ) -> Judgement:
        metrics = policy.analysis.metrics
        if self._provider is None:
            snapshot = Snapshot.failed("MLROLLOUT_PROMETHEUS_URL is not set", 0)
        elif self.batcher is not None:
            interval = parse_duration(policy.analysis.interval)
            snapshot = self.batcher.snapshot(
                target, window_seconds, interval, custom=metrics.custom or [], quality=metrics.quality.enabled
            )
        else:
            snapshot = collect_snapshot(
                self._provider, target, window_seconds, custom=metrics.custom or [], quality=metrics.quality.enabled
            )
        return judge(dataclasses.replace(snapshot, evidence=evidence), policy)


class RecordedVerdicts:
    """Judgements or snapshots from files a test writes."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def look(
        self, target: AnalysisTarget, policy: RolloutPolicySpec, window_seconds: float, evidence: StepEvidence
    ) -> Judgement:
        path = os.path.join(self.directory, f"{target.namespace}.{target.model_deployment}.json")
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            if isinstance(data, dict) and "snapshot" in data:
                snapshot = parse_snapshot(data["snapshot"])
                if "evidence" not in data["snapshot"]:
                    snapshot = dataclasses.replace(snapshot, evidence=evidence)
                if snapshot.quality_design is None:  # the step's, as the operator's own snapshots carry it
                    snapshot = dataclasses.replace(snapshot, quality_design=target.quality_design)
                return judge(snapshot, policy)
            recorded = Judgement.model_validate(data)
        except (OSError, json.JSONDecodeError, SnapshotError, ValidationError) as exc:
            why = str(exc).splitlines()[0]
            recorded = Judgement(verdict="inconclusive", reason=f"no usable recorded verdict: {why}")
        if recorded.alpha is None:  # the policy's, like a judgement of the real judge
            recorded = recorded.model_copy(update={"alpha": policy.significance.alpha})
        return recorded


def source_from(
    prometheus_url: str, verdicts_dir: str, batch_ttl: float = 0.0, tick: float | None = None
) -> VerdictSource:
    """Recorded judgements when a directory is configured, else Prometheus (looks batched within
    ``batch_ttl`` seconds, taken at the timer's ``tick``; 0: each look alone)."""
    return RecordedVerdicts(verdicts_dir) if verdicts_dir else PrometheusVerdicts(prometheus_url, batch_ttl, tick)
