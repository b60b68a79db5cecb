"""parse_form must be parse_qsl(keep_blank_values=True, errors="strict"), error for error."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.api.params import parse_form

# Text made of the characters that matter to the parser, plus anything else.
_PIECES = st.sampled_from(["&", "=", "%", "+", "%2", "%25", "%C3%A9", "%FF", "%e2%82", "a", "é", " ", ";"])
_TEXT = st.lists(st.one_of(_PIECES, st.text(max_size=4)), max_size=20).map("".join)


def _reference(text: str) -> list[tuple[str, str]] | type[Exception]:
    try:
        return parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict")
    except UnicodeDecodeError:
        return UnicodeDecodeError


def _ours(text: str) -> list[tuple[str, str]] | type[Exception]:
    try:
        return parse_form(text)
    except UnicodeDecodeError:
        return UnicodeDecodeError


@given(_TEXT)
def test_equals_parse_qsl_on_tricky_text(text: str) -> None:
    assert _ours(text) == _reference(text)


@given(st.text())
def test_equals_parse_qsl_on_any_text(text: str) -> None:
    assert _ours(text) == _reference(text)


@given(st.binary())
def test_equals_parse_qsl_on_latin1_query_strings(raw: bytes) -> None:
    # The URL query reaches the parser as raw bytes decoded as latin-1.
    text = raw.decode("latin-1")
    assert _ours(text) == _reference(text)


@given(st.lists(st.tuples(st.text(), st.text()), max_size=6))
def test_round_trips_encoded_pairs(pairs: list[tuple[str, str]]) -> None:
    text = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)
    assert parse_form(text) == parse_qsl(text, keep_blank_values=True, errors="strict")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("&&", []),
        ("a", [("a", "")]),
        ("a=", [("a", "")]),
        ("=b", [("", "b")]),
        ("a=b=c", [("a", "b=c")]),
        ("a+b=c+d", [("a b", "c d")]),
        ("q=%2B1%20x", [("q", "+1 x")]),
        ("a=1;b=2", [("a", "1;b=2")]),
        ("x=%zz", [("x", "%zz")]),
    ],
)
def test_examples(text: str, expected: list[tuple[str, str]]) -> None:
    assert parse_form(text) == expected


def test_invalid_utf8_raises() -> None:
    with pytest.raises(UnicodeDecodeError):
        parse_form("query=%FF")
