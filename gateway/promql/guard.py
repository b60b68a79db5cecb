"""Bounds on a query's text: its length, checked before anything reads it, and its nesting and
operator count, counted on the tokens as the parser reads them (one lexing pass).

The parser is table-driven and does not recurse, but the tree it builds is as deep as the
query's nesting plus its longest operator chain, and the checks, the printer and the
rewrites walk that tree. These bounds keep every walk within the interpreter's stack and
every parse within a few milliseconds and a few MB. They are far above what real dashboards
and rule sets use (see the README's Limits section) and each refusal says which bound and
what to do.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.promql import _grammar as g
from gateway.promql.errors import QueryTooComplex

_OPEN = frozenset({g.LEFT_PAREN, g.LEFT_BRACE, g.LEFT_BRACKET})
_CLOSE = frozenset({g.RIGHT_PAREN, g.RIGHT_BRACE, g.RIGHT_BRACKET})
_OPERATORS = frozenset(
    {g.ADD, g.SUB, g.MUL, g.DIV, g.MOD, g.POW, g.ATAN2, g.EQLC, g.NEQ, g.LTE, g.LSS, g.GTE, g.GTR}
    | {g.LAND, g.LOR, g.LUNLESS}
)


@dataclass(frozen=True)
class Bounds:
    max_length: int = 16_384  # characters
    max_depth: int = 64  # nested (), {} and []
    max_operators: int = 512  # binary and unary operators in the whole query


DEFAULT_BOUNDS = Bounds()


def check_length(text: str, bounds: Bounds = DEFAULT_BOUNDS, what: str = "query") -> None:
    if len(text) > bounds.max_length:
        raise QueryTooComplex(
            f"the {what} is {len(text)} characters long; the gateway's limit is {bounds.max_length}. "
            "Shorten it, for example with a recording rule"
        )


class TokenBudget:
    """Counts nesting and operators in the token stream as the parser reads it, so that a
    query past a bound is refused before its tree grows past it."""

    __slots__ = ("bounds", "depth", "operators", "what")

    def __init__(self, bounds: Bounds = DEFAULT_BOUNDS, what: str = "query") -> None:
        self.bounds = bounds
        self.what = what
        self.depth = 0
        self.operators = 0

    def see(self, typ: int) -> None:
        if typ in _OPEN:
            self.depth += 1
            if self.depth > self.bounds.max_depth:
                raise QueryTooComplex(
                    f"the {self.what} nests brackets more than {self.bounds.max_depth} deep; "
                    "flatten it or move parts into recording rules"
                )
        elif typ in _CLOSE:
            self.depth -= 1
        elif typ in _OPERATORS:
            self.operators += 1
            if self.operators > self.bounds.max_operators:
                raise QueryTooComplex(
                    f"the {self.what} has more than {self.bounds.max_operators} operators; "
                    "split it into several queries or use recording rules"
                )
