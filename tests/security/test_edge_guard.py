"""The last stage before signing refuses any request that lacks the principal's matchers, whoever
built it: faulty stages are planted here and nothing they build reaches the AMP stand-in."""

from __future__ import annotations

import logging

import pytest
from support.amp_standin import AmpStandin
from support.gateway import cache_raw, cached_gateway, gateway_settings, in_process

from gateway.pipeline import enforce
from gateway.pipeline.cache import stage as cache_stage
from gateway.pipeline.model import Request

from .conftest import NODE_AUTH, principals, secure_settings


def _violations(app_metrics, endpoint: str) -> float:
    return float(app_metrics.enforcement_violations.labels(endpoint)._value.get())


async def test_a_faulty_enforcement_stage_is_caught(
    fresh_amp: AmpStandin, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    monkeypatch.setattr(enforce, "enforce_params", lambda request, override: request)  # enforces nothing
    async with in_process(secure_settings(fresh_amp)) as (client, gateway):
        with caplog.at_level(logging.ERROR, logger="gateway.enforce"):
            query = await client.post("/api/v1/query", data={"query": "up", "time": "100"}, headers=NODE_AUTH)
            series = await client.post("/api/v1/series", data={"match[]": "up"}, headers=NODE_AUTH)
            labels = await client.get("/api/v1/labels", headers=NODE_AUTH)
        metrics = gateway.metrics
    for answer in (query, series, labels):
        assert answer.status_code == 500, answer.text
        assert answer.json()["errorType"] == "internal"
        assert "label matchers" in answer.json()["error"]
    assert fresh_amp.requests == []
    assert _violations(metrics, "query") == 1 and _violations(metrics, "series") == 1
    assert sum("refused to send" in r.getMessage() for r in caplog.records) == 3


async def test_a_faulty_cache_sub_range_fetch_is_caught(
    fresh_amp: AmpStandin, aws_env: dict[str, str], prometheus, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = cache_stage._sub_request

    def unenforced(request: Request, run, query):
        sub = original(request, run, query)
        return sub.replace(
            params=tuple((k, "http_requests_total" if k == "query" else v) for k, v in sub.params)
        )

    monkeypatch.setattr(cache_stage, "_sub_request", unenforced)
    settings = gateway_settings(
        fresh_amp, {"auth": {"principals": principals()}, **cache_raw(split_interval="10m")}
    )
    end = prometheus.data_end - 3600
    params = {"query": "sum(http_requests_total)", "step": "30"}
    async with cached_gateway(settings) as (client, _):
        first = await client.post(
            "/api/v1/query_range",
            data={**params, "start": str(end - 1800), "end": str(end)},
            headers=NODE_AUTH,
        )
        assert first.status_code == 200 and first.headers["x-cache"] == "miss"
        sent = len(fresh_amp.requests)
        shifted = await client.post(
            "/api/v1/query_range",
            data={**params, "start": str(end - 1500), "end": str(end + 300)},
            headers=NODE_AUTH,
        )
    assert shifted.status_code == 500, shifted.text
    assert len(fresh_amp.requests) == sent  # the faulty sub-range fetch never left
