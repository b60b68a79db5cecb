"""Run the gateway in tests: settings pointing at the AMP stand-in, in-process or on a socket."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import uvicorn

from gateway.app import create_app
from gateway.config import Settings, build_settings

from .amp_standin import AmpStandin
from .netutil import bound_socket
from .testenv import AMP_REGION


def gateway_settings(
    amp: AmpStandin, raw: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Two workspaces behind the stand-in (ws-test1 is the default, alias `test`); cache off
    unless `raw` says otherwise. Keys of `raw` replace the defaults whole."""
    base: dict[str, Any] = {
        "workspaces": [
            {"id": "ws-test1", "alias": "test", "url": amp.workspace_url("ws-test1"), "region": AMP_REGION},
            {"id": "ws-test2", "url": amp.workspace_url("ws-test2"), "region": AMP_REGION},
        ],
        "cache": {"mode": "off"},
        "upstream": {"retry_base": "10ms"},
        "access_log": False,
    }
    base.update(raw or {})
    return build_settings(base, dict(env or {}))


@contextlib.asynccontextmanager
async def gateway_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client wired to an in-process gateway (lifespan run around it)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=60) as client:
            yield client


class LiveGateway:
    """The gateway under uvicorn on a free loopback port, in a daemon thread."""

    def __init__(self, settings: Settings) -> None:
        self._sock = bound_socket()
        self.port = int(self._sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_level="warning",
            proxy_headers=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="gateway", daemon=True
        )

    def start(self, timeout: float = 10.0) -> LiveGateway:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()
