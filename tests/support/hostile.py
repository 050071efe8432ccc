"""Hostile HTTP clients on raw sockets, and what they cost a server process (memory, descriptors).

Stable API (the server and gateway suites and ``bench/hostile_load.py`` use it):

- ``Reply``, ``read_reply(sock)`` and ``read_replies(sock, n)``: HTTP/1.1 responses parsed off a socket,
  pipelined ones in order (None where the connection ended first).
- ``exchange(port, data)``: send raw bytes on a fresh connection, return the first reply.
- ``flood(port, head, filler, total)``: send ``head`` then up to ``total`` filler bytes, stopping as soon
  as the server answers; returns the reply and the bytes sent (a 100 MB header or URL without holding
  100 MB in the client).
- ``slowloris(port, kind, count)``: open ``count`` connections that each send part of a request and stall.
- ``rss_mib(pid)``, ``peak_rss_mib(pid)``, ``fd_count(pid)``: from ``/proc``.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tests.support.waiting import wait_for

HOST = "127.0.0.1"
INFER_HEAD = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    """Lower-case names."""
    body: bytes

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"


class _KeepOpen(io.BufferedReader):
    def close(self) -> None:  # each HTTPResponse closes its file, but the next pipelined reply is in it
        pass


class _Replies:
    """A socket as http.client sees it, handing every response the same read buffer."""

    def __init__(self, sock: socket.socket) -> None:
        self.file = _KeepOpen(socket.SocketIO(sock, "rb"))

    def makefile(self, mode: str) -> io.BufferedReader:
        return self.file


def read_replies(sock: socket.socket, count: int, timeout: float = 10.0) -> list[Reply | None]:
    """``count`` responses read off ``sock`` in order (pipelined); None for each one the server closed or
    reset the connection before."""
    sock.settimeout(timeout)
    source = _Replies(sock)
    replies: list[Reply | None] = []
    while len(replies) < count:
        resp = http.client.HTTPResponse(source)  # type: ignore[arg-type]
        try:
            resp.begin()
            body = resp.read()
        except (ConnectionError, http.client.RemoteDisconnected, http.client.IncompleteRead):
            break
        except http.client.BadStatusLine:
            break
        replies.append(Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body))
    return replies + [None] * (count - len(replies))


def read_reply(sock: socket.socket, timeout: float = 10.0) -> Reply | None:
    """One response read off ``sock`` (None when the server closed or reset the connection first)."""
    return read_replies(sock, 1, timeout)[0]


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection((HOST, port), timeout=timeout)


def exchange(port: int, data: bytes, timeout: float = 10.0) -> Reply | None:
    """Send ``data`` on a fresh connection and read the first reply."""
    with connect(port, timeout) as sock:
        with contextlib.suppress(ConnectionError):
            sock.sendall(data)
        return read_reply(sock, timeout)


def closed_by_peer(sock: socket.socket, timeout: float = 10.0) -> bool:
    """Whether the server closes the connection (EOF or reset) within ``timeout``, dropping what it sends."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except ConnectionError:
            return True
        except TimeoutError:
            return False
    return False


def flood(
    port: int, head: bytes, filler: bytes, total: int, timeout: float = 30.0, until_answered: bool = True
) -> tuple[Reply | None, int]:
    """Send ``head`` then ``filler`` repeatedly, up to ``total`` bytes, until the server answers (unless
    ``until_answered`` is false: then on regardless) or resets.

    Returns the reply (None if the connection ended without one) and how many bytes were sent.
    """
    sent = 0
    with connect(port, timeout) as sock:
        sock.sendall(head)
        sent += len(head)
        deadline = time.monotonic() + timeout
        while sent < total and time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable and until_answered:
                break
            try:
                sock.sendall(filler)
            except (ConnectionError, TimeoutError):
                break
            sent += len(filler)
        return read_reply(sock, timeout), sent


SlowKind = Literal["silent", "head", "body"]
SLOW_PARTS: dict[SlowKind, bytes] = {
    "silent": b"",
    "head": INFER_HEAD % b"/v2/models/m/infer" + b"X-Slow: 1",
    "body": INFER_HEAD % b"/v2/models/m/infer" + b'Content-Length: 1000\r\n\r\n{"inputs": [',
}
"""What each kind of slow client sends before stalling: nothing; most of a head; a head and part of a body."""


@contextlib.contextmanager
def slowloris(port: int, kind: SlowKind, count: int, timeout: float = 10.0) -> Iterator[list[socket.socket]]:
    """``count`` connections that each send the start of a request and then nothing; closed on exit.

    A connection the server refuses to accept (or resets at once) is still yielded: the caller reads its
    state with :func:`closed_by_peer` or :func:`read_reply`.
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = connect(port, timeout)
            socks.append(sock)
            if SLOW_PARTS[kind]:
                with contextlib.suppress(ConnectionError):
                    sock.sendall(SLOW_PARTS[kind])
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_mib(pid: int) -> float:
    """Resident memory now (VmRSS)."""
    return _status_kib(pid, "VmRSS") / 1024


def peak_rss_mib(pid: int) -> float:
    """The highest resident memory since the process started (VmHWM)."""
    return _status_kib(pid, "VmHWM") / 1024


def fd_count(pid: int) -> int:
    """Open file descriptors (``/proc/<pid>/fd``)."""
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def settled_fd_count(pid: int) -> int:
    """The descriptor count once it holds still for 0.2 s (a connection a test just closed is gone)."""

    def still() -> int | None:
        before = fd_count(pid)
        time.sleep(0.2)
        return before if fd_count(pid) == before else None

    return wait_for(still, timeout=10, what="the descriptor count to settle")
