"""Label-matcher regular expressions with Prometheus's semantics: RE2 (Go's regexp is RE2),
anchored at both ends, matched in linear time. Never Python's backtracking `re`."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
# RE2 compiles Unicode classes byte by byte: `\pL{400}` (14 characters) takes 300 ms to build
# within RE2's default 8 MiB. Programs are capped at 1 MiB, which bounds a compile to about
# 10 ms here; beyond, "expression too large" (Go's regexp would still take such exotic
# repetitions of Unicode classes: a deliberate difference, for a bounded cost).
_OPTIONS.max_mem = 1 << 20

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
    _go_only_checks(pattern)
    try:
        return re2.compile(f"^(?:{pattern})$", _OPTIONS)
    except UnicodeEncodeError:
        # raw bytes that are not UTF-8 (from \xNN escapes in the PromQL string)
        raise ValueError(f"error parsing regexp: invalid UTF-8: `{_shown(pattern)}`") from None
    except re2.error as err:
        raw = err.args[0] if err.args else b""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        words, _, fragment = text.partition(": ")
        words = _GO_WORDS.get(words, words)
        if words == "missing closing )" or not fragment:
            fragment = pattern
        raise ValueError(f"error parsing regexp: {words}: `{fragment}`") from None


_MAX_NESTING = 1000  # Go's regexp/syntax maxHeight


def _go_only_checks(pattern: str) -> None:
    r"""What Go's regexp/syntax refuses and RE2 takes: `\C` (any byte) and deep nesting."""
    depth = deepest = 0
    escaped = in_class = False
    for char in pattern:
        if escaped:
            if char == "C" and not in_class:
                raise ValueError("error parsing regexp: invalid escape sequence: `\\C`")
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    if deepest > _MAX_NESTING:
        raise ValueError(f"error parsing regexp: expression nests too deeply: `{_shown(pattern)}`")


def _shown(pattern: str) -> str:
    return pattern.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def full_match(pattern: str, value: str) -> bool:
    """Whether `value` matches the (valid) matcher regex `pattern`, as Prometheus anchors it."""
    return compile_anchored(pattern).fullmatch(value) is not None
