"""Each metric's per-row values and comparisons against scikit-learn on fixed predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    log_loss,
    mean_absolute_error,
    roc_auc_score,
    root_mean_squared_error,
)

from mlrollout_serving.evaluation.errors import BadInput
from mlrollout_serving.evaluation.metrics import METRICS, Rows, Settings, check_labels, distinct
from mlrollout_serving.evaluation.scoring import Output

S = Settings(alpha=0.05, resamples=500, seed=0)
RNG = np.random.default_rng(11)
TRUTH = RNG.integers(0, 3, 600)
TEXT = TRUTH.astype(str)


def _probs(strength: float) -> np.ndarray:
    logits = RNG.normal(size=(600, 3)) + strength * np.eye(3)[TRUTH]
    p = np.exp(logits)
    probs: np.ndarray = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
    return probs


P_STABLE, P_CAND = _probs(1.0), _probs(2.0)


def _rows(name: str, stable: Output, candidate: Output, text: np.ndarray = TEXT, kind: str = "i") -> tuple:  # type: ignore[type-arg]
    metric = METRICS[name](kind)
    truth = metric.truth(text, 1, "label")
    return metric, Rows(*metric.per_row(truth, stable, candidate, 1))


def test_accuracy_and_its_majority_baseline() -> None:
    s_lab, c_lab = P_STABLE.argmax(1), P_CAND.argmax(1)
    metric, rows = _rows("accuracy", Output(labels=s_lab), Output(labels=c_lab))
    res = metric.versus_stable(rows, S)
    assert (res.reference, res.candidate) == (accuracy_score(TRUTH, s_lab), accuracy_score(TRUTH, c_lab))
    base = metric.versus_baseline(rows, S)
    majority = np.bincount(TRUTH).argmax()
    assert base.reference == accuracy_score(TRUTH, np.full(600, majority))
    assert metric.describe_baseline(rows) == f"always class {majority}"


def test_text_classes() -> None:
    words = np.array(["red", "white", "rose"])
    metric, rows = _rows(
        "accuracy", Output(labels=words[P_STABLE.argmax(1)].astype(object)),
        Output(labels=words[P_CAND.argmax(1)].astype(object)), text=words[TRUTH], kind="U",
    )  # fmt: skip
    assert metric.versus_stable(rows, S).candidate == accuracy_score(TRUTH, P_CAND.argmax(1))


def test_balanced_accuracy_bootstrap_centres_on_scikit_learns() -> None:
    s_lab, c_lab = P_STABLE.argmax(1), P_CAND.argmax(1)
    metric, rows = _rows("balancedAccuracy", Output(labels=s_lab), Output(labels=c_lab))
    res = metric.versus_stable(rows, S)
    assert res.reference == pytest.approx(balanced_accuracy_score(TRUTH, s_lab))
    assert res.candidate == pytest.approx(balanced_accuracy_score(TRUTH, c_lab))
    assert res.low < res.effect < res.high
    assert metric.versus_baseline(rows, S).reference == pytest.approx(1 / 3)


def test_log_loss_and_the_class_share_baseline() -> None:
    metric, rows = _rows("logLoss", Output(probabilities=P_STABLE), Output(probabilities=P_CAND))
    res = metric.versus_stable(rows, S)
    assert res.reference == pytest.approx(log_loss(TRUTH, P_STABLE), rel=1e-5)
    assert res.candidate == pytest.approx(log_loss(TRUTH, P_CAND), rel=1e-5)
    shares = np.bincount(TRUTH) / 600
    assert metric.versus_baseline(rows, S).reference == pytest.approx(log_loss(TRUTH, np.tile(shares, (600, 1))))
    with pytest.raises(BadInput, match="no probability column"):
        _rows("logLoss", Output(probabilities=P_STABLE[:, :2]), Output(probabilities=P_CAND[:, :2]))
    with pytest.raises(BadInput, match="needs integer class labels"):
        _rows("logLoss", Output(probabilities=P_STABLE), Output(probabilities=P_CAND), kind="U")


def test_roc_auc() -> None:
    y = TRUTH % 2
    two_s = np.stack([1 - P_STABLE[:, 1], P_STABLE[:, 1]], axis=1)
    two_c = np.stack([1 - P_CAND[:, 1], P_CAND[:, 1]], axis=1)
    metric, rows = _rows("rocAuc", Output(probabilities=two_s), Output(probabilities=two_c), text=y.astype(str))
    res = metric.versus_stable(rows, S)
    assert res.reference == pytest.approx(roc_auc_score(y, two_s[:, 1]))
    assert metric.versus_baseline(rows, S).reference == 0.5
    with pytest.raises(BadInput, match="two classes, 0 and 1, not 2"):
        _rows("rocAuc", Output(probabilities=two_s), Output(probabilities=two_c))


def test_regression_errors() -> None:
    y = RNG.normal(50, 10, 400)
    s_pred = (y + RNG.normal(0, 5, 400)).astype(np.float32)
    c_pred = (y + RNG.normal(1, 4, 400)).astype(np.float32)
    text = np.array([repr(float(v)) for v in y])
    for name, reference in (("mae", mean_absolute_error), ("rmse", root_mean_squared_error)):
        metric, rows = _rows(name, Output(values=s_pred), Output(values=c_pred), text=text)
        res = metric.versus_stable(rows, S)
        assert res.reference == pytest.approx(reference(y, s_pred), rel=1e-5)
        assert res.candidate == pytest.approx(reference(y, c_pred), rel=1e-5)
        base = metric.versus_baseline(rows, S)
        assert base.reference == pytest.approx(reference(y, np.full(400, y.mean())), rel=1e-5)
        assert metric.describe_baseline(rows).startswith("always the mean label 5")


def test_labels_that_cannot_be_read() -> None:
    with pytest.raises(BadInput, match="empty or NaN on 2 row"):
        check_labels(np.array(["1", "", "NaN", "2"]), 10, "y")
    with pytest.raises(BadInput, match=r"row 11, label 'y': '1.5' is not an integer class"):
        METRICS["accuracy"]("i").truth(np.array(["1", "1.5"]), 10, "y")
    for huge in ("inf", "-inf", "1e30"):  # whole-looking, but no class an int64 holds
        with pytest.raises(BadInput, match=rf"row 11, label 'y': '{huge}' is not an integer class"):
            METRICS["accuracy"]("i").truth(np.array(["1", huge]), 10, "y")
    with pytest.raises(BadInput, match="'abc' is not a number"):
        METRICS["mae"]("i").truth(np.array(["1", "abc"]), 10, "y")


def _kept(name: str, stable: Output, candidate: Output, text: np.ndarray, kind: str, chunk: int) -> tuple:  # type: ignore[type-arg]
    """Rows as the evaluation keeps them: per chunk in the metric's compact form, then put together."""
    metric = METRICS[name](kind)
    parts = []
    for start in range(0, len(text), chunk):
        part = slice(start, start + chunk)
        truth = metric.truth(text[part], start + 1, "label")
        s, c = (Output(**{k: v[part] for k, v in o._asdict().items() if v is not None}) for o in (stable, candidate))
        parts.append(metric.keep(metric.per_row(truth, s, c, start + 1)))
    return metric, metric.rows(tuple(np.concatenate(column) for column in zip(*parts, strict=True)))


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        *((name, labels) for name in ("accuracy", "balancedAccuracy") for labels in ("integers", "text", "sparse")),
        ("logLoss", "integers"),  # logLoss needs the class indices themselves (tested above)
    ],
)
def test_the_compact_rows_give_the_same_comparisons(name: str, labels: str) -> None:
    """A classifier's truth kept as one-byte class indices (chunk by chunk, classes first seen in any order)
    gives exactly the numbers the plain labels give, overall and on slices that lack a class."""
    kind = "U" if labels == "text" else "i"
    classes = {"integers": np.arange(3), "text": np.array(["red", "white", "rose"]), "sparse": np.array([7, -2, 40])}[
        labels
    ]
    predicted_s, predicted_c = classes[P_STABLE.argmax(1)], classes[P_CAND.argmax(1)]
    if kind == "U":
        predicted_s, predicted_c = predicted_s.astype(object), predicted_c.astype(object)
    text = classes[TRUTH].astype(str)
    stable = Output(labels=predicted_s, probabilities=P_STABLE)
    candidate = Output(labels=predicted_c, probabilities=P_CAND)
    metric, plain = _rows(name, stable, candidate, text=text, kind=kind)
    kept_metric, kept = _kept(name, stable, candidate, text, kind, chunk=97)
    assert kept_metric.versus_stable(kept, S) == metric.versus_stable(plain, S)
    assert kept_metric.versus_baseline(kept, S) == metric.versus_baseline(plain, S)
    assert kept_metric.describe_baseline(kept) == metric.describe_baseline(plain)
    if name != "logLoss":
        assert kept.truth.dtype == np.uint8 and kept.truth.nbytes == len(TRUTH)
    no_first_class = np.flatnonzero(TRUTH != 0)  # a slice where the smallest class never occurs
    assert kept_metric.versus_stable(kept.take(no_first_class), S) == metric.versus_stable(
        plain.take(no_first_class), S
    )


