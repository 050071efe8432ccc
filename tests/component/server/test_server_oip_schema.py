"""schemathesis runs the Open Inference Protocol's REST description against a real model server.

The description is MLServer's ``dataplane.json`` (tests/support/oip.py: pinned by digest, corrected where
it cannot be used as written). What runs, and why:

- **Operations**: the nine the server implements - server live, ready and metadata; model metadata and
  model ready, with and without a version; infer, with and without a version. Not ``infer_stream``,
  ``generate`` or ``generate_stream`` (MLServer's own extensions).
- **Phases**: examples (valid wine requests added to the description, so the success responses are
  checked as well), coverage (schemathesis' systematic boundary and schema-violating values, and methods
  the description does not list) and fuzzing, positive and negative. Not stateful: the description
  declares no links between operations.
- **Inputs**: the path's model name and version are the served ones 9 times in 10 (random otherwise), and
  so are the input name, datatype and output names in request bodies 8 times in 10, so most requests get
  past routing into the codec instead of all being "unknown model".
- **Checks**: ``not_a_server_error`` (no 5xx, ever), ``response_schema_conformance`` and
  ``content_type_conformance`` (every documented response matches its schema and media type),
  ``response_headers_conformance``, ``negative_data_rejection`` (a request that violates the schema is
  refused with a 4xx) and ``unsupported_method`` (405 with ``Allow`` for methods the description does not
  list). Not ``status_code_conformance``: the description lists 404 for an unknown model and only 200 for
  readiness, while the protocol's text says errors are "typically 400" and our readiness is 503 when not
  ready (what Kubernetes probes need); not ``positive_data_acceptance``: a schema-valid request is still
  refused when it does not fit the served model (a random input name), as it must be.
- **Determinism and budget**: a fixed seed, deterministic generation (Hypothesis' derandomize) and no
  example database, so CI sends the same requests every run; ``MAX_EXAMPLES`` per operation and phase keeps
  the run around 15 s on a loaded 2-core machine, and the test's timeout caps it at 3 minutes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from tests.support.models import BuiltModel
from tests.support.oip import SERVER_OPERATIONS, description, fuzz
from tests.support.procs import ServerProcess, serve_model

pytestmark = pytest.mark.component

SEED = 20261204
MAX_EXAMPLES = 100
EXAMPLES = {
    "one row": {"id": "r-1", "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 13], "data": [0.5] * 13}]},
    "two nested rows, one output": {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 13], "data": [[0.1] * 13, [0.2] * 13]}],
        "outputs": [{"name": "probabilities"}],
    },
    "parameters and integers": {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 13], "data": [1] * 13, "parameters": {}}],
        "parameters": {"binary_data_output": False},
    },
}


@pytest.fixture(scope="module")
def served(wine_model: BuiltModel) -> Iterator[ServerProcess]:
    with serve_model(wine_model, name="wine", version="1") as s:
        yield s


def config(base_url: str) -> dict[str, object]:
    """schemathesis.toml, as a dict."""
    served = {
        "path.model_name": ("model", 0.9),
        "path.model_version": ("version", 0.9),
        "body.inputs[*].name": ("input", 0.8),
        "body.inputs[*].datatype": ("datatype", 0.8),
        "body.outputs[*].name": ("output", 0.8),
    }
    checks = [
        "not_a_server_error",
        "response_schema_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "negative_data_rejection",
        "unsupported_method",
    ]
    return {
        "seed": SEED,
        "base-url": base_url,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none", "mode": "all"},
        "phases": {"stateful": {"enabled": False}},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in checks}},
        "dictionaries": {
            "model": {"values": ["wine"]},
            "version": {"values": ["1"]},
            "input": {"values": ["input"]},
            "datatype": {"values": ["FP32"]},
            "output": {"values": ["label", "probabilities"]},
        },
        "parameters": {key: {"dictionary": name, "probability": p} for key, (name, p) in served.items()},
    }


@pytest.mark.timeout(180)
def test_the_protocol_description_holds_for_the_model_server(served: ServerProcess) -> None:
    found = fuzz(description(EXAMPLES), config(served.url), SERVER_OPERATIONS)
    assert found.errors == []
    assert found.failures == [], "\n".join(found.failures)
    assert found.cases >= 500
    served_ops = {operation for operation, _ in found.statuses}
    assert len(served_ops) == len(SERVER_OPERATIONS), sorted(served_ops)
    infer_ok = sum(n for (operation, status), n in found.statuses.items() if "infer" in operation and status == 200)
    assert infer_ok >= len(EXAMPLES) * 2, json.dumps(sorted(map(str, found.statuses.items())))
    assert not any(status >= 500 for _, status in found.statuses)
