"""Operations endpoints: /-/healthy, /-/ready (probed and cached), /metrics; the access log."""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.pipeline.model import UpstreamRequest

access_log = logging.getLogger("gateway.access")
log = logging.getLogger("gateway.ready")

READY_CACHE_SECONDS = 10.0


class Readiness:
    """Ready when credentials resolve and every workspace answers a trivial query. The endpoint
    is unauthenticated, so it says ready or not; which workspace fails and why goes to the log
    (when a workspace's state changes) and to /metrics (`gateway_workspace_ready`)."""

    def __init__(self, settings: Settings, upstream: object, metrics: Metrics | None = None) -> None:
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
            request = UpstreamRequest(
                workspace=workspace,
                endpoint="ready",
                path="/api/v1/query",
                method="POST",
                params=[("query", "1")],
                timeout=min(5.0, self._settings.upstream.timeout),
            )
            answer = await self._upstream(request)  # type: ignore[operator]
            if answer.ok:
                return workspace_id, "ok"
            try:
                return workspace_id, orjson.loads(answer.json_bytes()).get("error", "error")
            except orjson.JSONDecodeError:
                return workspace_id, f"HTTP {answer.status}"

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
<li><a href="/api/v1/status/buildinfo">/api/v1</a> (the query API)</li>
<li><a href="/-/ready">Readiness</a></li><li><a href="/metrics">Metrics</a></li></ul></body></html>
"""


async def index(request: Request) -> Response:
    return HTMLResponse(_INDEX, headers={"content-security-policy": "default-src 'none'"})


async def healthy(request: Request) -> Response:
    return PlainTextResponse("Healthy.\n")


def ready_endpoint(readiness: Readiness):  # type: ignore[no-untyped-def]
    async def ready(request: Request) -> Response:
        ok, _ = await readiness.check()
        body = orjson.dumps({"ready": ok})
        return Response(body, status_code=200 if ok else 503, media_type="application/json")

    return ready


def metrics_endpoint(metrics: Metrics):  # type: ignore[no-untyped-def]
    async def serve_metrics(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return serve_metrics


class AccessLog:
    """Pure ASGI middleware: one JSON line per request, with its request id. No query text,
    no headers: nothing secret can land in the log. When the logger would drop the line
    (gateway.access below INFO), the request is not watched at all."""

    def __init__(self, app: ASGIApp, enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.enabled or not access_log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        size = 0
        headers: dict[bytes, bytes] = {}

        async def sending(message: Message) -> None:
            nonlocal status, size, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = dict(message.get("headers", []))
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client")
            access_log.info(
                orjson.dumps(
                    {
                        "ts": round(time.time(), 3),
                        "request_id": scope.get("gateway.request_id")
                        or headers.get(b"x-request-id", b"").decode(),
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "bytes": size,
                        "ms": round((time.perf_counter() - started) * 1000, 2),
                        "cache": headers.get(b"x-cache", b"").decode() or None,
                        "client": client[0] if client else None,
                    }
                ).decode()
            )
