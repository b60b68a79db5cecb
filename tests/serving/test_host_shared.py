"""Real `serve --workers N` processes without Redis, in front of the SigV4-checking AMP stand-in
and the backfilled Prometheus: the workers of one host share coalescing, the cache, rate
buckets and slots through the host's store (pipeline/host.py), and a worker SIGKILLed while it
holds a coalescing lock or a slot delays the others by at most the lease.

The kernel spreads connections over the workers: every request here opens its own."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from support.amp_standin import AmpStandin, unique_query
from support.gateway import GatewayProcess, scraped_value
from support.prometheus import PrometheusServer
from support.testenv import AMP_REGION

from gateway.pipeline.holders import holder_at, holders_in
from gateway.pipeline.host import HostStore
from gateway.pipeline.shared import LEASE

TOKEN = "host-shared-token-0123456789"
WORKERS = [2, 4]


def _raw(amp: AmpStandin, host_dir: Path, cache: str = "memory", **extra: Any) -> dict[str, Any]:
    host_dir.mkdir(exist_ok=True)
    return {
        "workspaces": [{"id": "ws-test1", "url": amp.workspace_url("ws-test1"), "region": AMP_REGION}],
        "cache": {"mode": cache, "host_dir": str(host_dir)},
        "upstream": {"retry_base": "10ms", "timeout": "30s"},
        "access_log": False,
        **extra,
    }


def _auth(**limits: Any) -> dict[str, Any]:
    return {
        "principals": [
            {
                "name": "team",
                "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
                "workspaces": ["*"],
                "limits": limits,
            }
        ]
    }


def _ask(
    gateway: GatewayProcess, query: str, at: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    """One request on a connection of its own."""
    return httpx.post(
        f"{gateway.url}/api/v1/query", data={"query": query, "time": at}, headers=headers, timeout=60
    )


def _in_parallel(count: int, call: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(call, range(count)))


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    return tmp_path / "host"


@pytest.fixture
def store(host_dir: Path) -> Iterator[Callable[[], HostStore]]:
    """The store the serve's workers share, opened by the test (after the serve made it)."""
    opened: list[HostStore] = []

    def open_store() -> HostStore:
        (path,) = host_dir.iterdir()
        opened.append(HostStore(str(path), 1 << 20))
        return opened[-1]

    yield open_store
    for each in opened:
        each.close()


def _wait_for(what: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.01)
    raise AssertionError("not seen in time")


@pytest.mark.parametrize("workers", WORKERS)
def test_identical_concurrent_cold_requests_cost_one_upstream_fetch(
    workers: int,
    fresh_amp: AmpStandin,
    prometheus: PrometheusServer,
    host_dir: Path,
    start: Callable[..., GatewayProcess],
) -> None:
    gateway = start(_raw(fresh_amp, host_dir), workers=workers)
    query, at = unique_query(), str(prometheus.data_end - 600)
    fresh_amp.inject_delay(1.5, count=1, path_contains="/api/v1/query")  # the first one is slow
    answers = _in_parallel(8 * workers, lambda _: _ask(gateway, query, at))
    direct = httpx.post(f"{prometheus.url}/api/v1/query", data={"query": query, "time": at}, timeout=30)
    assert [a.status_code for a in answers] == [200] * len(answers)
    assert all(a.json()["data"] == direct.json()["data"] for a in answers)
    assert fresh_amp.forwarded_count(query) == 1
    # Some waited for another worker's answer: the requests did spread over the workers.
    assert scraped_value(gateway.url, "gateway_coalesced_across_processes_total") >= 1


@pytest.mark.parametrize("workers", WORKERS)
def test_identical_sequential_cold_requests_cost_one_upstream_fetch(
    workers: int,
    fresh_amp: AmpStandin,
    prometheus: PrometheusServer,
    host_dir: Path,
    start: Callable[..., GatewayProcess],
) -> None:
    gateway = start(_raw(fresh_amp, host_dir), workers=workers)
    query, at = unique_query(), str(prometheus.data_end - 600)
    answers = [_ask(gateway, query, at) for _ in range(6 * workers)]
    assert [a.status_code for a in answers] == [200] * len(answers)
    assert len({a.content for a in answers}) == 1
    assert fresh_amp.forwarded_count(query) == 1


