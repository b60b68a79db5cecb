"""Stale-if-error in the cache stage, in process (a fake clock expires entries): when the upstream
throttles past the retries, fails with a 5xx, times out or cannot be reached, what the cache
holds is served with `x-cache: stale` and a warning; a 4xx, anything uncached, anything past
cache.max_stale, and anything the cache does not hold all of (but a fresh tail) is the error."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from support.amp_standin import AmpStandin, start_amp
from support.gateway import gateway_settings
from support.testenv import AMP_REGION

from gateway.envelope import with_warning
from gateway.errors import GatewayError
from gateway.pipeline.coalesce import wire

from .conftest import cache_raw, cached_gateway

QUERY = 'sum by (instance) (rate(demo_cpu_usage_seconds_total{mode="user"}[1m]))'
UPSTREAM = {"retry_base": "10ms", "retries": 1, "timeout": "1s"}
ENVELOPE_503 = orjson.dumps({"status": "error", "errorType": "unavailable", "error": "ingesters down"})


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _settings(amp: AmpStandin, **cache: Any) -> Any:
    return gateway_settings(amp, raw={**cache_raw(**cache), "upstream": UPSTREAM})


def _range(start: float, end: float) -> dict[str, str]:
    return {"query": QUERY, "start": str(start), "end": str(end), "step": "15"}


def _warning_added(body: bytes, original: bytes) -> str:
    """The warning the gateway put first in `original`'s warnings to make `body`, which must
    differ from it by nothing else."""
    warning = orjson.loads(body)["warnings"][0]
    item = orjson.dumps(warning).replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")
    removals = (b',"warnings":[' + item + b"]", item + b",", item)
    assert any(body.replace(inserted, b"", 1) == original for inserted in removals), body[-300:]
    return warning


async def _stale_count(client: httpx.AsyncClient, endpoint: str, cause: str) -> float:
    metrics = (await client.get("/metrics")).text
    found = re.search(rf'gateway_cache_stale_total{{cause="{cause}",endpoint="{endpoint}"}} (\S+)', metrics)
    assert found, f"gateway_cache_stale_total for {endpoint}/{cause} is not exported"
    return float(found.group(1))


FAILURES: dict[str, tuple[str, str, Callable[[AmpStandin], None]]] = {
    "503": ("server-error", "the upstream failed", lambda amp: amp.inject(503, count=None)),
    "500-envelope": (
        "server-error",
        "the upstream failed (ingesters down)",
        lambda amp: amp.inject(500, count=None, body=ENVELOPE_503),
    ),
    "429-storm": (
        "throttled",
        "the upstream throttled the query past the gateway's retries",
        lambda amp: amp.inject(429, count=None),
    ),
    "timeout": (
        "timeout",
        "the upstream did not answer in time",
        lambda amp: amp.inject_delay(3, count=None),
    ),
}


@pytest.mark.parametrize("failure", list(FAILURES))
async def test_an_expired_answer_is_served_stale_with_its_age_and_cause(
    fresh_amp, aws_env, prometheus, failure: str
) -> None:
    cause, says, inject = FAILURES[failure]
    clock = Clock(prometheus.data_end + 60)
    instant = {"query": QUERY, "time": str(prometheus.data_end - 3600)}
    async with cached_gateway(_settings(fresh_amp, results_ttl="30s"), clock=clock) as (client, _):
        warm = await client.post("/api/v1/query", data=instant)
        assert warm.headers["x-cache"] == "miss"
        clock.now += 95
        inject(fresh_amp)
        answer = await client.post("/api/v1/query", data=instant)
        assert answer.status_code == 200 and answer.headers["x-cache"] == "stale"
        warning = _warning_added(answer.content, warm.content)  # every other byte as it was
        assert warning.startswith(f"served from the gateway's cache, 95s old: {says}")
        assert await _stale_count(client, "query", cause) == 1

        uncached = await client.post(
            "/api/v1/query", data={**instant, "time": str(prometheus.data_end - 7200)}
        )
        assert uncached.status_code >= 429 and uncached.json()["status"] == "error"
        assert uncached.headers["x-cache"] == "bypass; reason=error-not-cached"


REFUSALS: dict[str, Callable[[AmpStandin], None]] = {
    "422-execution": lambda amp: amp.inject(
        422,
        count=None,
        body=orjson.dumps({"status": "error", "errorType": "execution", "error": "too many samples"}),
    ),
    "400": lambda amp: amp.inject(400, count=None, errortype="InvalidQueryStringException", message="bad"),
    "403-identity": lambda amp: amp.inject(403, count=None, errortype="AccessDeniedException", message="no"),
    "404-workspace": lambda amp: amp.inject(
        404, count=None, errortype="ResourceNotFoundException", message="gone"
    ),
}


@pytest.mark.parametrize("refusal", list(REFUSALS))
async def test_refusals_are_never_answered_from_the_cache(
    fresh_amp, aws_env, prometheus, refusal: str
) -> None:
    clock = Clock(prometheus.data_end + 60)
    instant = {"query": QUERY, "time": str(prometheus.data_end - 3600)}
    async with cached_gateway(_settings(fresh_amp, results_ttl="30s"), clock=clock) as (client, _):
        assert (await client.post("/api/v1/query", data=instant)).status_code == 200
        clock.now += 60
        REFUSALS[refusal](fresh_amp)
        answer = await client.post("/api/v1/query", data=instant)
        assert answer.status_code in (400, 422, 502) and answer.json()["status"] == "error"
        assert answer.headers["x-cache"] == "bypass; reason=error-not-cached"


async def test_nothing_older_than_max_stale_and_nothing_for_no_cache(fresh_amp, aws_env, prometheus) -> None:
    clock = Clock(prometheus.data_end + 60)
    instant = {"query": QUERY, "time": str(prometheus.data_end - 3600)}
    settings = _settings(fresh_amp, results_ttl="30s", max_stale="2m")
    async with cached_gateway(settings, clock=clock) as (client, _):
        assert (await client.post("/api/v1/query", data=instant)).status_code == 200
        fresh_amp.inject(503, count=None)
        clock.now += 30 + 110
        fresh = await client.post("/api/v1/query", data=instant, headers={"cache-control": "no-cache"})
        assert fresh.status_code == 503
        assert (await client.post("/api/v1/query", data=instant)).headers["x-cache"] == "stale"
        clock.now += 20  # 130 s past its expiry
        assert (await client.post("/api/v1/query", data=instant)).status_code == 503


async def test_a_range_whose_entries_expired_is_served_whole(fresh_amp, aws_env, prometheus) -> None:
    end = prometheus.data_end - 3600
    clock = Clock(prometheus.data_end + 60)
    async with cached_gateway(_settings(fresh_amp, results_ttl="30s"), clock=clock) as (client, _):
        warm = await client.post("/api/v1/query_range", data=_range(end - 1800, end))
        clock.now += 60  # extents and the whole response expired
        fresh_amp.inject(503, count=None)
        answer = await client.post("/api/v1/query_range", data=_range(end - 1800, end))
        assert answer.headers["x-cache"] == "stale"
        _warning_added(answer.content, warm.content)
        # plain and gzip clients alike
        gz = await client.post(
            "/api/v1/query_range", data=_range(end - 1800, end), headers={"accept-encoding": "gzip"}
        )
        assert gz.headers["x-cache"] == "stale"
        _warning_added(gz.content, warm.content)


async def test_all_but_the_fresh_tail_is_served_from_extents(fresh_amp, aws_env, prometheus) -> None:
    """A dashboard's next refresh (its window moved on) while the upstream fails: the points the
    extents hold, which are all of the window but its newest part, and nothing else."""
    end = prometheus.data_end
    clock = Clock(end + 30)
    async with cached_gateway(_settings(fresh_amp), clock=clock) as (client, _):
        warm = await client.post("/api/v1/query_range", data=_range(end - 1800, end))
        assert warm.headers["x-cache"] == "miss"
        clock.now += 60
        fresh_amp.inject(503, count=None)
        moved = _range(end - 1740, end + 60)
        answer = await client.post("/api/v1/query_range", data=moved)
        assert answer.status_code == 200 and answer.headers["x-cache"] == "stale"
        doc = answer.json()
        warning = doc["warnings"][0]
        assert re.match(
            r"served from the gateway's cache, its newest point \d+s old; the \d+ points after it are missing: "
            r"the upstream failed \(",
            warning,
        ), warning
        newest = max(float(p[0]) for s in doc["data"]["result"] for p in s["values"])
        # the last point kept as an extent: final when the warm answer was fetched
        assert end + 30 - 600 - 15 < newest <= end + 30 - 600
        fresh_amp.reset()
        async with httpx.AsyncClient(base_url=prometheus.url) as direct:
            truth = await direct.post("/api/v1/query_range", data=_range(end - 1740, newest))
        assert doc["data"] == truth.json()["data"]
        assert doc["warnings"][1:] == truth.json().get("warnings", [])
        assert await _stale_count(client, "query_range", "server-error") == 1
        again = await client.post("/api/v1/query_range", data=moved)
        assert again.headers["x-cache"] == "partial"  # the stale answer was not kept

        # a gap before the end (the window reaches back past what is held): the error
        fresh_amp.inject(503, count=None)
        wider = await client.post("/api/v1/query_range", data=_range(end - 2400, end + 60))
        assert wider.status_code == 503


async def test_a_tail_older_than_max_stale_is_not_served(fresh_amp, aws_env, prometheus) -> None:
    end = prometheus.data_end
    clock = Clock(end + 30)
    async with cached_gateway(_settings(fresh_amp, max_stale="30s"), clock=clock) as (client, _):
        await client.post("/api/v1/query_range", data=_range(end - 1800, end))
        clock.now += 60  # the first missing point was final 45 s ago: more than max_stale
        fresh_amp.inject(503, count=None)
        answer = await client.post("/api/v1/query_range", data=_range(end - 1740, end + 60))
        assert answer.status_code == 503


async def test_a_stopped_upstream_is_answered_from_the_cache(aws_env, prometheus) -> None:
    own = start_amp({"ws-test1": prometheus.url, "ws-test2": prometheus.url}, region=AMP_REGION)
    clock = Clock(prometheus.data_end + 60)
    instant = {"query": QUERY, "time": str(prometheus.data_end - 3600)}
    try:
        async with cached_gateway(_settings(own, results_ttl="30s"), clock=clock) as (client, _):
            warm = await client.post("/api/v1/query", data=instant)
            own.stop()
            clock.now += 60
            answer = await client.post("/api/v1/query", data=instant)
            assert answer.headers["x-cache"] == "stale"
            warning = _warning_added(answer.content, warm.content)
            assert "the upstream could not be reached" in warning
            assert await _stale_count(client, "query", "unreachable") == 1
            other = await client.post(
                "/api/v1/query", data={**instant, "time": str(prometheus.data_end - 60)}
            )
            assert other.status_code == 503 and other.json()["errorType"] == "unavailable"
    finally:
        own.stop()


async def test_the_stale_counter_is_exported_at_zero(fresh_amp, aws_env) -> None:
    async with cached_gateway(_settings(fresh_amp)) as (client, _):
        for endpoint in ("query", "query_range", "series", "labels", "label_values", "metadata"):
            for cause in ("throttled", "server-error", "timeout", "unreachable"):
                assert await _stale_count(client, endpoint, cause) == 0


@pytest.mark.parametrize(
    "body",
    [
        b'{"status":"success","data":{"resultType":"vector","result":[]}}',
        b'{"status":"success","data":{"resultType":"vector","result":[]},"warnings":["w1"]}',
        b'{"status":"success","data":{"resultType":"vector","result":[]},"warnings":[]}',
        b'{"status":"success","data":{"resultType":"vector","result":[]},"infos":["i"]}',
        b'{"status":"success","data":{"resultType":"vector","result":[]},"warnings":["a"],"infos":["i"]}',
        b'{"status":"success","data":{"warnings":[{"type":"counter","help":"x","unit":""}]}}',
        b'{"status":"success","data":{"warnings":[{"type":"gauge"}]},"infos":["\\"warnings\\":["]}\n',
    ],
)
def test_the_warning_goes_first_and_every_other_byte_stays(body: bytes) -> None:
    out = with_warning(body, "stale <&> for a while")
    doc = orjson.loads(out)
    assert doc["warnings"][0] == "stale <&> for a while"
    assert doc["warnings"][1:] == orjson.loads(body).get("warnings", [])
    assert b"\\u003c\\u0026\\u003e" in out  # Go's escapes, as Prometheus writes strings
    _warning_added(out, body)


def test_the_upstream_failure_survives_coalescing_across_processes() -> None:
    """A waiter in another worker gets the holder's error as the holder got it, failure included:
    its cache may answer for it too."""
    error = GatewayError("unavailable", "the upstream is unreachable", 503, failure="unreachable")
    back = wire.decode(wire.encode(error, "token", "digest"), "token", "digest")
    assert isinstance(back, GatewayError) and back.failure == "unreachable"


async def test_max_stale_zero_serves_nothing_stale(fresh_amp, aws_env, prometheus) -> None:
    end = prometheus.data_end
    clock = Clock(end + 30)
    params = {"query": QUERY, "start": str(end - 1800), "end": str(end), "step": "60"}
    async with cached_gateway(_settings(fresh_amp, max_stale="0s"), clock=clock) as (client, _):
        assert (await client.post("/api/v1/query_range", data=params)).headers["x-cache"] == "miss"
        clock.now += 16  # past recent_ttl: a fresh tail to fetch again
        fresh_amp.inject(503, body=ENVELOPE_503, count=None)
        failed = await client.post("/api/v1/query_range", data=params)
        assert failed.status_code == 503 and failed.headers["x-cache"].startswith("bypass")


async def test_waiting_out_the_time_for_a_workspace_slot_is_not_answered_stale(
    fresh_amp, aws_env, prometheus
) -> None:
    """The request never reached the upstream: its time ran out in the gateway's own queue."""
    clock = Clock(prometheus.data_end + 60)
    instant = {"query": "demo_num_cpus", "time": str(prometheus.data_end - 3600)}
    upstream = {**UPSTREAM, "max_concurrency": 1, "queue_timeout": "30s", "retries": 0}
    settings = gateway_settings(fresh_amp, raw={**cache_raw(results_ttl="30s"), "upstream": upstream})
    async with cached_gateway(settings, clock=clock) as (client, _):
        assert (await client.post("/api/v1/query", data=instant)).headers["x-cache"] == "miss"
        clock.now += 60
        fresh_amp.inject_delay(0.9, count=1)
        holding = asyncio.create_task(client.post("/api/v1/query", data={"query": "vector(2)"}))
        await asyncio.sleep(0.3)
        queued = await client.post("/api/v1/query", data={**instant, "timeout": "400ms"})
        await holding
        assert queued.status_code == 503 and queued.headers["x-cache"].startswith("bypass")
        assert "no upstream slot" in queued.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"status":"success","data":{"warnings":[{"type":"counter","help":"","unit":""}]},"warnings":null}',
        b'{"status":"success","data":{"resultType":"vector","result":[]},"warnings":[ ]}',
        b'{"status":"success","data":{"resultType":"vector","result":[]},"warnings":["a"],"infos":["b"]}',
        b'{ "status" : "success", "data" : {"resultType":"scalar","result":[1,"2"]} }\n',
    ],
)
def test_the_warning_is_first_and_everything_else_as_it_was_whatever_the_layout(body: bytes) -> None:
    doc = orjson.loads(body)
    out = orjson.loads(with_warning(body, "W"))
    assert out == {**doc, "warnings": ["W", *(doc.get("warnings") or ())]}
