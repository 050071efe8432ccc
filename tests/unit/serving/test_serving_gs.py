"""The gs:// source's pure parts: URI parsing, the endpoint, the download URL and the error mapping."""

from __future__ import annotations

import pytest
from google.auth import exceptions as gex

from mlrollout_serving.server.sources import SourceError, source_for
from mlrollout_serving.server.sources.gs import (
    ENDPOINT,
    GcsSource,
    endpoint,
    explain_auth,
    explain_status,
    media_url,
    parse,
)


def test_gs_uri_parsing() -> None:
    assert parse("gs://models/wine/v1/model.onnx") == ("models", "wine/v1/model.onnx")
    assert parse("gs://models/a%20b.onnx") == ("models", "a b.onnx")
    for bad in ("gs://models", "gs:///name", "gs://models/"):
        with pytest.raises(SourceError, match="not a gs://BUCKET/OBJECT URI") as info:
            parse(bad)
        assert not info.value.transient
    assert isinstance(source_for("gs://models/wine.onnx"), GcsSource)


def test_the_emulator_host_replaces_the_endpoint_with_or_without_a_scheme() -> None:
    assert endpoint({}) == (ENDPOINT, False)
    assert endpoint({"STORAGE_EMULATOR_HOST": ""}) == (ENDPOINT, False)
    assert endpoint({"STORAGE_EMULATOR_HOST": "localhost:9023"}) == ("http://localhost:9023", True)
    assert endpoint({"STORAGE_EMULATOR_HOST": "https://gcs.test/"}) == ("https://gcs.test", True)


def test_the_object_name_is_escaped_whole() -> None:
    url = media_url(ENDPOINT, "models", "wine/v1/a b?.onnx")
    assert url == "https://storage.googleapis.com/storage/v1/b/models/o/wine%2Fv1%2Fa%20b%3F.onnx?alt=media"


@pytest.mark.parametrize(
    ("status", "transient", "words"),
    [
        (404, False, "the object or the bucket does not exist (HTTP 404: No such object"),
        (403, False, "access denied"),
        (401, False, "the store refused the credentials"),
        (400, False, "bad request"),
        (410, False, "refused (HTTP 410"),
        (408, True, "HTTP 408"),
        (429, True, "HTTP 429"),
        (500, True, "HTTP 500"),
        (503, True, "HTTP 503"),
    ],
)
def test_http_answers_read_clearly(status: int, transient: bool, words: str) -> None:
    error = explain_status(status, "No such object" if status == 404 else "", "gs://b/k")
    assert error.transient is transient
    assert words in str(error) and str(error).startswith("cannot read gs://b/k")


@pytest.mark.parametrize(
    ("exc", "transient", "words"),
    [
        (gex.DefaultCredentialsError("none found"), False, "no usable Google credentials"),
        (gex.RefreshError("invalid_grant", retryable=False), False, "the credentials were refused"),
        (gex.RefreshError("backend 503", retryable=True), True, "RefreshError"),
        (gex.TransportError("connection refused"), True, "TransportError"),
    ],
)
def test_auth_errors_read_clearly(exc: Exception, transient: bool, words: str) -> None:
    error = explain_auth(exc, "gs://b/k")
    assert error.transient is transient
    assert words in str(error)
