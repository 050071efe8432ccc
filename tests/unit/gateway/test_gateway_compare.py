"""Model-aware shadow comparison."""

from __future__ import annotations

import math

import pytest

from mlrollout_serving.gateway.compare import compare_responses


def _resp(*outputs: dict[str, object]) -> dict[str, object]:
    return {"model_name": "m", "outputs": list(outputs)}


def test_classifier_labels_agree_per_row() -> None:
    a = _resp({"name": "label", "datatype": "INT64", "shape": [4], "data": [0, 1, 2, 1]})
    b = _resp({"name": "label", "datatype": "INT64", "shape": [4], "data": [0, 1, 1, 1]})
    assert compare_responses(a, b).agreement == {"label": (3, 1)}


def test_probabilities_compare_by_argmax() -> None:
    a = _resp({"name": "probabilities", "datatype": "FP32", "shape": [2, 3], "data": [0.7, 0.2, 0.1, 0.1, 0.2, 0.7]})
    b = _resp({"name": "probabilities", "datatype": "FP32", "shape": [2, 3], "data": [0.6, 0.3, 0.1, 0.5, 0.4, 0.1]})
    result = compare_responses(a, b)
    assert result.agreement == {"probabilities": (1, 1)}
    assert result.abs_differences == {}


def test_regressor_absolute_differences() -> None:
    a = _resp({"name": "variable", "datatype": "FP32", "shape": [3, 1], "data": [[1.0], [2.0], [3.0]]})
    b = _resp({"name": "variable", "datatype": "FP32", "shape": [3, 1], "data": [1.5, 2.0, 1.0]})
    result = compare_responses(a, b)
    assert result.abs_differences["variable"] == pytest.approx([0.5, 0.0, 2.0])
    assert result.agreement == {}


def test_mismatched_outputs_are_skipped() -> None:
    a = _resp({"name": "label", "datatype": "INT64", "shape": [2], "data": [0, 1]})
    assert compare_responses(a, _resp()).agreement == {}
    b = _resp({"name": "label", "datatype": "INT64", "shape": [3], "data": [0, 1, 1]})
    assert compare_responses(a, b).agreement == {}
    assert compare_responses({}, {}).agreement == {}


def test_non_finite_regressor_elements_are_left_out_of_the_differences_and_counted() -> None:
    primary = {"outputs": [{"name": "y", "datatype": "FP32", "shape": [4], "data": [1.0, None, 3.0, 4.0]}]}
    shadow = {"outputs": [{"name": "y", "datatype": "FP32", "shape": [4], "data": [1.5, 2.0, math.nan, 4.0]}]}
    result = compare_responses(primary, shadow)  # null: the model server's NaN; NaN: another server's literal
    assert result.abs_differences == {"y": [0.5, 0.0]} and result.non_finite == {"y": 2}
