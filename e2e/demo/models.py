"""The sample models of the demo and the e2e scenarios, built from scikit-learn's bundled wine dataset.

- ``v1``: logistic regression (standardised inputs), the first stable model.
- ``v2``: a slightly different regularisation: as accurate as v1, a good candidate.
- ``v3``: v2 plus a deliberately slow side branch in the ONNX graph (repeated matrix products whose
  result is multiplied by zero): same predictions, much higher latency, a bad candidate.
- ``v4``: plausible but wrong: the same inputs, trained on the two most telling features only. It answers
  as fast, never errs and predicts the usual class mix, but is wrong on about 11 % of the held-out rows
  where v1 is right on all: only labels (ground truth) catch it.
- ``profile.json``: the reference profile of the training data (input bins and predictions).
- ``digits-*``: the offline evaluation's models, on scikit-learn's bundled digits (8x8 images, 64 inputs):
  the wine holdout has 36 rows, too few to *prove* a candidate worse, so the evaluate scenarios score on
  half of digits' 1797 rows (899, a labelled holdout of 133 KB that scores in well under a second).
  ``digits-v1`` is a logistic regression, ``digits-v2`` the same with another regularisation (a good
  candidate), ``digits-v3-worse`` trained on its 10 most telling pixels only (far less accurate).

Every file goes into one directory with a ``manifest.json`` holding each file's sha256, the held-out
request rows, their true classes (``labels``, what the load generator sends back as feedback) and the
class labels; the model store serves that directory over HTTP.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

INPUT = "input"
SLOW_SIZE = 640  # side length of the matrices of v3's slow branch
SLOW_ROUNDS = 3  # matrix products per request in v3 (about 10 ms on one core here; 320-square took 1.6 ms)


def _wine() -> tuple[npt.NDArray[np.float32], npt.NDArray[Any], npt.NDArray[np.float32], npt.NDArray[Any]]:
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    held = np.arange(len(x32)) % 5 == 0
    return x32[~held], np.asarray(y)[~held], x32[held], np.asarray(y)[held]


def _digits() -> tuple[npt.NDArray[np.float32], npt.NDArray[Any], npt.NDArray[np.float32], npt.NDArray[Any]]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    held = np.arange(len(x32)) % 2 == 0
    return x32[~held], np.asarray(y)[~held], x32[held], np.asarray(y)[held]


def _logreg_onnx(train_x: npt.NDArray[np.float32], train_y: npt.NDArray[Any], c: float, features: int = 0) -> Any:
    """Standardised logistic regression; ``features`` > 0 keeps only that many of the most telling inputs
    (the ONNX model still takes all of them)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.feature_selection import SelectKBest, f_classif
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    select = [SelectKBest(f_classif, k=features)] if features else []
    model = make_pipeline(StandardScaler(), *select, LogisticRegression(C=c, max_iter=1000, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(train_x, train_y)
    return convert_sklearn(
        model,
        initial_types=[(INPUT, FloatTensorType([None, train_x.shape[1]]))],
        options={id(model.steps[-1][1]): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )


def slow_variant(onx: Any) -> Any:
    """The same model with a side branch that costs CPU on every request and changes no output.

    The branch depends on the input (so onnxruntime cannot fold it into a constant at load time):
    a ``SLOW_SIZE``-square matrix filled with ``0 * sum(input) + 0.5`` is multiplied by itself
    ``SLOW_ROUNDS`` times; the sum of the result times zero is added to the probabilities.
    """
    from onnx import TensorProto, helper

    graph = onx.graph
    probs = next(o for o in graph.output if o.name == "probabilities")
    # Rename the producer of `probabilities` so the final Add can take its name.
    for node in graph.node:
        for i, out in enumerate(node.output):
            if out == probs.name:
                node.output[i] = "probabilities_fast"
    n = SLOW_SIZE
    inits = [
        helper.make_tensor("slow_shape", TensorProto.INT64, [2], [n, n]),
        helper.make_tensor("slow_zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("slow_half", TensorProto.FLOAT, [], [0.5]),
        helper.make_tensor("slow_scale", TensorProto.FLOAT, [], [1.0 / n]),
    ]
    nodes = [
        helper.make_node("ReduceSum", [INPUT], ["slow_sum"], keepdims=0),
        helper.make_node("Mul", ["slow_sum", "slow_zero"], ["slow_z"]),
        helper.make_node("Add", ["slow_z", "slow_half"], ["slow_fill"]),
        helper.make_node(
            "ConstantOfShape", ["slow_shape"], ["slow_ones"], value=helper.make_tensor("v", 1, [1], [1.0])
        ),
        helper.make_node("Mul", ["slow_ones", "slow_fill"], ["slow_m0"]),
    ]
    prev = "slow_m0"
    for i in range(SLOW_ROUNDS):
        nodes.append(helper.make_node("MatMul", [prev, "slow_m0"], [f"slow_p{i}"]))
        nodes.append(helper.make_node("Mul", [f"slow_p{i}", "slow_scale"], [f"slow_m{i + 1}"]))
        prev = f"slow_m{i + 1}"
    nodes += [
        helper.make_node("ReduceSum", [prev], ["slow_total"], keepdims=0),
        helper.make_node("Mul", ["slow_total", "slow_zero"], ["slow_nothing"]),
        helper.make_node("Add", ["probabilities_fast", "slow_nothing"], [probs.name]),
    ]
    graph.initializer.extend(inits)
    graph.node.extend(nodes)
    return onx


HOLDOUT = "wine-holdout.csv"
HOLDOUT_LABEL = "quality"
DIGITS_HOLDOUT = "digits-holdout.csv"
DIGITS_LABEL = "digit"


def _number(v: float) -> str:
    """A feature as CSV text, exact and short: digits' pixels are whole numbers (the model store is a
    ConfigMap, and `kubectl apply` keeps a copy of it in an annotation of at most 256 KiB)."""
    x = float(v)
    return str(int(x)) if x.is_integer() else repr(x)


def _holdout_csv(rows: npt.NDArray[np.float32], labels: npt.NDArray[Any], label: str) -> bytes:
    """A labelled holdout an evaluate step scores both models on: features f0.., then the true class."""
    lines = [",".join([*(f"f{i}" for i in range(rows.shape[1])), label])]
    lines += [",".join([*map(_number, row), str(int(c))]) for row, c in zip(rows, labels, strict=True)]
    return ("\n".join(lines) + "\n").encode()


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def build(out: Path) -> dict[str, Any]:
    """Builds every sample model and the profile into OUT; returns (and writes) the manifest."""
    from mlrollout_serving import profile as prof

    out.mkdir(parents=True, exist_ok=True)
    train_x, train_y, held, held_y = _wine()
    v1 = _logreg_onnx(train_x, train_y, c=1.0)
    v2 = _logreg_onnx(train_x, train_y, c=0.5)
    v3 = slow_variant(_logreg_onnx(train_x, train_y, c=0.5))
    v4 = _logreg_onnx(train_x, train_y, c=1.0, features=2)
    digits_x, digits_y, digits_held, digits_held_y = _digits()
    files = {
        "wine-v1.onnx": v1.SerializeToString(),
        "wine-v2.onnx": v2.SerializeToString(),
        "wine-v3-slow.onnx": v3.SerializeToString(),
        "wine-v4-plausible.onnx": v4.SerializeToString(),
        "digits-v1.onnx": _logreg_onnx(digits_x, digits_y, c=1.0).SerializeToString(),
        "digits-v2.onnx": _logreg_onnx(digits_x, digits_y, c=0.5).SerializeToString(),
        "digits-v3-worse.onnx": _logreg_onnx(digits_x, digits_y, c=1.0, features=10).SerializeToString(),
        DIGITS_HOLDOUT: _holdout_csv(digits_held, digits_held_y, DIGITS_LABEL),
    }
    digests = {name: _write(out / name, data) for name, data in files.items()}
    x64 = train_x.astype(np.float64)
    profile = prof.build(x64, predictions=prof.predictions_for(out / "wine-v1.onnx", x64))
    prof.write(profile, out / "wine-profile.json")
    digests["wine-profile.json"] = hashlib.sha256((out / "wine-profile.json").read_bytes()).hexdigest()
    digests[HOLDOUT] = _write(out / HOLDOUT, _holdout_csv(held, held_y, HOLDOUT_LABEL))
    manifest = {
        "files": digests,
        "rows": held.astype(float).tolist(),
        "labels": [int(c) for c in held_y.tolist()],
        "features": int(train_x.shape[1]),
        "classes": sorted(int(c) for c in set(train_y.tolist())),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def cached(out: Path) -> dict[str, Any]:
    """The models in OUT, built once per version of this file.

    skl2onnx names graph nodes uniquely, so two builds give different bytes (and sha256s). The demo and
    the scenarios share one model store, so they must share one build: this one.
    """
    recipe = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    stamp = out / ".recipe"
    if stamp.exists() and stamp.read_text() == recipe and (out / "manifest.json").exists():
        manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
        return manifest
    manifest = build(out)
    stamp.write_text(recipe)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    manifest = build(args.out)
    for name, digest in manifest["files"].items():
        print(f"{name}  sha256={digest}")


if __name__ == "__main__":
    main()
