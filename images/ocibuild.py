"""A small OCI image writer: directory trees in, an OCI image-layout archive out.

Used where neither Docker nor a registry exists: the archive is imported with
`ctr -n k8s.io images import`. Layers are uncompressed, deterministic tars (sorted entries, fixed
mtime), so the same input tree always yields the same digest and warm runs can skip work by content.
A fixed mtime would make every timestamp-checked ``.pyc`` stale (it records its source's mtime), and the
images run with PYTHONDONTWRITEBYTECODE, so each process would compile every module it imports, the
standard library included, on every start: the layer writes those ``.pyc`` with the fixed mtime too.

    python3 ocibuild.py layer TREE OUT.tar            # one layer from a directory tree
    python3 ocibuild.py image --name REF --layer A.tar --layer B.tar [--entrypoint JSON] \
        [--cmd JSON] [--env K=V ...] [--workdir DIR] [--user UID] OUT.tar
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import stat
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Paths never shipped in a layer: the runtime provides them, or they are caches and documentation.
EXCLUDED_PREFIXES = (
    "dev/",
    "proc/",
    "sys/",
    "run/",
    "tmp/",
    "var/cache/apt/",
    "var/cache/debconf/",
    "var/lib/apt/lists/",
    "var/log/",
    "usr/share/doc/",
    "usr/share/man/",
    "usr/share/info/",
    "usr/share/locale/",
)
FIXED_MTIME = 0
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def excluded(rel: str) -> bool:
    """Whether a path relative to the tree root stays out of the layer (its directory is kept)."""
    return any(rel.startswith(p) for p in EXCLUDED_PREFIXES)


def pyc_for_fixed_mtime(rel: str, data: bytes, source: os.stat_result | None) -> bytes:
    """A ``__pycache__`` file checked by its source's timestamp (PEP 552 flags 0), recording FIXED_MTIME:
    the mtime its source has in the layer, so the interpreter keeps using it. Only when it is the bytecode
    of its source as it is in the tree (``source``: its stat; the mtime and size it records match); anything
    else is written unchanged (a stale file stays stale, and the interpreter compiles that module)."""
    if not rel.endswith(".pyc") or "/__pycache__/" not in f"/{rel}" or len(data) < 16 or source is None:
        return data
    if int.from_bytes(data[4:8], "little") != 0:  # hash-based: valid whatever the mtime
        return data
    recorded_mtime, recorded_size = int.from_bytes(data[8:12], "little"), int.from_bytes(data[12:16], "little")
    if recorded_mtime != int(source.st_mtime) & 0xFFFFFFFF or recorded_size != source.st_size & 0xFFFFFFFF:
        return data
    return data[:8] + FIXED_MTIME.to_bytes(4, "little") + data[12:]


def _source_of(pyc: Path) -> os.stat_result | None:
    """The stat of the ``.py`` a ``__pycache__/<name>.<tag>.pyc`` was compiled from, if it is there."""
    source = pyc.parent.parent / (pyc.name.split(".", 1)[0] + ".py")
    try:
        return source.stat()
    except OSError:
        return None


def walk(tree: Path) -> Iterator[Path]:
    """Every path under TREE in a stable order, directories before their contents."""
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted([*dirnames, *filenames]):
            yield base / name


def write_layer(tree: Path, out: Path) -> str:
    """Writes TREE as a deterministic tar to OUT and returns its sha256 digest ("sha256:...")."""
    tmp = out.with_suffix(".partial")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in walk(tree):
            rel = path.relative_to(tree).as_posix()
            if excluded(rel):
                continue
            info = tar.gettarinfo(str(path), arcname=rel)
            info.mtime = FIXED_MTIME
            info.uname = info.gname = ""
            if info.isreg() and rel.endswith(".pyc"):
                tar.addfile(info, io.BytesIO(pyc_for_fixed_mtime(rel, path.read_bytes(), _source_of(path))))
            elif info.isreg():
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
            elif stat.S_ISSOCK(path.lstat().st_mode):
                continue
            else:
                tar.addfile(info)
    digest = file_digest(tmp)
    tmp.replace(out)
    return digest


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _blob(blobs: Path, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (blobs / digest.split(":", 1)[1]).write_bytes(data)
    return digest, len(data)


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def write_image(
    name: str,
    layers: list[Path],
    out: Path,
    entrypoint: list[str] | None,
    cmd: list[str] | None,
    env: list[str],
    workdir: str | None,
    user: str | None,
) -> str:
    """Writes an OCI image-layout archive for NAME (a full reference) and returns the manifest digest."""
    with tempfile.TemporaryDirectory(dir=out.parent) as tmpdir:
        root = Path(tmpdir)
        blobs = root / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        layer_descs = []
        diff_ids = []
        for layer in layers:
            digest = file_digest(layer)
            target = blobs / digest.split(":", 1)[1]
            try:
                os.link(layer, target)
            except OSError:
                shutil.copyfile(layer, target)
            layer_descs.append({"mediaType": OCI_LAYER, "digest": digest, "size": layer.stat().st_size})
            diff_ids.append(digest)
        config: dict[str, object] = {
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": {
                k: v
                for k, v in {
                    "Entrypoint": entrypoint,
                    "Cmd": cmd,
                    "Env": env or None,
                    "WorkingDir": workdir,
                    "User": user,
                }.items()
                if v is not None
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        config_digest, config_size = _blob(blobs, _canonical(config))
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
            "layers": layer_descs,
        }
        manifest_digest, manifest_size = _blob(blobs, _canonical(manifest))
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": manifest_digest,
                    "size": manifest_size,
                    "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
            ],
        }
        (root / "index.json").write_bytes(_canonical(index))
        (root / "oci-layout").write_bytes(_canonical({"imageLayoutVersion": "1.0.0"}))
        partial = out.with_suffix(".partial")
        with tarfile.open(partial, "w") as tar:
            for path in [root / "oci-layout", root / "index.json", root / "blobs", *sorted(walk(root / "blobs"))]:
                info = tar.gettarinfo(str(path), arcname=path.relative_to(root).as_posix())
                info.mtime = FIXED_MTIME
                if info.isreg():
                    with path.open("rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
        partial.replace(out)
    return manifest_digest


def _json_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SystemExit(f"expected a JSON list of strings, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_layer = sub.add_parser("layer", help="a deterministic layer tar from a directory tree")
    p_layer.add_argument("tree", type=Path)
    p_layer.add_argument("out", type=Path)
    p_image = sub.add_parser("image", help="an OCI image-layout archive from layer tars")
    p_image.add_argument("--name", required=True, help="full reference, e.g. localhost/mlrollout/pause:3.10")
    p_image.add_argument("--layer", type=Path, action="append", default=[])
    p_image.add_argument("--entrypoint")
    p_image.add_argument("--cmd")
    p_image.add_argument("--env", action="append", default=[])
    p_image.add_argument("--workdir")
    p_image.add_argument("--user")
    p_image.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "layer":
        print(write_layer(args.tree, args.out))
    else:
        print(
            write_image(
                args.name,
                args.layer,
                args.out,
                _json_list(args.entrypoint),
                _json_list(args.cmd),
                args.env,
                args.workdir,
                args.user,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
