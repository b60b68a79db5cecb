"""The `server` section: the bounds of the HTTP edge (`gateway.edge`), per worker process."""

from __future__ import annotations

from dataclasses import dataclass, fields

from gateway.config.readers import Reader


@dataclass(frozen=True)
class ServerSettings:
    # The request target (path and query) of a request line; longer: 414. Grafana sends queries
    # as POST forms by default, so a GET this long is rare; Prometheus itself takes up to 1 MiB.
    max_url_bytes: int = 64 * 1024
    # All header lines of a request together (names and values); more: 431.
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100  # header lines; more: 431
    # From a connection's first byte (or its opening) to the end of a request's headers; then
    # the connection is closed, as Go's ReadHeaderTimeout does.
    header_timeout: float = 10.0
    # From the end of the headers to the end of the body (queries are forms of a few KiB).
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0  # an idle connection between two requests
    # Open connections per worker. Past it, the oldest connection that is idle or still sending
    # its headers is closed to make room; when every one is busy, a new one is answered 503
    # (the probes, /-/healthy and /-/ready, are answered all the same).
    max_connections: int = 1024


KEYS = frozenset(field.name for field in fields(ServerSettings))


def read_server(raw: Reader) -> ServerSettings:
    raw.reject_unknown(KEYS)
    d = ServerSettings()
    return ServerSettings(
        max_url_bytes=raw.size("max_url_bytes", d.max_url_bytes),
        max_header_bytes=raw.size("max_header_bytes", d.max_header_bytes),
        max_headers=raw.whole("max_headers", d.max_headers, minimum=1),
        header_timeout=_positive(raw, "header_timeout", d.header_timeout),
        body_timeout=_positive(raw, "body_timeout", d.body_timeout),
        keep_alive_timeout=_positive(raw, "keep_alive_timeout", d.keep_alive_timeout),
        max_connections=raw.whole("max_connections", d.max_connections, minimum=1),
    )


def _positive(raw: Reader, key: str, default: float) -> float:
    value = raw.seconds(key, default)
    if value <= 0:
        raise raw.error(key, "must be longer than 0s")
    return value
