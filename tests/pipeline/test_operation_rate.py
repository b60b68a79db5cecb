"""AMP's rates per workspace and API family (`quotas.rates`, pipeline/operation_rate.py): the
GCRA turns it is built on (pipeline/gcra.py) as properties, its settings, the stage on a
simulated clock, and its buckets shared by two workers on one host's store, by four real
processes, and by two processes on one real Redis (and the host's store while Redis is away)."""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.synchronize
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.redis_server import RedisServer
from support.stages import FakeUpstream, request
from test_host_state import BOUND, SPAWN, host_path, two_workers

from gateway.config import CacheSettings, ConfigError, Rate, Workspace
from gateway.config.amp_rates import FAMILIES, FEEDBACK_ONLY, RateQuotas, read_rates
from gateway.config.readers import Reader
from gateway.errors import GatewayError
from gateway.metrics import AMP_RATE_FAMILIES, Metrics
from gateway.pipeline.endpoints import ENDPOINTS
from gateway.pipeline.gcra import gcra_hold, gcra_turn
from gateway.pipeline.host import HostStore
from gateway.pipeline.model import Answer, Handler, Request
from gateway.pipeline.operation_rate import MAX_HOLD, Pacer, hold_for, operation_rate
from gateway.pipeline.shared import SharedRedis

# The host's store as `serve`'s supervisor makes it, and two workers' stores on it.
__all__ = ["host_path", "two_workers"]

SLACK = 1e-9  # float rounding in the bounds below

# ------------------------------------------------------------------ GCRA turns, as properties

rates = st.tuples(st.floats(0.5, 50), st.integers(1, 10))
gaps = st.lists(st.floats(0, 2), min_size=1, max_size=60)  # seconds between arrivals


def _turns(
    per_second: float, burst: int, max_wait: float, arrivals: list[float]
) -> list[tuple[float, float | None]]:
    """(arrival, send time or None when refused) of each request, in arrival order."""
    interval, tolerance = 1 / per_second, (burst - 1) / per_second
    tat: float | None = None
    out: list[tuple[float, float | None]] = []
    for now in arrivals:
        wait, next_tat = gcra_turn(tat, now, interval, tolerance, max_wait)
        if next_tat is None:
            out.append((now, None))
        else:
            tat = next_tat
            out.append((now, now + wait))
    return out


def _arrivals(gap_list: list[float]) -> list[float]:
    times, now = [], 0.0
    for gap in gap_list:
        now += gap
        times.append(now)
    return times


@settings(max_examples=300, deadline=None)
@given(rates, st.floats(0, 5), gaps)
def test_turns_keep_the_rate_and_burst_over_every_window(
    rate: tuple[float, int], max_wait: float, gap_list: list[float]
) -> None:
    per_second, burst = rate
    sends = [sent for _, sent in _turns(per_second, burst, max_wait, _arrivals(gap_list)) if sent is not None]
    assert sends == sorted(sends)  # those that wait go in the order they came
    for i in range(len(sends)):
        for j in range(i, len(sends)):
            assert j - i + 1 <= burst + per_second * (sends[j] - sends[i]) + SLACK, (i, j, sends)


@settings(max_examples=300, deadline=None)
@given(rates, st.floats(0, 5), gaps)
def test_a_turn_waits_at_most_max_wait_and_a_refusal_charges_nothing(
    rate: tuple[float, int], max_wait: float, gap_list: list[float]
) -> None:
    per_second, burst = rate
    arrivals = _arrivals(gap_list)
    turns = _turns(per_second, burst, max_wait, arrivals)
    for (now, sent), rest in zip(turns, range(len(turns)), strict=True):
        if sent is not None:
            assert 0 <= sent - now <= max_wait + SLACK
        else:  # the same requests without the refused one get the same turns
            without = [t for k, t in enumerate(arrivals) if k != rest]
            assert _turns(per_second, burst, max_wait, without) == turns[:rest] + turns[rest + 1 :]


@settings(max_examples=200, deadline=None)
@given(rates, gaps)
def test_with_no_wait_allowed_a_turn_is_now_or_refused(
    rate: tuple[float, int], gap_list: list[float]
) -> None:
    per_second, burst = rate
    for now, sent in _turns(per_second, burst, 0.0, _arrivals(gap_list)):
        assert sent is None or sent == now


