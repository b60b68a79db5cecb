"""Label-matcher regular expressions with Prometheus's semantics: RE2 (Go's regexp is RE2),
anchored at both ends, matched in linear time. Never Python's backtracking `re`.

Compiled programs (and refusals) are remembered by pattern in `COMPILED`, an LRU bounded by the
bytes they hold (`charged_bytes`, measured: bench/README.md, "Regex compilation").
"""

from __future__ import annotations

from threading import Lock
from typing import Any

import re2
from cachetools import LRUCache

# RE2 compiles Unicode classes byte by byte (`\pL` is about 1,200 instructions, Go's regexp
# one), at about 0.55 µs an instruction here, and refuses a program past `max_mem`: an
# instruction takes 16 bytes of it. 2 MiB takes about 130,000 instructions (`\pL{111}`,
# `[\p{L}\p{N}_-]{1,100}`, Grafana variables of 10,000 values) and bounds a compile to
# 30-80 ms here (117 ms the worst measured on a loaded machine); a refusal costs less, RE2
# stops at the cap. RE2's default 8 MiB would take `\pL{450}` in 300 ms, the old 1 MiB cap
# refused `\pL{60}`. What is still refused: bench/README.md and README.md, "PromQL core".
MAX_MEM = 2 << 20

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
_OPTIONS.max_mem = MAX_MEM

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
    "invalid repetition size": "invalid repeat count",
    "bad perl operator": "invalid or unsupported Perl syntax",
    "invalid UTF-8": "invalid UTF-8",
    "pattern too large - compile failed": "expression too large",
    "pattern too large - reverse compile failed": "expression too large",
}

# What one remembered program holds, measured with glibc's mallinfo2 around compiles and
# matches (tests/promql/test_regex.py checks it for 25 pattern classes):
# - the program, its one-pass table when RE2 builds one and the DFA states that matching the
#   empty string and a few label values add: 8 bytes an instruction for a large program, up
#   to 165 for a small one with a one-pass table (`\pN{3}`, `[\p{L}\p{N}]`; counted as 192),
#   and never more than the two thirds of max_mem RE2 gives the forward program:
#   `(?s).*(a.{80})`, 572 instructions, peaked at 930 KiB after 20,000 distinct texts under
#   that 1,365 KiB cap. (The other third is for a reverse program, which only unanchored
#   searches build.)
# - outside that budget, the parsed pattern RE2 keeps (up to 42 bytes a pattern byte measured,
#   for 3,000 character classes) and the Python objects, key included.
BYTES_PER_INSTRUCTION = 192
BYTES_PER_PATTERN_BYTE = 48
ENTRY_OVERHEAD = 1024
PROGRAM_BUDGET = MAX_MEM * 2 // 3


def charged_bytes(pattern: str, program_size: int) -> int:
    """The bytes a remembered compiled `pattern` is counted as (see above)."""
    parsed = BYTES_PER_PATTERN_BYTE * len(pattern.encode("utf-8", "surrogatepass"))
    return ENTRY_OVERHEAD + parsed + min(PROGRAM_BUDGET, BYTES_PER_INSTRUCTION * program_size)


class CompiledRegexes:
    """Compiled patterns and refusals by pattern, LRU, bounded by `charged_bytes`. Patterns are
    compiled outside the lock (two threads may compile the same one; both get a program)."""

    def __init__(self, max_bytes: int = 16 << 20) -> None:
        self.max_bytes = max_bytes
        # an entry may take a quarter of the cache: a program at RE2's cap fits
        self.max_entry = max_bytes // 4
        self._entries: LRUCache[str, tuple[Any, int]] = LRUCache(max_bytes, getsizeof=lambda v: v[1])
        self._lock = Lock()

    @property
    def bytes(self) -> int:
        """The bytes the remembered entries are counted as."""
        return int(self._entries.currsize)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, pattern: str) -> bool:
        with self._lock:
            return pattern in self._entries

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def get(self, pattern: str) -> Any:
        """The compiled `^(?:pattern)$`; ValueError in Go's words when RE2 refuses it."""
        with self._lock:
            found = self._entries.get(pattern)
        if found is None:
            try:
                compiled: Any = _compile(pattern)
                size = charged_bytes(pattern, compiled.programsize)
            except ValueError as err:
                compiled, size = err, charged_bytes(pattern, 0)
            if size <= self.max_entry:
                with self._lock:
                    self._entries[pattern] = (compiled, size)
        else:
            compiled = found[0]
        if isinstance(compiled, ValueError):
            raise ValueError(*compiled.args)
        return compiled


COMPILED = CompiledRegexes()


def compile_anchored(pattern: str) -> Any:
    """The compiled `^(?:pattern)$`; ValueError in Go's words when RE2 refuses it."""
    return COMPILED.get(pattern)


def _compile(pattern: str) -> Any:
    _go_only_checks(pattern)
    try:
        compiled = re2.compile(f"^(?:{pattern})$", _OPTIONS)
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
    finally:
        # re2.compile keeps the last 128 programs in an LRU of its own (up to MAX_MEM each),
        # which no byte bound would see: emptied, the gateway being its only user.
        re2.purge()
    return compiled


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
