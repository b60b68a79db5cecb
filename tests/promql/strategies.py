"""Hypothesis strategies for PromQL trees that type-check, with hostile strings and numbers.

Trees are built the way the parser builds them (operands that bind looser than their parent are
wrapped in a ParenExpr), so `parse(print(t)) == t` is the property to hold.
"""

from __future__ import annotations

import math

from hypothesis import strategies as st

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
from gateway.promql.parser import FUNCTIONS

HOSTILE_TEXT = st.one_of(
    st.sampled_from(
        ['a"b', "a\\b", "\\", '"', "x\ny", "#", "tab\there", "é✓", "\x00", "\u2028", "} or {", "\\.", ""]
    ),
    st.text(max_size=12),
)
REGEXES = st.sampled_from(["a|b", ".*", ".+", "demo\\..*", "(x|y)z?", "[a-z]+", "\\d{2,3}", "é+", ""])
LABELS = st.sampled_from(["job", "instance", "le", "path", "_x", "a1", "offset", "by", "sum", "on"])
METRICS = st.sampled_from(
    ["demo_num_cpus", "up", "http_requests_total", "a:b:c", "sum", "offset", "by", "start", "inf_x"]
)
# Durations as the parser gives them: ms, compound units, weeks and years.
DURATIONS = st.one_of(
    st.sampled_from([1, 800, 1900, 30_900, 60_000, 90_000, 300_000, 5_400_000, 86_400_000, 604_800_000]),
    st.integers(min_value=1, max_value=400 * 86_400_000),
)
NUMBERS = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, 31.0, 1e6, 1e-7, 1.5e300, float("inf"), float("-inf"), float("nan")]),
    st.floats(allow_nan=True, allow_infinity=True),
)
AT = st.one_of(st.none(), st.integers(min_value=-(10**12), max_value=10**12))
OFFSETS = st.one_of(st.just(0), DURATIONS, DURATIONS.map(lambda d: -d))


@st.composite
def matchers(draw: st.DrawFn) -> tuple[Matcher, ...]:
    found = []
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        op = draw(st.sampled_from(["=", "!=", "=~", "!~"]))
        value = draw(REGEXES if op in ("=~", "!~") else HOSTILE_TEXT)
        found.append(Matcher(draw(LABELS), op, value))
    return tuple(found)


@st.composite
def vector_selectors(draw: st.DrawFn, modifiers: bool = True) -> VectorSelector:
    name = draw(st.one_of(st.just(""), METRICS))
    own = draw(matchers())
    if name:
        own = (*own, Matcher(METRIC_NAME, "=", name))
    else:
        own = (*own, Matcher(draw(LABELS), "=", draw(st.text(min_size=1, max_size=6))))
    own = tuple(m for m in own if m.name != METRIC_NAME or m.value == name) if name else own
    if not modifiers:
        return VectorSelector(name, own)
    at = draw(AT)
    start_or_end = draw(st.sampled_from([None, "start", "end"])) if at is None else None
    return VectorSelector(name, own, draw(OFFSETS), at, start_or_end)


@st.composite
def range_selectors(draw: st.DrawFn) -> MatrixSelector:
    plain = draw(vector_selectors(modifiers=False))
    at = draw(AT)
    start_or_end = draw(st.sampled_from([None, "start", "end"])) if at is None else None
    selector = VectorSelector(plain.name, plain.matchers, draw(OFFSETS), at, start_or_end)
    return MatrixSelector(selector, draw(DURATIONS))


def _paren(node: Expr) -> Expr:
    return node if isinstance(node, (VectorSelector, Call, ParenExpr, AggregateExpr)) else ParenExpr(node)


