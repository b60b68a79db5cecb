"""Response hygiene: security headers on every response, CORS only for configured origins."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
