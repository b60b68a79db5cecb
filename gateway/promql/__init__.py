"""The gateway's one PromQL core: bounded parsing, one walker, one printer, tree rewrites.

Nothing outside this package parses or prints PromQL. `parse_query` and `parse_match` bound the
text, then parse it with Prometheus's own grammar and checks; `print_expr` is the only way a
tree becomes text again (upstream requests and cache keys alike).
"""

from __future__ import annotations

import sys

from gateway.promql.ast import Expr, VectorSelector, selectors, walk
from gateway.promql.errors import ParseError, PromQLError, QueryTooComplex
from gateway.promql.guard import DEFAULT_BOUNDS, Bounds
from gateway.promql.memo import TreeMemo
from gateway.promql.parser import parse, parse_selector
from gateway.promql.printer import print_expr

# The bounds above keep trees under ~800 levels; the recursive walks (type checks, printer,
# rewrites) take at most three frames a level. Python 3.11+ runs Python-to-Python calls
# without using the C stack, so a higher limit costs nothing until it is used.
if sys.getrecursionlimit() < 5000:
    sys.setrecursionlimit(5000)


QUERIES = TreeMemo()


def parse_canonical(text: str) -> tuple[Expr, str]:
    """The checked tree of a `query` and its canonical text; PromQLError with the message for
    the client. Remembered by text (`memo.TreeMemo`)."""
    remembered = QUERIES.get(text)
    if remembered is not None:
        return remembered
    expr = parse(text)
    printed = print_expr(expr)
    QUERIES.put(text, expr, printed)
    return expr, printed


def parse_query(text: str, bounds: Bounds = DEFAULT_BOUNDS) -> Expr:
    """The checked tree of a `query`; PromQLError with the message for the client."""
    if bounds is DEFAULT_BOUNDS:
        return parse_canonical(text)[0]
    return parse(text, bounds)


def parse_match(text: str, bounds: Bounds = DEFAULT_BOUNDS) -> VectorSelector:
    """A `match[]` series selector (Prometheus's ParseMetricSelector)."""
    return parse_selector(text, bounds)


__all__ = [
    "Bounds",
    "Expr",
    "ParseError",
    "PromQLError",
    "QueryTooComplex",
    "VectorSelector",
    "parse_canonical",
    "parse_match",
    "parse_query",
    "print_expr",
    "selectors",
    "walk",
]
