"""Redis as the shared second tier: replicas share work; Redis going away never fails a request."""

from __future__ import annotations

import logging

from support.gateway import gateway_settings

from .conftest import cache_raw, cached_gateway, data_of
from .test_cache_behaviour import QUERY, _forwarded, _range


async def test_replicas_share_entries_through_redis(fresh_amp, aws_env, prometheus, redis_server):
    end = prometheus.data_end - 1800
    settings = gateway_settings(fresh_amp, raw=cache_raw(mode="redis", redis_url=redis_server.url))
    params = _range(QUERY, end - 1200, end)
    async with cached_gateway(settings) as (first, first_cache), cached_gateway(settings) as (second, _):
        answer = await first.post("/api/v1/query_range", data=params)
        assert answer.headers["x-cache"] == "miss"
        assert first_cache.store.redis is not None
        await first_cache.store.redis.flush()
        assert redis_server.keys()
        # the other replica has an empty memory tier; Redis answers, the upstream is not asked
        shared = await second.post("/api/v1/query_range", data=params)
        assert shared.headers["x-cache"] == "hit"
        assert data_of(shared) == data_of(answer)
        # a shifted window on the other replica reuses the extents the first one stored
        shifted = await second.post("/api/v1/query_range", data=_range(QUERY, end - 900, end + 300))
        assert shifted.headers["x-cache"] == "partial"
        later = _forwarded(fresh_amp)[1:]
        assert later and all(float(f["start"]) > end for f in later)  # only the 5 new minutes


async def test_redis_going_away_mid_test_never_fails_a_request(
    fresh_amp, aws_env, prometheus, redis_server, caplog
):
    end = prometheus.data_end - 1800
    settings = gateway_settings(fresh_amp, raw=cache_raw(mode="redis", redis_url=redis_server.url))
    async with cached_gateway(settings) as (client, cache):
        warm = _range(QUERY, end - 600, end)
        assert (await client.post("/api/v1/query_range", data=warm)).status_code == 200
        assert cache.store.redis is not None
        await cache.store.redis.flush()
        redis_server.stop()
        with caplog.at_level(logging.WARNING, logger="gateway.redis"):
            for i in range(6):
                params = _range(QUERY, end - 600 - i * 60, end - i * 60)
                answer = await client.post("/api/v1/query_range", data=params)
                assert answer.status_code == 200
                assert answer.headers["x-cache"] in ("hit", "partial", "miss")
            # the memory tier still answers what it holds
            assert (await client.post("/api/v1/query_range", data=warm)).headers["x-cache"] == "hit"
        await cache.store.redis.flush()
        outage_logs = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
        assert len(outage_logs) == 1
        assert redis_server.url not in caplog.text
        metrics = (await client.get("/metrics")).text
        errors = [
            line
            for line in metrics.splitlines()
            if line.startswith('gateway_redis_fallbacks_total{feature="cache"}')
        ]
        assert errors and float(errors[0].split()[-1]) >= 1
        assert "gateway_redis_up 0.0" in metrics
