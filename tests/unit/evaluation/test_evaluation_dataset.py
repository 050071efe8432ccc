"""The holdout reader: chunks of a CSV add up to the file, quoted fields, blank lines, .npz, and the errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlrollout_serving.evaluation.dataset import Chunk, layout, open_holdout
from mlrollout_serving.evaluation.errors import BadInput


def _all(chunks: list[Chunk]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    x = np.concatenate([c.features for c in chunks])
    y = np.concatenate([c.labels for c in chunks])
    s = {k: np.concatenate([c.slices[k] for c in chunks]) for k in chunks[0].slices}
    return x, y, s


def test_chunks_cover_the_file_in_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1001, 3))
    path = tmp_path / "h.csv"
    with path.open("w") as f:
        f.write('a,"quality",b,region,c\n')
        for i, row in enumerate(x):
            f.write(f'{float(row[0])!r},{i % 3},{float(row[1])!r},"north, east",{float(row[2])!r}\n')
            if i == 500:
                f.write("\n")  # a blank line is no row
    holdout = open_holdout(path, "csv", "quality", ["region"], chunk_rows=97)
    assert holdout.feature_names == ("a", "b", "c")
    chunks = list(holdout.chunks())
    assert [c.first_row for c in chunks[:3]] == [1, 98, 195] and sum(c.rows for c in chunks) == 1001
    features, labels, slices = _all(chunks)
    assert np.array_equal(features, x)
    assert labels.tolist() == [str(i % 3) for i in range(1001)]
    assert set(slices["region"].tolist()) == {"north, east"}


def test_npz(tmp_path: Path) -> None:
    path = tmp_path / "h.npz"
    np.savez(
        path, X=np.arange(12.0).reshape(6, 2), y=np.array([0.0, 1.0, 2.0, 1.0, 0.0, 1.5]), g=np.array(list("aabbcc"))
    )
    holdout = open_holdout(path, "npz", "y", ["g"], chunk_rows=4)
    chunks = list(holdout.chunks())
    assert [c.rows for c in chunks] == [4, 2] and holdout.feature_names == ("X[:, 0]", "X[:, 1]")
    _, labels, slices = _all(chunks)
    assert labels.tolist() == ["0", "1", "2", "1", "0", "1.5"]  # whole floats read as classes
    assert slices["g"].tolist() == list("aabbcc")


@pytest.mark.parametrize(
    ("arrays", "words"),
    [
        ({"y": np.zeros(3)}, "no feature array X"),
        ({"X": np.zeros((3, 2))}, "array 'y' is not in the .npz"),
        ({"X": np.zeros(3), "y": np.zeros(3)}, "must be 2-D"),
        ({"X": np.zeros((3, 2)), "y": np.zeros(4)}, r"has shape \[4\], the features have 3 rows"),
        ({"X": np.zeros((0, 2)), "y": np.zeros(0)}, "no rows"),
        ({"X": np.array([["a", "b"]]), "y": np.zeros(1)}, "is not numeric"),
    ],
)
def test_npz_problems(tmp_path: Path, arrays: dict[str, np.ndarray], words: str) -> None:
    path = tmp_path / "h.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(BadInput, match=words):
        list(open_holdout(path, "npz", "y", []).chunks())


def test_not_csv_and_not_npz(tmp_path: Path) -> None:
    binary = tmp_path / "h.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BadInput, match="not UTF-8 text"):
        list(open_holdout(binary, "csv", "y", []).chunks())
    with pytest.raises(BadInput, match=r"cannot read the dataset as \.npz"):
        open_holdout(binary, "npz", "y", [])
    with pytest.raises(BadInput, match="cannot read the dataset"):
        open_holdout(tmp_path / "absent.csv", "csv", "y", [])


def test_layout_errors() -> None:
    assert layout(["a", "y", "b"], "y", []).features == (0, 2)
    with pytest.raises(BadInput, match="repeats column 'a'"):
        layout(["a", "a", "y"], "y", [])
    with pytest.raises(BadInput, match="slice column 'g' is not in the dataset"):
        layout(["a", "y"], "y", ["g"])
    with pytest.raises(BadInput, match="no feature columns"):
        layout(["y", "g"], "y", ["g"])
