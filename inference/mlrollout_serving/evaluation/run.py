"""One evaluation, from a request to a report: fetch and verify, stream the holdout through both models,
compare, decide. The same function runs in the Job and behind ``mlrollout evaluate``."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from mlrollout_serving.contract.evaluation import (
    CHECK_NAME_MAX,
    REASON_MAX,
    Check,
    EvaluationReport,
    EvaluationRequest,
)
from mlrollout_serving.evaluation import compare, dataset, fetching
from mlrollout_serving.evaluation.errors import BadInput
from mlrollout_serving.evaluation.metrics import METRICS, Metric, Rows, Settings, check_labels
from mlrollout_serving.evaluation.scoring import Scorer, check_features
from mlrollout_serving.evaluation.stats import bonferroni

log = logging.getLogger(__name__)

MIN_SLICE_ROWS: Final = 20
MAX_SLICE_VALUES: Final = 50


def evaluate(
    request: EvaluationRequest,
    work_dir: Path | None = None,
    chunk_rows: int = dataset.CHUNK_ROWS,
    clock: Callable[[], float] = time.monotonic,
    authorize: Callable[[str], str | None] = lambda _: None,
    whole_file_max_bytes: int = dataset.WHOLE_FILE_MAX_BYTES,
) -> EvaluationReport:
    """The report for ``request``; unusable inputs give an inconclusive report whose reason names them.
    ``authorize``: the ``Authorization`` header a download of a URL sends (a registry's credentials, by the
    model server's rule ``contract.process.registry_header``), None for none. ``chunk_rows`` and
    ``whole_file_max_bytes``: how the holdout is read (:func:`dataset.open_holdout`); the report is the same."""
    started = clock()
    try:
        uris = [(ref.uri, authorize(ref.uri)) for ref in (request.stable, request.candidate, request.dataset)]
        if work_dir is None and not fetching.all_local(uris):
            import tempfile  # a download's directory; local files are read where they lie and need none

            with tempfile.TemporaryDirectory(prefix="mlrollout-evaluate-") as tmp:
                report = _evaluate(request, Path(tmp), chunk_rows, authorize, whole_file_max_bytes)
        else:
            report = _evaluate(request, work_dir, chunk_rows, authorize, whole_file_max_bytes)
    except BadInput as e:
        log.error("bad input: %s", e)
        reason = capped(f"bad input: {e}")  # (a value a message quotes is cut already)
        report = EvaluationReport(verdict="inconclusive", reason=reason, problem="badInput", metric=request.metric)
    return dataclasses.replace(report, seconds=round(clock() - started, 3))


def capped(reason: str) -> str:
    """``reason`` within a report's :data:`REASON_MAX` characters (cut, ``...`` at the end)."""
    return reason if len(reason) <= REASON_MAX else reason[: REASON_MAX - 3] + "..."


class _Columns:
    """The per-row values of the holdout, gathered chunk by chunk in the metric's compact form (a few bytes a
    row: :meth:`Metric.keep`), and each slice column as one-byte codes."""

    def __init__(self, slices: tuple[str, ...]) -> None:
        self.parts: list[list[Any]] = []  # one list of chunks per column
        self.slice_codes: dict[str, list[npt.NDArray[np.int8]]] = {s: [] for s in slices}
        self.slice_values: dict[str, dict[str, int]] = {s: {} for s in slices}

    def add(self, values: tuple[Any, ...], slices: dict[str, npt.NDArray[np.str_]]) -> None:
        if not self.parts:
            self.parts = [[] for _ in values]
        for column, part in zip(self.parts, values, strict=True):
            column.append(part)
        for name, texts in slices.items():
            known = self.slice_values[name]
            values_here, first, inverse = np.unique(texts, return_index=True, return_inverse=True)
            listed = values_here.tolist()
            for value in (listed[i] for i in np.argsort(first)):  # in the order they appear (not sorted):
                if value not in known:  # the report's order of slices does not depend on the chunks
                    if len(known) >= MAX_SLICE_VALUES:
                        raise BadInput(
                            f"slice column {name!r} has more than {MAX_SLICE_VALUES} values: slice by a "
                            "categorical column (a segment, a region, a device), not an identifier"
                        )
                    known[value] = len(known)
            lookup = np.array([known[v] for v in listed], dtype=np.int8)
            self.slice_codes[name].append(lookup[inverse.reshape(-1)])

    def rows(self, metric: Metric) -> Rows:
        """The whole holdout, each column concatenated and its chunks let go before the next (the peak is the
        columns plus one column, not twice the columns)."""
        whole = []
        while self.parts:
            whole.append(np.concatenate(self.parts.pop(0)))
        return metric.rows(tuple(whole))

    def slice_index(self) -> list[tuple[str, npt.NDArray[np.intp]]]:
        """Each slice value's rows, in the order the values first appeared."""
        out = []
        for name, parts in self.slice_codes.items():
            codes = np.concatenate(parts)
            for value, code in self.slice_values[name].items():
                out.append((slice_check_name(name, value), np.flatnonzero(codes == code)))
        return out


def slice_check_name(column: str, value: str) -> str:
    """A slice's check name, ``column=value``, within a check name's :data:`CHECK_NAME_MAX` characters: a
    longer value (a quoted one may span lines) shows its first characters, then ``…`` and the first 12 hex
    digits of its sha256, so two long values never share a name (the column's name holds at most 256)."""
    name = f"{column}={value}"
    if len(name) <= CHECK_NAME_MAX:
        return name
    tail = f"… #{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"
    return f"{column}={value[: CHECK_NAME_MAX - len(column) - 1 - len(tail)]}{tail}"


def _evaluate(
    request: EvaluationRequest,
    work_dir: Path | None,
    chunk_rows: int,
    authorize: Callable[[str], str | None],
    whole_file_max_bytes: int,
) -> EvaluationReport:
    stable, candidate, ds = request.stable, request.candidate, request.dataset
    holdout_fetched = fetching.fetch_dataset_early(ds.uri, ds.sha256, work_dir, ds.format, authorize(ds.uri))
    stable_model = fetching.load_model("stable", stable.uri, stable.sha256, work_dir, authorize(stable.uri))
    candidate_model = fetching.load_model(
        "candidate", candidate.uri, candidate.sha256, work_dir, authorize(candidate.uri)
    )
    path, digest = holdout_fetched()
    log.info("scoring %s (sha256 %s) with stable %s and candidate %s", ds.uri, digest, request.stable.uri,
             request.candidate.uri)  # fmt: skip
    columns = _Columns(request.slices)
    with dataset.open_holdout(path, ds.format, ds.label, request.slices, chunk_rows, whole_file_max_bytes) as holdout:
        width = len(holdout.feature_names)
        scorers = (Scorer("stable", stable_model, request.metric, width),
                   Scorer("candidate", candidate_model, request.metric, width))  # fmt: skip
        kinds = {s.label_kind for s in scorers}
        if len(kinds) > 1:
            raise BadInput("stable predicts integer classes and the candidate text classes, or the other way")
        metric = METRICS[request.metric](kinds.pop())
        input_dtypes = {scorer.input.dtype for scorer in scorers}
        for chunk in holdout.chunks(numeric_labels=metric.label_kind == "i"):
            check_labels(chunk.labels, chunk.first_row, ds.label)
            truth = metric.truth(chunk.labels, chunk.first_row, ds.label)
            check_features(chunk.features, holdout.feature_names, scorers, chunk.first_row)
            # the features in each model's input dtype, converted once (both models usually take float32)
            inputs = {dt: chunk.features.astype(dt, copy=False) for dt in input_dtypes}
            outputs = [scorer.run(inputs[scorer.input.dtype]) for scorer in scorers]
            columns.add(metric.keep(metric.per_row(truth, outputs[0], outputs[1], chunk.first_row)), chunk.slices)
    rows = columns.rows(metric)  # an empty holdout raised BadInput
    log.info("scored %d rows; comparing", len(rows))
    checks = _checks(request, metric, rows, columns)
    verdict, reason = compare.verdict(checks)
    return EvaluationReport(
        verdict=verdict, reason=reason, metric=request.metric, rows=len(rows), dataset_sha256=digest,
        stable_sha256=stable_model.sha256, candidate_sha256=candidate_model.sha256, checks=tuple(checks),
    )  # fmt: skip


def _checks(request: EvaluationRequest, metric: Metric, rows: Rows, columns: _Columns) -> list[Check]:
    settings = Settings(request.alpha, request.resamples, request.seed)
    checks = [
        compare.versus_stable(request.metric, metric.versus_stable(rows, settings), request.margin, request.alpha)
    ]
    baseline = request.effective_baseline
    if baseline != "none":
        paired = metric.versus_baseline(rows, settings)
        checks.append(compare.versus_baseline(request.metric, paired, request.alpha, baseline,
                                              metric.describe_baseline(rows)))  # fmt: skip
    slices = columns.slice_index()
    tested = [(name, index) for name, index in slices if len(index) >= MIN_SLICE_ROWS]
    alpha = bonferroni(request.alpha, len(tested))
    part = Settings(alpha, request.resamples, request.seed)
    for name, index in slices:
        if len(index) < MIN_SLICE_ROWS:
            checks.append(compare.too_small(name, len(index), f"{len(index)} rows, fewer than {MIN_SLICE_ROWS}"))
            continue
        try:
            paired = metric.versus_stable(rows.take(index), part)
        except BadInput as e:  # e.g. one class only in this slice (ROC AUC)
            checks.append(compare.too_small(name, len(index), str(e)))
            continue
        checks.append(compare.versus_stable(request.metric, paired, request.margin, alpha, kind="slice", name=name))
    return checks
