"""Prometheus's prettier.go (what /api/v1/format_query answers): nodes longer than 100 bytes
are split over lines, two spaces of indent a level."""

from __future__ import annotations

from gateway.promql.ast import (
    AggregateExpr,
    BinaryExpr,
    Call,
    Expr,
    ParenExpr,
    SubqueryExpr,
    UnaryExpr,
)
from gateway.promql.printer import aggregate_head, binary_operator, print_expr, subquery_suffix

MAX_CHARACTERS_PER_LINE = 100


def _indent(level: int) -> str:
    return "  " * level


def prettify(node: Expr, level: int = 0) -> str:
    """The prettified text. Each node's one-line text is printed once (a deep tree would
    otherwise be printed again at every level)."""
    return _Prettier().pretty(node, level)


class _Prettier:
    def __init__(self) -> None:
        self._printed: dict[int, str] = {}

    def _line(self, node: Expr) -> str:
        return print_expr(node, self._printed)

    def _needs_split(self, node: Expr) -> bool:
        return len(self._line(node).encode("utf-8", "surrogateescape")) > MAX_CHARACTERS_PER_LINE

    def pretty(self, node: Expr, level: int) -> str:
        return _pretty(self, node, level)


def _pretty(self: _Prettier, node: Expr, level: int) -> str:
    print_expr = self._line
    _needs_split = self._needs_split
    prettify = self.pretty
    pad = _indent(level)
    if isinstance(node, AggregateExpr):
        if not _needs_split(node):
            return pad + print_expr(node)
        text = pad + aggregate_head(node) + "(\n"
        if node.param is not None:
            text += prettify(node.param, level + 1) + ",\n"
        return text + f"{prettify(node.expr, level + 1)}\n{pad})"
    if isinstance(node, BinaryExpr):
        if not _needs_split(node):
            return pad + print_expr(node)
        return (
            f"{prettify(node.lhs, level + 1)}\n{pad}{binary_operator(node)}\n{prettify(node.rhs, level + 1)}"
        )
    if isinstance(node, Call):
        if not _needs_split(node):
            return pad + print_expr(node)
        args = ",\n".join(prettify(a, level + 1) for a in node.args)
        return f"{pad}{node.func.name}(\n{args}\n{pad})"
    if isinstance(node, ParenExpr):
        if not _needs_split(node):
            return pad + print_expr(node)
        return f"{pad}(\n{prettify(node.expr, level + 1)}\n{pad})"
    if isinstance(node, SubqueryExpr):
        if not _needs_split(node):
            return print_expr(node)  # prettier.go does not indent an unsplit subquery
        return prettify(node.expr, level) + subquery_suffix(node)
    if isinstance(node, UnaryExpr):
        return f"{pad}{node.op}{prettify(node.expr, level).strip()}"
    return pad + print_expr(node)
