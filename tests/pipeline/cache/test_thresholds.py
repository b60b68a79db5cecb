"""AMP's sample thresholds and the cache: limits on what a fetch may cost, not part of an answer.
Cached data is served whatever the threshold; every fetch carries the client's thresholds; an
answer AMP refused, or warned about, under a threshold is never stored."""

from __future__ import annotations

from urllib.parse import parse_qsl

import orjson
from support.gateway import gateway_settings

from .conftest import cache_raw, cached_gateway, data_of

QUERY = 'sum by (instance) (rate(demo_cpu_usage_seconds_total{mode="user"}[1m]))'
GUARDS = {
    "max_samples_processed_warning_threshold": "1000000",
    "max_samples_processed_error_threshold": "5000000",
}
WARNED = "query processed more samples than max_samples_processed_warning_threshold (1000)"


def _forwarded(amp, endpoint: str) -> list[dict[str, str]]:
    return [
        dict(parse_qsl((r.body or r.raw_query).decode()))
        for r in amp.forwarded
        if r.path.endswith("/" + endpoint)
    ]


def _range(start: float, end: float) -> dict[str, str]:
    return {"query": QUERY, "start": str(start), "end": str(end), "step": "15"}


async def test_threshold_requests_are_answered_from_the_cache_and_stored_for_everyone(
    fresh_amp, aws_env, prometheus
) -> None:
    end = prometheus.data_end - 3600
    settings = gateway_settings(fresh_amp, raw=cache_raw(split_interval="10m"))
    async with cached_gateway(settings) as (client, _):
        plain = await client.post("/api/v1/query_range", data=_range(end - 1800, end))
        assert plain.headers["x-cache"] == "miss"
        guarded = await client.post("/api/v1/query_range", data={**_range(end - 1800, end), **GUARDS})
        assert guarded.headers["x-cache"] == "hit"
        assert guarded.content == plain.content
        assert len(_forwarded(fresh_amp, "query_range")) == 1

        # and the other way round, for instant queries: stored under a threshold, served without
        instant = {"query": QUERY, "time": str(end)}
        first = await client.post("/api/v1/query", data={**instant, **GUARDS})
        assert first.headers["x-cache"] == "miss"
        assert _forwarded(fresh_amp, "query")[0].items() >= GUARDS.items()
        again = await client.post("/api/v1/query", data=instant)
        assert again.headers["x-cache"] == "hit" and again.content == first.content
        lowered = {**GUARDS, "max_samples_processed_error_threshold": "1"}
        assert (await client.post("/api/v1/query", data={**instant, **lowered})).headers["x-cache"] == "hit"
        assert len(_forwarded(fresh_amp, "query")) == 1


async def test_sub_range_fetches_carry_the_clients_thresholds(fresh_amp, aws_env, prometheus) -> None:
    end = prometheus.data_end - 3600
    settings = gateway_settings(fresh_amp, raw=cache_raw(split_interval="10m"))
    async with cached_gateway(settings) as (client, _):
        await client.post("/api/v1/query_range", data=_range(end - 1800, end))
        fresh_amp.reset()
        shifted = {**_range(end - 1500, end + 900), **GUARDS}
        answer = await client.post("/api/v1/query_range", data=shifted)
        assert answer.headers["x-cache"] == "partial"
        sent = _forwarded(fresh_amp, "query_range")
        assert len(sent) >= 2  # cut at the 10 m boundaries
        for params in sent:
            assert params.items() >= GUARDS.items(), params
        direct = {k: v for k, v in shifted.items() if k not in GUARDS}
        assert data_of(answer) == data_of(await client.post("/api/v1/query_range", data=direct))


async def test_an_answer_refused_under_a_threshold_is_not_cached(fresh_amp, aws_env, prometheus) -> None:
    end = prometheus.data_end - 3600
    refusal = orjson.dumps(
        {
            "status": "error",
            "errorType": "execution",
            "error": "query exceeded max_samples_processed_error_threshold (5000)",
        }
    )
    settings = gateway_settings(fresh_amp, raw=cache_raw(split_interval="10m"))
    async with cached_gateway(settings) as (client, cache):
        for endpoint, params in (
            ("query_range", _range(end - 1800, end)),
            ("query", {"query": QUERY, "time": str(end)}),
        ):
            fresh_amp.inject(422, body=refusal, path_contains=endpoint)
            refused = await client.post(f"/api/v1/{endpoint}", data={**params, **GUARDS})
            assert refused.status_code == 422 and refused.content == refusal
            assert refused.headers["x-cache"] == "bypass; reason=error-not-cached"
            assert cache.store.memory.stored_keys() == []
            after = await client.post(f"/api/v1/{endpoint}", data={**params, **GUARDS})
            assert after.status_code == 200 and after.headers["x-cache"] == "miss"
            fresh_amp.reset()
            for key in cache.store.memory.stored_keys():  # the next endpoint starts empty
                cache.store.memory.delete(key)


async def test_a_threshold_warning_is_passed_on_and_never_stored(fresh_amp, aws_env, prometheus) -> None:
    # The 5 minutes after `end` in one 10-minute split bucket: a gap across two is two fetches.
    end = int(prometheus.data_end - 3600) // 600 * 600 + 60
    warned_matrix = orjson.dumps(
        {"status": "success", "data": {"resultType": "matrix", "result": []}, "warnings": [WARNED]}
    )
    settings = gateway_settings(fresh_amp, raw=cache_raw(split_interval="10m"))
    async with cached_gateway(settings) as (client, cache):
        # a whole answer with AMP's warning
        fresh_amp.inject(200, body=warned_matrix, path_contains="query_range")
        warned = await client.post("/api/v1/query_range", data={**_range(end - 1800, end), **GUARDS})
        assert warned.json()["warnings"] == [WARNED]
        assert warned.headers["x-cache"] == "bypass; reason=threshold-warning"
        assert cache.store.memory.stored_keys() == []
        unguarded = await client.post("/api/v1/query_range", data=_range(end - 1800, end))
        assert unguarded.headers["x-cache"] == "miss" and "warnings" not in unguarded.json()

        # a sub-range fetched with AMP's warning: the merged answer says so, nothing is stored
        stored = sorted(cache.store.memory.stored_keys())
        fresh_amp.reset()
        fresh_amp.inject(200, body=warned_matrix, count=None, path_contains="query_range")
        shifted = _range(end - 1500, end + 300)
        partial = await client.post("/api/v1/query_range", data={**shifted, **GUARDS})
        assert partial.headers["x-cache"] == "partial"
        assert partial.json()["warnings"] == [WARNED]
        assert sorted(cache.store.memory.stored_keys()) == stored
        fresh_amp.reset()
        clean = await client.post("/api/v1/query_range", data=shifted)
        assert clean.headers["x-cache"] == "partial" and "warnings" not in clean.json()
        assert len(_forwarded(fresh_amp, "query_range")) == 1  # the same 5 minutes again
