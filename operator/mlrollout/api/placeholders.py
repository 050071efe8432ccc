"""The placeholders of a custom metric's PromQL query: one rule for the API and the renderer.

A query may use ``{{namespace}}``, ``{{modelDeployment}}``, ``{{track}}``, ``{{revision}}`` and
``{{window}}`` (spaces inside the braces allowed), and ``{{``/``}}`` nowhere else. The same definition
refuses a bad query offline (pydantic), in the API server (the CEL rules below, attached to the field by
`mlrollout.api.rolloutpolicy`) and at render time (`mlrollout.analysis.queries.render_custom`), so a query
that would make every look inconclusive is refused when it is written instead.

The CEL rules count matches because Kubernetes' CEL has ``findAll`` but no regex replace: every
``{{...}}`` is a known placeholder when as many known placeholders as ``{{...}}`` are found, and every
``{{`` opens (every ``}}`` closes) one when there are as many of them as ``{{...}}``. `query_problem`
checks the same counts, so the two layers cannot disagree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from mlrollout.api.common import cel

PLACEHOLDERS: Final = ("namespace", "modelDeployment", "track", "revision", "window")

ANY_PLACEHOLDER: Final = r"\{\{[^{}]*\}\}"
"""Anything written like a placeholder, known or not."""


def placeholder_pattern(names: tuple[str, ...]) -> str:
    """A placeholder of one of ``names``; group 1 is its name."""
    return r"\{\{ *(" + "|".join(names) + r") *\}\}"


PLACEHOLDER: Final = placeholder_pattern(PLACEHOLDERS)
"""A known placeholder; group 1 is its name."""
_OPEN: Final = r"\{\{"
_CLOSE: Final = r"\}\}"


def unknown_placeholder(names: tuple[str, ...]) -> str:
    """The message for a placeholder not among ``names``."""
    return "query uses an unknown placeholder; allowed: " + ", ".join("{{" + name + "}}" for name in names)


UNKNOWN_PLACEHOLDER: Final = unknown_placeholder(PLACEHOLDERS)
UNBALANCED_BRACES: Final = "query has a {{ or }} that is not part of a placeholder"


def _count(pattern: str) -> str:
    return f"self.findAll(r'{pattern}').size()"


QUERY_RULES: Final = (
    cel(f"{_count(ANY_PLACEHOLDER)} == {_count(PLACEHOLDER)}", UNKNOWN_PLACEHOLDER),
    cel(
        f"{_count(_OPEN)} == {_count(ANY_PLACEHOLDER)} && {_count(_CLOSE)} == {_count(ANY_PLACEHOLDER)}",
        UNBALANCED_BRACES,
    ),
)
"""The rules for the API server, on the query string itself (``self`` is the query)."""


def query_problem(query: str, names: tuple[str, ...] = PLACEHOLDERS) -> str | None:
    """What is wrong with the placeholders of ``query``, or None; the same counts as `QUERY_RULES`.
    ``names``: the placeholders allowed (another template, the Gateway API split query, has its own)."""
    written = re.findall(ANY_PLACEHOLDER, query)
    unknown = [p for p in written if re.fullmatch(placeholder_pattern(names), p) is None]
    if unknown:
        return f"{unknown_placeholder(names)} (got {', '.join(unknown)})"
    if len(re.findall(_OPEN, query)) != len(written) or len(re.findall(_CLOSE, query)) != len(written):
        return UNBALANCED_BRACES
    return None


def check_query(query: str, names: tuple[str, ...] = PLACEHOLDERS) -> str:
    """``query`` if its placeholders are sound; a pydantic validator (raises ValueError)."""
    problem = query_problem(query, names)
    if problem is not None:
        raise ValueError(problem)
    return query


def fill(query: str, values: Mapping[str, str], names: tuple[str, ...] = PLACEHOLDERS) -> str:
    """``query`` with every placeholder replaced by ``values[name]``; raises ValueError like `check_query`."""
    return re.sub(placeholder_pattern(names), lambda m: values[m.group(1)], check_query(query, names))