@settings(max_examples=200, deadline=None)
@given(rates, st.floats(0.01, 30), st.floats(0, 10), gaps)
def test_after_a_hold_nothing_goes_before_it_ends_and_the_bucket_refills_from_empty(
    rate: tuple[float, int], hold: float, held_at: float, gap_list: list[float]
) -> None:
    per_second, burst = rate
    interval, tolerance = 1 / per_second, (burst - 1) / per_second
    tat = gcra_hold(None, held_at, tolerance, hold)
    sends = []
    for now in (held_at + gap for gap in _arrivals(gap_list)):
        wait, tat = gcra_turn(tat, now, interval, tolerance, 1e9)
        sends.append(now + wait)
    ends = held_at + hold
    # One turn when it ends, then one per interval: no burst saved up during the hold.
    for count, sent in enumerate(sends, 1):
        assert sent >= ends - SLACK
        assert count <= 1 + per_second * (sent - ends) + SLACK, (count, sends)


def test_a_hold_never_shortens_a_longer_wait() -> None:
    assert gcra_hold(100.0, 0.0, 1.0, 5.0) is None
    assert gcra_hold(3.0, 0.0, 1.0, 5.0) == 6.0


# ------------------------------------------------------------------ settings


def _read(raw: dict[str, Any]) -> RateQuotas:
    return read_rates(Reader(raw, "quotas.rates."))


def test_settings_by_default_only_take_amps_429_and_bound_the_wait() -> None:
    """No rate is set by default (AMP's could not be read): each family's bucket is 1000 a
    second, which paces nothing in ordinary use, and AMP's 429 holds it for a second."""
    quotas = _read({})
    assert quotas == RateQuotas()
    for op in ("QueryMetrics", "GetSeries", "ListRules"):
        paced = quotas.paced(op)
        assert paced is not None and paced[1] == FEEDBACK_ONLY
    assert quotas.paced("") is None
    assert hold_for(FEEDBACK_ONLY, GatewayError("too_many_requests", "slow down", 429)) == 1.0
    assert (quotas.max_wait, quotas.max_waiters) == (5.0, 64)


