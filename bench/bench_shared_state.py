"""What sharing state on Redis costs one upstream fetch, in process (no HTTP, no upstream): the
coalescing and upstream-slot stages in front of a fake upstream answering 104 KB, sequential
fetches of distinct requests, against a real redis-server on loopback. CPU time per fetch
(process_time) and wall time, for:

- local:             the stages without Redis (the baseline, in the same run);
- redis:             with Redis, as shipped: a holder writes its answer only when another
                     process waits for it (here nobody does);
- redis, always written: the same, forcing the answer into Redis every time (what the gateway
                     did before; kept here to show what not writing saves).

    .venv/bin/python bench/bench_shared_state.py [--fetches 2000]
"""

from __future__ import annotations

import argparse
import os
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


async def main(fetches: int) -> None:
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
    finally:
        coalesce._SCRIPTS["alone"] = shipped
        await shared.aclose()
        server.stop()
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
    uvloop.run(main(parser.parse_args().fetches))
