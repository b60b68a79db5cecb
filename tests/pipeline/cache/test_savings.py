"""What the cache saved, in AMP's query samples (QSP): a hit on a whole response saves what its
fetch processed; an answer made from extents saves the per-step stats kept for the steps it
served from them, never those fetched now, and nothing for steps fetched without stats.

The cache stage alone, behind an upstream that answers any window with per-step costs that are
a fixed function of the step's time; then the whole app against the AMP stand-in and Prometheus.
"""

from __future__ import annotations

import asyncio
import gzip
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.gateway import cache_raw, gateway_settings, in_process
from support.stages import request

from gateway.config import CacheSettings
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.cache import ResultsCache, codec
from gateway.pipeline.cache.extents import Run, add_run
from gateway.pipeline.cache.matrix import Matrix, Series, dump_extent, load_extent, replace_range
from gateway.pipeline.cache.safety import format_seconds
from gateway.pipeline.host import HostStore
from gateway.pipeline.model import Answer, QueryWindow, Request
from gateway.promql import parse_query

STEP = 15_000
NOW = 2_000_000.0  # the cache's clock: far after the windows below, every point final
BASE = 1_000_020_000  # ms: a window start on the 15 s grid, off the 10 m split boundaries
INSTANT_COST = 4321


def step_cost(t: int) -> int:
    """What the upstream processes at step t (ms): a fixed function of the time alone."""
    return 1 + (t // 1000 * 7919) % 101


def window_cost(start: int, end: int, step: int = STEP) -> int:
    return sum(step_cost(t) for t in range(start, end + 1, step))


def _ms(value: str) -> int:
    return round(float(value) * 1000)


@dataclass
class Costed:
    """The next handler: answers any query_range window with one series (a point per step,
    valued by its time) and what processing it cost, per step (`stats`) or not at all; an
    instant query with `instant_cost` (-1: not said); or fails with `error`."""

    stats: bool = True
    instant_cost: int = INSTANT_COST
    error: GatewayError | None = None
    processed: list[int] = field(default_factory=list)  # samples_processed of each answer
    calls: int = 0

    async def __call__(self, req: Request) -> Answer:
        self.calls += 1
        if self.error is not None:
            raise self.error
        if req.endpoint.name == "query_range":
            return self._range(req)
        if req.endpoint.name == "query":
            body = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
            cost = self.instant_cost
            answer = Answer(
                body,
                samples_processed=cost,
                samples_per_step=((req.time_ms or 0, cost),) if cost >= 0 else (),
            )
        else:  # a metadata endpoint, even one that said what it cost, is not billed by it
            answer = Answer(b'{"status":"success","data":["a"]}', samples_processed=99)
        self.processed.append(max(0, answer.samples_processed))
        return self._encoded(req, answer)

    def _range(self, req: Request) -> Answer:
        start, end, step = _ms(req.param("start")), _ms(req.param("end")), _ms(req.param("step"))
        steps = range(start, end + 1, step)
        values = [[orjson.Fragment(format_seconds(t).encode()), str(t)] for t in steps]
        result = [{"metric": {"__name__": "m"}, "values": values}] if values else []
        body = orjson.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}})
        per_step = tuple((t, step_cost(t)) for t in steps) if self.stats else ()
        processed = sum(n for _, n in per_step) if self.stats else -1
        self.processed.append(max(0, processed))
        return self._encoded(req, Answer(body, samples_processed=processed, samples_per_step=per_step))

    @staticmethod
    def _encoded(req: Request, answer: Answer) -> Answer:
        if req.accept_gzip:
            return answer.replace(body=gzip.compress(answer.body), gzipped=True)
        return answer


class Saved:
    """The cache's `on_saved`: what it was told each answer saved."""

    def __init__(self) -> None:
        self.calls: list[tuple[Request, int]] = []

    async def __call__(self, req: Request, samples: int) -> None:
        self.calls.append((req, samples))

    def take(self) -> list[int]:
        out = [samples for _, samples in self.calls]
        self.calls.clear()
        return out


def _cache(
    upstream: Costed, path: str, saved: Saved, clock: Callable[[], float] = lambda: NOW, **cache: float
) -> ResultsCache:
    return ResultsCache(
        CacheSettings(**{"split_interval": 600.0, **cache}),  # type: ignore[arg-type]  # reason: float fields only
        Metrics(),
        upstream,
        clock=clock,
        host=HostStore(path, 1 << 26, create=True),
        on_saved=saved,
    )


def _range(start: int, end: int, step: int = STEP, **fields: object) -> Request:
    params = (("query", "m"), ("start", format_seconds(start)), ("end", format_seconds(end)))
    params += (("step", format_seconds(step)),)
    window = QueryWindow(start, end, step * 1_000_000)
    return request("query_range", params, expr=parse_query("m"), window=window, **fields)


