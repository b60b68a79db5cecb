"""The cost ledger on the host's store (a real LMDB environment): rows by every dimension, each
principal's own view, names past `top`, budgets' exact counts and their periods, points over
time, and what a failing store or a second worker sees."""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.synchronize
import time
from pathlib import Path

from support.stages import WORKSPACE

from gateway.config.cost import Budget, CostSettings
from gateway.metrics import Metrics
from gateway.pipeline.cost.ledger import Ledger, Row
from gateway.pipeline.cost.periods import DAY, HOUR
from gateway.pipeline.host import HostStore

from .conftest import BOUND, OTHER_WORKSPACE, T0, Clock, ask, ledger_on

PRICE = CostSettings().price_per_billion_samples

OVERVIEW_CPU = ask(
    "team-a", dashboard="d1", panel="2", org="1", user="alice", dashboard_title="Overview", panel_title="CPU"
)
OVERVIEW_MEMORY = ask("team-a", dashboard="d1", panel="3", org="1", user="bob", dashboard_title="Overview")
DISKS = ask(
    "team-b", OTHER_WORKSPACE, dashboard="d2", panel="1", org="2", user="carol", dashboard_title="Disks"
)
UNNAMED = ask("team-b")


def table(rows: list[Row]) -> list[tuple[str, int, int, str, str]]:
    return [(r.key, r.samples, r.saved_samples, r.title, r.group) for r in rows]


async def charge_grafana_traffic(ledger: Ledger) -> None:
    await ledger.charge(OVERVIEW_CPU, 100)
    await ledger.charge(OVERVIEW_MEMORY, 50)
    await ledger.charge(DISKS, 30)
    await ledger.charge(UNNAMED, 7)
    await ledger.saved(OVERVIEW_CPU, 40)


async def test_each_dimension_says_who_spent_what(host: HostStore, clock: Clock) -> None:
    ledger = ledger_on(host, clock)
    await charge_grafana_traffic(ledger)
    expected = {
        "workspace": [("ws-1", 157, 40, "", ""), ("ws-2", 30, 0, "", "")],
        "principal": [("team-a", 150, 40, "", ""), ("team-b", 37, 0, "", "")],
        "dashboard": [
            ("d1", 150, 40, "Overview", ""),
            ("d2", 30, 0, "Disks", ""),
            ("-", 7, 0, "", "unnamed"),
        ],
        "panel": [
            ("d1/2", 100, 40, "CPU", ""),
            ("d1/3", 50, 0, "", ""),
            ("d2/1", 30, 0, "", ""),
            ("-", 7, 0, "", "unnamed"),
        ],
        "org": [("1", 150, 40, "", ""), ("2", 30, 0, "", ""), ("-", 7, 0, "", "unnamed")],
        "user": [
            ("alice", 100, 40, "", ""),
            ("bob", 50, 0, "", ""),
            ("carol", 30, 0, "", ""),
            ("-", 7, 0, "", "unnamed"),
        ],
    }
    for by, rows in expected.items():
        found = await ledger.rows(by, 24 * HOUR, None)
        assert table(found) == rows, by
        assert [r.cost for r in found] == [r[1] * PRICE / 1e9 for r in rows]


async def test_a_principal_has_its_own_totals(host: HostStore, clock: Clock) -> None:
    ledger = ledger_on(host, clock)
    await charge_grafana_traffic(ledger)
    assert table(await ledger.rows("dashboard", 24 * HOUR, "team-b")) == [
        ("d2", 30, 0, "Disks", ""),
        ("-", 7, 0, "", "unnamed"),
    ]
    assert table(await ledger.rows("user", 24 * HOUR, "team-a")) == [
        ("alice", 100, 40, "", ""),
        ("bob", 50, 0, "", ""),
    ]
    assert table(await ledger.rows("principal", 24 * HOUR, "team-a")) == [("team-a", 150, 40, "", "")]
    assert await ledger.rows("principal", 24 * HOUR, "nobody") == []


