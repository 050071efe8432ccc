"""The answer readers of the minting path, rewritten as plain loops for speed (docs/gateway.md, "What feedback
costs"), keep their definitions: exactly ints, floats and nulls are numbers (never a bool), and the class
count is the width of the first numeric ``[rows, classes]`` output."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mlrollout_serving.contract.predicted import _numbers, _width
from mlrollout_serving.gateway.feedback import predictions_of

_ITEMS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=3))


@given(st.lists(_ITEMS, max_size=20))
def test_numbers_are_exactly_ints_floats_and_nulls(data: list[Any]) -> None:
    assert _numbers(data) == all(type(x) is int or type(x) is float or x is None for x in data)


@given(st.lists(st.lists(_ITEMS, max_size=6), max_size=4), st.integers(-1, 4))
def test_the_width_is_the_first_numeric_matrix_output(rows: list[list[Any]], width: int) -> None:
    flat = [x for row in rows for x in row]
    out = {"datatype": "FP32", "shape": [len(rows), width], "data": rows}
    numeric = bool(flat) and width >= 2 and len(flat) % width == 0 and _numbers(flat)
    assert _width([out]) == (width if numeric else 0)
    assert _width([{"shape": [1], "data": [0.5, 0.5]}, out]) == _width([out])  # a vector is not a matrix


def test_a_bool_is_not_a_label_nor_a_probability() -> None:
    answer = b'{"outputs":[{"datatype":"BOOL","data":[true]},{"datatype":"FP32","shape":[1,2],"data":[0.1,0.9]}]}'
    read = predictions_of(answer)
    assert read is not None and (read.values, read.class_count) == (["True"], 0)
    flags = b'{"outputs":[{"datatype":"FP32","shape":[1,2],"data":[true,false]}]}'
    assert predictions_of(flags) is None
