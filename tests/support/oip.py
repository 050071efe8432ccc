"""The Open Inference Protocol's REST description (OpenAPI 3), for schemathesis runs against our servers.

The protocol's own repository (kserve/open-inference-protocol) is not published on a package registry,
so we take the description MLServer ships in its wheel on PyPI (Seldon co-authored the protocol; the file
is ``mlserver/rest/openapi/dataplane.json``, Apache-2.0). The wheel is downloaded once into the build
cache, checked against the pinned digests, and nothing of it is committed to this repository.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

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
