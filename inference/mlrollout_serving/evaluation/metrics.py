"""The six metrics: what each keeps per row while the holdout streams past, and its paired comparisons.

Per row a metric keeps the truth and one small number per model: whether each model was right (accuracy,
balanced accuracy), each model's log loss on the row, each model's score (ROC AUC), or each model's error
(MAE, RMSE), 3 to 16 bytes a row instead of the row itself (:meth:`Metric.keep`: a classifier's truth is
kept as a one-byte index into the classes seen while fewer than 256, text labels included). At the end it
compares the candidate with stable and with the trivial baseline on the same rows, with the test that fits
(:mod:`.stats`):

| metric | better | with stable, with the baseline |
| --- | --- | --- |
| accuracy | higher | exact McNemar, Bonett-Price interval; the baseline always predicts the holdout's majority class |
| balancedAccuracy | higher | paired bootstrap; the baseline (any constant class) scores 1 / classes |
| logLoss | lower | paired bootstrap; the baseline predicts the holdout's class shares |
| rocAuc | higher | DeLong; the baseline (a constant score) has AUC 0.5; two classes, positive = class 1 |
| mae, rmse | lower | paired bootstrap; the baseline predicts the holdout's mean label |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt

from mlrollout_serving.evaluation import stats
from mlrollout_serving.evaluation.dataset import Labels
from mlrollout_serving.evaluation.errors import BadInput, shown
from mlrollout_serving.evaluation.scoring import Output

LOG_LOSS_EPS: Final = 1e-15  # probabilities are clipped to [eps, 1] (scikit-learn's log_loss does the same)
AnyArray = npt.NDArray[Any]


class Rows:
    """The whole holdout as a metric keeps it: the truth and each model's per-row number. ``classes``: when
    given (sorted), ``truth`` holds each row's index into these classes instead of the class.

    A plain class, not a dataclass (whose generated methods cost the Job's start-up about 0.5 ms a class,
    docs/evaluation.md); nothing compares or changes one."""

    __slots__ = ("candidate", "classes", "stable", "truth")

    def __init__(
        self, truth: AnyArray, stable: AnyArray, candidate: AnyArray, *, classes: tuple[Any, ...] | None = None
    ) -> None:
        self.truth, self.stable, self.candidate, self.classes = truth, stable, candidate, classes

    def take(self, index: npt.NDArray[np.intp]) -> Rows:
        return Rows(self.truth[index], self.stable[index], self.candidate[index], classes=self.classes)

    def __len__(self) -> int:
        return len(self.truth)


class Settings(NamedTuple):
    alpha: float
    resamples: int
    seed: int
    interval: str = "bca"  # the bootstrap's: "bca", or "percentile" (bench/evaluation_power.py compares them)


class Metric:
    """One metric: per-row values from a chunk, the comparison with stable, and with the trivial baseline."""

    name: str = ""
    baseline_words: str = ""

    def __init__(self, label_kind: str) -> None:
        self.label_kind = label_kind  # "i": integer classes, "U": text classes (what the label column is read as)

    def truth(self, texts: Labels, first_row: int, label: str) -> AnyArray:
        """The label column (text, or numbers the reader already read) as the models' classes: integers, or text."""
        if self.label_kind == "U":
            return texts.astype(object)
        values = _numbers(texts, first_row, label, "the models predict integer classes")
        # inf passes ``== round`` and 1e30 is whole, yet neither is a class int64 can hold
        whole = np.isfinite(values) & (values == np.round(values)) & (np.abs(values) < 2.0**53)
        if not whole.all():
            row = int(np.flatnonzero(~whole)[0])
            raise BadInput(
                f"row {first_row + row}, label {label!r}: {shown(_shown(texts[row]))} is not an integer class"
            )
        return values.astype(np.int64)

    def per_row(self, truth: AnyArray, stable: Output, candidate: Output, first_row: int) -> tuple[AnyArray, ...]:
        raise NotImplementedError

    def keep(self, columns: tuple[AnyArray, ...]) -> tuple[AnyArray, ...]:
        """What is kept of one chunk's :meth:`per_row` columns until the end (its compact form)."""
        return columns

    def rows(self, columns: tuple[AnyArray, ...]) -> Rows:
        """The whole holdout from the kept columns, concatenated (the same as ``Rows(*per_row(...))``)."""
        truth, stable, candidate = columns
        return Rows(truth, stable, candidate)

    def versus_stable(self, rows: Rows, s: Settings) -> stats.Paired:
        raise NotImplementedError

    def versus_baseline(self, rows: Rows, s: Settings) -> stats.Paired:
        raise NotImplementedError

    def describe_baseline(self, rows: Rows) -> str:
        return self.baseline_words


