"""Prometheus's PromQL parser (promql/parser, v2.53): its LALR tables, its actions, its checks.

`_grammar.py` holds goyacc's tables for Prometheus's generated_parser.y; `_run` is goyacc's
driver, line for line, and `_ACTIONS` the grammar's semantic actions. So the gateway accepts
what Prometheus accepts and reports a bad query with Prometheus's first error, words and
line:col included. Prometheus records errors and reports the first; this port stops at the
first, which reports the same one.

The input is bounded (`guard`): its length before lexing, its nesting and operators as the
tokens are read, since the tables' stack and the tree's depth grow with them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from gateway.golang import go_quote, parse_duration_ms, parse_float, parse_int_base0, round_half_away
from gateway.promql import _grammar as g
from gateway.promql.ast import (
    COMPARISON_OPS,
    METRIC_NAME,
    PARAM_AGGREGATORS,
    SET_OPS,
    AggregateExpr,
    BinaryExpr,
    Call,
    Expr,
    Function,
    Matcher,
    MatchOp,
    MatrixSelector,
    NumberLiteral,
    ParenExpr,
    Pos,
    StringLiteral,
    SubqueryExpr,
    UnaryExpr,
    ValueType,
    VectorMatching,
    VectorSelector,
    value_type,
)
from gateway.promql.errors import ParseError, PromQLError, QueryTooComplex
from gateway.promql.guard import DEFAULT_BOUNDS, Bounds, TokenBudget, check_length
from gateway.promql.lexer import TYPE_STR, Item, Lexer, is_label
from gateway.promql.regex import compile_anchored

FUNCTIONS: dict[str, Function] = {
    name: Function(name, args, variadic, ret, experimental)  # type: ignore[arg-type]  # generated table: plain str
    for name, (args, variadic, ret, experimental) in g.FUNCTIONS.items()
}

_CLOSING = frozenset({g.RIGHT_BRACE, g.RIGHT_PAREN, g.RIGHT_BRACKET, g.DURATION, g.NUMBER})
_MATCH_OPS: dict[int, MatchOp] = {g.EQL: "=", g.NEQ: "!=", g.EQL_REGEX: "=~", g.NEQ_REGEX: "!~"}
_INT64 = 2**63
# Compiling a query's regexes may take this much CPU at most (each compile is bounded by RE2's
# program size; a query may hold hundreds of them).
REGEX_BUDGET_SECONDS = 0.25


def _set(node: object, name: str, value: object) -> None:
    object.__setattr__(node, name, value)


class _BinModifier:
    """bool_modifier / on_or_ignoring / group_modifiers: a BinaryExpr without operands yet."""

    __slots__ = ("card", "include", "matching_labels", "on", "return_bool")

    def __init__(self, return_bool: bool) -> None:
        self.return_bool = return_bool
        self.card = "one-to-one"
        self.matching_labels: tuple[str, ...] = ()
        self.on = False
        self.include: tuple[str, ...] = ()


class _AggModifier:
    __slots__ = ("grouping", "without")

    def __init__(self, grouping: tuple[str, ...] = (), without: bool = False) -> None:
        self.grouping = grouping
        self.without = without


class _Args(list[Any]):
    """function_call_args / function_call_body (Prometheus's Expressions)."""


def prange(node: Expr) -> Pos:
    """PositionRange() of a node."""
    if isinstance(node, (VectorSelector, Call, AggregateExpr, ParenExpr, NumberLiteral, StringLiteral)):
        return node.pos
    if isinstance(node, MatrixSelector):
        return Pos(node.selector.pos.start, node.end_pos)
    if isinstance(node, SubqueryExpr):
        return Pos(prange(node.expr).start, node.end_pos)
    if isinstance(node, UnaryExpr):
        return Pos(node.start, prange(node.expr).end)
    return Pos(prange(node.lhs).start, prange(node.rhs).end)


def _item_range(item: Item) -> Pos:
    return Pos(item.pos, item.pos + len(item.val))


def documented_type(t: str) -> str:
    return {"vector": "instant vector", "matrix": "range vector"}.get(t, t)


class _Parser:
    def __init__(self, text: str, start_symbol: int, budget: TokenBudget) -> None:
        self.text = text
        self.budget = budget
        self.lex = Lexer(text)
        self.inject = start_symbol
        self.injecting = True
        self.last_closing = 0
        self.lval = Item(g.EOF, 0, "")
        self.result: Any = None
        self.regex_seconds = 0.0

    # ---------------------------------------------------------------- errors

    def error(self, pos: Pos | int, message: str) -> None:
        start = pos if isinstance(pos, int) else pos.start
        raise ParseError(self.text, start, message)

    def unexpected(self, context: str, expected: str) -> None:
        if self.lval.typ == g.ERROR:
            return
        message = "unexpected " + self.lval.desc()
        if context:
            message += " in " + context
        if expected:
            message += ", expected " + expected
        self.error(_item_range(self.lval), message)

    # ---------------------------------------------------------------- tokens

    def next_token(self) -> int:
        if self.injecting:
            self.injecting = False
            return self.inject
        while True:
            item = self.lex.next_item()
            if item.typ != g.COMMENT:
                break
        self.lval = item
        typ = item.typ
        self.budget.see(typ)
        if typ == g.ERROR:
            self.error(self.lex.start, item.val)
        if typ == g.EOF:
            self.inject, self.injecting = 0, True
        elif typ in _CLOSING:
            self.last_closing = item.pos + len(item.val)
        return typ

    # ---------------------------------------------------------------- helpers of parse.go

    def number(self, text: str) -> float:
        try:
            return float(parse_int_base0(text))
        except ValueError:
            pass
        try:
            return parse_float(text)
        except ValueError as err:
            self.error(_item_range(self.lval), f"error parsing number: {err}")
            raise AssertionError from None

    def duration(self, item: Item) -> int:
        try:
            ms = parse_duration_ms(item.val)
        except ValueError as err:
            self.error(_item_range(item), str(err))
            raise AssertionError from None
        if ms == 0:
            self.error(_item_range(item), "duration must be greater than 0")
        return ms

    def unquote(self, text: str) -> str:
        value = unquote(text)
        if value is None:
            self.error(_item_range(self.lval), f"error unquoting string {go_quote(text)}: invalid syntax")
            raise AssertionError
        return value

    def label_matcher(self, label: Item, op: Item, value: Item) -> Matcher:
        text = self.unquote(value.val)
        kind = _MATCH_OPS[op.typ]
        if kind in ("=~", "!~"):
            # CPU time of this thread, not wall time: waiting for the interpreter lock or a busy
            # machine must not make a valid query fail.
            began = time.thread_time()
            try:
                compile_anchored(text)
            except ValueError as err:
                self.error(Pos(label.pos, value.end()), str(err))
            self.regex_seconds += time.thread_time() - began
            if self.regex_seconds > REGEX_BUDGET_SECONDS:
                raise QueryTooComplex(
                    f"the regular expressions of this query took over {REGEX_BUDGET_SECONDS * 1000:.0f} ms "
                    "to compile; use fewer or simpler ones"
                )
        return Matcher(label.val, kind, text)

    def binary(self, lhs: Expr, op: Item, modifier: _BinModifier, rhs: Expr) -> BinaryExpr:
        matching = VectorMatching(
            modifier.card,  # type: ignore[arg-type]  # set by the grammar to one of the four cardinalities
            modifier.matching_labels,
            modifier.on,
            modifier.include,
        )
        return BinaryExpr(op.val.lower(), lhs, rhs, matching, modifier.return_bool)

    def aggregate(self, op: Item, modifier: _AggModifier, args: _Args) -> AggregateExpr:
        pos = Pos(op.pos, self.last_closing)
        if not args:
            self.error(pos, "no arguments for aggregate expression provided")
        name = op.val.lower()
        desired = 2 if name in PARAM_AGGREGATORS else 1
        if len(args) != desired:
            self.error(
                pos,
                "wrong number of arguments for aggregate expression provided, "
                f"expected {desired}, got {len(args)}",
            )
        param = args[0] if desired == 2 else None
        return AggregateExpr(name, args[desired - 1], param, modifier.grouping, modifier.without, pos)

    def add_offset(self, node: Expr, offset_ms: int) -> None:
        if isinstance(node, VectorSelector):
            target: Any = node
        elif isinstance(node, MatrixSelector):
            target = node.selector
        elif isinstance(node, SubqueryExpr):
            target = node
        else:
            self.error(
                prange(node),
                "offset modifier must be preceded by an instant vector selector or range vector "
                "selector or a subquery",
            )
            return
        if target.offset_ms != 0:
            self.error(prange(node), "offset may not be set multiple times")
        _set(target, "offset_ms", offset_ms)
        self._set_end(node)

    def _set_end(self, node: Expr) -> None:
        if isinstance(node, VectorSelector):
            _set(node, "pos", Pos(node.pos.start, self.last_closing))
        else:
            _set(node, "end_pos", self.last_closing)

    def _at_target(self, node: Expr) -> Any:
        if isinstance(node, (VectorSelector, SubqueryExpr)):
            target: Any = node
        elif isinstance(node, MatrixSelector):
            target = node.selector
        else:
            self.error(
                prange(node),
                "@ modifier must be preceded by an instant vector selector or range vector selector "
                "or a subquery",
            )
        if target.at_ms is not None or target.start_or_end is not None:
            self.error(prange(node), "@ <timestamp> may not be set multiple times")
        return target

    def set_timestamp(self, node: Expr, ts: float) -> None:
        if math.isinf(ts) or math.isnan(ts) or ts >= float(_INT64 - 1) or ts <= float(-_INT64):
            shown = f"{ts:f}".replace("inf", "Inf").replace("nan", "NaN")
            shown = "+" + shown if shown == "Inf" else shown
            self.error(prange(node), f"timestamp out of bounds for @ modifier: {shown}")
        target = self._at_target(node)
        ms_float = round_half_away(ts * 1000)
        # Go's int64(float) conversion of an out-of-range value gives MinInt64 on amd64.
        ms = int(ms_float) if -_INT64 <= ms_float < _INT64 else -_INT64
        _set(target, "at_ms", ms)
        self._set_end(node)

    def set_at_preprocessor(self, node: Expr, op: Item) -> None:
        target = self._at_target(node)
        _set(target, "start_or_end", op.val.lower())
        self._set_end(node)

    # ---------------------------------------------------------------- checkAST

    def check(self, node: Expr) -> ValueType:
        """checkAST: type checks in Prometheus's order; returns the node's type (Expr.Type()),
        computed from its children's so that the walk stays linear in the tree's size."""
        if isinstance(node, AggregateExpr):
            self.expect(node.expr, "vector", "aggregation expression")
            if node.op in ("topk", "bottomk", "quantile"):
                assert node.param is not None
                self.expect(node.param, "scalar", "aggregation parameter")
            if node.op == "count_values":
                assert node.param is not None
                self.expect(node.param, "string", "aggregation parameter")
            return "vector"
        if isinstance(node, BinaryExpr):
            return self.check_binary(node)
        if isinstance(node, Call):
            self.check_call(node)
            return node.func.return_type
        if isinstance(node, ParenExpr):
            return self.check(node.expr)
        if isinstance(node, UnaryExpr):
            inner = self.check(node.expr)
            if inner not in ("scalar", "vector"):
                self.error(
                    prange(node),
                    "unary expression only allowed on expressions of type scalar or instant vector, "
                    f"got {go_quote(documented_type(inner))}",
                )
            return inner
        if isinstance(node, SubqueryExpr):
            inner = self.check(node.expr)
            if inner != "vector":
                self.error(prange(node), f"subquery is only allowed on instant vector, got {inner} instead")
            return "matrix"
        if isinstance(node, MatrixSelector):
            self.check(node.selector)
            return "matrix"
        if isinstance(node, VectorSelector):
            self.check_selector(node)
            return "vector"
        return value_type(node)  # literals

    def expect(self, node: Expr, want: ValueType, context: str) -> None:
        got = self.check(node)
        if got != want:
            self.error(
                prange(node),
                f"expected type {documented_type(want)} in {context}, got {documented_type(got)}",
            )

    def check_binary(self, node: BinaryExpr) -> ValueType:
        lt = self.check(node.lhs)
        rt = self.check(node.rhs)

        def op_range() -> int:
            start = prange(node.lhs).end
            while self.text[start] in " \t\n\r":
                start += 1
            return start

        matching = node.matching
        assert matching is not None
        if node.return_bool and node.op not in COMPARISON_OPS:
            self.error(op_range(), "bool modifier can only be used on comparison operators")
        if node.op in COMPARISON_OPS and not node.return_bool and rt == "scalar" and lt == "scalar":
            self.error(op_range(), "comparisons between scalars must use BOOL modifier")
        if node.op in SET_OPS and matching.card == "one-to-one":
            matching = VectorMatching("many-to-many", matching.matching_labels, matching.on, matching.include)
        included = set(matching.include)
        for label in matching.matching_labels:
            if matching.on and label in included:
                self.error(
                    op_range(), f"label {go_quote(label)} must not occur in ON and GROUP clause at once"
                )
        for side, side_type in ((node.lhs, lt), (node.rhs, rt)):
            if side_type not in ("scalar", "vector"):
                self.error(
                    prange(side), "binary expression must contain only scalar and instant vector types"
                )
        if lt != "vector" or rt != "vector":
            if matching.matching_labels:
                self.error(prange(node), "vector matching only allowed between instant vectors")
            new_matching: VectorMatching | None = None
        else:
            new_matching = matching
            if node.op in SET_OPS:
                if matching.card in ("one-to-many", "many-to-one"):
                    self.error(prange(node), f"no grouping allowed for {go_quote(node.op)} operation")
                if matching.card != "many-to-many":
                    self.error(prange(node), "set operations must always be many-to-many")
        if (lt == "scalar" or rt == "scalar") and node.op in SET_OPS:
            self.error(
                prange(node), f"set operator {go_quote(node.op)} not allowed in binary scalar expression"
            )
        _set(node, "matching", new_matching)
        return "scalar" if lt == "scalar" and rt == "scalar" else "vector"

    def check_call(self, node: Call) -> None:
        func = node.func
        nargs = len(func.arg_types)
        if func.variadic == 0:
            if nargs != len(node.args):
                self.error(
                    prange(node),
                    f"expected {nargs} argument(s) in call to {go_quote(func.name)}, got {len(node.args)}",
                )
        else:
            least = nargs - 1
            if least > len(node.args):
                self.error(
                    prange(node),
                    f"expected at least {least} argument(s) in call to {go_quote(func.name)}, "
                    f"got {len(node.args)}",
                )
            elif func.variadic > 0 and least + func.variadic < len(node.args):
                self.error(
                    prange(node),
                    f"expected at most {least + func.variadic} argument(s) in call to "
                    f"{go_quote(func.name)}, got {len(node.args)}",
                )
        for i, arg in enumerate(node.args):
            if i >= nargs:
                if func.variadic == 0:
                    break
                i = nargs - 1
            self.expect(arg, func.arg_types[i], f"call to function {go_quote(func.name)}")

    def check_selector(self, node: VectorSelector) -> None:
        if node.name:
            for m in node.matchers[:-1]:
                if m.name == METRIC_NAME:
                    self.error(
                        node.pos,
                        f"metric name must not be set twice: {go_quote(node.name)} or {go_quote(m.value)}",
                    )
            return
        if not any(not matches_empty(m) for m in node.matchers):
            self.error(node.pos, "vector selector must contain at least one non-empty matcher")


def matches_empty(m: Matcher) -> bool:
    """labels.Matcher.Matches("")."""
    if m.op == "=":
        return m.value == ""
    if m.op == "!=":
        return m.value != ""
    hit = compile_anchored(m.value).fullmatch("") is not None
    return hit if m.op == "=~" else not hit


# ------------------------------------------------------------------------ string literals

_SIMPLE_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, "'": 39, '"': 34}


