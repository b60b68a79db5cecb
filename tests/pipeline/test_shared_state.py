"""The stages that share state through Redis, each alone, with two `SharedRedis` connections on
one real Redis standing for two processes (a redis-server, and a 3-node Redis Cluster):
coalescing, upstream slots, rate limits and cache entries, and what each does when Redis is away
or its content is damaged."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from support.netutil import free_port
from support.redis_cluster import RedisClusterServer
from support.redis_server import RedisServer
from support.stages import PRINCIPAL, WORKSPACE, BrokenUpstream, SlowUpstream, request

from gateway.config import CacheSettings, Limits, Principal, Rate, UpstreamSettings
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline import coalesce, slots
from gateway.pipeline.cache.tiers import RedisTier
from gateway.pipeline.coalesce import coalescing
from gateway.pipeline.model import Answer
from gateway.pipeline.rate import RateLimiter
from gateway.pipeline.shared import SharedRedis
from gateway.pipeline.slots import workspace_slots


@pytest.fixture(params=["redis", "cluster"])
async def two_processes(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[SharedRedis, SharedRedis]]:
    """Two processes' connections to one real Redis: a single server, then a 3-node cluster."""
    server: RedisServer | RedisClusterServer
    if request.param == "cluster":
        server = RedisClusterServer(tmp_path).start()
    else:
        server = RedisServer(free_port(), tmp_path).start()
    settings = CacheSettings(mode="off", redis_url=server.url, redis_cluster=request.param == "cluster")
    first, second = SharedRedis(settings, Metrics()), SharedRedis(settings, Metrics())
    await first.connect()
    await second.connect()
    yield first, second
    await first.aclose()
    await second.aclose()
    server.stop()


def _answers(client: redis.Redis | redis.RedisCluster, keys: coalesce.RoundKeys) -> int:
    """How many answers are in Redis for these keys (any holder's)."""
    pattern = f"{keys.base}:answer:*"
    if isinstance(client, redis.RedisCluster):
        return len(client.keys(pattern, target_nodes=redis.RedisCluster.ALL_NODES))
    return len(client.keys(pattern))


def _direct(shared: SharedRedis) -> redis.Redis | redis.RedisCluster:
    """The test's own connection to the Redis the processes share."""
    if shared.cluster:
        return redis.RedisCluster.from_url(shared.url)
    return redis.Redis.from_url(shared.url)


async def test_identical_requests_in_two_processes_share_one_fetch_and_its_error(
    two_processes: tuple[SharedRedis, SharedRedis],
) -> None:
    for error in (None, GatewayError("execution", "query timed out in expression evaluation", 422)):
        upstream = SlowUpstream(0.3, error)
        remote = Metrics().coalesced_across_processes
        handlers = [
            coalescing(lambda: None, shared, wait=5, on_shared_remotely=remote.inc)(upstream)
            for shared in two_processes
        ]
        asked = request(params=(("query", f"up{error is not None}"),))
        outcomes = await asyncio.gather(*(h(asked) for h in handlers), return_exceptions=True)
        assert len(upstream.requests) == 1 and remote._value.get() == 1
        if error is None:
            assert outcomes[0] == outcomes[1] == upstream.answer
        else:
            assert all(isinstance(o, GatewayError) and o.message == error.message for o in outcomes)
            assert {o.status for o in outcomes if isinstance(o, GatewayError)} == {422}


async def test_different_label_scopes_never_share(two_processes: tuple[SharedRedis, SharedRedis]) -> None:
    upstream = SlowUpstream(0.2)
    first, second = (coalescing(lambda: None, shared, wait=5)(upstream) for shared in two_processes)
    scoped = request(principal=Principal(name="b", enforce=(("team", "b"),)))
    await asyncio.gather(first(request(principal=PRINCIPAL)), second(scoped))
    assert len(upstream.requests) == 2


