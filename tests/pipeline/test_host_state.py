"""State shared by the workers of one host through its store (`pipeline/host.py`): rate buckets,
slots, coalescing rounds and failed sign-in counts, each over one real LMDB environment.

Several processes are real ones (multiprocessing's *spawn*: an LMDB environment must not cross a
fork), contending on one store, and killed with SIGKILL inside a transaction, holding a slot and
holding a coalescing lock. "Two workers in one process" are two HostStores on one path, as two
gateways in one test process are; with Redis configured and away, the host's store answers."""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import time
from collections.abc import Iterator
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

import pytest
from support.netutil import free_port
from support.redis_server import RedisServer
from support.stages import BrokenUpstream, FakeUpstream, SlowUpstream, request

from gateway.config import CacheSettings, Limits, Principal, Rate, UpstreamSettings
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline import shared as shared_module
from gateway.pipeline.coalesce import coalescing
from gateway.pipeline.coalesce.wire import request_digest
from gateway.pipeline.holders import Holder, holders_in
from gateway.pipeline.host import HostStore
from gateway.pipeline.model import Answer, Request
from gateway.pipeline.rate import HostBuckets, RateLimiter
from gateway.pipeline.shared import SharedRedis
from gateway.pipeline.sign_in_failures import FailedSignIns, HostCounts, SharedFailedSignIns
from gateway.pipeline.slots import HostSlots, principal_slots, workspace_slots

BOUND = 4 << 20
SPAWN = multiprocessing.get_context("spawn")
BODY = b'{"status":"success","data":{"resultType":"vector","result":[]}}'


@pytest.fixture
def host_path(tmp_path: Path) -> str:
    """A store's directory as `serve`'s supervisor leaves it: made, its environment in it."""
    path = tmp_path / "host"
    path.mkdir(mode=0o700)
    HostStore.make(str(path), BOUND)
    return str(path)


@pytest.fixture
def two_workers(host_path: str) -> Iterator[tuple[HostStore, HostStore]]:
    """Two workers' stores on one path (in one process they share the environment)."""
    stores = HostStore(host_path, BOUND), HostStore(host_path, BOUND)
    yield stores
    for store in stores:
        store.close()


def _join(processes: list[multiprocessing.process.BaseProcess]) -> None:
    for process in processes:
        process.join(60)
        assert process.exitcode == 0, process.exitcode


# ------------------------------------------------------------------ rate buckets


def _admit_many(
    path: str, attempts: int, start: multiprocessing.synchronize.Barrier, admitted: Synchronized
) -> None:
    async def run() -> int:
        buckets = HostBuckets(HostStore(path, BOUND))
        rate = Rate(per_second=0.001, burst=20)
        start.wait()
        return sum([await buckets.wait("team", rate) == 0 for _ in range(attempts)])

    got = asyncio.run(run())
    with admitted.get_lock():
        admitted.value += got


def test_a_burst_from_four_processes_admits_exactly_burst(host_path: str) -> None:
    start, admitted = SPAWN.Barrier(4), SPAWN.Value("i", 0)
    processes = [SPAWN.Process(target=_admit_many, args=(host_path, 50, start, admitted)) for _ in range(4)]
    for process in processes:
        process.start()
    _join(processes)
    assert admitted.value == 20


@pytest.mark.parametrize(("per_second", "burst"), [(50.0, 5.0), (20.0, 40.0), (7.5, 1.0)])
async def test_a_host_rate_keeps_both_its_rate_and_its_burst(
    two_workers: tuple[HostStore, HostStore], per_second: float, burst: float
) -> None:
    limited = Principal(name=f"rate-{per_second}-{burst}", limits=Limits(rate=Rate(per_second, burst)))
    limiters = [RateLimiter(Metrics(), host=store) for store in two_workers]
    loop = asyncio.get_running_loop()
    admitted, started, i = 0, loop.time(), 0
    while loop.time() - started < 1.0:
        try:
            await limiters[i % 2].admit(limited)
            admitted += 1
        except GatewayError as err:
            assert 1 <= int(err.headers["Retry-After"]) <= 1 + 1 / per_second
        i += 1
        await asyncio.sleep(0.001)
    elapsed = loop.time() - started
    expected = burst + per_second * elapsed
    assert expected - per_second * 0.1 - 1 <= admitted <= expected + 1, (admitted, expected)


