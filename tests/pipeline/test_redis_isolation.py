"""Redis holds what it is sized for (issue 16), on real redis-servers:

- filling Redis with cache entries never evicts a rate bucket, a slot's lease or a coalescing
  lock: with the state on its own Redis (as the kustomize component runs it: the cache's
  `allkeys-lru`, the state's `noeviction`), and with one `noeviction` Redis for both;
- deployments on one Redis share nothing unless their configurations agree (or they name the
  same namespace): not the anonymous rate bucket, not a same-named principal's slots, not cache
  entries;
- with an HMAC key, what someone else wrote to Redis is never served.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from support.netutil import free_port
from support.redis_server import RedisServer
from support.stages import WORKSPACE, FakeUpstream, request

from gateway.app import Gateway
from gateway.config import CacheSettings, Limits, Principal, Rate
from gateway.config.settings import Settings, build_settings
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline import coalesce, slots
from gateway.pipeline.cache import codec
from gateway.pipeline.cache.tiers import HostTier, RedisTier, Store
from gateway.pipeline.coalesce import coalescing
from gateway.pipeline.host import HostStore
from gateway.pipeline.model import Answer, Request
from gateway.pipeline.rate import RateLimiter
from gateway.pipeline.shared import SharedRedis

KEY = "k" * 40
AMP_URL = WORKSPACE.url


class HeldUpstream(FakeUpstream):
    """Answers once `release` is set, counting what is in flight."""

    def __init__(self) -> None:
        super().__init__(Answer(b'{"status":"success","data":[]}'))
        self.release = asyncio.Event()
        self.in_flight = self.most_in_flight = 0

    async def __call__(self, request: Request) -> Answer:
        self.requests.append(request)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        return self.answer


def _server(tmp_path: Path, name: str, policy: str, room: int) -> RedisServer:
    """A redis-server that may hold `room` bytes beyond what it uses empty, under `policy`."""
    workdir = tmp_path / name
    workdir.mkdir()
    server = RedisServer(free_port(), workdir).start()
    with redis.Redis(port=server.port) as client:
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used + room)
        client.config_set("maxmemory-policy", policy)
    return server


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[RedisServer]]:
    made: list[RedisServer] = []
    yield made
    for server in made:
        server.stop()


def _metric(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("layout", ["state apart (allkeys-lru, noeviction)", "one Redis (noeviction)"])
async def test_filling_redis_with_cache_entries_never_evicts_state(
    layout: str, tmp_path: Path, servers: list[RedisServer]
) -> None:
    apart = layout.startswith("state apart")
    cache_server = _server(tmp_path, "cache", "allkeys-lru" if apart else "noeviction", 4 << 20)
    servers.append(cache_server)
    state_server = _server(tmp_path, "state", "noeviction", 4 << 20) if apart else cache_server
    if apart:
        servers.append(state_server)
    settings = CacheSettings(
        mode="redis",
        redis_url=cache_server.url,
        redis_state_url=state_server.url if apart else None,
        redis_namespace="fill",
    )
    metrics = Metrics()
    shared = SharedRedis(settings, metrics)
    await shared.connect()
    try:
        # State: a rate bucket, a slot's lease, and a coalescing lock whose holder fetches.
        limited = Principal(name="filler", limits=Limits(rate=Rate(per_second=0.01, burst=5)))
        limiter = RateLimiter(Metrics(), shared)
        await limiter.admit(limited)
        redis_slots = slots.RedisSlots(shared)
        slot_key = redis_slots.key("workspace:fill")
        holder = await redis_slots.acquire(slot_key, 1, 1)
        assert isinstance(holder, str)
        upstream = HeldUpstream()
        fetching = asyncio.ensure_future(coalescing(lambda: None, shared, wait=5)(upstream)(request()))
        lock = coalesce.redis_keys(request(), shared.namespace).lock
        state_keys = [f"amp-gateway:fill:rate:{limited.name}", slot_key, lock]
        with redis.Redis(port=state_server.port) as client:
            while not client.exists(lock):
                await asyncio.sleep(0.01)

            # Cache entries: 40 MiB of them (incompressible), ten times the room there is.
            tier = RedisTier(shared)
            for i in range(200):
                tier.put(f"gwc:{i:040x}", os.urandom(200_000), 3600)
                if i % 8 == 7:
                    await tier.flush()
            await tier.flush()

            assert all(client.exists(key) for key in state_keys), state_keys
            assert client.zscore(slot_key, holder) is not None
            evicted = int(client.info("stats")["evicted_keys"])
            assert evicted == 0  # the state's Redis (or the one noeviction Redis) evicts nothing
        with redis.Redis(port=cache_server.port) as cache_client:
            stored = len(cache_client.keys("gwc:fill:*"))
            assert 0 < stored < 200
            if apart:  # the cache's Redis made room by evicting entries, as a cache does
                assert int(cache_client.info("stats")["evicted_keys"]) > 0
            else:  # a write Redis refused for want of memory is skipped, and counted
                assert _metric(metrics, "gateway_redis_fallbacks_total", feature="cache") > 0
        # A full cache is no outage: the state is still shared, and was all along.
        assert shared.available and shared.cache.available
        assert _metric(metrics, "gateway_redis_up") == 1
        for feature in ("rate", "slots", "coalesce"):
            assert _metric(metrics, "gateway_redis_fallbacks_total", feature=feature) == 0
        if apart:  # and the state keeps working: a new bucket, a new slot
            await limiter.admit(Principal(name="after", limits=limited.limits))
            assert isinstance(await redis_slots.acquire(redis_slots.key("after"), 1, 1), str)
            assert _metric(metrics, "gateway_redis_fallbacks_total", feature="rate") == 0
        upstream.release.set()
        assert await fetching == upstream.answer
        await redis_slots.release(slot_key, holder)
    finally:
        await shared.aclose()


async def test_with_the_state_apart_processes_still_share_fetches_and_slots(
    tmp_path: Path, servers: list[RedisServer]
) -> None:
    cache_server = _server(tmp_path, "cache", "allkeys-lru", 4 << 20)
    state_server = _server(tmp_path, "state", "noeviction", 4 << 20)
    servers += [cache_server, state_server]
    settings = CacheSettings(mode="redis", redis_url=cache_server.url, redis_state_url=state_server.url)
    processes = [SharedRedis(settings, Metrics()), SharedRedis(settings, Metrics())]
    for shared in processes:
        await shared.connect()
    try:
        upstream = HeldUpstream()
        first, second = (coalescing(lambda: None, shared, wait=10)(upstream) for shared in processes)
        leader = asyncio.ensure_future(first(request()))
        while not upstream.requests:
            await asyncio.sleep(0.01)
        waiter = asyncio.ensure_future(second(request()))
        keys = coalesce.redis_keys(request(), processes[0].namespace)
        with redis.Redis(port=state_server.port) as client:
            while not client.exists(keys.waiters):
                await asyncio.sleep(0.01)
        upstream.release.set()
        assert await leader == await waiter == upstream.answer and len(upstream.requests) == 1
        with redis.Redis(port=cache_server.port) as client:  # the answer went to the cache's Redis
            assert client.keys(f"{keys.base}:answer:*")
        with redis.Redis(port=state_server.port) as client:
            assert not client.keys(f"{keys.base}:answer:*")
    finally:
        for shared in processes:
            await shared.aclose()


# ---------------------------------------------------------------- deployments on one Redis


def _deployment(redis_url: str, auth: Any, **raw: Any) -> Settings:
    return build_settings(
        {"workspaces": [{"url": AMP_URL}], "cache": {"redis_url": redis_url}, "auth": auth, **raw}, {}
    )


async def _anonymous_admitted(settings: Settings) -> list[bool]:
    """Whether each of two requests of the anonymous principal passed the rate limit, through
    the gateway's own wiring."""
    gateway = Gateway(settings, Metrics())
    await gateway.start()
    outcomes = []
    try:
        for _ in range(2):
            try:
                await gateway.rate_limit(gateway.authenticator.anonymous)
                outcomes.append(True)
            except GatewayError:
                outcomes.append(False)
    finally:
        await gateway.aclose()
    return outcomes


