"""A dashboard as Grafana dashboard JSON, for import with a Prometheus data source chosen then
(`${DS_PROMETHEUS}` input). Rate panels with an automatic window use `$__rate_interval`, and
variables stay `$name`: Grafana has the same syntax, so queries mean the same there."""

from __future__ import annotations

from typing import Any

from gateway.golang import try_duration_ms
from gateway.panels.dashboards import Dashboard, PanelDef
from gateway.panels.spec import default_legend, rate_expr
from gateway.panels.timing import format_duration
from gateway.panels.units import unit_id

SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def panel_expr(panel: PanelDef) -> str:
    if panel.kind == "query":
        return panel.get("query")
    window = panel.get("window") or "auto"
    window = "$__rate_interval" if window == "auto" else format_duration(try_duration_ms(window) or 0)
    by = tuple(b for b in panel.get("by").split(",") if b)
    match = panel.get("match").strip().removeprefix("{").removesuffix("}")
    return rate_expr(
        panel.get("metric"), by, match, window, panel.get("fn") or "rate", panel.get("agg") or "sum"
    )


def _legend(panel: PanelDef) -> str:
    if panel.legend:
        return panel.legend
    if panel.kind == "rate":
        return default_legend(tuple(b for b in panel.get("by").split(",") if b)) or "__auto"
    return "__auto"


def _unit(panel: PanelDef) -> str:
    if panel.unit:
        return unit_id(panel.unit)
    metric = panel.get("metric")
    if panel.kind == "rate" and (panel.get("fn") or "rate") != "increase":
        if metric.endswith("requests_total"):
            return "reqps"
        if metric.endswith("bytes_total"):
            return "Bps"
    return "short"


def _layout(dashboard: Dashboard) -> list[dict[str, int]]:
    """Grafana's gridPos: panels flow left to right, wrapping at 24 columns."""
    positions = []
    x = y = row_height = 0
    for panel in dashboard.panels:
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        positions.append({"x": x, "y": y, "w": panel.width, "h": panel.height})
        x += panel.width
        row_height = max(row_height, panel.height)
    return positions


def export(dashboard: Dashboard) -> dict[str, Any]:
    panels = []
    for i, (panel, position) in enumerate(zip(dashboard.panels, _layout(dashboard), strict=True)):
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": panel.title,
                "gridPos": position,
                "datasource": DATASOURCE,
                "targets": [
                    {
                        "refId": "A",
                        "datasource": DATASOURCE,
                        "expr": panel_expr(panel),
                        "legendFormat": _legend(panel),
                        "range": True,
                        "instant": False,
                        "editorMode": "code",
                    }
                ],
                "fieldConfig": {
                    "defaults": {
                        "unit": _unit(panel),
                        "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 0, "spanNulls": False},
                    },
                    "overrides": [],
                },
                "options": {
                    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "none"},
                },
            }
        )
    variables = []
    for variable in dashboard.variables:
        definition = (
            f"label_values({variable.match}, {variable.label})"
            if variable.match
            else f"label_values({variable.label})"
        )
        current = {"text": variable.default, "value": variable.default} if variable.default else {}
        if variable.include_all and variable.default == ".*":
            current = {"text": "All", "value": "$__all"}
        variables.append(
            {
                "name": variable.name,
                "label": variable.name,
                "type": "query",
                "datasource": DATASOURCE,
                "definition": definition,
                "query": {
                    "qryType": 1,
                    "query": definition,
                    "refId": "PrometheusVariableQueryEditor-VariableQuery",
                },
                "refresh": 1,
                "current": current,
                "options": [],
                "includeAll": variable.include_all,
                "allValue": ".*" if variable.include_all else None,
                "multi": False,
                "sort": 1,
                "hide": 0,
                "regex": "",
            }
        )
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "description": "The Prometheus (or AMP gateway) data source",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
        ],
        "uid": dashboard.name[:40],
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["amp-gateway"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": f"now-{dashboard.range}", "to": "now"},
        "refresh": dashboard.refresh if dashboard.refresh not in ("", "off") else "",
        "templating": {"list": variables},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }
