"""What a PromQL expression reads, in time, from its tree.

A point evaluated at t reads samples at or before t, except that a negative offset reads
later samples (`reach`) and an `@` modifier pins the time. A point is final, and may be kept
long, once everything it reads is older than the freshness horizon. `@ start()` / `@ end()`
depend on the request's window: they are pinned to the request's own timestamps on the tree
(`gateway.promql.rewrite.pin_start_end`), so cached extents are only shared by requests with
the same ones, and sub-range fetches keep the original's meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.promql import Expr, print_expr, walk
from gateway.promql.ast import SubqueryExpr, VectorSelector
from gateway.promql.rewrite import pin_start_end as pin_tree


@dataclass(frozen=True)
class Analysis:
    expr: Expr
    normalized: str  # the canonical printed query: the key's form of it
    reach_ms: int  # how far past its evaluation time a point reads (sum of negative offsets)
    at_ms: tuple[int, ...]  # literal @ timestamps
    start_end: int  # number of @ start() / @ end() modifiers


def analyse(expr: Expr) -> Analysis:
    reach = 0
    ats: list[int] = []
    start_end = 0
    for node in walk(expr):
        if isinstance(node, (VectorSelector, SubqueryExpr)):
            if node.offset_ms < 0:
                reach -= node.offset_ms
            if node.start_or_end is not None:
                start_end += 1
            elif node.at_ms is not None:
                ats.append(node.at_ms)
    return Analysis(expr, print_expr(expr), reach, tuple(ats), start_end)


def format_seconds(ms: int) -> str:
    """ms as Prometheus accepts a timestamp: decimal seconds, exact to the ms."""
    if ms < 0:
        return "-" + format_seconds(-ms)
    seconds, frac = divmod(ms, 1000)
    return f"{seconds}.{frac:03d}" if frac else str(seconds)


def pin_start_end(analysis: Analysis, start_ms: int, end_ms: int) -> str:
    """The canonical query with `@ start()` / `@ end()` replaced by these timestamps."""
    return print_expr(pin_tree(analysis.expr, start_ms, end_ms))


def final_until(analysis: Analysis, horizon_ms: int, pinned: tuple[int, ...] = ()) -> int | None:
    """The latest evaluation time whose point reads only data older than `horizon_ms`; None
    when no point is final (an `@` time, or a `pinned` start/end, is too recent)."""
    ats = analysis.at_ms + (pinned if analysis.start_end else ())
    if any(at + analysis.reach_ms > horizon_ms for at in ats):
        return None
    return horizon_ms - analysis.reach_ms
