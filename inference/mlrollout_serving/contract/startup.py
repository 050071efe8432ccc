"""The model server's start-up progress as log lines: written by the server, read back by the operator.

The kubelet's HTTP readiness probe keeps only the status code of ``/v2/health/ready``, so the reason in its
503 (how far a download is) never reaches the API server. The same words go to the server's log, and the
operator reads the last lines of a starting pod's log (``pods/log`` with ``tailLines`` and ``limitBytes``)
to show them in the ModelDeployment's status. This module is the one definition of those lines: the data
plane's log format, the messages the server writes while it starts, and their parser.

Messages (after the log prefix ``LOG_FORMAT`` puts in front)::

    downloading URI: 12.0 MiB of 40.0 MiB (30%), 8.1 MiB/s     (", RATE" only in the log, not the 503)
    downloading URI: 12.0 MiB, 8.1 MiB/s                        (the source declared no size)
    retrying URI in 1.0s after: REASON
    downloaded URI (40.0 MiB) in 4.9s
    loading URI (sha256 HEX)

The URI may hold anything (a key with spaces or colons), so every pattern anchors on what follows it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum
from typing import Final, NamedTuple

__all__ = [
    "LOG_FORMAT",
    "LOG_PREFIX",
    "Stage",
    "Startup",
    "downloaded",
    "downloading",
    "last_startup",
    "loading",
    "mib",
    "parse",
    "retrying",
]

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The data plane's log line (``logging.basicConfig(format=...)`` of every ``mlrollout-*`` program)."""
LOG_PREFIX: Final = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?\s+[A-Z]+\s+[\w.]+:\s*")
"""What ``LOG_FORMAT`` puts before the message: ``2026-12-04 03:52:41,123 INFO mlrollout_serving.server: ``."""

_MIB: Final = 1 << 20
_NUM = r"\d+(?:\.\d+)?"
_RATE = rf"(?:, {_NUM} MiB/s)?"
# the patterns :func:`parse` reads the lines with, compiled on its first call: the programs that only write
# these lines (the model server, the evaluation Job, whose start-up counts against its throughput) skip them
_DOWNLOADING = (
    rf"^downloading (?P<uri>.+): (?P<done>{_NUM}) MiB(?: of (?P<total>{_NUM}) MiB \((?P<pct>\d+)%\))?{_RATE}$"
)
_RETRYING = rf"^retrying (?P<uri>.+) in (?P<delay>{_NUM})s after: (?P<reason>.*)$"
_DOWNLOADED = rf"^downloaded (?P<uri>.+) \((?P<done>{_NUM}) MiB\) in (?P<seconds>{_NUM})s$"
_LOADING = r"^loading (?P<uri>.+) \(sha256 (?P<sha256>[0-9a-f]{64})\)$"


class Stage(StrEnum):
    DOWNLOADING = "downloading"
    RETRYING = "retrying"
    DOWNLOADED = "downloaded"
    LOADING = "loading"


def mib(n: float) -> str:
    """Bytes as ``12.0 MiB``: the unit every progress line uses."""
    return f"{n / _MIB:.1f} MiB"


def downloading(uri: str, done: int, total: int | None, rate: float | None = None) -> str:
    """``downloading s3://b/k: 12.0 MiB of 40.0 MiB (30%)`` (with ``, 8.1 MiB/s`` in the log)."""
    text = f"downloading {uri}: {mib(done)}"
    if total:
        text += f" of {mib(total)} ({100 * done // total}%)"
    return text if rate is None else f"{text}, {mib(rate)}/s"


def retrying(uri: str, delay: float, reason: str) -> str:
    return f"retrying {uri} in {delay:.1f}s after: {' '.join(reason.split())}"


def downloaded(uri: str, size: int, seconds: float) -> str:
    return f"downloaded {uri} ({mib(size)}) in {seconds:.1f}s"


def loading(uri: str, sha256: str) -> str:
    return f"loading {uri} (sha256 {sha256})"


class Startup(NamedTuple):
    """One start-up progress line, parsed: how far the server is with its model."""

    stage: Stage
    uri: str
    done_mib: float | None = None
    total_mib: float | None = None
    percent: int | None = None
    detail: str = ""  # retrying: the failure being retried

    def summary(self) -> str:
        """The words for the ModelDeployment's status (without the URI, which status already names)."""
        if self.stage is Stage.DOWNLOADING:
            if self.total_mib is not None:
                return f"downloading the model: {self.done_mib:.1f} of {self.total_mib:.1f} MiB ({self.percent}%)"
            return f"downloading the model: {self.done_mib:.1f} MiB"
        if self.stage is Stage.RETRYING:
            return f"retrying the model's download after: {self.detail}"
        if self.stage is Stage.DOWNLOADED:
            return f"downloaded the model ({self.done_mib:.1f} MiB), loading it"
        return "loading the model"


def parse(line: str) -> Startup | None:
    """The start-up progress in one log line (with or without ``LOG_PREFIX``), or None if it is another line."""
    message = LOG_PREFIX.sub("", line.strip(), count=1)
    if m := re.match(_DOWNLOADING, message):
        total = m["total"]
        return Startup(
            Stage.DOWNLOADING, m["uri"], float(m["done"]), float(total) if total else None,
            int(m["pct"]) if m["pct"] else None,
        )  # fmt: skip
    if m := re.match(_RETRYING, message):
        return Startup(Stage.RETRYING, m["uri"], detail=m["reason"])
    if m := re.match(_DOWNLOADED, message):
        return Startup(Stage.DOWNLOADED, m["uri"], done_mib=float(m["done"]))
    if m := re.match(_LOADING, message):
        return Startup(Stage.LOADING, m["uri"])
    return None


def last_startup(lines: Iterable[str]) -> Startup | None:
    """The latest progress line of a log's tail (the last line of a tail cut by ``limitBytes`` may be
    partial: it simply does not parse)."""
    found = None
    for line in lines:
        found = parse(line) or found
    return found