async def test_with_redis_away_the_host_holds_the_rate(
    two_workers: tuple[HostStore, HostStore], redis_server: RedisServer
) -> None:
    settings = CacheSettings(mode="off", redis_url=redis_server.url)
    shared = [SharedRedis(settings, Metrics()) for _ in two_workers]
    limiters = [RateLimiter(Metrics(), s, host=store) for s, store in zip(shared, two_workers, strict=True)]
    limited = Principal(name="redis-then-host", limits=Limits(rate=Rate(0.001, 3)))
    try:

        async def codes(count: int) -> list[int]:
            out = []
            for i in range(count):
                try:
                    await limiters[i % 2].admit(limited)
                    out.append(200)
                except GatewayError as err:
                    out.append(err.status)
            return out

        assert await codes(6) == [200] * 3 + [429] * 3  # on Redis
        redis_server.stop()
        # The host's bucket is fresh (Redis held the other), and both workers share it.
        assert await codes(6) == [200] * 3 + [429] * 3
        assert not any(s.available for s in shared)
    finally:
        for s in shared:
            await s.aclose()


async def test_a_failing_host_store_leaves_each_process_its_own_bucket(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    limiter = RateLimiter(Metrics(), host=HostStore(str(not_a_directory), BOUND))
    limited = Principal(name="alone", limits=Limits(rate=Rate(0.001, 2)))
    await limiter.admit(limited)
    await limiter.admit(limited)
    with pytest.raises(GatewayError):
        await limiter.admit(limited)


# ------------------------------------------------------------------ slots


def _hold_slots(
    path: str,
    rounds: int,
    start: multiprocessing.synchronize.Barrier,
    in_use: Synchronized,
    most: Synchronized,
) -> None:
    async def run() -> None:
        slots = HostSlots(HostStore(path, BOUND))
        key = slots.key("workspace:contended")
        start.wait()
        for _ in range(rounds):
            holder = await slots.acquire(key, 2, 30)
            assert isinstance(holder, str)
            async with slots.renewing(key, holder):
                with in_use.get_lock():
                    in_use.value += 1
                    most.value = max(most.value, in_use.value)
                await asyncio.sleep(0.002)
                with in_use.get_lock():
                    in_use.value -= 1
            await slots.release(key, holder)

    asyncio.run(run())


def test_two_slots_hold_over_four_processes(host_path: str) -> None:
    start, in_use, most = SPAWN.Barrier(4), SPAWN.Value("i", 0), SPAWN.Value("i", 0)
    processes = [
        SPAWN.Process(target=_hold_slots, args=(host_path, 40, start, in_use, most)) for _ in range(4)
    ]
    for process in processes:
        process.start()
    _join(processes)
    assert most.value == 2 and in_use.value == 0
    store = HostStore(host_path, BOUND)
    assert store.state_keys() == []  # every holder gave its slot back
    store.close()


async def test_upstream_slots_hold_across_workers(two_workers: tuple[HostStore, HostStore]) -> None:
    one = UpstreamSettings(max_concurrency=1, queue_timeout=20)
    upstream = SlowUpstream(0.05)
    handlers = [workspace_slots(one, Metrics(), host=store)(upstream) for store in two_workers]
    await asyncio.gather(*(handlers[i % 2](request()) for i in range(6)))
    assert upstream.most_in_flight == 1 and len(upstream.requests) == 6


async def test_a_principals_concurrency_holds_across_workers(
    two_workers: tuple[HostStore, HostStore],
) -> None:
    limited = Principal(name="one-at-a-time", limits=Limits(max_concurrency=1, queue_timeout=10))
    upstream = SlowUpstream(0.05)
    handlers = [principal_slots(Metrics(), host=store)(upstream) for store in two_workers]
    await asyncio.gather(*(handlers[i % 2](request(principal=limited)) for i in range(4)))
    assert len(upstream.requests) == 4 and upstream.most_in_flight == 1


async def test_a_waiter_past_its_deadline_is_refused(two_workers: tuple[HostStore, HostStore]) -> None:
    one = UpstreamSettings(max_concurrency=1, queue_timeout=0.1)
    upstream = SlowUpstream(0.5)
    first, second = (workspace_slots(one, Metrics(), host=store)(upstream) for store in two_workers)
    outcomes = await asyncio.gather(first(request()), second(request()), return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, GatewayError)]
    assert len(refused) == 1 and refused[0].status == 429 and len(upstream.requests) == 1


