"""What a panel shows, read from request parameters: the PromQL, its time range, how to draw it.

`/panels/rate` builds the PromQL from `metric`, `by`, `match`, `window` (so nobody writes it by
hand for the common case); `/panels/query` takes `query`. Both share the time and view options.
"""

from __future__ import annotations

import re
import time
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.errors import GatewayError, bad_param
from gateway.golang import LABEL_NAME_RE, try_duration_ms
from gateway.panels import timing
from gateway.panels.units import MAX_UNIT_LENGTH
from gateway.pipeline.endpoints.params import Params, parse_time_ms
from gateway.pipeline.endpoints.promql_params import parse_expr, parse_matchers

METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
RATE_FUNCTIONS = ("rate", "irate", "increase")
AGGREGATIONS = ("sum", "avg", "max", "min", "count")
THEMES = ("light", "dark")
MAX_TEXT = 2000  # legend templates and titles
_VARIABLE_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class TimeRange:
    start_ms: int
    end_ms: int
    step_ms: int
    interval_ms: int  # Grafana's $__interval
    rate_interval_ms: int  # Grafana's $__rate_interval
    relative: bool  # ends at "now" (moves on refresh)


@dataclass(frozen=True)
class PanelQuery:
    expr: str
    legend: str
    unit: str
    title: str
    time: TimeRange

    def api_params(self) -> Params:
        """The query_range parameters, as a client of /api/v1/query_range would send them."""
        return Params(
            [
                ("query", self.expr),
                ("start", f"{self.time.start_ms / 1000:.3f}"),
                ("end", f"{self.time.end_ms / 1000:.3f}"),
                ("step", f"{self.time.step_ms / 1000:.3f}"),
            ]
        )


@dataclass(frozen=True)
class View:
    theme: str = "light"
    tz: str = "browser"  # UTC, browser (the page asks with the browser's zone) or an IANA name
    compact: bool = False
    refresh_ms: int = 0
    height: int = 360


def rate_expr(
    metric: str, by: tuple[str, ...], match: str, window: str, fn: str = "rate", agg: str = "sum"
) -> str:
    selector = f"{metric}{{{match}}}" if match else metric
    inner = f"{fn}({selector}[{window}])"
    grouping = f" by ({', '.join(by)})" if by else ""
    return f"{agg}{grouping} ({inner})"


def default_legend(by: tuple[str, ...]) -> str:
    return " ".join(f"{{{{{name}}}}}" for name in by)


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Grafana's `$name` / `${name}`; values are escaped for a PromQL string literal, where
    variables normally stand (`job="$job"`), so a value cannot end the string early."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            return match.group(0)
        value = values[name]
        if name.startswith("__"):
            return value
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return _VARIABLE_RE.sub(one, text)


def _duration_ms(params: Params, name: str, default: int | None) -> int:
    text = params.get(name)
    if text == "" and default is not None:
        return default
    ms = try_duration_ms(text)
    if ms is None:
        try:
            seconds = float(text)
        except ValueError:
            seconds = -1.0
        if not seconds > 0 or seconds > 10 * 365 * 86400:
            raise bad_param(name, f"{text!r} is not a duration such as 30s, 5m or 6h")
        ms = round(seconds * 1000)
    if ms <= 0:
        raise bad_param(name, "must be positive")
    return ms


def _time(params: Params, name: str) -> int | None:
    text = params.get(name)
    if text == "" or text == "now":
        return None
    try:
        return parse_time_ms(text)
    except ValueError as err:
        raise bad_param(name, str(err)) from None