def unquote(text: str) -> str | None:
    """util/strutil.Unquote; None on a syntax error. `\\xNN` and octal escapes are raw bytes
    (Go strings are bytes): invalid UTF-8 they make is kept as surrogate escapes."""
    if len(text) < 2 or text[0] != text[-1]:
        return None
    quote, body = text[0], text[1:-1]
    if quote == "`":
        return None if "`" in body else body
    if quote not in "\"'" or "\n" in body:
        return None
    if "\\" not in body and quote not in body:
        return body
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c == quote:
            return None
        if c != "\\":
            out += c.encode("utf-8", "surrogateescape")
            i += 1
            continue
        if i + 1 >= len(body):
            return None
        e = body[i + 1]
        i += 2
        if e in _SIMPLE_ESCAPES:
            if e in "'\"" and e != quote:
                return None
            out.append(_SIMPLE_ESCAPES[e])
        elif e in "xuU":
            size = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i : i + size]
            if len(digits) != size or any(d not in "0123456789abcdefABCDEF" for d in digits):
                return None
            value = int(digits, 16)
            i += size
            if e == "x":
                out.append(value)
            else:
                if value > 0x10FFFF or 0xD800 <= value < 0xE000:
                    return None
                out += chr(value).encode("utf-8")
        elif e in "01234567":
            digits = body[i - 1 : i + 2]
            if len(digits) != 3 or any(d not in "01234567" for d in digits):
                return None
            value = int(digits, 8)
            if value > 255:
                return None
            out.append(value)
            i += 2
        else:
            return None
    return out.decode("utf-8", "surrogateescape")


