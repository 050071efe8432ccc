"""The one error type of the evaluation: the inputs cannot be evaluated, and the message says which and why."""

from __future__ import annotations


class BadInput(Exception):
    """A flag, the dataset or a model is unusable (unreachable, wrong digest, missing column, NaN labels,
    a signature that does not fit the data...). The message is the report's reason, one line."""
