"""``mlrollout-serve``: one ONNX model over the Open Inference Protocol v2 (REST).

Modules, one job each: ``config`` (flags and env vars), ``loading`` (fetch, sha256, onnxruntime),
``signature`` (tensor specs, output roles), ``codec`` (strict request decoding, response encoding),
``batching`` (adaptive micro-batching), ``metrics`` (Prometheus series), ``http`` (HTTP/1.1 transport),
``app`` (routes), ``cli`` (process lifecycle). See docs/serving.md.
"""
