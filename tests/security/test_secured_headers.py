"""SecurityHeaders.secured builds exactly what MutableHeaders.setdefault built before."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import MutableHeaders

from gateway.api.middleware import SecurityHeaders

_NAMES = st.sampled_from(
    [b"content-type", b"x-content-type-options", b"referrer-policy", b"content-security-policy", b"x-cache"]
)
_VALUES = st.sampled_from([b"text/html; charset=utf-8", b"application/json", b"nosniff", b"x", b""])
_HEADERS = st.lists(st.tuples(_NAMES, _VALUES), max_size=8)


def _reference(middleware: SecurityHeaders, raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    message = {"type": "http.response.start", "headers": raw}
    headers = MutableHeaders(scope=message)
    for name, value in (("x-content-type-options", "nosniff"), ("referrer-policy", "no-referrer")):
        headers.setdefault(name, value)
    if headers.get("content-type", "").startswith("text/html"):
        headers.setdefault("content-security-policy", middleware.page_csp)
    return message["headers"]


@given(_HEADERS)
def test_secured_equals_setdefault(raw: list[tuple[bytes, bytes]]) -> None:
    middleware = SecurityHeaders(app=None, frame_ancestors=("'self'", "https://grafana.example.com"))  # type: ignore[arg-type]
    before = list(raw)
    assert middleware.secured(raw) == _reference(middleware, list(raw))
    assert raw == before  # the response's own list is left alone
