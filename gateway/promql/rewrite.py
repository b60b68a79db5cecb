"""Every rewrite of a query happens here, on the tree: label enforcement (as prom-label-proxy's
injectproxy/enforce.go does it) and pinning `@ start()` / `@ end()` to a request's own times.
The callers print the result with `printer.print_expr`; no rewrite ever edits text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from gateway.promql.ast import (
    AggregateExpr,
    BinaryExpr,
    Call,
    Expr,
    Matcher,
    MatrixSelector,
    ParenExpr,
    SubqueryExpr,
    UnaryExpr,
    VectorSelector,
)
from gateway.promql.errors import PromQLError
from gateway.promql.printer import quote
from gateway.promql.regex import full_match

Pairs = tuple[tuple[str, str], ...]


class EnforcementConflict(PromQLError):
    """The query asks for a value of an enforced label that the principal may not read."""


def map_tree(node: Expr, fn: Callable[[Expr], Expr | None]) -> Expr:
    """A copy of the tree with `fn` applied top-down: where it returns a node, that node
    replaces the subtree (its children are not visited); None means: keep, and recurse."""
    done = fn(node)
    if done is not None:
        return done
    if isinstance(node, MatrixSelector):
        selector = map_tree(node.selector, fn)
        assert isinstance(selector, VectorSelector)
        return replace(node, selector=selector)
    if isinstance(node, (SubqueryExpr, ParenExpr, UnaryExpr)):
        return replace(node, expr=map_tree(node.expr, fn))
    if isinstance(node, Call):
        return replace(node, args=tuple(map_tree(a, fn) for a in node.args))
    if isinstance(node, AggregateExpr):
        param = None if node.param is None else map_tree(node.param, fn)
        return replace(node, expr=map_tree(node.expr, fn), param=param)
    if isinstance(node, BinaryExpr):
        return replace(node, lhs=map_tree(node.lhs, fn), rhs=map_tree(node.rhs, fn))
    return node


def satisfies(m: Matcher, value: str) -> bool:
    """Whether a label with `value` passes matcher `m` (RE2, anchored, as Prometheus)."""
    if m.op == "=":
        return m.value == value
    if m.op == "!=":
        return m.value != value
    hit = full_match(m.value, value)
    return hit if m.op == "=~" else not hit


def enforce_selector(selector: VectorSelector, pairs: Pairs, override: bool = False) -> VectorSelector:
    """The selector with `name="value"` for every enforced pair. A matcher of the query on an
    enforced label must admit the enforced value (it can then only narrow the selection, and is
    kept), else EnforcementConflict; with `override` such matchers are dropped instead."""
    enforced = dict(pairs)
    kept: list[Matcher] = []
    for m in selector.matchers:
        value = enforced.get(m.name)
        if value is None:
            kept.append(m)
            continue
        if override:
            continue
        if not satisfies(m, value):
            raise EnforcementConflict(
                f"the query selects {m.name}{m.op}{quote(m.value)}, but this principal may only read "
                f"{m.name}={quote(value)}; remove that matcher (it is added for you)"
            )
        if m.op != "=":
            kept.append(m)
    kept.extend(Matcher(name, "=", value) for name, value in pairs)
    return replace(selector, matchers=tuple(kept))


def enforce(expr: Expr, pairs: Pairs, override: bool = False) -> Expr:
    """The query with the enforced matchers in every selector (range selectors and subqueries
    included)."""

    def visit(node: Expr) -> Expr | None:
        if isinstance(node, VectorSelector):
            return enforce_selector(node, pairs, override)
        return None

    return map_tree(expr, visit)


def carries(selector: VectorSelector, pairs: Pairs) -> bool:
    """Every enforced pair is an equality matcher of the selector and no other matcher on an
    enforced label excludes its value: the selector reads only the principal's series."""
    for name, value in pairs:
        if not any(m.name == name and m.op == "=" and m.value == value for m in selector.matchers):
            return False
        if any(m.name == name and not satisfies(m, value) for m in selector.matchers):
            return False
    return True


def pin_start_end(expr: Expr, start_ms: int, end_ms: int) -> Expr:
    """The query with `@ start()` / `@ end()` replaced by these times (what they mean for a
    request with this window), so that a sub-range fetch keeps the original's meaning."""

    def pinned(node: VectorSelector | SubqueryExpr) -> int:
        return start_ms if node.start_or_end == "start" else end_ms

    def visit(node: Expr) -> Expr | None:
        if isinstance(node, VectorSelector) and node.start_or_end is not None:
            return replace(node, at_ms=pinned(node), start_or_end=None)
        if isinstance(node, SubqueryExpr) and node.start_or_end is not None:
            return replace(node, expr=map_tree(node.expr, visit), at_ms=pinned(node), start_or_end=None)
        return None

    return map_tree(expr, visit)
