"""Operations: health, readiness, /metrics and the access log — and no secret in any of them."""

from __future__ import annotations

import asyncio
import logging
import platform
import threading
from collections.abc import Iterable

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from support.amp_standin import AmpStandin
from support.gateway import gateway_client, gateway_settings
from support.redis_server import RedisServer

from gateway import __version__
from gateway.logs import JsonFormatter
from gateway.metrics import Scrapes


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


async def test_a_fresh_gateway_exports_its_error_and_limit_counters_at_zero(
    fresh_amp: AmpStandin, aws_env: dict[str, str], redis_server: RedisServer
) -> None:
    # Alerts on rate() or increase() need a series before the first error.
    raw = {
        "auth": {"principals": [{"name": "team", "token_sha256": "ab" * 32, "workspaces": ["*"]}]},
        "cache": {"mode": "off", "redis_url": redis_server.url},
    }
    async with gateway_client(gateway_settings(fresh_amp, raw)) as client:
        metrics = (await client.get("/metrics")).text
    for sample in (
        'gateway_auth_failures_total{reason="invalid"} 0.0',
        'gateway_auth_failures_total{reason="throttled"} 0.0',
        'gateway_stage_errors_total{stage="authenticate",type="unauthorized"} 0.0',
        'gateway_stage_errors_total{stage="send",type="unavailable"} 0.0',
        'gateway_stage_errors_total{stage="-",type="internal"} 0.0',
        'gateway_limited_total{principal="team",reason="rate"} 0.0',
        'gateway_limited_total{principal="team",reason="concurrency"} 0.0',
        'gateway_limited_total{principal="team",reason="size"} 0.0',
        'gateway_upstream_throttled_total{workspace="ws-test2"} 0.0',
        'gateway_upstream_retries_total{reason="throttled",workspace="ws-test1"} 0.0',
        'gateway_signing_errors_total{workspace="ws-test1"} 0.0',
        'gateway_credential_errors_total{workspace="ws-test1"} 0.0',
        'gateway_enforcement_violations_total{endpoint="query"} 0.0',
        'gateway_redis_fallbacks_total{feature="rate"} 0.0',
        'gateway_cache_damaged_entries_total{tier="redis"} 0.0',
    ):
        assert sample in metrics, sample


async def test_metrics_has_build_info_and_the_process_and_python_collectors(
    gateway: httpx.AsyncClient,
) -> None:
    metrics = (await gateway.get("/metrics")).text
    build = f'gateway_build_info{{python="{platform.python_version()}",version="{__version__}"}} 1.0'
    assert build in metrics
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "python_info", "python_gc_"):
        assert name in metrics, name


class _Counted(Collector):
    """A collector that counts its collections and the threads they ran in."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def collect(self) -> Iterable[Metric]:
        self.threads.append(threading.current_thread())
        return [GaugeMetricFamily("renders", "Renderings so far.", value=len(self.threads))]


async def test_scrapes_render_off_the_loop_once_for_all_who_ask_meanwhile_and_at_most_once_a_second() -> None:
    registry = CollectorRegistry(auto_describe=False)
    counted = _Counted()
    registry.register(counted)
    now = [100.0]
    scrapes = Scrapes(registry, max_age=1.0, clock=lambda: now[0])
    flood = await asyncio.gather(*(scrapes.render() for _ in range(50)))
    assert len(counted.threads) == 1 and counted.threads[0] is not threading.current_thread()
    assert set(flood) == {flood[0]} and b"renders 1.0" in flood[0]
    now[0] += 0.9
    assert await scrapes.render() == flood[0]  # served again within the second
    assert len(counted.threads) == 1
    now[0] += 0.2
    assert b"renders 2.0" in await scrapes.render()  # then rendered afresh
    # A scraper that goes away does not cancel the rendering the others wait for.
    now[0] += 5
    first = asyncio.ensure_future(scrapes.render())
    second = asyncio.ensure_future(scrapes.render())
    await asyncio.sleep(0)
    first.cancel()
    assert b"renders 3.0" in await second