async def test_a_damaged_or_foreign_answer_is_not_taken(
    two_processes: tuple[SharedRedis, SharedRedis],
) -> None:
    answer = Answer(b"{}")
    blob = coalesce.encode(answer, "token-1", "digest-1")
    assert coalesce.decode(blob, "token-1", "digest-1") == answer
    assert coalesce.decode(blob, "token-2", "digest-1") is None  # another round
    assert coalesce.decode(blob, "token-1", "digest-2") is None  # another request
    damaged = blob[:-1] + bytes([blob[-1] ^ 1])
    assert coalesce.decode(damaged, "token-1", "digest-1") is None

    # A waiter reads only its holder's answer, takes none of another round (even where its
    # holder's should be) nor a damaged one, and when the holder goes without leaving one for
    # it, fetches for itself.
    upstream = SlowUpstream(0.01)
    waiter = coalescing(lambda: None, two_processes[1], wait=5)(upstream)
    keys = coalesce.redis_keys(request(), two_processes[1].namespace)
    with _direct(two_processes[0]) as client:
        client.set(keys.lock, "holder")
        client.set(keys.answer("earlier"), coalesce.encode(Answer(b"old"), "earlier", keys.digest))
        client.set(keys.answer("holder"), coalesce.encode(Answer(b"old"), "earlier", keys.digest))
        waiting = asyncio.ensure_future(waiter(request()))
        await asyncio.sleep(0.2)
        client.set(keys.answer("holder"), damaged)
        await asyncio.sleep(0.2)
        assert not waiting.done() and not upstream.requests
        client.delete(keys.lock)
        assert await waiting == upstream.answer and len(upstream.requests) == 1


async def test_without_redis_each_process_fetches_for_itself(redis_server: RedisServer) -> None:
    settings = CacheSettings(mode="off", redis_url=redis_server.url)
    metrics = Metrics()
    shared = SharedRedis(settings, metrics)
    redis_server.stop()
    upstream = SlowUpstream(0.05)
    handler = coalescing(lambda: None, shared, wait=5)(upstream)
    assert await handler(request()) == upstream.answer
    assert metrics.redis_up()._value.get() == 0
    await shared.aclose()


async def test_upstream_slots_hold_across_processes(two_processes: tuple[SharedRedis, SharedRedis]) -> None:
    settings = UpstreamSettings(max_concurrency=2, queue_timeout=5)
    upstream = SlowUpstream(0.2)
    handlers = [workspace_slots(settings, Metrics(), shared)(upstream) for shared in two_processes]
    await asyncio.gather(*(handlers[i % 2](request()) for i in range(8)))
    assert len(upstream.requests) == 8 and upstream.most_in_flight == 2

    # None freed up within the queue deadline: 429, and the slot count is not exceeded.
    tight = UpstreamSettings(max_concurrency=1, queue_timeout=0.1)
    slow = SlowUpstream(0.5)
    first, second = (workspace_slots(tight, Metrics(), shared)(slow) for shared in two_processes)
    outcomes = await asyncio.gather(first(request()), second(request()), return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, GatewayError)]
    assert len(refused) == 1 and refused[0].status == 429 and slow.most_in_flight == 1


async def test_a_rate_limit_holds_across_processes(two_processes: tuple[SharedRedis, SharedRedis]) -> None:
    limited = Principal(name="shared-rate", limits=Limits(rate=Rate(per_second=0.01, burst=3)))
    limiters = [RateLimiter(Metrics(), shared) for shared in two_processes]
    outcomes = []
    for i in range(7):
        try:
            await limiters[i % 2].admit(limited)
            outcomes.append(200)
        except GatewayError as err:
            outcomes.append(err.status)
            assert int(err.headers["Retry-After"]) > 1
    assert outcomes == [200] * 3 + [429] * 4


async def test_cache_entries_in_many_slots_are_read_in_one_call(
    two_processes: tuple[SharedRedis, SharedRedis],
) -> None:
    writer, reader = (RedisTier(shared) for shared in two_processes)
    keys = [f"gwc:{i:040x}" for i in range(20)]  # spread over the cluster's slots
    for i, key in enumerate(keys):
        writer.put(key, f"entry {i}".encode(), 60)
    await writer.flush()
    assert await reader.get_many([*keys, "gwc:absent"]) == [f"entry {i}".encode() for i in range(20)] + [None]
    assert two_processes[1].available