# ------------------------------------------------------------------------ grammar actions

Action = Callable[[_Parser, list[Any]], Any]


def _binary(p: _Parser, d: list[Any]) -> Any:
    return p.binary(d[0], d[1], d[2], d[3])


def _on_ignoring(on: bool) -> Action:
    def action(p: _Parser, d: list[Any]) -> Any:
        modifier: _BinModifier = d[0]
        modifier.matching_labels = tuple(d[2] or ())
        if on:
            modifier.on = True
        return modifier

    return action


def _group_side(card: str) -> Action:
    def action(p: _Parser, d: list[Any]) -> Any:
        modifier: _BinModifier = d[0]
        modifier.card = card
        modifier.include = tuple(d[2] or ())
        return modifier

    return action


def _unexpected(context: str, expected: str) -> Action:
    def action(p: _Parser, d: list[Any]) -> Any:
        p.unexpected(context, expected)
        return d[0] if d else None

    return action


def _function_call(p: _Parser, d: list[Any]) -> Any:
    name: Item = d[0]
    func = FUNCTIONS.get(name.val)
    if func is None:
        p.error(_item_range(name), f"unknown function with name {go_quote(name.val)}")
        raise AssertionError
    # Experimental functions are not refused here: whether they are enabled is the upstream's call.
    return Call(func, tuple(d[1]), Pos(name.pos, p.last_closing))


