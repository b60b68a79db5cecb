"""Fixtures for the results-cache tests: a real redis-server, and gateways with the cache on."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from support.gateway import cache_raw, cached_gateway
from support.netutil import free_port

__all__ = ["cache_raw", "cached_gateway"]


REDIS_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"


@dataclass
class RedisServer:
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        log = (self.workdir / "redis.log").open("wb")
        self.process = subprocess.Popen(
            [
                REDIS_BIN,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        client = redis.Redis(port=self.port, socket_timeout=0.5)
        while True:
            try:
                if client.ping():
                    break
            except redis.RedisError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start; see " + str(self.workdir / "redis.log"))
            time.sleep(0.02)
        client.close()
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def flush(self) -> None:
        with redis.Redis(port=self.port, socket_timeout=1) as client:
            client.flushall()

    def keys(self) -> list[bytes]:
        with redis.Redis(port=self.port, socket_timeout=1) as client:
            return list(client.keys("*"))


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