def test_more_than_256_classes_are_kept_in_four_bytes() -> None:
    truth = np.arange(600) % 300
    text = truth.astype(str)
    right = Output(labels=truth)
    metric, plain = _rows("accuracy", right, Output(labels=(truth + (truth % 7 == 0)) % 300), text=text)
    kept_metric, kept = _kept("accuracy", right, Output(labels=(truth + (truth % 7 == 0)) % 300), text, "i", 50)
    assert kept.truth.dtype == np.uint32 and kept.classes == tuple(range(300))
    assert kept_metric.versus_baseline(kept, S) == metric.versus_baseline(plain, S)
    assert kept_metric.describe_baseline(kept) == metric.describe_baseline(plain) == "always class 0"


def test_numeric_labels_from_the_reader() -> None:
    """Labels the reader read as numbers: the same truth as their text, and the same refusals."""
    metric = METRICS["accuracy"]("i")
    assert np.array_equal(metric.truth(np.array([1.0, 2.0]), 1, "y"), metric.truth(np.array(["1", "2"]), 1, "y"))
    with pytest.raises(BadInput, match=r"row 11, label 'y': '1.5' is not an integer class"):
        metric.truth(np.array([1.0, 1.5]), 10, "y")
    with pytest.raises(BadInput, match=r"empty or NaN on 1 row\(s\) of rows 10..12 \(first: row 11\)"):
        check_labels(np.array([1.0, np.nan, 2.0]), 10, "y")
    assert np.array_equal(METRICS["mae"]("i").truth(np.array([0.1, 2.0]), 1, "y"), np.array([0.1, 2.0]))