def test_settings_take_a_mapping_a_number_and_zero_or_null_for_off() -> None:
    quotas = _read(
        {
            "query_metrics": {"per_second": 20, "burst": 40},
            "series_labels_metadata": 7.5,
            "other_apis": 0,
            "max_wait": "2s",
            "max_waiters": 3,
        }
    )
    assert quotas.query_metrics == Rate(20, 40)
    assert quotas.series_labels_metadata == Rate(7.5, 7.5)
    assert quotas.other_apis is None
    assert (quotas.max_wait, quotas.max_waiters) == (2.0, 3)
    assert _read({"query_metrics": None}).query_metrics is None
    assert _read({"query_metrics": {"per_second": 0}}).query_metrics is None
    assert _read({"query_metrics": {"per_second": 0.5}}).query_metrics == Rate(0.5, 1.0)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"query_metrics": -1}, "quotas.rates.query_metrics: must be a number > 0"),
        ({"query_metrics": "fast"}, "quotas.rates.query_metrics: must be requests per second"),
        ({"query_metrics": True}, "quotas.rates.query_metrics: must be requests per second"),
        ({"query_metrics": {"burst": 3}}, "quotas.rates.query_metrics.per_second: required"),
        ({"query_metrics": {"per_second": 5, "burst": 0.5}}, "quotas.rates.query_metrics.burst: must be"),
        ({"query_metrics": {"per_second": 5, "rate": 1}}, "quotas.rates.query_metrics.rate: unknown"),
        ({"max_wait": "soon"}, "quotas.rates.max_wait: must be a duration"),
        ({"max_waiters": -1}, "quotas.rates.max_waiters: must be a whole number"),
        ({"query": 5}, "quotas.rates.query: unknown setting"),
    ],
)
def test_settings_refuse_what_they_cannot_use(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _read(raw)
    assert str(caught.value).startswith(message), str(caught.value)


def test_every_amp_operation_of_the_endpoint_table_falls_in_amps_family() -> None:
    quotas = RateQuotas(Rate(1, 1), Rate(2, 2), Rate(3, 3))
    families = {e.name: quotas.paced(e.operation) for e in ENDPOINTS.values()}
    expected = {
        "query": "query_metrics",
        "query_range": "query_metrics",
        "series": "series_labels_metadata",
        "labels": "series_labels_metadata",
        "label_values": "series_labels_metadata",
        "metadata": "series_labels_metadata",
        "rules": "other_apis",
        "alerts": "other_apis",
    }
    assert {name: paced[0].key for name, paced in families.items() if paced} == expected
    assert {name for name, paced in families.items() if paced is None} == {
        e.name for e in ENDPOINTS.values() if not e.operation
    }
    assert tuple(f.key for f in FAMILIES) == AMP_RATE_FAMILIES  # /metrics makes their series at 0


# ------------------------------------------------------------------ the stage, on a simulated clock


class SimulatedTime:
    """The pacer's clock and sleep: a sleep records its length and, unless told to hold the
    sleepers (`hold`), returns at once without moving the clock, so that concurrent requests
    all arrive at the same instant."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        self.release = asyncio.Event()
        self.release.set()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        await self.release.wait()

    def hold(self) -> None:
        self.release.clear()


def _paced(
    upstream: Handler, time_: SimulatedTime, metrics: Metrics | None = None, **quotas: Any
) -> tuple[Handler, Metrics]:
    metrics = metrics or Metrics()
    settings_ = RateQuotas(**quotas)
    pacer = Pacer(settings_, metrics, clock=time_.clock, sleep=time_.sleep)
    return operation_rate(pacer)(upstream), metrics


async def _outcome(handle: Handler, request_: Request) -> Answer | GatewayError:
    try:
        return await handle(request_)
    except GatewayError as err:
        return err


async def _all(handle: Handler, requests: list[Request]) -> list[Answer | GatewayError]:
    """The requests at once."""
    return list(await asyncio.gather(*(_outcome(handle, r) for r in requests)))


async def _all_of(handles: list[Handler], count: int) -> list[Answer | GatewayError]:
    """`count` requests at once, alternately through each handler."""
    return list(await asyncio.gather(*(_outcome(handles[i % len(handles)], _query(i)) for i in range(count))))


OTHER = Workspace(
    id="ws-2", url="https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-2", region="us-east-1"
)


def _query(n: int, **fields: Any) -> Request:
    return request("query", (("query", f"up{{n='{n}'}}"),), **fields)


async def test_a_burst_goes_at_once_and_the_rest_wait_their_turns_in_order() -> None:
    time_, upstream = SimulatedTime(), FakeUpstream()
    handle, metrics = _paced(upstream, time_, query_metrics=Rate(2, 2), max_wait=10)
    answers = await _all(handle, [_query(n) for n in range(5)])
    assert all(isinstance(a, Answer) for a in answers)
    assert time_.slept == [0.5, 1.0, 1.5]  # two at once, then one every half second
    waited = metrics.registry.get_sample_value(
        "gateway_amp_rate_total", {"workspace": "ws-1", "family": "query_metrics", "outcome": "waited"}
    )
    assert waited == 3


async def test_past_max_wait_a_request_is_refused_naming_amps_quota_and_the_wait() -> None:
    time_, upstream = SimulatedTime(), FakeUpstream()
    handle, metrics = _paced(upstream, time_, query_metrics=Rate(2, 2), max_wait=1)
    answers = await _all(handle, [_query(n) for n in range(5)])
    assert [isinstance(a, Answer) for a in answers] == [True] * 4 + [False]
    refused = answers[4]
    assert isinstance(refused, GatewayError)
    assert (refused.status, refused.error_type, refused.retry) == (429, "too_many_requests", "")
    assert refused.failure == "throttled"  # a cached answer may be served stale in its place
    assert refused.headers["Retry-After"] == "2"
    assert refused.message == (
        "AMP allows 2 QueryMetrics requests a second to ws-1 (quota L-D5FD0534, "
        "quotas.rates.query_metrics, bursts of 2): the next turn is in 1.5s, longer than "
        "quotas.rates.max_wait (1s); retry later"
    )
    assert len(upstream.requests) == 4
    sample = {"workspace": "ws-1", "family": "query_metrics", "outcome": "refused"}
    assert metrics.registry.get_sample_value("gateway_amp_rate_total", sample) == 1


async def test_the_requests_own_time_bounds_its_wait() -> None:
    time_, upstream = SimulatedTime(), FakeUpstream()
    handle, _ = _paced(upstream, time_, query_metrics=Rate(2, 2), max_wait=60)
    answers = await _all(handle, [_query(n, timeout=2.8) for n in range(5)])
    assert [isinstance(a, Answer) for a in answers] == [True] * 4 + [False]  # waits 0, 0, 0.5, 1
    refused = answers[4]
    assert isinstance(refused, GatewayError)
    assert "the next turn is in 1.5s, more than half the 2.8s left of the request's time" in refused.message


async def test_a_retry_waits_only_for_what_is_left_of_the_request() -> None:
    time_, upstream = SimulatedTime(), FakeUpstream()
    handle, _ = _paced(upstream, time_, query_metrics=Rate(0.5, 1), max_wait=60)
    retried = _query(0, timeout=5.0)
    await handle(retried)  # its first attempt, at once
    time_.now += 4.5
    # Another request (in a task of its own, as every request is) takes the free turn: the next
    # is in 2 s.
    await asyncio.create_task(handle(_query(1)))
    with pytest.raises(GatewayError) as caught:
        await handle(retried)  # its second attempt: 0.5 s of its 5 s are left
    assert (
        "the next turn is in 2.0s, more than half the 0.5s left of the request's time" in caught.value.message
    )
    await handle(_query(2, timeout=5.0))  # a new request of the same timeout waits for it
    assert time_.slept == [2.0]


async def test_past_max_waiters_a_request_that_would_wait_is_refused_at_once() -> None:
    time_, upstream = SimulatedTime(), FakeUpstream()
    handle, _ = _paced(upstream, time_, query_metrics=Rate(1, 1), max_wait=60, max_waiters=2)
    time_.hold()
    first = [asyncio.create_task(handle(_query(n))) for n in range(3)]
    await asyncio.sleep(0.01)
    assert first[0].done() and not first[1].done() and not first[2].done()  # one sent, two wait
    with pytest.raises(GatewayError) as caught:
        await handle(_query(3))
    assert "2 requests already wait for it in this worker (quotas.rates.max_waiters)" in caught.value.message
    assert "the next turn is in 3.0s" in caught.value.message
    time_.release.set()
    await asyncio.gather(*first)
    assert time_.slept == [1.0, 2.0]
    time_.now += 10
    time_.hold()
    again = [asyncio.create_task(handle(_query(n))) for n in range(4, 7)]  # the line is free again
    await asyncio.sleep(0.01)
    time_.release.set()
    await asyncio.gather(*again)
    assert len(upstream.requests) == 6


class ThrottledOnce(FakeUpstream):
    """Raises `error` for the first request, answers the others."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__()
        self.error: GatewayError | None = error

    async def __call__(self, request: Request) -> Answer:
        self.requests.append(request)
        error, self.error = self.error, None
        if error is not None:
            raise error
        return self.answer


def _amp_429(retry_after: str = "") -> GatewayError:
    headers = {"Retry-After": retry_after} if retry_after else None
    return GatewayError(
        "too_many_requests", "AMP throttled", 429, headers, retry="throttled", wait=retry_after
    )


@pytest.mark.parametrize(
    ("error", "next_wait"),
    [
        (_amp_429(), 1.0),  # held for burst / per_second: 2 / 2
        (_amp_429("7"), 7.0),  # AMP's longer Retry-After
        (_amp_429("3600"), MAX_HOLD),  # at most a minute
        # A 429 that is not AMP's (no workspace slot freed up): the bucket is not touched.
        (GatewayError("too_many_requests", "all slots busy", headers={"Retry-After": "1"}), 0.0),
    ],
)
async def test_amps_429_holds_the_familys_bucket_empty(error: GatewayError, next_wait: float) -> None:
    time_, upstream = SimulatedTime(), ThrottledOnce(error)
    handle, metrics = _paced(upstream, time_, query_metrics=Rate(2, 2), max_wait=120)
    with pytest.raises(GatewayError) as caught:
        await handle(_query(0))
    assert caught.value is error  # passed on as it came (retry, above, decides)
    await handle(_query(1, timeout=300.0))
    assert time_.slept == ([next_wait] if next_wait else [])
    held = metrics.registry.get_sample_value(
        "gateway_amp_rate_total", {"workspace": "ws-1", "family": "query_metrics", "outcome": "amp_429"}
    )
    assert held == (1 if error.retry else None)


async def test_families_and_workspaces_have_their_own_buckets() -> None:
    time_, upstream = SimulatedTime(), FakeUpstream()
    handle, _ = _paced(
        upstream,
        time_,
        query_metrics=Rate(1, 1),
        series_labels_metadata=Rate(1, 1),
        other_apis=Rate(1, 1),
        max_wait=60,
    )
    first = [
        _query(0),
        _query(1, workspace=OTHER),
        request("series", (("match[]", "up"),)),
        request("rules", ()),
    ]
    await _all(handle, first)
    assert time_.slept == []  # one bucket each
    # GetSeries, GetLabels and GetMetricMetadata are one family: each waits behind the series.
    await _all(
        handle,
        [request(name, (), timeout=10.0) for name in ("labels", "metadata", "label_values")],
    )
    assert time_.slept == [1.0, 2.0, 3.0]


async def test_what_the_gateway_answers_itself_and_families_left_unpaced_pass_untouched() -> None:
    time_, upstream = SimulatedTime(), FakeUpstream()
    handle, _ = _paced(upstream, time_, query_metrics=Rate(1, 1), max_wait=0)
    local = request("buildinfo", ())
    assert not local.endpoint.operation
    answers = await _all(handle, [local] * 5 + [request("series", (("match[]", "up"),))] * 5)
    assert all(isinstance(a, Answer) for a in answers)
    assert time_.slept == []


# ------------------------------------------------------------------ shared by processes


class SentAt(FakeUpstream):
    """Records when (time.monotonic) each request reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.at: list[float] = []

    async def __call__(self, request: Request) -> Answer:
        self.at.append(time.monotonic())
        return await super().__call__(request)


def _within_rate(times: list[float], rate: Rate) -> bool:
    """No window between two sends holds more than its rate's worth plus the burst (and one
    request's worth of the event loop's lateness in waking a sleeper)."""
    times = sorted(times)
    return all(
        j - i + 1 <= rate.burst + rate.per_second * (times[j] - times[i]) + 1
        for i in range(len(times))
        for j in range(i, len(times))
    )


async def test_two_workers_on_one_host_share_a_familys_bucket(
    two_workers: tuple[HostStore, HostStore],
) -> None:
    rate = Rate(20, 4)
    quotas = RateQuotas(query_metrics=rate, max_wait=0.4)
    upstream = SentAt()
    handles = [operation_rate(Pacer(quotas, Metrics(), host=store))(upstream) for store in two_workers]
    answers = await _all_of(handles, 24)
    sent = [a for a in answers if isinstance(a, Answer)]
    refused = [a for a in answers if isinstance(a, GatewayError)]
    # The burst at once, then one every 50 ms for the 0.4 s a request may wait (more when asking
    # took time: a turn's wait counts from when it was asked); the rest refused, in either worker.
    assert 4 + 8 <= len(sent) < 24
    assert refused and all(e.status == 429 for e in refused)
    assert _within_rate(upstream.at, rate)


async def test_amps_429_in_one_worker_holds_the_other_back(two_workers: tuple[HostStore, HostStore]) -> None:
    quotas = RateQuotas(query_metrics=Rate(100, 100), max_wait=0)
    throttled = operation_rate(Pacer(quotas, Metrics(), host=two_workers[0]))(ThrottledOnce(_amp_429("30")))
    other = operation_rate(Pacer(quotas, Metrics(), host=two_workers[1]))(FakeUpstream())
    await other(_query(0))
    with pytest.raises(GatewayError):
        await throttled(_query(1))
    with pytest.raises(GatewayError) as caught:
        await other(_query(2))
    assert "L-D5FD0534" in caught.value.message and caught.value.headers["Retry-After"] in ("29", "30")


def _take_turns(
    path: str, count: int, start: multiprocessing.synchronize.Barrier, sent: Any, lock: Any
) -> None:
    async def run() -> list[float]:
        quotas = RateQuotas(query_metrics=Rate(10, 3), max_wait=60)
        upstream = SentAt()
        handle = operation_rate(Pacer(quotas, Metrics(), host=HostStore(path, BOUND)))(upstream)
        start.wait()
        await asyncio.gather(*(handle(_query(n)) for n in range(count)))
        return upstream.at

    times = asyncio.run(run())
    with lock:
        sent.extend(times)


def test_turns_from_four_processes_keep_one_rate(host_path: str) -> None:
    manager = SPAWN.Manager()
    start, sent, lock = SPAWN.Barrier(4), manager.list(), manager.Lock()
    processes = [SPAWN.Process(target=_take_turns, args=(host_path, 5, start, sent, lock)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    times = list(sent)  # CLOCK_MONOTONIC: one clock for every process of the host
    assert len(times) == 20  # every one waited its turn (none past max_wait)
    # Each with its own bucket, the four would have sent 3 at once each.
    assert _within_rate(times, Rate(10, 3))


@pytest.fixture
async def two_on_redis(redis_server: RedisServer) -> AsyncIterator[tuple[SharedRedis, SharedRedis]]:
    settings_ = CacheSettings(mode="off", redis_url=redis_server.url)
    shared = SharedRedis(settings_, Metrics()), SharedRedis(settings_, Metrics())
    for one in shared:
        await one.connect()
    yield shared
    for one in shared:
        await one.aclose()


async def test_two_processes_on_redis_share_a_familys_bucket_and_its_hold(
    two_on_redis: tuple[SharedRedis, SharedRedis], tmp_path: Path
) -> None:
    rate = Rate(20, 4)
    quotas = RateQuotas(query_metrics=rate, max_wait=0.4)
    upstream = SentAt()
    # Each its own host's store: only Redis is shared.
    hosts = [HostStore(str(tmp_path / f"host-{i}"), BOUND, create=True) for i in range(2)]
    handles = [
        operation_rate(Pacer(quotas, Metrics(), shared, host, "deployment"))(upstream)
        for shared, host in zip(two_on_redis, hosts, strict=True)
    ]
    answers = await _all_of(handles, 24)
    assert 4 + 8 <= sum(isinstance(a, Answer) for a in answers) < 24
    assert _within_rate(upstream.at, rate)

    # AMP's 429 in one process holds the other back (a workspace whose bucket is full).
    throttled = operation_rate(Pacer(quotas, Metrics(), two_on_redis[0], hosts[0], "deployment"))(
        ThrottledOnce(_amp_429("30"))
    )
    with pytest.raises(GatewayError):
        await throttled(_query(100, workspace=OTHER))
    with pytest.raises(GatewayError) as caught:
        await handles[1](_query(101, workspace=OTHER))
    assert "L-D5FD0534" in caught.value.message
    assert all(shared.available for shared in two_on_redis)
    for host in hosts:
        host.close()


async def test_with_redis_away_the_hosts_store_keeps_the_rate(
    two_workers: tuple[HostStore, HostStore], redis_server: RedisServer
) -> None:
    settings_ = CacheSettings(mode="off", redis_url=redis_server.url)
    shared = [SharedRedis(settings_, Metrics()) for _ in two_workers]
    quotas = RateQuotas(query_metrics=Rate(0.001, 3), max_wait=0)
    handles = [
        operation_rate(Pacer(quotas, Metrics(), s, store))(FakeUpstream())
        for s, store in zip(shared, two_workers, strict=True)
    ]
    try:

        async def codes(count: int) -> list[int]:
            answers = [await _outcome(handles[i % 2], _query(i)) for i in range(count)]
            return [200 if isinstance(a, Answer) else a.status for a in answers]

        assert await codes(5) == [200] * 3 + [429] * 2  # on Redis
        redis_server.stop()
        assert await codes(5) == [200] * 3 + [429] * 2  # on the host's store, both workers
        assert not any(s.available for s in shared)
    finally:
        for s in shared:
            await s.aclose()
