"""The layers `images/ocibuild.py` writes: deterministic, and the Python bytecode in them still valid.

A layer gives every file one fixed mtime; a ``.pyc`` checked by timestamp records its source's, so
without the rewrite every process in the images compiled each module it imported on every start."""

from __future__ import annotations

import importlib.util
import os
import py_compile
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[3]


def _ocibuild() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ocibuild", ROOT / "images" / "ocibuild.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tree(tmp_path: Path, mode: py_compile.PycInvalidationMode) -> Path:
    tree = tmp_path / f"tree-{mode.name}"
    (tree / "pkg").mkdir(parents=True)
    source = tree / "pkg" / "shipped.py"
    source.write_text("ANSWER = 42\n")
    os.utime(source, (1_778_563_047, 1_778_563_047))  # built long after the layer's fixed mtime
    py_compile.compile(str(source), doraise=True, invalidation_mode=mode)
    return tree


def _import_verbosely(root: Path) -> str:
    """What the interpreter says while importing pkg.shipped from ROOT without writing bytecode."""
    env = {"PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1", "PATH": os.environ["PATH"]}
    done = subprocess.run(
        [sys.executable, "-v", "-c", "import pkg.shipped as m; assert m.ANSWER == 42"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stderr


def test_timestamp_bytecode_stays_valid_in_the_layer(tmp_path: Path) -> None:
    ocibuild = _ocibuild()
    tree = _tree(tmp_path, py_compile.PycInvalidationMode.TIMESTAMP)
    layer = tmp_path / "layer.tar"
    ocibuild.write_layer(tree, layer)
    out = tmp_path / "out"
    with tarfile.open(layer) as tar:
        tar.extractall(out, filter="tar")  # keeps the layer's mtimes, as containerd does
    assert (out / "pkg" / "shipped.py").stat().st_mtime == ocibuild.FIXED_MTIME
    said = _import_verbosely(out)
    assert "code object from" in said and "shipped.cpython" in said
    assert "bytecode is stale" not in said
    # The same tree as it was built (the source's real mtime): the original file is still valid there.
    assert "bytecode is stale" not in _import_verbosely(tree)


def test_hash_checked_bytecode_and_other_files_are_written_as_they_are(tmp_path: Path) -> None:
    ocibuild = _ocibuild()
    tree = _tree(tmp_path, py_compile.PycInvalidationMode.UNCHECKED_HASH)
    pyc = next((tree / "pkg" / "__pycache__").iterdir())
    (tree / "pkg" / "data.pyc").write_bytes(b"\0" * 32)  # not in __pycache__: not bytecode we rewrite
    layer = tmp_path / "layer.tar"
    first = ocibuild.write_layer(tree, layer)
    with tarfile.open(layer) as tar:
        shipped = tar.extractfile(f"pkg/__pycache__/{pyc.name}")
        data = tar.extractfile("pkg/data.pyc")
        assert shipped is not None and data is not None
        assert shipped.read() == pyc.read_bytes()
        assert data.read() == b"\0" * 32
    assert ocibuild.write_layer(tree, tmp_path / "again.tar") == first  # deterministic


def test_the_rewrite_touches_only_the_recorded_mtime_of_bytecode_that_matches_its_source(tmp_path: Path) -> None:
    ocibuild = _ocibuild()
    source = tmp_path / "os.py"
    source.write_text("x = 1\n" + "#" * 5)  # 11 bytes
    os.utime(source, (1_778_563_047, 1_778_563_047))
    header = (3495).to_bytes(2, "little") + b"\r\n" + bytes(4) + (1_778_563_047).to_bytes(4, "little")
    pyc = header + (11).to_bytes(4, "little") + b"code"
    rel, st = "usr/lib/python3.11/__pycache__/os.cpython-311.pyc", source.stat()
    fixed = ocibuild.pyc_for_fixed_mtime(rel, pyc, st)
    assert fixed == header[:8] + ocibuild.FIXED_MTIME.to_bytes(4, "little") + pyc[12:]
    assert ocibuild.pyc_for_fixed_mtime("usr/lib/python3.11/os.py", pyc, st) == pyc
    assert ocibuild.pyc_for_fixed_mtime("__pycache__/short.pyc", b"tiny", st) == b"tiny"
    assert ocibuild.pyc_for_fixed_mtime(rel, pyc, None) == pyc  # no source beside it
    source.write_text("x = 2\n" + "#" * 5)  # edited after compiling, same size: stays stale
    assert ocibuild.pyc_for_fixed_mtime(rel, pyc, source.stat()) == pyc