async def test_past_top_names_count_as_other_and_a_heavier_newcomer_takes_a_row(
    host: HostStore, clock: Clock
) -> None:
    ledger = ledger_on(host, clock, top=2)

    async def flush_charges(*charges: tuple[str, int]) -> list[tuple[str, int, int, str, str]]:
        for dashboard, samples in charges:
            await ledger.charge(ask(dashboard=dashboard), samples)
        await ledger.flush()
        return table(await ledger.rows("dashboard", HOUR, None))

    assert await flush_charges(("d1", 10), ("d2", 20)) == [("d2", 20, 0, "", ""), ("d1", 10, 0, "", "")]
    # Lighter than the lightest kept: counted as other.
    assert await flush_charges(("d3", 5)) == [
        ("d2", 20, 0, "", ""),
        ("d1", 10, 0, "", ""),
        ("other", 5, 0, "", "other"),
    ]
    # Heavier: d1's 10 move to other, d4 keeps its row from now on.
    assert await flush_charges(("d4", 100), ("d3", 1)) == [
        ("d4", 100, 0, "", ""),
        ("d2", 20, 0, "", ""),
        ("other", 16, 0, "", "other"),
    ]
    assert await flush_charges(("d4", 1)) == [
        ("d4", 101, 0, "", ""),
        ("d2", 20, 0, "", ""),
        ("other", 16, 0, "", "other"),
    ]


async def test_a_range_keeps_top_names_of_its_buckets_together(host: HostStore, clock: Clock) -> None:
    ledger = ledger_on(host, clock, top=2)
    for dashboard, samples in (("d1", 10), ("d2", 20)):
        await ledger.charge(ask(dashboard=dashboard), samples)
    clock.now += HOUR
    for dashboard, samples in (("d3", 30), ("d4", 5)):
        await ledger.charge(ask(dashboard=dashboard), samples)
    # Each hour kept two names; over two hours, the two heaviest of the four and the rest.
    assert table(await ledger.rows("dashboard", 2 * HOUR, None)) == [
        ("d3", 30, 0, "", ""),
        ("d2", 20, 0, "", ""),
        ("other", 15, 0, "", "other"),
    ]


async def test_a_range_reads_the_buckets_it_covers(host: HostStore, clock: Clock) -> None:
    ledger = ledger_on(host, clock)
    spent_at = {30 * HOUR: 1, 10 * DAY: 10, 40 * DAY: 100, 0: 1000}
    for ago, samples in spent_at.items():
        clock.now = T0 - ago
        await ledger.charge(ask(), samples)
    clock.now = T0

    async def total(range_seconds: float) -> int:
        return sum(r.samples for r in await ledger.rows("principal", range_seconds, None))

    assert await total(HOUR) == 1000
    assert await total(24 * HOUR) == 1000
    assert await total(48 * HOUR) == 1001
    assert await total(7 * DAY) == 1001
    assert await total(31 * DAY) == 1011