def _numbers(texts: Labels, first_row: int, label: str, why: str) -> npt.NDArray[np.float64]:
    if texts.dtype.kind == "f":  # read as numbers already
        return texts.astype(np.float64, copy=False)
    try:
        return texts.astype(np.float64)
    except ValueError:
        for i, text in enumerate(texts):
            try:
                float(text)
            except ValueError:
                raise BadInput(f"row {first_row + i}, label {label!r}: {shown(text)} is not a number ({why})") from None
        raise


def _shown(value: Any) -> str:
    """A label as the file spelled it (text), or as Python writes the number it was read as."""
    return repr(float(value)) if isinstance(value, np.floating) else str(value)


def _outcome(truth: AnyArray, out: Output) -> npt.NDArray[np.bool_]:
    assert out.labels is not None
    predicted = out.labels.astype(object) if truth.dtype == object else out.labels
    return np.asarray(predicted == truth, dtype=np.bool_)


def _codes(rows: Rows) -> tuple[npt.NDArray[np.integer[Any]], list[Any]]:
    """Each row's class as an index into the sorted classes present: ``np.unique(truth, return_inverse=True)``,
    without its sort and its 16 bytes a row when the truth is kept as indices already."""
    if rows.classes is None:
        classes, codes = np.unique(rows.truth, return_inverse=True)
        return codes.astype(np.int32), list(classes)
    present = _count(rows.truth, len(rows.classes)) > 0
    if present.all():
        return rows.truth, list(rows.classes)
    rank = np.cumsum(present, dtype=np.int32) - 1  # a class's index among the present ones
    return rank[rows.truth], [c for c, here in zip(rows.classes, present, strict=True) if here]


_COUNT_BLOCK: Final = 1 << 16  # 512 KiB of 8-byte integers at a time


def _count(codes: npt.NDArray[np.integer[Any]], minlength: int = 0) -> npt.NDArray[np.intp]:
    """``np.bincount(codes)`` a block at a time: bincount turns its whole input into 8-byte integers first,
    8 bytes a row for one-byte class indices."""
    counts = np.zeros(max(minlength, int(codes.max()) + 1 if len(codes) else 0), dtype=np.intp)
    for start in range(0, len(codes), _COUNT_BLOCK):
        block = np.bincount(codes[start : start + _COUNT_BLOCK])
        counts[: len(block)] += block
    return counts


class _Classes(Metric):
    """Keeps the truth as an index into the classes seen (sorted at the end), in a byte while 256 or fewer."""

    def __init__(self, label_kind: str) -> None:
        super().__init__(label_kind)
        self._seen: dict[Any, int] = {}  # class -> index, in the order the classes first appeared

    def keep(self, columns: tuple[AnyArray, ...]) -> tuple[AnyArray, ...]:
        truth, *rest = columns
        values, inverse = distinct(truth)
        index = np.array([self._seen.setdefault(v, len(self._seen)) for v in values], dtype=np.int64)
        return (index[inverse].astype(_index_dtype(len(self._seen))), *rest)

    def rows(self, columns: tuple[AnyArray, ...]) -> Rows:
        truth, stable, candidate = columns
        classes = sorted(self._seen)
        order = np.zeros(max(len(classes), 1), dtype=_index_dtype(len(classes)))
        order[[self._seen[c] for c in classes]] = np.arange(len(classes))
        return Rows(order[truth], stable, candidate, classes=tuple(classes))


