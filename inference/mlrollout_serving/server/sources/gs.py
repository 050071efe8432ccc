"""``gs://BUCKET/OBJECT`` through the Cloud Storage JSON API, with Google's application default credentials.

The credentials are google-auth's (the library every Google client uses): ``GOOGLE_APPLICATION_CREDENTIALS``
naming a service-account key file (the operator mounts a ModelDeployment's credentials Secret there),
workload identity or the metadata server. ``STORAGE_EMULATOR_HOST`` points at a local emulator and sends
no credentials, as Google's own clients do. The object is one streamed ``GET …?alt=media`` over urllib3
(already here for boto3): no retries of its own, so the download loop's flags say what happens.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Any

from mlrollout_serving.server.sources import Opened, SourceError

ENDPOINT = "https://storage.googleapis.com"
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"

# HTTP statuses that retrying cannot fix, with what they mean for the person reading the status
_FINAL = {
    400: "bad request",
    401: "the store refused the credentials (wrong or expired service-account key)",
    403: "access denied (the credentials may not read this object)",
    404: "the object or the bucket does not exist",
}
_TRANSIENT = frozenset({408, 429})


def parse(uri: str) -> tuple[str, str]:
    """(bucket, object name) of a ``gs://`` URI; the name keeps its slashes."""
    parts = urllib.parse.urlsplit(uri)
    name = urllib.parse.unquote(parts.path.lstrip("/"))
    if parts.scheme != "gs" or not parts.netloc or not name:
        raise SourceError(f"not a gs://BUCKET/OBJECT URI: {uri}", transient=False)
    return parts.netloc, name


def endpoint(environ: dict[str, str] | os._Environ[str]) -> tuple[str, bool]:
    """The API's base URL and whether it is an emulator (``STORAGE_EMULATOR_HOST``, scheme optional)."""
    host = environ.get(EMULATOR_ENV, "").strip()
    if not host:
        return ENDPOINT, False
    return (host if "://" in host else f"http://{host}").rstrip("/"), True


def media_url(base: str, bucket: str, name: str) -> str:
    """The JSON API's download URL of one object (the name escaped whole, slashes included)."""
    return f"{base}/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o/{urllib.parse.quote(name, safe='')}?alt=media"


def explain_status(status: int, message: str, uri: str) -> SourceError:
    """An HTTP answer other than 200 as a SourceError with one clear line (pure: tested without a store)."""
    detail = f"HTTP {status}{': ' + message if message else ''}"
    meaning = _FINAL.get(status) if status not in _TRANSIENT else None
    if meaning is None and 400 <= status < 500 and status not in _TRANSIENT:
        meaning = "refused"
    if meaning is not None:
        return SourceError(f"cannot read {uri}: {meaning} ({detail})", transient=False)
    return SourceError(f"cannot read {uri}: {detail}", transient=True)


def explain_auth(exc: BaseException, uri: str) -> SourceError:
    """A google-auth exception as a SourceError: no credentials or a refused key are final."""
    from google.auth import exceptions as gex

    if isinstance(exc, gex.DefaultCredentialsError):
        return SourceError(
            f"cannot read {uri}: no usable Google credentials ({exc}); set GOOGLE_APPLICATION_CREDENTIALS "
            "to a service-account key file, use workload identity, or spec.model.credentials.secretRef",
            transient=False,
        )
    if isinstance(exc, gex.RefreshError) and not getattr(exc, "retryable", False):
        return SourceError(f"cannot read {uri}: the credentials were refused ({exc})", transient=False)
    return SourceError(f"cannot read {uri}: {type(exc).__name__}: {exc}", transient=True)


def _error_message(body: bytes) -> str:
    """The JSON API's ``error.message``, else the body's first line (bounded)."""
    import json

    try:
        message = json.loads(body)["error"]["message"]
        return str(message)[:300]
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace").strip().splitlines()[0][:300] if body.strip() else ""


def _authorization(pool: Any) -> dict[str, str]:
    import google.auth
    from google.auth.transport import urllib3 as transport

    credentials: Any
    credentials, _ = google.auth.default(scopes=[SCOPE])
    request: Any = transport.Request  # google-auth leaves these two untyped
    credentials.refresh(request(pool))
    return {"Authorization": f"Bearer {credentials.token}"}


class GcsSource:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.bucket, self.name = parse(uri)

    @property
    def local(self) -> Path | None:
        return None

    def open(self, timeout: float) -> Opened:
        import urllib3

        base, emulator = endpoint(os.environ)
        pool = urllib3.PoolManager(timeout=urllib3.Timeout(connect=timeout, read=timeout), retries=False)
        headers = {"User-Agent": "mlrollout-serve", "Accept-Encoding": "identity"}
        if not emulator:
            try:
                headers.update(_authorization(pool))
            except Exception as exc:  # google-auth wraps transport errors in its own hierarchy
                raise explain_auth(exc, self.uri) from None
        try:
            resp = pool.request("GET", media_url(base, self.bucket, self.name), headers=headers, preload_content=False)
        except urllib3.exceptions.HTTPError as exc:  # refused, reset, timed out: may be back in a moment
            raise SourceError(f"cannot read {self.uri}: {type(exc).__name__}: {exc}", transient=True) from None
        if resp.status != 200:
            body = resp.read(64 * 1024)
            resp.release_conn()
            raise explain_status(resp.status, _error_message(body), self.uri)
        declared = resp.headers.get("Content-Length")
        size = int(declared) if declared is not None and declared.isdigit() else None
        return Opened(_Body(resp, self.uri), size)


class _Body:
    """urllib3's streaming response, its errors (a reset or a read timeout mid-download) as SourceErrors."""

    def __init__(self, resp: Any, uri: str) -> None:
        self._resp = resp
        self._uri = uri

    def read(self, size: int, /) -> bytes:
        try:
            data: bytes = self._resp.read(size)
        except Exception as exc:
            raise SourceError(f"cannot read {self._uri}: {type(exc).__name__}: {exc}", transient=True) from None
        return data

    def close(self) -> None:
        self._resp.release_conn()