def _instant(time_ms: int = 1_000_000_000, **fields: object) -> Request:
    params = (("query", "up"), ("time", format_seconds(time_ms)))
    return request("query", params, expr=parse_query("up"), time_ms=time_ms, **fields)


def _points(answer: Answer) -> list[int]:
    doc = orjson.loads(answer.json_bytes())
    return [_ms(str(t)) for series in doc["data"]["result"] for t, _ in series["values"]]


# ---------------------------------------------------------------- whole responses


async def test_a_repeated_instant_query_saves_what_its_fetch_processed_from_every_copy(tmp_path) -> None:
    upstream, saved = Costed(), Saved()
    cache = _cache(upstream, str(tmp_path), saved)
    assert (await cache(_instant(accept_gzip=True))).cache == "miss"
    assert saved.take() == []
    # the host's entry, then this worker's gzip copy; a plain copy made, then served
    for accept_gzip in (True, True, False, False):
        assert (await cache(_instant(accept_gzip=accept_gzip))).cache == "hit"
        assert saved.take() == [INSTANT_COST]
    # another worker of the same host reads the entry's header: the samples are in it
    other = _cache(upstream, str(tmp_path), saved)
    assert (await other(_instant())).cache == "hit"
    assert saved.take() == [INSTANT_COST]
    assert upstream.calls == 1


async def test_a_refreshed_entry_saves_its_own_fetch_not_the_copies_of_the_old(tmp_path) -> None:
    upstream, saved = Costed(), Saved()
    cache = _cache(upstream, str(tmp_path), saved)
    await cache(_instant())
    await cache(_instant())  # a plain copy of the first entry
    await cache(_instant(accept_gzip=True))
    await cache(_instant(accept_gzip=True))  # and the gzip entry's copy
    for cost, told in ((77, [77, 77]), (-1, [])):  # the refresh's cost; then one that said none
        upstream.instant_cost = cost
        saved.take()
        assert (await cache(_instant(no_cache=True))).cache == "bypass; reason=no-cache-header"
        assert saved.take() == []
        assert (await cache(_instant())).cache == "hit"
        assert (await cache(_instant(accept_gzip=True))).cache == "hit"
        assert saved.take() == told


async def test_metadata_hits_save_nothing(tmp_path) -> None:
    upstream, saved = Costed(), Saved()
    cache = _cache(upstream, str(tmp_path), saved)
    labels = request("labels", ())
    assert (await cache(labels)).cache == "miss"
    assert (await cache(labels)).cache == "hit"
    assert saved.take() == []


def test_the_samples_processed_are_in_the_header_and_under_its_checksum() -> None:
    entry = codec.entry(codec.KIND_RESPONSE, NOW + 60, 3, b"{}", stored_at=NOW, processed=2**40 + 7)
    blob = codec.encode(entry)
    assert codec.decode(blob, NOW) == entry
    at = blob.index((2**40 + 7).to_bytes(8, "big"))
    assert at < codec.HEADER_BYTES
    damaged = blob[:at] + bytes([blob[at] ^ 1]) + blob[at + 1 :]
    with pytest.raises(codec.DamagedEntry):
        codec.decode(damaged, NOW)


# ---------------------------------------------------------------- range queries


async def test_a_repeated_range_saves_the_per_step_stats_of_its_fetch(tmp_path) -> None:
    upstream, saved = Costed(), Saved()
    cache = _cache(upstream, str(tmp_path), saved)
    start, end = BASE, BASE + 120 * STEP
    assert (await cache(_range(start, end))).cache == "miss"
    assert saved.take() == []
    assert (await cache(_range(start, end))).cache == "hit"  # the whole response
    assert saved.take() == [upstream.processed[0]] == [window_cost(start, end)]
    # a window inside it: another whole key, answered from the extents alone
    inside = await cache(_range(start + 7 * STEP, end - 30 * STEP))
    assert (inside.cache, _points(inside)) == (
        "hit",
        list(range(start + 7 * STEP, end - 30 * STEP + 1, STEP)),
    )
    assert saved.take() == [window_cost(start + 7 * STEP, end - 30 * STEP)]
    assert upstream.calls == 1


async def test_a_shifted_range_saves_the_overlap_and_not_what_it_fetched(tmp_path) -> None:
    upstream, saved = Costed(), Saved()
    cache = _cache(upstream, str(tmp_path), saved)
    start, end = BASE, BASE + 120 * STEP
    await cache(_range(start, end))
    fetched_before = len(upstream.processed)
    shift = 8 * STEP  # the dashboard's refresh: the same step, the window moved on
    answer = await cache(_range(start + shift, end + shift))
    assert answer.cache == "partial"
    assert _points(answer) == list(range(start + shift, end + shift + 1, STEP))
    assert saved.take() == [window_cost(start + shift, end)]
    assert sum(upstream.processed[fetched_before:]) == window_cost(end + STEP, end + shift)
    # its whole response saves the whole window: the overlap's and the new steps' stats
    assert (await cache(_range(start + shift, end + shift))).cache == "hit"
    assert saved.take() == [window_cost(start + shift, end + shift)]