def _trailing_comma(p: _Parser, d: list[Any]) -> Any:
    p.error(_item_range(d[1]), "trailing commas not allowed in function call args")


def _offset(negative: bool) -> Action:
    def action(p: _Parser, d: list[Any]) -> Any:
        ms = d[3] if negative else d[2]
        p.add_offset(d[0], -ms if negative else ms)
        return d[0]

    return action


def _at_number(p: _Parser, d: list[Any]) -> Any:
    p.set_timestamp(d[0], d[2])
    return d[0]


def _at_preprocessor(p: _Parser, d: list[Any]) -> Any:
    p.set_at_preprocessor(d[0], d[2])
    return d[0]


def _matrix(p: _Parser, d: list[Any]) -> Any:
    node = d[0]
    message = ""
    if not isinstance(node, VectorSelector):
        message = "ranges only allowed for vector selectors"
    elif node.offset_ms != 0:
        message = "no offset modifiers allowed before range"
    elif node.at_ms is not None:
        message = "no @ modifiers allowed before range"
    if message:
        p.error(d[1].pos, message)
    return MatrixSelector(node, d[2], p.last_closing)


def _subquery(p: _Parser, d: list[Any]) -> Any:
    return SubqueryExpr(d[0], d[2], d[4], end_pos=d[5].pos + 1)


