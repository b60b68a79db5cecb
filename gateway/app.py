"""Builds the Starlette app; the request pipeline is composed here, in one place."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Protocol

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route

from gateway.api.errors import error_response
from gateway.api.routes import PrometheusApi
from gateway.config import Settings
from gateway.logs import cap_library_loggers
from gateway.metrics import Metrics
from gateway.ops import AccessLog, Readiness, healthy, index, metrics_endpoint, ready_endpoint
from gateway.panels.routes import panel_routes
from gateway.pipeline.auth import Authenticator, AuthSettings, is_loopback, parse_auth
from gateway.pipeline.cache import ResultsCache
from gateway.pipeline.credentials import CredentialSource
from gateway.pipeline.edge_guard import edge_guard
from gateway.pipeline.enforce import EnforceSettings, enforcement_stage
from gateway.pipeline.exemplars import exemplars_stage
from gateway.pipeline.limits import LimitsStage
from gateway.pipeline.model import Handler
from gateway.pipeline.upstream import Upstream
from gateway.security import CORSMiddleware, SecurityHeaders, cors_options

log = logging.getLogger("gateway")


class Closeable(Protocol):
    async def aclose(self) -> None: ...


def build_pipeline(
    settings: Settings,
    metrics: Metrics,
    access: AuthSettings,
    on_close: list[Closeable] | None = None,
) -> tuple[Handler, Upstream]:
    """limits → label enforcement → exemplars (answered here) → cache → edge guard → sign +
    upstream. Each stage wraps the next."""
    upstream = Upstream(settings.upstream, CredentialSource(settings.aws), metrics, settings.workspaces)
    handler: Handler = edge_guard(metrics)(upstream)
    if settings.cache.mode != "off":
        cache = ResultsCache(settings.cache, metrics, handler)
        handler = cache
        if on_close is not None:
            on_close.append(cache)
    handler = exemplars_stage(handler)
    handler = enforcement_stage(EnforceSettings(override=access.override))(handler)
    handler = LimitsStage(access.defaults, metrics)(handler)
    return handler, upstream


def create_app(settings: Settings) -> Starlette:
    cap_library_loggers()
    metrics = Metrics()
    closers: list[Closeable] = []
    access = parse_auth(settings)
    pipeline, upstream = build_pipeline(settings, metrics, access, closers)
    if not access.enabled and not is_loopback(settings.listen_host):
        log.warning("auth: none; anyone who reaches %s can query every workspace", settings.listen_host)
    api = PrometheusApi(settings, pipeline, Authenticator(access, metrics), metrics)
    readiness = Readiness(settings, upstream, metrics)

    routes: list[BaseRoute] = [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/-/healthy", healthy, methods=["GET", "HEAD"]),
        Route("/-/ready", ready_endpoint(readiness), methods=["GET", "HEAD"]),
        Route("/metrics", metrics_endpoint(metrics), methods=["GET"]),
        *api.routes(),
        *panel_routes(settings, api),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for part in closers:
            await part.aclose()
        await upstream.aclose()

    async def not_found(request, exc):  # type: ignore[no-untyped-def]
        return error_response("not_found", f"no such path: {request.url.path}", 404)

    async def internal(request, exc):  # type: ignore[no-untyped-def]
        log.exception("unhandled error on %s", request.url.path)
        return error_response("internal", "internal error in the gateway; see its log", 500)

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: _method_not_allowed, Exception: internal},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.cache = next((c for c in closers if isinstance(c, ResultsCache)), None)
    app.add_middleware(SecurityHeaders, frame_ancestors=settings.panels.frame_ancestors)
    if access.cors_origins:
        app.add_middleware(CORSMiddleware, **cors_options(access.cors_origins))
    app.add_middleware(AccessLog, enabled=settings.access_log)
    return app


async def _method_not_allowed(request, exc):  # type: ignore[no-untyped-def]
    return error_response("bad_data", f"method {request.method} is not allowed here", 405)