@st.composite
def vector_exprs(draw: st.DrawFn, depth: int = 3) -> Expr:
    """An expression of type instant vector."""
    if depth <= 0:
        return draw(vector_selectors())
    kind = draw(
        st.sampled_from(["selector", "call", "aggregate", "binary", "unary", "subquery_call", "paren"])
    )
    if kind == "selector":
        return draw(vector_selectors())
    if kind == "call":
        name = draw(st.sampled_from(["rate", "increase", "holt_winters", "label_replace", "abs", "round"]))
        if name in ("rate", "increase"):
            return Call(FUNCTIONS[name], (draw(range_selectors()),))
        if name == "holt_winters":
            args = (
                draw(range_selectors()),
                NumberLiteral(0.5),
                NumberLiteral(draw(st.sampled_from([0.1, 0.9]))),
            )
            return Call(FUNCTIONS[name], args)
        if name == "label_replace":
            strings = tuple(StringLiteral(draw(HOSTILE_TEXT)) for _ in range(3))
            args = (
                draw(vector_exprs(depth - 1)),
                strings[0],
                strings[1],
                StringLiteral("x"),
                StringLiteral(draw(REGEXES)),
            )
            return Call(FUNCTIONS[name], args)
        if name == "round":
            return Call(FUNCTIONS[name], (draw(vector_exprs(depth - 1)), NumberLiteral(draw(NUMBERS))))
        return Call(FUNCTIONS[name], (draw(vector_exprs(depth - 1)),))
    if kind == "aggregate":
        op = draw(
            st.sampled_from(["sum", "avg", "count", "topk", "quantile", "count_values", "stddev", "group"])
        )
        param: Expr | None = None
        if op in ("topk", "quantile"):
            param = NumberLiteral(draw(st.sampled_from([1.0, 0.5, 3.0])))
        elif op == "count_values":
            param = StringLiteral(draw(HOSTILE_TEXT))
        grouping = tuple(draw(st.lists(LABELS, max_size=3)))
        without = draw(st.booleans()) if grouping else False
        return AggregateExpr(op, draw(vector_exprs(depth - 1)), param, grouping, without)
    if kind == "binary":
        op = draw(
            st.sampled_from(
                ["+", "-", "*", "/", "%", "^", "==", "!=", ">", "<=", "and", "or", "unless", "atan2"]
            )
        )
        lhs = _paren(draw(vector_exprs(depth - 1)))
        rhs = _paren(draw(vector_exprs(depth - 1)))
        labels = tuple(draw(st.lists(LABELS, max_size=2, unique=True)))
        on = draw(st.booleans())
        if op in ("and", "or", "unless"):
            matching = VectorMatching("many-to-many", labels, on)
            return BinaryExpr(op, lhs, rhs, matching, False)
        card = draw(st.sampled_from(["one-to-one", "many-to-one", "one-to-many"]))
        include = (
            tuple(draw(st.lists(st.sampled_from(["x", "y"]), max_size=2, unique=True)))
            if card != "one-to-one"
            else ()
        )
        if on and set(include) & set(labels):
            include = ()
        comparison = op in ("==", "!=", ">", "<=")
        return BinaryExpr(
            op, lhs, rhs, VectorMatching(card, labels, on, include), comparison and draw(st.booleans())
        )
    if kind == "unary":
        return UnaryExpr(draw(st.sampled_from(["-", "+"])), _paren(draw(vector_exprs(depth - 1))))
    if kind == "subquery_call":
        inner = _paren(draw(vector_exprs(depth - 1)))
        at = draw(AT)
        start_or_end = draw(st.sampled_from([None, "start", "end"])) if at is None else None
        step = draw(st.one_of(st.just(0), DURATIONS))
        sub = SubqueryExpr(inner, draw(DURATIONS), step, draw(OFFSETS), at, start_or_end)
        return Call(FUNCTIONS[draw(st.sampled_from(["max_over_time", "rate", "count_over_time"]))], (sub,))
    return ParenExpr(draw(vector_exprs(depth - 1)))


@st.composite
def scalar_exprs(draw: st.DrawFn) -> Expr:
    kind = draw(st.sampled_from(["number", "binary", "call"]))
    if kind == "number":
        return NumberLiteral(draw(NUMBERS))
    if kind == "call":
        return Call(FUNCTIONS["scalar"], (draw(vector_exprs(1)),))
    op = draw(st.sampled_from(["+", "-", "*", "/", "^", "%", "atan2"]))
    lhs, rhs = NumberLiteral(draw(NUMBERS)), NumberLiteral(draw(NUMBERS))
    negative = math.copysign(1.0, lhs.val) < 0 and not math.isnan(lhs.val)
    return BinaryExpr(op, ParenExpr(lhs) if negative else lhs, rhs, None, False)


def queries() -> st.SearchStrategy[Expr]:
    return st.one_of(vector_exprs(), scalar_exprs())