async def test_differently_configured_auth_none_gateways_do_not_share_the_anonymous_bucket(
    redis_server: RedisServer,
) -> None:
    one_a_minute = {"rate": {"per_second": 1 / 60, "burst": 1}}
    first = _deployment(redis_server.url, "none", limits=one_a_minute)
    second = _deployment(redis_server.url, "none", limits={**one_a_minute, "max_points": 500})
    assert first.fingerprint != second.fingerprint
    assert await _anonymous_admitted(first) == [True, False]
    assert await _anonymous_admitted(second) == [True, False]  # its own bucket, full
    # A replica of the first (the same configuration) shares the first's bucket.
    assert (
        await _anonymous_admitted(_deployment(redis_server.url, "none", limits=one_a_minute)) == [False] * 2
    )
    # Two deployments that name one namespace share it on purpose (blue/green).
    blue, green = (
        _deployment(
            redis_server.url,
            "none",
            limits=limits,
            cache={"redis_url": redis_server.url, "redis_namespace": "bg"},
        )
        for limits in (one_a_minute, {**one_a_minute, "max_points": 500})
    )
    assert await _anonymous_admitted(blue) == [True, False]
    assert await _anonymous_admitted(green) == [False, False]


async def test_same_named_principals_of_two_deployments_share_no_slots(redis_server: RedisServer) -> None:
    def principal(team: str) -> dict[str, Any]:
        return {
            "principals": [
                {
                    "name": "grafana",
                    "token_sha256": "0" * 64,
                    "workspaces": ["*"],
                    "enforce": {"team": team},
                    "limits": {"max_concurrency": 1, "queue_timeout": "2s"},
                }
            ]
        }

    deployments = [_deployment(redis_server.url, principal(team)) for team in ("a", "b")]
    assert deployments[0].fingerprint != deployments[1].fingerprint
    upstream = HeldUpstream()
    shared = [SharedRedis(d.cache, Metrics()) for d in deployments]
    try:
        handlers = [slots.principal_slots(Metrics(), s)(upstream) for s in shared]
        grafana = [d.auth.credentials[0].principal for d in deployments]
        calls = [
            asyncio.ensure_future(h(request(principal=p))) for h, p in zip(handlers, grafana, strict=True)
        ]
        # Both in flight at once, one slot each (with one slot between them, the second would
        # be refused after its queue_timeout).
        while len(upstream.requests) < 2 and not any(call.done() for call in calls):
            await asyncio.sleep(0.01)
        upstream.release.set()
        await asyncio.gather(*calls)
        assert upstream.most_in_flight == 2
    finally:
        for s in shared:
            await s.aclose()