_COUNTED_CLASSES: Final = 1 << 16  # integer classes below this are told apart by counting, not sorting


def distinct(truth: AnyArray) -> tuple[list[Any], npt.NDArray[np.intp]]:
    """``np.unique(truth, return_inverse=True)`` as (the sorted values as Python objects, each row's index into
    them). Integer classes in ``[0, 65536)``, the usual kind, are counted instead of sorted: once per chunk of
    8,192 rows the sort cost 0.15 ms, the count 0.02 ms, with the same values and indices."""
    if truth.dtype.kind in "iu" and len(truth):
        low, high = int(truth.min()), int(truth.max())
        if low >= 0 and high < _COUNTED_CLASSES:
            present = np.flatnonzero(np.bincount(truth))
            where = np.zeros(high + 1, dtype=np.intp)
            where[present] = np.arange(len(present))
            return present.tolist(), where[truth]
    values, inverse = np.unique(truth, return_inverse=True)
    return values.tolist(), inverse.reshape(-1)


def _index_dtype(classes: int) -> type[np.unsignedinteger[Any]]:
    return np.uint8 if classes <= 256 else np.uint32


class Accuracy(_Classes):
    name = "accuracy"

    def per_row(self, truth: AnyArray, stable: Output, candidate: Output, first_row: int) -> tuple[AnyArray, ...]:
        return truth, _outcome(truth, stable), _outcome(truth, candidate)

    def versus_stable(self, rows: Rows, s: Settings) -> stats.Paired:
        return _proportions(rows.stable, rows.candidate, s.alpha)

    def _majority(self, rows: Rows) -> tuple[npt.NDArray[np.integer[Any]], int, Any]:
        """The rows' class indices, the majority's index and the majority class (ties: the smallest class)."""
        codes, classes = _codes(rows)
        majority = int(np.argmax(_count(codes)))
        return codes, majority, classes[majority]

    def versus_baseline(self, rows: Rows, s: Settings) -> stats.Paired:
        codes, majority, _ = self._majority(rows)
        return _proportions(np.asarray(codes == majority), rows.candidate, s.alpha)

    def describe_baseline(self, rows: Rows) -> str:
        return f"always class {self._majority(rows)[2]}"


def _proportions(reference: npt.NDArray[np.bool_], candidate: npt.NDArray[np.bool_], alpha: float) -> stats.Paired:
    return stats.paired_proportions(
        len(reference), int(reference.sum()), int(candidate.sum()), int((reference & ~candidate).sum()),
        int((~reference & candidate).sum()), alpha,
    )  # fmt: skip