async def test_over_time_gives_every_bucket_hourly_then_daily(host: HostStore, clock: Clock) -> None:
    ledger = ledger_on(host, clock)
    charges = ((3 * HOUR, OVERVIEW_CPU, 5), (2 * HOUR, UNNAMED, 3), (HOUR, DISKS, 7), (0, OVERVIEW_CPU, 11))
    for ago, asked, samples in charges:
        clock.now = T0 - ago
        await ledger.charge(asked, samples)
    await ledger.saved(OVERVIEW_CPU, 2)
    clock.now = T0
    buckets, points = await ledger.over_time(6 * HOUR, None)
    assert buckets.step == HOUR
    assert [p.time for p in points] == [int(T0) - h * HOUR for h in range(6, -1, -1)]
    assert [(p.samples, p.saved_samples) for p in points] == [(0, 0)] * 3 + [(5, 0), (3, 0), (7, 0), (11, 2)]
    assert points[-1].cost == 11 * PRICE / 1e9
    _, d1 = await ledger.over_time(6 * HOUR, None, "dashboard", "d1")
    assert [p.samples for p in d1] == [0, 0, 0, 5, 0, 0, 11]
    _, unnamed = await ledger.over_time(6 * HOUR, "team-b", "dashboard", "-")
    assert [p.samples for p in unnamed] == [0, 0, 0, 0, 3, 0, 0]
    _, not_theirs = await ledger.over_time(6 * HOUR, "team-b", "dashboard", "d1")
    assert sum(p.samples for p in not_theirs) == 0
    # T0 is 23:00 UTC: the 3 days are the 3 before and this one.
    buckets, days = await ledger.over_time(3 * DAY, None)
    assert buckets.step == DAY
    assert [p.time for p in days] == [int(T0) - 23 * HOUR - d * DAY for d in range(3, -1, -1)]
    assert [p.samples for p in days] == [0, 0, 0, 26]


async def test_spent_counts_each_budget_exactly_and_resets_with_its_period(
    host: HostStore, clock: Clock
) -> None:
    budgets = (Budget("principal", "team-a", 1000, "day"), Budget("dashboard", "d1", 1000, "month"))
    ledger = ledger_on(host, clock, top=1, budgets=budgets)

    async def spent() -> tuple[int, int]:
        return (
            await ledger.spent("principal", "team-a", "day", clock.now),
            await ledger.spent("dashboard", "d1", "month", clock.now),
        )

    # T0: 2024-02-28 23:00 UTC. With top=1 the heavy d9 keeps the dashboard row; budgets do not care.
    await ledger.charge(ask("team-a", dashboard="d1"), 100)
    await ledger.charge(ask("team-b", dashboard="d9"), 10_000)
    await ledger.charge(ask("team-b", dashboard="d1"), 20)
    await ledger.saved(ask("team-a", dashboard="d1"), 5000)  # savings are not spending
    assert await spent() == (100, 120)
    await ledger.flush()
    assert await spent() == (100, 120)
    assert table(await ledger.rows("dashboard", HOUR, None))[0][0] == "d9"
    clock.now = T0 + HOUR + 1  # 2024-02-29 00:00:01: a new day, the same month
    assert await spent() == (0, 120)
    await ledger.charge(ask("team-a", dashboard="d1"), 3)
    assert await spent() == (3, 123)
    clock.now = T0 + DAY + HOUR  # 2024-03-01 00:00: a new month
    assert await spent() == (0, 0)
    await ledger.charge(ask("team-a", dashboard="d1"), 1)
    assert await spent() == (1, 1)
    # The periods gone by are still read (their counters stay a day past their end).
    assert await ledger.spent("principal", "team-a", "day", T0) == 100
    assert await ledger.spent("dashboard", "d1", "month", T0) == 123
    # Only configured budgets are counted.
    assert await ledger.spent("principal", "team-b", "day", clock.now) == 0


async def test_another_worker_sees_the_totals_after_the_background_flush(
    host_path: str, clock: Clock
) -> None:
    workers = [HostStore(host_path, BOUND), HostStore(host_path, BOUND)]
    charging, reading = ledger_on(workers[0], clock, flush_every=0.05), ledger_on(workers[1], clock)
    try:
        await charge_grafana_traffic(charging)
        deadline = time.monotonic() + 10
        while sum(r.samples for r in await reading.rows("workspace", HOUR, None)) < 187:
            assert time.monotonic() < deadline, "the charges were never flushed"
            await asyncio.sleep(0.01)
        assert table(await reading.rows("dashboard", HOUR, "team-a")) == [("d1", 150, 40, "Overview", "")]
    finally:
        await charging.aclose()
        for store in workers:
            store.close()


