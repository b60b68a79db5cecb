"""Go's number, duration and string syntax, as Prometheus reads and prints them.

`go_quote` is strconv.Quote; `LABEL_NAME_RE` model.LabelNameRE;

`parse_float` is strconv.ParseFloat(s, 64) (errors included: Python's float() takes spaces,
non-ASCII digits and `+nan`, and turns 1e400 into inf, where Go refuses all of them);
`parse_duration_ms` is prometheus/common's model.ParseDuration (v0.54);
`format_duration` its Duration.String().
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

# \Z, not $: `$` also matches before a trailing newline.
LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z", re.ASCII)
_DECIMAL = re.compile(r"[+-]?(?=\.?[0-9])[0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9_]+)?", re.ASCII)
_HEX = re.compile(r"[+-]?0[xX](?=\.?[0-9a-fA-F_])[0-9a-fA-F_]*(?:\.[0-9a-fA-F_]*)?[pP][+-]?[0-9_]+", re.ASCII)
_INT64_MAX = 2**63 - 1


def go_quote(text: str) -> str:
    """Go's strconv.Quote / %q for valid UTF-8 text."""
    if text.isprintable() and '"' not in text and "\\" not in text and "\ufeff" not in text:
        return f'"{text}"'  # nothing to escape: most label values
    out = ['"']
    for char in text:
        code = ord(char)
        if char == '"' or char == "\\":
            out.append("\\" + char)
        elif char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable() and code != 0xFEFF:
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _syntax(fn: str, text: str) -> ValueError:
    return ValueError(f"strconv.{fn}: parsing {go_quote(text)}: invalid syntax")


def _underscores_ok(text: str) -> bool:
    """strconv's underscoreOK: only between digits, or between a base prefix and a digit."""
    body = text[1:] if text[:1] in "+-" else text
    saw = "^"
    i = 0
    hexa = False
    if len(body) >= 2 and body[0] == "0" and body[1].lower() in "box":
        i, saw, hexa = 2, "0", body[1].lower() == "x"
    for char in body[i:]:
        if char.isdigit() or (hexa and char.lower() in "abcdef"):
            saw = "0"
        elif char == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
    return saw != "_"


def parse_float(text: str) -> float:
    """strconv.ParseFloat(text, 64); ValueError with Go's message."""
    lowered = text.lower()
    sign = -1.0 if lowered[:1] == "-" else 1.0
    unsigned = lowered[1:] if lowered[:1] in "+-" else lowered
    if unsigned in ("inf", "infinity"):
        return math.copysign(math.inf, sign)
    if lowered == "nan":
        return math.nan
    if _DECIMAL.fullmatch(text):
        if "_" in text and not _underscores_ok(text):
            raise _syntax("ParseFloat", text)
        value = float(text.replace("_", ""))
    elif _HEX.fullmatch(text):
        if "_" in text and not _underscores_ok(text):
            raise _syntax("ParseFloat", text)
        try:
            value = float.fromhex(text.replace("_", ""))
        except OverflowError:
            value = math.inf
    else:
        raise _syntax("ParseFloat", text)
    if math.isinf(value):
        raise ValueError(f"strconv.ParseFloat: parsing {go_quote(text)}: value out of range")
    return value


def round_half_away(value: float) -> float:
    """Go's math.Round (half away from zero; exact for every float, unlike floor(x + 0.5))."""
    if math.isinf(value) or math.isnan(value):
        return value
    whole = float(math.trunc(value))
    if abs(value - whole) >= 0.5:
        whole += math.copysign(1.0, value)
    return whole