async def test_steps_fetched_without_stats_save_nothing(tmp_path) -> None:
    upstream, saved = Costed(), Saved()
    cache = _cache(upstream, str(tmp_path), saved)
    start, end = BASE, BASE + 40 * STEP
    await cache(_range(start, end))  # with stats
    upstream.stats = False
    await cache(_range(end + STEP, end + 40 * STEP))  # a window after it, without
    saved.take()
    both = await cache(_range(start, end + 40 * STEP))
    assert both.cache == "hit" and len(_points(both)) == 81
    assert saved.take() == [window_cost(start, end)]  # the unknown steps count 0, not a guess
    # a whole response fetched without stats saves nothing on a hit
    upstream.stats = False
    await cache(_range(BASE + 9000 * STEP, BASE + 9040 * STEP))
    assert (await cache(_range(BASE + 9000 * STEP, BASE + 9040 * STEP))).cache == "hit"
    assert saved.take() == []


async def test_stale_answers_save_what_they_served(tmp_path) -> None:
    upstream, saved = Costed(), Saved()
    clock = [NOW]
    cache = _cache(upstream, str(tmp_path), saved, lambda: clock[0], results_ttl=100.0, max_stale=3600.0)
    await cache(_instant())
    # the fresh tail of a range: its final part kept as extents, the recent part fetched
    end = int(NOW * 1000) // STEP * STEP - 660_000  # final: older than the 600 s horizon
    start = end - 40 * STEP
    await cache(_range(start, end))
    clock[0] += 200  # the instant entry expired 100 s ago; the extents too, within max_stale
    upstream.error = GatewayError("unavailable", "ingesters down", 503, failure="server-error")
    saved.take()
    assert (await cache(_instant())).cache == "stale"
    assert saved.take() == [INSTANT_COST]

    clock[0] -= 150  # the extents live; a window reaching into the recent points fails
    tail = await cache(_range(start, end + 20 * STEP))
    assert tail.cache == "stale" and _points(tail) == list(range(start, end + 1, STEP))
    assert saved.take() == [window_cost(start, end)]


# ---------------------------------------------------------------- the bookkeeping, by property


@st.composite
def windows(draw: st.DrawFn) -> tuple[int, int, list[tuple[int, int, int, bool]]]:
    """A grid (step, split) and a sequence of windows on it: (start, end, no-cache)."""
    step = draw(st.sampled_from([15_000, 60_000, 7_000]))
    split = draw(st.sampled_from([60_000, 300_000, 600_000]))
    origin = 1_000_000_000_000 // step * step
    out = []
    for _ in range(draw(st.integers(1, 8))):
        first = draw(st.integers(0, 80))
        points = draw(st.integers(0, 60))
        slack = draw(st.integers(0, step - 1))  # an end off the grid
        out.append(
            (origin + first * step, origin + (first + points) * step + slack, step, draw(st.booleans()))
        )
    return step, split, out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=windows(), recent_steps=st.integers(-10, 90))
def test_saved_and_fetched_make_what_a_fresh_fetch_costs(case, recent_steps: int) -> None:
    """Over any sequence of windows (overlapping, shifted, inside, asked fresh; with the horizon
    anywhere in them, so recent tails are fetched every time), each answer's saved samples plus
    those fetched for it are what a fresh fetch of its window costs, when a step costs the same
    whichever fetch it is in."""
    step, split, sequence = case
    horizon = 1_000_000_000_000 // step * step + recent_steps * step
    now = horizon / 1000 + 600  # max_freshness

    async def run() -> None:
        with tempfile.TemporaryDirectory() as path:
            upstream, saved = Costed(), Saved()
            cache = _cache(upstream, path, saved, lambda: now, split_interval=split / 1000)
            for start, end, _, no_cache in sequence:
                before = len(upstream.processed)
                answer = await cache(_range(start, end, step, no_cache=no_cache))
                grid_end = start + (end - start) // step * step
                assert _points(answer) == list(range(start, grid_end + 1, step))
                fetched = sum(upstream.processed[before:])
                told = saved.take()
                assert len(told) <= 1 and all(samples > 0 for samples in told)
                assert sum(told) + fetched == window_cost(start, grid_end, step), (
                    answer.cache,
                    told,
                    fetched,
                )
                if no_cache:
                    assert told == []
            await cache.aclose()

    asyncio.run(run())


