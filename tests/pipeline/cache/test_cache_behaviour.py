"""What the cache asks the upstream (AMP stand-in) for, and what it answers, endpoint by endpoint."""

from __future__ import annotations

import asyncio
import itertools
from urllib.parse import parse_qsl

import httpx
import orjson
from support.gateway import gateway_settings

from .conftest import cache_raw, cached_gateway, data_of

QUERY = 'sum by (instance) (rate(demo_cpu_usage_seconds_total{mode="user"}[1m]))'


def _forwarded(amp, endpoint: str = "query_range") -> list[dict[str, str]]:
    out = []
    for record in amp.forwarded:
        if record.path.endswith("/" + endpoint):
            out.append(dict(parse_qsl((record.body or record.raw_query).decode())))
    return out


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _direct(prometheus, endpoint: str, params: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=prometheus.url) as client:
        return await client.post(f"/api/v1/{endpoint}", data=params)


def _range(query: str, start: float, end: float, step: int = 15) -> dict[str, str]:
    return {"query": query, "start": str(start), "end": str(end), "step": str(step)}


async def test_warm_hit_costs_nothing_and_shifts_fetch_only_the_missing_steps(fresh_amp, aws_env, prometheus):
    end = prometheus.data_end - 3600
    start = end - 1800
    settings = gateway_settings(fresh_amp, raw=cache_raw(split_interval="10m"))
    async with cached_gateway(settings) as (client, _):
        first = await client.post("/api/v1/query_range", data=_range(QUERY, start, end))
        assert first.headers["x-cache"] == "miss"
        assert len(_forwarded(fresh_amp)) == 1
        again = await client.post("/api/v1/query_range", data=_range(QUERY, start, end))
        assert again.headers["x-cache"] == "hit"
        assert len(_forwarded(fresh_amp)) == 1
        assert data_of(again) == data_of(first)

        fresh_amp.reset()
        shifted = _range(QUERY, start + 300, end + 300)
        answer = await client.post("/api/v1/query_range", data=shifted)
        assert answer.headers["x-cache"] == "partial"
        fetched = _forwarded(fresh_amp)
        # only the 5 new minutes (20 steps of 15 s after the old end), cut at 10 m boundaries
        runs = sorted((float(f["start"]), float(f["end"])) for f in fetched)
        assert runs[0][0] == end + 15 and runs[-1][1] == end + 300
        for (_, hi), (lo, _) in itertools.pairwise(runs):
            assert lo == hi + 15 and lo % 600 == 0
        assert data_of(answer) == data_of(await _direct(prometheus, "query_range", shifted))


async def test_repeated_small_queries_do_not_grow_the_entry(fresh_amp, aws_env, prometheus):
    base = prometheus.data_end - 2 * 3600
    settings = gateway_settings(fresh_amp, raw=cache_raw(split_interval="1h"))
    async with cached_gateway(settings) as (client, cache):
        for i in range(12):
            params = _range("demo_num_cpus", base + i * 150, base + i * 150 + 300)
            response = await client.post("/api/v1/query_range", data=params)
            assert response.status_code == 200
        store = cache.store
        # An extent's key ends in ":b<bucket>" (its digest, after "gwc:", may begin with b too).
        extents = [k for k in store.memory.stored_keys() if k.rsplit(":", 1)[1].startswith("b")]
        blobs = store.memory.get_many(extents)
        from gateway.pipeline.cache.matrix import load_extent

        for entry in blobs:
            assert entry is not None
            coverage, matrix = load_extent(entry.data())
            assert len(coverage) == 1  # one merged run, however many requests made it
            for series in matrix.series.values():
                stamps = [t for t, _ in series.values]
                assert stamps == sorted(set(stamps))


async def test_recent_points_live_only_briefly(fresh_amp, aws_env, prometheus):
    end = prometheus.data_end
    clock = Clock(end + 60)
    settings = gateway_settings(fresh_amp, raw=cache_raw(split_interval="1h", recent_ttl="15s"))
    params = _range(QUERY, end - 3600, end)
    async with cached_gateway(settings, clock=clock) as (client, _):
        assert (await client.post("/api/v1/query_range", data=params)).headers["x-cache"] == "miss"
        clock.now += 5
        # a wall of dashboards within recent_ttl: one upstream call
        assert (await client.post("/api/v1/query_range", data=params)).headers["x-cache"] == "hit"
        assert len(_forwarded(fresh_amp)) == 1
        clock.now += 20
        fresh_amp.reset()
        answer = await client.post("/api/v1/query_range", data=params)
        assert answer.headers["x-cache"] == "partial"
        fetched = _forwarded(fresh_amp)
        assert len(fetched) == 1
        horizon = clock.now - 600
        # the refetch starts right after the last point that was already final
        assert horizon - 15 * 4 < float(fetched[0]["start"]) <= horizon + 15 * 4
        assert float(fetched[0]["end"]) == end
        assert data_of(answer) == data_of(await _direct(prometheus, "query_range", params))


