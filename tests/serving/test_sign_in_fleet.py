"""Failed sign-ins under real `serve --workers 2` processes on one real Redis: a user name, known
or not, is throttled after the configured count of failures however they spread over workers
and replicas, not after as many times more."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.amp_standin import AmpStandin
from support.gateway import GatewayProcess
from support.redis_server import RedisServer
from support.testenv import AMP_REGION

PER_USER = 6
PASSWORD = "fleet-password-0123"


def _raw(amp: AmpStandin, redis_url: str) -> dict[str, Any]:
    return {
        "workspaces": [{"id": "ws-test1", "url": amp.workspace_url("ws-test1"), "region": AMP_REGION}],
        "cache": {"mode": "off", "redis_url": redis_url},
        "access_log": False,
        "auth": {
            "principals": [
                {
                    "name": "team",
                    "username": "grafana",
                    "password_sha256": hashlib.sha256(PASSWORD.encode()).hexdigest(),
                    "workspaces": ["*"],
                }
            ],
            # per address high: only the user name's count can throttle here
            "failed_sign_ins": {"per_address": 1000, "per_principal": PER_USER},
        },
    }


@pytest.fixture
def fleet(
    fresh_amp: AmpStandin, redis_server: RedisServer, tmp_path: Path, aws_env: dict[str, str]
) -> Iterator[Callable[[], list[GatewayProcess]]]:
    started: list[GatewayProcess] = []

    def launch() -> list[GatewayProcess]:
        for i in range(2):
            workdir = tmp_path / f"gateway-{i}"
            workdir.mkdir()
            started.append(GatewayProcess(_raw(fresh_amp, redis_server.url), workdir, aws_env, workers=2))
            started[-1].start()
        return started

    yield launch
    for process in started:
        process.stop()


def _basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize("user", ["grafana", "nobody-has-this-name"])
def test_failures_spread_over_workers_and_replicas_throttle_at_the_configured_count(
    user: str, fleet: Callable[[], list[GatewayProcess]]
) -> None:
    gateways = fleet()
    codes = []
    for i in range(PER_USER * 4):  # a new connection each: the kernel spreads them over workers
        url = gateways[i % 2].url
        codes.append(
            httpx.get(f"{url}/api/v1/labels", headers=_basic(user, f"guess-{i}"), timeout=10).status_code
        )
    assert codes == [401] * PER_USER + [429] * (PER_USER * 3), codes
    if user == "grafana":  # the right password is refused too while the name is throttled
        right = httpx.get(f"{gateways[1].url}/api/v1/labels", headers=_basic(user, PASSWORD), timeout=10)
        assert right.status_code == 429
    for gateway in gateways:
        assert "Traceback" not in gateway.log.read_text()
