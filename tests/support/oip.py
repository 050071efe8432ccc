"""The Open Inference Protocol's REST description (OpenAPI 3), for schemathesis runs against our servers.

The protocol's own repository (kserve/open-inference-protocol) is not published on a package registry,
so we take the description MLServer ships in its wheel on PyPI (Seldon co-authored the protocol; the file
is ``mlserver/rest/openapi/dataplane.json``, Apache-2.0). The wheel is downloaded once into the build
cache, checked against the pinned digests, and nothing of it is committed to this repository.

``description()`` corrects what schemathesis cannot use as written and ``fuzz()`` runs schemathesis' engine
on it against a server, collecting every failed check and error.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WHEEL = "mlserver-1.7.1-py3-none-any.whl"
WHEEL_SHA256 = "d2ac7502915bb5311343a878aa1fb614f9b0f2436ee550a6137c1872a4dca193"
MEMBER = "mlserver/rest/openapi/dataplane.json"
SPEC_SHA256 = "7e7e5c1acc538233bb125ee3dd50cb46063e191d83d82ce1a556e2b13cc1d97b"
_XDG = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
CACHE = Path(os.environ.get("MLROLLOUT_CACHE") or Path(_XDG) / "mlrollout") / "oip"  # as e2e/cluster/lib.sh


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def spec_path() -> Path:
    """The verified ``dataplane.json``, downloaded from PyPI on first use (fails loudly without it)."""
    spec = CACHE / "dataplane.json"
    if spec.exists() and _sha256(spec.read_bytes()) == SPEC_SHA256:
        return spec
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        name, version = WHEEL.split("-")[:2]
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--dest", tmp, f"{name}=={version}"],
            check=True, timeout=300,
        )  # fmt: skip
        wheel = (Path(tmp) / WHEEL).read_bytes()
    if _sha256(wheel) != WHEEL_SHA256:
        raise RuntimeError(f"{WHEEL} from PyPI does not have the pinned sha256 {WHEEL_SHA256}")
    data = zipfile.ZipFile(io.BytesIO(wheel)).read(MEMBER)
    if _sha256(data) != SPEC_SHA256:
        raise RuntimeError(f"{MEMBER} in {WHEEL} does not have the pinned sha256 {SPEC_SHA256}")
    partial = spec.with_suffix(".tmp")
    partial.write_bytes(data)
    partial.replace(spec)
    return spec


# --- running schemathesis against a server -------------------------------------------------------------

SERVER_OPERATIONS = (
    "server-live",
    "server-ready",
    "server-metadata",
    "model-metadata",
    "model-version-metadata",
    "model-ready",
    "model-version-ready",
    "model-inference",
    "model-version-inference",
)
"""The description's operations a model server implements (not infer_stream, generate, generate_stream)."""
INFER_PATHS = ("/v2/models/{model_name}/infer", "/v2/models/{model_name}/versions/{model_version}/infer")


def description(infer_examples: Mapping[str, Any]) -> dict[str, Any]:
    """The verified description, corrected where it cannot be used as written, with request examples.

    - ``TensorData`` is ``oneOf: [array, {"type": "bytes"}]``; "bytes" is no JSON Schema type (schemathesis
      refuses the operation), and JSON carries no bytes anyway (binary tensors travel outside the JSON,
      per the binary tensor data extension): an array.
    - The optional ``id``, ``parameters`` and ``outputs`` may be ``null``, as in MLServer's own request
      model (``mlserver.types.InferenceRequest``: ``id`` and ``parameters`` are "string or null",
      "object or null"); our servers read null as absent.
    - ``Parameters`` is any object: servers ignore the parameters they do not use, MLServer's
      ``content_type`` and ``headers`` among them.
    - ``infer_examples`` (name: request body) become the infer operations' ``examples``, so the examples
      phase sends requests the served model accepts and the success responses are checked too.
    """
    doc: dict[str, Any] = json.loads(spec_path().read_text())
    schemas = doc["components"]["schemas"]
    schemas["TensorData"] = {"title": "TensorData", "type": "array"}
    schemas["Parameters"] = {"title": "Parameters", "type": "object", "additionalProperties": True}
    for name, key in [
        ("InferenceRequest", "id"),
        ("InferenceRequest", "parameters"),
        ("InferenceRequest", "outputs"),
        ("RequestInput", "parameters"),
        ("RequestOutput", "parameters"),
    ]:
        prop = schemas[name]["properties"][key]
        schemas[name]["properties"][key] = {"nullable": True, **({"allOf": [prop]} if "$ref" in prop else prop)}
    for path in INFER_PATHS:
        media = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        media["examples"] = {name: {"value": body} for name, body in infer_examples.items()}
    return doc