def parse_int_base0(text: str) -> int:
    """strconv.ParseInt(text, 0, 64) for the unsigned forms the PromQL lexer produces."""
    body = text.replace("_", "")
    if "_" in text and not _underscores_ok(text):
        raise _syntax("ParseInt", text)
    try:
        if body[:2].lower() == "0x":
            value = int(body[2:], 16)
        elif body[:2].lower() == "0o":
            value = int(body[2:], 8)
        elif body[:2].lower() == "0b":
            value = int(body[2:], 2)
        elif len(body) > 1 and body[0] == "0":
            value = int(body[1:], 8)
        else:
            if not body.isascii() or not body.isdigit():
                raise ValueError
            value = int(body, 10)
    except ValueError:
        raise _syntax("ParseInt", text) from None
    if value > _INT64_MAX:
        raise ValueError(f"strconv.ParseInt: parsing {go_quote(text)}: value out of range")
    return value


_UNITS = {
    "ms": (7, 1),
    "s": (6, 1000),
    "m": (5, 60_000),
    "h": (4, 3_600_000),
    "d": (3, 86_400_000),
    "w": (2, 604_800_000),
    "y": (1, 31_536_000_000),
}
_PART = re.compile(r"([0-9]*)([^0-9]*)", re.ASCII)


def parse_duration_ms(text: str) -> int:
    """model.ParseDuration: `1h30m`, `5m`, `0`; ValueError with its message."""
    if text == "0":
        return 0
    if text == "":
        raise ValueError("empty duration string")
    total_ns = 0
    last = 0
    rest = text
    while rest:
        if not ("0" <= rest[0] <= "9"):
            raise ValueError(f"not a valid duration string: {go_quote(text)}")
        match = _PART.match(rest)
        assert match is not None
        digits, unit = match.group(1), match.group(2)
        rest = rest[match.end() :]
        # ParseUint fails past 2^64-1 (20 digits); Python's int() refuses 4,300 digits in its own words.
        value = int(digits) if len(digits.lstrip("0")) <= 20 else 2**64
        if value > 2**64 - 1:
            raise ValueError(f"not a valid duration string: {go_quote(text)}")
        if unit == "":
            raise ValueError(f"not a valid duration string: {go_quote(text)}")
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {go_quote(unit)} in duration {go_quote(text)}")
        position, mult_ms = _UNITS[unit]
        if position <= last:
            raise ValueError(f"not a valid duration string: {go_quote(text)}")
        last = position
        mult_ns = mult_ms * 1_000_000
        if value > (1 << 63) // mult_ns:
            raise ValueError("duration out of range")
        total_ns += value * mult_ns
        if total_ns > _INT64_MAX:
            raise ValueError("duration out of range")
    return total_ns // 1_000_000


_FORMAT_UNITS = (
    ("y", 31_536_000_000, True),
    ("w", 604_800_000, True),
    ("d", 86_400_000, False),
    ("h", 3_600_000, False),
    ("m", 60_000, False),
    ("s", 1000, False),
    ("ms", 1, False),
)


def format_duration(ms: int) -> str:
    """model.Duration.String() of a non-negative duration in ms."""
    if ms == 0:
        return "0s"
    out = []
    for unit, mult, exact in _FORMAT_UNITS:
        if exact and ms % mult:
            continue
        value = ms // mult
        if value > 0:
            out.append(f"{value}{unit}")
            ms -= value * mult
    return "".join(out)


def format_float(value: float) -> str:
    """Go's fmt.Sprint(float64): strconv 'g' with the shortest digits (Python's repr has the
    same digits), in exponent form when the exponent is < -4 or >= 6."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digit_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    assert isinstance(exponent, int)
    exp10 = len(digits) + exponent - 1
    minus = "-" if sign else ""
    if exp10 < -4 or exp10 >= 6:
        body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{minus}{body}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    point = exp10 + 1
    if point <= 0:
        return f"{minus}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{minus}{digits}{'0' * (point - len(digits))}"
    return f"{minus}{digits[:point]}.{digits[point:]}"


def try_duration_ms(text: str) -> int | None:
    """model.ParseDuration (`1h30m`, `5m`, `0`); None when `text` is not a duration."""
    try:
        return parse_duration_ms(text)
    except ValueError:
        return None
