"""The open-files limit and the connection cap: the only I/O of the limits (``limits.connection_cap``
decides)."""

from __future__ import annotations

import dataclasses
import logging
import os
import resource

from mlrollout_serving.server.limits import Limits, connection_cap

log = logging.getLogger(__name__)


def open_fds() -> int:
    """Descriptors this process has open (``/proc/self/fd``; 0 where there is no /proc)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def fit_connections(limits: Limits) -> Limits:
    """Raise the soft open-files limit so ``limits.max_connections`` fit (as nginx's
    ``worker_rlimit_nofile`` does), or lower the cap to what the hard limit allows; logs the result."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = 1 << 30
    soft_n = unlimited if soft == resource.RLIM_INFINITY else soft
    hard_n = unlimited if hard == resource.RLIM_INFINITY else hard
    cap, new_soft = connection_cap(limits.max_connections, soft_n, hard_n, open_fds())
    if new_soft != soft_n:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        except (OSError, ValueError) as e:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft_n, new_soft, e)
            new_soft = soft_n
            cap, _ = connection_cap(limits.max_connections, soft_n, soft_n, open_fds())
    if cap < limits.max_connections:
        log.warning(
            "at most %d connections: --max-connections %d does not fit the open-files limit %d",
            cap,
            limits.max_connections,
            new_soft,
        )
    else:
        log.info("at most %d connections (open-files limit %d)", cap, new_soft)
    return dataclasses.replace(limits, max_connections=cap)