def _unary(p: _Parser, d: list[Any]) -> Any:
    op: Item = d[0]
    node = d[1]
    if isinstance(node, NumberLiteral):
        value = -node.val if op.typ == g.SUB else node.val
        return NumberLiteral(value, Pos(op.pos, node.pos.end))
    return UnaryExpr("-" if op.typ == g.SUB else "+", node, op.pos)


def _name_matcher(name: str) -> tuple[Matcher, ...]:
    return (Matcher(METRIC_NAME, "=", name),) if name else ()


def _selector_named(p: _Parser, d: list[Any]) -> Any:
    name: Item = d[0]
    vs: VectorSelector = d[1]
    return VectorSelector(name.val, vs.matchers + _name_matcher(name.val), pos=Pos(name.pos, vs.pos.end))


def _selector_bare(p: _Parser, d: list[Any]) -> Any:
    name: Item = d[0]
    return VectorSelector(name.val, _name_matcher(name.val), pos=_item_range(name))


def _label_matchers(close: int) -> Action:
    def action(p: _Parser, d: list[Any]) -> Any:
        matchers = tuple(d[1]) if close > 1 else ()
        return VectorSelector("", matchers, pos=Pos(d[0].pos, d[close].end()))

    return action


# The list rules append in place (as Go's append does): copying made long lists quadratic.
def _append_matcher(p: _Parser, d: list[Any]) -> Any:
    if d[0] is not None:
        d[0].append(d[2])
    return d[0]