async def test_deployments_do_not_read_each_others_cache_entries(redis_server: RedisServer) -> None:
    entry = codec.encode(codec.entry(codec.KIND_RESPONSE, 2e9, 1, b"{}"))
    tiers: list[RedisTier] = []
    shared = [
        SharedRedis(CacheSettings(mode="redis", redis_url=redis_server.url, redis_namespace=ns), Metrics())
        for ns in ("cfg-one", "cfg-two")
    ]
    try:
        tiers = [RedisTier(s) for s in shared]
        tiers[0].put(f"gwc:{KEY}", entry, 60)
        await tiers[0].flush()
        assert await tiers[0].get_many([f"gwc:{KEY}"]) == [entry]
        assert await tiers[1].get_many([f"gwc:{KEY}"]) == [None]
        assert redis_server.keys() == [f"gwc:cfg-one:{KEY}".encode()]
    finally:
        for s in shared:
            await s.aclose()


# ---------------------------------------------------------------- entries authenticated


@pytest.fixture
async def sealed(
    redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[tuple[SharedRedis, Store, Metrics]]:
    settings = CacheSettings(mode="redis", redis_url=redis_server.url, redis_hmac_key="h" * 40)
    metrics = Metrics()
    shared = SharedRedis(settings, metrics)
    damaged = metrics.cache_damaged_entries
    store = Store(
        HostTier(HostStore(str(tmp_path), 1 << 20, create=True), lambda: 1e9),
        RedisTier(shared),
        lambda: 1e9,
        on_damaged=lambda tier: damaged.labels(tier).inc(),
    )
    yield shared, store, metrics
    await store.aclose()
    await shared.aclose()


async def test_a_forged_cache_entry_is_not_served_with_a_key(
    sealed: tuple[SharedRedis, Store, Metrics], redis_server: RedisServer
) -> None:
    shared, store, metrics = sealed
    genuine = codec.entry(codec.KIND_RESPONSE, 2e9, 1, b'{"status":"success","data":"genuine"}')
    store.put(f"gwc:{KEY}", genuine)
    assert store.redis is not None
    await store.redis.flush()
    store.memory.delete(f"gwc:{KEY}")
    assert await store.get(f"gwc:{KEY}") == genuine  # sealed and opened with the key

    forged = codec.entry(codec.KIND_RESPONSE, 2e9, 1, b'{"status":"success","data":"forged"}')
    other = SharedRedis(
        CacheSettings(mode="redis", redis_url=redis_server.url, redis_hmac_key="x" * 40), Metrics()
    )
    with redis.Redis(port=redis_server.port) as client:
        where = f"gwc:{shared.namespace}:"
        sealed_genuine = client.get(where + KEY)
        assert isinstance(sealed_genuine, bytes)
        attempts = [
            codec.encode(forged),  # what a writer without any key writes (a sound checksum)
            other.seal(where + "f" * 40, codec.encode(forged)),  # another deployment's key
            sealed_genuine,  # a genuine entry moved to another key
        ]
        for i, blob in enumerate(attempts):
            name = f"{i:x}" * 40
            client.set(where + name[:40], blob)
            assert await store.get(f"gwc:{name[:40]}") is None, i
    assert _metric(metrics, "gateway_cache_damaged_entries_total", tier="redis") == len(attempts)
    await other.aclose()


async def test_a_forged_coalesced_answer_is_not_taken_with_a_key(
    sealed: tuple[SharedRedis, Store, Metrics], redis_server: RedisServer
) -> None:
    shared, _, metrics = sealed
    upstream = HeldUpstream()
    upstream.release.set()
    waiter = coalescing(lambda: None, shared, wait=5)(upstream)
    keys = coalesce.redis_keys(request(), shared.namespace)
    with redis.Redis(port=redis_server.port) as client:
        client.set(keys.lock, "holder")
        # Right token, right request, sound checksum: all a writer without the key can do.
        client.set(keys.answer("holder"), coalesce.encode(Answer(b"forged"), "holder", keys.digest))
        waiting = asyncio.ensure_future(waiter(request()))
        while not _metric(metrics, "gateway_cache_damaged_entries_total", tier="coalesced"):
            await asyncio.sleep(0.01)
        assert not waiting.done()
        client.delete(keys.lock)
        assert await waiting == upstream.answer and len(upstream.requests) == 1

    # Two processes with the key share a fetch: sealed answers verify.
    other = SharedRedis(
        CacheSettings(mode="redis", redis_url=redis_server.url, redis_hmac_key="h" * 40), Metrics()
    )
    held = HeldUpstream()
    first, second = (coalescing(lambda: None, s, wait=10)(held) for s in (shared, other))
    leader = asyncio.ensure_future(first(request(params=(("query", "shared"),))))
    while not held.requests:
        await asyncio.sleep(0.01)
    follower = asyncio.ensure_future(second(request(params=(("query", "shared"),))))
    with redis.Redis(port=redis_server.port) as client:
        shared_keys = coalesce.redis_keys(request(params=(("query", "shared"),)), shared.namespace)
        while not client.exists(shared_keys.waiters):
            await asyncio.sleep(0.01)
    held.release.set()
    assert await leader == await follower == held.answer and len(held.requests) == 1
    await other.aclose()


async def test_the_cache_redis_away_leaves_the_state_shared(
    tmp_path: Path, servers: list[RedisServer]
) -> None:
    cache_server = _server(tmp_path, "cache", "allkeys-lru", 4 << 20)
    state_server = _server(tmp_path, "state", "noeviction", 4 << 20)
    servers += [cache_server, state_server]
    settings = CacheSettings(mode="redis", redis_url=cache_server.url, redis_state_url=state_server.url)
    metrics = Metrics()
    shared = SharedRedis(settings, metrics)
    await shared.connect()
    try:
        cache_server.stop()
        tier = RedisTier(shared)
        assert await tier.get_many([f"gwc:{KEY}"]) == [None]
        assert not shared.cache.available and shared.available
        assert _metric(metrics, "gateway_redis_up") == 0  # one of the two is away
        limited = Principal(name="still-shared", limits=Limits(rate=Rate(per_second=0.01, burst=1)))
        await RateLimiter(Metrics(), shared).admit(limited)
        with redis.Redis(port=state_server.port) as client:
            assert client.exists(f"amp-gateway:{shared.namespace}:rate:still-shared")
        assert _metric(metrics, "gateway_redis_fallbacks_total", feature="rate") == 0
    finally:
        await shared.aclose()
