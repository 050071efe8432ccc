"""Where verdicts come from: Prometheus (production) or recorded files (tests), behind one small protocol.

Prometheus: `collect_snapshot` over the window since the current step started, then `judge`. No URL, an
unreachable server, a failed query: the snapshot carries the error and the verdict is `inconclusive`
(no evidence, no promotion). `evidence` (which analysed step this is, and what earlier steps carried) goes
into the snapshot, so the judge holds the whole rollout to the policy's alpha.

Recorded (`MLROLLOUT_VERDICTS_DIR`, for the cluster tier): the file `<namespace>.<name>.json` holds either
`{"snapshot": {...}}` (judged by the real `judge` with the policy in force) or a judge result
`{"verdict": ..., "reason": ..., "metrics": [...], "samples": {...}}`. Tests change the file to make the
next look say something else. No file: inconclusive.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from mlrollout.analysis import AnalysisTarget, PrometheusProvider, collect_snapshot, judge
from mlrollout.api.rolloutpolicy import RolloutPolicySpec
from mlrollout.rollout.facts import Verdict

JudgeResult = Mapping[str, Any]
Evidence = Mapping[str, Any] | None  # the snapshot's "evidence" object (docs/analysis.md)
_VERDICTS = ("promote", "continue", "rollback", "inconclusive")


class VerdictSource(Protocol):
    """Takes one look at the evidence for a candidate."""

    def look(
        self, target: AnalysisTarget, policy: RolloutPolicySpec, window_seconds: float, evidence: Evidence = None
    ) -> JudgeResult:
        """A judge result (see `mlrollout.analysis.judge`); never raises for missing evidence."""
        ...


class PrometheusVerdicts:
    """Snapshots from Prometheus, judged by the analysis engine."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._provider = PrometheusProvider(url) if url else None

    def look(
        self, target: AnalysisTarget, policy: RolloutPolicySpec, window_seconds: float, evidence: Evidence = None
    ) -> JudgeResult:
        if self._provider is None:
            snapshot: dict[str, Any] = {"error": "MLROLLOUT_PROMETHEUS_URL is not set", "elapsed_seconds": 0}
        else:
            custom = policy.analysis.metrics.custom or []
            snapshot = collect_snapshot(self._provider, target, window_seconds, custom=custom)
        return dict(judge(_with(snapshot, evidence), policy))


class RecordedVerdicts:
    """Verdicts or snapshots from files a test writes."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def look(
        self, target: AnalysisTarget, policy: RolloutPolicySpec, window_seconds: float, evidence: Evidence = None
    ) -> JudgeResult:
        path = os.path.join(self.directory, f"{target.namespace}.{target.model_deployment}.json")
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, json.JSONDecodeError) as exc:
            return {"verdict": "inconclusive", "reason": f"no recorded verdict ({exc})", "metrics": []}
        if isinstance(data, dict) and "snapshot" in data:
            return dict(judge(_with(data["snapshot"], evidence), policy))
        return data if isinstance(data, dict) else {"verdict": "inconclusive", "reason": "bad file", "metrics": []}


def _with(snapshot: Any, evidence: Evidence) -> Any:
    """The snapshot with the rollout's evidence context (a recorded snapshot's own context wins)."""
    if evidence is None or not isinstance(snapshot, Mapping) or "evidence" in snapshot:
        return snapshot
    return {**snapshot, "evidence": dict(evidence)}


def source_from(prometheus_url: str, verdicts_dir: str) -> VerdictSource:
    """Recorded verdicts when a directory is configured, else Prometheus."""
    return RecordedVerdicts(verdicts_dir) if verdicts_dir else PrometheusVerdicts(prometheus_url)


def to_fact(result: JudgeResult, candidate_revision: str, now: datetime, alpha: float | None = None) -> Verdict:
    """A judge result as the state machine's Verdict fact (an unknown verdict counts as inconclusive);
    `alpha` is the significance level the look was judged at."""
    name = result.get("verdict")
    verdict = name if name in _VERDICTS else "inconclusive"
    samples = result.get("samples") or {}
    metrics = tuple(m for m in result.get("metrics") or [] if isinstance(m, Mapping))
    requests = samples.get("candidate") if isinstance(samples, Mapping) else None
    if not isinstance(requests, int):
        requests = max((int((m.get("samples") or {}).get("candidate") or 0) for m in metrics), default=0)
    carried = result.get("evidence")
    evidence = {
        str(test): float(value)
        for test, value in (carried.items() if isinstance(carried, Mapping) else ())
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    }
    return Verdict(
        verdict=verdict,  # type: ignore[arg-type]
        reason=str(result.get("reason") or "")[:1024],
        time=now,
        candidate_revision=candidate_revision,
        candidate_requests=requests,
        alpha=alpha,
        metrics=metrics,
        evidence=evidence,
    )