async def test_a_living_holder_keeps_its_lock_and_a_dead_ones_lock_ends(
    two_processes: tuple[SharedRedis, SharedRedis], short_leases: float
) -> None:
    # The holder's fetch lasts three leases: the waiter still waits for its answer.
    upstream = SlowUpstream(3 * short_leases)
    first, second = (coalescing(lambda: None, shared, wait=10)(upstream) for shared in two_processes)
    outcomes = await asyncio.gather(first(request()), second(request()))
    assert len(upstream.requests) == 1 and outcomes[0] == outcomes[1]

    # A holder that died (its lock is never renewed): the waiter fetches itself once it ends.
    lock = coalesce.redis_keys(request(), two_processes[1].namespace).lock
    with _direct(two_processes[0]) as client:
        client.set(lock, "dead-holder", px=int(short_leases * 1000))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await second(request()) == upstream.answer
    assert len(upstream.requests) == 2 and loop.time() - started < 10 * short_leases


async def test_a_living_holder_keeps_its_slot_and_a_dead_ones_slot_comes_back(
    two_processes: tuple[SharedRedis, SharedRedis], short_leases: float
) -> None:
    one = UpstreamSettings(max_concurrency=1, queue_timeout=20)
    upstream = SlowUpstream(3 * short_leases)
    first, second = (workspace_slots(one, Metrics(), shared)(upstream) for shared in two_processes)
    await asyncio.gather(first(request()), second(request()))
    assert upstream.most_in_flight == 1 and len(upstream.requests) == 2

    # A holder that died holding the only slot: it comes back when the lease ends.
    with _direct(two_processes[0]) as client:
        seconds, micros = client.time()
        now_ms = seconds * 1000 + micros // 1000
        key = slots.RedisSlots(two_processes[1]).key(f"workspace:{WORKSPACE.fingerprint}")
        client.zadd(key, {"dead-holder": now_ms + int(short_leases * 1000)})
    quick = SlowUpstream(0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await workspace_slots(one, Metrics(), two_processes[1])(quick)(request())
    waited = loop.time() - started
    assert len(quick.requests) == 1 and short_leases * 0.5 < waited < 10 * short_leases


async def test_a_fetch_nobody_waits_for_leaves_nothing_in_redis(
    two_processes: tuple[SharedRedis, SharedRedis],
) -> None:
    upstream = SlowUpstream(0.01)
    handler = coalescing(lambda: None, two_processes[0], wait=5)(upstream)
    alone = request(params=(("query", "alone"),))
    assert await handler(alone) == upstream.answer
    with _direct(two_processes[0]) as client:
        keys = coalesce.redis_keys(alone, two_processes[0].namespace)
        assert client.exists(keys.lock) == client.exists(keys.waiters) == 0
        assert _answers(client, keys) == 0

    # With a waiter, the answer is written for it, and the lock and the count are gone after.
    slow = SlowUpstream(0.3)
    first, second = (coalescing(lambda: None, shared, wait=5)(slow) for shared in two_processes)
    await asyncio.gather(first(request()), second(request()))
    assert len(slow.requests) == 1
    keys = coalesce.redis_keys(request(), two_processes[0].namespace)
    with _direct(two_processes[0]) as client:
        assert client.exists(keys.lock) == client.exists(keys.waiters) == 0
        assert _answers(client, keys) == 1


async def test_a_holder_that_fails_unexpectedly_lets_go_at_once(
    two_processes: tuple[SharedRedis, SharedRedis],
) -> None:
    broken, fine = BrokenUpstream(0.3), SlowUpstream(0.01)
    first = coalescing(lambda: None, two_processes[0], wait=30)(broken)
    second = coalescing(lambda: None, two_processes[1], wait=30)(fine)
    loop = asyncio.get_running_loop()
    started = loop.time()
    holder = asyncio.ensure_future(first(request()))
    # The broken one holds the lock before the other asks (else the other may lead instead).
    keys = coalesce.redis_keys(request(), two_processes[0].namespace)
    with _direct(two_processes[0]) as client:
        while not client.exists(keys.lock) and loop.time() - started < 5:
            await asyncio.sleep(0.005)
    outcomes = await asyncio.gather(holder, second(request()), return_exceptions=True)
    assert isinstance(outcomes[0], RuntimeError) and outcomes[1] == fine.answer
    assert loop.time() - started < 3  # not the lease (10 s), nor the wait (30 s)


async def test_an_answer_too_large_to_share_is_fetched_by_each(
    two_processes: tuple[SharedRedis, SharedRedis], monkeypatch: pytest.MonkeyPatch
) -> None:
    for shared in two_processes:
        monkeypatch.setattr(shared, "max_entry_bytes", 64)
    upstream = SlowUpstream(0.3)
    first, second = (coalescing(lambda: None, shared, wait=30)(upstream) for shared in two_processes)
    outcomes = await asyncio.gather(first(request()), second(request()))
    assert outcomes[0] == outcomes[1] == upstream.answer and len(upstream.requests) == 2
    assert all(shared.available for shared in two_processes)


async def test_one_outage_backs_off_once_and_slots_are_given_back_meanwhile(
    two_processes: tuple[SharedRedis, SharedRedis],
) -> None:
    shared = two_processes[0]
    key = "amp-gateway:slots:{ws-backoff}"
    redis_slots = slots.RedisSlots(shared)
    holder = await redis_slots.acquire(key, 1, 1)
    assert isinstance(holder, str)
    for _ in range(8):  # eight calls under way when Redis went away: one back-off of 1 s
        shared.failed("test", TimeoutError())
    assert not shared.available
    await asyncio.sleep(1.1)
    assert shared.available
    shared.failed("test", TimeoutError())
    assert not shared.available
    await redis_slots.release(key, holder)  # given back even while backing off
    with _direct(shared) as client:
        assert client.zcard(key) == 0
    assert shared.available  # and that call succeeding ends the back-off


@pytest.mark.parametrize(("per_second", "burst"), [(50.0, 5.0), (20.0, 40.0), (7.5, 1.0)])
async def test_a_shared_rate_keeps_both_its_rate_and_its_burst(
    two_processes: tuple[SharedRedis, SharedRedis], per_second: float, burst: float
) -> None:
    limited = Principal(name=f"rate-{per_second}-{burst}", limits=Limits(rate=Rate(per_second, burst)))
    limiters = [RateLimiter(Metrics(), shared) for shared in two_processes]
    loop = asyncio.get_running_loop()
    admitted, started, i = 0, loop.time(), 0
    while loop.time() - started < 1.0:
        try:
            await limiters[i % 2].admit(limited)
            admitted += 1
        except GatewayError:
            pass
        i += 1
    elapsed = loop.time() - started
    # A token bucket: the burst at once, then per_second (a request's worth of slack each way).
    expected = burst + per_second * elapsed
    assert expected - per_second * 0.1 - 1 <= admitted <= expected + 1, (admitted, expected)
    assert all(shared.available for shared in two_processes)


async def test_a_principals_concurrency_holds_across_processes(
    two_processes: tuple[SharedRedis, SharedRedis],
) -> None:
    limited = Principal(name="one-at-a-time", limits=Limits(max_concurrency=1, queue_timeout=10))
    upstream = SlowUpstream(0.2)
    handlers = [slots.principal_slots(Metrics(), shared)(upstream) for shared in two_processes]
    await asyncio.gather(*(handlers[i % 2](request(principal=limited)) for i in range(4)))
    assert len(upstream.requests) == 4 and upstream.most_in_flight == 1


async def test_gateways_with_the_same_workspace_id_elsewhere_share_nothing(
    two_processes: tuple[SharedRedis, SharedRedis],
) -> None:
    elsewhere = dataclasses.replace(
        WORKSPACE, url="https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1"
    )
    assert elsewhere.id == WORKSPACE.id and elsewhere.fingerprint != WORKSPACE.fingerprint
    upstream = SlowUpstream(0.3)
    first, second = (coalescing(lambda: None, shared, wait=5)(upstream) for shared in two_processes)
    await asyncio.gather(first(request()), second(request(workspace=elsewhere)))
    assert len(upstream.requests) == 2


async def test_a_holder_whose_process_backs_off_meanwhile_still_hands_over(
    two_processes: tuple[SharedRedis, SharedRedis],
) -> None:
    upstream = SlowUpstream(0.4)
    first, second = (coalescing(lambda: None, shared, wait=30)(upstream) for shared in two_processes)
    loop = asyncio.get_running_loop()
    started = loop.time()
    leader = asyncio.ensure_future(first(request()))
    await asyncio.sleep(0.1)
    two_processes[0].failed("test", TimeoutError())  # a blip in the holder's process
    outcomes = await asyncio.gather(leader, second(request()))
    assert outcomes[0] == outcomes[1] and len(upstream.requests) == 1
    assert loop.time() - started < 3  # not the lease's 10 s
