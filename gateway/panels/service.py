"""Runs a panel's query through the gateway's own query path and turns the answer into a figure."""

from __future__ import annotations

import gzip
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.respond import error_response
from gateway.api.routes import PrometheusApi
from gateway.errors import GatewayError
from gateway.panels.figure import build_figure
from gateway.panels.spec import PanelQuery, View

JSON_HEADERS = {"x-content-type-options": "nosniff", "cache-control": "no-cache"}


async def panel_figure(
    api: PrometheusApi, request: Request, panel: PanelQuery, view: View, workspace: str | None = None
) -> tuple[dict[str, Any], str]:
    """The figure and the cache outcome (x-cache) of one panel query; raises GatewayError."""
    answer = await api.run(request, "query_range", panel.api_params(), workspace)
    raw = answer.json_bytes()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise GatewayError("unavailable", "the upstream answered without a JSON body") from None
    if not isinstance(body, dict) or body.get("status") != "success":
        raise GatewayError("unavailable", "the upstream's answer is not a success", 502, upstream_body=raw)
    figure = build_figure(
        body["data"],
        start_ms=panel.time.start_ms,
        end_ms=panel.time.end_ms,
        step_ms=panel.time.step_ms,
        legend=panel.legend,
        unit=panel.unit,
        title=panel.title,
        query=panel.expr,
        theme=view.theme,
        tz="UTC" if view.tz == "browser" else view.tz,
    )
    if body.get("warnings"):
        figure["layout"]["meta"]["warnings"] = body["warnings"]
    return figure, answer.cache


async def figure_response(
    api: PrometheusApi, request: Request, panel: PanelQuery, view: View, workspace: str | None = None
) -> Response:
    try:
        figure, cache = await panel_figure(api, request, panel, view, workspace)
    except GatewayError as err:
        return error_response(err, JSON_HEADERS)
    headers = dict(JSON_HEADERS)
    if cache:
        headers["x-cache"] = cache
    body = orjson.dumps(figure)
    if len(body) > 1024 and "gzip" in request.headers.get("accept-encoding", ""):
        # Timestamps repeat in every trace: figures shrink to a tenth or less.
        body = gzip.compress(body, 5)
        headers["content-encoding"] = "gzip"
        headers["vary"] = "Accept-Encoding"
    return Response(body, media_type="application/json", headers=headers)