async def test_at_modifiers_and_negative_offsets_match_prometheus(fresh_amp, aws_env, prometheus):
    end = prometheus.data_end - 1800
    settings = gateway_settings(fresh_amp, raw=cache_raw(split_interval="5m"))
    recent_at = prometheus.data_end - 60
    queries = [
        "demo_num_cpus @ end()",
        "rate(demo_cpu_usage_seconds_total[5m] @ start())",
        "demo_memory_usage_bytes - demo_memory_usage_bytes @ end() offset 1m",
        f"demo_disk_usage_bytes @ {end - 900}",
        f"demo_disk_usage_bytes @ {recent_at}",
        "demo_disk_usage_bytes offset -2m",
        "max_over_time(rate(demo_cpu_usage_seconds_total[1m])[5m:30s] offset -1m)",
        'label_replace(demo_num_cpus, "x", "@ start()", "", "")',
    ]
    async with cached_gateway(settings) as (client, _):
        for query in queries:
            for shift in (0, 0, 60, -120, 30):
                params = _range(query, end - 1200 + shift, end + shift)
                answer = await client.post("/api/v1/query_range", data=params)
                assert answer.status_code == 200, (query, answer.text)
                reference = await _direct(prometheus, "query_range", params)
                assert data_of(answer) == data_of(reference), (query, shift, answer.headers["x-cache"])
        # an @ time inside the freshness window is never kept long, whatever the window
        params = _range(f"demo_disk_usage_bytes @ {recent_at}", end - 1200, end)
        assert (await client.post("/api/v1/query_range", data=params)).headers["x-cache"] == "hit"
        answer = await client.post(
            "/api/v1/query_range", data=_range(f"demo_disk_usage_bytes @ {recent_at}", end - 1185, end + 15)
        )
        assert answer.headers["x-cache"] == "miss"


async def test_reasons_for_not_caching(fresh_amp, aws_env, prometheus):
    end = prometheus.data_end - 1800
    settings = gateway_settings(fresh_amp, raw=cache_raw())
    async with cached_gateway(settings) as (client, _):
        cases = [
            ({**_range(QUERY, end - 600, end), "stats": "all"}, "stats"),
            ({**_range(QUERY, end - 600, end), "limit": "2"}, "limit"),
            ({**_range(QUERY, end - 600, end, 15), "step": "0.0005"}, None),
            (_range("1 +", end - 600, end), None),
        ]
        for params, reason in cases:
            answer = await client.post("/api/v1/query_range", data=params)
            if reason is not None:
                assert answer.headers["x-cache"] == f"bypass; reason={reason}"
        answer = await client.post("/api/v1/query", data={"query": "demo_num_cpus"})
        assert answer.headers["x-cache"] == "bypass; reason=no-time"
        # an execution error is passed on and never stored
        bad = _range('label_replace(demo_num_cpus, "~invalid", "", "src", "(.*)")', end - 600, end)
        for _ in range(2):
            answer = await client.post("/api/v1/query_range", data=bad)
            assert answer.status_code >= 400
            assert answer.headers["x-cache"] == "bypass; reason=error-not-cached"
        assert len([f for f in _forwarded(fresh_amp) if "invalid" in f["query"]]) == 2
        metrics = (await client.get("/metrics")).text
        assert 'gateway_cache_not_cached_total{reason="error-not-cached"} 2.0' in metrics
        assert 'gateway_cache_not_cached_total{reason="stats"} 1.0' in metrics


async def test_no_cache_header_bypasses_the_read_and_refreshes(fresh_amp, aws_env, prometheus):
    end = prometheus.data_end - 1800
    settings = gateway_settings(fresh_amp, raw=cache_raw())
    params = _range(QUERY, end - 600, end)
    async with cached_gateway(settings) as (client, _):
        await client.post("/api/v1/query_range", data=params)
        fresh = await client.post("/api/v1/query_range", data=params, headers={"Cache-Control": "no-cache"})
        assert fresh.headers["x-cache"] == "bypass; reason=no-cache-header"
        assert len(_forwarded(fresh_amp)) == 2
        assert (await client.post("/api/v1/query_range", data=params)).headers["x-cache"] == "hit"
        assert len(_forwarded(fresh_amp)) == 2


