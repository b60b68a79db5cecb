"""The cost ledger on a real Redis (a server and a 3-node cluster): two replicas' totals add up,
each replica's host store takes over while Redis is away, and the Lua script folds names past
`top` exactly as tally.merge does on the host."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.netutil import free_port
from support.redis_server import RedisServer

from gateway.config.cost import Budget
from gateway.pipeline.cost.periods import HOUR
from gateway.pipeline.cost.stores import EVERYONE, Batch, HostLedger, RedisLedger
from gateway.pipeline.cost.tally import DIMENSIONS, Entry, Tally
from gateway.pipeline.host import HostStore

from .conftest import BOUND, T0, Clock, ask, connected, ledger_on, make_host_path
from .test_ledger import charge_grafana_traffic, table

BUDGETS = (Budget("principal", "team-a", 10**9, "day"), Budget("dashboard", "d1", 10**9, "month"))


async def test_two_replicas_share_their_totals_on_redis(
    redis_url: tuple[str, bool], tmp_path: Path, clock: Clock
) -> None:
    # Two replicas: each its own host store and connection.
    hosts = [HostStore(make_host_path(tmp_path / f"host-{i}"), BOUND) for i in range(2)]
    shared = [await connected(*redis_url) for _ in hosts]
    ledgers = [ledger_on(h, clock, s, budgets=BUDGETS) for h, s in zip(hosts, shared, strict=True)]
    try:
        await charge_grafana_traffic(ledgers[0])
        await charge_grafana_traffic(ledgers[1])
        await ledgers[1].charge(ask("team-a", dashboard="d1", panel="9", dashboard_title="Overview v2"), 1)
        for ledger in ledgers:
            await ledger.flush()
        for ledger in ledgers:
            assert table(await ledger.rows("dashboard", HOUR, None)) == [
                ("d1", 301, 80, "Overview v2", ""),
                ("d2", 60, 0, "Disks", ""),
                ("-", 14, 0, "", "unnamed"),
            ]
            assert table(await ledger.rows("user", HOUR, "team-b")) == [
                ("carol", 60, 0, "", ""),
                ("-", 14, 0, "", "unnamed"),
            ]
            assert await ledger.spent("principal", "team-a", "day", clock.now) == 301
            assert await ledger.spent("dashboard", "d1", "month", clock.now) == 301
            assert not ledger.degraded
        # Nothing went to the hosts' stores.
        assert all(h.state_keys() == [] for h in hosts)
    finally:
        for ledger, s, h in zip(ledgers, shared, hosts, strict=True):
            await ledger.aclose()
            await s.aclose()
            h.close()


async def test_while_redis_is_away_the_host_store_keeps_the_counts(
    tmp_path: Path, host: HostStore, clock: Clock
) -> None:
    server = RedisServer(free_port(), tmp_path).start()
    shared = await connected(server.url, False)
    ledger = ledger_on(host, clock, shared, budgets=BUDGETS)
    try:
        await ledger.charge(ask("team-a", dashboard="d1"), 100)
        await ledger.flush()
        server.stop()
        await ledger.charge(ask("team-a", dashboard="d1"), 20)
        await ledger.flush()
        assert ledger.degraded
        # What Redis holds cannot be read; what the host took can, exactly.
        assert table(await ledger.rows("dashboard", HOUR, None)) == [("d1", 20, 0, "", "")]
        assert await ledger.spent("principal", "team-a", "day", clock.now) == 20
        assert any(key.startswith("cost:h:") for key in host.state_keys())
    finally:
        await ledger.aclose()
        await shared.aclose()


names = st.sampled_from(["", "a", "b", "c", "d", "e", "f|g"])
deltas = st.lists(
    st.dictionaries(
        st.sampled_from(DIMENSIONS[2:4]),
        st.dictionaries(
            names, st.tuples(st.integers(0, 50), st.integers(0, 50), st.sampled_from(["", "T"])), min_size=1
        ),
        min_size=1,
    ),
    min_size=1,
    max_size=6,
)


def as_tally(raw: dict[str, dict[str, tuple[int, int, str]]]) -> Tally:
    return {dim: {n: Entry(*v) for n, v in names.items()} for dim, names in raw.items()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(top=st.integers(1, 3), flushes=deltas)
def test_redis_keeps_the_same_rows_as_the_host(
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    top: int,
    flushes: list[dict[str, dict[str, tuple[int, int, str]]]],
) -> None:
    """The same flushes, merged by the Lua script on Redis and by tally.merge on the host,
    leave the same record."""
    redis.Redis.from_url(redis_server.url).flushdb()

    async def run(host_path: str) -> tuple[Tally, Tally]:
        store = HostStore(host_path, BOUND)
        shared = await connected(redis_server.url, False)
        on_redis, on_host = RedisLedger(shared, "prop"), HostLedger(store)
        record = (HOUR, int(T0), EVERYONE)
        try:
            for flush in flushes:
                assert not await on_redis.apply(Batch(T0, {record: as_tally(flush)}), top)
                assert on_host.apply(Batch(T0, {record: as_tally(flush)}), top)
            found_redis, found_host = await on_redis.read([record]), on_host.read([record])
        finally:
            await shared.aclose()
            store.close()
        assert found_redis is not None and found_host is not None
        return found_redis[0], found_host[0]

    from_redis, from_host = asyncio.run(run(make_host_path(tmp_path_factory.mktemp("p") / "host")))
    assert from_redis == from_host


async def test_two_flushes_that_no_store_takes_both_stay_in_the_worker(tmp_path: Path, clock: Clock) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    nobody_listens = await connected(f"redis://127.0.0.1:{free_port()}/0", False)
    ledger = ledger_on(HostStore(str(not_a_directory), BOUND), clock, nobody_listens, budgets=BUDGETS)
    try:
        await ledger.charge(ask("team-a", dashboard="d1"), 100)
        first = asyncio.ensure_future(ledger.flush())
        await asyncio.sleep(0)  # the first flush has taken its batch and waits on Redis
        await ledger.charge(ask("team-a", dashboard="d1"), 20)
        await asyncio.gather(first, ledger.flush())
        assert table(await ledger.rows("dashboard", HOUR, None)) == [("d1", 120, 0, "", "")]
        assert await ledger.spent("principal", "team-a", "day", clock.now) == 120
    finally:
        await nobody_listens.aclose()
