"""Response hygiene: security headers on every response, CORS only for configured origins."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_ALWAYS = (
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
)


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
                headers = MutableHeaders(scope=message)
                for name, value in _ALWAYS:
                    headers.setdefault(name, value)
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("content-security-policy", self.page_csp)
            await send(message)

        await self.app(scope, receive, sending)


def cors_options(origins: tuple[str, ...]) -> dict[str, object]:
    """CORSMiddleware options for an allow-list: GET/POST with Authorization, no cookies."""
    return {
        "allow_origins": list(origins),
        "allow_methods": ["GET", "POST"],
        "allow_headers": ["Authorization", "Content-Type", "X-Request-Id"],
        "allow_credentials": False,
        "max_age": 600,
    }


__all__ = ["CORSMiddleware", "SecurityHeaders", "cors_options"]