async def test_instant_and_metadata_ttl_entries(fresh_amp, aws_env, prometheus):
    past = prometheus.data_end - 1800
    clock = Clock(prometheus.data_end + 1)
    settings = gateway_settings(fresh_amp, raw=cache_raw(metadata_ttl="1m"))
    async with cached_gateway(settings, clock=clock) as (client, _):
        params = {"query": QUERY, "time": str(past)}
        first = await client.post("/api/v1/query", data=params)
        second = await client.post("/api/v1/query", data=params)
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
        assert data_of(second) == data_of(await _direct(prometheus, "query", params))
        assert len(_forwarded(fresh_amp, "query")) == 1

        for path in ("/api/v1/labels", "/api/v1/label/instance/values", "/api/v1/metadata"):
            first = await client.get(path)
            second = await client.get(path)
            assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit"), path
            assert second.json() == first.json()
        series = {"match[]": "demo_num_cpus"}
        assert (await client.get("/api/v1/series", params=series)).headers["x-cache"] == "miss"
        assert (await client.get("/api/v1/series", params=series)).headers["x-cache"] == "hit"
        clock.now += 61
        assert (await client.get("/api/v1/labels")).headers["x-cache"] == "miss"


async def test_warnings_are_replayed_with_the_data(fresh_amp, aws_env, prometheus):
    end = prometheus.data_end - 1800
    body = orjson.dumps(
        {
            "status": "success",
            "data": {"resultType": "vector", "result": []},
            "warnings": ["query processed many samples"],
        }
    )
    fresh_amp.inject(200, count=1, body=body, path_contains="/api/v1/query")
    settings = gateway_settings(fresh_amp, raw=cache_raw())
    async with cached_gateway(settings) as (client, _):
        params = {"query": "demo_num_cpus", "time": str(end)}
        first = await client.post("/api/v1/query", data=params)
        second = await client.post("/api/v1/query", data=params)
        assert second.headers["x-cache"] == "hit"
        assert second.json()["warnings"] == first.json()["warnings"] == ["query processed many samples"]


async def test_identical_concurrent_requests_share_one_upstream_call(fresh_amp, aws_env, prometheus):
    end = prometheus.data_end - 1800
    settings = gateway_settings(fresh_amp, raw=cache_raw())
    fresh_amp.inject_delay(0.3, count=None)
    params = _range(QUERY, end - 600, end)
    async with cached_gateway(settings) as (client, _):
        answers = await asyncio.gather(*(client.post("/api/v1/query_range", data=params) for _ in range(10)))
        assert {a.status_code for a in answers} == {200}
        assert len({a.content for a in answers}) == 1
        assert len(_forwarded(fresh_amp)) == 1
        metrics = (await client.get("/metrics")).text
        assert "gateway_cache_coalesced_total 9.0" in metrics


async def test_hits_are_served_gzipped_to_clients_that_accept_it(fresh_amp, aws_env, prometheus):
    end = prometheus.data_end - 1800
    settings = gateway_settings(fresh_amp, raw=cache_raw())
    params = _range(QUERY, end - 600, end)
    async with cached_gateway(settings) as (client, _):
        await client.post("/api/v1/query_range", data=params)
        zipped = await client.post("/api/v1/query_range", data=params, headers={"Accept-Encoding": "gzip"})
        plain = await client.post("/api/v1/query_range", data=params, headers={"Accept-Encoding": "identity"})
        assert zipped.headers["content-encoding"] == "gzip"
        assert "content-encoding" not in plain.headers
        assert zipped.json() == plain.json()
        metrics = (await client.get("/metrics")).text
        assert 'gateway_cache_requests_total{endpoint="query_range",result="hit"} 2.0' in metrics
        assert 'gateway_cache_samples_total{source="cache"}' in metrics


async def test_memory_bound_holds_under_a_flood_of_distinct_queries(fresh_amp, aws_env, prometheus):
    end = prometheus.data_end - 1800
    bound = 256 * 1024
    settings = gateway_settings(fresh_amp, raw=cache_raw(memory_bytes=bound))
    async with cached_gateway(settings) as (client, cache):
        for i in range(120):
            params = _range(f"demo_memory_usage_bytes * {i}", end - 1800, end)
            assert (await client.post("/api/v1/query_range", data=params)).status_code == 200
            assert cache.store.memory.bytes <= bound
        assert len(cache.store.memory) > 3