WINE_EXAMPLES: dict[str, Any] = {
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
"""Valid requests for the wine model (tests/support/models.py, served as ``wine`` version ``1``): the
examples ``description()`` adds to the infer operations."""


def wine_config(base_url: str, seed: int = 20261204, max_examples: int = 100) -> dict[str, Any]:
    """schemathesis.toml, as a dict, for a run against the wine model at ``base_url`` (a model server, or a
    gateway in front of one).

    The path's model name and version are the served ones 9 times in 10 (random otherwise), and so are the
    input name, datatype and output names in request bodies 8 times in 10, so most requests get past
    routing into the codec. Checks: no 5xx; responses, their media types and headers as described;
    schema-violating requests refused; 405 with ``Allow``. Deterministic: a fixed seed, no example database.
    """
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
        "seed": seed,
        "base-url": base_url,
        "generation": {"max-examples": max_examples, "deterministic": True, "database": "none", "mode": "all"},
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


@dataclass
class Findings:
    """What a schemathesis run saw: how many requests, their statuses, and every failed check or error."""

    cases: int = 0
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    """(operation, status) -> requests."""
    failures: list[str] = field(default_factory=list)
    """One line per distinct (operation, check, title), with the first request that showed it."""
    errors: list[str] = field(default_factory=list)


def fuzz(doc: dict[str, Any], config: dict[str, Any], operations: Sequence[str]) -> Findings:
    """Run schemathesis' engine (its examples, coverage and fuzzing phases, as configured) on ``operations``
    of ``doc`` and collect what it found; ``config`` is schemathesis.toml's content as a dict."""
    import schemathesis
    from schemathesis.engine import events

    loaded = schemathesis.openapi.from_dict(doc, config=schemathesis.config.SchemathesisConfig.from_dict(config))
    found = Findings()
    seen: set[tuple[str, str, str]] = set()
    for event in schemathesis.engine.from_schema(loaded.include(operation_id=list(operations))).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            recorder = event.recorder
            found.cases += len(recorder.cases)
            for interaction in recorder.interactions.values():
                if interaction.response is not None:
                    found.statuses[(recorder.label, interaction.response.status_code)] += 1
            for case_id, checks in recorder.checks.items():
                for check in checks:
                    if check.failure_info is None:
                        continue
                    key = (recorder.label, check.name, check.failure_info.failure.title)
                    if key not in seen:
                        seen.add(key)
                        found.failures.append(f"{' / '.join(key)}: {_exchange(recorder.interactions.get(case_id))}")
        elif isinstance(event, events.NonFatalError):
            found.errors.append(f"{event.label}: {event.info.title}: {str(event.value)[:300]}")
        elif isinstance(event, events.FatalError):
            found.errors.append(f"fatal: {event.exception!r}")
    return found


def _exchange(interaction: Any) -> str:
    if interaction is None:
        return "(no request recorded)"
    request, response = interaction.request, interaction.response
    body = (request.body or b"")[:300]
    answer = "no response" if response is None else f"{response.status_code} {(response.content or b'')[:300]!r}"
    return f"{request.method} {request.uri} {body!r} -> {answer}"


def assert_wine_protocol_holds(base_url: str) -> None:
    """Fuzz the nine operations with the wine examples at ``base_url`` and hold the findings to the suite's
    bar: no errors or failed checks, 500+ cases, every operation served, the examples answered, no 5xx."""
    found = fuzz(description(WINE_EXAMPLES), wine_config(base_url), SERVER_OPERATIONS)
    assert found.errors == []
    assert found.failures == [], "\n".join(found.failures)
    assert found.cases >= 500
    served_ops = {operation for operation, _ in found.statuses}
    assert len(served_ops) == len(SERVER_OPERATIONS), sorted(served_ops)
    infer_ok = sum(n for (operation, status), n in found.statuses.items() if "infer" in operation and status == 200)
    assert infer_ok >= len(WINE_EXAMPLES) * 2, json.dumps(sorted(map(str, found.statuses.items())))
    assert not any(status >= 500 for _, status in found.statuses)
