"""Small pure helpers of the request path."""

from __future__ import annotations

from mlrollout_serving.gateway.proxy import _forward_rest, _rewrite_model
from mlrollout_serving.gateway.server import Request


def test_backup_rewrites_the_model_and_drops_the_version() -> None:
    line = b"POST /v2/models/iris/versions/3/infer HTTP/1.1\r\n"
    assert _rewrite_model(line, b"tiny") == b"POST /v2/models/tiny/infer HTTP/1.1\r\n"
    assert _rewrite_model(b"GET /v2/models/iris HTTP/1.1\r\n", b"tiny") == b"GET /v2/models/tiny HTTP/1.1\r\n"
    assert _rewrite_model(b"GET /v2/models/iris/ready?x=1 HTTP/1.1\r\n", b"t") == (
        b"GET /v2/models/t/ready?x=1 HTTP/1.1\r\n"
    )


def test_forwarded_headers_drop_hop_by_hop_and_set_the_length() -> None:
    headers = [(b"host", b"gw"), (b"connection", b"keep-alive"), (b"x-user", b"7"),
               (b"transfer-encoding", b"chunked"), (b"content-type", b"application/json")]  # fmt: skip
    rest = _forward_rest(Request(b"POST", b"/v2/models/m/infer", headers, b"{}", True))
    assert rest == b"x-user: 7\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