def _int(params: Params, name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise bad_param(name, f"{text!r} is not a whole number") from None
    if not low <= value <= high:
        raise bad_param(name, f"must be between {low} and {high}")
    return value


def parse_time_range(params: Params, now_ms: int | None = None, default_range: str = "") -> TimeRange:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    end = _time(params, "end")
    start = _time(params, "start")
    fallback = try_duration_ms(default_range) or timing.DEFAULT_RANGE_MS
    if start is not None and end is not None:
        if end <= start:
            raise bad_param("end", "must be after start")
        range_ms = end - start
    else:
        range_ms = _duration_ms(params, "range", fallback)
        if start is not None:
            end = start + range_ms
        start = (end if end is not None else now_ms) - range_ms
    relative = params.get("end") in ("", "now") and params.get("start") == ""
    end_ms = now_ms if end is None else end
    width = _int(params, "width", timing.DEFAULT_WIDTH, 10, 20000)
    min_interval = _duration_ms(params, "min_interval", timing.DEFAULT_MIN_INTERVAL_MS)
    interval = timing.auto_interval_ms(range_ms, width, min_interval)
    step = _duration_ms(params, "step", None) if params.get("step") else timing.step_ms(range_ms, interval)
    if params.get("step"):
        interval = step
    start_ms, end_ms = timing.align(start, end_ms, step)
    return TimeRange(
        start_ms=start_ms,
        end_ms=end_ms,
        step_ms=step,
        interval_ms=interval,
        rate_interval_ms=timing.rate_interval_ms(interval, min_interval),
        relative=relative,
    )


def _text(params: Params, name: str, limit: int = MAX_TEXT) -> str:
    text = params.get(name)
    if len(text) > limit:
        raise bad_param(name, f"longer than {limit} characters")
    return text


def _by(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    for name in names:
        if not LABEL_NAME_RE.match(name):
            raise bad_param("by", f"{name!r} is not a label name")
    return names


def _macros(time_range: TimeRange) -> dict[str, str]:
    return {
        "__interval": timing.format_duration(time_range.interval_ms),
        "__rate_interval": timing.format_duration(time_range.rate_interval_ms),
        "__range": timing.format_duration(time_range.end_ms - time_range.start_ms),
    }


def parse_panel(
    params: Params,
    kind: str,
    variables: Mapping[str, str] | None = None,
    now_ms: int | None = None,
    default_range: str = "",
    check: bool = True,
) -> PanelQuery:
    """A rate or query panel from its parameters; raises GatewayError (bad_data) naming the
    parameter. Without `check`, the PromQL is not parsed (nor its regexes compiled): for a page
    read before its caller is known; the query is checked when its data is asked for."""
    time_range = parse_time_range(params, now_ms, default_range)
    values = {**(variables or {}), **_macros(time_range)}
    legend = _text(params, "legend")
    unit = _text(params, "unit", MAX_UNIT_LENGTH)
    title = substitute(_text(params, "title", 200), variables or {})
    if kind == "rate":
        metric = params.get("metric")
        if not METRIC_NAME_RE.match(metric):
            raise bad_param("metric", f"{metric!r} is not a metric name" if metric else "required")
        by = _by(params.get("by"))
        match = substitute(_text(params, "match").strip().removeprefix("{").removesuffix("}"), values)
        if match and check:
            try:
                parse_matchers([f"{metric}{{{match}}}"])
            except GatewayError as err:
                raise bad_param("match", err.message) from None
        window = params.get("window") or "auto"
        if window == "auto":
            window = "$__rate_interval"
        else:
            window = timing.format_duration(_duration_ms(params, "window", None))
        fn = params.get("fn") or "rate"
        if fn not in RATE_FUNCTIONS:
            raise bad_param("fn", f"must be one of {', '.join(RATE_FUNCTIONS)}")
        agg = params.get("agg") or "sum"
        if agg not in AGGREGATIONS:
            raise bad_param("agg", f"must be one of {', '.join(AGGREGATIONS)}")
        expr = substitute(rate_expr(metric, by, match, window, fn, agg), values)
        legend = legend or default_legend(by)
        unit = unit or ("reqps" if fn != "increase" and metric.endswith("requests_total") else unit)
        unit = unit or ("Bps" if fn != "increase" and metric.endswith("bytes_total") else unit)
    elif kind == "query":
        text = _text(params, "query", 20_000)
        if not text.strip():
            raise bad_param("query", "required")
        expr = substitute(text, values)
    else:
        raise GatewayError("not_found", f"no panel kind {kind!r}")
    if check:
        parse_expr(expr)
    return PanelQuery(expr=expr, legend=legend, unit=unit, title=title, time=time_range)


def parse_view(params: Params, default_refresh: str = "") -> View:
    theme = params.get("theme") or "light"
    if theme not in THEMES:
        raise bad_param("theme", "must be light or dark")
    tz = params.get("tz") or "browser"
    if tz != "browser":
        check_tz(tz)
    refresh_text = params.get("refresh") or default_refresh
    refresh = 0
    if refresh_text and refresh_text not in ("off", "0"):
        refresh = max(_duration_ms(Params([("refresh", refresh_text)]), "refresh", None), 1000)
    compact = params.get("compact").lower() in ("1", "true", "yes", "on")
    height = _int(params, "height", 360, 80, 4000)
    return View(theme=theme, tz=tz, compact=compact, refresh_ms=refresh, height=height)


def check_tz(tz: str) -> str:
    if tz.upper() == "UTC":
        return "UTC"
    if len(tz) > 64 or not re.match(r"^[A-Za-z0-9_+\-/]+$", tz):
        raise bad_param("tz", "must be UTC, browser or an IANA time zone such as Europe/Berlin")
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise bad_param("tz", f"unknown time zone {tz!r}") from None
    return tz
