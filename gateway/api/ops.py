"""Operations endpoints: /-/healthy, /-/ready (probed and cached), /metrics (off the loop, cached 1 s)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request as StarletteRequest
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.metrics import Metrics, Scrapes
from gateway.pipeline.endpoints import READINESS_PROBE
from gateway.pipeline.model import Handler, Request

log = logging.getLogger("gateway.ready")

READY_CACHE_SECONDS = 10.0


class Readiness:
    """Ready when credentials resolve and every workspace answers a trivial query. The endpoint
    is unauthenticated, so it says ready or not; which workspace fails and why goes to the log
    (when a workspace's state changes) and to /metrics (`gateway_workspace_ready`)."""

    def __init__(self, settings: Settings, upstream: Handler, metrics: Metrics | None = None) -> None:
        self._settings = settings
        self._upstream = upstream
        self._metrics = metrics
        self._last: dict[str, str] = {}
        self._checked_at = -READY_CACHE_SECONDS
        self._result: tuple[bool, dict[str, str]] = (False, {})
        self._lock = asyncio.Lock()

    async def check(self) -> tuple[bool, dict[str, str]]:
        async with self._lock:
            if time.monotonic() - self._checked_at >= READY_CACHE_SECONDS:
                self._result = await self._probe()
                self._checked_at = time.monotonic()
        return self._result

    async def _probe(self) -> tuple[bool, dict[str, str]]:
        async def one(workspace_id: str) -> tuple[str, str]:
            workspace = self._settings.workspace(workspace_id)
            assert workspace is not None
            request = Request(
                workspace=workspace,
                endpoint=READINESS_PROBE,
                path="/api/v1/query",
                method="POST",
                params=(("query", "1"),),
                timeout=min(5.0, self._settings.upstream.timeout),
            )
            try:
                await self._upstream(request)
            except GatewayError as err:
                if err.upstream_body is None:
                    return workspace_id, err.message
                try:
                    return workspace_id, str(orjson.loads(err.upstream_body).get("error", "error"))
                except (orjson.JSONDecodeError, AttributeError):
                    return workspace_id, f"HTTP {err.status}"
            return workspace_id, "ok"

        results = await asyncio.gather(*(one(w.id) for w in self._settings.workspaces))
        states = dict(results)
        for workspace_id, state in states.items():
            if self._metrics is not None:
                self._metrics.workspace_ready.labels(workspace_id).set(1 if state == "ok" else 0)
            if self._last.get(workspace_id) != state:
                if state == "ok":
                    log.info("ready: workspace %s answers", workspace_id)
                else:
                    log.warning("not ready: workspace %s: %s", workspace_id, state)
        self._last = states
        return all(state == "ok" for state in states.values()), states


_INDEX = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>amp-gateway</title></head>
<body><h1>amp-gateway</h1><p>Prometheus HTTP API for Amazon Managed Service for Prometheus.</p><ul>
<li><a href="/dashboards">Dashboards</a></li>
<li><a href="/cost">Cost</a> (AMP query samples by dashboard, panel, principal and user)</li>
<li><a href="/api/v1/status/buildinfo">/api/v1</a> (the query API)</li>
<li><a href="/-/ready">Readiness</a></li><li><a href="/metrics">Metrics</a></li></ul></body></html>
"""


async def index(request: StarletteRequest) -> Response:
    return HTMLResponse(_INDEX, headers={"content-security-policy": "default-src 'none'"})


async def healthy(request: StarletteRequest) -> Response:
    return PlainTextResponse("Healthy.\n")


Endpoint = Callable[[StarletteRequest], Awaitable[Response]]


def ready_endpoint(readiness: Readiness) -> Endpoint:
    async def ready(request: StarletteRequest) -> Response:
        ok, _ = await readiness.check()
        body = orjson.dumps({"ready": ok})
        return Response(body, status_code=200 if ok else 503, media_type="application/json")

    return ready


def metrics_endpoint(metrics: Metrics) -> Endpoint:
    """Rendered off the event loop, once for the scrapes that ask meanwhile, at most once a
    second (`gateway.metrics.Scrapes`): a flood of scrapes does not slow the queries served."""
    scrapes = Scrapes(metrics.registry)

    async def serve_metrics(request: StarletteRequest) -> Response:
        return Response(await scrapes.render(), media_type=CONTENT_TYPE_LATEST)

    return serve_metrics
