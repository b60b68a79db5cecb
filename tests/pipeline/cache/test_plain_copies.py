"""The cache stage alone: clients with and without gzip get the same answer, from stored bytes,
and a refreshed entry never leaves an old plain copy behind."""

from __future__ import annotations

import gzip

import pytest
from support.stages import request

from gateway.config import CacheSettings
from gateway.metrics import Metrics
from gateway.pipeline.cache import ResultsCache, codec
from gateway.pipeline.cache.tiers import HostTier, MemoryTier, Store
from gateway.pipeline.host import HostStore
from gateway.pipeline.model import Answer, Request
from gateway.promql import parse_query


class Versioned:
    """An upstream whose answer carries a version; gzip when the request asks for it."""

    def __init__(self) -> None:
        self.version = 1
        self.calls = 0

    def body(self) -> bytes:
        return b'{"status":"success","data":{"resultType":"scalar","result":[100,"%d"]}}' % self.version

    async def __call__(self, request: Request) -> Answer:
        self.calls += 1
        if request.accept_gzip:
            return Answer(gzip.compress(self.body()), gzipped=True)
        return Answer(self.body())


def _instant() -> Request:
    return request("query", (("query", "1"), ("time", "100")), expr=parse_query("1"), time_ms=100_000)


def _cache(upstream: Versioned, path: str) -> ResultsCache:
    return ResultsCache(
        CacheSettings(),
        Metrics(),
        upstream,
        clock=lambda: 1_000_000.0,
        host=HostStore(path, 1 << 24, create=True),
    )


async def test_both_encodings_are_served_as_stored_and_never_stale(tmp_path) -> None:
    upstream = Versioned()
    cache = _cache(upstream, str(tmp_path))
    plain, gzip_client = _instant(), _instant().replace(accept_gzip=True)

    miss = await cache(plain)
    assert (miss.cache, miss.gzipped, miss.body) == ("miss", False, upstream.body())
    hit = await cache(gzip_client)
    assert (hit.cache, hit.gzipped, gzip.decompress(hit.body)) == ("hit", True, upstream.body())
    plain_hit = await cache(plain)
    assert (plain_hit.cache, plain_hit.gzipped, plain_hit.body) == ("hit", False, upstream.body())
    assert upstream.calls == 1

    upstream.version = 2
    refreshed = await cache(gzip_client.replace(no_cache=True))
    assert gzip.decompress(refreshed.body) == upstream.body()
    after = await cache(plain)
    assert (after.cache, after.body) == ("hit", upstream.body())  # not the old plain copy
    assert upstream.calls == 2


@pytest.mark.parametrize("gzip_client", [False, True])
async def test_a_copy_is_not_served_once_another_worker_replaced_its_entry(tmp_path, gzip_client) -> None:
    """Two workers of one `serve` (two caches on one host store): the copy one worker kept of a
    whole response (decoded for plain clients, or the gzip entry its hits are served from) is
    not served after the other refreshed the entry."""
    upstream = Versioned()
    first, second = _cache(upstream, str(tmp_path)), _cache(upstream, str(tmp_path))
    ask = _instant().replace(accept_gzip=gzip_client)

    def body(answer: Answer) -> bytes:
        return gzip.decompress(answer.body) if answer.gzipped else bytes(answer.body)

    assert body(await first(ask)) == upstream.body()
    assert (await first(ask)).cache == "hit"  # and now first has its copy
    assert (await second(ask)).cache == "hit"  # one host: one fetch for both
    assert first.store.copies.bytes > 0 and upstream.calls == 1
    upstream.version = 2
    await second(ask.replace(no_cache=True))
    after = await first(ask)
    assert (after.cache, body(after)) == ("hit", upstream.body())
    assert upstream.calls == 2


async def test_a_gzip_entry_gets_one_plain_copy_for_plain_clients(tmp_path) -> None:
    upstream = Versioned()
    cache = _cache(upstream, str(tmp_path))
    await cache(_instant().replace(accept_gzip=True))
    before = cache.store.copies.bytes
    first = await cache(_instant())
    grown = cache.store.copies.bytes
    second = await cache(_instant())
    assert first.body == second.body == upstream.body() and not second.gzipped
    assert before == 0 < grown == cache.store.copies.bytes  # made once, then served as stored


class _OtherReplicasRedis:
    """Stands for Redis after another replica rewrote a key: answers with its bytes."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        return [self.blob for _ in keys]

    def put(self, key: str, blob: bytes, ttl: float) -> None:
        pass


async def test_an_entry_promoted_from_redis_drops_the_old_plain_copy(tmp_path) -> None:
    now = 1_000_000.0
    host = HostTier(HostStore(str(tmp_path), 1 << 20, create=True), lambda: now)
    store = Store(host, None, lambda: now, copies=MemoryTier(1 << 20, lambda: now))
    old = codec.entry(codec.KIND_RESPONSE, now + 60, 1, b"v1")
    store.put("k", old)
    store.put_copy("k", old, codec.Entry(codec.KIND_PLAIN, now + 60, 1, b"v1"))
    assert store.get_copy("k", gzipped=False) is not None
    host.delete("k")  # gone from this host (evicted); another replica wrote v2 to Redis
    store.redis = _OtherReplicasRedis(codec.encode(codec.entry(codec.KIND_RESPONSE, now + 60, 1, b"v2")))  # type: ignore[assignment]
    promoted = await store.get("k")
    assert promoted is not None and promoted.data() == b"v2"
    assert store.get_copy("k", gzipped=False) is None
