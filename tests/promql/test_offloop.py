"""The PromQL pool (promql/offloop.py): a principal never holds every thread, principals take
turns, nothing stays behind per principal. Real threads, blocked and released with events: the
waits below only keep a broken pool from hanging the suite, nothing is timed."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import pytest

from gateway.promql import offloop
from gateway.promql.offloop import FairPool

WAIT = 30.0  # seconds before a test gives up on an event that should have been set


def settled(pool: FairPool, running: dict[str, int]) -> bool:
    """Whether the pool's running jobs come to `running`: its thread hands a job's result over
    before it counts the job done, so a caller that has the result may see it counted a moment."""
    deadline = time.monotonic() + WAIT
    while pool.running() != running and time.monotonic() < deadline:
        time.sleep(0.001)
    return pool.running() == running


@pytest.fixture
def pool() -> Iterator[FairPool]:
    made = FairPool(threads=2, per_principal=1, name="test")
    yield made
    made.close()


def blocker(started: threading.Event, release: threading.Event, result: str) -> Callable[[], str]:
    def job() -> str:
        started.set()
        assert release.wait(WAIT)
        return result

    return job


def test_a_principal_holding_its_share_does_not_block_another(pool: FairPool) -> None:
    release = threading.Event()
    first = threading.Event()
    a_jobs = [
        pool.submit("A", blocker(first if i == 0 else threading.Event(), release, f"a{i}")) for i in range(4)
    ]
    assert first.wait(WAIT)
    # A's first job holds one thread; its other three wait in A's queue, not on the other thread
    b_done = pool.submit("B", lambda: "b")
    assert b_done.result(WAIT) == "b"
    assert not any(job.done() for job in a_jobs)
    assert settled(pool, {"A": 1})
    assert pool.waiting() == {"A": 3}
    release.set()
    assert [job.result(WAIT) for job in a_jobs] == ["a0", "a1", "a2", "a3"]
    # nothing is kept for a principal without work
    assert settled(pool, {}) and pool.waiting() == {}


def test_principals_take_turns() -> None:
    pool = FairPool(threads=1, per_principal=1, name="test-turns")
    order: list[str] = []
    release = threading.Event()
    started = threading.Event()

    def record(name: str) -> Callable[[], None]:
        return lambda: order.append(name)

    try:
        pool.submit("A", blocker(started, release, "a0"))
        assert started.wait(WAIT)
        jobs = [pool.submit("A", record("a1")), pool.submit("A", record("a2"))]
        jobs += [
            pool.submit("B", record("b1")),
            pool.submit("C", record("c1")),
            pool.submit("B", record("b2")),
        ]
        release.set()
        for job in jobs:
            job.result(WAIT)
    finally:
        pool.close()
    # A's queue was first, but B and C each had a turn before A's second job
    assert order == ["b1", "c1", "a1", "b2", "a2"]


def test_more_jobs_per_principal_when_the_pool_allows() -> None:
    pool = FairPool(threads=3, per_principal=2, name="test-share")
    release = threading.Event()
    starts = [threading.Event() for _ in range(3)]
    try:
        jobs = [pool.submit("A", blocker(starts[i], release, str(i))) for i in range(3)]
        assert starts[0].wait(WAIT) and starts[1].wait(WAIT)
        assert pool.running() == {"A": 2} and pool.waiting() == {"A": 1}
        assert pool.submit("B", lambda: "b").result(WAIT) == "b"
        assert not starts[2].is_set()
        release.set()
        assert [job.result(WAIT) for job in jobs] == ["0", "1", "2"]
    finally:
        pool.close()


def test_errors_reach_the_caller_and_cancelled_jobs_never_run(pool: FairPool) -> None:
    def fails() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        pool.submit("A", fails).result(WAIT)
    release, started = threading.Event(), threading.Event()
    ran: list[str] = []
    holding = pool.submit("A", blocker(started, release, "x"))
    assert started.wait(WAIT)
    queued = pool.submit("A", lambda: ran.append("queued"))
    assert queued.cancel()
    release.set()
    assert holding.result(WAIT) == "x"
    assert pool.submit("A", lambda: "after").result(WAIT) == "after"
    assert ran == []


async def test_run_queues_as_the_principal_asking() -> None:
    seen: list[str] = []
    release, started = threading.Event(), threading.Event()

    def who_runs() -> str:
        return threading.current_thread().name

    big = offloop.OFF_LOOP_CHARS + 1
    # small work runs here, on the loop's thread
    assert await offloop.run(10, who_runs) == threading.current_thread().name
    held = asyncio.ensure_future(offloop.run(big, blocker(started, release, "held"), who="flood"))
    assert await asyncio.to_thread(started.wait, WAIT)
    offloop.asking.set("dashboard")
    seen.append(await offloop.run(big, who_runs))  # while "flood" holds a thread
    assert settled(offloop.POOL, {"flood": 1})
    release.set()
    assert await held == "held"
    assert seen[0].startswith("promql-")
    assert offloop.POOL.waiting() == {}


class _Result:
    """A result with a weak reference (a large answer, or the map of its file, in real use)."""


def test_the_pool_keeps_no_result_once_it_is_handed_over(pool: FairPool) -> None:
    result = pool.submit("a", _Result).result(timeout=5)
    gone = weakref.ref(result)
    del result
    deadline = time.monotonic() + 5
    while gone() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert gone() is None