@st.composite
def writes(draw: st.DrawFn) -> tuple[int, list[tuple[Run, bool]]]:
    step = draw(st.sampled_from([1000, 15_000]))
    out = []
    for _ in range(draw(st.integers(1, 10))):
        lo = draw(st.integers(0, 50))
        hi = draw(st.integers(lo, 50))
        out.append(((lo * step, hi * step), draw(st.booleans())))
    return step, out


@given(writes())
def test_an_extent_keeps_the_cost_of_the_last_fetch_of_each_step_it_holds(case) -> None:
    """replace_range writes, merges and overwrites per-step costs as it does points: a step's
    cost is the last write's (none when that fetch had no stats), and it survives storage."""
    step, sequence = case
    extent, coverage = Matrix(), []
    model: dict[int, int] = {}
    for generation, ((lo, hi), with_stats) in enumerate(sequence):
        fetched = Matrix(
            {
                (("__name__", "m"),): Series(
                    {"__name__": "m"}, [(t, str(generation)) for t in range(lo, hi + 1, step)]
                )
            }
        )
        # a fetch's stats may reach beyond the part written: only [lo, hi] is taken
        span = range(lo - 3 * step, hi + 3 * step + 1, step)
        fetched.per_step = {t: step_cost(t) + generation for t in span} if with_stats else {}
        replace_range(extent, fetched, lo, hi)
        coverage = add_run(coverage, (lo, hi), step)
        for t in range(lo, hi + 1, step):
            model.pop(t, None)
            if with_stats:
                model[t] = step_cost(t) + generation
    assert extent.per_step == model
    held = {t for a, b in coverage for t in range(a, b + 1, step)}
    assert set(model) <= held
    loaded_coverage, loaded = load_extent(dump_extent(coverage, extent))
    assert (loaded_coverage, loaded.per_step) == (coverage, model)


# ---------------------------------------------------------------- the whole app, AMP's own figures

QUERY = 'sum by (instance) (rate(demo_cpu_usage_seconds_total{mode="user"}[1m]))'


async def _saved_in_ledger(gateway) -> int:
    return sum(row.saved_samples for row in await gateway.ledger.rows("workspace", 3600, None))


async def _stats(prometheus, start: float, end: float) -> tuple[int, dict[int, int]]:
    """What Prometheus processes for the window, asked directly: in all, and at each step (which
    AMP always says; Prometheus only with --enable-feature=promql-per-step-stats, else {})."""
    async with httpx.AsyncClient(base_url=prometheus.url) as client:
        params = {"query": QUERY, "start": str(start), "end": str(end), "step": "15", "stats": "all"}
        samples = (await client.post("/api/v1/query_range", data=params)).json()["data"]["stats"]["samples"]
    per_step = {round(t * 1000): int(n) for t, n in samples.get("totalQueryableSamplesPerStep") or ()}
    return int(samples["totalQueryableSamples"]), per_step


async def test_savings_through_the_gateway_are_what_amp_billed(fresh_amp, aws_env, prometheus) -> None:
    end = prometheus.data_end - 3600
    start = end - 1800
    settings_ = gateway_settings(fresh_amp, raw=cache_raw(split_interval="10m"))
    window = {"query": QUERY, "start": str(start), "end": str(end), "step": "15"}
    async with in_process(settings_) as (client, gateway):
        instant = {"query": QUERY, "time": str(end)}
        assert (await client.post("/api/v1/query", data=instant)).headers["x-cache"] == "miss"
        billed = fresh_amp.charged_samples()
        assert billed > 0
        assert (await client.post("/api/v1/query", data=instant)).headers["x-cache"] == "hit"
        assert await _saved_in_ledger(gateway) == billed

        fresh_amp.reset()
        assert (await client.post("/api/v1/query_range", data=window)).headers["x-cache"] == "miss"
        range_billed = fresh_amp.charged_samples()
        total, first = await _stats(prometheus, start, end)
        assert range_billed == total > 0
        assert (await client.post("/api/v1/query_range", data=window)).headers["x-cache"] == "hit"
        assert await _saved_in_ledger(gateway) == billed + range_billed

        # the dashboard's refresh: the overlap saves its steps' stats (none known: nothing)
        fresh_amp.reset()
        shifted = {**window, "start": str(start + 300), "end": str(end + 300)}
        answer = await client.post("/api/v1/query_range", data=shifted)
        assert answer.headers["x-cache"] == "partial"
        overlap = sum(n for t, n in first.items() if t >= (start + 300) * 1000)
        assert await _saved_in_ledger(gateway) == billed + range_billed + overlap
        if first:  # and what was fetched for it is the rest of what it costs, not saved
            assert overlap > 0 and sum(first.values()) == total
            fresh_total, _ = await _stats(prometheus, start + 300, end + 300)
            assert fresh_amp.charged_samples() == fresh_total - overlap
