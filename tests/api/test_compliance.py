"""The Prometheus project's 539 PromQL compliance queries: through the gateway == direct."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import orjson
from support.prometheus import PrometheusServer

QUERIES = Path(__file__).resolve().parents[3] / "shared" / "promql-compliance" / "queries.jsonl"


def load_queries() -> list[dict[str, object]]:
    return [json.loads(line) for line in QUERIES.read_text().splitlines() if line.strip()]


async def test_all_compliance_queries_match_direct_prometheus(
    gateway: httpx.AsyncClient, direct: httpx.AsyncClient, prometheus: PrometheusServer
) -> None:
    queries = load_queries()
    assert len(queries) == 539
    # The compliance tester's window: end = now - 12m, 10m range, 10s step.
    end = int(prometheus.data_end) - 12 * 60
    start = end - 10 * 60
    limit = asyncio.Semaphore(8)
    mismatches: list[str] = []

    async def check(case: dict[str, object]) -> None:
        params = {"query": str(case["query"]), "start": str(start), "end": str(end), "step": "10s"}
        async with limit:
            via, ref = await asyncio.gather(
                gateway.post("/api/v1/query_range", data=params),
                direct.post("/api/v1/query_range", data=params),
            )
        if case["should_fail"]:
            if via.status_code < 400 or ref.status_code < 400:
                mismatches.append(
                    f"{case['query']}: expected failures, got {via.status_code}/{ref.status_code}"
                )
            elif via.json()["status"] != "error":
                mismatches.append(f"{case['query']}: not an error envelope")
            return
        if via.status_code != ref.status_code:
            mismatches.append(
                f"{case['query']}: status {via.status_code} != {ref.status_code}: {via.text[:200]}"
            )
        elif orjson.loads(via.content).get("data") != orjson.loads(ref.content).get("data"):
            mismatches.append(f"{case['query']}: data differs")

    await asyncio.gather(*(check(case) for case in queries))
    assert mismatches == []