async def test_a_living_holder_keeps_its_slot_past_the_lease_and_a_silent_ones_comes_back(
    two_workers: tuple[HostStore, HostStore], short_leases: float
) -> None:
    one = UpstreamSettings(max_concurrency=1, queue_timeout=20)
    upstream = SlowUpstream(3 * short_leases)
    first, second = (workspace_slots(one, Metrics(), host=store)(upstream) for store in two_workers)
    await asyncio.gather(first(request()), second(request()))
    assert upstream.most_in_flight == 1 and len(upstream.requests) == 2

    # A holder whose process lives (this one's id) but who stopped renewing: its lease is the
    # backstop.
    slots = HostSlots(two_workers[1])
    key = slots.key("workspace:silent")
    silent = Holder(b"silent!!", os.getpid(), 0)
    two_workers[0].transact(
        lambda txn: txn.put(key, silent._replace(until=txn.now_ms + int(short_leases * 1000)).pack(), 60_000)
    )
    assert await slots.acquire(key, 1, 0.05) is False
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert isinstance(await slots.acquire(key, 1, 5), str)
    assert loop.time() - started < 10 * short_leases


def _hold_a_slot(path: str, ready: multiprocessing.synchronize.Event) -> None:
    async def run() -> None:
        slots = HostSlots(HostStore(path, BOUND))
        key = slots.key("workspace:killed")
        holder = await slots.acquire(key, 1, 5)
        assert isinstance(holder, str)
        async with slots.renewing(key, holder):
            ready.set()
            await asyncio.sleep(3600)

    asyncio.run(run())


async def test_a_process_killed_holding_a_slot_frees_it_at_once(host_path: str) -> None:
    ready = SPAWN.Event()
    holder = SPAWN.Process(target=_hold_a_slot, args=(host_path, ready))
    holder.start()
    assert await asyncio.to_thread(ready.wait, 30)
    store = HostStore(host_path, BOUND)
    slots = HostSlots(store)
    key = slots.key("workspace:killed")
    assert await slots.acquire(key, 1, 0.05) is False  # held, and its process lives
    os.kill(holder.pid or 0, signal.SIGKILL)
    await asyncio.to_thread(holder.join, 30)  # reaped: its id no longer exists
    loop = asyncio.get_running_loop()
    started = loop.time()
    taken = await slots.acquire(key, 1, shared_module.LEASE + 5)
    assert isinstance(taken, str)
    assert loop.time() - started < shared_module.LEASE  # at once, in fact: its process is gone
    await slots.release(key, taken)
    store.close()


def _die_inside_a_transaction(path: str, ready: multiprocessing.synchronize.Event) -> None:
    store = HostStore(path, BOUND)

    def take_and_die(txn: object) -> None:
        from gateway.pipeline.slots.on_host import take

        assert take(txn, "slots:workspace:half", 1, b"halfdone", os.getpid(), 60_000)
        ready.set()
        os.kill(os.getpid(), signal.SIGKILL)

    store.transact(take_and_die)


async def test_a_process_killed_inside_a_transaction_leaves_no_lock_and_nothing_seen(host_path: str) -> None:
    ready = SPAWN.Event()
    dying = SPAWN.Process(target=_die_inside_a_transaction, args=(host_path, ready))
    dying.start()
    await asyncio.to_thread(dying.join, 30)
    assert dying.exitcode == -signal.SIGKILL and ready.is_set()
    store = HostStore(host_path, BOUND)
    slots = HostSlots(store)
    started = time.monotonic()
    taken = await slots.acquire("slots:workspace:half", 1, 0)  # no waiting: the slot is free
    assert isinstance(taken, str) and time.monotonic() - started < 1
    found = store.transact(lambda txn: holders_in(txn.get("slots:workspace:half")))
    assert found is not None and [h.token for h in found] == [bytes.fromhex(taken)]
    store.close()