async def test_counts_no_store_takes_stay_in_the_worker(tmp_path: Path, clock: Clock) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    metrics = Metrics()
    budgets = (Budget("principal", "team-a", 1000, "day"),)
    ledger = ledger_on(HostStore(str(not_a_directory), BOUND), clock, budgets=budgets, metrics=metrics)
    await charge_grafana_traffic(ledger)
    await ledger.flush()
    assert metrics.registry.get_sample_value("gateway_cost_unsaved_flushes_total") == 1
    assert sum(r.samples for r in await ledger.rows("dashboard", HOUR, None)) == 187
    assert await ledger.spent("principal", "team-a", "day", clock.now) == 150
    await ledger.charge(OVERVIEW_CPU, 1)
    assert await ledger.spent("principal", "team-a", "day", clock.now) == 151
    assert sum(r.samples for r in await ledger.rows("dashboard", HOUR, None)) == 188


async def test_metrics_by_workspace_principal_and_the_first_top_dashboards(
    host: HostStore, clock: Clock
) -> None:
    metrics = Metrics()
    ledger = ledger_on(host, clock, top=2, metrics=metrics)
    await charge_grafana_traffic(ledger)
    await ledger.charge(ask("team-a", dashboard="d3"), 1000)
    value = metrics.registry.get_sample_value
    assert value("gateway_query_samples_total", {"workspace": "ws-1", "principal": "team-a"}) == 1150
    assert value("gateway_query_samples_total", {"workspace": "ws-2", "principal": "team-b"}) == 30
    assert value("gateway_query_samples_total", {"workspace": WORKSPACE.id, "principal": "team-b"}) == 7
    assert value("gateway_query_samples_saved_total", {"workspace": "ws-1", "principal": "team-a"}) == 40
    dashboards = {
        s.labels["dashboard"]: s.value
        for family in metrics.registry.collect()
        if family.name == "gateway_dashboard_query_samples"
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert dashboards == {"d1": 150, "d2": 30, "other": 1007}
    assert value("gateway_dashboard_query_samples_saved_total", {"dashboard": "d1"}) == 40


async def test_zero_and_negative_samples_count_nothing(host: HostStore, clock: Clock) -> None:
    ledger = ledger_on(host, clock)
    await ledger.charge(OVERVIEW_CPU, 0)
    await ledger.charge(OVERVIEW_CPU, -5)
    await ledger.saved(OVERVIEW_CPU, -5)
    assert await ledger.rows("dashboard", HOUR, None) == []


def _charge_from_a_process(path: str, worker: int, start: multiprocessing.synchronize.Barrier) -> None:
    async def run() -> None:
        store = HostStore(path, BOUND)
        ledger = ledger_on(store, Clock(), budgets=(Budget("principal", "team-a", 10**9, "day"),))
        start.wait()
        for i in range(400):
            await ledger.charge(ask("team-a", dashboard=f"d{worker}", panel=str(i % 7)), 3)
            await ledger.saved(ask("team-b", dashboard="shared"), 1)
            if i % 10 == 0:
                await ledger.flush()
        await ledger.aclose()
        store.close()

    asyncio.run(run())


def test_two_processes_charging_one_host_store_lose_nothing(host_path: str, clock: Clock) -> None:
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(2)
    processes = [spawn.Process(target=_charge_from_a_process, args=(host_path, w, start)) for w in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0

    async def read() -> None:
        store = HostStore(host_path, BOUND)
        ledger = ledger_on(store, clock, budgets=(Budget("principal", "team-a", 10**9, "day"),))
        assert table(await ledger.rows("dashboard", HOUR, None)) == [
            ("d0", 1200, 0, "", ""),
            ("d1", 1200, 0, "", ""),
            ("shared", 0, 800, "", ""),
        ]
        assert sum(r.samples for r in await ledger.rows("panel", HOUR, "team-a")) == 2400
        assert await ledger.spent("principal", "team-a", "day", clock.now) == 2400
        store.close()

    asyncio.run(read())
