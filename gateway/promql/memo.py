"""Parsed queries remembered by their text, bounded by the bytes the trees really hold.

A dashboard's refresh asks the same query text with new times, so the raw request differs and
the request memo misses, but the tree does not change: parsing costs 0.3-1 ms for common
queries here, a lookup about 1 µs. Trees are immutable values, so one can be shared between
requests. The canonical text (what goes upstream) is kept with it: printing costs tens of µs.
Only successful parses are kept; a text longer than `max_text` is parsed every time. Long
texts are kept too: the edge guard re-reads the enforced text of every upstream request.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from threading import Lock

from gateway.promql.ast import Expr, Matcher, VectorSelector, walk


def tree_bytes(expr: Expr) -> int:
    """sys.getsizeof over the tree's nodes, tuples, matchers and strings (shared strings counted
    each time they occur: an upper bound)."""
    total = 0
    for node in walk(expr):
        total += sys.getsizeof(node)
        for name in getattr(type(node), "__slots__", ()):
            value = getattr(node, name)
            if isinstance(value, (str, tuple, float, int)):
                total += sys.getsizeof(value)
                if isinstance(value, tuple):
                    total += sum(sys.getsizeof(item) for item in value if isinstance(item, str))
        if isinstance(node, VectorSelector):
            total += sum(_matcher_bytes(m) for m in node.matchers)
    return total


def _matcher_bytes(m: Matcher) -> int:
    return sys.getsizeof(m) + sys.getsizeof(m.name) + sys.getsizeof(m.value)


class TreeMemo:
    def __init__(self, max_bytes: int = 16 << 20, max_text: int = 16384) -> None:
        self.max_bytes = max_bytes
        self.max_text = max_text
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[Expr, str, int]] = OrderedDict()
        self._lock = Lock()  # parsing may run in worker threads

    def get(self, text: str) -> tuple[Expr, str] | None:
        """The tree and its canonical text."""
        with self._lock:
            found = self._entries.get(text)
            if found is None:
                return None
            self._entries.move_to_end(text)
            return found[0], found[1]

    def put(self, text: str, expr: Expr, printed: str) -> None:
        if len(text) > self.max_text:
            return
        # 25% over the measured bytes for what getsizeof does not see (allocator rounding)
        size = tree_bytes(expr) * 5 // 4 + sys.getsizeof(text) + sys.getsizeof(printed) + 200
        with self._lock:
            old = self._entries.pop(text, None)
            if old is not None:
                self.bytes -= old[2]
            self._entries[text] = (expr, printed, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, _, evicted) = self._entries.popitem(last=False)
                self.bytes -= evicted

    def __len__(self) -> int:
        return len(self._entries)