@pytest.mark.parametrize("workers", WORKERS)
def test_a_rate_limit_holds_across_workers(
    workers: int, fresh_amp: AmpStandin, host_dir: Path, start: Callable[..., GatewayProcess]
) -> None:
    auth = _auth(rate={"per_second": 0.01, "burst": 4})
    gateway = start(_raw(fresh_amp, host_dir, auth=auth), workers=workers)
    headers = {"authorization": f"Bearer {TOKEN}"}
    answers = _in_parallel(
        6 * workers, lambda _: httpx.get(f"{gateway.url}/api/v1/labels", headers=headers, timeout=30)
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 4 + [429] * (6 * workers - 4), codes
    assert all("Retry-After" in a.headers for a in answers if a.status_code == 429)


def _workers_with_clients(gateway: GatewayProcess) -> set[int]:
    """The workers holding an established connection on the gateway's port."""
    holding = set()
    for pid in gateway.worker_pids():
        try:
            connections = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            continue
        if any(c.status == psutil.CONN_ESTABLISHED and c.laddr.port == gateway.port for c in connections):
            holding.add(pid)
    return holding


@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("limit", ["principal", "workspace"])
def test_max_concurrency_holds_across_workers(
    workers: int,
    limit: str,
    fresh_amp: AmpStandin,
    prometheus: PrometheusServer,
    host_dir: Path,
    start: Callable[..., GatewayProcess],
) -> None:
    extra: dict[str, Any] = {}
    if limit == "principal":
        extra["auth"] = _auth(max_concurrency=1, queue_timeout="60s")
    raw = _raw(fresh_amp, host_dir, cache="off", **extra)
    if limit == "workspace":
        raw["upstream"].update(max_concurrency=1, queue_timeout="60s")
    gateway = start(raw, workers=workers)
    headers = {"authorization": f"Bearer {TOKEN}"}
    at = str(prometheus.data_end - 600)
    count = 3 * workers
    fresh_amp.inject_delay(0.3, count=count, path_contains="/api/v1/query")
    spread: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            spread.update(_workers_with_clients(gateway))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        answers = _in_parallel(count, lambda _: _ask(gateway, unique_query(), at, headers))
    finally:
        done.set()
        watcher.join()
    assert [a.status_code for a in answers] == [200] * count
    assert fresh_amp.most_in_flight == 1
    assert len(spread) >= 2  # the requests waited in several workers


def _kill(pid: int) -> float:
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def _replaced(gateway: GatewayProcess) -> None:
    """Until the killed worker's replacement has started (a worker stopped while it starts
    holds up the supervisor's stop)."""
    _wait_for(lambda: gateway.log.read_text().count("Application startup complete") > gateway.workers)


def _outcome(call: Callable[[], httpx.Response]) -> tuple[int, float]:
    """(status, or 0 for a connection the killed worker dropped; when it ended)."""
    try:
        status = call().status_code
    except httpx.TransportError:
        status = 0
    return status, time.monotonic()


@pytest.mark.parametrize("workers", WORKERS)
def test_a_worker_killed_holding_a_coalescing_lock_delays_the_others_by_at_most_the_lease(
    workers: int,
    fresh_amp: AmpStandin,
    prometheus: PrometheusServer,
    host_dir: Path,
    store: Callable[[], HostStore],
    start: Callable[..., GatewayProcess],
) -> None:
    gateway = start(_raw(fresh_amp, host_dir, cache="off"), workers=workers)
    query, at = unique_query(), str(prometheus.data_end - 600)
    fresh_amp.inject_delay(15, count=1, path_contains="/api/v1/query")  # the holder's fetch hangs
    host = store()
    with concurrent.futures.ThreadPoolExecutor(8 * workers + 1) as pool:
        first = pool.submit(_outcome, lambda: _ask(gateway, query, at))
        lock = _wait_for(lambda: [k for k in host.state_keys() if k.startswith("coalesce:")])[0]
        waiting = [pool.submit(_outcome, lambda: _ask(gateway, query, at)) for _ in range(8 * workers)]

        def waiters() -> int:
            (found,) = host.peek_state([lock]) or [None]
            return int.from_bytes(found[0][-4:], "big") if found else 0

        _wait_for(lambda: waiters() >= 1)  # some wait in other workers than the holder's
        (record,) = host.peek_state([lock]) or [None]
        assert record is not None
        killed = _kill(holder_at(record[0]).pid)
        outcomes = [future.result() for future in waiting]
        assert first.result()[0] == 0  # the holder's own client lost its connection
    # Those waiting in other workers were answered, within the lease; those in the killed
    # worker lost their connection with it.
    assert {status for status, _ in outcomes} <= {200, 0} and 200 in {status for status, _ in outcomes}
    assert all(ended - killed < LEASE for status, ended in outcomes if status == 200)
    started = time.monotonic()
    assert _ask(gateway, query, at).status_code == 200 and time.monotonic() - started < LEASE
    assert fresh_amp.received_count(query) >= 2  # the dead holder's, then the others'
    _replaced(gateway)


@pytest.mark.parametrize("workers", WORKERS)
def test_a_worker_killed_holding_a_slot_delays_the_others_by_at_most_the_lease(
    workers: int,
    fresh_amp: AmpStandin,
    prometheus: PrometheusServer,
    host_dir: Path,
    store: Callable[[], HostStore],
    start: Callable[..., GatewayProcess],
) -> None:
    raw = _raw(fresh_amp, host_dir, cache="off")
    raw["upstream"].update(max_concurrency=1, queue_timeout="60s")
    gateway = start(raw, workers=workers)
    at = str(prometheus.data_end - 600)
    fresh_amp.inject_delay(15, count=1, path_contains="/api/v1/query")  # the holder's fetch hangs
    host = store()
    with concurrent.futures.ThreadPoolExecutor(4 * workers + 1) as pool:
        first = pool.submit(_outcome, lambda: _ask(gateway, unique_query(), at))
        slot = _wait_for(lambda: [k for k in host.state_keys() if k.startswith("slots:")])[0]
        waiting = [
            pool.submit(_outcome, lambda: _ask(gateway, unique_query(), at)) for _ in range(4 * workers)
        ]
        time.sleep(0.5)  # they queue for the slot
        (record,) = host.peek_state([slot]) or [None]
        assert record is not None
        (holder,) = holders_in(record[0])
        killed = _kill(holder.pid)
        outcomes = [future.result() for future in waiting]
        assert first.result()[0] == 0
    assert {status for status, _ in outcomes} <= {200, 0}
    assert all(ended - killed < LEASE for status, ended in outcomes if status == 200)
    started = time.monotonic()
    assert _ask(gateway, unique_query(), at).status_code == 200 and time.monotonic() - started < LEASE
    _replaced(gateway)