def _append_label(p: _Parser, d: list[Any]) -> Any:
    d[0].append(d[2].val)
    return d[0]


def _append_arg(p: _Parser, d: list[Any]) -> Any:
    d[0].append(d[2])
    return d[0]


def _name_only_matcher(p: _Parser, d: list[Any]) -> Any:
    return Matcher(METRIC_NAME, "=", d[0].val)


def _grouping_label(p: _Parser, d: list[Any]) -> Any:
    if not is_label(d[0].val):
        p.unexpected("grouping opts", "label")
    return d[0]


def _string_identifier(p: _Parser, d: list[Any]) -> Any:
    item: Item = d[0]
    return Item(g.METRIC_IDENTIFIER, item.pos, p.unquote(item.val))


def _result(p: _Parser, d: list[Any]) -> Any:
    p.result = d[1]
    return d[0]


def _no_expression(p: _Parser, d: list[Any]) -> Any:
    p.error(0, "no expression found in input")


_ACTIONS: dict[int, Action] = {
    3: _no_expression,
    4: _result,
    5: _result,
    7: _unexpected("", ""),
    20: lambda p, d: p.aggregate(d[0], d[1], d[2]),
    21: lambda p, d: p.aggregate(d[0], d[2], d[1]),
    22: lambda p, d: p.aggregate(d[0], _AggModifier(), d[1]),
    23: _unexpected("aggregation", ""),
    24: lambda p, d: _AggModifier(tuple(d[1] or ())),
    25: lambda p, d: _AggModifier(tuple(d[1] or ()), without=True),
    **{rule: _binary for rule in range(26, 42)},
    43: lambda p, d: _BinModifier(False),
    44: lambda p, d: _BinModifier(True),
    45: _on_ignoring(False),
    46: _on_ignoring(True),
    49: _group_side("many-to-one"),
    50: _group_side("one-to-many"),
    51: lambda p, d: d[1],
    52: lambda p, d: d[1],
    53: lambda p, d: [],
    54: _unexpected("grouping opts", '"("'),
    55: _append_label,
    56: lambda p, d: [d[0].val],
    57: _unexpected("grouping opts", '"," or ")"'),
    58: _grouping_label,
    59: _unexpected("grouping opts", "label"),
    60: _function_call,
    61: lambda p, d: d[1],
    62: lambda p, d: _Args(),
    63: _append_arg,
    64: lambda p, d: _Args([d[0]]),
    65: _trailing_comma,
    66: lambda p, d: ParenExpr(d[1], Pos(d[0].pos, d[2].end())),
    67: _offset(False),
    68: _offset(True),
    69: _unexpected("offset", "duration"),
    70: _at_number,
    71: _at_preprocessor,
    72: _unexpected("@", "timestamp"),
    75: _matrix,
    76: _subquery,
    77: _unexpected("subquery selector", '"]"'),
    78: _unexpected("subquery selector", 'duration or "]"'),
    79: _unexpected("subquery or range", '":" or "]"'),
    80: _unexpected("subquery selector", "duration"),
    81: _unary,
    82: _selector_named,
    83: _selector_bare,
    84: lambda p, d: d[0],
    85: _label_matchers(2),
    86: _label_matchers(3),
    87: _label_matchers(1),
    88: _append_matcher,
    89: lambda p, d: [d[0]],
    90: _unexpected("label matching", '"," or "}"'),
    91: lambda p, d: p.label_matcher(d[0], d[1], d[2]),
    92: lambda p, d: p.label_matcher(d[0], d[1], d[2]),
    93: _name_only_matcher,
    94: _unexpected("label matching", "string"),
    95: _unexpected("label matching", "string"),
    96: _unexpected("label matching", "label matching operator"),
    97: _unexpected("label matching", 'identifier or "}"'),
    216: lambda p, d: NumberLiteral(p.number(d[0].val), _item_range(d[0])),
    217: lambda p, d: p.number(d[0].val),
    218: lambda p, d: d[1],
    219: lambda p, d: -d[1],
    225: lambda p, d: p.duration(d[0]),
    226: lambda p, d: StringLiteral(p.unquote(d[0].val), _item_range(d[0])),
    227: _string_identifier,
    228: lambda p, d: 0,
    230: lambda p, d: None,
}
# Rules of the other start symbols (metrics, series descriptions) cannot be reached from the
# two the gateway uses; reaching one is a bug, reported as Prometheus reports a panic.
_OTHER_START_RULES = frozenset({1, 2, 98, 99, 222, 223, 224, *range(122, 170)})


