"""ASGI middleware: security headers on every response, CORS only for configured origins, and
the access log."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.routes import request_id

access_log = logging.getLogger("gateway.access")

_NOSNIFF = (b"x-content-type-options", b"nosniff")
_NO_REFERRER = (b"referrer-policy", b"no-referrer")


class SecurityHeaders:
    """Pure ASGI middleware. Headers a route sets itself (a page's own CSP) are kept."""

    def __init__(self, app: ASGIApp, frame_ancestors: tuple[str, ...] = ("'self'",)) -> None:
        self.app = app
        # No script or style policy here: pages set their own; this one only stops framing by
        # strangers, plugins and <base> tricks on pages that set nothing.
        self.page_csp = f"frame-ancestors {' '.join(frame_ancestors)}; object-src 'none'; base-uri 'self'"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = self.secured(message["headers"])
            await send(message)

        await self.app(scope, receive, sending)

    def secured(self, raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The response's headers plus those it lacks: what MutableHeaders.setdefault would give
        (same order), in one pass over the raw list."""
        headers = list(raw)
        nosniff = referrer = csp = False
        content_type = b""
        seen_type = False
        for key, value in headers:
            if key == b"x-content-type-options":
                nosniff = True
            elif key == b"referrer-policy":
                referrer = True
            elif key == b"content-security-policy":
                csp = True
            elif key == b"content-type" and not seen_type:
                content_type, seen_type = value, True
        if not nosniff:
            headers.append(_NOSNIFF)
        if not referrer:
            headers.append(_NO_REFERRER)
        if not csp and content_type.decode("latin-1").startswith("text/html"):
            headers.append((b"content-security-policy", self.page_csp.encode("latin-1")))
        return headers


def add_cors(app: Starlette, origins: tuple[str, ...]) -> None:
    """CORS for an allow-list of origins: GET/POST with Authorization, no cookies."""
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type", "X-Request-Id"],
        allow_credentials=False,
        max_age=600,
    )


__all__ = ["AccessLog", "SecurityHeaders", "add_cors"]


PROBE_PATHS = frozenset({"/-/healthy", "/-/ready", "/metrics"})


class AccessLog:
    """Pure ASGI middleware: one line per request, with its request id. No query text, no
    headers: nothing secret can land in the log. Probes and scrapes (`PROBE_PATHS`), every few
    seconds from every kubelet and Prometheus, are not logged unless `log_probes`. When the
    logger would drop the line (gateway.access below INFO), the request is not watched at all."""

    def __init__(self, app: ASGIApp, enabled: bool = True, log_probes: bool = False) -> None:
        self.app = app
        self.enabled = enabled
        self.log_probes = log_probes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.enabled
            or not access_log.isEnabledFor(logging.INFO)
            or (not self.log_probes and scope["path"] in PROBE_PATHS)
        ):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        size = 0
        headers: dict[bytes, bytes] = {}
        request_id(Request(scope))  # for every request, not only the API's: its lines carry it

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
            method, path = scope["method"], scope["path"]
            fields = {
                "request_id": scope["gateway.request_id"],
                "method": method,
                "path": path,
                "status": status,
                "bytes": size,
                "ms": round((time.perf_counter() - started) * 1000, 2),
                "cache": headers.get(b"x-cache", b"").decode() or None,
                "client": client[0] if client else None,
            }
            access_log.info("%s %s %d", method, path, status, extra={"fields": fields})
