"""The Open Inference Protocol v2 data plane: routes, metadata, health and inference.

Transport-neutral: it takes a :class:`~mlrollout_serving.server.http.Request` and returns a ``Reply`` or
a future of one. Validation lives in ``codec``, scheduling in ``batching``, counting in ``metrics``.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import time
import urllib.parse
import zlib
from typing import Any

from mlrollout_serving.contract.predicted import PREDICTED_HEADER
from mlrollout_serving.contract.process import HEALTH_LIVE, HEALTH_READY, METRICS_PATH
from mlrollout_serving.contract.profile import Profile
from mlrollout_serving.server import codec
from mlrollout_serving.server.batching import Array, Batcher, BatchSettings, Callback
from mlrollout_serving.server.config import Settings
from mlrollout_serving.server.cpus import usable_cpus
from mlrollout_serving.server.http import Deferred, Reply, Request
from mlrollout_serving.server.http import error_reply as error
from mlrollout_serving.server.loading import LoadedModel
from mlrollout_serving.server.metrics import ServerMetrics
from mlrollout_serving.server.signature import output_roles

SERVER_NAME = "mlrollout-serve"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data"]
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

log = logging.getLogger(__name__)


def _unquote(segment: str) -> str:
    return urllib.parse.unquote(segment) if "%" in segment else segment


def not_allowed(req: Request, allowed: str) -> Reply:
    """405, with the ``Allow`` header RFC 9110 requires of it."""
    reply = error(405, f"{req.method} is not allowed on {codec.clip(req.path)}")
    reply.headers = (("allow", allowed),)
    return reply


def _json(doc: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(doc, separators=(",", ":")).encode())


class App:
    def __init__(self, settings: Settings, metrics: ServerMetrics, executor: concurrent.futures.Executor) -> None:
        self.settings = settings
        self.metrics = metrics
        self.executor = executor
        self.model: LoadedModel | None = None
        self.batcher: Batcher | None = None
        self.ready = False
        """The model is loaded and warmed up: inference requests are served."""
        self.loading = "starting"
        """Why the server is not ready yet (downloading, with progress; loading): the reason in /ready's 503."""
        self.draining = False
        """SIGTERM arrived (set by the signal handler itself): readiness fails so no new traffic is routed
        here, requests are still served."""
        self._metadata = b""
        self._infer_paths: frozenset[str] = frozenset()
        self._server_meta = _json({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS})
        self._live = _json({"live": True})

    def set_model(self, model: LoadedModel, profile: Profile | None) -> None:
        """Install a loaded, verified, warmed-up model and become ready."""
        s = self.settings
        sig = model.signature
        self.model = model
        self.metrics.sha256 = model.sha256
        self.metrics.configure(output_roles(sig, s.prediction_kind), sig, profile, s.prediction_buckets)
        batching = s.batching == "on" or (s.batching == "auto" and sig.batchable)
        settings = BatchSettings(
            enabled=batching and sig.batchable,
            pad_single_row=sig.batchable,
            max_rows=s.max_batch_size,
            max_wait=s.max_batch_wait_ms / 1000.0,
            inline_elements=s.inline_elements,
            inline_seconds=s.inline_max_ms / 1000.0,
            overlap=usable_cpus() > 1,
        )
        log.info(
            "batches above %d input values run on a worker thread%s",
            settings.inline_elements,
            "" if settings.overlap else f" unless known to take at most {s.inline_max_ms:g} ms (one usable CPU)",
        )
        output_names = [o.name for o in sig.outputs]
        # The codec already validated names, dtypes and shapes, so skip the Python wrapper's re-checks
        # and call the session's C++ binding directly when this onnxruntime version exposes it.
        raw_run = getattr(model.session, "_sess", model.session).run

        def run(feed: dict[str, Array]) -> list[Array]:
            outputs: list[Array] = raw_run(output_names, feed, None)
            return outputs

        self.batcher = Batcher(run, settings, self.executor, self.metrics.predictions, self.metrics.batch)
        self._metadata = json.dumps(
            {
                "name": s.model_name,
                "versions": [s.model_version],
                "platform": "onnx_onnxv1",
                "inputs": [t.metadata() for t in sig.inputs],
                "outputs": [t.metadata() for t in sig.outputs],
            },
            separators=(",", ":"),
        ).encode()
        self._output_specs = {o.name: o for o in sig.outputs}
        self._output_pos = {o.name: i for i, o in enumerate(sig.outputs)}
        self._all_json = sig.default_outputs[False]
        self._all_specs = sig.outputs
        self._all_false = (False,) * len(sig.outputs)
        # The infer paths of this model, matched whole before any splitting (names with '/' or '%' take the
        # general route below, which unquotes them).
        self._infer_paths = frozenset(
            f"/v2/models/{s.model_name}{v}/infer"
            for v in ("", f"/versions/{s.model_version}")
            if not any(c in s.model_name + s.model_version for c in "/%?#")
        )
        self.ready = True

    # --- routing ---

    def handle(self, req: Request) -> Reply | Deferred:
        if req.path in self._infer_paths and req.method == "POST":  # the hot path, without the routing below
            return self._infer_known(req)
        if req.method == "HEAD":  # a 405 (or 404), without a body: a client reads none after a HEAD's reply
            reply = self._route(req)
            return Reply(reply.status, b"", reply.content_type, reply.headers) if type(reply) is Reply else reply
        return self._route(req)

    def _route(self, req: Request) -> Reply | Deferred:
        if req.path == HEALTH_LIVE:
            return self._get(req, lambda: self._live)
        if req.path == HEALTH_READY:
            return self._get(req, self._ready_reply)
        parts = req.path.split("/")
        if len(parts) < 2 or parts[0] or parts[1] != "v2":
            if req.path == METRICS_PATH:
                return self._get(req, lambda: Reply(200, self.metrics.render(), METRICS_TYPE))
            return error(404, f"no such path: {codec.clip(req.path)}")
        if len(parts) == 2 or (len(parts) == 3 and parts[2] == ""):
            return self._get(req, lambda: self._server_meta)
        if parts[2] == "models" and len(parts) >= 4:
            return self._model_route(req, parts[3:])
        return error(404, f"no such path: {codec.clip(req.path)}")

    def _get(self, req: Request, make: Any) -> Reply:
        if req.method != "GET":
            return not_allowed(req, "GET")
        reply: Reply = make()
        return reply

    def _ready_reply(self) -> Reply:
        ready = self.ready and not self.draining
        if ready:
            return _json({"ready": True})
        return _json({"ready": False, "reason": "draining" if self.draining else self.loading}, 503)

    def _model_route(self, req: Request, rest: list[str]) -> Reply | Deferred:
        name = _unquote(rest[0])
        version: str | None = None
        tail = rest[1:]
        if len(tail) >= 2 and tail[0] == "versions":
            version, tail = _unquote(tail[1]), tail[2:]
        if tail == ["infer"]:
            if req.method != "POST":
                return not_allowed(req, "POST")
            return self._infer(req, name, version)
        if tail not in ([], ["ready"]):
            return error(404, f"no such path: {codec.clip(req.path)}")
        if req.method != "GET":
            return not_allowed(req, "GET")
        problem = self._unknown(name, version)
        if problem is not None:
            return problem
        if tail == ["ready"]:
            ready = self.ready and not self.draining
            doc = {"name": name, "ready": ready}
            return _json(doc, 200 if ready else 503)
        if self.model is None:
            return error(503, "the model is not loaded yet")
        return Reply(200, self._metadata)

    def _unknown(self, name: str, version: str | None) -> Reply | None:
        if name != self.settings.model_name:
            return error(400, f"unknown model '{codec.clip(name)}' (this server serves '{self.settings.model_name}')")
        if version is not None and version != self.settings.model_version:
            return error(
                400,
                f"unknown version '{codec.clip(version)}' of model '{name}' (served: '{self.settings.model_version}')",
            )
        return None

    # --- inference ---

    def too_large(self, req: Request) -> Reply:
        reply = error(413, f"request body is larger than the limit of {self.settings.max_body_bytes} bytes")
        if req.path.endswith("/infer"):
            self.metrics.request(413, time.perf_counter() - req.started)
        return reply

    def _answer(self, req: Request, reply: Reply) -> Reply:
        self.metrics.request(reply.status, time.perf_counter() - req.started)
        return reply

    def _body(self, req: Request) -> bytes:
        encoding = req.headers.get("content-encoding", "identity").lower()
        if encoding == "identity":
            return req.body
        if encoding not in ("gzip", "deflate"):
            raise codec.RequestError(f"unsupported Content-Encoding {codec.shown(encoding)}")
        d = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
        try:
            body = d.decompress(req.body, self.settings.max_body_bytes + 1)
        except zlib.error as e:
            raise codec.RequestError(f"cannot decompress the {encoding} body: {e}") from None
        if len(body) > self.settings.max_body_bytes or d.unconsumed_tail:
            raise codec.RequestError("decompressed body is over the limit", status=413)
        return body

    def _infer(self, req: Request, name: str, version: str | None) -> Reply | Deferred:
        problem = self._unknown(name, version)
        if problem is not None:
            return self._answer(req, problem)
        return self._infer_known(req)

    def _infer_known(self, req: Request) -> Reply | Deferred:
        """Infer for a request whose model name and version are this server's."""
        batcher = self.batcher
        if not self.ready or batcher is None or self.model is None:
            return self._answer(req, error(503, "the model is not ready"))
        if batcher.queued >= self.settings.max_inflight:
            return self._answer(req, error(503, "too many requests in flight; retry later"))
        headers = req.headers
        raw_length = headers.get("inference-header-content-length")
        try:
            header_length = None if raw_length is None else codec.header_length(raw_length)
            body = req.body if "content-encoding" not in headers else self._body(req)
            decoded = codec.decode_infer(body, self.model.signature, header_length, self.settings.allow_non_finite)
        except codec.RequestError as e:
            return self._answer(req, error(e.status, str(e)))
        try:
            outputs = batcher.run_now(decoded.inputs, decoded.rows)
        except Exception as e:  # the same answer as when a queued run fails
            return self._reply(req, decoded, e)
        if outputs is not None:  # a lone request ran at once: answer without a deferred reply
            return self._reply(req, decoded, outputs)
        result = Deferred()

        def answer(outputs: list[Array] | BaseException) -> None:
            result.resolve(self._reply(req, decoded, outputs))

        batcher.enqueue(decoded.inputs, decoded.rows, Callback(answer))
        return result

    def _reply(self, req: Request, decoded: codec.InferRequest, outputs: list[Array] | BaseException) -> Reply:
        """The reply to a decoded request given its outputs (or the failure of its run); counted in the metrics."""
        try:
            if isinstance(outputs, BaseException):
                reply = error(500, f"inference failed: {outputs}")
            else:
                if decoded.outputs is self._all_json:  # no 'outputs' in the request: all of them, as JSON
                    selected = list(zip(self._all_specs, outputs, self._all_false, strict=True))
                else:
                    pos, specs = self._output_pos, self._output_specs
                    selected = [(specs[o.name], outputs[pos[o.name]], o.binary) for o in decoded.outputs]
                s = self.settings
                enc = codec.encode_infer(s.model_name, s.model_version, decoded.id, selected)
                if enc.header_length is None:
                    predicted = codec.predicted_header(selected)  # the gateway signs it unread (contract.predicted)
                    reply = Reply(200, enc.body) if predicted is None else Reply(200, enc.body, headers=(
                        (PREDICTED_HEADER, predicted),))  # fmt: skip
                else:
                    headers = (("inference-header-content-length", str(enc.header_length)),)
                    reply = Reply(200, enc.body, "application/octet-stream", headers)
        except Exception as e:  # the batcher calls this inline: never let it raise into a batch
            log.exception("encoding the response failed")
            reply = error(500, f"encoding the response failed: {e}")
        self.metrics.request(reply.status, time.perf_counter() - req.started)
        return reply
