"""Fixtures for the results-cache tests: a real redis-server, and gateways with the cache on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.gateway import cache_raw, cached_gateway
from support.netutil import free_port
from support.redis_server import RedisServer

__all__ = ["cache_raw", "cached_gateway"]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port, no persistence; stopped afterwards."""
    server = RedisServer(free_port(), tmp_path).start()
    yield server
    server.stop()


def data_of(response: httpx.Response) -> Any:
    """What must be identical: status, and `data`/`warnings` or the error type."""
    body = response.json()
    if body.get("status") == "success":
        return ("success", body.get("data"), body.get("warnings"))
    return ("error", body.get("errorType"))
