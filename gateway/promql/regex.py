"""Label-matcher regular expressions with Prometheus's semantics: RE2 (Go's regexp is RE2),
anchored at both ends, matched in linear time. Never Python's backtracking `re`."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
_OPTIONS.max_mem = 8 << 20  # RE2's default; a larger program is refused, not built

# RE2's error words, in Go's regexp/syntax words.
_GO_WORDS = {
    "missing )": "missing closing )",
    "missing ]": "missing closing ]",
    "unexpected )": "unexpected )",
    "bad repetition operator": "invalid nested repetition operator",
    "no argument for repetition operator": "missing argument to repetition operator",
    "bad escape sequence": "invalid escape sequence",
    "bad character class range": "invalid character class range",
    "bad character class": "invalid character class",
    "trailing \\": "trailing backslash at end of expression",
    "bad named capture group": "invalid named capture",
    "bad repetition count": "invalid repeat count",
    "bad perl operator": "invalid or unsupported Perl syntax",
    "invalid UTF-8": "invalid UTF-8",
    "pattern too large - compile failed": "expression too large",
    "pattern too large - reverse compile failed": "expression too large",
}


# Compiled programs are remembered for short patterns only: a long one (a Grafana variable
# expanded to 8 KB) can hold megabytes of RE2 program, and compiles in about a millisecond.
CACHED_PATTERN_CHARS = 512


def compile_anchored(pattern: str) -> Any:
    """The compiled `^(?:pattern)$`; ValueError in Go's words when RE2 refuses it."""
    if len(pattern) <= CACHED_PATTERN_CHARS:
        return _compile_cached(pattern)
    return _compile(pattern)


@lru_cache(maxsize=2048)
def _compile_cached(pattern: str) -> Any:
    return _compile(pattern)


def _compile(pattern: str) -> Any:
    try:
        return re2.compile(f"^(?:{pattern})$", _OPTIONS)
    except re2.error as err:
        raw = err.args[0] if err.args else b""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        words, _, fragment = text.partition(": ")
        words = _GO_WORDS.get(words, words)
        if words == "missing closing )":
            fragment = pattern
        raise ValueError(f"error parsing regexp: {words}: `{fragment}`") from None


def full_match(pattern: str, value: str) -> bool:
    """Whether `value` matches the (valid) matcher regex `pattern`, as Prometheus anchors it."""
    return compile_anchored(pattern).fullmatch(value) is not None
