"""A real Cloud Storage JSON API server for tests: ``gcp-storage-emulator`` (PyPI) on loopback.

Stable API:

- ``run_gcs()``: context manager yielding a ready :class:`GcsServer` (its own process, its own port,
  in-memory); always stopped on exit.
- ``GcsServer.put(bucket, name, body)``: upload through the JSON API (creating the bucket); the ``gs://`` URI.
- ``GcsServer.env(**extra)``: the environment of a model server that reads from it
  (``STORAGE_EMULATOR_HOST``, and no ambient Google credentials: nothing leaves the machine).

The emulator enforces no authentication: denied reads and refused keys are tested on the pure
error mapping (tests/unit/serving/test_serving_gs.py), not against it.
"""

from __future__ import annotations

import contextlib
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import ManagedProcess, free_port, running

NO_AMBIENT_CREDENTIALS = {
    "GOOGLE_APPLICATION_CREDENTIALS": "",
    "CLOUDSDK_CONFIG": "/nonexistent/gcloud",
    "NO_GCE_CHECK": "true",  # never ask the metadata server
}


@dataclass
class GcsServer:
    process: ManagedProcess

    @property
    def url(self) -> str:
        return self.process.url

    def _call(self, method: str, path: str, body: bytes, content_type: str) -> None:
        request = urllib.request.Request(
            f"{self.url}{path}", data=body, method=method, headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            assert resp.status == 200, resp.status

    def put(self, bucket: str, name: str, body: bytes | Path) -> str:
        """Upload (creating the bucket if needed); returns the ``gs://`` URI."""
        with contextlib.suppress(urllib.error.HTTPError):  # 409: the bucket exists
            self._call("POST", "/storage/v1/b", json.dumps({"name": bucket}).encode(), "application/json")
        data = body.read_bytes() if isinstance(body, Path) else body
        query = urllib.parse.urlencode({"uploadType": "media", "name": name})
        self._call("POST", f"/upload/storage/v1/b/{bucket}/o?{query}", data, "application/octet-stream")
        return f"gs://{bucket}/{name}"

    def env(self, **extra: str) -> dict[str, str]:
        return {**NO_AMBIENT_CREDENTIALS, "STORAGE_EMULATOR_HOST": self.url, **extra}


@contextlib.contextmanager
def run_gcs() -> Iterator[GcsServer]:
    """gcp-storage-emulator on 127.0.0.1, in memory, for the ``with`` block."""
    port = free_port()
    cmd = [sys.executable, "-m", "gcp_storage_emulator", "start", "-H", "127.0.0.1", "--port", str(port), "-M"]
    with running(cmd, port, "/", prefix="mlrollout-gcs-", timeout=60) as process:
        yield GcsServer(process)
