"""`kubectl mlrollout dashboard`: a local web UI on the user's kubeconfig (standard library HTTP server).

Pages are rendered by `web` (pure); live updates are server-sent events fed by a Kubernetes watch per open
page (no polling); commands go through `cli.send`, the plugin's one annotation path, so RBAC on `patch
modeldeployments` decides. Bound to 127.0.0.1 by default. Because any web page the user visits could post
to a local port, a command needs the per-process token the pages carry (a custom header: cross-site pages
can neither read it nor send it without a preflight this server refuses), and requests must name this
server in their Host header (no DNS rebinding).
"""

from __future__ import annotations

import io
import json
import secrets
import sys
import threading
import urllib.parse
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Final

import urllib3
from pydantic import ValidationError

from mlrollout.api import commands
from mlrollout.api.modeldeployment import ModelDeployment
from mlrollout.kubectl_plugin import cli, web
from mlrollout.kubectl_plugin.kube import Cluster, KubeError, Obj
from mlrollout.rollout import lookhistory

DEFAULT_PORT: Final = 3100
WATCH_SECONDS: Final = 25.0  # a watch is re-opened this often; a closed page is noticed by then
STATIC: Final = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
MAX_BODY: Final = 4096


def _status_of(message: str) -> HTTPStatus:
    """The HTTP status that carries a KubeError's meaning to the page."""
    statuses = {"forbidden": HTTPStatus.FORBIDDEN, "unauthorized": HTTPStatus.UNAUTHORIZED,
                "not found": HTTPStatus.NOT_FOUND, "invalid": HTTPStatus.UNPROCESSABLE_ENTITY}  # fmt: skip
    for word, status in statuses.items():
        if f": {word}:" in message:
            return status
    return HTTPStatus.BAD_GATEWAY


class Dashboard:
    """What every request handler shares: the cluster connection, the list's scope and the command token."""

    def __init__(self, cluster: Cluster, namespace: str | None, token: str | None = None) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.token = token or secrets.token_urlsafe(24)
        self.hosts: set[str] = set()

    def typed(self, obj: Obj) -> ModelDeployment:
        return cli.typed(obj)

    def detail(self, obj: Obj) -> str:
        """The detail body of one ModelDeployment as stored now, with its looks (if readable)."""
        md = self.typed(obj)
        namespace, name = web.ref(md)
        looks, error = None, None
        try:
            looks = lookhistory.decode(self.cluster.looks(namespace, name))
        except KubeError as exc:
            error = str(exc)
        steps = cli.effective_steps(self.cluster, md)
        return web.detail_body(md, steps, looks, error, datetime.now(UTC))

    def command(self, payload: Any) -> tuple[HTTPStatus, str]:
        """Write one command annotation, exactly as `kubectl mlrollout VERB` does (without waiting)."""
        if not isinstance(payload, dict):
            return HTTPStatus.BAD_REQUEST, "the body must be a JSON object"
        namespace, name, verb = payload.get("namespace"), payload.get("name"), payload.get("verb")
        to = payload.get("toRevision")
        if not isinstance(namespace, str) or not isinstance(name, str) or not namespace or not name:
            return HTTPStatus.BAD_REQUEST, "namespace and name must be non-empty strings"
        if verb not in commands.VERBS:
            return HTTPStatus.BAD_REQUEST, f"verb must be one of {', '.join(commands.VERBS)}, not {verb!r}"
        if to is not None and (not isinstance(to, int) or isinstance(to, bool) or to < 1 or verb != "undo"):
            return HTTPStatus.BAD_REQUEST, "toRevision goes only with undo, as a revision number (1 or more)"
        try:
            command = commands.Command.new(verb, to)
        except (commands.CommandError, ValidationError) as exc:
            return HTTPStatus.BAD_REQUEST, str(exc)
        out = io.StringIO()
        try:
            cli.send(self.cluster, namespace, name, command, None, out)
        except KubeError as exc:
            return _status_of(str(exc)), str(exc)
        except urllib3.exceptions.HTTPError as exc:
            return HTTPStatus.BAD_GATEWAY, f"cannot reach the API server: {exc}"
        return HTTPStatus.OK, out.getvalue().strip() + "; the operator's answer shows under Last command"


