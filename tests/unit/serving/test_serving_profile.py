"""Reference profiles: binning rule, building, the JSON format and ``mlrollout profile``."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.models import BuiltModel

from mlrollout_serving import profile
from mlrollout_serving.contract import profile as schema

DOC = {
    "version": 1,
    "features": [{"name": "f0", "edges": [0.5, 1.2, 3.0], "proportions": [0.25, 0.25, 0.25, 0.25]}],
    "predictions": {"kind": "classification", "classes": ["0", "1", "2"], "proportions": [0.3, 0.4, 0.3]},
}


def test_bin_rule_is_searchsorted_right() -> None:
    edges = [0.5, 1.2, 3.0]
    assert profile.bin_index(edges, [-10, 0.5, 0.6, 1.2, 2.9, 3.0, 99]).tolist() == [0, 1, 1, 2, 2, 3, 3]


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200), st.integers(2, 12))
def test_quantile_edges_are_increasing_and_proportions_sum_to_one(values: list[float], bins: int) -> None:
    edges = profile.quantile_edges(values, bins)
    assert all(b > a for a, b in itertools.pairwise(edges))
    assert len(edges) <= bins - 1
    props = profile.proportions(edges, values)
    assert len(props) == len(edges) + 1
    assert sum(props) == pytest.approx(1.0)


def test_discrete_feature_keeps_its_first_bin_populated() -> None:
    values = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2]
    edges = profile.quantile_edges(values, 10)
    assert edges[0] > 0
    assert profile.proportions(edges, values)[0] == pytest.approx(0.6)


def test_documented_example_round_trips() -> None:
    prof = schema.from_dict(DOC)
    assert prof.features[0].edges == (0.5, 1.2, 3.0)
    assert prof.predictions is not None and prof.predictions.classes == ("0", "1", "2")
    assert schema.to_dict(prof) == DOC
    assert schema.loads(schema.dumps(prof)) == prof


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"version": 2}, "unsupported profile version"),
        ({"features": [{"name": "f0", "edges": [1, 1], "proportions": [0.5, 0.25, 0.25]}]}, "strictly increasing"),
        ({"features": [{"name": "f0", "edges": [1], "proportions": [1.0]}]}, "need 2 proportions"),
        ({"features": [{"name": "f0", "edges": [1], "proportions": [0.5, 0.6]}]}, "sum to 1"),
        ({"features": [{"name": "f0", "edges": ["a"], "proportions": [0.5, 0.5]}]}, "finite numbers"),
        ({"predictions": {"kind": "other", "proportions": [1.0]}}, "predictions.kind"),
        (
            {"predictions": {"kind": "classification", "classes": ["a"], "proportions": [0.5, 0.5]}},
            "one proportion per class",
        ),
    ],
)
def test_invalid_documents_are_refused(patch: dict[str, object], message: str) -> None:
    with pytest.raises(schema.ProfileError, match=message):
        schema.from_dict({**DOC, **patch})


def test_read_from_path_and_file_uri(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(DOC))
    assert profile.read(str(path)) == profile.read(path.as_uri()) == schema.from_dict(DOC)


def test_csv_with_header_and_npy(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("alcohol,ash\n1.0,2.0\n3.0,4.0\n")
    x, names = profile.load_training_data(csv)
    assert names == ["alcohol", "ash"] and x.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    npy = tmp_path / "t.npy"
    np.save(npy, x)
    y, none = profile.load_training_data(npy)
    assert none is None and y.tolist() == x.tolist()


def test_cli_builds_a_profile_with_classifier_predictions(tmp_path: Path, wine_model: BuiltModel) -> None:
    npy = tmp_path / "train.npy"
    np.save(npy, wine_model.train)
    out = tmp_path / "profile.json"
    assert profile.cli_main(["--output", str(out), "--model", str(wine_model.path), str(npy)]) == 0
    prof = profile.read(str(out))
    assert len(prof.features) == wine_model.n_features
    assert [f.name for f in prof.features][:2] == ["f0", "f1"]
    for f, column in zip(prof.features, wine_model.train.T, strict=True):
        assert f.proportions == profile.proportions(f.edges, column)
    assert prof.predictions is not None and prof.predictions.kind == "classification"
    assert prof.predictions.classes == ("0", "1", "2")
    assert sum(prof.predictions.proportions) == pytest.approx(1.0)


def test_cli_profiles_regression_predictions(tmp_path: Path, diabetes_model: BuiltModel) -> None:
    csv = tmp_path / "train.csv"
    np.savetxt(csv, diabetes_model.train, delimiter=",")
    out = tmp_path / "profile.json"
    assert profile.cli_main(["-o", str(out), "--model", str(diabetes_model.path), "--bins", "5", str(csv)]) == 0
    prof = profile.read(str(out))
    assert prof.predictions is not None and prof.predictions.kind == "regression"
    assert len(prof.predictions.edges) == 4


def test_cli_reports_unusable_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,x\n")
    assert profile.cli_main(["--output", str(tmp_path / "o.json"), str(bad)]) == 1
    assert "non-numeric value" in capsys.readouterr().err
