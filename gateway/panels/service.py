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
from gateway.pipeline.answers import json_size, work
from gateway.pipeline.model import Answer, as_bytes

JSON_HEADERS = {"x-content-type-options": "nosniff", "cache-control": "no-cache"}


# Answers larger than this (JSON bytes) are not drawn: a browser cannot show that many points,
# and a figure is several times its answer's size in memory.
MAX_ANSWER_BYTES = 16 << 20


def _figure(answer: Answer, panel: PanelQuery, view: View) -> dict[str, Any]:
    """The figure of a panel's answer; raises GatewayError when it is not a success."""
    raw = answer.json_bytes()
    if len(raw) > MAX_ANSWER_BYTES:
        raise _too_large(len(raw))
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise GatewayError("unavailable", "the upstream answered without a JSON body") from None
    if not isinstance(body, dict) or body.get("status") != "success":
        raise GatewayError(
            "unavailable", "the upstream's answer is not a success", 502, upstream_body=as_bytes(raw)
        )
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
        warnings=body.get("warnings") or (),
    )
    return figure


def _too_large(size: int) -> GatewayError:
    return GatewayError(
        "execution",
        f"the answer is too large to draw ({size} bytes of JSON, at most {MAX_ANSWER_BYTES}): "
        "narrow the selector, raise the step, or use a recording rule",
        422,
    )


def _encoded(answer: Answer, panel: PanelQuery, view: View, gzip_ok: bool) -> tuple[bytes, bool]:
    """The figure's JSON, gzip-compressed when the client takes it and it is worth it."""
    body = orjson.dumps(_figure(answer, panel, view))
    if len(body) > 1024 and gzip_ok:
        # Timestamps repeat in every trace: figures shrink to a tenth or less.
        return gzip.compress(body, 5), True
    return body, False


async def figure_response(
    api: PrometheusApi, request: Request, panel: PanelQuery, view: View, workspace: str | None = None
) -> Response:
    gzip_ok = "gzip" in request.headers.get("accept-encoding", "")
    try:
        answer = await api.run(request, "query_range", panel.api_params(), workspace)
        if answer.size > MAX_ANSWER_BYTES:
            raise _too_large(answer.size)
        body, gzipped = await work(json_size(answer), _encoded, answer, panel, view, gzip_ok)
    except GatewayError as err:
        return error_response(err, JSON_HEADERS)
    headers = dict(JSON_HEADERS)
    if answer.cache:
        headers["x-cache"] = answer.cache
    if gzipped:
        headers["content-encoding"] = "gzip"
        headers["vary"] = "Accept-Encoding"
    return Response(body, media_type="application/json", headers=headers)