def test_class_counts_a_block_at_a_time_are_bincounts(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlrollout_serving.evaluation import metrics

    monkeypatch.setattr(metrics, "_COUNT_BLOCK", 7)
    for codes in (np.zeros(0, np.uint8), np.array([3], np.uint8), RNG.integers(0, 9, 100).astype(np.uint8)):
        assert np.array_equal(metrics._count(codes), np.bincount(codes))
        assert np.array_equal(metrics._count(codes, 12), np.bincount(codes, minlength=12))


def _balanced_accuracy_by_weights(codes: np.ndarray, classes: int, ref: np.ndarray | None, cand: np.ndarray):  # type: ignore[no-untyped-def]
    """The statistic as it was: each model's hits counted apart, as bincount weights."""

    def statistic(idx: np.ndarray) -> np.ndarray:
        k = idx.shape[0]
        flat = (codes[idx] + classes * np.arange(k)[:, None]).ravel()
        counts = np.bincount(flat, minlength=k * classes).reshape(k, classes).astype(np.float64)
        present = counts > 0
        out = np.empty((k, 2))
        for col, right in enumerate((ref, cand)):
            if right is None:
                out[:, col] = 1.0 / present.sum(axis=1)
                continue
            hits = np.bincount(flat, weights=right[idx].ravel(), minlength=k * classes).reshape(k, classes)
            recall = np.divide(hits, counts, out=np.zeros_like(hits), where=present)
            out[:, col] = recall.sum(axis=1) / present.sum(axis=1)
        return out

    return statistic


@pytest.mark.parametrize("classes", [2, 3, 9, 70])
def test_balanced_accuracy_from_one_key_is_the_per_model_count(classes: int) -> None:
    """The one-count statistic gives bit for bit the floats of counting each model's hits apart, on
    resamples where some classes are missing, for the stable model and for the constant baseline."""
    from mlrollout_serving.evaluation.metrics import BalancedAccuracy

    rng = np.random.default_rng(classes)
    n = 500
    codes = rng.integers(0, classes, n).astype(np.uint8)
    ref, cand = rng.random(n) < 0.6, rng.random(n) < 0.7
    idx = rng.integers(0, n, size=(40, n))
    idx[:5] = np.where(codes[idx[:5]] == 0, 1, idx[:5])  # resamples without (most of) class 0
    for reference in (ref, None):
        new = BalancedAccuracy._statistic(codes, classes, reference, cand)(idx)
        old = _balanced_accuracy_by_weights(codes, classes, reference, cand)(idx)
        assert np.array_equal(new, old)


@pytest.mark.parametrize(
    "truth",
    [
        RNG.integers(0, 3, 8192),  # the usual: a few small classes, counted
        np.array([7]),  # one row
        np.array([5, 5, 5], dtype=np.uint8),
        np.array([0, 65535, 3]),  # the largest counted class
        np.array([0, 65536, 3]),  # past it: sorted
        np.array([-1, 2, -1, 0]),  # negative classes: sorted
        np.array([2**40, 1, 2**40]),
        np.array([], dtype=np.int64),
        TEXT[:50].astype(object),  # text classes: sorted
    ],
    ids=["small", "one", "uint8", "edge", "past-edge", "negative", "huge", "empty", "text"],
)
def test_distinct_is_numpys_unique(truth: np.ndarray) -> None:
    """The classes a chunk holds and each row's index into them, by counting or by sorting: what
    ``np.unique(..., return_inverse=True)`` gives, values as the same Python objects."""
    values, inverse = distinct(truth)
    expected, expected_inverse = np.unique(truth, return_inverse=True)
    assert values == expected.tolist() and [type(v) for v in values] == [type(v) for v in expected.tolist()]
    assert inverse.tolist() == expected_inverse.reshape(-1).tolist()
