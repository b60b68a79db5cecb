"""The printed text means what the client wrote: the real Prometheus answers both alike (the
same JSON; an instant vector's series in any order, as Prometheus itself lists them) for every query of the compliance corpus and the shipped dashboards, and for queries
whose strings carry quotes, backslashes, escapes and non-ASCII text."""

from __future__ import annotations

import asyncio

import httpx
from support.prometheus import PrometheusServer

from gateway.promql import PromQLError, parse_query, print_expr

from .test_printer import corpus, dashboard_queries

HOSTILE_STRINGS = [
    'label_replace(demo_num_cpus, "x", "q\\"uo\\\\te ✓ \\u00e9 \\x41 \\101 #", "", "")',
    'label_replace(demo_num_cpus, `x`, `raw \\d+ "`, ``, ``)',
    'count(demo_num_cpus{instance=~"demo\\\\.promlabs\\\\.com:1000[0-9]", job!~"a\\\\|b"})',
    'demo_num_cpus{instance!="\\"quoted\\""} offset 1900ms',
    'count_values("v\\tal", demo_num_cpus)',
    "sum by (instance) (demo_num_cpus) * ignoring() group_left count by (instance) (demo_num_cpus)",
    "0x1f * 1e3 + .5",
    "max_over_time(demo_cpu_usage_seconds_total[1m30s500ms:15s] offset -90s)",
]


def _unordered(response: httpx.Response) -> object:
    """The answer, with an instant vector's series in a fixed order: Prometheus returns them in
    map order (the same query twice may list them differently)."""
    body = response.json()
    data = body.get("data")
    if isinstance(data, dict) and data.get("resultType") == "vector":
        data["result"].sort(key=lambda s: sorted(s["metric"].items()))
    return body


async def test_prometheus_answers_the_printed_text_like_the_original(prometheus: PrometheusServer) -> None:
    at = str(prometheus.data_end - 600)
    pairs = []
    for query in corpus() + dashboard_queries() + HOSTILE_STRINGS:
        try:
            printed = print_expr(parse_query(query))
        except PromQLError:
            continue
        if printed != query:
            pairs.append((query, printed))
    assert len(pairs) >= 100  # the corpus spells many queries otherwise than the printer
    slots = asyncio.Semaphore(8)
    differ = []
    async with httpx.AsyncClient(base_url=prometheus.url, timeout=60) as direct:

        async def one(query: str, printed: str) -> None:
            async with slots:
                a = await direct.post("/api/v1/query", data={"query": query, "time": at})
                b = await direct.post("/api/v1/query", data={"query": printed, "time": at})
            if (a.status_code, _unordered(a)) != (b.status_code, _unordered(b)):
                differ.append((query, printed, a.text[:200], b.text[:200]))

        await asyncio.gather(*(one(q, p) for q, p in pairs))
    assert not differ, differ[:3]
