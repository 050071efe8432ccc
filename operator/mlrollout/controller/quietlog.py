"""Drops kopf's "Timer 'on_timer' succeeded." line, logged once per timer tick of every ModelDeployment.

At N = 1,000 the timers tick 100 times a second, so the line was most of the operator's log (14 MB in a
13-minute scale run) and of its JSON formatting; it says nothing a reader needs, since a tick that acts
logs its own transition and Events, and one that fails is logged by kopf at WARNING or ERROR. Only that
exact INFO line is dropped, and only when the operator logs at INFO or above: the change handlers' lines
("Handler 'on_change' succeeded.") and our own per-object lines stay, and DEBUG keeps everything.
"""

from __future__ import annotations

import logging

__all__ = ["TimerSuccessFilter", "quiet_timer_success"]

KOPF_OBJECTS = "kopf.objects"  # the logger behind kopf's per-object LoggerAdapter (and the handlers' `logger`)


class TimerSuccessFilter(logging.Filter):
    """False for kopf's INFO record that a timer handler (one of `timers`, by kopf's handler id) succeeded."""

    def __init__(self, timers: tuple[str, ...]) -> None:
        super().__init__()
        self.messages = frozenset(f"Timer {t!r} succeeded." for t in timers)  # as kopf formats `str(handler)`

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.getMessage() in self.messages)


def quiet_timer_success(timers: tuple[str, ...], level: str) -> TimerSuccessFilter | None:
    """Installs the filter on kopf's per-object logger unless `level` is debug; returns it (None if not)."""
    if level.lower() == "debug":
        return None
    flt = TimerSuccessFilter(timers)
    logging.getLogger(KOPF_OBJECTS).addFilter(flt)
    return flt
