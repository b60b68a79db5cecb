"""Limits: range, points, query length, body size, result sizes, rate, concurrency, AMP thresholds."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from support.amp_standin import AmpStandin
from support.gateway import gateway_client, gateway_settings
from support.prometheus import PrometheusServer

from .conftest import ADMIN_AUTH, NODE_AUTH, REC_AUTH, forwarded_params, principals, secure_settings


def _with_limits(amp: AmpStandin, limits: dict[str, Any], node_limits: dict[str, Any] | None = None) -> Any:
    settings = secure_settings(amp, limits=limits)
    if node_limits is None:
        return settings
    items = principals()
    items[0]["limits"] = node_limits
    return gateway_settings(amp, {"auth": {"principals": items}, "limits": limits})


async def test_range_points_and_length_limits_per_principal(
    fresh_amp: AmpStandin, aws_env: dict[str, str], prometheus: PrometheusServer
) -> None:
    settings = _with_limits(
        fresh_amp,
        {"max_range": "2h", "max_points": 500, "max_query_length": 200},
        node_limits={"max_range": "30m", "max_query_length": 40},
    )
    end = int(prometheus.data_end)

    async def range_query(auth: dict[str, str], seconds: int, step: int, query: str = "up") -> httpx.Response:
        data = {"query": query, "start": end - seconds, "end": end, "step": step}
        return await client.post("/api/v1/query_range", data=data, headers=auth)

    async with gateway_client(settings) as client:
        assert (await range_query(ADMIN_AUTH, 7200, 60)).status_code == 200
        too_long = await range_query(ADMIN_AUTH, 7260, 60)
        assert too_long.status_code == 400 and "exceeds the limit of 2h" in too_long.json()["error"]
        points = await range_query(ADMIN_AUTH, 3600, 7)
        assert points.status_code == 400 and "500 points" in points.json()["error"]
        # team-node's own, lower overrides; other settings inherited from the global ones.
        assert (await range_query(NODE_AUTH, 1800, 60)).status_code == 200
        node_range = await range_query(NODE_AUTH, 3600, 60)
        assert node_range.status_code == 400 and '"team-node"' in node_range.json()["error"]
        assert (await range_query(NODE_AUTH, 600, 1)).status_code == 400  # 600 points > 500
        # Ranges inside the query count too.
        inner = await client.post("/api/v1/query", data={"query": "rate(up[3h])"}, headers=ADMIN_AUTH)
        assert inner.status_code == 400 and "range in the query" in inner.json()["error"]
        sub = await client.post(
            "/api/v1/query", data={"query": "max_over_time(up[1d:1m])"}, headers=ADMIN_AUTH
        )
        assert sub.status_code == 400
        # Length: counted on what the client sent, before enforcement adds its matchers.
        short = "count(node_network_transmit_bytes_total)"
        assert len(short) <= 40
        assert (
            await client.post("/api/v1/query", data={"query": short}, headers=NODE_AUTH)
        ).status_code == 200
        long = await client.post("/api/v1/query", data={"query": short + " + 1"}, headers=NODE_AUTH)
        assert long.status_code == 400 and "limit" in long.json()["error"]
        match = await client.get("/api/v1/series", params={"match[]": "x" * 41}, headers=NODE_AUTH)
        assert match.status_code == 400
    assert all(b"3h" not in r.body for r in fresh_amp.requests)


async def test_body_size_limit_answers_413(fresh_amp: AmpStandin, aws_env: dict[str, str]) -> None:
    settings = _with_limits(fresh_amp, {"max_body_bytes": "1KiB"})
    async with gateway_client(settings) as client:
        big = {"query": "up", "pad": "x" * 2000}
        response = await client.post("/api/v1/query", data=big, headers=ADMIN_AUTH)
        assert response.status_code == 413 and response.json()["errorType"] == "bad_data"

        async def chunks():  # no Content-Length: must still stop at the limit
            for _ in range(100):
                yield b"x" * 100

        streamed = await client.post(
            "/api/v1/query",
            content=chunks(),
            headers={**ADMIN_AUTH, "content-type": "application/x-www-form-urlencoded"},
        )
        assert streamed.status_code == 413
        assert (
            await client.post("/api/v1/query", data={"query": "up"}, headers=ADMIN_AUTH)
        ).status_code == 200
    assert len(fresh_amp.requests) == 1


async def test_series_and_label_results_are_capped_with_a_warning(
    fresh_amp: AmpStandin, aws_env: dict[str, str]
) -> None:
    settings = _with_limits(fresh_amp, {"max_series": 3, "max_labels": 2})
    async with gateway_client(settings) as client:
        series = (
            await client.get("/api/v1/series", params={"match[]": '{__name__=~".+"}'}, headers=ADMIN_AUTH)
        ).json()
        assert len(series["data"]) == 3
        assert any("truncated" in w for w in series["warnings"])
        labels = (await client.get("/api/v1/labels", headers=ADMIN_AUTH)).json()
        assert len(labels["data"]) == 2 and labels["warnings"]
        values = (await client.get("/api/v1/label/instance/values", headers=REC_AUTH)).json()
        assert values["data"] == ["recommender-0:8080", "recommender-1:8080"]
        asked = await client.get("/api/v1/label/__name__/values", params={"limit": "1"}, headers=ADMIN_AUTH)
        assert len(asked.json()["data"]) == 1
    limits_sent = [dict(forwarded_params(r)).get("limit") for r in fresh_amp.requests]
    assert limits_sent == ["3", "2", "2", "1"]


async def test_amp_sample_thresholds_are_added_and_can_only_be_lowered(
    fresh_amp: AmpStandin, aws_env: dict[str, str]
) -> None:
    settings = _with_limits(
        fresh_amp,
        {"samples_processed_warning_threshold": 1000000, "samples_processed_error_threshold": 5000000},
    )
    async with gateway_client(settings) as client:
        await client.post("/api/v1/query", data={"query": "up"}, headers=ADMIN_AUTH)
        await client.post(
            "/api/v1/query",
            data={"query": "up", "max_samples_processed_error_threshold": "99999999999"},
            headers=ADMIN_AUTH,
        )
        await client.post(
            "/api/v1/query",
            data={"query": "up", "max_samples_processed_error_threshold": "10"},
            headers=ADMIN_AUTH,
        )
    sent = [dict(forwarded_params(r)) for r in fresh_amp.requests]
    assert [s["max_samples_processed_warning_threshold"] for s in sent] == ["1000000"] * 3
    assert [s["max_samples_processed_error_threshold"] for s in sent] == ["5000000", "5000000", "10"]


async def test_request_rate_is_a_token_bucket_per_principal(
    fresh_amp: AmpStandin, aws_env: dict[str, str]
) -> None:
    # A very slow refill: the burst is all a principal gets during this test.
    settings = _with_limits(fresh_amp, {"rate": {"per_second": 0.01, "burst": 5}})
    async with gateway_client(settings) as client:
        burst = await asyncio.gather(
            *(client.post("/api/v1/query", data={"query": str(i)}, headers=NODE_AUTH) for i in range(12))
        )
        codes = sorted(r.status_code for r in burst)
        assert codes == [200] * 5 + [429] * 7
        refused = next(r for r in burst if r.status_code == 429)
        assert refused.json()["errorType"] == "too_many_requests"
        assert int(refused.headers["retry-after"]) >= 1
        # Another principal has its own bucket.
        assert (await client.post("/api/v1/query", data={"query": "1"}, headers=REC_AUTH)).status_code == 200
        metrics = (await client.get("/metrics")).text
    assert 'gateway_limited_total{principal="team-node",reason="rate"} 7.0' in metrics
    assert len(fresh_amp.requests) == 6


async def test_concurrency_per_principal_and_workspace_queues_then_refuses(
    fresh_amp: AmpStandin, aws_env: dict[str, str]
) -> None:
    settings = _with_limits(fresh_amp, {"max_concurrency": 1, "queue_timeout": "200ms"})
    # The first request is held upstream far longer than the queue deadline.
    fresh_amp.inject_delay(2.0, count=1)
    async with gateway_client(settings) as client:
        first = asyncio.create_task(client.post("/api/v1/query", data={"query": "1"}, headers=ADMIN_AUTH))
        while not fresh_amp.requests:
            await asyncio.sleep(0.01)
        queued = await client.post("/api/v1/query", data={"query": "2"}, headers=ADMIN_AUTH)
        other = await client.post("/api/v1/query", data={"query": "3"}, headers=NODE_AUTH)
        assert (await first).status_code == 200
        after = await client.post("/api/v1/query", data={"query": "4"}, headers=ADMIN_AUTH)
    assert queued.status_code == 429 and queued.headers["retry-after"] == "1"
    assert "in flight" in queued.json()["error"]
    assert other.status_code == 200  # another principal is not queued behind admin
    assert after.status_code == 200
