"""Prints a promql_parser AST back to PromQL text that parses to the same expression.

The library's own `str()` cannot be trusted for this: it does not escape quotes or newlines in
label values and strings, prints `foo[5m:]` as `foo[5m]` and drops `or` matcher groups. This
printer is used where a rewritten query goes upstream, so it is explicit and conservative:
every metric name becomes a `__name__` matcher, operands get parentheses, strings are escaped.

`groups` lets the caller rewrite each selector's matcher groups while printing (that is how
label enforcement injects its matchers without mutating the AST).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import promql_parser as pp

Triple = tuple[str, str, str]  # (label name, operator, value)
Groups = list[list[Triple]]
GroupRewrite = Callable[[Groups], Groups]

_LEGACY_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_OPS = ((pp.MatchOp.Equal, "="), (pp.MatchOp.NotEqual, "!="), (pp.MatchOp.Re, "=~"), (pp.MatchOp.NotRe, "!~"))
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_DURATION_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1))


class UnprintableQuery(ValueError):
    """The AST holds something this printer does not know how to print faithfully."""


def selector_groups(selector: Any) -> Groups:
    """A vector selector's matchers as OR-ed groups of triples, the metric name in each group."""
    name = [("__name__", "=", selector.name)] if selector.name else []
    matchers = selector.matchers
    plain = [_triple(m) for m in matchers.matchers]
    ors = [[_triple(m) for m in group] for group in (matchers.or_matchers or [])]
    if ors:
        return [name + plain + group for group in ors]
    return [name + plain]


def _triple(matcher: Any) -> Triple:
    for kind, op in _OPS:  # MatchOp is not hashable
        if matcher.op == kind:
            return (matcher.name, op, matcher.value)
    raise UnprintableQuery(f"unknown matcher operator {matcher.op}")


def quote(text: str) -> str:
    out = []
    for char in text:
        escaped = _ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def label_name(name: str) -> str:
    return name if _LEGACY_NAME_RE.match(name) else quote(name)


def duration(delta: timedelta) -> str:
    ms = round(delta.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    sign, ms = ("-" if ms < 0 else ""), abs(ms)
    parts = []
    for unit, size in _DURATION_UNITS:
        amount, ms = divmod(ms, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return sign + "".join(parts)


def number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _braces(groups: Groups) -> str:
    rendered = [",".join(f"{label_name(n)}{op}{quote(v)}" for n, op, v in group) for group in groups]
    return "{" + " or ".join(rendered) + "}"


def _modifiers(at: Any, offset: timedelta | None) -> str:
    text = ""
    if at is not None:
        # str(at) is safe for every value; reading at.at panics for negative timestamps.
        text += " " + str(at).strip()
    if offset:
        text += f" offset {duration(offset)}"
    return text


def _labels(names: Any) -> str:
    return "(" + ", ".join(label_name(n) for n in (names or [])) + ")"


def render(node: Any, groups: GroupRewrite | None = None) -> str:
    """PromQL text for `node`; `groups` may rewrite each selector's matcher groups."""
    rewrite = groups or (lambda g: g)

    def go(n: Any) -> str:
        if isinstance(n, pp.VectorSelector):
            return _braces(rewrite(selector_groups(n))) + _modifiers(n.at, n.offset)
        if isinstance(n, pp.MatrixSelector):
            vs = n.vector_selector
            body = _braces(rewrite(selector_groups(vs)))
            return f"{body}[{duration(n.range)}]" + _modifiers(vs.at, vs.offset)
        if isinstance(n, pp.SubqueryExpr):
            step = duration(n.step) if n.step else ""
            return f"{wrap(n.expr)}[{duration(n.range)}:{step}]" + _modifiers(n.at, n.offset)
        if isinstance(n, pp.ParenExpr):
            return wrap(n)
        if isinstance(n, pp.UnaryExpr):
            return f"-{wrap(n.expr)}"
        if isinstance(n, pp.NumberLiteral):
            return number(n.val)
        if isinstance(n, pp.StringLiteral):
            return quote(n.val)
        if isinstance(n, pp.Call):
            return f"{n.func.name}(" + ", ".join(go(a) for a in n.args) + ")"
        if isinstance(n, pp.AggregateExpr):
            text = str(n.op)
            if n.modifier is not None:
                word = "without" if n.modifier.type == pp.AggModifierType.Without else "by"
                text += f" {word} {_labels(n.modifier.labels)}"
            args = ([go(n.param)] if n.param is not None else []) + [go(n.expr)]
            return f"{text}(" + ", ".join(args) + ")"
        if isinstance(n, pp.BinaryExpr):
            return f"{wrap(n.lhs)} {n.op!s}{_binary_modifier(n.modifier)} {wrap(n.rhs)}"
        raise UnprintableQuery(f"unsupported PromQL node {type(n).__name__}")

    def wrap(n: Any) -> str:
        # Any number of parentheses print as one pair, so printing is idempotent.
        while isinstance(n, pp.ParenExpr):
            n = n.expr
        return f"({go(n)})"

    return go(node)


def _binary_modifier(modifier: Any) -> str:
    if modifier is None:
        return ""
    text = " bool" if modifier.return_bool else ""
    matching = modifier.matching
    if matching is not None:
        word = "on" if matching.type == pp.LabelModifierType.Include else "ignoring"
        text += f" {word}{_labels(matching.labels)}"
    if modifier.card == pp.VectorMatchCardinality.ManyToOne:
        text += f" group_left{_labels(modifier.group_labels)}"
    elif modifier.card == pp.VectorMatchCardinality.OneToMany:
        text += f" group_right{_labels(modifier.group_labels)}"
    fill = modifier.fill_values
    if fill is not None:
        if fill.lhs is not None:
            text += f" fill_left({number(fill.lhs)})"
        if fill.rhs is not None:
            text += f" fill_right({number(fill.rhs)})"
    return text


def children(n: Any) -> list[Any]:
    """The sub-expressions of a node (a range selector's child is its vector selector)."""
    if isinstance(n, pp.MatrixSelector):
        return [n.vector_selector]
    if isinstance(n, (pp.SubqueryExpr, pp.ParenExpr, pp.UnaryExpr)):
        return [n.expr]
    if isinstance(n, pp.Call):
        return list(n.args)
    if isinstance(n, pp.AggregateExpr):
        return [x for x in (n.param, n.expr) if x is not None]
    if isinstance(n, pp.BinaryExpr):
        return [n.lhs, n.rhs]
    if isinstance(n, (pp.VectorSelector, pp.NumberLiteral, pp.StringLiteral)):
        return []
    raise UnprintableQuery(f"unsupported PromQL node {type(n).__name__}")


def nodes(node: Any) -> list[Any]:
    """Every node of the tree, depth first."""
    found, stack = [], [node]
    while stack:
        n = stack.pop()
        found.append(n)
        stack.extend(children(n))
    return found


def selectors(node: Any) -> list[Any]:
    """Every VectorSelector in the tree, those inside range selectors and subqueries included."""
    return [n for n in nodes(node) if isinstance(n, pp.VectorSelector)]
