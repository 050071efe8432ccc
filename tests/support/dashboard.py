"""The chart's Grafana dashboard as the tests see it: its queries, its variables, and the metric names of a query.

Stable API (unit and component tiers):

- ``DASHBOARD``: path of ``charts/mlrollout/dashboards/mlrollout.json``; ``load()`` parses it.
- ``queries(dashboard)``: every panel query as :class:`Query` (panel title, refId, expression, instant or range).
- ``variable_queries(dashboard)``: the ``label_values(...)`` queries of the template variables.
- ``substitute(expr, values)``: Grafana's variable substitution (``$name`` / ``${name}``) for the given values.
- ``variables_used(expr)``: the names of the variables an expression refers to.
- ``selectors(expr)``: ``(metric name, label matchers)`` of each vector selector of a PromQL expression, from a
  small lexer (strings, variables, numbers and durations, identifiers, punctuation) that skips functions,
  aggregations, keywords, label names in ``by (...)`` / ``on (...)`` groupings, ranges and everything inside
  ``{...}``. Enough for the dashboard's queries; Prometheus itself parses them in the component test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "charts" / "mlrollout" / "dashboards" / "mlrollout.json"

_TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      |(?P<variable>\$\{\w+(?::\w+)?\}|\$\w+)
      |(?P<number>\d[\w.]*)
      |(?P<ident>[A-Za-z_:][\w:]*)
      |(?P<space>\s+)
      |(?P<punct>=~|!~|!=|==|<=|>=|[-+*/%^(){}\[\],<>=@])""",
    re.VERBOSE,
)
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                       "and", "or", "unless", "offset", "atan2", "inf", "nan"})  # fmt: skip
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<match>.+),\s*)?(?P<label>\w+)\)$")


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # panels of a collapsed row


class Query(NamedTuple):
    panel: str
    ref_id: str
    expr: str
    instant: bool  # Grafana sends it as an instant query (tables, stats), else as a range query


def queries(dashboard: Mapping[str, Any]) -> list[Query]:
    panels = _panels(dashboard["panels"])
    return [
        Query(p["title"], t["refId"], t["expr"], bool(t.get("instant"))) for p in panels for t in p.get("targets", [])
    ]


class LabelValues(NamedTuple):
    """A template variable's ``label_values(match, label)`` query."""

    variable: str
    match: str | None
    label: str


def variable_queries(dashboard: Mapping[str, Any]) -> list[LabelValues]:
    found = []
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        parsed = _LABEL_VALUES.match(query.strip())
        if parsed is None:
            raise ValueError(f"variable {var['name']}: not a label_values(...) query: {query!r}")
        found.append(LabelValues(var["name"], parsed["match"], parsed["label"]))
    return found


def variables_used(expr: str) -> set[str]:
    return {m[1] or m[2] for m in _VARIABLE.finditer(expr)}


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace ``$name`` and ``${name}``; a variable without a value is an error (a typo, not an empty string)."""

    def value(m: re.Match[str]) -> str:
        name = m[1] or m[2]
        if name not in values:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(value, expr)


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"cannot lex {expr[pos : pos + 20]!r} at {pos} in {expr!r}")
        kind = m.lastgroup or ""
        if kind != "space":
            out.append((kind, m[0]))
        pos = m.end()
    return out


def selectors(expr: str) -> list[tuple[str, str]]:
    """The vector selectors of ``expr``, before or after substitution: ``(metric name, label matchers as
    written)``, the name empty for a selector without one."""
    tokens = _tokens(expr)
    found: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "ident" and text in _GROUPING and following == "(":
            i = _after_closing(tokens, i + 1, "(", ")")
            continue
        if kind == "ident" and text not in _KEYWORDS and following not in ("(", "by", "without"):
            matchers = ""
            if following == "{":
                end = _after_closing(tokens, i + 1, "{", "}")
                matchers = "".join(t for _, t in tokens[i + 2 : end - 1])
                i = end - 1
            found.append((text, matchers))
        elif text == "{":  # a selector without a name: {__name__="..."}
            end = _after_closing(tokens, i, "{", "}")
            found.append(("", "".join(t for _, t in tokens[i + 1 : end - 1])))
            i = end - 1
        elif text == "[":  # a range or subquery duration
            i = _after_closing(tokens, i, "[", "]") - 1
        i += 1
    return found


def _after_closing(tokens: list[tuple[str, str]], start: int, opening: str, closing: str) -> int:
    """Index after the bracket that closes ``tokens[start]`` (which is ``opening``)."""
    depth = 0
    for j in range(start, len(tokens)):
        depth += tokens[j][1] == opening
        depth -= tokens[j][1] == closing
        if depth == 0:
            return j + 1
    raise ValueError(f"unbalanced {opening}{closing} in {' '.join(t for _, t in tokens)}")