async def test_a_failing_host_store_leaves_each_process_its_own_slots(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    one = UpstreamSettings(max_concurrency=1, queue_timeout=20)
    upstream = SlowUpstream(0.05)
    handler = workspace_slots(one, Metrics(), host=HostStore(str(not_a_directory), BOUND))(upstream)
    await asyncio.gather(*(handler(request()) for _ in range(3)))
    assert upstream.most_in_flight == 1 and len(upstream.requests) == 3


# ------------------------------------------------------------------ coalescing


async def test_identical_requests_in_two_workers_share_one_fetch_and_its_error(
    two_workers: tuple[HostStore, HostStore],
) -> None:
    upstream = SlowUpstream(0.3)
    remote = Metrics().coalesced_across_processes
    first, second = (
        coalescing(lambda: None, host=store, on_shared_remotely=remote.inc, wait=5)(upstream)
        for store in two_workers
    )
    outcomes = await asyncio.gather(first(request()), second(request()))
    assert outcomes[0] == outcomes[1] == upstream.answer and len(upstream.requests) == 1
    assert remote._value.get() == 1
    # Lock and answer are gone once read: the lock at once, the answer after 10 s.
    assert two_workers[0].state_keys() == []

    failing = SlowUpstream(0.3, GatewayError("unavailable", "AMP is down", 503, retry=True))
    first, second = (coalescing(lambda: None, host=store, wait=5)(failing) for store in two_workers)
    errors = await asyncio.gather(first(request()), second(request()), return_exceptions=True)
    assert len(failing.requests) == 1
    assert all(isinstance(e, GatewayError) and e.status == 503 for e in errors)
    assert str(errors[0]) == str(errors[1])


async def test_a_fetch_nobody_waits_for_writes_nothing(two_workers: tuple[HostStore, HostStore]) -> None:
    upstream = SlowUpstream(0.01)
    handler = coalescing(lambda: None, host=two_workers[0], wait=5)(upstream)
    assert await handler(request(params=(("query", "alone"),))) == upstream.answer
    assert two_workers[0].state_keys() == [] and two_workers[0].cache_keys() == []


async def test_different_label_scopes_never_share(two_workers: tuple[HostStore, HostStore]) -> None:
    upstream = SlowUpstream(0.3)
    first, second = (coalescing(lambda: None, host=store, wait=5)(upstream) for store in two_workers)
    scoped = Principal(name="scoped", enforce=(("team", "a"),))
    await asyncio.gather(first(request()), second(request(principal=scoped)))
    assert len(upstream.requests) == 2


async def test_an_answer_too_large_to_share_is_fetched_by_each(
    two_workers: tuple[HostStore, HostStore],
) -> None:
    upstream = SlowUpstream(0.3)
    first, second = (
        coalescing(lambda: None, host=store, wait=30, host_max_answer_bytes=16)(upstream)
        for store in two_workers
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcomes = await asyncio.gather(first(request()), second(request()))
    assert outcomes[0] == outcomes[1] == upstream.answer and len(upstream.requests) == 2
    assert loop.time() - started < 3 and two_workers[0].cache_keys() == []


async def test_a_holder_that_fails_unexpectedly_lets_go_at_once(
    two_workers: tuple[HostStore, HostStore],
) -> None:
    broken, fine = BrokenUpstream(0.3), SlowUpstream(0.01)
    first = coalescing(lambda: None, host=two_workers[0], wait=30)(broken)
    second = coalescing(lambda: None, host=two_workers[1], wait=30)(fine)
    loop = asyncio.get_running_loop()
    started = loop.time()
    holder = asyncio.ensure_future(first(request()))
    while not two_workers[0].state_keys() and loop.time() - started < 5:
        await asyncio.sleep(0.005)
    outcomes = await asyncio.gather(holder, second(request()), return_exceptions=True)
    assert isinstance(outcomes[0], RuntimeError) and outcomes[1] == fine.answer
    assert loop.time() - started < 3  # not the lease (10 s), nor the wait (30 s)


async def test_a_living_holder_keeps_its_lock_past_the_lease(
    two_workers: tuple[HostStore, HostStore], short_leases: float
) -> None:
    upstream = SlowUpstream(3 * short_leases)
    first, second = (coalescing(lambda: None, host=store, wait=10)(upstream) for store in two_workers)
    outcomes = await asyncio.gather(first(request()), second(request()))
    assert len(upstream.requests) == 1 and outcomes[0] == outcomes[1]


async def test_with_redis_away_workers_coalesce_on_the_host(
    two_workers: tuple[HostStore, HostStore],
) -> None:
    # Redis configured where none listens: every call fails at once, and the host answers.
    settings = CacheSettings(mode="off", redis_url=f"redis://127.0.0.1:{free_port()}")
    shared = [SharedRedis(settings, Metrics()) for _ in two_workers]
    upstream = SlowUpstream(0.3)
    first, second = (
        coalescing(lambda: None, s, wait=5, host=store)(upstream)
        for s, store in zip(shared, two_workers, strict=True)
    )
    try:
        outcomes = await asyncio.gather(first(request()), second(request()))
        assert outcomes[0] == outcomes[1] and len(upstream.requests) == 1
        assert not any(s.available for s in shared)
    finally:
        for s in shared:
            await s.aclose()


class _Count(FakeUpstream):
    def __init__(self, fetches: Synchronized, delay: float) -> None:
        super().__init__(Answer(BODY))
        self.fetches, self.delay = fetches, delay

    async def __call__(self, request: Request) -> Answer:
        with self.fetches.get_lock():
            self.fetches.value += 1
        await asyncio.sleep(self.delay)
        return Answer(BODY + str(os.getpid()).encode())  # whose fetch it was


def _ask_coalesced(
    path: str,
    start: multiprocessing.synchronize.Barrier,
    fetches: Synchronized,
    answers: multiprocessing.queues.Queue[bytes],
) -> None:
    async def run() -> bytes:
        handler = coalescing(lambda: None, host=HostStore(path, BOUND), wait=10)(_Count(fetches, 0.5))
        start.wait()
        return bytes((await handler(request())).body)

    answers.put(asyncio.run(run()))


def test_identical_requests_in_four_processes_cost_one_fetch(host_path: str) -> None:
    start, fetches, answers = SPAWN.Barrier(4), SPAWN.Value("i", 0), SPAWN.Queue()
    processes = [
        SPAWN.Process(target=_ask_coalesced, args=(host_path, start, fetches, answers)) for _ in range(4)
    ]
    for process in processes:
        process.start()
    got = [answers.get(timeout=60) for _ in processes]
    _join(processes)
    # One fetch, and every process answered with it (its holder's process id in it).
    assert fetches.value == 1 and len(set(got)) == 1


class _Hang(FakeUpstream):
    def __init__(self, ready: multiprocessing.synchronize.Event) -> None:
        super().__init__()
        self.ready = ready

    async def __call__(self, request: Request) -> Answer:
        self.ready.set()
        await asyncio.sleep(3600)
        return self.answer


def _hold_a_lock(path: str, ready: multiprocessing.synchronize.Event) -> None:
    async def run() -> None:
        await coalescing(lambda: None, host=HostStore(path, BOUND), wait=10)(_Hang(ready))(request())

    asyncio.run(run())


async def test_a_process_killed_holding_a_lock_delays_its_waiters_by_at_most_the_lease(
    host_path: str,
) -> None:
    ready = SPAWN.Event()
    holder = SPAWN.Process(target=_hold_a_lock, args=(host_path, ready))
    holder.start()
    assert await asyncio.to_thread(ready.wait, 30)
    store = HostStore(host_path, BOUND)
    upstream = SlowUpstream(0.01)
    waiter = asyncio.ensure_future(coalescing(lambda: None, host=store, wait=60)(upstream)(request()))
    lock = f"coalesce:{request_digest(request())}"
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not waiter.done() and loop.time() - started < 5:  # the waiter counted itself in
        found = store.peek_state([lock])
        if found and found[0] and found[0][0][-1] == 1:
            break
        await asyncio.sleep(0.01)
    assert not waiter.done()
    os.kill(holder.pid or 0, signal.SIGKILL)
    killed = loop.time()
    await asyncio.to_thread(holder.join, 30)
    assert await waiter == upstream.answer and len(upstream.requests) == 1
    assert loop.time() - killed < shared_module.LEASE
    store.close()


# ------------------------------------------------------------------ failed sign-ins


def _fail_sign_ins(path: str, count: int, start: multiprocessing.synchronize.Barrier) -> None:
    async def run() -> None:
        counts = HostCounts(HostStore(path, BOUND))
        start.wait()
        for _ in range(count):
            await counts.record([("user:shared", 60_000)])

    asyncio.run(run())


async def test_failed_sign_ins_from_four_processes_add_up_in_one_window(host_path: str) -> None:
    start = SPAWN.Barrier(4)
    processes = [SPAWN.Process(target=_fail_sign_ins, args=(host_path, 25, start)) for _ in range(4)]
    for process in processes:
        process.start()
    await asyncio.to_thread(_join, processes)
    counts = HostCounts(HostStore(host_path, BOUND))
    assert await counts.counts(["user:shared", "user:other"]) == [100, 0]
    left = await counts.seconds_left("user:shared")
    assert left is not None and 0 < left <= 60


async def test_failed_sign_ins_throttle_across_workers_and_the_window_ends(
    two_workers: tuple[HostStore, HostStore],
) -> None:
    table = FailedSignIns(limit=4, window=0.3)
    workers = [SharedFailedSignIns(None, store) for store in two_workers]
    keys = [("user:guessed", table)]
    for i in range(4):
        assert await workers[i % 2].retry_after(keys) is None
        await workers[i % 2].record(keys)
    for worker in workers:
        throttled = await worker.retry_after(keys)
        assert throttled is not None and throttled[1] == "user:guessed" and 0 < throttled[0] <= 0.3
    await asyncio.sleep(0.35)
    assert await workers[0].retry_after(keys) is None
