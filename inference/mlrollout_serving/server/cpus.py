"""How many CPUs this process can really use: its affinity mask and its container's CPU quota.

A large batch runs on a worker thread so the event loop can read the next requests meanwhile; that only
pays when a second CPU can run the loop. On one CPU (a pod with ``limits.cpu: 1``, or ``taskset`` to one
core) the thread just adds a hop and GIL hand-overs: about 8 context switches per 256-row request.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
"""cgroup v2: ``"<quota> <period>"`` in microseconds, or ``"max <period>"`` for no limit."""
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")
"""cgroup v1: ``cpu.cfs_quota_us`` (-1 for no limit) and ``cpu.cfs_period_us`` in this directory."""


def quota_cpus(text: str) -> int | None:
    """CPUs granted by ``"<quota> <period>"`` (cgroup v2 ``cpu.max``, or v1's two files joined), rounded
    up; None when unlimited (``max`` or a quota <= 0) or unreadable."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, math.ceil(quota / period))


def _quota(cpu_max: Path, v1_cpu: Path) -> int | None:
    try:
        return quota_cpus(cpu_max.read_text())
    except OSError:
        pass
    try:  # cgroup v1, as on nodes that mount the v1 hierarchies
        return quota_cpus(
            f"{(v1_cpu / 'cpu.cfs_quota_us').read_text().strip()} {(v1_cpu / 'cpu.cfs_period_us').read_text()}"
        )
    except OSError:  # no cgroup filesystem: the affinity mask is all we know
        return None


def usable_cpus(cpu_max: Path = CGROUP_CPU_MAX, v1_cpu: Path = CGROUP_V1_CPU) -> int:
    """The CPUs this process may run on at once (at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = _quota(cpu_max, v1_cpu)
    return max(1, min(cpus, quota) if quota is not None else cpus)