class Handler(BaseHTTPRequestHandler):
    server: Server
    server_version = "mlrollout-dashboard"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the terminal shows the URL and errors, not every request

    # --- plumbing ------------------------------------------------------------------------------------

    def _send(self, status: HTTPStatus, body: str | bytes, content_type: str) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.end_headers()
        self.wfile.write(data)

    def _html(self, status: HTTPStatus, title: str, body: str, stream: str | None = None) -> None:
        page = web.page(title, body, self.server.dashboard.token, stream)
        self._send(status, page, "text/html; charset=utf-8")

    def _json(self, status: HTTPStatus, message: str) -> None:
        self._send(status, json.dumps({"message": message}), "application/json")

    def _host_ok(self) -> bool:
        if self.headers.get("Host", "") in self.server.dashboard.hosts:
            return True
        self._send(HTTPStatus.MISDIRECTED_REQUEST, "unknown Host: open the address the dashboard printed\n",
                   "text/plain; charset=utf-8")  # fmt: skip
        return False

    def _start_events(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()

    def _event(self, kind: str, data: dict[str, Any]) -> None:
        self.wfile.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()

    def _ping(self) -> None:
        self.wfile.write(b": ping\n\n")
        self.wfile.flush()

    # --- routes --------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._host_ok():
            return
        parts = [urllib.parse.unquote(p) for p in urllib.parse.urlsplit(self.path).path.split("/") if p]
        try:
            if not parts:
                self._list_page()
            elif parts[0] == "static" and len(parts) == 2 and parts[1] in STATIC:
                text = resources.files("mlrollout.kubectl_plugin").joinpath("static", parts[1]).read_bytes()
                self._send(HTTPStatus.OK, text, STATIC[parts[1]])
            elif parts[0] == "md" and len(parts) == 3:
                self._detail_page(parts[1], parts[2])
            elif parts == ["events"]:
                self._list_events()
            elif parts[0] == "events" and len(parts) == 4 and parts[1] == "md":
                self._detail_events(parts[2], parts[3])
            else:
                self._html(HTTPStatus.NOT_FOUND, "not found", "<h1>Not found</h1><p><a href='/'>back</a></p>")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page was closed
        except urllib3.exceptions.HTTPError as exc:
            self._html(HTTPStatus.BAD_GATEWAY, "API server", web.refusal("reaching the API server", str(exc)))

    def do_POST(self) -> None:
        if not self._host_ok():
            return
        if self.path != "/command":
            self._json(HTTPStatus.NOT_FOUND, f"no such endpoint: {self.path}")
            return
        if not secrets.compare_digest(self.headers.get("X-Mlrollout-Token", ""), self.server.dashboard.token):
            self._json(
                HTTPStatus.FORBIDDEN, "missing or wrong X-Mlrollout-Token: commands come from the dashboard's pages"
            )
            return
        declared = self.headers.get("Content-Length") or "0"
        if not (declared.isascii() and declared.isdigit()):  # -1 would read to the end of the stream
            self._json(HTTPStatus.BAD_REQUEST, f"Content-Length must be a number of bytes, not {declared[:20]!r}")
            return
        length = int(declared)
        if length > MAX_BODY:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY} bytes")
            return
        try:
            payload = json.loads(self.rfile.read(length) or b"null")
        except ValueError as exc:
            self._json(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {exc}")
            return
        status, message = self.server.dashboard.command(payload)
        self._json(status, message)

    def _list_page(self) -> None:
        d = self.server.dashboard
        scope = f"namespace {d.namespace}" if d.namespace else "all namespaces"
        try:
            items, _ = d.cluster.list(d.namespace)
        except KubeError as exc:
            self._html(_status_of(str(exc)), "refused", web.refusal(f"list ModelDeployments in {scope}", str(exc)))
            return
        mds = [self._typed_or_none(o) for o in items]
        body = web.list_body([m for m in mds if m is not None], scope)
        self._html(HTTPStatus.OK, "ModelDeployments", body, "/events")

    def _typed_or_none(self, obj: Obj) -> ModelDeployment | None:
        try:
            return self.server.dashboard.typed(obj)
        except KubeError:
            return None  # written by another version: left out of the list rather than breaking it

    def _detail_page(self, namespace: str, name: str) -> None:
        d = self.server.dashboard
        try:
            body = d.detail(d.cluster.get(namespace, name))
        except KubeError as exc:
            what = f"read modeldeployment {namespace}/{name}"
            self._html(_status_of(str(exc)), "refused", web.refusal(what, str(exc)))
            return
        stream = f"/events/md/{urllib.parse.quote(namespace)}/{urllib.parse.quote(name)}"
        self._html(HTTPStatus.OK, f"{namespace}/{name}", body, stream)

    def _list_events(self) -> None:
        d = self.server.dashboard
        self._start_events()
        try:
            items, version = d.cluster.list(d.namespace)
            # what changed between the page and this stream (rows added, changed or gone) is not missed
            mds = [m for m in map(self._typed_or_none, items) if m is not None]
            self._event("rows", {"html": web.list_rows(mds)})
            while True:
                for kind, obj in d.cluster.events(d.namespace, version, WATCH_SECONDS):
                    if kind == "RELISTED":
                        self._event("reload", {})
                        return
                    meta = obj.get("metadata") or {}
                    version = str(meta.get("resourceVersion", version))
                    row_id = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
                    md = self._typed_or_none(obj)
                    if kind == "DELETED" or md is None:
                        self._event("row", {"id": row_id, "deleted": True})
                    else:
                        self._event("row", {"id": row_id, "html": web.list_row(md)})
                self._ping()
        except KubeError as exc:
            self._event("refused", {"html": web.refusal("watch ModelDeployments", str(exc))})

    def _detail_events(self, namespace: str, name: str) -> None:
        d = self.server.dashboard
        self._start_events()
        try:
            current = d.cluster.get(namespace, name)
            version = str(current["metadata"].get("resourceVersion", ""))
            self._event("body", {"html": d.detail(current)})  # a change since the page was rendered
            while True:
                for kind, obj in d.cluster.events(namespace, version, WATCH_SECONDS, name=name):
                    if kind == "DELETED":
                        self._event("refused", {"html": web.refusal("show it", f"{namespace}/{name} was deleted")})
                        return
                    current = d.cluster.get(namespace, name) if kind == "RELISTED" else obj
                    version = str(current["metadata"].get("resourceVersion", version))
                    self._event("body", {"html": d.detail(current)})
                self._ping()
        except KubeError as exc:
            self._event("refused", {"html": web.refusal(f"watch modeldeployment {namespace}/{name}", str(exc))})


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: str, port: int, dashboard: Dashboard) -> None:
        super().__init__((address, port), Handler)
        self.dashboard = dashboard
        bound = self.server_address[1]
        dashboard.hosts = {f"{address}:{bound}", f"127.0.0.1:{bound}", f"localhost:{bound}", f"[::1]:{bound}"}

    @property
    def url(self) -> str:
        host = str(self.server_address[0])
        return f"http://{host}:{self.server_address[1]}/"


def serve(cluster: Cluster, namespace: str | None, address: str, port: int) -> int:
    """Run until interrupted; prints the URL (with --port 0, the port the system chose)."""
    try:
        server = Server(address, port, Dashboard(cluster, namespace))
    except OSError as exc:
        print(f"error: cannot listen on {address}:{port}: {exc}", file=sys.stderr)
        return cli.EXIT_FAILED
    print(f"mlrollout dashboard on {server.url} (Ctrl-C to stop)", flush=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    return cli.EXIT_OK
