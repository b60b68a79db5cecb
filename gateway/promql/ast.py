"""The PromQL syntax tree (Prometheus's promql/parser/ast.go), as immutable values.

Nodes compare by meaning, not by where they stood in the text: positions are kept for error
messages only. Durations, offsets and `@` times are integer milliseconds, as Prometheus
resolves them. A selector's matchers compare as a multiset (Prometheus prints them sorted).
Rewrites build new trees with `dataclasses.replace`; the parser is the only code that sets
fields on a node after creating it.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

MatchOp = Literal["=", "!=", "=~", "!~"]
ValueType = Literal["none", "vector", "scalar", "matrix", "string"]
StartOrEnd = Literal["start", "end"] | None

METRIC_NAME = "__name__"


@dataclass(frozen=True, slots=True)
class Pos:
    start: int
    end: int


NO_POS = Pos(-1, -1)


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: MatchOp
    value: str


@dataclass(frozen=True, slots=True, eq=False)
class Function:
    name: str
    arg_types: tuple[ValueType, ...]
    variadic: int
    return_type: ValueType
    experimental: bool

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Function) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


@dataclass(frozen=True, slots=True)
class VectorSelector:
    name: str
    matchers: tuple[Matcher, ...]
    offset_ms: int = 0
    at_ms: int | None = None
    start_or_end: StartOrEnd = None
    pos: Pos = field(default=NO_POS, compare=False)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, VectorSelector)
            and self.name == other.name
            and sorted(self.matchers, key=_matcher_key) == sorted(other.matchers, key=_matcher_key)
            and self.offset_ms == other.offset_ms
            and self.at_ms == other.at_ms
            and self.start_or_end == other.start_or_end
        )

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.matchers, key=_matcher_key)), self.offset_ms, self.at_ms))


def _matcher_key(m: Matcher) -> tuple[str, str, str]:
    return (m.name, m.op, m.value)


@dataclass(frozen=True, slots=True)
class MatrixSelector:
    selector: VectorSelector
    range_ms: int
    end_pos: int = field(default=-1, compare=False)


@dataclass(frozen=True, slots=True)
class SubqueryExpr:
    expr: Expr
    range_ms: int
    step_ms: int
    offset_ms: int = 0
    at_ms: int | None = None
    start_or_end: StartOrEnd = None
    end_pos: int = field(default=-1, compare=False)


@dataclass(frozen=True, slots=True)
class Call:
    func: Function
    args: tuple[Expr, ...]
    pos: Pos = field(default=NO_POS, compare=False)


@dataclass(frozen=True, slots=True)
class AggregateExpr:
    op: str
    expr: Expr
    param: Expr | None = None
    grouping: tuple[str, ...] = ()
    without: bool = False
    pos: Pos = field(default=NO_POS, compare=False)


@dataclass(frozen=True, slots=True)
class VectorMatching:
    card: Literal["one-to-one", "many-to-one", "one-to-many", "many-to-many"] = "one-to-one"
    matching_labels: tuple[str, ...] = ()
    on: bool = False
    include: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BinaryExpr:
    op: str
    lhs: Expr
    rhs: Expr
    matching: VectorMatching | None = None
    return_bool: bool = False


@dataclass(frozen=True, slots=True)
class ParenExpr:
    expr: Expr
    pos: Pos = field(default=NO_POS, compare=False)


@dataclass(frozen=True, slots=True)
class UnaryExpr:
    op: Literal["-", "+"]
    expr: Expr
    start: int = field(default=-1, compare=False)


@dataclass(frozen=True, slots=True)
class NumberLiteral:
    val: float
    pos: Pos = field(default=NO_POS, compare=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NumberLiteral):
            return False
        if math.isnan(self.val) and math.isnan(other.val):
            return True  # PromQL has one NaN; its sign means nothing
        return struct.pack("<d", self.val) == struct.pack("<d", other.val)  # -0 is not 0

    def __hash__(self) -> int:
        return hash("NaN" if math.isnan(self.val) else struct.pack("<d", self.val))


@dataclass(frozen=True, slots=True)
class StringLiteral:
    val: str
    pos: Pos = field(default=NO_POS, compare=False)


Expr = (
    VectorSelector
    | MatrixSelector
    | SubqueryExpr
    | Call
    | AggregateExpr
    | BinaryExpr
    | ParenExpr
    | UnaryExpr
    | NumberLiteral
    | StringLiteral
)

COMPARISON_OPS = frozenset({"==", "!=", "<=", "<", ">=", ">"})
SET_OPS = frozenset({"and", "or", "unless"})
PARAM_AGGREGATORS = frozenset({"topk", "bottomk", "count_values", "quantile"})


def value_type(node: Expr) -> ValueType:
    """Expr.Type() of Prometheus."""
    while isinstance(node, (ParenExpr, UnaryExpr)):
        node = node.expr
    if isinstance(node, (VectorSelector, AggregateExpr)):
        return "vector"
    if isinstance(node, (MatrixSelector, SubqueryExpr)):
        return "matrix"
    if isinstance(node, NumberLiteral):
        return "scalar"
    if isinstance(node, StringLiteral):
        return "string"
    if isinstance(node, Call):
        return node.func.return_type
    if value_type(node.lhs) == "scalar" and value_type(node.rhs) == "scalar":
        return "scalar"
    return "vector"


def children(node: Expr) -> tuple[Expr, ...]:
    """The direct sub-expressions (a range selector's child is its vector selector)."""
    if isinstance(node, MatrixSelector):
        return (node.selector,)
    if isinstance(node, (SubqueryExpr, ParenExpr, UnaryExpr)):
        return (node.expr,)
    if isinstance(node, Call):
        return node.args
    if isinstance(node, AggregateExpr):
        return (node.expr,) if node.param is None else (node.param, node.expr)
    if isinstance(node, BinaryExpr):
        return (node.lhs, node.rhs)
    return ()


def walk(node: Expr) -> Iterator[Expr]:
    """Every node of the tree, parents before children, without recursion."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(children(current)))


def selectors(node: Expr) -> list[VectorSelector]:
    """Every vector selector, those inside range selectors and subqueries included."""
    return [n for n in walk(node) if isinstance(n, VectorSelector)]
