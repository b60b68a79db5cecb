"""Matcher regexes (promql/regex.py): the dashboard regexes RE2's old 1 MiB cap refused compile
and match as Prometheus's; what is still refused says Go's "expression too large"; compiled
programs are remembered within a bound in bytes that the process's memory keeps to."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import unicodedata
import uuid
from pathlib import Path

import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.promql import PromQLError, parse_query
from gateway.promql.regex import (
    COMPILED,
    MAX_MEM,
    PROGRAM_BUDGET,
    CompiledRegexes,
    charged_bytes,
    compile_anchored,
    full_match,
)

ROOT = Path(__file__).resolve().parents[2]

# Characters every Unicode version since 6 classifies the same way (RE2's tables and Python's
# unicodedata may be of different versions): letters of several scripts, digits, marks, symbols.
LETTERS = "aZéßŁжЖΩπ中文日本語한글ñאبक"
DIGITS = "0789٣६"
OTHERS = "_- .:/@€✓😀\u0301"
ALPHABET = LETTERS + DIGITS + OTHERS


def _is_letter(c: str) -> bool:
    return unicodedata.category(c).startswith("L")


def _is_number(c: str) -> bool:
    return unicodedata.category(c).startswith("N")


def _pL(n: int) -> object:
    return lambda v: len(v) == n and all(_is_letter(c) for c in v)


def _word(low: int, high: int) -> object:
    return lambda v: low <= len(v) <= high and all(_is_letter(c) or _is_number(c) or c in "_-" for c in v)


# Realistic dashboard regexes, each with what Prometheus (Go's regexp) says about a value.
DASHBOARD = {
    r"\pL{60}": _pL(60),
    r"\pL{64}": _pL(64),
    r"\p{L}{100}": _pL(100),
    r"[\p{L}\p{N}_-]{1,64}": _word(1, 64),
    r"[\p{L}\p{N}_-]{1,100}": _word(1, 100),
    r"[\p{L}\p{N}_-]{0,63}": _word(0, 63),
}

STILL_REFUSED = [r"\pL{120}", r"[\p{L}\p{N}_-]{1,128}", r"\pL{400}", r"(\pL|\pN)+\pL{200}", r"\pL{1000}"]


def _value(draw: st.DrawFn, low: int, high: int) -> str:
    return draw(st.text(alphabet=st.sampled_from(ALPHABET), min_size=low, max_size=high))


@st.composite
def candidates(draw: st.DrawFn) -> tuple[str, str]:
    pattern = draw(st.sampled_from(sorted(DASHBOARD)))
    kind = draw(st.sampled_from(["letters", "words", "any"]))
    size = draw(st.sampled_from([0, 1, 59, 60, 61, 63, 64, 65, 99, 100, 101]))
    if kind == "letters":
        value = "".join(draw(st.sampled_from(LETTERS)) for _ in range(size))
    elif kind == "words":
        value = "".join(draw(st.sampled_from(LETTERS + DIGITS + "_-")) for _ in range(size))
    else:
        value = _value(draw, 0, 110)
    return pattern, value


@settings(max_examples=300, deadline=None)
@given(candidates())
def test_dashboard_regexes_compile_and_match_as_prometheus(case: tuple[str, str]) -> None:
    pattern, value = case
    assert full_match(pattern, value) == DASHBOARD[pattern](value)  # type: ignore[operator]


def test_dashboard_regexes_parse_in_queries() -> None:
    for pattern in DASHBOARD:
        literal = pattern.replace("\\", "\\\\")
        parse_query(f'sum by (job) (rate(http_requests_total{{path=~"{literal}", job!~"{literal}"}}[5m]))')


@pytest.mark.parametrize("pattern", STILL_REFUSED)
def test_what_is_still_refused_says_expression_too_large(pattern: str) -> None:
    with pytest.raises(ValueError) as refused:
        compile_anchored(pattern)
    assert str(refused.value) == f"error parsing regexp: expression too large: `{pattern}`"
    literal = pattern.replace("\\", "\\\\")
    with pytest.raises(PromQLError) as in_query:
        parse_query(f'up{{a=~"{literal}"}}')
    assert "error parsing regexp: expression too large" in str(in_query.value)
    # the refusal is remembered: the second time costs no compile
    assert pattern in COMPILED
    with pytest.raises(ValueError, match="expression too large"):
        compile_anchored(pattern)


def test_go_refusals_keep_their_words() -> None:
    for pattern, words in [
        ("a{1001}", "invalid repeat count: `{1001}`"),
        ("(", "missing closing ): `(`"),
        ("a**", "invalid nested repetition operator: `**`"),
    ]:
        with pytest.raises(ValueError) as refused:
            compile_anchored(pattern)
        assert str(refused.value) == f"error parsing regexp: {words}"


def test_the_cache_keeps_to_its_bytes_under_distinct_heavy_regexes() -> None:
    cache = CompiledRegexes(max_bytes=8 << 20)
    heavy = [f"{uuid.uuid4().hex}\\pL{{{30 + i % 40}}}" for i in range(40)]
    light = [f"host-{i}|node-{i}.*" for i in range(300)]
    for i, pattern in enumerate(heavy):
        assert cache.get(pattern).fullmatch(pattern[:32] + "é" * (30 + i % 40))
        assert cache.bytes <= cache.max_bytes
    for pattern in light:
        cache.get(pattern)
        assert cache.bytes <= cache.max_bytes
    assert len(cache) < len(heavy) + len(light)  # the oldest went
    assert light[-1] in cache and heavy[0] not in cache
    # a heavy program is counted at RE2's budget for it, at most
    assert charged_bytes(heavy[0], 10**6) == 1024 + 48 * len(heavy[0]) + PROGRAM_BUDGET
    assert PROGRAM_BUDGET < MAX_MEM


def test_re2s_own_cache_keeps_nothing() -> None:
    for i in range(10):
        compile_anchored(f"{uuid.uuid4().hex}|x{i}")
    assert re2._Regexp._make.cache_info().currsize == 0


# Measured in a fresh process (no other thread allocating): the heap a compiled pattern holds
# after compiling and matching "" and a few values, against what the cache counts for it.
_MEASURE = textwrap.dedent(
    r"""
    import ctypes, gc, json, sys
    from gateway.promql.regex import CompiledRegexes, charged_bytes

    class MI2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                    "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MI2

    def heap():
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd

    out = []
    for pattern in json.loads(sys.argv[1]):
        cache = CompiledRegexes()
        gc.collect()
        before = heap()
        compiled = cache.get(pattern)
        for value in ("", "node-1:9100", "é" * 60, "x" * 200):
            compiled.fullmatch(value)
        gc.collect()
        out.append((pattern, heap() - before, charged_bytes(pattern, compiled.programsize)))
        del compiled, cache
    print(json.dumps(out))
    """
)

MEASURED = [
    r"\pL{1}",
    r"\pN{3}",
    r"(?i)\pL",
    r"[\p{L}\p{N}]",
    r"\pL{60}",
    r"[\p{L}\p{N}_-]{1,64}",
    r"[\p{L}\p{N}_-]{1,100}",
    r"(\pL|\pN|\pP){90}",
    r".{10}",
    r".{0,200}",
    r"(?s).*(a.{80})",
    r"[a-z0-9]{1,64}",
    "api|web",
    "|".join(f"host-{i}.example.com:9100" for i in range(320)),
    "".join(f"[a-{chr(98 + i % 20)}]" for i in range(1000)),
    "x" * 16000,
    "(" * 900 + "a" + ")" * 900,
]


def test_what_a_program_is_counted_covers_what_it_holds() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallinfo2  # noqa: B018
    except (OSError, AttributeError):
        pytest.skip("glibc's mallinfo2 measures the heap")
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, json.dumps(MEASURED)], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for pattern, held, counted in json.loads(done.stdout):
        assert held <= counted, (pattern[:40], held, counted)


_FLOOD = textwrap.dedent(
    r"""
    import json, uuid, psutil
    from gateway.promql import regex

    process = psutil.Process()
    regex.compile_anchored("warm-up")
    before = process.memory_info().rss
    peak = 0
    for i in range(150):
        regex.compile_anchored(f"{uuid.uuid4().hex}\\pL{{60}}").fullmatch("é" * 60)
        regex.compile_anchored(f"{uuid.uuid4().hex}|host-{i}.*")
        peak = max(peak, process.memory_info().rss - before)
    print(json.dumps({"peak": peak, "counted": regex.COMPILED.bytes, "bound": regex.COMPILED.max_bytes,
                      "entries": len(regex.COMPILED)}))
    """
)


def test_the_process_keeps_to_the_bound_under_a_flood_of_fresh_heavy_regexes() -> None:
    # 150 programs of `\pL{60}` hold 568 KiB each: 83 MiB if they were all kept
    done = subprocess.run([sys.executable, "-c", _FLOOD], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["counted"] <= figures["bound"]
    assert figures["entries"] < 300
    slack = 16 << 20  # the allocator's free lists and the interpreter's own growth
    assert figures["peak"] <= figures["bound"] + slack, figures
