"""A Prometheus range-query result as a Plotly figure (a plain dict, ready for Plotly.react).

One trace per series, named by a Grafana-style legend template; a missing step breaks the line
(a null point, `connectgaps` off); values scaled to one unit prefix per axis; hover shows every
series at the cursor time; the answer's warnings (a stale answer's among them) drawn on the chart,
above the plot. Every text Plotly draws is HTML-escaped first: Plotly renders a subset of HTML in
names and titles, and label values come from whoever exports metrics.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.panels import units

_LEGEND_RE = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
PALETTE = (
    "#5794F2",
    "#73BF69",
    "#FF9830",
    "#F2495C",
    "#B877D9",
    "#37B2A4",
    "#E0B400",
    "#8AB8FF",
    "#C4162A",
    "#FA6400",
    "#1F60C4",
    "#56A64B",
)
THEMES: dict[str, dict[str, str]] = {
    "light": {
        "paper": "#ffffff",
        "font": "#24292f",
        "grid": "#e9ecef",
        "line": "#c9ced4",
        "hover": "#ffffff",
        "warn": "#8a4b00",
        "warn_bg": "#fff4e0",
    },
    "dark": {
        "paper": "#181b1f",
        "font": "#ccccdc",
        "grid": "#2a2e33",
        "line": "#464c54",
        "hover": "#22252b",
        "warn": "#ffb357",
        "warn_bg": "#3a2c17",
    },
}
# A warning is drawn on one line of at most this many characters; the whole of each on hover.
WARNING_CHARS = 100


def escape(text: str) -> str:
    """Text for Plotly, shown as it is: its pseudo-HTML (`<b>`, `<a href>`, `<br>`) is escaped,
    and so is `%` (as `&#37;`, which Plotly decodes only after templating), so that `%{meta.query}`
    or `%{y}` in a title, name or unit stays text instead of pulling other text into the page."""
    return html.escape(text, quote=False).replace("%", "&#37;")


def legend_name(template: str, metric: Mapping[str, str], fallback: str) -> str:
    if template:
        return _LEGEND_RE.sub(lambda m: metric.get(m.group(1), ""), template)
    name = metric.get("__name__", "")
    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    if not name and not labels:
        return fallback
    return f"{name}{{{labels}}}" if labels else name


class _Clock:
    """Timestamps as wall-clock strings in one zone (Plotly's date axes have no time zones)."""

    def __init__(self, tz: str) -> None:
        self._zone = UTC if tz.upper() == "UTC" else ZoneInfo(tz)
        self._seen: dict[float, str] = {}

    def __call__(self, seconds: float) -> str:
        text = self._seen.get(seconds)
        if text is None:
            moment = datetime.fromtimestamp(seconds, self._zone)
            text = moment.strftime("%Y-%m-%d %H:%M:%S")
            if moment.microsecond:
                text += f".{moment.microsecond // 1000:03d}"
            self._seen[seconds] = text
        return text


def _number(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _series_points(
    values: Sequence[Sequence[Any]], step_s: float, clock: _Clock, divisor: float
) -> tuple[list[str], list[float | None]]:
    xs: list[str] = []
    ys: list[float | None] = []
    previous: float | None = None
    for ts, raw in values:
        if previous is not None and ts - previous > step_s * 1.5:
            xs.append(clock(previous + step_s))  # a null point: Plotly breaks the line here
            ys.append(None)
        value = _number(raw)
        xs.append(clock(ts))
        ys.append(None if value is None else value / divisor)
        previous = ts
    return xs, ys


def base_layout(theme: str, title: str) -> dict[str, Any]:
    """What every figure's layout shares: the theme's colours and font, margins, hover labels."""
    colors = THEMES.get(theme, THEMES["light"])
    return {
        "colorway": list(PALETTE),
        "paper_bgcolor": colors["paper"],
        "plot_bgcolor": colors["paper"],
        "font": {
            "family": "Inter, system-ui, -apple-system, 'Segoe UI', sans-serif",
            "size": 12,
            "color": colors["font"],
        },
        "margin": {"l": 8, "r": 12, "t": 36 if title else 8, "b": 8},
        "hoverlabel": {"bgcolor": colors["hover"], "bordercolor": colors["line"], "namelength": -1},
    }


def build_figure(
    data: Mapping[str, Any],
    *,
    start_ms: int,
    end_ms: int,
    step_ms: int,
    legend: str = "",
    unit: str = "",
    title: str = "",
    query: str = "",
    theme: str = "light",
    tz: str = "UTC",
    height: int | None = None,
    warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """The Plotly figure for a query_range answer (its `data`, or the whole success envelope,
    whose `warnings` are then drawn too, as `warnings` are).

    `tz` is UTC or an IANA zone; x values are wall-clock times there. `legend` is a template
    such as `{{path}}`; `unit` a Grafana unit id (`reqps`, `Bps`, `bytes`, `s`, ...) or text.
    """
    if "status" in data and "data" in data:
        warnings = [*warnings, *(data.get("warnings") or ())]
        data = data["data"]
    series = [s for s in data.get("result", []) if isinstance(s, Mapping)]
    if data.get("resultType") not in (None, "matrix"):
        raise ValueError(f"a panel draws range results (matrix), not {data.get('resultType')}")
    colors = THEMES.get(theme, THEMES["light"])
    clock = _Clock(tz)
    unit_def = units.resolve(unit)
    largest = 0.0
    for s in series:
        for _, raw in s.get("values", ()):
            value = _number(raw)
            if value is not None and abs(value) > largest:
                largest = abs(value)
    scale = units.choose_scale(unit_def, largest)
    fallback = query if len(query) <= 80 else query[:77] + "..."
    named = sorted(
        ((legend_name(legend, s.get("metric", {}), fallback), s) for s in series), key=lambda p: p[0]
    )
    traces = []
    for name, s in named:
        xs, ys = _series_points(s.get("values", ()), step_ms / 1000, clock, scale.divisor)
        traces.append(
            {
                "type": "scatter",
                "mode": "lines+markers" if len(xs) == 1 else "lines",
                "name": escape(name),
                "x": xs,
                "y": ys,
                "connectgaps": False,
                "line": {"width": 1.5},
                "hovertemplate": f"%{{y:.4~g}}{escape(scale.suffix)}",
            }
        )
    layout: dict[str, Any] = {
        **base_layout(theme, title),
        "hovermode": "x unified",
        "showlegend": bool(traces),
        "legend": {
            "orientation": "h",
            "x": 0,
            "xanchor": "left",
            "y": -0.08,
            "yanchor": "top",
            "bgcolor": "rgba(0,0,0,0)",
        },
        "xaxis": {
            "type": "date",
            "range": [clock(start_ms / 1000), clock(end_ms / 1000)],
            "gridcolor": colors["grid"],
            "linecolor": colors["line"],
            "automargin": True,
            "hoverformat": "%Y-%m-%d %H:%M:%S",
            # One line per tick label (Plotly's default adds the date on a second line).
            "tickformatstops": [
                {"dtickrange": [None, 1000], "value": "%H:%M:%S.%L"},
                {"dtickrange": [1000, 60000], "value": "%H:%M:%S"},
                {"dtickrange": [60000, 86400000], "value": "%H:%M"},
                {"dtickrange": [86400000, "M1"], "value": "%b %d"},
                {"dtickrange": ["M1", None], "value": "%b %Y"},
            ],
            "showspikes": True,
            "spikemode": "across",
            "spikethickness": 1,
            "spikedash": "solid",
            "spikecolor": colors["line"],
        },
        "yaxis": {
            "gridcolor": colors["grid"],
            "zerolinecolor": colors["line"],
            "automargin": True,
            "ticksuffix": escape(scale.suffix),
            "rangemode": "tozero" if largest == 0 or _all_non_negative(series) else "normal",
        },
        "meta": {
            "query": query,
            "series": len(traces),
            "start": start_ms / 1000,
            "end": end_ms / 1000,
            "step": step_ms / 1000,
            "unit": unit,
            "scale": scale.divisor,
            "tz": tz,
        },
    }
    if height:
        layout["height"] = height
    if title:
        layout["title"] = {"text": escape(title), "x": 0, "xanchor": "left", "font": {"size": 14}}
    if not traces:
        layout["yaxis"]["visible"] = False
        layout["annotations"] = [
            {
                "text": escape(f"No data for {fallback}" if fallback else "No data"),
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
                "showarrow": False,
                "font": {"size": 14, "color": colors["font"]},
            }
        ]
        layout["meta"]["empty"] = True
    if warnings:
        _draw_warnings(layout, [str(w) for w in warnings], colors)
    return {"data": traces, "layout": layout}


def _draw_warnings(layout: dict[str, Any], warnings: list[str], colors: Mapping[str, str]) -> None:
    """The first warning on one line above the plot (how many more, if any), each in full on
    hover; and all of them in `meta.warnings` for whoever reads the figure."""
    first = warnings[0]
    if len(first) > WARNING_CHARS:
        first = first[: WARNING_CHARS - 1] + "…"
    more = f" (+{len(warnings) - 1} more)" if len(warnings) > 1 else ""
    layout["meta"]["warnings"] = warnings
    layout["margin"]["t"] += 24
    layout.setdefault("annotations", []).append(
        {
            "text": escape(f"⚠ {first}{more}"),
            "hovertext": "<br>".join(escape(w) for w in warnings),
            "xref": "paper",
            "yref": "paper",
            "x": 1,
            "y": 1,
            "xanchor": "right",
            "yanchor": "bottom",
            "showarrow": False,
            "align": "right",
            "font": {"size": 11, "color": colors["warn"]},
            "bgcolor": colors["warn_bg"],
            "borderpad": 3,
        }
    )


def _all_non_negative(series: Sequence[Mapping[str, Any]]) -> bool:
    for s in series:
        for _, raw in s.get("values", ()):
            value = _number(raw)
            if value is not None and value < 0:
                return False
    return True
