"""What sharing state on Redis costs one upstream fetch, in process (no HTTP, no upstream): the
coalescing and upstream-slot stages in front of a fake upstream answering 104 KB, sequential
fetches of distinct requests, against a real redis-server on loopback. CPU time per fetch
(process_time) and wall time, for:

- local:             the stages without Redis (the baseline, in the same run);
- redis:             with Redis, as shipped: a holder writes its answer only when another
                     process waits for it (here nobody does);
- redis, always written: the same, forcing the answer into Redis every time (what the gateway
                     did before; kept here to show what not writing saves).

Then what `cache.redis_hmac_key` costs a cache hit from Redis (issue 16): the cache's store
reading one entry that is in Redis and not in memory (MGET, HMAC check, codec check, promotion
into memory), with and without a key, for entries of several sizes (incompressible, so their
size is what is hashed).

    .venv/bin/python bench/bench_shared_state.py [--fetches 2000] [--hits 2000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import uvloop
from common import free_port
from support.redis_server import RedisServer
from support.stages import FakeUpstream, request

from gateway.config import CacheSettings, UpstreamSettings
from gateway.metrics import Metrics
from gateway.pipeline import coalesce
from gateway.pipeline.cache import codec
from gateway.pipeline.cache.tiers import HostTier, RedisTier, Store
from gateway.pipeline.host import HostStore
from gateway.pipeline.model import Answer, Handler
from gateway.pipeline.shared import SharedRedis
from gateway.pipeline.slots import workspace_slots

BODY = os.urandom(52_000).hex().encode()  # 104 KB, the pass-through benchmark's answer size


async def measure(handler: Handler, label: str, fetches: int) -> tuple[float, float]:
    for i in range(100):  # warm up
        await handler(request(params=(("query", f"warm-{label}-{i}"),)))
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(fetches):
        await handler(request(params=(("query", f"{label}-{i}-{wall}"),)))
    return (time.process_time() - cpu) / fetches * 1e6, (time.perf_counter() - wall) / fetches * 1e6


async def hit_from_redis(url: str, key: str | None, size: int, hits: int) -> tuple[float, float]:
    """CPU and wall µs of one hit from Redis of an entry of `size` bytes."""
    shared = SharedRedis(CacheSettings(mode="redis", redis_url=url, redis_hmac_key=key), Metrics(), timeout=5)
    await shared.connect()
    host = HostStore(tempfile.mkdtemp(prefix="bench-host-"), 64 << 20, create=True)
    store = Store(HostTier(host, time.time), RedisTier(shared), time.time)
    name = f"gwc:{size:040x}"
    store.put(
        name, codec.entry(codec.KIND_RESPONSE, time.time() + 3600, 1, os.urandom(size), compressed=True)
    )
    assert store.redis is not None
    await store.redis.flush()
    try:
        for _ in range(100):  # warm up
            store.memory.delete(name)
            assert await store.get(name) is not None
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(hits):
            store.memory.delete(name)
            await store.get(name)
        return (time.process_time() - cpu) / hits * 1e6, (time.perf_counter() - wall) / hits * 1e6
    finally:
        await store.aclose()
        host.close()
        shutil.rmtree(host.path, ignore_errors=True)
        await shared.aclose()


async def hits_table(url: str, hits: int) -> None:
    print(f"\n{hits} cache hits from Redis (not in memory; fewer of large entries), best of 3 rounds:")
    print("| entry | CPU µs / hit, no key | with HMAC key | HMAC's share | wall µs, no key | with key |")
    print("|---|---|---|---|---|---|")
    for size in (4_000, 32_000, 256_000, 1_000_000, 4_000_000):
        rounds = max(50, hits * 32_000 // max(size, 32_000))
        plain, keyed = [], []
        for _ in range(3):  # interleaved, so that both see the same machine
            plain.append(await hit_from_redis(url, None, size, rounds))
            keyed.append(await hit_from_redis(url, "k" * 64, size, rounds))
        p_cpu, k_cpu = min(r[0] for r in plain), min(r[0] for r in keyed)
        p_wall, k_wall = min(r[1] for r in plain), min(r[1] for r in keyed)
        print(
            f"| {size / 1000:g} KB | {p_cpu:.0f} | {k_cpu:.0f} | +{k_cpu - p_cpu:.0f} µs "
            f"({(k_cpu - p_cpu) / k_cpu:.0%}) | {p_wall:.0f} | {k_wall:.0f} |"
        )


async def main(fetches: int, hits: int) -> None:
    server = RedisServer(free_port(), Path(tempfile.mkdtemp(prefix="bench-redis-"))).start()
    shared = SharedRedis(CacheSettings(mode="off", redis_url=server.url), Metrics())
    await shared.connect()
    upstream = FakeUpstream(Answer(BODY))
    shipped = coalesce._SCRIPTS["alone"]

    def stages(with_redis: bool) -> Handler:
        redis = shared if with_redis else None
        slots = workspace_slots(UpstreamSettings(), Metrics(), redis)(upstream)
        return coalesce.coalescing(lambda: None, redis, wait=5)(slots)

    results: dict[str, list[tuple[float, float]]] = {}
    try:
        for _ in range(2):
            for label, with_redis, alone in (
                ("local", False, shipped),
                ("redis", True, shipped),
                ("redis, always written", True, "return 0"),
            ):
                coalesce._SCRIPTS["alone"] = alone  # read when the stage is built
                results.setdefault(label, []).append(await measure(stages(with_redis), label, fetches))
        coalesce._SCRIPTS["alone"] = shipped
        report(fetches, results)
        if hits:
            await hits_table(server.url, hits)
    finally:
        coalesce._SCRIPTS["alone"] = shipped
        await shared.aclose()
        server.stop()


def report(fetches: int, results: dict[str, list[tuple[float, float]]]) -> None:
    local_cpu = min(cpu for cpu, _ in results["local"])
    print(f"{fetches} sequential fetches of 104 KB answers, best of 2 rounds:")
    print("| stages | CPU µs / fetch | wall µs / fetch | CPU vs local |")
    print("|---|---|---|---|")
    for label, runs in results.items():
        cpu, wall = min(r[0] for r in runs), min(r[1] for r in runs)
        print(f"| {label} | {cpu:.0f} | {wall:.0f} | +{cpu - local_cpu:.0f} µs |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--fetches", type=int, default=2000)
    parser.add_argument("--hits", type=int, default=2000, help="0: skip the HMAC table")
    args = parser.parse_args()
    uvloop.run(main(args.fetches, args.hits))
