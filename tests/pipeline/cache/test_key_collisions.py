"""Queries that promql-parser's str() printed alike, and that therefore shared cache entries, each
get their own answer: each pair is asked through a cache-on gateway, the lossy twin first, and
every answer must equal what the real Prometheus answers for that very query."""

from __future__ import annotations

import httpx
import pytest
from support.gateway import gateway_settings

from .conftest import cache_raw, cached_gateway, data_of

# (lossy twin, plain query, where in the 15 s sample grid the evaluation steps fall)
PAIRS = {
    "subquery vs range": ("count_over_time(demo_num_cpus[10m:])", "count_over_time(demo_num_cpus[10m])", 0),
    "milliseconds in a range": (
        "count_over_time(demo_cpu_usage_seconds_total[30900ms])",
        "count_over_time(demo_cpu_usage_seconds_total[30s])",
        0.5,
    ),
    "milliseconds in an offset": (
        "timestamp(demo_cpu_usage_seconds_total offset 7500ms)",
        "timestamp(demo_cpu_usage_seconds_total offset 7s)",
        7.2,
    ),
    "escaped quote in a value": (
        'demo_num_cpus{instance="demo.promlabs.com:10000\\", job=\\"demo"}',
        'demo_num_cpus{instance="demo.promlabs.com:10000", job="demo"}',
        0,
    ),
    "backslash in a regex": (
        'count(demo_num_cpus{instance=~"demo\\\\.promlabs\\\\.com:1000[01]"})',
        'count(demo_num_cpus{instance=~"demo.promlabs.com:1000[01]"})',
        0,
    ),
}


def _range(query: str, start: float, end: float) -> dict[str, str]:
    return {"query": query, "start": str(start), "end": str(end), "step": "15"}


@pytest.mark.parametrize("name", PAIRS)
async def test_lossy_twins_never_share_an_entry(name: str, fresh_amp, aws_env, prometheus) -> None:
    lossy, plain, phase = PAIRS[name]
    end = (prometheus.data_end - 3600) // 15 * 15 + phase
    start = end - 1800
    settings = gateway_settings(fresh_amp, raw=cache_raw(split_interval="10m"))
    async with (
        cached_gateway(settings) as (client, _),
        httpx.AsyncClient(base_url=prometheus.url, timeout=60) as direct,
    ):
        references = {}
        for query in (lossy, plain):
            references[query] = data_of(
                await direct.post("/api/v1/query_range", data=_range(query, start, end))
            )
        if name != "backslash in a regex":
            assert references[lossy] != references[plain], "the pair must answer differently"
        for window in ((start, end), (start + 300, end + 300)):  # cold, then from extents
            for query in (lossy, plain):
                answer = await client.post("/api/v1/query_range", data=_range(query, *window))
                reference = await direct.post("/api/v1/query_range", data=_range(query, *window))
                assert answer.status_code == 200, answer.text
                assert answer.content == reference.content, (query, answer.headers.get("x-cache"))
                instant = {"query": query, "time": str(window[1])}
                got = await client.post("/api/v1/query", data=instant)
                want = await direct.post("/api/v1/query", data=instant)
                assert got.content == want.content, query
