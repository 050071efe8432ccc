"""Model and profile URIs: one anchored pattern for pydantic and the CRD, so a URI is a URI everywhere.

The URI goes into the model server's environment and, for ``pvc://``, into a volume's ``claimName`` and a
path under the claim's mount, so the pattern admits only what those can take safely:

- ``http(s)://HOST[:PORT]/PATH[?QUERY]``: a DNS name or IP address (IPv6 in brackets), no
  ``user:password@`` (credentials do not belong in a spec), a path;
- ``file:///PATH``: an absolute path in the server's image (no host: ``file://models/x`` would read ``/x``);
- ``pvc://CLAIM/PATH``: ``CLAIM`` a DNS-1123 subdomain (a PersistentVolumeClaim's name), ``PATH`` relative to
  the claim's mount, with no empty segment, none made only of dots (``.``, ``..``) and no ``%``-escape (the
  server unescapes file paths, so ``%2e%2e`` would be ``..``), so it cannot leave the claim;
- model files and evaluation holdouts only (``MODEL_URI_PATTERN``, ``DATASET_URI_PATTERN``):
  ``s3://BUCKET/KEY`` (a bucket name as S3 allows it, a key of RFC 3986 characters and slashes),
  ``gs://BUCKET/OBJECT`` (a Cloud Storage bucket name of 3-63 characters, which may hold ``_``; an object
  name as an S3 key) and, for models only, ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` (an MLflow
  registered model, resolved by the operator at the start of a rollout; docs/sources.md).

Only RFC 3986 characters: no whitespace, control characters or non-ASCII (``%``-escape them, outside pvc).
The pattern has no look-around, so pydantic's regex engine and the API server's (RE2) read it alike.
"""

from __future__ import annotations

from typing import Final

_SUB_DELIMS: Final = "!$&'()*+,;="
_PCHAR: Final = rf"(?:[-A-Za-z0-9._~{_SUB_DELIMS}:@]|%[0-9A-Fa-f]{{2}})"  # RFC 3986 pchar
_LABEL: Final = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_HOST: Final = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9.]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
_PVC_CHAR: Final = rf"[-A-Za-z0-9_~{_SUB_DELIMS}:@]"  # a pchar other than '.' and '%'
_PVC_SEGMENT: Final = rf"\.*{_PVC_CHAR}(?:{_PVC_CHAR}|\.)*"  # not empty, not only dots

HTTP_URI: Final = rf"https?://{_HOST}/{_PCHAR}(?:{_PCHAR}|[/?])*"
FILE_URI: Final = rf"file:///{_PCHAR}(?:{_PCHAR}|/)*"
PVC_URI: Final = rf"pvc://{_LABEL}(?:\.{_LABEL})*/{_PVC_SEGMENT}(?:/{_PVC_SEGMENT})*"
S3_URI: Final = rf"s3://[a-z0-9][a-z0-9.-]{{1,61}}[a-z0-9]/{_PCHAR}(?:{_PCHAR}|/)*"
GS_URI: Final = rf"gs://[a-z0-9][a-z0-9._-]{{1,61}}[a-z0-9]/{_PCHAR}(?:{_PCHAR}|/)*"
REGISTRY_PREFIX: Final = "models:/"
REGISTRY_URI: Final = r"models:/[A-Za-z0-9][-A-Za-z0-9._]{0,255}(?:/[0-9]{1,10}|@[A-Za-z0-9][-A-Za-z0-9_]{0,254})"
URI_PATTERN: Final = rf"^(?:{HTTP_URI}|{FILE_URI}|{PVC_URI})$"
REGISTRY_URL_PATTERN: Final = rf"^https?://{_HOST}(?:/(?:{_PCHAR}|/)*)?$"
"""A model registry's base URL (an MLflow tracking server): no user:password@, no query."""
"""Files the model server or the operator reads as they are: reference profiles."""
MODEL_URI_PATTERN: Final = rf"^(?:{HTTP_URI}|{FILE_URI}|{PVC_URI}|{S3_URI}|{GS_URI}|{REGISTRY_URI})$"
"""Model files: the above, object storage and the model registry."""
DATASET_URI_PATTERN: Final = rf"^(?:{HTTP_URI}|{FILE_URI}|{PVC_URI}|{S3_URI}|{GS_URI})$"
"""Evaluation holdouts: what the model server's download reads (no registry: a holdout is not a model)."""

MODEL_URI_MESSAGE: Final = (
    "must be http(s)://HOST[:PORT]/PATH, file:///PATH, pvc://CLAIM/PATH (CLAIM a DNS-1123 name, PATH relative, "
    "without empty or dots-only segments such as '..', without %-escapes), s3://BUCKET/KEY, "
    "gs://BUCKET/OBJECT, models:/NAME/VERSION or models:/NAME@ALIAS; no spaces, control characters or user:password@"
)
URI_MESSAGE: Final = (
    "must be http(s)://HOST[:PORT]/PATH, file:///PATH or pvc://CLAIM/PATH (CLAIM a DNS-1123 name, PATH "
    "relative, without empty or dots-only segments such as '..', without %-escapes); no spaces, control "
    "characters or user:password@"
)


def is_registry(uri: str) -> bool:
    """A registered model (``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``), resolved by the operator."""
    return uri.startswith(REGISTRY_PREFIX)
