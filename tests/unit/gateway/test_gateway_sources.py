"""Route-table sources: file polling and ConfigMap events (parsing and callbacks; the live API watch is
exercised against a real API server in the cluster tier)."""

from __future__ import annotations

import os
from pathlib import Path

from mlrollout_serving.contract.routes import RouteTable
from mlrollout_serving.gateway.sources import FileSource, handle_configmap_event

TABLE = "version: {v}\ntracks:\n  stable: {{upstream: 'http://127.0.0.1:9', weight: 100}}\n"


class Recorder:
    def __init__(self) -> None:
        self.applied: list[tuple[int, str]] = []
        self.rejected: list[tuple[str, str]] = []

    def apply(self, table: RouteTable, origin: str) -> None:
        self.applied.append((table.version, origin))

    def reject(self, origin: str, reason: str) -> None:
        self.rejected.append((origin, reason))


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic, like kubelet and editors


def test_file_source_applies_changes_and_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    rec = Recorder()
    source = FileSource(str(path), rec.apply, rec.reject)
    source.poll()
    source.poll()
    assert len(rec.rejected) == 1 and "cannot read" in rec.rejected[0][1]  # logged once, not per poll
    _write(path, TABLE.format(v=1))
    source.poll()
    source.poll()  # unchanged: nothing new
    assert rec.applied == [(1, f"file {path}")]
    _write(path, "version: 2\ntracks: {}\n")
    source.poll()
    assert "tracks must contain stable" in rec.rejected[-1][1]
    _write(path, TABLE.format(v=3))
    source.poll()
    assert [v for v, _ in rec.applied] == [1, 3]


def test_configmap_events() -> None:
    rec = Recorder()
    cm = {"metadata": {"name": "routes", "namespace": "prod"}, "data": {"routes.yaml": TABLE.format(v=4)}}
    handle_configmap_event("ADDED", cm, "routes.yaml", rec.apply, rec.reject)
    assert rec.applied == [(4, "ConfigMap prod/routes")]
    bad = {**cm, "data": {"routes.yaml": "version: x"}}
    handle_configmap_event("MODIFIED", bad, "routes.yaml", rec.apply, rec.reject)
    assert rec.rejected[-1][0] == "ConfigMap prod/routes" and "version" in rec.rejected[-1][1]
    handle_configmap_event("DELETED", cm, "routes.yaml", rec.apply, rec.reject)
    assert "deleted" in rec.rejected[-1][1]
    assert len(rec.applied) == 1
