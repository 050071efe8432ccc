"""Model sources behind one small interface: where a model file's bytes come from.

Every scheme the model server reads is one module here, chosen by the URI's scheme in :func:`source_for`:
``file://`` (and plain paths: a ``pvc://`` URI reaches the server as ``file://`` under the claim's
mount), ``http(s)://``, ``s3://`` (boto3, the standard AWS configuration) and ``gs://`` (the Cloud
Storage JSON API with Google's application default credentials). A source only *opens* a stream; the
download loop in :mod:`mlrollout_serving.server.download` owns retries, back-off, size limits, the disk,
hashing and progress, once for every scheme.

A source says whether a failure is worth retrying (:class:`SourceError` ``transient``): a store that is
down or slow is; a missing object, refused credentials or a denied access are not (retrying cannot help,
and the message must reach the ModelDeployment's status at once).
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import NamedTuple, Protocol

__all__ = ["SCHEMES", "Opened", "Source", "SourceError", "Stream", "source_for"]

SCHEMES = ("file", "http", "https", "s3", "gs")


class SourceError(Exception):
    """The source cannot give the file; ``transient`` when a later attempt may succeed."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class Stream(Protocol):
    """What a source hands over: ``read`` until it returns ``b""``, then ``close``."""

    def read(self, size: int, /) -> bytes: ...
    def close(self) -> None: ...


class Opened(NamedTuple):
    """An open stream and the size the store declared (None when it did not say). A named tuple, not a
    dataclass, as :class:`~mlrollout_serving.server.loading.LoadedModel`."""

    stream: Stream
    size: int | None


class Source(Protocol):
    """One model location. ``local`` is the file itself when no copy is needed (``file://``)."""

    @property
    def uri(self) -> str: ...

    @property
    def local(self) -> Path | None: ...

    def open(self, timeout: float) -> Opened:
        """Open the object for reading; raise :class:`SourceError` (transient or not)."""
        ...


def source_for(uri: str, authorization: str | None = None) -> Source:
    """The source of ``uri``; an unknown scheme is a (permanent) SourceError naming the ones known.
    ``authorization``: an ``Authorization`` header for an http(s) URI (a registry's credentials)."""
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme in ("", "file"):
        from mlrollout_serving.server.sources.local import LocalSource

        return LocalSource(uri)
    if scheme in ("http", "https"):
        from mlrollout_serving.server.sources.web import HttpSource

        return HttpSource(uri, authorization)
    if scheme == "s3":
        from mlrollout_serving.server.sources.s3 import S3Source

        return S3Source(uri)
    if scheme == "gs":
        from mlrollout_serving.server.sources.gs import GcsSource

        return GcsSource(uri)
    known = ", ".join(f"{s}://" for s in SCHEMES)
    raise SourceError(f"unsupported model URI scheme {scheme!r} in {uri} (use {known})", transient=False)
