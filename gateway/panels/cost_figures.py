"""The /cost page's figures (plain dicts, ready for Plotly.react), from the cost API's rows and
points: the top names of a dimension as horizontal bars of the samples AMP charged and the
cache saved, beside a table of the numbers; and both over time, stacked. Money is samples at
the configured price. Every text is escaped for Plotly (`figure.escape`): dashboard and panel
titles come from whoever sends X-Dashboard-Title.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.panels.figure import PALETTE, THEMES, base_layout, build_figure, escape

# The dimensions a chart may show: what one row is called, and many.
DIMENSIONS: dict[str, tuple[str, str]] = {
    "dashboard": ("Dashboard", "dashboards"),
    "panel": ("Panel", "panels"),
    "principal": ("Principal", "principals"),
    "user": ("Grafana user", "users"),
    "org": ("Grafana org", "orgs"),
    "workspace": ("Workspace", "workspaces"),
}
# Rows the API marks as not a name: requests that named none, and the names past `cost.top`.
GROUP_LABELS = {"unnamed": "(none named)", "other": "(all others)"}
CHARGED = "Charged by AMP"
SAVED = "Saved by the cache"
DAY_MS = 86_400_000
LABEL_CHARS = 40  # on the bars' axis; the table and the hover give the whole name
MIN_MONEY = 1e-6  # below it, "<$0.000001"
_SI = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def samples_text(samples: float) -> str:
    """A count of samples in three significant digits and an SI prefix: 950, 12.3k, 1.5G."""
    if samples < 1000:
        return f"{samples:,.0f}"
    for divisor, prefix in _SI:
        text = f"{samples / divisor:.3g}"
        if float(text) >= 1:
            return text + prefix
    raise AssertionError("unreachable: samples >= 1000 is at least 1k")


def money_text(amount: float) -> str:
    """Dollars: cents from one cent up, two significant digits below, down to a millionth of a
    dollar (a panel's queries may cost that; "$0.00" would say they cost nothing)."""
    if amount <= 0:
        return "$0"
    if amount >= 0.01:
        return f"${amount:,.2f}"
    if amount < MIN_MONEY:
        return f"<${MIN_MONEY:.6f}"
    return f"${amount:.{1 - math.floor(math.log10(amount))}f}"


def price_text(price: float) -> str:
    """The price per billion samples as configured: $0.10, $0.125."""
    return f"${price:.2f}" if round(price, 2) == price else f"${price:g}"


def saved_money(price: float, samples: int) -> float:
    return samples * price / 1e9


def full_name(row: Mapping[str, Any]) -> str:
    """A row's title and key (the uid of a dashboard, dashboard/panel of a panel), or the key."""
    group = str(row.get("group") or "")
    if group in GROUP_LABELS:
        return GROUP_LABELS[group]
    key, title = str(row["key"]), str(row.get("title") or "")
    return f"{title} ({key})" if title and title != key else key


def labels(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One distinct label per row for the bars' axis (a category axis would merge equal ones):
    its title when known, else its key; shortened; the key added where titles repeat."""
    bases = [
        _short(GROUP_LABELS.get(str(r.get("group") or "")) or str(r.get("title") or r["key"])) for r in rows
    ]
    repeated = Counter(bases)
    out: list[str] = []
    seen: set[str] = set()
    for row, base in zip(rows, bases, strict=True):
        label = base
        if repeated[base] > 1 and not row.get("group"):
            label = f"{base} ({_short(str(row['key']))})"
        unique, n = label, 1
        while unique in seen:
            n += 1
            unique = f"{label} #{n}"
        seen.add(unique)
        out.append(unique)
    return out


def _short(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def _layout(theme: str, title: str) -> dict[str, Any]:
    layout: dict[str, Any] = {
        **base_layout(theme, title),
        "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1, "yanchor": "bottom"},
    }
    if title:
        layout["title"] = {"text": escape(title), "x": 0, "xanchor": "left", "font": {"size": 14}}
    return layout


def empty_figure(message: str, theme: str = "light", meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """No chart, only `message` where it would be."""
    layout = _layout(theme, "")
    layout["xaxis"] = {"visible": False}
    layout["yaxis"] = {"visible": False}
    layout["annotations"] = [
        {
            "text": escape(message),
            "xref": "paper",
            "yref": "paper",
            "x": 0.5,
            "y": 0.5,
            "showarrow": False,
            "font": {"size": 14, "color": THEMES.get(theme, THEMES["light"])["font"]},
        }
    ]
    layout["meta"] = {**(meta or {}), "empty": True}
    return {"data": [], "layout": layout}


def nothing_counted(range_text: str) -> str:
    return f"No queries counted yet in the last {range_text}"


def rows_figure(
    dimension: str, rows: Sequence[Mapping[str, Any]], *, price: float, range_text: str, theme: str = "light"
) -> dict[str, Any]:
    """The cost API's rows of `dimension` (most samples first): bars of the samples charged and
    saved per name, money on the bars and in the hover, and a table of every number."""
    noun, plural = DIMENSIONS[dimension]
    meta: dict[str, Any] = {"dimension": dimension, "range": range_text, "price": price, "rows": len(rows)}
    if not rows:
        return empty_figure(nothing_counted(range_text), theme, meta)
    colors = THEMES.get(theme, THEMES["light"])
    shown = [escape(label) for label in labels(rows)]
    charged = [int(r["samples"]) for r in rows]
    costs = [float(r["cost"]) for r in rows]
    saved = [int(r["saved_samples"]) for r in rows]
    saved_costs = [saved_money(price, s) for s in saved]
    hover = [
        escape(f"{full_name(r)}: {c:,} samples charged ({money_text(m)}), ")
        + escape(f"{s:,} saved by the cache ({money_text(sm)})")
        for r, c, m, s, sm in zip(rows, charged, costs, saved, saved_costs, strict=True)
    ]
    data: list[dict[str, Any]] = [
        {
            "type": "bar",
            "orientation": "h",
            "name": name,
            "y": shown,
            "x": samples,
            "text": [
                f"{samples_text(n)} · {money_text(m)}" if n else ""
                for n, m in zip(samples, money, strict=True)
            ],
            "textposition": "auto",
            "cliponaxis": False,
            "hovertext": hover,
            "hovertemplate": "%{hovertext}<extra></extra>",
            "marker": {"color": color},
        }
        for name, samples, money, color in (
            (CHARGED, charged, costs, PALETTE[0]),
            (SAVED, saved, saved_costs, PALETTE[1]),
        )
    ]
    data.append(
        {
            "type": "table",
            "domain": {"x": [0.58, 1], "y": [0, 1]},
            "columnwidth": [2.4, 1.2, 1.3, 1.3, 1.3],
            "header": {
                "values": [noun, "Samples", "Cost", "Saved samples", "Saved"],
                "align": ["left", "right", "right", "right", "right"],
                "fill": {"color": colors["grid"]},
                "font": {"color": colors["font"], "size": 12},
            },
            "cells": {
                "values": [
                    [escape(full_name(r)) for r in rows],
                    [f"{c:,}" for c in charged],
                    [money_text(m) for m in costs],
                    [f"{s:,}" for s in saved],
                    [money_text(m) for m in saved_costs],
                ],
                "align": ["left", "right", "right", "right", "right"],
                "fill": {"color": colors["paper"]},
                "line": {"color": colors["grid"]},
                "font": {"color": colors["font"], "size": 12},
                "height": 22,
            },
        }
    )
    layout = _layout(theme, f"Top {plural}, last {range_text}")
    layout["legend"].update(x=0.54, xanchor="right")  # above the bars, right of the title
    layout.update(
        barmode="group",
        hovermode="closest",
        xaxis={
            "domain": [0, 0.54],
            "tickformat": "~s",
            "rangemode": "tozero",
            "gridcolor": colors["grid"],
            "linecolor": colors["line"],
            "automargin": True,
            "title": {"text": "query samples", "font": {"size": 11}},
        },
        yaxis={
            "type": "category",
            "autorange": "reversed",
            "automargin": True,
            "linecolor": colors["line"],
        },
        meta={**meta, "empty": False, "charged": sum(charged), "saved": sum(saved)},
    )
    return {"data": data, "layout": layout}


def over_time_figure(
    points: Sequence[Mapping[str, Any]],
    *,
    step_ms: int,
    range_text: str,
    price: float,
    theme: str = "light",
    tz: str = "UTC",
    warnings: Sequence[str] = (),
) -> dict[str, Any]:
    """The cost API's points (one per hour, or UTC day, oldest first) as stacked bars, each
    bucket's width: the samples AMP charged, and above them those the cache saved; the range's
    totals in the title, money in the hover."""
    charged = sum(int(p["samples"]) for p in points)
    saved = sum(int(p["saved_samples"]) for p in points)
    meta = {"range": range_text, "price": price, "charged": charged, "saved": saved}
    if charged == 0 and saved == 0:
        figure = empty_figure(nothing_counted(range_text), theme, meta)
        if warnings:
            figure["layout"]["meta"]["warnings"] = list(warnings)
        return figure
    series = [
        (CHARGED, "samples", [float(p["cost"]) for p in points]),
        (SAVED, "saved_samples", [saved_money(price, int(p["saved_samples"])) for p in points]),
    ]
    matrix = {
        "resultType": "matrix",
        "result": [
            {"metric": {"series": name}, "values": [[p["time"], str(p[field])] for p in points]}
            for name, field, _ in series
        ],
    }
    cost = float(sum(series[0][2]))
    title = (
        f"Last {range_text}: {samples_text(charged)} samples charged ({money_text(cost)}), "
        f"{samples_text(saved)} saved by the cache ({money_text(saved_money(price, saved))})"
    )
    first, last = int(points[0]["time"]), int(points[-1]["time"])
    figure = build_figure(
        matrix,
        start_ms=first * 1000,
        end_ms=last * 1000 + step_ms,
        step_ms=step_ms,
        legend="{{series}}",
        unit="samples",
        title=title,
        theme=theme,
        tz=tz,
        warnings=warnings,
    )
    money = {escape(name): amounts for name, _, amounts in series}
    for color, trace in zip(PALETTE, figure["data"], strict=False):
        for line_only in ("mode", "connectgaps", "line"):
            trace.pop(line_only, None)
        amounts = money[trace["name"]]
        trace.update(
            type="bar",
            width=step_ms * 0.9,
            offset=0,  # a bar spans its bucket, from the time it began
            marker={"color": color},
            hovertemplate=trace["hovertemplate"] + " · %{customdata}",
            customdata=[money_text(a) for a in amounts],
        )
    layout = figure["layout"]
    layout["barmode"] = "stack"
    if step_ms >= DAY_MS:  # a bar per day: its date under it, not the midnight it began
        del layout["xaxis"]["tickformatstops"]
        layout["xaxis"]["tickformat"] = "%b %d"
    layout["meta"].update(meta, empty=False)
    return figure
