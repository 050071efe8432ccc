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
from mlrollout_serving.evaluation.metrics import METRICS, Rows, Settings, check_labels
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
    with pytest.raises(BadInput, match="'abc' is not a number"):
        METRICS["mae"]("i").truth(np.array(["1", "abc"]), 10, "y")
