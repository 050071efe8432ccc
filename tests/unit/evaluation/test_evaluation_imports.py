"""What the evaluation Job's process imports before it reads a byte: no pydantic (docs/evaluation.md,
"Throughput": importing it and building the wire models cost the Job about 0.15 s, half of what a plain
onnxruntime loop takes for 100k rows). A fresh interpreter, since this one has pydantic loaded already;
the component tier checks a whole run of the Job the same way."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
import {module}
print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "pydantic_core"))))
print("{module}" in sys.modules)
"""


@pytest.mark.parametrize(
    "module",
    [
        "mlrollout_serving.evaluation.cli",  # the Job's entry point (mlrollout-evaluate)
        "mlrollout_serving.contract.evaluation",  # the wire format the Job reads and writes
    ],
)
def test_the_job_path_imports_no_pydantic(module: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()
    assert out == ["", "True"]


def test_the_job_entry_point_leaves_out_what_only_some_runs_need() -> None:
    """``tempfile`` (with ``shutil``, ``bz2``, ``lzma``) only for a download's directory, ``statistics`` (with
    ``fractions`` and ``decimal``) only for the bootstrap and DeLong: a few ms of every Job's start-up."""
    probe = (
        "import sys, mlrollout_serving.evaluation.cli\n"
        "print(sorted({'tempfile', 'shutil', 'statistics'} & {*sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
