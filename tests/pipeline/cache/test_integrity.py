"""A damaged cache entry is dropped, counted and fetched again: never served. Damage is done to
the real bytes a real redis-server holds, header left valid. (Entries in the process's own
memory were checked when they came in; nothing outside the process can change them.)"""

from __future__ import annotations

import httpx
import redis
from support.gateway import gateway_settings

from gateway.pipeline.cache import codec

from .conftest import cache_raw, cached_gateway
from .test_cache_behaviour import QUERY, _forwarded, _range


def _damage(blob: bytes) -> bytes:
    body = bytearray(blob)
    body[-5] ^= 0x40  # inside the gzip payload; the header (and its expiry) stays as it was
    return bytes(body)


def _damaged_count(cache, tier: str) -> float:
    value = cache._metrics.cache_damaged_entries.labels(tier)._value.get()
    return float(value)


async def test_damaged_entries_are_never_served(fresh_amp, aws_env, prometheus, redis_server) -> None:
    end = prometheus.data_end - 1800
    params = _range(QUERY, end - 1200, end)
    settings = gateway_settings(fresh_amp, raw=cache_raw(mode="redis", redis_url=redis_server.url))
    async with (
        cached_gateway(settings) as (client, cache),
        httpx.AsyncClient(base_url=prometheus.url, timeout=60) as direct,
    ):
        reference = await direct.post("/api/v1/query_range", data=params)
        first = await client.post("/api/v1/query_range", data=params)
        assert first.headers["x-cache"] == "miss"
        await cache.store.redis.flush()

        # Redis: every entry damaged, memory emptied (another replica's view).
        with redis.Redis(port=redis_server.port) as r:
            keys = r.keys("gwc:*")
            assert keys
            for key in keys:
                r.set(key, _damage(r.get(key)), keepttl=True)
        for key in cache.store.memory.stored_keys():
            cache.store.memory.delete(key)
        fetched = len(_forwarded(fresh_amp))
        again = await client.post("/api/v1/query_range", data=params)
        assert again.headers["x-cache"] == "miss"
        assert again.content == reference.content
        assert len(_forwarded(fresh_amp)) == fetched + 1
        assert _damaged_count(cache, "redis") >= 1
        await cache.store.redis.flush()
        with redis.Redis(port=redis_server.port) as r:  # replaced by sound entries
            now = prometheus.data_end
            assert all(codec.decode(r.get(k), now) is not None for k in r.keys("gwc:*"))

        # Sound again: the refetched answer is served from memory.
        fourth = await client.post("/api/v1/query_range", data=params)
        assert fourth.headers["x-cache"] == "hit" and fourth.content == reference.content
