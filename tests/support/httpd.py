"""A small HTTP server on loopback, in a thread of the test process (model stores, profile hosts)."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Callable, Iterator
from typing import Any


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files (``directory=``) without writing an access log into the test output."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serving(handler: Callable[..., http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve with ``handler`` on 127.0.0.1 for the ``with`` block; yields the base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def silent_listener() -> Iterator[str]:
    """A loopback port that takes connections (the kernel completes the handshake) and never says a word:
    an endpoint that hangs. Yields its base URL."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


class Received:
    """The requests a `recorder` handler was sent: (method, path, headers, body), in arrival order."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()

    def to(self, path: str) -> list[bytes]:
        """The bodies sent to ``path``."""
        with self.lock:
            return [body for _, p, _, body in self.requests if p == path]


Reply = tuple[int, dict[str, str], bytes]


def recorder(received: Received, routes: dict[str, Callable[[str], Reply]]) -> type[http.server.BaseHTTPRequestHandler]:
    """A handler that records every request into ``received`` and answers from ``routes`` (path -> a function
    of the server's base URL giving status, headers and body; unknown paths: 404). A webhook receiver."""

    class Recorder(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with received.lock:
                received.requests.append((self.command, self.path, dict(self.headers.items()), body))
            base = f"http://{self.headers.get('Host', '')}"
            route = routes.get(self.path)
            status, headers, payload = route(base) if route else (404, {}, b"no such path")
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(payload))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _answer

    return Recorder


class Trickled:
    """The connections a `trickler` took: (opened, closed) monotonic times; closed is None while open."""

    def __init__(self) -> None:
        self.connections: list[list[float | None]] = []
        self.lock = threading.Lock()

    def most_open_at_once(self) -> int:
        """The largest number of connections open at the same moment."""
        with self.lock:
            spans = [(float(o or 0.0), float("inf") if c is None else float(c)) for o, c in self.connections]
        return max((sum(1 for o, c in spans if o <= at < c) for at, _ in spans), default=0)


@contextlib.contextmanager
def trickler(every: float = 0.2) -> Iterator[tuple[str, Trickled]]:
    """A loopback endpoint that reads the request, sends a status line, then one header line every ``every``
    seconds for ever (each read of the client's is answered in time, the answer never completes). Yields its
    base URL and the record of its connections (a connection ends when the client shuts it)."""
    import select
    import socket
    import time

    seen, stop = Trickled(), threading.Event()

    def talk(conn: socket.socket, row: list[float | None]) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                shut, due = False, time.monotonic()
                while not (stop.is_set() or shut):
                    conn.sendall(b"X-Trickle: 1\r\n")
                    due += every
                    # One line per ``every`` whatever the client sends meanwhile (a request body arriving after
                    # the headers once made this send a line per body byte: 100 lines, http.client's limit, in
                    # well under a second); the client shutting the connection is noticed at once.
                    while not shut and (left := due - time.monotonic()) > 0:
                        if select.select([conn], [], [], left)[0]:
                            shut = not conn.recv(65536)
            except OSError:
                pass
        with seen.lock:
            row[1] = time.monotonic()

    def accept(sock: socket.socket) -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            row: list[float | None] = [time.monotonic(), None]
            with seen.lock:
                seen.connections.append(row)
            threading.Thread(target=talk, args=(conn, row), daemon=True).start()

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        threading.Thread(target=accept, args=(sock,), daemon=True).start()
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}", seen
        finally:
            stop.set()
