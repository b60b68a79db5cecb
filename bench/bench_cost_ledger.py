"""What the cost ledger (gateway/pipeline/cost) costs, on the host's store (a real LMDB
environment), in process:

- charge:  CPU per `Ledger.charge` of a Grafana-shaped request (principal, dashboard, panel, org,
           user), without its flush, and with this worker's flushes amortized at a given rate of
           fetches per second (one flush a second, as the ledger does); and per charge if every
           charge were written through (a flush each: what batching avoids);
- flush:   CPU per flush of one second's charges;
- read:    a range's rows (24 h by the hour, 31 d by the day) and its points;
- a month: the records a month of such traffic leaves in the host's store (those whose bucket
           would still be kept at its end: the store's own expiry runs on the real clock), and
           the largest record's bytes.

    .venv/bin/python bench/bench_cost_ledger.py [--charges 50000] [--per-second 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time

from common import ROOT  # noqa: F401  (puts tests/ on the path)
from support.stages import request

from gateway.config import Principal
from gateway.config.cost import Budget, CostSettings
from gateway.metrics import Metrics
from gateway.pipeline.cost.ledger import Ledger
from gateway.pipeline.cost.periods import DAY, HOUR, KEEP, MAX_RANGE
from gateway.pipeline.host import HostStore
from gateway.pipeline.model import Origin, Request

START = 1_706_745_600.0  # 2024-02-01 00:00 UTC
PRINCIPALS = [f"team-{i}" for i in range(10)]
DASHBOARDS = [f"dash{i:03d}" for i in range(60)]
USERS = [f"user{i}" for i in range(40)]
STEPS = {"h": HOUR, "d": DAY}


def grafana_requests(count: int, seed: int = 1) -> list[Request]:
    """Requests as Grafana's panels send them: each dashboard belongs to a principal, has 8
    panels, and is opened by a few users of 3 orgs."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        board = rng.randrange(len(DASHBOARDS))
        origin = Origin(
            dashboard=DASHBOARDS[board],
            panel=str(rng.randrange(1, 9)),
            org=str(board % 3 + 1),
            user=rng.choice(USERS),
            dashboard_title=f"Dashboard {board}",
            panel_title="CPU by node",
        )
        principal = Principal(name=PRINCIPALS[board % len(PRINCIPALS)])
        out.append(request("query_range", principal=principal, origin=origin))
    return out


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def new_ledger(path: str, clock: Clock, top: int = 20) -> tuple[Ledger, HostStore]:
    store = HostStore(path, 256 << 20)
    budgets = (Budget("principal", "team-1", 10**12, "day"), Budget("dashboard", "dash007", 10**12, "month"))
    settings = CostSettings(top=top, budgets=budgets)
    return Ledger(settings, store, None, Metrics(), clock, flush_every=3600), store


def store_path() -> str:
    path = tempfile.mkdtemp(prefix="bench-cost-")
    os.chmod(path, 0o700)
    HostStore.make(path, 256 << 20)
    return path


async def charges(requests: list[Request], per_second: int, flush_each: bool) -> tuple[float, float, float]:
    """µs of CPU per charge alone, per charge with a flush every `per_second` charges (or each),
    and ms per flush."""
    clock = Clock()
    ledger, store = new_ledger(store_path(), clock)
    charge_cpu = flush_cpu = 0.0
    flushes = 0
    for i, asked in enumerate(requests):
        started = time.process_time()
        await ledger.charge(asked, 1_000_000 + i)
        charge_cpu += time.process_time() - started
        if flush_each or (i + 1) % per_second == 0:
            clock.now += 1.0
            started = time.process_time()
            await ledger.flush()
            flush_cpu += time.process_time() - started
            flushes += 1
    await ledger.aclose()
    store.close()
    n = len(requests)
    return charge_cpu / n * 1e6, (charge_cpu + flush_cpu) / n * 1e6, flush_cpu / max(1, flushes) * 1e3


async def reads(requests: list[Request]) -> dict[str, float]:
    """ms per read of a day's and a month's rows and points, everyone's, with a month of data."""
    clock = Clock()
    ledger, store = new_ledger(store_path(), clock)
    for i, asked in enumerate(requests):
        clock.now = START + i * (31 * DAY / len(requests))
        await ledger.charge(asked, 1_000_000)
    await ledger.flush()
    out = {}
    for name, call in (
        ("rows 24h by dashboard", lambda: ledger.rows("dashboard", DAY, None)),
        ("rows 31d by panel", lambda: ledger.rows("panel", MAX_RANGE, None)),
        ("points 24h", lambda: ledger.over_time(DAY, None)),
        ("points 31d, one principal", lambda: ledger.over_time(MAX_RANGE, "team-1")),
    ):
        started = time.perf_counter()
        for _ in range(20):
            await call()
        out[name] = (time.perf_counter() - started) / 20 * 1e3
    await ledger.aclose()
    store.close()
    return out


async def a_month(per_hour: int) -> tuple[int, int, int]:
    """Records kept at the end of a month of traffic (charges flushed every simulated minute),
    their bytes, and the largest record's bytes."""
    clock = Clock()
    path = store_path()
    ledger, store = new_ledger(path, clock)
    traffic = grafana_requests(per_hour)
    for hour in range(31 * 24):
        for minute in range(60):
            clock.now = START + hour * HOUR + minute * 60
            for asked in traffic[minute::60]:
                await ledger.charge(asked, 1_000_000)
            await ledger.flush()
    end = clock.now
    await ledger.aclose()
    kept = 0
    stored = largest = 0
    keys = store.state_keys()
    values = store.peek_state(keys) or []
    for key, value in zip(keys, values, strict=True):
        parts = key.split(":")
        if parts[1] == "budget":
            per, start = parts[2], int(parts[3])
            live = start + (DAY if per == "day" else 31 * DAY) + DAY > end
        else:
            step = STEPS[parts[1]]
            live = int(parts[2]) + KEEP[step] > end
        if live and value is not None:
            kept += 1
            stored += len(value[0])
            largest = max(largest, len(value[0]))
    store.close()
    return kept, stored, largest


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--charges", type=int, default=50_000)
    parser.add_argument("--per-second", type=int, default=1000, help="fetches a worker charges a second")
    parser.add_argument("--per-hour", type=int, default=600, help="charges per simulated hour (a month)")
    args = parser.parse_args()
    requests = grafana_requests(args.charges)
    best = min([await charges(requests, args.per_second, False) for _ in range(3)], key=lambda r: r[1])
    print(f"charge alone:                         {best[0]:6.2f} µs CPU")
    print(
        f"charge + flushes ({args.per_second}/s, 1 flush/s): {best[1]:6.2f} µs CPU  (a flush: {best[2]:.2f} ms)"
    )
    through = await charges(requests[:5000], 1, True)
    print(f"charge written through (flush each):  {through[1]:6.2f} µs CPU")
    for name, ms in (await reads(requests)).items():
        print(f"{name + ':':37s} {ms:6.2f} ms")
    kept, stored, largest = await a_month(args.per_hour)
    print(
        f"a month ({args.per_hour} charges/h, {len(PRINCIPALS)} principals, {len(DASHBOARDS)} dashboards x 8 panels,"
        f" {len(USERS)} users): {kept} records kept, {stored / 1e6:.2f} MB, largest {largest / 1e3:.1f} KB"
    )


if __name__ == "__main__":
    asyncio.run(main())
