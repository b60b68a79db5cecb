"""Operations: health, readiness, /metrics and the access log — and no secret in any of them."""

from __future__ import annotations

import asyncio
import logging

import httpx
import orjson
import pytest
from support.amp_standin import AmpStandin
from support.gateway import gateway_client, gateway_settings
from support.redis_server import RedisServer

from gateway.logs import JsonFormatter


async def test_health_ready_and_metrics(gateway: httpx.AsyncClient, fresh_amp: AmpStandin) -> None:
    assert (await gateway.get("/-/healthy")).status_code == 200
    ready = await gateway.get("/-/ready")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True}  # unauthenticated: ready or not, no details
    probes = len(fresh_amp.requests)
    assert (await gateway.get("/-/ready")).status_code == 200
    assert len(fresh_amp.requests) == probes  # the probe result is cached

    await gateway.get("/api/v1/query", params={"query": "demo_num_cpus"})
    await gateway.get("/api/v1/query", params={"query": "sum("})
    metrics = (await gateway.get("/metrics")).text
    assert 'gateway_requests_total{code="200",endpoint="query",workspace="ws-test1"} 1.0' in metrics
    assert 'gateway_requests_total{code="400",endpoint="query",workspace="ws-test1"} 1.0' in metrics
    assert 'gateway_upstream_requests_total{code="200",endpoint="query",workspace="ws-test1"} 1.0' in metrics
    assert "gateway_request_duration_seconds_bucket" in metrics
    assert "gateway_upstream_duration_seconds_bucket" in metrics
    assert "gateway_redis_up" not in metrics  # no Redis configured: nothing to be away


async def test_ready_names_the_failing_workspace_only_in_log_and_metrics(
    gateway: httpx.AsyncClient, fresh_amp: AmpStandin, caplog: pytest.LogCaptureFixture
) -> None:
    fresh_amp.inject(
        403, count=None, errortype="AccessDeniedException", message="not authorized", path_contains="ws-test2"
    )
    with caplog.at_level(logging.WARNING, logger="gateway.ready"):
        ready = await gateway.get("/-/ready")
    assert ready.status_code == 503
    assert ready.json() == {"ready": False}
    # the details: which workspace in /metrics, why in the log
    metrics = (await gateway.get("/metrics")).text
    assert 'gateway_workspace_ready{workspace="ws-test1"} 1.0' in metrics
    assert 'gateway_workspace_ready{workspace="ws-test2"} 0.0' in metrics
    assert any("ws-test2" in r.getMessage() and "aps:QueryMetrics" in r.getMessage() for r in caplog.records)


async def test_access_log_is_json_with_request_id_and_no_secrets(
    fresh_amp: AmpStandin, aws_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    settings = gateway_settings(fresh_amp, raw={"access_log": True})
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        async with gateway_client(settings) as client:
            answer = await client.get(
                "/api/v1/query",
                params={"query": 'demo_num_cpus{secret="hunter2"}'},
                headers={"authorization": "Bearer sekret-token", "x-request-id": "req-42"},
            )
    assert answer.headers["x-request-id"] == "req-42"
    (record,) = [r for r in caplog.records if r.name == "gateway.access"]
    line = JsonFormatter().format(record)
    assert orjson.loads(line)["level"] == "info"
    assert '"request_id":"req-42"' in line and '"status":200' in line and '"path":"/api/v1/query"' in line
    for secret in ("hunter2", "sekret-token", aws_env["AWS_SECRET_ACCESS_KEY"], "AWS4-HMAC"):
        assert secret not in line


async def test_readiness_does_not_queue_behind_slow_queries_for_an_upstream_slot(
    fresh_amp: AmpStandin, aws_env: dict[str, str], redis_server: RedisServer
) -> None:
    # The only upstream slot (the whole fleet's, through Redis) is held by a slow query longer
    # than the probe's own 5 s timeout; the replica is still ready.
    raw = {
        "upstream": {"max_concurrency": 1, "queue_timeout": "20s"},
        "cache": {"mode": "off", "redis_url": redis_server.url},
    }
    settings = gateway_settings(fresh_amp, raw=raw)
    fresh_amp.inject_delay(6, count=1, path_contains="query_range")
    async with gateway_client(settings) as client:
        slow = asyncio.ensure_future(
            client.get(
                "/api/v1/query_range",
                params={"query": "demo_num_cpus", "start": "1700000000", "end": "1700000600", "step": "60"},
            )
        )
        await asyncio.sleep(0.5)
        ready = await client.get("/-/ready")
        assert ready.status_code == 200 and ready.json() == {"ready": True}
        assert (await slow).status_code == 200
