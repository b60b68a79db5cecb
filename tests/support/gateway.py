"""Run the gateway in tests: settings pointing at the AMP stand-in, in-process or on a socket."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import psutil
import uvicorn
import yaml

from gateway.app import Gateway, create_app
from gateway.config import Settings, build_settings
from gateway.pipeline.cache import ResultsCache

from .amp_standin import AmpStandin
from .netutil import bound_socket, free_port
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
async def in_process(
    settings: Settings, clock: Callable[[], float] | None = None, host_path: str | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    """The one in-process gateway builder: an httpx client wired to the app (lifespan run
    around it) and the app's Gateway (its cache, metrics); `clock` is the cache's now;
    `host_path`: the host's store, shared with other gateways given the same (as the workers
    of one `serve` share it), else one of its own."""
    app = create_app(settings, clock or time.time, host_path)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=60) as client:
            yield client, app.state.gateway


@contextlib.asynccontextmanager
async def gateway_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(settings) as (client, _):
        yield client


def cache_raw(**overrides: Any) -> dict[str, Any]:
    """`raw` for gateway_settings with the memory cache on and small splits (5 m)."""
    cache: dict[str, Any] = {"mode": "memory", "split_interval": "5m"}
    cache.update(overrides)
    return {"cache": cache}


@contextlib.asynccontextmanager
async def cached_gateway(
    settings: Settings, clock: Callable[[], float] | None = None, host_path: str | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, ResultsCache]]:
    """in_process, handing out the cache stage (its store and its Redis writes)."""
    async with in_process(settings, clock, host_path) as (client, gateway):
        assert isinstance(gateway.cache, ResultsCache), "these settings have the cache off"
        yield client, gateway.cache


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


class GatewayProcess:
    """`python -m gateway serve` in its own process (a crash cannot hide in the test process),
    configured from a YAML file, on a free loopback port, with `workers` worker processes under
    its supervisor; its output goes to a log file."""

    def __init__(
        self,
        raw: Mapping[str, Any],
        workdir: Path,
        env: Mapping[str, str],
        workers: int = 1,
        inherit_env: bool = True,
    ) -> None:
        self.workers = workers
        self.port = free_port()
        self.url = f"{'https' if raw.get('tls') else 'http'}://127.0.0.1:{self.port}"
        self.config = workdir / "gateway.yml"
        self.config.write_text(yaml.safe_dump({**raw, "listen": f"127.0.0.1:{self.port}"}))
        self.log = workdir / "gateway.log"
        self._env = {**os.environ, **env} if inherit_env else dict(env)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> GatewayProcess:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    *("-m", "gateway", "serve", "--config", str(self.config)),
                    *("--workers", str(self.workers)),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the gateway exited: {self.log.read_text()[-2000:]}")
            try:
                # (a TLS gateway's certificate is the test's business, not this start-up poll's)
                healthy = httpx.get(f"{self.url}/-/healthy", timeout=1, verify=False).status_code == 200
            except httpx.HTTPError:
                healthy = False
            if healthy and self.log.read_text().count("Application startup complete") >= self.workers:
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def worker_pids(self) -> list[int]:
        """The supervisor's worker processes (its children, minus multiprocessing's helper)."""
        assert self.process is not None
        pids = []
        for child in psutil.Process(self.process.pid).children():
            try:
                if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(
                    child.cmdline()
                ):
                    pids.append(child.pid)
            except psutil.Error:  # gone, or a zombie not yet reaped
                pass
        return pids

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def scraped(url: str) -> dict[str, float]:
    """A gateway's /metrics as {`name{labels}` as served (labels sorted by name): value}."""
    out = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            out[head] = float(value)
    return out


def scraped_value(url: str, sample: str) -> float:
    """One sample's value from a gateway's /metrics; 0 if absent."""
    return scraped(url).get(sample, 0.0)
