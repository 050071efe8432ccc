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
  example database, so CI sends the same requests every run; 100 examples per operation and phase keep
  the run around 15 s on a loaded 2-core machine, and the test's timeout caps it at 3 minutes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.support.models import BuiltModel
from tests.support.oip import assert_wine_protocol_holds
from tests.support.procs import ServerProcess, serve_model

pytestmark = pytest.mark.component


@pytest.fixture(scope="module")
def served(wine_model: BuiltModel) -> Iterator[ServerProcess]:
    with serve_model(wine_model, name="wine", version="1") as s:
        yield s


@pytest.mark.timeout(180)
def test_the_protocol_description_holds_for_the_model_server(served: ServerProcess) -> None:
    assert_wine_protocol_holds(served.url)