# Where each state's rows start in the exception table (goyacc scans for them on every use).
_EXCA_START = {g.YY_EXCA[i + 1]: i + 2 for i in range(0, len(g.YY_EXCA) - 1, 2) if g.YY_EXCA[i] == -1}


def _lex1(p: _Parser) -> tuple[int, int]:
    char = p.next_token()
    if char <= 0:
        return char, g.YY_TOK1[0]
    if char < len(g.YY_TOK1):
        return char, g.YY_TOK1[char]
    if g.YY_PRIVATE <= char < g.YY_PRIVATE + len(g.YY_TOK2):
        return char, g.YY_TOK2[char - g.YY_PRIVATE]
    return char, g.YY_TOK2[1]


def _run(p: _Parser) -> None:
    """goyacc's yyParse."""
    pact, act, chk, dfl, exca = g.YY_PACT, g.YY_ACT, g.YY_CHK, g.YY_DEF, g.YY_EXCA
    r1, r2, pgo, last, flag, errcode = g.YY_R1, g.YY_R2, g.YY_PGO, g.YY_LAST, g.YY_FLAG, g.YY_ERRCODE
    states: list[int] = []
    values: list[Any] = []
    yyp = -1
    state = 0
    value: Any = None
    char = -1
    token = -1
    errflag = 0
    while True:
        # yystack: push the state and its value
        yyp += 1
        if yyp >= len(states):
            states.append(state)
            values.append(value)
        else:
            states[yyp] = state
            values[yyp] = value
        while True:  # yynewstate
            n = pact[state]
            if n > flag:
                if char < 0:
                    char, token = _lex1(p)
                n += token
                if 0 <= n < last:
                    n = act[n]
                    if chk[n] == token:  # shift
                        char = token = -1
                        value = p.lval
                        state = n
                        if errflag > 0:
                            errflag -= 1
                        break
            # yydefault
            n = dfl[state]
            if n == -2:
                if char < 0:
                    char, token = _lex1(p)
                xi = _EXCA_START[state]
                while not (exca[xi] < 0 or exca[xi] == token):
                    xi += 2
                n = exca[xi + 1]
                if n < 0:
                    return  # accept
            if n == 0:  # syntax error: Prometheus's error rules report it
                if errflag == 3:
                    if token == g.YY_EOFCODE:
                        return
                    char = token = -1
                    continue
                errflag = 3
                while yyp >= 0:
                    n = pact[states[yyp]] + errcode
                    if 0 <= n < last:
                        state = act[n]
                        if chk[state] == errcode:
                            break
                    yyp -= 1
                else:
                    return  # abort
                break
            # reduce by rule n
            rule, top = n, yyp
            yyp -= r2[rule]
            value = values[yyp + 1] if yyp + 1 < len(values) else None
            lhs = r1[rule]
            goto = pgo[lhs]
            j = goto + states[yyp] + 1
            if j >= last:
                state = act[goto]
            else:
                state = act[j]
                if chk[state] != -lhs:
                    state = act[goto]
            action = _ACTIONS.get(rule)
            if action is not None:
                value = action(p, values[top - r2[rule] + 1 : top + 1])
            elif rule in _OTHER_START_RULES:
                raise PromQLError("unexpected error")
            break


def parse(text: str, bounds: Bounds = DEFAULT_BOUNDS) -> Expr:
    """ParseExpr: the checked tree of a PromQL expression; ParseError as Prometheus words it,
    QueryTooComplex past the bounds."""
    check_length(text, bounds)
    p = _Parser(text, g.START_EXPRESSION, TokenBudget(bounds))
    _run(p)
    if p.result is None:
        raise PromQLError("unexpected error")
    p.check(p.result)
    return p.result  # type: ignore[no-any-return]  # the start rule's value: always an Expr


def parse_selector(text: str, bounds: Bounds = DEFAULT_BOUNDS) -> VectorSelector:
    """ParseMetricSelector (a `match[]`): a vector selector, without offset or @."""
    check_length(text, bounds, "match[] selector")
    p = _Parser(text, g.START_METRIC_SELECTOR, TokenBudget(bounds, "match[] selector"))
    _run(p)
    if not isinstance(p.result, VectorSelector):
        raise PromQLError("unexpected error")
    return p.result


__all__ = ["FUNCTIONS", "TYPE_STR", "parse", "parse_selector", "prange"]
