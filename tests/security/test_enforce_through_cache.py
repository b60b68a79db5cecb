"""Label enforcement holds on every request the cache makes on its own: sub-range fetches of a
query with `@ start()` / `@ end()` (pinned on the tree, then printed) carry the principal's
matchers, and the answers equal what Prometheus gives for the enforced query."""

from __future__ import annotations

import httpx
import pytest
from support.amp_standin import AmpStandin
from support.gateway import cache_raw, cached_gateway, gateway_settings
from support.prometheus import PrometheusServer

from .conftest import REC, REC_AUTH, assert_all_enforced, principals

QUERIES = [
    'count by (job) ({__name__=~"http_requests_total|node_network_transmit_bytes_total"} @ end())',
    'sum by (job) (rate({__name__=~"http_requests_total|node_network_transmit_bytes_total"}[5m] @ start()))',
    'max_over_time(count by (job) ({__name__=~".+_total", path=~"/api/.*|\\\\.*"})[10m:1m] @ end())',
]


def _enforced(query: str) -> str:
    return query.replace("{__name__", '{job="recommender",__name__')


@pytest.mark.parametrize("query", QUERIES)
async def test_sub_range_fetches_are_enforced(
    query: str, fresh_amp: AmpStandin, aws_env: dict[str, str], prometheus: PrometheusServer
) -> None:
    settings = gateway_settings(
        fresh_amp, {"auth": {"principals": principals()}, **cache_raw(split_interval="10m")}
    )
    # `@ start()`/`@ end()` pin the cache key to the window, so its extents are read again only
    # when the whole answer has left the cache (evicted) while extents stayed: then the cache
    # fetches the missing ones itself, with the query pinned on the tree and printed.
    end = prometheus.data_end - 3600
    params = {"query": query, "start": str(end - 1800), "end": str(end), "step": "30"}
    reference = await _direct(prometheus, {**params, "query": _enforced(query)})
    outcomes = []
    async with cached_gateway(settings) as (client, cache):
        for round_ in range(3):
            if round_:
                # Evict as memory pressure would: the whole answer, and one of the extents.
                keys = cache.store.memory.stored_keys()
                whole = [k for k in keys if not k.rsplit(":", 1)[1].startswith("b")]
                extents = sorted(k for k in keys if k.rsplit(":", 1)[1].startswith("b"))
                for key in whole + extents[round_ : round_ + 1]:
                    cache.store.memory.delete(key)
            answer = await client.post("/api/v1/query_range", data=params, headers=REC_AUTH)
            assert answer.status_code == 200, answer.text
            outcomes.append(answer.headers["x-cache"].split(";")[0])
            assert answer.content == reference.content, (query, outcomes)
            jobs = {s["metric"].get("job") for s in answer.json()["data"]["result"]}
            assert jobs == {"recommender"}, jobs
    assert outcomes == ["miss", "partial", "partial"], outcomes
    assert assert_all_enforced(fresh_amp, REC) >= 3


async def _direct(prometheus: PrometheusServer, params: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=prometheus.url, timeout=60) as direct:
        return await direct.post("/api/v1/query_range", data=params)