class BalancedAccuracy(_Classes):
    name = "balancedAccuracy"
    baseline_words = "any constant class: 1 / classes"

    def per_row(self, truth: AnyArray, stable: Output, candidate: Output, first_row: int) -> tuple[AnyArray, ...]:
        return truth, _outcome(truth, stable), _outcome(truth, candidate)

    @staticmethod
    def _statistic(
        codes: npt.NDArray[np.integer[Any]], classes: int, ref: AnyArray | None, cand: AnyArray
    ) -> stats.Statistic:
        """Both models' balanced accuracy on each resample, from one gather and one count per resample:
        each row's class and whether each model got it right are one small key (class x 4 + ref x 2 +
        cand), whose counts per resample give the rows and both models' hits per class. Whole-number
        counts, so the recalls are the same floats as counting each model's hits apart."""
        width = classes * 4
        key = codes.astype(np.int64) * 4 + cand.astype(np.int64)
        if ref is not None:
            key += 2 * ref.astype(np.int64)
        small = key.astype(np.uint8 if width <= 256 else np.int32)  # gathered per resample: keep it narrow

        def statistic(idx: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
            k = idx.shape[0]
            # one count per resample: faster than one count of all k with offsets (no k x rows int64 array)
            cells = np.stack([np.bincount(keys, minlength=width) for keys in small[idx]]).reshape(k, classes, 4)
            counts = cells.sum(axis=2).astype(np.float64)
            present = counts > 0
            out = np.empty((k, 2))
            for col, right in enumerate((ref, cand)):
                if right is None:  # the constant baseline: recall 1 on one class, 0 on the others
                    out[:, col] = 1.0 / present.sum(axis=1)
                    continue
                bit = 2 if col == 0 else 1
                hits = (cells[:, :, bit] + cells[:, :, 3]).astype(np.float64)  # right: the key has the bit
                recall = np.divide(hits, counts, out=np.zeros_like(hits), where=present)
                out[:, col] = recall.sum(axis=1) / present.sum(axis=1)
            return out

        return statistic

    def _paired(self, rows: Rows, s: Settings, ref: AnyArray | None) -> stats.Paired:
        codes, classes = _codes(rows)
        stat = self._statistic(codes, len(classes), ref, rows.candidate)
        return stats.paired_bootstrap(stat, len(rows), s.alpha, s.resamples, s.seed, "balanced accuracy", s.interval)

    def versus_stable(self, rows: Rows, s: Settings) -> stats.Paired:
        return self._paired(rows, s, rows.stable)

    def versus_baseline(self, rows: Rows, s: Settings) -> stats.Paired:
        return self._paired(rows, s, None)


def _mean_statistic(ref: AnyArray, cand: AnyArray, root: bool = False) -> stats.Statistic:
    def statistic(idx: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        out = np.stack([ref[idx].mean(axis=1, dtype=np.float64), cand[idx].mean(axis=1, dtype=np.float64)], axis=1)
        return np.sqrt(out) if root else out

    return statistic


def _column_of(truth: AnyArray, probabilities: npt.NDArray[np.float32], first_row: int) -> npt.NDArray[np.intp]:
    columns = probabilities.shape[1]
    bad = (truth < 0) | (truth >= columns)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise BadInput(
            f"row {first_row + row}: class {truth[row]} has no probability column (the model gives {columns} "
            f"columns, for classes 0..{columns - 1})"
        )
    return np.asarray(truth, dtype=np.intp)


class LogLoss(Metric):
    name = "logLoss"
    baseline_words = "the holdout's class shares"

    def truth(self, texts: Labels, first_row: int, label: str) -> AnyArray:
        if self.label_kind == "U":
            raise BadInput("logLoss needs integer class labels 0..C-1 (the columns of the probabilities)")
        return super().truth(texts, first_row, label)

    def per_row(self, truth: AnyArray, stable: Output, candidate: Output, first_row: int) -> tuple[AnyArray, ...]:
        losses = []
        for out in (stable, candidate):
            assert out.probabilities is not None
            cols = _column_of(truth, out.probabilities, first_row)
            p = out.probabilities[np.arange(len(truth)), cols]
            losses.append(-np.log(np.clip(p, LOG_LOSS_EPS, 1.0)).astype(np.float32))
        return truth.astype(np.int32), losses[0], losses[1]

    def versus_stable(self, rows: Rows, s: Settings) -> stats.Paired:
        stat = _mean_statistic(rows.stable, rows.candidate)
        return stats.paired_bootstrap(stat, len(rows), s.alpha, s.resamples, s.seed, "log loss", s.interval)

    def versus_baseline(self, rows: Rows, s: Settings) -> stats.Paired:
        shares = np.bincount(rows.truth) / len(rows)
        baseline = -np.log(shares[rows.truth]).astype(np.float32)
        stat = _mean_statistic(baseline, rows.candidate)
        return stats.paired_bootstrap(stat, len(rows), s.alpha, s.resamples, s.seed, "log loss", s.interval)


class RocAuc(Metric):
    name = "rocAuc"
    baseline_words = "a constant score: 0.5"

    def truth(self, texts: Labels, first_row: int, label: str) -> AnyArray:
        if self.label_kind == "U":
            raise BadInput("rocAuc needs integer class labels 0 and 1 (the columns of the probabilities)")
        values = super().truth(texts, first_row, label)
        bad = (values != 0) & (values != 1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise BadInput(f"row {first_row + row}: rocAuc needs two classes, 0 and 1, not {values[row]}")
        return values

    def per_row(self, truth: AnyArray, stable: Output, candidate: Output, first_row: int) -> tuple[AnyArray, ...]:
        scores = []
        for out in (stable, candidate):
            assert out.probabilities is not None
            if out.probabilities.shape[1] != 2:
                raise BadInput(f"rocAuc needs a binary classifier; a model gives {out.probabilities.shape[1]} classes")
            scores.append(out.probabilities[:, 1].astype(np.float32))
        return truth.astype(np.bool_), scores[0], scores[1]

    def _both_classes(self, rows: Rows) -> None:
        if rows.truth.all() or not rows.truth.any():
            raise BadInput("rocAuc needs rows of both classes in the holdout")

    def versus_stable(self, rows: Rows, s: Settings) -> stats.Paired:
        self._both_classes(rows)
        return stats.delong(rows.truth, rows.stable.astype(np.float64), rows.candidate.astype(np.float64), s.alpha)

    def versus_baseline(self, rows: Rows, s: Settings) -> stats.Paired:
        self._both_classes(rows)
        return stats.delong_against(rows.truth, rows.candidate.astype(np.float64), 0.5, s.alpha)


class _Regression(Metric):
    root = False
    test = ""

    def truth(self, texts: Labels, first_row: int, label: str) -> AnyArray:
        return _numbers(texts, first_row, label, "a regression label")

    def per_row(self, truth: AnyArray, stable: Output, candidate: Output, first_row: int) -> tuple[AnyArray, ...]:
        assert stable.values is not None and candidate.values is not None
        return truth, self._loss(stable.values - truth), self._loss(candidate.values - truth)

    def _loss(self, error: AnyArray) -> AnyArray:
        return np.asarray(np.square(error) if self.root else np.abs(error), dtype=np.float32)

    def versus_stable(self, rows: Rows, s: Settings) -> stats.Paired:
        stat = _mean_statistic(rows.stable, rows.candidate, self.root)
        return stats.paired_bootstrap(stat, len(rows), s.alpha, s.resamples, s.seed, self.test, s.interval)

    def versus_baseline(self, rows: Rows, s: Settings) -> stats.Paired:
        baseline = self._loss(float(np.mean(rows.truth)) - rows.truth)
        stat = _mean_statistic(baseline, rows.candidate, self.root)
        return stats.paired_bootstrap(stat, len(rows), s.alpha, s.resamples, s.seed, self.test, s.interval)

    def describe_baseline(self, rows: Rows) -> str:
        return f"always the mean label {float(np.mean(rows.truth)):.4g}"


class Mae(_Regression):
    name = "mae"
    test = "MAE"


class Rmse(_Regression):
    name = "rmse"
    root = True
    test = "RMSE"


METRICS: dict[str, Callable[[str], Metric]] = {
    "accuracy": Accuracy,
    "balancedAccuracy": BalancedAccuracy,
    "logLoss": LogLoss,
    "rocAuc": RocAuc,
    "mae": Mae,
    "rmse": Rmse,
}


def check_labels(texts: Labels, first_row: int, label: str) -> None:
    """NaN or empty labels are refused: a row without truth cannot score either model."""
    if texts.dtype.kind == "f":
        missing = np.isnan(texts)
    else:
        missing = np.isin(np.char.lower(texts.astype(str, copy=False)), ["", "nan"])
    if missing.any():
        rows = np.flatnonzero(missing)
        raise BadInput(
            f"label column {label!r} is empty or NaN on {len(rows)} row(s) of rows {first_row}.."
            f"{first_row + len(texts) - 1} (first: row {first_row + int(rows[0])}); every row needs its label"
        )
