"""A registry's credentials in the model server: the header MLflow's variables make, sent only to URLs under
the registry's address, and never through a redirect (a loopback HTTP server records what arrives)."""

from __future__ import annotations

import base64

import pytest
from tests.support.httpd import QuietHandler, serving

from mlrollout_serving.contract.process import RegistryEnv, registry_authorization, registry_header, under
from mlrollout_serving.server.sources import SourceError, source_for


def test_the_header_mlflows_variables_make() -> None:
    assert registry_authorization({RegistryEnv.TOKEN: " t0k\n", RegistryEnv.USERNAME: "a"}) == "Bearer t0k"
    basic = registry_authorization({RegistryEnv.USERNAME: "alice", RegistryEnv.PASSWORD: "p w\n"})
    assert basic == "Basic " + base64.b64encode(b"alice:p w").decode()
    assert registry_authorization({RegistryEnv.USERNAME: "alice"}) is None
    assert registry_authorization({}) is None


def test_only_urls_under_the_registry() -> None:
    assert under("http://mlflow:5000/api/2.0/x", "http://mlflow:5000/")
    assert under("http://mlflow:5000/api/2.0/x", "http://mlflow:5000")
    assert not under("http://mlflow:5000.evil/api", "http://mlflow:5000")
    assert not under("http://store/m.onnx", "http://mlflow:5000")
    assert not under("http://mlflow:5000/x", None)


def test_the_http_source_sends_the_header_and_refuses_redirects_with_it() -> None:
    seen: list[tuple[str, str | None]] = []

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            if self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/m.onnx")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    with serving(Handler) as url:
        opened = source_for(f"{url}/m.onnx", "Bearer t").open(5.0)
        assert opened.stream.read(64) == b"ok"
        opened.stream.close()
        with pytest.raises(SourceError, match="HTTP 302") as info:
            source_for(f"{url}/moved", "Bearer t").open(5.0)
        assert not info.value.transient
        anonymous = source_for(f"{url}/moved").open(5.0)  # without credentials a redirect is followed
        anonymous.stream.close()
    assert seen == [("/m.onnx", "Bearer t"), ("/moved", "Bearer t"), ("/moved", None), ("/m.onnx", None)]


def test_the_one_rule_of_both_downloaders() -> None:
    """The model server and mlrollout-evaluate both ask `registry_header`: the variables' header, only under
    the registry's address."""
    env: dict[str, str] = {RegistryEnv.USERNAME: "alice", RegistryEnv.PASSWORD: "pw"}
    assert registry_header("http://mlflow:5000/api/2.0/x", "http://mlflow:5000", env) == registry_authorization(env)
    assert registry_header("http://store/m.onnx", "http://mlflow:5000", env) is None
    assert registry_header("http://mlflow:5000/api/2.0/x", None, env) is None
    assert registry_header("http://mlflow:5000/api/2.0/x", "http://mlflow:5000", {}) is None


def test_a_refusal_says_whether_credentials_were_sent() -> None:
    class Handler(QuietHandler):
        def do_GET(self) -> None:
            self.send_response(401 if self.path == "/locked" else 403)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serving(Handler) as url:
        with pytest.raises(SourceError, match="HTTP 401") as info:
            source_for(f"{url}/locked").open(5.0)
        assert "sent without credentials" in str(info.value) and "--registry-uri" in str(info.value)
        assert not info.value.transient
        with pytest.raises(SourceError, match=r"HTTP 401 .*\(the registry refused the credentials\)"):
            source_for(f"{url}/locked", "Bearer t").open(5.0)
        with pytest.raises(SourceError, match=r"HTTP 403 .*does not allow this to the credentials"):
            source_for(f"{url}/denied", "Bearer t").open(5.0)
