"""Every API answer carries a request id: the client's when it is a sane one, else a new one."""

from __future__ import annotations

import re

import httpx

RANGE = {"query": "sum(rate(up[5m]))", "start": "1700000000", "end": "1700003600", "step": "60"}


async def test_request_ids_are_unique_or_the_clients(gateway: httpx.AsyncClient) -> None:
    ids = {(await gateway.get("/api/v1/query_range", params=RANGE)).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5 and all(re.fullmatch(r"[0-9a-f]{17,}", i) for i in ids)
    given = await gateway.get("/api/v1/query_range", params=RANGE, headers={"x-request-id": "req-7"})
    assert given.headers["x-request-id"] == "req-7"
    odd = await gateway.get("/api/v1/query_range", params=RANGE, headers={"x-request-id": "a b"})
    assert odd.headers["x-request-id"] != "a b"
    refused = await gateway.get("/api/v1/query_range", params={**RANGE, "step": "0"})
    assert refused.status_code == 400 and re.fullmatch(r"[0-9a-f]{17,}", refused.headers["x-request-id"])
