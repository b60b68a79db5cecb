"""Fixtures for the results-cache tests: gateways with the cache on (the real redis-server is
the top-level `redis_server` fixture)."""

from __future__ import annotations

from typing import Any

import httpx
from support.gateway import cache_raw, cached_gateway

__all__ = ["cache_raw", "cached_gateway"]


def data_of(response: httpx.Response) -> Any:
    """What must be identical: status, and `data`/`warnings` or the error type."""
    body = response.json()
    if body.get("status") == "success":
        return ("success", body.get("data"), body.get("warnings"))
    return ("error", body.get("errorType"))
