"""The 539 PromQL compliance queries through the cache: cold, warm, and with shifted windows
that reuse cached extents and cross split boundaries. Every answer must equal the one the
real Prometheus gives for the very same request: byte for byte when it succeeds (timestamps,
numbers, order, warnings), the same error type when it fails."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.gateway import gateway_settings

from gateway.promql import parse_query, print_expr

from .conftest import cache_raw, cached_gateway, data_of

QUERIES = Path("/work/shared/promql-compliance/queries.jsonl")
STEP = 10


def _queries() -> list[dict[str, Any]]:
    return [json.loads(line) for line in QUERIES.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def queries() -> list[dict[str, Any]]:
    if not QUERIES.exists():
        pytest.skip(f"{QUERIES} is not there")
    return _queries()


async def _run_phase(
    gateway: httpx.AsyncClient,
    direct: httpx.AsyncClient,
    queries: list[dict[str, Any]],
    start: float,
    end: float,
    outcomes: Counter[str],
) -> list[str]:
    slots = asyncio.Semaphore(8)
    failures: list[str] = []

    async def one(item: dict[str, Any]) -> None:
        params = {"query": item["query"], "start": str(start), "end": str(end), "step": str(STEP)}
        async with slots:
            via_cache = await gateway.post("/api/v1/query_range", data=params)
            reference = await direct.post("/api/v1/query_range", data=params)
        outcomes[via_cache.headers.get("x-cache", "none").split(";")[0]] += 1
        if data_of(via_cache) != data_of(reference):
            failures.append(f"{item['query']} [{start}, {end}]: {via_cache.headers.get('x-cache')}")
        elif reference.status_code == 200 and via_cache.content != reference.content:
            failures.append(f"{item['query']} [{start}, {end}]: not byte-identical")

    await asyncio.gather(*(one(item) for item in queries))
    return failures


async def test_compliance_queries_cold_warm_shifted(
    fresh_amp, aws_env, prometheus, queries, tmp_path
) -> None:
    """Two gateways on one host's store, as two workers of one `serve`: the phases alternate
    between them, so every warm or shifted answer is built from what the other one stored."""
    end = prometheus.data_end - 12 * 60
    start = end - 10 * 60
    # Freeze the cache's clock so that the freshness horizon falls inside the window: the older
    # half is kept as extents (split every 2 minutes), the newer half only briefly.
    clock = end - 5 * 60 + 600
    settings = gateway_settings(fresh_amp, raw=cache_raw(split_interval="2m", max_freshness="10m"))
    outcomes: dict[str, Counter[str]] = {}
    failures: list[str] = []
    async with (
        cached_gateway(settings, lambda: clock, str(tmp_path)) as (gateway, _cache),
        cached_gateway(settings, lambda: clock, str(tmp_path)) as (other_worker, _other_cache),
        httpx.AsyncClient(base_url=prometheus.url, timeout=60) as direct,
    ):
        phases = [
            ("cold", start, end),
            ("warm", start, end),
            ("later", start + 2 * STEP, end + 2 * STEP),
            ("earlier", start - 3 * STEP, end - 3 * STEP),
            ("wider", start - 7 * STEP, end + 5 * STEP),
            # off the second: timestamps print with milliseconds (`….500`), merged or not
            ("fractional", start + 0.5, end + 0.5),
            ("fractional later", start + 2 * STEP + 0.5, end + 2 * STEP + 0.5),
        ]
        for index, (name, lo, hi) in enumerate(phases):
            outcomes[name] = Counter()
            worker = (gateway, other_worker)[index % 2]
            failures += await _run_phase(worker, direct, queries, lo, hi, outcomes[name])
    assert not failures, f"{len(failures)} answers differ, e.g. {failures[:5]}"
    ok = sum(1 for q in queries if not q["should_fail"])
    # Queries with a negative offset of 5m or more read past the horizon: nothing is final.
    reaching = sum(1 for q in queries if "offset -" in q["query"])
    # The cache did its part: cold answers are misses, except where two queries print to the
    # same canonical text (`0x3d` and `61`): those share an entry, and each gave its reference's
    # answer above. Warm answers are hits, shifted ones reuse extents.
    distinct = {print_expr(parse_query(q["query"])) for q in queries if not q["should_fail"]}
    assert outcomes["cold"]["miss"] >= len(distinct), outcomes
    assert outcomes["cold"]["miss"] + outcomes["cold"]["hit"] >= ok, outcomes
    assert outcomes["warm"]["hit"] >= ok, outcomes
    for name in ("later", "earlier", "wider", "fractional later"):
        assert outcomes[name]["partial"] + outcomes[name]["hit"] >= ok - reaching, (name, outcomes)
        assert outcomes[name]["partial"] >= len(distinct) - reaching, (name, outcomes)
