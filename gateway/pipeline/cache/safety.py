"""What a PromQL expression reads, in time, from the promql-parser AST.

A point evaluated at t reads samples at or before t, except that a negative offset reads
later samples (`reach`) and an `@` modifier pins the time. A point is final, and may be kept
long, once everything it reads is older than the freshness horizon. `@ start()` / `@ end()`
depend on the request's window: they are replaced by the request's own timestamps, so cached
extents are only shared by requests with the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import promql_parser as pp


@dataclass(frozen=True)
class Analysis:
    normalized: str  # str(expr): the key's form of the query
    reach_ms: int  # how far past its evaluation time a point reads (sum of negative offsets)
    at_ms: tuple[int, ...]  # literal @ timestamps
    start_end: int  # number of @ start() / @ end() modifiers
    reason: str | None = None  # why it must not be cached, if so


def _ms(delta: timedelta | None) -> int:
    return 0 if delta is None else round(delta.total_seconds() * 1000)


class _Walk:
    def __init__(self) -> None:
        self.reach_ms = 0
        self.at_ms: list[int] = []
        self.start_end = 0
        self.strings: list[str] = []

    def modifiers(self, offset: timedelta | None, at: Any) -> None:
        ms = _ms(offset)
        if ms < 0:
            self.reach_ms += -ms
        if at is None:
            return
        text = str(at).strip()
        if text.endswith(("start()", "end()")):
            self.start_end += 1
        else:
            self.at_ms.append(round(float(text.lstrip("@ ")) * 1000))

    def visit(self, node: Any) -> None:
        if isinstance(node, pp.VectorSelector):
            self.modifiers(node.offset, node.at)
            self.strings.extend(m.value for m in node.matchers.matchers)
        elif isinstance(node, pp.MatrixSelector):
            self.visit(node.vector_selector)
        elif isinstance(node, pp.SubqueryExpr):
            self.modifiers(node.offset, node.at)
            self.visit(node.expr)
        elif isinstance(node, pp.Call):
            for arg in node.args:
                self.visit(arg)
        elif isinstance(node, pp.AggregateExpr):
            self.visit(node.expr)
            if node.param is not None:
                self.visit(node.param)
        elif isinstance(node, pp.BinaryExpr):
            self.visit(node.lhs)
            self.visit(node.rhs)
        elif isinstance(node, (pp.ParenExpr, pp.UnaryExpr)):
            self.visit(node.expr)
        elif isinstance(node, pp.StringLiteral):
            self.strings.append(node.val)


def analyse(expr: Any) -> Analysis:
    walk = _Walk()
    try:
        walk.visit(expr)
    except (AttributeError, ValueError):
        return Analysis("", 0, (), 0, reason="unknown-expression")
    normalized = str(expr)
    reason = None
    if walk.start_end:
        # The replacement below is textual; it must find exactly the modifiers the AST has.
        found = normalized.count("@ start()") + normalized.count("@ end()")
        if found != walk.start_end or any("start()" in s or "end()" in s for s in walk.strings):
            reason = "ambiguous-start-end"
    return Analysis(normalized, walk.reach_ms, tuple(walk.at_ms), walk.start_end, reason)


def format_seconds(ms: int) -> str:
    """ms as Prometheus accepts a timestamp: decimal seconds, exact to the ms."""
    if ms < 0:
        return "-" + format_seconds(-ms)
    seconds, frac = divmod(ms, 1000)
    return f"{seconds}.{frac:03d}" if frac else str(seconds)


def pin_start_end(analysis: Analysis, start_ms: int, end_ms: int) -> str:
    """The normalised query with `@ start()` / `@ end()` replaced by these timestamps."""
    return analysis.normalized.replace("@ start()", f"@ {format_seconds(start_ms)}").replace(
        "@ end()", f"@ {format_seconds(end_ms)}"
    )


def final_until(analysis: Analysis, horizon_ms: int, pinned: tuple[int, ...] = ()) -> int | None:
    """The latest evaluation time whose point reads only data older than `horizon_ms`; None
    when no point is final (an `@` time, or a `pinned` start/end, is too recent)."""
    ats = analysis.at_ms + (pinned if analysis.start_end else ())
    if any(at + analysis.reach_ms > horizon_ms for at in ats):
        return None
    return horizon_ms - analysis.reach_ms
