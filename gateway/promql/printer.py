"""The one PromQL printer: canonical text that parses back to the same tree.

Prometheus's printer.go, with what it loses put back: `group_left`/`group_right` after an empty
`ignoring()` (printer.go drops the whole clause), and strings holding bytes that are not UTF-8
(`"\\xff"`), which are printed as the escapes they came from. Matchers are printed sorted, as
Prometheus prints them, so equivalent selectors print alike. Every text that goes upstream or
into a cache key is made here.
"""

from __future__ import annotations

import math
import re

from gateway.golang import format_duration, format_float, go_quote
from gateway.promql.ast import (
    METRIC_NAME,
    AggregateExpr,
    BinaryExpr,
    Call,
    Expr,
    Matcher,
    MatrixSelector,
    NumberLiteral,
    ParenExpr,
    StringLiteral,
    SubqueryExpr,
    UnaryExpr,
    VectorMatching,
    VectorSelector,
)

_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*", re.ASCII)
_METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*", re.ASCII)
_SPECIAL = re.compile("[\udc80-\udcff\ufffd]")


def quote(text: str) -> str:
    """A PromQL double-quoted string for `text`: Go's %q, with raw bytes (surrogate escapes)
    as \\xNN and U+FFFD as \\ufffd (Go prints it as it is, but Prometheus's lexer refuses it
    in a string literal: "invalid UTF-8 rune")."""
    if not _SPECIAL.search(text):
        return go_quote(text)
    out = []
    last = 0
    for match in _SPECIAL.finditer(text):
        out.append(go_quote(text[last : match.start()])[1:-1])
        char = match.group()
        out.append("\\ufffd" if char == "\ufffd" else f"\\x{ord(char) - 0xDC00:02x}")
        last = match.end()
    out.append(go_quote(text[last:])[1:-1])
    return '"' + "".join(out) + '"'


def label_name(name: str) -> str:
    return name if _LABEL.fullmatch(name) else quote(name)


def matcher(m: Matcher) -> str:
    return f"{label_name(m.name)}{m.op}{quote(m.value)}"


def _modifiers(at_ms: int | None, start_or_end: str | None, offset_ms: int) -> str:
    text = ""
    if at_ms is not None:
        sign = "-" if at_ms < 0 else ""
        seconds, millis = divmod(abs(at_ms), 1000)
        text = f" @ {sign}{seconds}.{millis:03d}"
    elif start_or_end is not None:
        text = f" @ {start_or_end}()"
    if offset_ms > 0:
        text += f" offset {format_duration(offset_ms)}"
    elif offset_ms < 0:
        text += f" offset -{format_duration(-offset_ms)}"
    return text


# Words the lexer reads as something a metric name cannot be (metric_identifier in the grammar
# takes the other keywords).
_NOT_METRIC_WORDS = frozenset({"atan2", "bool", "on", "ignoring", "group_left", "group_right", "inf", "nan"})


def _bare_name(name: str) -> bool:
    return bool(_METRIC.fullmatch(name)) and name.lower() not in _NOT_METRIC_WORDS


def _selector_body(node: VectorSelector) -> str:
    name = node.name
    shown_name = name if name and _bare_name(name) else ""
    parts = sorted(
        matcher(m)
        for m in node.matchers
        if not (shown_name and m.name == METRIC_NAME and m.op == "=" and m.value == name)
    )
    if name and not shown_name:
        # A name that would read as a keyword or number stays inside the braces.
        parts = sorted(matcher(m) for m in node.matchers)
    if not parts:
        return shown_name
    return shown_name + "{" + ",".join(parts) + "}"


def _labels(names: tuple[str, ...]) -> str:
    return "(" + ", ".join(names) + ")"


def _matching(vm: VectorMatching | None) -> str:
    if vm is None:
        return ""
    grouped = vm.card in ("many-to-one", "one-to-many")
    if not (vm.matching_labels or vm.on or grouped):
        return ""
    text = f" {'on' if vm.on else 'ignoring'} {_labels(vm.matching_labels)}"
    if grouped:
        side = "left" if vm.card == "many-to-one" else "right"
        text += f" group_{side} {_labels(vm.include)}"
    return text


def aggregate_head(node: AggregateExpr) -> str:
    """`sum`, `sum by (a) `, `sum without (a) ` (getAggOpStr)."""
    if node.without:
        return f"{node.op} without {_labels(node.grouping)} "
    if node.grouping:
        return f"{node.op} by {_labels(node.grouping)} "
    return node.op


def binary_operator(node: BinaryExpr) -> str:
    """The operator with its `bool` and vector-matching clauses."""
    flag = " bool" if node.return_bool else ""
    return f"{node.op}{flag}{_matching(node.matching)}"


def subquery_suffix(node: SubqueryExpr) -> str:
    step = format_duration(node.step_ms) if node.step_ms else ""
    return f"[{format_duration(node.range_ms)}:{step}]" + _modifiers(
        node.at_ms, node.start_or_end, node.offset_ms
    )


def print_expr(node: Expr, memo: dict[int, str] | None = None) -> str:
    """The canonical PromQL text of `node`. With `memo`, each subtree's text is kept there (by
    node identity) and reused: the prettier asks for every subtree's text."""
    if memo is not None:
        known = memo.get(id(node))
        if known is None:
            known = memo[id(node)] = _print(node, memo)
        return known
    return _print(node, None)


def _print(node: Expr, memo: dict[int, str] | None) -> str:
    if isinstance(node, VectorSelector):
        return _selector_body(node) + _modifiers(node.at_ms, node.start_or_end, node.offset_ms)
    if isinstance(node, MatrixSelector):
        vs = node.selector
        return f"{_selector_body(vs)}[{format_duration(node.range_ms)}]" + _modifiers(
            vs.at_ms, vs.start_or_end, vs.offset_ms
        )
    if isinstance(node, SubqueryExpr):
        step = format_duration(node.step_ms) if node.step_ms else ""
        return f"{print_expr(node.expr, memo)}[{format_duration(node.range_ms)}:{step}]" + _modifiers(
            node.at_ms, node.start_or_end, node.offset_ms
        )
    if isinstance(node, Call):
        return f"{node.func.name}(" + ", ".join(print_expr(a, memo) for a in node.args) + ")"
    if isinstance(node, AggregateExpr):
        args = print_expr(node.expr, memo)
        if node.param is not None:
            args = f"{print_expr(node.param, memo)}, {args}"
        return f"{aggregate_head(node)}({args})"
    if isinstance(node, BinaryExpr):
        return f"{print_expr(node.lhs, memo)} {binary_operator(node)} {print_expr(node.rhs, memo)}"
    if isinstance(node, ParenExpr):
        return f"({print_expr(node.expr, memo)})"
    if isinstance(node, UnaryExpr):
        return f"{node.op}{print_expr(node.expr, memo)}"
    if isinstance(node, NumberLiteral):
        # Go prints +Inf; a leading + would read as a unary operator when this is an operand.
        return "Inf" if node.val == math.inf else format_float(node.val)
    if isinstance(node, StringLiteral):
        return quote(node.val)
    raise TypeError(f"not a PromQL node: {type(node).__name__}")
