"""A model's tensor signature and what each output means for metrics.

Pure data derived from an onnxruntime session: the codec validates requests against it, the batcher asks it
whether rows can be merged, and the metrics ask it which outputs are class labels, probabilities or
regression values.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

# onnxruntime type string -> (Open Inference Protocol datatype, numpy dtype)
ORT_TYPES: dict[str, tuple[str, np.dtype[Any]]] = {
    "tensor(float)": ("FP32", np.dtype(np.float32)),
    "tensor(double)": ("FP64", np.dtype(np.float64)),
    "tensor(float16)": ("FP16", np.dtype(np.float16)),
    "tensor(int8)": ("INT8", np.dtype(np.int8)),
    "tensor(int16)": ("INT16", np.dtype(np.int16)),
    "tensor(int32)": ("INT32", np.dtype(np.int32)),
    "tensor(int64)": ("INT64", np.dtype(np.int64)),
    "tensor(uint8)": ("UINT8", np.dtype(np.uint8)),
    "tensor(uint16)": ("UINT16", np.dtype(np.uint16)),
    "tensor(uint32)": ("UINT32", np.dtype(np.uint32)),
    "tensor(uint64)": ("UINT64", np.dtype(np.uint64)),
    "tensor(bool)": ("BOOL", np.dtype(np.bool_)),
    "tensor(string)": ("BYTES", np.dtype(object)),
}
DATATYPE_DTYPES: dict[str, np.dtype[Any]] = {dt: np_dtype for dt, np_dtype in ORT_TYPES.values()}

Role = Literal["label", "probabilities", "value", "other"]
PredictionKind = Literal["auto", "classification", "regression"]


class TensorSpec(NamedTuple):
    """One input or output: name, OIP datatype, numpy dtype and shape (``None`` = dynamic dimension).

    It and :class:`RequestedOutput` are named tuples, not dataclasses: the evaluation Job imports them, and a
    dataclass's generated methods cost a short process's start-up about 0.5 ms a class (docs/evaluation.md).
    (:class:`Signature` caches properties, which a tuple cannot hold.)"""

    name: str
    datatype: str
    dtype: np.dtype[Any]
    shape: tuple[int | None, ...]

    @property
    def oip_shape(self) -> list[int]:
        """The shape as the protocol reports it: ``-1`` for dynamic dimensions."""
        return [-1 if d is None else d for d in self.shape]

    @property
    def is_float(self) -> bool:
        return self.dtype.kind == "f"

    @property
    def batched(self) -> bool:
        """True when the first dimension is dynamic, i.e. rows of several requests can be stacked."""
        return len(self.shape) >= 1 and self.shape[0] is None

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.oip_shape}


class RequestedOutput(NamedTuple):
    """An output a request asks for, and whether it wants it in binary (the binary tensor extension)."""

    name: str
    binary: bool


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @functools.cached_property
    def batchable(self) -> bool:
        """All inputs and outputs have a dynamic leading (batch) dimension."""
        return all(t.batched for t in (*self.inputs, *self.outputs))

    @functools.cached_property
    def default_outputs(self) -> dict[bool, tuple[RequestedOutput, ...]]:
        """All outputs, as JSON (``False``) or binary (``True``): what a request naming none gets."""
        return {b: tuple(RequestedOutput(o.name, b) for o in self.outputs) for b in (False, True)}

    @functools.cached_property
    def _inputs_by_name(self) -> dict[str, TensorSpec]:
        return {t.name: t for t in self.inputs}

    @functools.cached_property
    def _outputs_by_name(self) -> dict[str, TensorSpec]:
        return {t.name: t for t in self.outputs}

    def input(self, name: str) -> TensorSpec | None:
        return self._inputs_by_name.get(name)

    def output(self, name: str) -> TensorSpec | None:
        return self._outputs_by_name.get(name)


def _dims(shape: Sequence[Any]) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)


def _spec(node: Any) -> TensorSpec:
    if node.type not in ORT_TYPES:
        raise ValueError(f"tensor {node.name!r} has unsupported type {node.type}")
    datatype, dtype = ORT_TYPES[node.type]
    return TensorSpec(name=node.name, datatype=datatype, dtype=dtype, shape=_dims(node.shape))


def from_session(session: Any) -> Signature:
    """Read the signature of an ``onnxruntime.InferenceSession``."""
    return Signature(
        inputs=tuple(_spec(n) for n in session.get_inputs()),
        outputs=tuple(_spec(n) for n in session.get_outputs()),
    )


def _is_column(spec: TensorSpec) -> bool:
    return len(spec.shape) == 1 or (len(spec.shape) == 2 and spec.shape[1] == 1)


def output_roles(sig: Signature, kind: PredictionKind = "auto") -> dict[str, Role]:
    """Decide what each output means for the prediction metrics.

    A model is a classifier when asked to be, or (``auto``) when it has an integer or string column output
    (the predicted label). A classifier's float ``[N, C]`` outputs are class probabilities. Otherwise float
    outputs are regression values.
    """
    has_label = any(o.dtype.kind in "iuO" and _is_column(o) for o in sig.outputs)
    classifier = kind == "classification" or (kind == "auto" and has_label)
    roles: dict[str, Role] = {}
    for o in sig.outputs:
        if o.dtype.kind in "iuO" and _is_column(o) and classifier:
            roles[o.name] = "label"
        elif o.is_float and classifier and len(o.shape) == 2 and o.shape[1] != 1:
            roles[o.name] = "probabilities"
        elif o.is_float and not classifier and len(o.shape) in (1, 2):
            roles[o.name] = "value"
        else:
            roles[o.name] = "other"
    return roles
