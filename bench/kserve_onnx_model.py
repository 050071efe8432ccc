"""KServe's Python ModelServer serving an ONNX file through a small custom ``kserve.Model``.

The baseline of bench/serve_bench.py. Runs in the separate benchmark environment (.venv-bench) because
kserve pins older protobuf, kubernetes and python-dateutil than the project's dev environment. The model
runs onnxruntime with one intra-op thread, like mlrollout-serve, and returns every output as a tensor.
Latency logging and gRPC are switched off so KServe is measured at its fastest REST configuration.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server

DATATYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
}


class OnnxModel(Model):  # type: ignore[misc]
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return True

    async def predict(
        self,
        payload: InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        feed = {inp.name: inp.as_numpy() for inp in payload.inputs}
        results = self.session.run(None, feed)
        outputs = [
            InferOutput(name=name, shape=list(arr.shape), datatype=DATATYPES[arr.dtype], data=arr)
            for name, arr in zip(self.output_names, results, strict=True)
        ]
        return InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name, infer_outputs=outputs)


def main() -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    server = ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=1,
        enable_grpc=False,
        enable_latency_logging=False,
    )
    server.start([OnnxModel(args.model_name, args.model_path)])


if __name__ == "__main__":
    main()
