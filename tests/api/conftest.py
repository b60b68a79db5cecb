"""Fixtures for the core API tests: a gateway in front of the AMP stand-in, and direct Prometheus."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from support.amp_standin import AmpStandin
from support.gateway import gateway_client, gateway_settings
from support.prometheus import PrometheusServer


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
