"""``s3://BUCKET/KEY`` through boto3, with the standard AWS configuration and nothing of our own.

boto3 finds credentials, region and endpoint the way every AWS tool does: ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``),
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` for S3-compatible stores (MinIO, Ceph), a web-identity
token (``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE``, as EKS's IRSA injects them), the shared config
files, the instance metadata. The operator puts a ModelDeployment's credentials Secret into the pod's
environment (docs/sources.md). botocore's own retries are off: the download loop retries, once for all
schemes, so the attempts and back-off are the ones the flags say.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

from mlrollout_serving.server.sources import Opened, SourceError

# error codes that retrying cannot fix, with what they mean for the person reading the status
_FINAL = {
    "NoSuchKey": "the object does not exist",
    "NoSuchBucket": "the bucket does not exist",
    "AccessDenied": "access denied (the credentials may not read this object)",
    "AllAccessDisabled": "access denied (the credentials may not read this object)",
    "InvalidAccessKeyId": "the store does not know the access key id (wrong credentials)",
    "SignatureDoesNotMatch": "the store refused the signature (wrong secret access key)",
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is not valid",
    "InvalidBucketName": "the bucket name is not valid",
    "PermanentRedirect": "the bucket is in another region (set AWS_REGION)",
    "AuthorizationHeaderMalformed": "the request's region does not match the bucket's (set AWS_REGION)",
}
_FINAL_STATUS = {"400": "bad request", "403": "access denied", "404": "the object does not exist"}


def parse(uri: str) -> tuple[str, str]:
    """(bucket, key) of an ``s3://`` URI; the key keeps its slashes."""
    parts = urllib.parse.urlsplit(uri)
    key = urllib.parse.unquote(parts.path.lstrip("/"))
    if parts.scheme != "s3" or not parts.netloc or not key:
        raise SourceError(f"not an s3://BUCKET/KEY URI: {uri}", transient=False)
    return parts.netloc, key


def _client(timeout: float) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"total_max_attempts": 1})
    return boto3.session.Session().client("s3", config=config)


def explain(exc: BaseException, uri: str) -> SourceError:
    """A boto3/botocore exception as a SourceError with one clear line (pure: tested without a store)."""
    from botocore import exceptions as bex

    if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
        return SourceError(
            f"cannot read {uri}: no usable AWS credentials ({exc}); set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, a web identity, or spec.model.credentials.secretRef",
            transient=False,
        )
    if isinstance(exc, bex.ClientError):
        error = exc.response.get("Error") or {}
        code = str(error.get("Code") or "")
        status = str((exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or "")
        message = str(error.get("Message") or "")
        meaning = _FINAL.get(code) or _FINAL_STATUS.get(status)
        detail = f"{code or 'HTTP ' + status}{': ' + message if message and message != code else ''}"
        if meaning is not None:
            return SourceError(f"cannot read {uri}: {meaning} ({detail})", transient=False)
        return SourceError(f"cannot read {uri}: {detail}", transient=True)
    if isinstance(exc, bex.ParamValidationError):
        return SourceError(f"cannot read {uri}: {exc}", transient=False)
    # connection refused or reset, timeouts, a half-read body: the store may be back in a moment
    return SourceError(f"cannot read {uri}: {type(exc).__name__}: {exc}", transient=True)


class S3Source:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.bucket, self.key = parse(uri)

    @property
    def local(self) -> Path | None:
        return None

    def open(self, timeout: float) -> Opened:
        try:
            resp = _client(timeout).get_object(Bucket=self.bucket, Key=self.key)
        except Exception as exc:  # the SDK raises outside its hierarchy too (a garbled STS reply)
            raise explain(exc, self.uri) from None
        return Opened(_Body(resp["Body"], self.uri), int(resp.get("ContentLength") or 0) or None)


class _Body:
    """boto3's streaming body, its errors (a reset or a read timeout mid-download) as SourceErrors."""

    def __init__(self, body: Any, uri: str) -> None:
        self._body = body
        self._uri = uri

    def read(self, size: int, /) -> bytes:
        try:
            data: bytes = self._body.read(size)
        except Exception as exc:
            raise explain(exc, self._uri) from None
        return data

    def close(self) -> None:
        self._body.close()
