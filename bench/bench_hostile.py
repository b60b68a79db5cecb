"""Hostile load against a gateway process: how long /-/healthy waits while hostile requests run,
and the process's RSS under a flood of distinct maximal requests (issue 9).

    .venv/bin/python bench/bench_hostile.py [--seconds 10] [--clients 8]

The gateway runs as `amp-gateway serve` in its own process, memory cache on, over a backfilled
Prometheus (no SigV4: the stand-in is not the point here). The health probe runs every 20 ms
from its own thread and client; the same probe without load is the baseline of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import string
import threading
import time

import httpx
import psutil
from common import gateway_process, prometheus

# Memory the gateway may use beyond its start (cache.memory_bytes and the memos' budgets).
BUDGET_MIB = {"results cache (default)": 256, "validation memo": 16, "parse memo": 16, "query analyses": 8}


def hostile_requests(rng: random.Random, start: int, end: int) -> list[tuple[str, dict[str, str]]]:
    unique = "".join(rng.choices(string.ascii_lowercase, k=12))
    long_chain = " + ".join(f'up{{job="{unique}{i}"}}' for i in range(500))
    regex = "|".join(f"host-{unique}-{i}.example.com:9100" for i in range(300))
    window = {"start": str(start), "end": str(end), "step": "15"}
    return [
        ("/api/v1/query_range", {"query": long_chain, **window}),  # maximal: 512 operators
        ("/api/v1/query_range", {"query": "(" * 5000 + "up" + ")" * 5000, **window}),  # past the depth bound
        ("/api/v1/query_range", {"query": f'count(up{{instance=~"{regex}"}})', **window}),  # 8 KB regex
        ("/api/v1/query_range", {"query": 'up{a=~"(a+)+$"}', **window}),  # backtracking bomb elsewhere
        ("/api/v1/query", {"query": "sum(" * 60 + "up" + ")" * 60}),
        ("/api/v1/series", {"match[]": f'{{__name__=~".+",x="{unique}"}}'}),
        ("/api/v1/query", {"query": "x" * 16385}),  # past the length bound
        ("/panels/query.json", {"query": long_chain[:6000]}),
    ]


def probe(url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            began = time.perf_counter()
            client.get(f"{url}/-/healthy")
            out.append((time.perf_counter() - began) * 1000)
            time.sleep(0.02)


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    return f"n={len(ordered)} p50 {statistics.median(ordered):.2f} ms, p99 {p99:.2f} ms, max {ordered[-1]:.2f} ms"


async def hammer(url: str, seconds: float, clients: int, start: int, end: int) -> int:
    deadline = time.monotonic() + seconds
    sent = 0

    async def one(seed: int) -> None:
        nonlocal sent
        rng = random.Random(seed)
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            while time.monotonic() < deadline:
                for path, params in hostile_requests(rng, start, end):
                    await client.post(path, data=params) if path.startswith("/api") else await client.get(
                        path, params=params
                    )
                    sent += 1

    await asyncio.gather(*(one(i) for i in range(clients)))
    return sent


async def flood(url: str, seconds: float, clients: int, pid: int, rss: list[float]) -> int:
    """Distinct maximal requests: every query text new, 4 KB (the parse memo's largest) and 16 KB."""
    deadline = time.monotonic() + seconds
    sent = 0
    process = psutil.Process(pid)

    async def sample() -> None:
        while time.monotonic() < deadline:
            rss.append(process.memory_info().rss / 2**20)
            await asyncio.sleep(0.5)

    async def one(seed: int) -> None:
        nonlocal sent
        rng = random.Random(1000 + seed)
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            while time.monotonic() < deadline:
                for size in (4000, 16000):
                    value = "".join(rng.choices(string.ascii_letters, k=size - 40))
                    await client.post("/api/v1/query", data={"query": f'up{{a="{value}"}}', "time": "100"})
                    sent += 1

    await asyncio.gather(sample(), *(one(i) for i in range(clients)))
    return sent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    with prometheus() as prom:
        env = {"GATEWAY_UPSTREAM_URL": prom.url, "GATEWAY_SIGV4": "false", "GATEWAY_CACHE": "memory"}
        with gateway_process(env) as gateway:
            end = int(prom.data_end) - 600
            start = end - 3600
            quiet: list[float] = []
            stop = threading.Event()
            thread = threading.Thread(target=probe, args=(gateway.url, stop, quiet))
            thread.start()
            time.sleep(args.seconds / 2)
            stop.set()
            thread.join()
            print(f"/-/healthy, no load:           {summary(quiet)}")

            loaded: list[float] = []
            stop = threading.Event()
            thread = threading.Thread(target=probe, args=(gateway.url, stop, loaded))
            thread.start()
            sent = asyncio.run(hammer(gateway.url, args.seconds, args.clients, start, end))
            stop.set()
            thread.join()
            print(f"/-/healthy, {args.clients} hostile clients: {summary(loaded)} ({sent} hostile requests)")
            print(f"worst probe under load / worst without: {max(loaded) / max(quiet):.1f}x")

            process = psutil.Process(gateway.pid)
            before = process.memory_info().rss / 2**20
            rss: list[float] = []
            sent = asyncio.run(flood(gateway.url, args.seconds * 2, args.clients, gateway.pid, rss))
            after = process.memory_info().rss / 2**20
            budget = sum(BUDGET_MIB.values())
            print(
                f"RSS under a flood of {sent} distinct 4 KB and 16 KB queries: start {before:.0f} MiB, "
                f"peak {max(rss):.0f} MiB, end {after:.0f} MiB; growth {max(rss) - before:.0f} MiB "
                f"(budget {budget} MiB: {', '.join(f'{k} {v}' for k, v in BUDGET_MIB.items())})"
            )


if __name__ == "__main__":
    main()
