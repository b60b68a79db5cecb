"""Shared fixtures: a real backfilled Prometheus, AMP/STS stand-ins in front of it, the one
AWS environment, and the gateway (cache off) in front of them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from support.amp_standin import AmpStandin, start_amp
from support.gateway import gateway_client, gateway_settings
from support.netutil import free_port
from support.prometheus import PrometheusServer, start_prometheus
from support.redis_server import RedisServer
from support.sts_standin import StsStandin, start_sts
from support.testenv import (
    AMP_REGION,
    EXTERNAL_ID,
    EXTERNAL_ROLE_ARN,
    ROLE_ARN,
    WEB_IDENTITY_TOKEN,
    WEB_ROLE_ARN,
    WORKSPACES,
    static_aws_env,
)


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = start_prometheus(tmp_path_factory.mktemp("prometheus"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def amp(prometheus: PrometheusServer) -> Iterator[AmpStandin]:
    standin = start_amp({ws: prometheus.url for ws in WORKSPACES}, region=AMP_REGION)
    yield standin
    standin.stop()


@pytest.fixture(scope="session")
def sts(amp: AmpStandin) -> Iterator[StsStandin]:
    standin = start_sts(amp.credentials)
    standin.add_role(ROLE_ARN)
    standin.add_role(EXTERNAL_ROLE_ARN, external_id=EXTERNAL_ID)
    standin.add_role(WEB_ROLE_ARN, web_identity_token=WEB_IDENTITY_TOKEN)
    yield standin
    standin.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port, no persistence; stopped afterwards."""
    server = RedisServer(free_port(), tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def fresh_amp(amp: AmpStandin) -> Iterator[AmpStandin]:
    """The session AMP stand-in with no faults and an empty request log, before and after."""
    amp.reset()
    yield amp
    amp.reset()


@pytest.fixture
def fresh_sts(sts: StsStandin) -> Iterator[StsStandin]:
    """The session STS stand-in with no recorded calls and default duration, before and after."""
    sts.reset()
    yield sts
    sts.reset()


@pytest.fixture
def aws_env(
    amp: AmpStandin, sts: StsStandin, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, str]:
    """Environment for botocore: the static AMP key, region, STS endpoint, no user config."""
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    env = static_aws_env(amp.access_key, amp.secret_key, sts.url, tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
async def gateway(fresh_amp: AmpStandin, aws_env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway (cache off) signing with the stand-in's static key."""
    async with gateway_client(gateway_settings(fresh_amp)) as client:
        yield client


@pytest.fixture
async def direct(prometheus: PrometheusServer) -> AsyncIterator[httpx.AsyncClient]:
    """The same Prometheus, asked directly: the reference answer."""
    async with httpx.AsyncClient(base_url=prometheus.url, timeout=60) as client:
        yield client
