"""The one error type of the evaluation: the inputs cannot be evaluated, and the message says which and why."""

from __future__ import annotations

from typing import Final

SHOWN_MAX: Final = 100  # characters of a value that a message quotes


class BadInput(Exception):
    """A flag, the dataset or a model is unusable (unreachable, wrong digest, missing column, NaN labels,
    a signature that does not fit the data...). The message is the report's reason, one line."""


def shown(value: object) -> str:
    """A value as a message quotes it (``repr``: one line), its first :data:`SHOWN_MAX` characters when it is
    longer: a bad field may be long (a quoted one up to the csv module's 128 KiB), a report's reason not."""
    text = str(value)
    if len(text) <= SHOWN_MAX:
        return repr(text)
    return f"{text[:SHOWN_MAX]!r}... ({len(text):,} characters)"
