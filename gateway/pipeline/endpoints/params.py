"""Parsing of Prometheus API parameters with Prometheus's own semantics and messages.

Times are carried as integer milliseconds (Prometheus rounds fractions to the millisecond),
durations as integer nanoseconds (Go's time.Duration), so that checks such as the
11,000-points rule use exactly Prometheus's integer arithmetic.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from gateway.config import MAX_POINTS
from gateway.errors import GatewayError, bad_param
from gateway.golang import go_quote, parse_duration_ms, parse_float, round_half_away

# Prometheus's MinTime and MaxTime (web/api/v1/api.go), in ms.
MIN_TIME_MS = (-(2**63) // 1000 + 62135596801) * 1000
MAX_TIME_MS = ((2**63 - 1) // 1000 - 62135596801) * 1000 + 999
# time.Time{MinTime,MaxTime}.Format(time.RFC3339Nano), which clients may send verbatim.
_MIN_TIME_STRING = "-292273086-05-16T16:47:06Z"
_MAX_TIME_STRING = "292277025-08-18T07:12:54.999999999Z"

# Parameters that take several values; every other one is read once (its first value).
LIST_PARAMS = frozenset({"match[]", "rule_name[]", "rule_group[]", "file[]"})
# AMP's query-cost thresholds (QueryMetrics only): a warning, and a refusal AMP does not charge.
WARNING_THRESHOLD = "max_samples_processed_warning_threshold"
ERROR_THRESHOLD = "max_samples_processed_error_threshold"
_NS_PER_S = 1_000_000_000
_INT64_MAX = 2**63 - 1
# Go's time.Parse(time.RFC3339Nano): an upper-case T and Z only, seconds 00-59.
_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})", re.ASCII
)


def _float_or_none(text: str) -> float | None:
    try:
        return parse_float(text)
    except ValueError:
        return None


def positive_whole(text: str) -> int | None:
    """A positive whole number in ASCII digits, as a limit or a threshold is given (str.isdigit
    also takes '³' and '١٢', which int() refuses or reads otherwise); None for anything else."""
    if text.isascii() and text.isdigit() and len(text) <= 18 and int(text) > 0:
        return int(text)
    return None


def parse_time_ms(text: str) -> int:
    """Prometheus's parseTime: Unix seconds as a float (Go's syntax: `1_795_330_000` too), or
    RFC 3339; result in ms."""
    value = _float_or_none(text)
    if value is not None and math.isfinite(value):
        # Go: s, ns := math.Modf(t); ns = math.Round(ns*1000)/1000;
        # time.Unix(int64(s), int64(ns*1e9)), then timestamp.FromTime truncates to ms.
        seconds = math.trunc(value)
        fraction = round_half_away((value - seconds) * 1000) / 1000
        nanos = math.trunc(fraction * _NS_PER_S)
        seconds, nanos = seconds + nanos // _NS_PER_S, nanos % _NS_PER_S
        ms = seconds * 1000 + nanos // 1_000_000
        if MIN_TIME_MS <= ms <= MAX_TIME_MS:
            return ms
    match = _RFC3339_RE.fullmatch(text)
    if match:
        year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
        zone = match.group(8)
        try:
            moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
        except ValueError:
            moment = None
        if moment is not None and (zone == "Z" or (int(zone[1:3]) < 24 and int(zone[4:6]) < 60)):
            offset = 0 if zone == "Z" else (int(zone[1:3]) * 60 + int(zone[4:6])) * 60
            offset = -offset if zone[:1] == "+" else offset
            # Nanosecond fractions are cut to ms like timestamp.FromTime does.
            millis = int(((match.group(7) or "") + "000")[:3])
            return (int(moment.timestamp()) + offset) * 1000 + millis
    if text == _MIN_TIME_STRING:
        return MIN_TIME_MS
    if text == _MAX_TIME_STRING:
        return MAX_TIME_MS
    raise ValueError(f"cannot parse {go_quote(text)} to a valid timestamp")


def parse_duration_ns(text: str) -> int:
    """Prometheus's parseDuration: float seconds or a Prometheus duration; result in ns."""
    value = _float_or_none(text)
    if value is not None:
        if math.isnan(value):
            return -(2**63)  # Go's int64(NaN) on amd64
        ns = value * _NS_PER_S
        if ns > float(_INT64_MAX) or ns < -float(2**63):
            raise ValueError(f"cannot parse {go_quote(text)} to a valid duration. It overflows int64")
        return int(ns)
    try:
        return parse_duration_ms(text) * 1_000_000
    except ValueError:
        raise ValueError(f"cannot parse {go_quote(text)} to a valid duration") from None


class Params:
    """A request's parameters (URL query and form body merged, as Go's r.Form does)."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.items = items

    def get(self, name: str) -> str:
        """The first value, or "" when absent (Go's FormValue)."""
        for key, value in self.items:
            if key == name:
                return value
        return ""

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self.items if key == name]

    def time_ms(self, name: str, default: int | None = None) -> int:
        """parseTime, or with a `default` parseTimeParam (whose errors say which value)."""
        text = self.get(name)
        if text == "" and default is not None:
            return default
        try:
            return parse_time_ms(text)
        except ValueError as err:
            detail = str(err) if default is None else f"Invalid time value for '{name}': {err}"
            raise bad_param(name, detail) from None

    def duration_ns(self, name: str) -> int:
        try:
            return parse_duration_ns(self.get(name))
        except ValueError as err:
            raise bad_param(name, str(err)) from None

    def limit(self) -> int:
        text = self.get("limit")
        if text == "":
            return 0
        try:
            value = int(text)
        except ValueError:
            raise bad_param("limit", f"cannot parse {go_quote(text)} to a valid limit") from None
        if value < 0:
            raise bad_param("limit", "limit must be non-negative")
        return value


def check_range(start_ms: int, end_ms: int, step_ns: int) -> None:
    """queryRange's checks, in Prometheus's order and words."""
    if end_ms < start_ms:
        raise bad_param("end", "end timestamp must not be before start time")
    if step_ns <= 0:
        raise bad_param(
            "step", "zero or negative query resolution step widths are not accepted. Try a positive integer"
        )
    check_points(start_ms, end_ms, step_ns, MAX_POINTS)


def check_points(start_ms: int, end_ms: int, step_ns: int, max_points: int) -> None:
    """Prometheus's bound on points per series, with its integer arithmetic and words."""
    if (end_ms - start_ms) * 1_000_000 // step_ns > max_points:
        raise GatewayError(
            "bad_data",
            f"exceeded maximum resolution of {max_points:,} points per timeseries. "
            "Try decreasing the query resolution (?step=XX)",
        )
